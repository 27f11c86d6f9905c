"""Answers cut short at the output bound, against the emulator: a failed item in either mode.

The emulator ends a response ``incomplete`` (reason ``max_output_tokens``) when reasoning plus text
exceed the bound, as the API does. Inline mode used to record the truncated text as a success while
background mode failed the item; both now fail it, billed, not retryable, with what to do.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.conftest import API_KEY, FAST_RETRY
from tests.integration.helpers import make_engine, make_items, records

pytestmark = pytest.mark.integration

ITEMS = 12
# gpt-5 models spend 64-512 reasoning tokens before any text (deterministic per prompt): a bound of
# 64 cuts every answer short.
TIGHT = {"request_options": {"max_output_tokens": 64}}


@pytest.mark.parametrize("mode", ["inline", "background"])
async def test_every_answer_cut_short_is_a_billed_failure_in_both_modes(emu, tmp_path: Path, mode: str) -> None:
    engine = make_engine(emu, tmp_path, API_KEY, spec=TIGHT, retry=FAST_RETRY, submit_mode=mode, poll_interval_s=0.05)
    summary = await engine.run(make_items(ITEMS), total=ITEMS)

    out = records(tmp_path)
    assert summary["succeeded"] == 0 and summary["failed"] == ITEMS
    assert all(r["status"] == "failed" and r["output"] is None for r in out)
    assert all(r["error"]["retryable"] is False for r in out)  # the same bound would cut it again
    assert all(r["usage"]["output"] == 64 for r in out)  # generated up to the bound: billed
    bill = emu.stats()["billing"]
    assert bill["requests"] == ITEMS  # one request each: not retried
    assert summary["cost_usd"]["actual"] == pytest.approx(bill["cost_usd"], abs=1e-6)  # the summary rounds to 6 places
    if mode == "inline":
        assert all(r["error"]["message"].startswith("the answer was cut short") for r in out)
        assert all("redo_failed='all'" in r["error"]["message"] for r in out)
    else:
        assert all("incomplete" in r["error"]["message"] for r in out)


async def test_a_bound_that_fits_succeeds(emu, tmp_path: Path) -> None:
    roomy = {"request_options": {"max_output_tokens": 2000}}
    engine = make_engine(emu, tmp_path, API_KEY, spec=roomy, retry=FAST_RETRY)
    summary = await engine.run(make_items(ITEMS), total=ITEMS)
    assert summary["succeeded"] == ITEMS and all(r["output"] for r in records(tmp_path))
