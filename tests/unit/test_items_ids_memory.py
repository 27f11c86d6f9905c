"""ItemIds with its compact index: positions in 32 bits, items marked unique for the feeder."""

from __future__ import annotations

import pytest

from flex_provider.engine import items as items_module
from flex_provider.engine.errors import FlexInputError
from flex_provider.engine.items import ItemIds, PromptBuilder, WorkItem, iter_work_items


def test_items_from_an_input_are_marked_unique_and_others_are_not():
    numbered = enumerate(["same", "same", {"id": "x", "text": "t"}, "other"])
    out = list(iter_work_items(numbered, PromptBuilder(), lambda i: f"items[{i}]"))
    assert [item.unique for item in out] == [True] * 4
    assert len({item.id for item in out}) == 4
    assert WorkItem("a", "p").unique is False  # built by hand: the engine checks it for duplicates


def test_a_duplicate_far_apart_still_names_both_positions():
    ids = ItemIds(lambda n: f"input_path line {n}")
    for n in range(1, 5000):
        ids.assign(WorkItem(f"t-{n}", "p"), n, explicit=True)
    with pytest.raises(FlexInputError, match=r"input_path line 12 and input_path line 5000 both have id 't-12'"):
        ids.assign(WorkItem("t-12", "p"), 5000, explicit=True)


def test_a_position_past_32_bits_is_refused_by_name(monkeypatch):
    monkeypatch.setattr(items_module, "_MAX_POSITION", 10)
    ids = ItemIds(lambda n: f"items[{n}]")
    ids.assign(WorkItem("a", "p"), 9, explicit=True)
    with pytest.raises(FlexInputError, match=r"items\[10\]: more than 10 items in one input"):
        ids.assign(WorkItem("b", "p"), 10, explicit=True)
