"""A finish-by deadline: stay on flex while it fits, send just enough of the rest to the fallback tier.

Flex is cheap and slow; the fallback tier (standard) is fast and costs twice as much. Given a
deadline, the cheapest run on time sends as many items as possible on flex and only the *last* ones
on the fallback tier: flex items must start early enough to finish, fallback items fill the time
after them. :class:`DeadlinePlanner` answers, for each item as a worker takes it, "flex or
fallback?", recomputing the plan from what it has measured so far:

* Throughput comes from concurrency and latency (Little's law), not from elapsed time: the run has
  ``concurrency`` slots (workers); an item holds its slot for its tier's latency, measured from the
  moment its first request left (:meth:`DeadlinePlanner.sent`; from the decision if the caller does
  not say) to the moment it finished, so retries and 429 resource_unavailable are in it, while waits
  before the first request (budget, rate limits: the same on either tier) are not. Each tier's latency is a running mean (exponential after the
  first answers) with its spread, raised to the mean age of the items still in flight on it when
  those have already waited longer: a tier that slows down shows in flight long before it shows in
  completions.
* Two things must hold for an item to go on flex now. It must finish in time: its *slowest* likely
  latency (mean plus ``tail_sd`` standard deviations, or the slowest of the recent items if that is
  more; LLM latencies have long tails, and the last items decide whether the run is on time) must
  fit before the deadline. And the rest must still fit: the slot-seconds left before the deadline
  (minus what the items in flight still need, and the fallback tier's own tail) must hold this item
  on flex and every other remaining item on the fallback tier. While both hold, the item goes on
  flex; this keeps everything on flex while it all fits, and moves items one at a time, as late as
  possible, when it stops fitting: the fewest in the end, since each flex item sent is one the plan
  could afford. All latencies are raised by ``safety_margin`` first.
* Before a tier has been measured: flex is assumed to fit (there is no evidence yet that it does
  not, and the first items are what measures it); the fallback tier is assumed to take
  ``standard_latency_ratio`` of the flex latency. As soon as the plan needs the fallback tier at all,
  ``fallback_probes`` items are sent there to measure it (a guess about the fast tier found wrong at
  the tail would be found wrong too late), and a tier measured on few items counts as slower by the
  uncertainty of its mean.
* When even the fallback tier for every remaining item cannot make it, the run is going to miss the
  deadline: the item goes to the faster tier anyway (finishing late beats finishing later),
  :attr:`DeadlineStatus.predicted_miss` says so, and items finishing after the deadline are counted.

Pure and deterministic: no I/O, no tasks, no sleeping; time comes from the injected ``clock``
(``time.monotonic`` by default), and ``deadline_at`` is on that clock (use :meth:`from_wall_clock`
for an absolute date, :meth:`from_duration` for "N seconds from now"). Every call is O(1).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

Group = Literal["flex", "standard"]
FLEX: Final = "flex"  # the run's own tier (service_tier, normally flex)
STANDARD: Final = "standard"  # the fallback tier (fallback_tier, normally default)
# How many measured items the assumed spread of latencies (prior_cv) counts for.
_PRIOR_WEIGHT = 3.0


@dataclass(slots=True)
class _TierStats:
    """Latencies of the items finished on one tier, and the items in flight on it."""

    smoothing: float
    memory: float  # how many recent items the "slowest recent" latency remembers
    mean: float = 0.0
    var: float = 0.0
    peak: float = 0.0  # the slowest recent latency, decaying towards the mean
    samples: int = 0
    in_flight: int = 0
    started_sum: float = 0.0  # sum of the start times of the items in flight: their mean age in O(1)

    def add(self, latency: float) -> None:
        weight = max(self.smoothing, 1.0 / (self.samples + 1))
        delta = latency - self.mean
        self.mean += weight * delta
        self.var = (1 - weight) * (self.var + weight * delta * delta)
        self.peak = max(latency, self.mean + (self.peak - self.mean) * (1.0 - 1.0 / self.memory))
        self.samples += 1

    def mean_age(self, now: float) -> float:
        return max(0.0, now - self.started_sum / self.in_flight) if self.in_flight else 0.0

    def latency(self, now: float) -> float | None:
        """One item's expected latency; None while nothing says anything about it."""
        age = self.mean_age(now)
        if not self.samples:
            return age if age > 0 else None
        return max(self.mean, age)

    def spread(self, prior_cv: float) -> float:
        """The standard deviation, shrunk towards ``prior_cv`` of the mean while few items were
        measured (three alike do not prove that the fourth will be alike too)."""
        prior = prior_cv * self.mean
        return math.sqrt((self.samples * self.var + _PRIOR_WEIGHT * prior * prior) / (self.samples + _PRIOR_WEIGHT))

    def expected(self, now: float, prior_cv: float) -> float | None:
        """The expected latency plus the uncertainty of the mean (one standard error): large while
        few items were measured, vanishing as they add up."""
        latency = self.latency(now)
        if latency is None or not self.samples:
            return latency
        remembered = min(self.samples, 2.0 / self.smoothing - 1.0)  # what an exponential average remembers
        return latency + self.spread(prior_cv) / math.sqrt(remembered)

    def slowest(self, now: float, prior_cv: float, tail_sd: float) -> float | None:
        """How long one item may well take: mean plus ``tail_sd`` deviations, or the slowest recent."""
        latency = self.expected(now, prior_cv)
        if latency is None or not self.samples:
            return latency
        return max(latency + tail_sd * self.spread(prior_cv), self.peak)


@dataclass(frozen=True, slots=True)
class _Latencies:
    """Planning latencies, safety margin included: expected and slowest, per tier."""

    flex: float
    fallback: float
    flex_slowest: float
    fallback_slowest: float


@dataclass(frozen=True, slots=True)
class _Plan:
    flex_now: bool  # this item may go on flex: it finishes in time, and the rest still fits
    fallback_fits: bool  # every remaining item on the fallback tier would make it
    needed: int  # the fewest of the remaining items the fallback tier must take


@dataclass(slots=True, eq=False)
class TierDecision:
    """The planner's answer for one item; hand it back to :meth:`DeadlinePlanner.done`."""

    fallback: bool  # send this item on the fallback tier
    reason: str | None  # "deadline" when fallback, for the record's fallback_reason
    started_at: float
    group: Group
    finished: bool = False
    sent: bool = False  # its first request has left (see DeadlinePlanner.sent)


@dataclass(frozen=True, slots=True)
class DeadlineStatus:
    """Where the run stands against its deadline (JSON-safe via :meth:`as_dict`)."""

    deadline_in_s: float  # negative once passed
    remaining: int  # items not decided yet
    in_flight: int
    sent_flex: int
    sent_fallback: int  # because of the deadline
    flex_latency_s: float | None
    fallback_latency_s: float | None  # measured (None until a fallback item finished)
    needed_on_fallback: int  # of the remaining items, how many the plan puts on the fallback tier
    predicted_miss: bool  # by the latest plan, even the fallback tier for every remaining item cannot make it
    miss_predictions: int  # items decided while the plan said so
    finished_late: int  # items that finished after the deadline
    missed: bool  # items finished late, or some are not finished and the deadline has passed

    def as_dict(self) -> dict[str, Any]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()}


class DeadlinePlanner:
    """Which items go to the fallback tier so that the run finishes by ``deadline_at`` (module docstring).

    ``concurrency`` is the number of items the run works on at once (``max_concurrency``); ``items``
    how many items are still to be sent (more can be announced with :meth:`expect`).
    ``safety_margin`` raises every latency by that fraction; ``tail_sd`` is how many standard
    deviations above its mean an item may well take; ``standard_latency_ratio`` is the fallback
    tier's latency relative to flex until measured; ``prior_cv`` the spread assumed until measured;
    ``fallback_probes`` how many items at most are sent early to measure the fallback tier (they
    count as fallbacks for the deadline: the plan needs them there anyway); ``smoothing`` the weight
    of one answer in the running means (default: one over twice the concurrency)."""

    def __init__(
        self,
        deadline_at: float,
        *,
        concurrency: int,
        items: int = 0,
        safety_margin: float = 0.1,
        tail_sd: float = 3.0,
        standard_latency_ratio: float = 0.5,
        prior_cv: float = 0.5,
        fallback_probes: int = 10,
        smoothing: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency: expected an integer >= 1, got {concurrency!r}")
        if not math.isfinite(deadline_at):
            raise ValueError(f"deadline_at: expected a finite time on the planner's clock, got {deadline_at!r}")
        for name, value in (("safety_margin", safety_margin), ("tail_sd", tail_sd), ("prior_cv", prior_cv)):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name}: expected a non-negative number, got {value!r}")
        if not (math.isfinite(standard_latency_ratio) and standard_latency_ratio > 0):
            raise ValueError(f"standard_latency_ratio: expected a positive number, got {standard_latency_ratio!r}")
        if smoothing is None:
            # Items finish in bursts (a batch sent together comes back together): average over about
            # two slots' worth of items, so that one burst of slow (or fast) ones does not swing the plan.
            smoothing = 1.0 / max(20, 2 * concurrency)
        if not 0 < smoothing <= 1:
            raise ValueError(f"smoothing: expected a weight in (0, 1], got {smoothing!r}")
        self.deadline_at = deadline_at
        self.concurrency = concurrency
        self.safety_margin = safety_margin
        self.tail_sd = tail_sd
        self.standard_latency_ratio = standard_latency_ratio
        self.prior_cv = prior_cv
        self.fallback_probes = max(0, fallback_probes)
        self._clock = clock
        # Whether the run is on time is decided by the slowest of the last few hundred items: "slowest
        # recent" remembers about five slots' worth of them.
        memory = float(max(50, 5 * concurrency))
        self._stats: dict[Group, _TierStats] = {
            FLEX: _TierStats(smoothing, memory),
            STANDARD: _TierStats(smoothing, memory),
        }
        self.remaining = max(0, items)
        self.sent_flex = 0
        self.sent_fallback = 0
        self.finished_late = 0
        self.predicted_miss = False  # by the latest plan
        self.miss_predictions = 0  # decisions taken while the plan said the deadline cannot be made
        self._needed = 0

    @classmethod
    def from_wall_clock(
        cls, deadline: datetime, *, clock: Callable[[], float] = time.monotonic, **options: Any
    ) -> DeadlinePlanner:
        """A deadline given as a date (timezone-aware), mapped onto ``clock`` once, now: the
        monotonic clock does not jump when the wall clock is set."""
        if deadline.tzinfo is None:
            raise ValueError(f"deadline: expected a timezone-aware datetime, got naive {deadline.isoformat()}")
        seconds = (deadline - datetime.now(UTC)).total_seconds()
        return cls(clock() + seconds, clock=clock, **options)

    @classmethod
    def from_duration(
        cls, seconds: float, *, clock: Callable[[], float] = time.monotonic, **options: Any
    ) -> DeadlinePlanner:
        """A deadline ``seconds`` from now (the task's start)."""
        return cls(clock() + seconds, clock=clock, **options)

    # -- what the runner calls ---------------------------------------------------------------
    def expect(self, items: int) -> None:
        """``items`` more items will be sent."""
        self.remaining += max(0, items)

    def skip(self, items: int = 1) -> None:
        """Items that were expected but will not be sent (already done, duplicates, over budget)."""
        self.remaining = max(0, self.remaining - max(0, items))

    def decide(self) -> TierDecision:
        """The tier of the next item, as a worker takes it; the item counts as in flight from now."""
        now = self._clock()
        n = max(1, self.remaining)
        plan = self._plan(n, now)
        self._needed = plan.needed
        self.predicted_miss = not (plan.flex_now or plan.fallback_fits)
        standard = self._stats[STANDARD]
        if plan.flex_now:
            # Measure the fallback tier now, not at the tail: one item at a time, no more than the plan needs.
            measuring = (
                plan.needed > self.sent_fallback
                and self._stats[FLEX].samples >= _PRIOR_WEIGHT  # a plan on one flex answer is mostly the prior
                and not standard.in_flight
                and standard.samples < self.fallback_probes
            )
            group: Group = STANDARD if measuring else FLEX
        elif plan.fallback_fits:
            group = STANDARD
        else:
            self.miss_predictions += 1
            group = STANDARD if self._fallback_is_faster(now) else FLEX
        self.remaining = n - 1
        stats = self._stats[group]
        stats.in_flight += 1
        stats.started_sum += now
        if group == STANDARD:
            self.sent_fallback += 1
            return TierDecision(True, "deadline", now, group)
        self.sent_flex += 1
        return TierDecision(False, None, now, group)

    def sent(self, decision: TierDecision) -> None:
        """The item's first request leaves now: its latency counts from here. What it waited for
        before (the budget, the rate pacer: the same for either tier, so no tier can shorten it; the
        pacer's first answers at the start of a run) is not the tier's. Once per item."""
        if decision.sent or decision.finished:
            return
        decision.sent = True
        now = self._clock()
        self._stats[decision.group].started_sum += now - decision.started_at
        decision.started_at = now

    def fell_back(self, decision: TierDecision) -> None:
        """The item left flex for another reason (flex unavailable): count it in flight on the
        fallback tier from now, so its fallback latency is measured from its first fallback request."""
        if decision.finished or decision.group == STANDARD:
            return
        now = self._clock()
        self._leave(decision)
        decision.group, decision.started_at = STANDARD, now
        stats = self._stats[STANDARD]
        stats.in_flight += 1
        stats.started_sum += now

    def done(self, decision: TierDecision, ok: bool = True) -> None:
        """The item finished. ``ok`` False (it failed): its slot is free, but its time is not a
        latency of the tier (a 400 comes back at once). Idempotent."""
        if decision.finished:
            return
        now = self._clock()
        self._leave(decision)
        decision.finished = True
        if ok:
            self._stats[decision.group].add(now - decision.started_at)
        if now > self.deadline_at:
            self.finished_late += 1

    def status(self) -> DeadlineStatus:
        now = self._clock()
        flex, standard = self._stats[FLEX], self._stats[STANDARD]
        in_flight = flex.in_flight + standard.in_flight
        return DeadlineStatus(
            deadline_in_s=self.deadline_at - now,
            remaining=self.remaining,
            in_flight=in_flight,
            sent_flex=self.sent_flex,
            sent_fallback=self.sent_fallback,
            flex_latency_s=flex.latency(now),
            fallback_latency_s=standard.mean if standard.samples else None,
            needed_on_fallback=self._needed,
            predicted_miss=self.predicted_miss,
            miss_predictions=self.miss_predictions,
            finished_late=self.finished_late,
            missed=self.finished_late > 0 or (now > self.deadline_at and (self.remaining > 0 or in_flight > 0)),
        )

    # -- the plan ------------------------------------------------------------------------------
    def _leave(self, decision: TierDecision) -> None:
        stats = self._stats[decision.group]
        stats.in_flight -= 1
        stats.started_sum -= decision.started_at
        if stats.in_flight == 0:
            stats.started_sum = 0.0  # no float dust

    def _latencies(self, now: float) -> _Latencies | None:
        """Planning latencies, with the uncertainty of few measurements and the safety margin;
        None while flex is unmeasured."""
        flex, standard = self._stats[FLEX], self._stats[STANDARD]
        expected = flex.expected(now, self.prior_cv)
        slowest = flex.slowest(now, self.prior_cv, self.tail_sd)
        if expected is None or slowest is None:
            return None
        fallback = standard.expected(now, self.prior_cv) if standard.samples else None
        fallback_slowest = standard.slowest(now, self.prior_cv, self.tail_sd) if standard.samples else None
        if fallback is None or fallback_slowest is None:  # unmeasured: a share of flex, with flex's tail
            fallback = expected * self.standard_latency_ratio
            fallback_slowest = slowest * self.standard_latency_ratio
        factor = 1.0 + self.safety_margin
        return _Latencies(expected * factor, fallback * factor, slowest * factor, fallback_slowest * factor)

    def _fallback_is_faster(self, now: float) -> bool:
        """By the plain expectations: a pessimistic bound on a barely measured tier must not decide
        that it is the slower one (it would never be sent an item again, so never measured again)."""
        flex = self._stats[FLEX].latency(now)
        if flex is None:
            return False
        standard = self._stats[STANDARD].latency(now) if self._stats[STANDARD].samples else None
        return (standard if standard is not None else flex * self.standard_latency_ratio) < flex

    def _plan(self, n: int, now: float) -> _Plan:
        """What the ``n`` remaining items (this one first) can do before the deadline."""
        lat = self._latencies(now)
        if lat is None:
            return _Plan(flex_now=True, fallback_fits=True, needed=0)  # no evidence that flex does not fit
        left = self.deadline_at - now
        flex, standard = self._stats[FLEX], self._stats[STANDARD]
        busy = flex.in_flight + standard.in_flight
        flex_in_time = lat.flex_slowest <= left
        fallback_in_time = lat.fallback_slowest <= left
        if n <= self.concurrency - busy:  # a free slot each, all starting now
            return _Plan(flex_in_time, fallback_in_time, 0 if flex_in_time else n)
        # Slot-seconds left for new items: every slot until the deadline, less what the items in flight
        # still need, less the last items' tail and half an item lost per slot to rounding.
        still_needed = flex.in_flight * self._residual(flex, lat.flex, now) + standard.in_flight * self._residual(
            standard, lat.fallback, now
        )
        if lat.fallback >= lat.flex:  # the fallback tier is no faster: it cannot help, flex it is
            tail = lat.flex_slowest - lat.flex + lat.flex / 2
            fits = flex_in_time and n * lat.flex <= self.concurrency * (left - tail) - still_needed
            return _Plan(flex_now=fits, fallback_fits=False, needed=0)
        tail = lat.fallback_slowest - lat.fallback + lat.fallback / 2
        capacity = self.concurrency * (left - tail) - still_needed
        fallback_fits = fallback_in_time and n * lat.fallback <= capacity
        flex_now = flex_in_time and lat.flex + (n - 1) * lat.fallback <= capacity
        return _Plan(flex_now, fallback_fits, n - self._most_on_flex(n, lat, left, capacity, still_needed))

    def _residual(self, stats: _TierStats, latency: float, now: float) -> float:
        """What an item in flight on a tier still needs, on average: the latency less the mean age,
        but no less than a random item in flight still needs in a steady run (half the latency, more
        when latencies spread: the long ones are likelier to be the ones in flight)."""
        cv = stats.spread(self.prior_cv) / stats.mean if stats.samples and stats.mean > 0 else 0.0
        return max(latency - stats.mean_age(now), latency * (1.0 + cv * cv) / 2.0)

    def _most_on_flex(self, n: int, lat: _Latencies, left: float, capacity: float, still_needed: float) -> int:
        """The most of the ``n`` items flex can take (for the status): as many as the slot-seconds
        allow beside the rest on the fallback tier, and as can start before flex's last start time."""
        if lat.flex_slowest > left:
            return 0
        starts = (self.concurrency * (left - lat.flex_slowest) - still_needed) / lat.flex + self.concurrency
        by_capacity = (capacity - n * lat.fallback) / (lat.flex - lat.fallback)
        return max(0, min(n, math.floor(min(by_capacity, starts))))
