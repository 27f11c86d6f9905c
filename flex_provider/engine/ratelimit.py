"""Pacing by the account's rate limits: requests and tokens per minute, learned from the answers.

OpenAI limits an account (per model) with two token buckets, one for requests and one for tokens:
capacity = the limit, refilled continuously at the limit per minute. A request is charged when it
is admitted (its prompt, as estimated by the server, plus its output bound), and every answer says
where the buckets stand: ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``. Pacing only by
concurrency (:class:`~flex_provider.engine.concurrency.AdaptiveLimiter`) finds the limit by hitting
it: a 429 storm, then a halved run. :class:`RatePacer` keeps a copy of both buckets instead and
sends a request only when the copy says the server will admit it, so that a run uses the whole limit
without being refused.

Why it stays in step with the server:

* Each request's tokens are estimated before it is sent and *reserved* up front
  (:mod:`flex_provider.engine.estimate`); :meth:`RatePacer.settle` corrects the copy with what the
  server actually charged once the answer says so, and the pacer learns how far the estimates are
  off on average and scales new reservations by that (the requests queued at the start were all
  estimated before any answer could correct the estimator, and they leave in one burst).
* Every answer's headers are reconciled with the copy: the server's ``remaining`` was true when it
  admitted that request, so the pacer replays what it charged itself since then. When the server
  has less than the copy, the server is trusted at once; when it has more, the copy moves up only a
  tenth of the way (a copy that is too low costs a little speed, one that is too high costs 429s,
  and a replay across answers that crossed in flight can read a little high). Other tasks sharing
  the account show up this way too.
* A reserve (``safety_margin`` of the capacity, 10 % by default) is never spent: estimates are a
  little off and clocks a little apart, and the reserve absorbs that. It costs next to nothing: the
  bucket refills at the full rate whatever its level, so a run still sends the whole limit per
  minute; only the one-off burst at the start is smaller. So whenever the server shows that the copy
  was too optimistic, the reserve grows to 1.5 times the error (at most ``max_reserve``).
* Until the first answer tells the limits, at most ``startup_in_flight`` requests are in flight:
  200 workers starting at once against a limit nobody knows yet would otherwise be 200 requests in
  the first millisecond. A server whose answers carry no rate-limit headers (a proxy, the emulator
  without limits) is left unpaced after ``startup_answers`` such answers.
* A 429 ``rate_limit_exceeded`` all the same (:meth:`RatePacer.on_rate_limited`) empties that
  bucket, pauses it for the server's wait and widens its reserve.

Waiters are served first come, first served (a big request is not starved by small ones), with one
timer for the head of the queue: no polling, no busy waiting, nothing blocking the event loop.
Cancelling a waiter (a run stopped, a timeout) gives back whatever it held.

User caps (``max_requests_per_minute``, ``max_tokens_per_minute``, for sharing an account between
tasks) bound the buckets further. ``window_s`` is what "per minute" means: 60 s, except in tests and
against an emulator that uses a shorter window.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from flex_provider.engine.retry import parse_duration

Kind = Literal["requests", "tokens"]
KINDS: tuple[Kind, ...] = ("requests", "tokens")

# Bounds and weight of the learnt correction of the callers' token estimates.
_MIN_SCALE, _MAX_SCALE, _SCALE_SMOOTHING = 0.5, 4.0, 0.05

# The shortest wake-up armed: rounding must never arm a timer for "now" over and over.
_MIN_WAIT_S = 1e-4

# Below this many tokens (or requests) a bucket counts as having enough: float refill arithmetic must
# not leave a waiter re-arming a timer for 1e-13 s.
_EPSILON = 1e-6

# The headers an answer is read for (prefixes of lower-cased names).
_WANTED_HEADERS = ("x-ratelimit-", "openai-processing-ms")

# Charges remembered with their time (see _Bucket.ledger_at): enough for every answer of a fast run,
# bounded memory for a slow one (an answer older than the history reads as in-order, as it did before).
_HISTORY = 4096


# -- answer headers ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LimitState:
    """One bucket as the server reported it; None where a header was missing or unreadable."""

    limit: int | None = None
    remaining: int | None = None
    reset_s: float | None = None  # until the bucket is full again (OpenAI: "resets to its initial state")

    @property
    def announced(self) -> bool:
        return self.limit is not None or self.remaining is not None or self.reset_s is not None


@dataclass(frozen=True, slots=True)
class RateLimits:
    """The ``x-ratelimit-*`` headers of one answer (success or error alike), and how long the server
    says it worked on the request (``openai-processing-ms``): the buckets' ``remaining`` was true when
    the request was admitted, which is at most that long before the answer arrived."""

    requests: LimitState = LimitState()
    tokens: LimitState = LimitState()
    processing_s: float | None = None

    @property
    def announced(self) -> bool:
        """Whether the answer carried any rate-limit header at all."""
        return self.requests.announced or self.tokens.announced

    def of(self, kind: Kind) -> LimitState:
        return self.requests if kind == "requests" else self.tokens

    @classmethod
    def from_headers(cls, headers: Mapping[str, str] | None) -> RateLimits:
        """Read the six headers; a missing or malformed value is None (never raises: a proxy may
        send anything, and pacing must not break an answer that arrived fine)."""
        if not headers:
            return cls()
        try:
            # httpx's Headers hand out their names lower-cased (multi_items, the cheapest read: this
            # runs once per answer); any other mapping is lower-cased here.
            multi_items = getattr(headers, "multi_items", None)
            items = multi_items() if multi_items is not None else ((str(k).lower(), v) for k, v in headers.items())
            wanted = {name: value for name, value in items if name.startswith(_WANTED_HEADERS)}
        except Exception:  # a headers object that cannot be iterated: read as no headers
            return cls()
        processing = _count(wanted.get("openai-processing-ms"))
        return cls(
            _limit_state(wanted, "requests"),
            _limit_state(wanted, "tokens"),
            processing / 1000.0 if processing is not None else None,
        )


def _limit_state(headers: Mapping[str, Any], kind: Kind) -> LimitState:
    limit = _count(headers.get(f"x-ratelimit-limit-{kind}"))
    reset = headers.get(f"x-ratelimit-reset-{kind}")
    return LimitState(
        limit=limit if limit else None,  # a limit of 0 would stop the run forever: not believable
        remaining=_count(headers.get(f"x-ratelimit-remaining-{kind}")),
        reset_s=parse_duration(reset) if isinstance(reset, str) else None,
    )


def _count(value: Any) -> int | None:
    if not isinstance(value, str):
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    if not math.isfinite(number) or number < 0:
        return None
    return int(number)


# -- the pacer ---------------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class Reservation:
    """What one request took from the buckets; handed back to :meth:`RatePacer.settle`.

    The marks are the buckets' running ledgers right after this take: comparing them with the
    ledgers when the answer comes tells what the pacer itself charged in between, which is how a
    ``remaining`` header that was true at admission is brought up to now."""

    tokens: int  # charged to the copy: the estimate, corrected by what answers have shown so far
    requested: int  # the caller's estimate
    at: float
    requests_mark: float
    tokens_mark: float
    # What was in flight when this one was taken: requests the server may have admitted *after* this
    # one (answers overtake each other), so its ``remaining`` may not count them yet.
    requests_ahead: float = 0.0
    tokens_ahead: float = 0.0
    tokens_adjust: float = 0.0  # what settle() changed of this reservation's own charge
    requests_adjust: float = 0.0
    settled: bool = False


@dataclass(slots=True)
class _Bucket:
    """Our copy of one of the server's buckets (or of the user's cap, whichever is lower)."""

    kind: Kind
    cap: float | None  # the user's limit per window
    window_s: float
    reserve_fraction: float
    server_limit: float | None = None
    level: float = 0.0
    updated: float = 0.0
    paused_until: float = 0.0
    ledger: float = 0.0  # everything charged so far, net of refunds (Reservation marks read it)
    max_reserve: float = 0.25
    upward_gain: float = 0.1
    synced: bool = False  # the copy has been set from a remaining header once
    corrections: int = 0  # times the server said less remained than we thought
    rate_limited: int = 0
    # (time, ledger after the charge) of recent charges, for ledger_at(); trimmed to about _HISTORY,
    # kept only once a server limit is known (before that, no answer is reconciled).
    _times: list[float] = field(default_factory=list)
    _ledgers: list[float] = field(default_factory=list)
    _incomplete: bool = False  # charges were left out (trimmed, or before the limit was known)
    _capacity: float | None = None  # the lower of server_limit and cap (read on every request)

    def __post_init__(self) -> None:
        self._capacity = self.cap

    @property
    def capacity(self) -> float | None:
        return self._capacity

    @property
    def rate(self) -> float:
        capacity = self.capacity
        return capacity / self.window_s if capacity is not None else math.inf

    @property
    def reserve(self) -> float:
        capacity = self.capacity
        return capacity * self.reserve_fraction if capacity is not None else 0.0

    def start(self, now: float) -> None:
        self.level = self.capacity or 0.0
        self.updated = now

    def refill(self, now: float) -> None:
        capacity = self.capacity
        if capacity is not None and now > self.updated:
            self.level = min(capacity, self.level + (now - self.updated) * capacity / self.window_s)
        self.updated = max(self.updated, now)

    def wait_for(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` may be taken (0: now). A request bigger than the bucket can
        ever hold waits for a full bucket instead of forever (the server refuses it, and says why)."""
        pause = max(0.0, self.paused_until - now)
        capacity = self.capacity
        if capacity is None:
            return pause
        reserve = self.reserve
        deficit = min(amount, capacity - reserve) + reserve - self.level
        if deficit <= _EPSILON:
            return pause
        return max(pause, deficit / self.rate)

    def charge(self, amount: float, now: float | None = None) -> None:
        self.level -= amount
        self.ledger += amount
        capacity = self._capacity
        if capacity is not None:
            self.level = min(self.level, capacity)
        if now is None or self.server_limit is None:
            self._incomplete = True
            return
        self._times.append(now)
        self._ledgers.append(self.ledger)
        if len(self._times) > 2 * _HISTORY:
            del self._times[:_HISTORY], self._ledgers[:_HISTORY]
            self._incomplete = True

    def ledger_at(self, moment: float) -> float | None:
        """The ledger as it stood at ``moment`` (every charge up to then); None when older than the
        history kept. O(log n)."""
        index = bisect.bisect_right(self._times, moment) - 1
        if index >= 0:
            return self._ledgers[index]
        return None if self._incomplete else 0.0

    def learn_limit(self, limit: int) -> None:
        first = self.server_limit is None
        self.server_limit = float(limit)
        self._capacity = self.server_limit if self.cap is None else min(self.server_limit, self.cap)
        capacity = self.capacity
        assert capacity is not None
        if first and self.cap is None:
            self.level = capacity  # the copy had no bucket to keep: reconcile() sets it from remaining
        self.level = min(self.level, capacity)

    def reconcile(
        self,
        state: LimitState,
        at: float,
        mark: float,
        now: float,
        ahead: float = 0.0,
        *,
        latest: float | None = None,
        taken_mark: float | None = None,
    ) -> None:
        """Bring the server's ``remaining`` up to ``now``: lower the copy when even the most the
        server can have left is below it, raise it (a little) when even the least is above it.

        The server admitted the request at some moment between ``at`` (we sent it) and ``latest``
        (the answer's arrival less the server's processing time); ``remaining`` was true then. The
        replay of what we charged since assumes the server admitted requests in the order we took
        them; with many in flight (new connections opened in any order, a busy event loop) it does
        not. So the reading is taken as a range: at most, the refill since ``at`` and only what we
        took after ``latest`` is gone (what we took in between may have been admitted before this
        one); at least, the refill since ``latest``, everything we took after this one and
        everything in flight when we took it (``ahead``: it may have been admitted after) is gone.
        A copy too low costs a little speed once; one too high costs 429s. ``mark``: the ledger
        after this request's take, its own later adjustment included (``taken_mark``: without it)."""
        if state.limit is not None and state.limit != self.server_limit:
            self.learn_limit(state.limit)
        limit = self.server_limit
        if limit is None:
            return
        server_rate = limit / self.window_s
        remaining: float | None = state.remaining
        if remaining is None and state.reset_s is not None:
            remaining = max(0.0, limit - state.reset_s * server_rate)  # reset = until full again
        if remaining is None:
            return
        latest = at if latest is None else max(at, min(latest, now))
        after = self.ledger - mark  # taken after this one (its own later adjustment left out)
        ambiguous = 0.0  # taken between its send and its latest possible admission
        if latest > at:
            by_latest = self.ledger_at(latest)
            if by_latest is not None:
                ambiguous = min(after, max(0.0, by_latest - (mark if taken_mark is None else taken_mark)))
        most = min(limit, remaining + max(0.0, now - at) * server_rate - after + ambiguous)
        least = min(limit, remaining + max(0.0, now - latest) * server_rate - after - ahead)
        if not self.synced:  # the first reading: the copy had nothing to go on before
            self.synced = True
            self.level = min(self.level, least)
        elif most < self.level - _EPSILON:
            # The copy was too optimistic by this much; keep at least that much more in reserve from
            # now on (a reserve costs nothing in the long run, a 429 costs a retry and a pause).
            self._widen_reserve(1.5 * (self.level - most))
            self.level = most
            self.corrections += 1
        # Under a user cap lower than the server's limit, the copy is the cap's own bucket: the
        # server's fuller bucket can only lower it, never raise it.
        elif (self.cap is None or self.cap >= limit) and least > self.level + _EPSILON:
            # More left than the copy says: the server counts a little less than we charge. Move up
            # only a little of the way: a reading that is too high costs 429s, one that is too low
            # only a little speed.
            self.level += self.upward_gain * (min(least, self.capacity or least) - self.level)

    def drain(self, now: float, wait_s: float | None, max_pause_s: float) -> None:
        self.rate_limited += 1
        self.level = min(self.level, 0.0)
        if wait_s is not None and wait_s > 0:
            self.paused_until = max(self.paused_until, now + min(wait_s, max_pause_s))
        self._widen_reserve(self.reserve * 1.5)  # the copy was too optimistic: keep more in reserve

    def _widen_reserve(self, amount: float) -> None:
        capacity = self.capacity
        if capacity:
            wanted = max(self.reserve, amount, 0.01 * capacity) / capacity
            self.reserve_fraction = min(self.max_reserve, max(self.reserve_fraction, wanted))


@dataclass(slots=True, eq=False)
class _Waiter:
    tokens: int
    future: asyncio.Future[Reservation]


class RatePacer:
    """Keeps requests and tokens per minute under the account's limits (see the module docstring).

    ``await acquire(tokens)`` before each request, ``settle(reservation, ...)`` or ``refund(...)``
    when its answer (or its failure) is known, ``on_rate_limited(kind, wait_s)`` on a 429
    rate_limit_exceeded. All methods run on the event loop's thread; none blocks.
    """

    def __init__(
        self,
        *,
        max_requests_per_minute: float | None = None,
        max_tokens_per_minute: float | None = None,
        window_s: float = 60.0,
        safety_margin: float = 0.1,
        startup_in_flight: int = 4,
        startup_answers: int = 3,
        max_pause_s: float = 900.0,
        max_reserve: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        for name, cap in (
            ("max_requests_per_minute", max_requests_per_minute),
            ("max_tokens_per_minute", max_tokens_per_minute),
        ):
            if cap is not None and not (math.isfinite(cap) and cap > 0):
                raise ValueError(f"{name}: expected a positive number or None, got {cap!r}")
        if not (math.isfinite(window_s) and window_s > 0):
            raise ValueError(f"window_s: expected a positive number of seconds, got {window_s!r}")
        if not 0.0 <= safety_margin < 1.0:
            raise ValueError(f"safety_margin: expected a fraction in [0, 1), got {safety_margin!r}")
        if startup_in_flight < 1 or startup_answers < 1:
            raise ValueError("startup_in_flight and startup_answers must be at least 1")
        self.window_s = window_s
        self.startup_in_flight = startup_in_flight
        self.startup_answers = startup_answers
        self.max_pause_s = max_pause_s
        self.max_reserve = max(max_reserve, safety_margin)
        self._clock = clock
        now = clock()
        self._requests = _Bucket(
            "requests", max_requests_per_minute, window_s, safety_margin, max_reserve=self.max_reserve
        )
        self._tokens = _Bucket("tokens", max_tokens_per_minute, window_s, safety_margin, max_reserve=self.max_reserve)
        for bucket in (self._requests, self._tokens):
            bucket.start(now)
        self._queue: collections.deque[_Waiter] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = math.inf
        self._probing = True  # limits not known yet: see startup_in_flight
        self._bare_answers = 0  # answers without any rate-limit header, while probing
        # Actual over estimated tokens, learnt from settle(): the requests queued at the start were all
        # estimated before the first answer could correct the estimator, and they leave in one burst.
        self._scale = 1.0
        self._scale_samples = 0
        self.in_flight = 0
        self._in_flight_tokens = 0.0  # tokens of the requests in flight, as charged when taken
        # Counters for the summary and the progress line.
        self.acquired = 0
        self.waited = 0
        self.wait_s = 0.0

    # -- what the runner calls ---------------------------------------------------------------
    async def acquire(self, tokens: int) -> Reservation:
        """Wait until both buckets admit one request of ``tokens`` estimated tokens; take them."""
        tokens = max(0, int(tokens))
        now = self._clock()
        if not self._queue:
            self._refill(now)
            if self._delay(tokens, now) <= 0:
                return self._take(tokens, now)
        loop = asyncio.get_running_loop()
        waiter = _Waiter(tokens, loop.create_future())
        self._queue.append(waiter)
        self._serve()  # serves us at once if cancelled waiters were all that was ahead; else arms the timer
        try:
            reservation = await waiter.future
        except asyncio.CancelledError:
            future = waiter.future
            if future.done() and not future.cancelled():
                self.refund(future.result())  # served in the very moment we were cancelled
            else:
                self._serve()  # if we were the head, the next waiter may be able to go now
            raise
        self.waited += 1
        self.wait_s += max(0.0, reservation.at - now)
        return reservation

    def _close(self, reservation: Reservation) -> float | None:
        """Take ``reservation`` out of flight and bring the buckets up to now; None if it was
        already settled or refunded (both are idempotent)."""
        if reservation.settled:
            return None
        reservation.settled = True
        self.in_flight -= 1
        self._in_flight_tokens = max(0.0, self._in_flight_tokens - reservation.tokens) if self.in_flight else 0.0
        now = self._clock()
        self._refill(now)
        return now

    def settle(
        self, reservation: Reservation, actual_tokens: int | None = None, limits: RateLimits | None = None
    ) -> None:
        """The request was answered (or failed after it may have been admitted).

        ``actual_tokens``: what the server's limiter charged for it, as far as the answer tells
        (see :meth:`TokenEstimate.charged <flex_provider.engine.estimate.TokenEstimate.charged>`);
        the difference to the reservation is refunded or charged. None keeps the estimate (a
        timeout: we cannot know). ``limits``: the answer's headers (:meth:`RateLimits.from_headers`);
        None when there was no answer. Calling it again for the same reservation does nothing, so
        it can sit in a ``finally``."""
        now = self._close(reservation)
        if now is None:
            return
        if actual_tokens is not None:
            actual = max(0, int(actual_tokens))
            delta = actual - reservation.tokens
            if delta:
                self._tokens.charge(delta, now)
            reservation.tokens_adjust = delta
            self._learn_scale(reservation.requested, actual)
        if limits is not None:
            self._observe(reservation, limits, now)
        self._serve()

    def refund(self, reservation: Reservation, limits: RateLimits | None = None) -> None:
        """The request was not admitted (a 429 rate_limit_exceeded, or it never left): give back the
        request and all its tokens. Idempotent, like :meth:`settle`."""
        now = self._close(reservation)
        if now is None:
            return
        self._requests.charge(-1, now)
        reservation.requests_adjust = -1
        self._tokens.charge(-reservation.tokens, now)
        reservation.tokens_adjust = -reservation.tokens
        if limits is not None:
            self._observe(reservation, limits, now)
        self._serve()

    def on_rate_limited(self, kind: str | None, wait_s: float | None) -> None:
        """A 429 rate_limit_exceeded came back anyway: the copy of that bucket was too optimistic.
        Empty it, send nothing of that kind for ``wait_s`` (the server's hint, capped by
        ``max_pause_s``) and keep a bigger reserve from now on. ``kind`` is the error's ``type``
        (``"requests"`` or ``"tokens"``); anything else drains both."""
        now = self._clock()
        self._refill(now)
        for bucket in self._buckets_of(kind):
            bucket.drain(now, wait_s, self.max_pause_s)
        self._serve()

    # -- reading it ----------------------------------------------------------------------------
    def limit(self, kind: Kind) -> float | None:
        """The limit per window in force for ``kind`` (server's or user's, the lower); None: unpaced."""
        return self._bucket(kind).capacity

    def available(self, kind: Kind) -> float:
        """What the copy of ``kind``'s bucket holds now (the reserve included)."""
        bucket = self._bucket(kind)
        bucket.refill(self._clock())
        return bucket.level if bucket.capacity is not None else math.inf

    @property
    def waiting(self) -> int:
        return sum(1 for waiter in self._queue if not waiter.future.done())

    def stats(self) -> dict[str, Any]:
        """JSON-safe counters for the run summary."""
        out: dict[str, Any] = {
            "acquired": self.acquired,
            "waited": self.waited,
            "wait_s": round(self.wait_s, 3),
            "estimate_scale": round(self._scale, 3),  # actual over estimated tokens, as answers showed
        }
        for bucket in (self._requests, self._tokens):
            out[bucket.kind] = {
                "limit": bucket.capacity,
                "server_limit": bucket.server_limit,
                "corrections": bucket.corrections,
                "rate_limited": bucket.rate_limited,
            }
        return out

    # -- inside --------------------------------------------------------------------------------
    def _bucket(self, kind: Kind) -> _Bucket:
        return self._requests if kind == "requests" else self._tokens

    def _buckets_of(self, kind: str | None) -> tuple[_Bucket, ...]:
        if kind == "requests":
            return (self._requests,)
        if kind == "tokens":
            return (self._tokens,)
        return (self._requests, self._tokens)

    def _refill(self, now: float) -> None:
        self._requests.refill(now)
        self._tokens.refill(now)

    def _scaled(self, tokens: int) -> int:
        return math.ceil(tokens * self._scale)

    def _delay(self, tokens: int, now: float) -> float:
        if self._probing and self.in_flight >= self.startup_in_flight:
            return math.inf  # until an answer (settle/refund) tells more
        return max(self._requests.wait_for(1, now), self._tokens.wait_for(self._scaled(tokens), now))

    def _take(self, tokens: int, now: float) -> Reservation:
        charged = self._scaled(tokens)
        self._requests.charge(1, now)
        self._tokens.charge(charged, now)
        reservation = Reservation(
            charged,
            tokens,
            now,
            self._requests.ledger,
            self._tokens.ledger,
            requests_ahead=float(self.in_flight),
            tokens_ahead=self._in_flight_tokens,
        )
        self.in_flight += 1
        self._in_flight_tokens += charged
        self.acquired += 1
        return reservation

    def _learn_scale(self, requested: int, actual: int) -> None:
        """How far the callers' estimates are off, on average (clamped: one odd answer is not a trend)."""
        if requested <= 0:
            return
        sample = min(max(actual / requested, _MIN_SCALE), _MAX_SCALE)
        weight = max(_SCALE_SMOOTHING, 1.0 / (self._scale_samples + 1))
        self._scale += weight * (sample - self._scale)
        self._scale_samples += 1

    def _observe(self, reservation: Reservation, limits: RateLimits, now: float) -> None:
        announced = limits.announced
        if self._probing:
            if announced:
                self._probing = False
            else:
                self._bare_answers += 1
                if self._bare_answers >= self.startup_answers:
                    self._probing = False  # this server announces no limits: only the user caps pace
        if not announced:
            return
        # The server admitted the request (its ``remaining`` was true then) after we sent it and at
        # the latest its processing time before the answer came.
        latest = reservation.at if limits.processing_s is None else now - limits.processing_s
        self._requests.reconcile(
            limits.requests,
            reservation.at,
            reservation.requests_mark + reservation.requests_adjust,
            now,
            reservation.requests_ahead,
            latest=latest,
            taken_mark=reservation.requests_mark,
        )
        self._tokens.reconcile(
            limits.tokens,
            reservation.at,
            reservation.tokens_mark + reservation.tokens_adjust,
            now,
            reservation.tokens_ahead,
            latest=latest,
            taken_mark=reservation.tokens_mark,
        )

    def _serve(self) -> None:
        """Hand the buckets to the waiters in arrival order; arm one timer for the head that must wait."""
        now = self._clock()
        self._refill(now)
        queue = self._queue
        while queue:
            waiter = queue[0]
            if waiter.future.done():  # cancelled while waiting
                queue.popleft()
                continue
            delay = self._delay(waiter.tokens, now)
            if delay > 0:
                self._arm(delay, now)
                return
            queue.popleft()
            waiter.future.set_result(self._take(waiter.tokens, now))
        self._disarm()

    def _arm(self, delay: float, now: float) -> None:
        if math.isinf(delay):
            self._disarm()  # only an answer can unblock: settle()/refund() call _serve()
            return
        delay = max(delay, _MIN_WAIT_S)
        due = now + delay
        if self._timer is not None and self._timer_due <= due + _EPSILON:
            return  # an earlier (or the same) wake-up is armed; it re-checks and re-arms
        self._disarm()
        self._timer_due = due
        self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_due = math.inf

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_due = math.inf
        self._serve()
