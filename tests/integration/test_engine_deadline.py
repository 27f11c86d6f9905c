"""A finish-by deadline, against the emulator's slow flex and fast standard tiers.

Flex answers take ``latency_s``, the standard tier ``standard_latency_s``. With a deadline too short
for flex alone, the run must finish on time and pay standard prices for a minority of the items
only (the last ones, as late as possible); with a deadline long enough for flex, none go there.
Run with ``-s`` for the figures (the README's table quotes them).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from flex_provider.live import read_live_state
from tests.integration.conftest import API_KEY, FAST_RETRY
from tests.integration.helpers import make_engine, make_items, records

pytestmark = pytest.mark.integration

ITEMS = 200
CONCURRENCY = 20
FLEX_S, STANDARD_S = 0.6, 0.03
FLEX_ALONE_S = ITEMS / CONCURRENCY * FLEX_S  # 6 s of flex answers, before the last ones' spread


async def run_with_deadline(emu: Any, root: Path, seconds: float) -> tuple[dict[str, Any], datetime, float]:
    emu.update(latency_s=FLEX_S, latency_jitter=0.2, standard_latency_s=STANDARD_S)
    started = datetime.now(UTC)
    deadline = started + timedelta(seconds=seconds)
    engine = make_engine(
        emu,
        root,
        API_KEY,
        spec={"request_options": {"max_output_tokens": 1000}},
        retry=FAST_RETRY,
        max_concurrency=CONCURRENCY,
        deadline_at=deadline.isoformat(),
    )
    summary = await engine.run(make_items(ITEMS), total=ITEMS)
    took = (datetime.now(UTC) - started).total_seconds()
    assert summary["succeeded"] == ITEMS
    return summary, deadline, took


async def test_a_deadline_too_short_for_flex_alone_is_met_with_a_minority_on_standard(emu, tmp_path: Path) -> None:
    seconds = 6.0  # flex alone takes ~7 s here (start-up and spread included): ~20-35 % must go to standard
    summary, deadline, took = await run_with_deadline(emu, tmp_path, seconds)

    out = records(tmp_path)
    last = max(datetime.fromisoformat(r["finished_at"]) for r in out)
    on_standard = [r for r in out if r["fallback_reason"] == "deadline"]
    by_tier = emu.stats()["by_tier"]
    block = summary["deadline"]
    assert block is not None
    print(
        f"\n[deadline] {ITEMS} items, {CONCURRENCY} in flight, flex {FLEX_S}s / standard {STANDARD_S}s "
        f"(flex alone ~{FLEX_ALONE_S:.0f}s): deadline {seconds:g}s, done in {took:.1f}s, {len(on_standard)} items "
        f"({len(on_standard) / ITEMS:.0%}) on standard, costing ${block['extra_cost_usd']:.6f} more "
        f"(run ${summary['cost_usd']['actual']:.6f}, all-flex would be about "
        f"${summary['cost_usd']['actual'] - block['extra_cost_usd']:.6f})"
    )
    assert last <= deadline and block["met"] is True and block["finished_late"] == 0
    assert 0 < len(on_standard) < ITEMS / 2  # a minority...
    assert by_tier.get("default", 0) == len(on_standard) == block["on_fallback"]  # ...sent there, and only they
    assert all(
        r["service_tier"] == "default" and r["requested_tier"] == "default" and r["fallback"] for r in on_standard
    )
    assert summary["fallbacks_by_reason"] == {"deadline": len(on_standard)}
    live = read_live_state(tmp_path)  # what the Flex tab shows
    assert live is not None and live["deadline"] is not None
    assert live["deadline"]["status"] == "met" and live["deadline"]["on_fallback"] == len(on_standard)
    assert summary["tiers"] == {"flex": ITEMS - len(on_standard), "default": len(on_standard)}
    # What the deadline cost: those items at standard prices instead of flex (half), to the cent.
    assert block["extra_cost_usd"] > 0
    billing = emu.stats()["billing"]["by_tier"]
    assert block["extra_cost_usd"] == pytest.approx(billing["default"]["cost_usd"] / 2, rel=1e-3)


async def test_a_deadline_long_enough_for_flex_sends_nothing_to_standard(emu, tmp_path: Path) -> None:
    summary, _, took = await run_with_deadline(emu, tmp_path, FLEX_ALONE_S * 4)
    block = summary["deadline"]
    assert block is not None
    print(f"\n[deadline] generous deadline {FLEX_ALONE_S * 4:g}s: done in {took:.1f}s, 0 on standard")
    assert block["met"] is True and block["on_fallback"] == 0 and block["extra_cost_usd"] == 0
    assert emu.stats()["by_tier"] == {"flex": ITEMS}
    assert summary["fallbacks"] == 0


async def test_a_deadline_nobody_can_make_is_reported_missed(emu, tmp_path: Path, caplog) -> None:
    """Even every item on the fast tier cannot make it: the run finishes as soon as it can and says
    it was late, in the summary and a warning, instead of hiding it."""
    summary, _, took = await run_with_deadline(emu, tmp_path, 0.3)
    block = summary["deadline"]
    assert block is not None and block["met"] is False and block["finished_late"] > 0
    assert "flex run missed its deadline" in caplog.text
    assert block["on_fallback"] > ITEMS / 2  # the faster tier, since late beats later
    print(f"\n[deadline] impossible deadline 0.3s: done in {took:.1f}s, {block['finished_late']} items late")
