"""ItemAttempt: the per-item state the engine's steps share (tier asked, requests sent, fallback)."""

from __future__ import annotations

import pytest

from flex_provider.engine.attempt import ItemAttempt
from flex_provider.engine.errors import Verdict
from flex_provider.engine.items import WorkItem


def test_a_new_attempt_asks_its_first_tier_and_has_sent_nothing():
    item = WorkItem("a", "hello", index=3)
    attempt = ItemAttempt(item, "0123456789abcdef", "flex")
    assert attempt.item is item
    assert attempt.prompt_hash == "0123456789abcdef"
    assert attempt.requested_tier == "flex"
    assert attempt.attempts == 0
    assert not attempt.fell_back
    assert attempt.fallback_reason is None


def test_falling_back_switches_the_tier_records_why_and_keeps_the_count():
    attempt = ItemAttempt(WorkItem("a", "hello"), "h", "flex")
    attempt.attempts += 3  # what the retry loop does per request sent
    attempt.fall_back("default", Verdict.UNAVAILABLE)
    attempt.attempts += 1
    assert attempt.requested_tier == "default"
    assert attempt.fell_back
    assert attempt.fallback_reason == "unavailable"  # what the record says
    assert attempt.attempts == 4  # the item's total over both tiers, as the record reports it


def test_attempt_is_slotted_and_compared_by_identity():
    attempt = ItemAttempt(WorkItem("a", "hello"), "h", "flex")
    with pytest.raises(AttributeError):
        attempt.unexpected = 1  # type: ignore[attr-defined]
    assert attempt != ItemAttempt(WorkItem("a", "hello"), "h", "flex")
