"""One item on its way through the engine: what is sent, on which tier, and how many requests it took.

The engine's per-item steps (the tier/fallback policy, the retry loop, background mode, the record)
all read and update this one object, instead of passing a mutable counter and a fallback flag from
method to method. It lives only while its item is in flight: one small slotted object per item.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flex_provider.engine.items import WorkItem

if TYPE_CHECKING:
    from flex_provider.engine.budget import BudgetReservation
    from flex_provider.engine.deadline import TierDecision
    from flex_provider.engine.estimate import TokenEstimate


def prompt_hash(prompt: str) -> str:
    """What was sent, in 16 hex characters: on resume a changed prompt is sent again."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]


@dataclass(slots=True, eq=False)
class ItemAttempt:
    item: WorkItem
    prompt_hash: str  # hash of the prompt sent: recorded, and checked before re-attaching in background mode
    requested_tier: str  # the tier asked for now: the spec's, or the fallback tier once fallen back
    attempts: int = 0  # requests sent for this item, on every tier (background polls are not requests)
    # Why the item left its first tier: "unavailable" (flex had no capacity) or "deadline" (the
    # deadline planner sent it to the fallback tier); None while it has not.
    fallback_reason: str | None = None
    estimate: TokenEstimate | None = None  # its tokens, estimated once before the first request
    decision: TierDecision | None = None  # the deadline planner's, when the run has a deadline
    held: BudgetReservation | None = None  # background mode: the budget held until the response is answered

    @property
    def fell_back(self) -> bool:
        return self.fallback_reason is not None

    def fall_back(self, tier: str, reason: str) -> None:
        """Ask ``tier`` from now on; the attempt count carries over (it is the item's total)."""
        self.requested_tier = tier
        self.fallback_reason = str(reason)
