"""Mutable emulator state: counters, bill, stored responses, rate limiter, RNG.

Everything here is touched only from the server's event loop (helpers running in other threads
hop onto the loop, see ``server.py``), so plain dicts are safe without locks. Every per-request
operation is O(1) (amortised): the benchmark pushes thousands of requests through a 2-core box and
the emulator must not become the bottleneck it is supposed to measure.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from .billing import Billing
from .config import EmulatorConfig
from .content import PromptCache
from .ratelimit import RateLimiter


class Stats:
    """Counters exposed at ``GET /emulator/stats``.

    ``requests``/``by_*`` count generation requests only (``responses.create`` and
    ``chat.completions.create``), keyed by the service tier the client *asked for* ("auto" when
    absent), because that is what a client-side retry/fallback policy controls. Every other API
    call is visible in ``by_endpoint``. ``tokens`` and ``billing`` are keyed by the tier that
    *served* the request, because that is what is paid for (see ``billing.py``).

    429s by cause: ``rate_limited`` counts ``rate_limit_exceeded`` answers by the limit that refused
    them (``requests``/``tokens`` per window, ``requests_per_day`` from ``long_wait_rate``);
    ``unavailable`` counts flex-capacity ``resource_unavailable`` answers. ``admitted`` is what the
    rate limiter charged: requests past it and their estimated tokens (prompt + max output), the
    figure to hold against ``tpm_limit`` when measuring how fully a client uses its limit.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.by_endpoint: Counter[str] = Counter()
        self.by_tier: Counter[str] = Counter()
        self.by_status: Counter[str] = Counter()
        self.by_tier_status: Counter[str] = Counter()
        self.by_error_code: Counter[str] = Counter()
        self.inputs: dict[str, dict[str, Any]] = {}
        self.auth_failures = 0
        self.hangs = 0
        self.disconnects = 0
        self.max_in_flight = 0
        self.background: Counter[str] = Counter(created=0, completed=0, cancelled=0, polled=0, expired=0)
        self.tokens: dict[str, Counter[str]] = {}
        # Injected misbehaviour (config ``*_rate`` fault knobs), counted when decided.
        self.faults: Counter[str] = Counter(malformed=0, trickle=0, reset=0, long_wait=0)
        self.malformed_kinds: Counter[str] = Counter()
        self.rate_limited: Counter[str] = Counter(requests=0, tokens=0, requests_per_day=0)
        self.unavailable = 0
        self.admitted: Counter[str] = Counter(requests=0, tokens=0)
        self.billing = Billing()

    def record(self, tier: str, status: int, key: str | None, *, succeeded: bool, code: str | None) -> None:
        """Account one finished generation request (O(1))."""
        self.requests += 1
        self.by_tier[tier] += 1
        self.by_status[str(status)] += 1
        self.by_tier_status[f"{tier}:{status}"] += 1
        if code:
            self.by_error_code[code] += 1
        if key is not None:
            entry = self.inputs.get(key)
            if entry is None:
                entry = self.inputs[key] = {"requests": 0, "succeeded": 0, "statuses": []}
            entry["requests"] += 1
            entry["statuses"].append(status)
            if succeeded:
                entry["succeeded"] += 1

    def mark_succeeded(self, key: str | None) -> None:
        """A background response reached ``completed``: it now has a result."""
        if key is not None and key in self.inputs:
            self.inputs[key]["succeeded"] += 1

    def add_tokens(self, tier: str, usage: dict[str, int]) -> None:
        bucket = self.tokens.get(tier)
        if bucket is None:
            bucket = self.tokens[tier] = Counter()
        bucket.update(usage)

    def snapshot(self, *, in_flight: int, in_flight_all: int, background_active: int) -> dict[str, Any]:
        """Plain-JSON copy (lists copied too, so callers can't mutate live state)."""
        return {
            "requests": self.requests,
            "by_endpoint": dict(self.by_endpoint),
            "by_tier": dict(self.by_tier),
            "by_status": dict(self.by_status),
            "by_tier_status": dict(self.by_tier_status),
            "by_error_code": dict(self.by_error_code),
            "in_flight": in_flight,
            "max_in_flight": self.max_in_flight,
            "in_flight_all": in_flight_all,
            "background": {**self.background, "active": background_active},
            "inputs": {
                k: {"requests": v["requests"], "succeeded": v["succeeded"], "statuses": list(v["statuses"])}
                for k, v in self.inputs.items()
            },
            "auth_failures": self.auth_failures,
            "hangs": self.hangs,
            "disconnects": self.disconnects,
            "tokens": {tier: dict(c) for tier, c in self.tokens.items()},
            "faults": dict(self.faults),
            "malformed_kinds": dict(self.malformed_kinds),
            "rate_limited": dict(self.rate_limited),
            "unavailable": self.unavailable,
            "admitted": dict(self.admitted),
            "billing": self.billing.snapshot(),
        }


@dataclass(slots=True, eq=False)
class StoredResponse:
    """A Responses object kept for ``GET /v1/responses/{id}`` (and cancel, if background)."""

    id: str
    data: dict[str, Any]
    background: bool
    input_key: str | None = None
    holds_flex_slot: bool = False
    task: asyncio.Task[None] | None = None
    finished_at: float | None = None


@dataclass
class ResponseStore:
    """id -> stored response, forgetting finished ones ``background_expiry_s`` after they finish.

    Finished ids are queued in finish order, so expiry is a pop-from-the-left sweep: amortised O(1)
    per operation, no scan of the whole store.
    """

    items: dict[str, StoredResponse] = field(default_factory=dict)
    finished: deque[tuple[float, str]] = field(default_factory=deque)

    def add(self, rec: StoredResponse) -> None:
        self.items[rec.id] = rec

    def finish(self, rec: StoredResponse, now: float) -> None:
        rec.finished_at = now
        rec.task = None
        self.finished.append((now, rec.id))

    def sweep(self, now: float, expiry_s: float) -> int:
        """Drop responses finished more than ``expiry_s`` ago; returns how many background ones went."""
        dropped = 0
        while self.finished and self.finished[0][0] + expiry_s <= now:
            finished_at, rid = self.finished.popleft()
            rec = self.items.get(rid)
            if rec is not None and rec.finished_at == finished_at:
                del self.items[rid]
                dropped += rec.background
        return dropped

    def get(self, rid: str) -> StoredResponse | None:
        return self.items.get(rid)

    def active(self) -> list[StoredResponse]:
        return [rec for rec in self.items.values() if rec.task is not None]

    def clear(self) -> None:
        self.items.clear()
        self.finished.clear()


class EmulatorState:
    """Everything the routes share: config, RNG, counters, store, limiter, prompt cache."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.stats = Stats()
        self.store = ResponseStore()
        self.limiter = RateLimiter()
        self.limiter.configure(config.rpm_limit, config.tpm_limit, config.rate_window_s)
        self.cache = PromptCache()
        self.flex_in_flight = 0
        self.in_flight_all = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self.handlers: set[asyncio.Task[Any]] = set()
        self.closing = False

    # -------------------------------------------------------------------------------- config
    def update_config(self, knobs: dict[str, Any]) -> EmulatorConfig:
        """Apply a partial update (validated); a changed seed re-seeds the RNG."""
        new = self.config.updated(knobs)
        if "seed" in knobs:
            self.rng.seed(new.seed)
        self.limiter.configure(new.rpm_limit, new.tpm_limit, new.rate_window_s)  # a change refills
        self.config = new
        return new

    # -------------------------------------------------------------------------------- flex slots
    def acquire_flex(self) -> None:
        self.flex_in_flight += 1
        if self.flex_in_flight > self.stats.max_in_flight:
            self.stats.max_in_flight = self.flex_in_flight

    def release_flex(self) -> None:
        self.flex_in_flight -= 1

    def release_record(self, rec: StoredResponse) -> None:
        """Free the flex slot a background response holds, exactly once."""
        if rec.holds_flex_slot:
            rec.holds_flex_slot = False
            self.release_flex()

    # -------------------------------------------------------------------------------- store
    def sweep(self) -> None:
        """Expire finished responses (amortised O(1)); expired background ones count in stats."""
        self.stats.background["expired"] += self.store.sweep(time.monotonic(), self.config.background_expiry_s)

    def remember(self, rec: StoredResponse, *, finished: bool) -> None:
        """Store a response; sweeping here too keeps memory flat when nobody ever retrieves."""
        self.sweep()
        self.store.add(rec)
        if finished:
            self.store.finish(rec, time.monotonic())

    def lookup(self, rid: str) -> StoredResponse | None:
        """Find a stored response after expiring old ones."""
        self.sweep()
        return self.store.get(rid)

    # -------------------------------------------------------------------------------- shutdown
    def close_inflight(self) -> None:
        """Server is stopping: wake every sleeping/hanging generation handler so it answers 503.

        Without this, uvicorn's graceful shutdown waits for hung requests, then cancels them and
        logs one traceback each.
        """
        self.closing = True
        for task in list(self.handlers):
            task.cancel()

    # -------------------------------------------------------------------------------- reset / stats
    def cancel_background(self) -> None:
        """Stop all queued/in_progress background work (their flex slots are released)."""
        for rec in self.store.active():
            if rec.task is not None:
                rec.task.cancel()
                rec.task = None
            self.release_record(rec)

    def reset(self) -> None:
        """Clear stats and bill, stored responses (cancelling background work), cache, rate-limit
        buckets (full again); re-seed RNG."""
        self.cancel_background()
        self.store.clear()
        self.cache.clear()
        self.limiter.reset()
        self.stats.reset()
        self.stats.max_in_flight = self.flex_in_flight
        self.rng.seed(self.config.seed)

    def snapshot(self) -> dict[str, Any]:
        return self.stats.snapshot(
            in_flight=self.flex_in_flight,
            in_flight_all=self.in_flight_all,
            background_active=sum(1 for rec in self.store.items.values() if rec.task is not None),
        )
