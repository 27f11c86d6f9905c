"""Counters of a run and the one-line progress report the trigger logs every few seconds.

Counts, ids and money only: prompts and outputs may be private data and are never logged here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from flex_provider.engine.pricing import CostTally
from flex_provider.engine.usage import Usage


@dataclass
class RunCounters:
    requests: int = 0
    unavailable: int = 0  # 429 resource_unavailable answers
    rate_limited: int = 0  # 429 rate_limit_exceeded answers
    transient_errors: int = 0  # 408/409/5xx/connection/timeouts/malformed answers
    malformed: int = 0  # 200 answers that could not be read (invalid JSON, HTML, no output)
    fallbacks: int = 0  # items sent to the fallback tier
    background_created: int = 0
    background_reattached: int = 0  # pending background responses picked up after a restart
    succeeded: int = 0
    failed: int = 0
    resumed: int = 0  # items skipped because storage already held their result
    duplicates: int = 0  # input items whose id was already seen in this input
    prompt_changed: int = 0  # items with a final record for another prompt: sent again
    in_flight: int = 0
    usage: Usage = field(default_factory=Usage)
    cost: CostTally = field(default_factory=CostTally)
    started: float = field(default_factory=time.monotonic)

    PERSISTED = (
        "requests",
        "unavailable",
        "rate_limited",
        "transient_errors",
        "malformed",
        "fallbacks",
        "background_created",
        "background_reattached",
    )

    def persisted(self) -> dict[str, Any]:
        """The request counters saved with each checkpoint (so crashed sessions still count)."""
        return {name: getattr(self, name) for name in self.PERSISTED}

    def line(self, total: int | None) -> str:
        done = self.succeeded + self.failed
        of = f"/{total:,}" if total is not None else ""
        u, c = self.usage, self.cost
        # One line, no space inside a label and its number's meaning ("unavailable(429)" cannot be
        # wrapped apart in a log viewer as "429" / "unavailable" could).
        return (
            f"flex progress: done {done:,}{of} (succeeded {self.succeeded:,}, failed {self.failed:,}, "
            f"resumed {self.resumed:,}), in flight {self.in_flight}, requests {self.requests:,}, "
            f"unavailable(429) {self.unavailable:,}, rate-limited(429) {self.rate_limited:,}, "
            f"transient errors {self.transient_errors:,}, fallbacks {self.fallbacks:,}, "
            f"tokens in {u.input:,} out {u.output:,}, "
            f"cost ${c.actual:,.4f} (saved ${c.standard_equivalent - c.actual:,.4f}), "
            f"elapsed {time.monotonic() - self.started:.0f}s"
        )
