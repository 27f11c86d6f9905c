"""The feeder's id checks with the compact id index, through the engine and the emulator over HTTP:
hand-built items are still checked for duplicates, items from an input (unique by ItemIds) are not
checked twice, and a resumed run skips exactly the final items, with the store's compact views."""

from __future__ import annotations

from pathlib import Path

import pytest

from flex_provider.engine import PromptBuilder
from flex_provider.engine.items import iter_work_items
from tests.integration.conftest import API_KEY, FAST_RETRY
from tests.integration.helpers import make_engine, make_items, records

pytestmark = pytest.mark.integration


async def test_hand_built_items_with_a_repeated_id_are_sent_once(emu, tmp_path: Path) -> None:
    items = make_items(5)
    items.insert(3, make_items(2)[1])  # ticket-1 again
    summary = await make_engine(emu, tmp_path, API_KEY, retry=FAST_RETRY).run(items, total=6)
    assert summary["this_run"]["duplicates_in_input"] == 1 and summary["this_run"]["requests"] == 5
    assert sorted(r["id"] for r in records(tmp_path)) == [f"ticket-{i}" for i in range(5)]


async def test_repeats_in_an_input_get_ids_of_their_own_and_a_resume_skips_them(emu, tmp_path: Path) -> None:
    raw = ["same ticket", "other ticket", "same ticket", {"id": "x", "text": "explicit"}, "same ticket"]

    def items():
        return iter_work_items(enumerate(raw), PromptBuilder(), lambda i: f"items[{i}]")

    first = await make_engine(emu, tmp_path, API_KEY, retry=FAST_RETRY).run(items(), total=5)
    assert first["this_run"]["duplicates_in_input"] == 0 and first["this_run"]["requests"] == 5
    ids = sorted(r["id"] for r in records(tmp_path))
    assert len(ids) == 5 and sum(i.endswith(("-2", "-3")) for i in ids) == 2
    second = await make_engine(emu, tmp_path, API_KEY, retry=FAST_RETRY).run(items(), total=5)
    assert second["this_run"]["resumed"] == 5 and second["this_run"]["requests"] == 0
    assert sorted(r["id"] for r in records(tmp_path)) == ids
