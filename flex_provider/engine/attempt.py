"""One item on its way through the engine: what is sent, on which tier, and how many requests it took.

The engine's per-item steps (the tier/fallback policy, the retry loop, background mode, the record)
all read and update this one object, instead of passing a mutable counter and a fallback flag from
method to method. It lives only while its item is in flight: one small slotted object per item.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from flex_provider.engine.errors import Verdict
from flex_provider.engine.items import WorkItem


def prompt_hash(prompt: str) -> str:
    """What was sent, in 16 hex characters: on resume a changed prompt is sent again."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]


@dataclass(slots=True, eq=False)
class ItemAttempt:
    item: WorkItem
    prompt_hash: str  # hash of the prompt sent: recorded, and checked before re-attaching in background mode
    requested_tier: str  # the tier asked for now: the spec's, or the fallback tier once fallen back
    attempts: int = 0  # requests sent for this item, on every tier (background polls are not requests)
    fallback_reason: Verdict | None = None  # why the item left its first tier; None while it has not

    @property
    def fell_back(self) -> bool:
        return self.fallback_reason is not None

    def fall_back(self, tier: str, reason: Verdict) -> None:
        """Ask ``tier`` from now on; the attempt count carries over (it is the item's total)."""
        self.requested_tier = tier
        self.fallback_reason = reason
