from __future__ import annotations

import heapq
import json
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from flex_provider.engine.deadline import FLEX, STANDARD, DeadlinePlanner, TierDecision


class FakeClock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def planner(deadline_at: float, clock: FakeClock, **kwargs) -> DeadlinePlanner:
    kwargs.setdefault("concurrency", 1)
    return DeadlinePlanner(deadline_at, clock=clock, **kwargs)


def train(plan: DeadlinePlanner, clock: FakeClock, latency: float, items: int, *, tier: str = FLEX) -> None:
    """``items`` items finished one after the other at ``latency`` on ``tier`` (one slot)."""
    for _ in range(items):
        decision = plan.decide()
        if tier == STANDARD:
            plan.fell_back(decision)
        clock.now += latency
        plan.done(decision)


# -- single decisions ---------------------------------------------------------------------------------


def test_without_measurements_everything_goes_on_flex():
    clock = FakeClock()
    plan = planner(10.0, clock, concurrency=4, items=1000)  # 1000 items in 10 s: nobody knows yet
    decisions = [plan.decide() for _ in range(4)]
    assert [d.fallback for d in decisions] == [False] * 4
    assert all(d.reason is None and d.group == FLEX for d in decisions)
    assert plan.status().needed_on_fallback == 0


def test_everything_stays_on_flex_while_it_fits():
    clock = FakeClock()
    plan = planner(10_000.0, clock, items=200)
    train(plan, clock, 10.0, 100)  # 1000 s so far; 100 more items at 10 s fit easily in the 9000 s left
    assert plan.sent_fallback == 0
    status = plan.status()
    assert status.flex_latency_s == pytest.approx(10.0)
    assert status.needed_on_fallback == 0
    assert not status.predicted_miss


def test_an_item_that_cannot_finish_on_flex_in_time_goes_to_the_fallback_tier():
    clock = FakeClock()
    plan = planner(1000.0, clock, items=71)  # one left after the training
    train(plan, clock, 10.0, 50)
    train(plan, clock, 2.0, 20, tier=STANDARD)
    clock.now = 1000.0 - 6.0  # 6 s left: flex takes 10 s, the fallback tier 2 s
    decision = plan.decide()
    assert decision.fallback and decision.reason == "deadline" and decision.group == STANDARD
    assert not plan.status().predicted_miss
    assert plan.miss_predictions == 0


def test_when_nothing_can_make_it_the_faster_tier_is_used_and_the_miss_predicted():
    clock = FakeClock()
    plan = planner(1000.0, clock, items=71)
    train(plan, clock, 10.0, 50)
    train(plan, clock, 2.0, 20, tier=STANDARD)
    clock.now = 1000.0 - 1.0  # not even the fallback tier's 2 s fit
    decision = plan.decide()
    assert decision.fallback
    status = plan.status()
    assert status.predicted_miss and status.miss_predictions == 1
    assert not status.missed  # not yet: the deadline has not passed
    clock.now = 1001.0
    assert plan.status().missed  # an item in flight past the deadline
    plan.done(decision)
    status = plan.status()
    assert status.finished_late == 1 and status.missed


def test_a_hopeless_deadline_stays_on_flex_when_the_fallback_tier_is_not_faster():
    clock = FakeClock()
    plan = planner(2000.0, clock, items=71)
    train(plan, clock, 10.0, 50)
    train(plan, clock, 30.0, 20, tier=STANDARD)  # the fallback tier is slower here
    clock.now = 2000.0 - 1.0
    decision = plan.decide()
    assert not decision.fallback  # paying twice the price would not make it any faster
    assert plan.status().predicted_miss


def test_flex_slowing_down_shows_in_flight_before_it_shows_in_completions():
    clock = FakeClock()
    plan = planner(1000.0, clock, concurrency=10, items=300)
    train(plan, clock, 5.0, 40)  # flex answered in 5 s so far; 800 s left
    stuck = [plan.decide() for _ in range(9)]  # nine items go out...
    assert not any(d.fallback for d in stuck)
    clock.now += 400.0  # ...and none comes back for 400 s: flex has slowed down
    decision = plan.decide()
    assert plan.status().flex_latency_s >= 400.0
    assert decision.fallback  # 250 items at 400 s each cannot fit in the 400 s left


def test_fell_back_moves_the_item_to_the_fallback_tier_and_measures_it_there():
    clock = FakeClock()
    plan = planner(1000.0, clock, items=10)
    decision = plan.decide()
    clock.now += 30.0  # flex was unavailable for a while
    plan.fell_back(decision)
    assert decision.group == STANDARD and decision.started_at == 30.0
    assert not decision.fallback  # the record's reason is the runner's (unavailable), not the deadline's
    clock.now += 2.0
    plan.done(decision)
    status = plan.status()
    assert status.fallback_latency_s == pytest.approx(2.0)
    assert status.flex_latency_s is None  # the 30 s of retries are not a flex latency
    assert status.in_flight == 0


def test_a_wait_before_the_first_request_is_not_the_tiers_latency():
    """Waiting for the budget or the rate pacer (the same on either tier) before the item's first
    request leaves is not flex's latency: measured from ``sent``, once."""
    clock = FakeClock()
    plan = planner(1000.0, clock, items=10)
    decision = plan.decide()
    clock.now += 30.0  # queued behind the rate pacer
    plan.sent(decision)
    clock.now += 5.0
    plan.sent(decision)  # a retry's request: the latency still counts from the first
    clock.now += 5.0
    plan.done(decision)
    assert plan.status().flex_latency_s == pytest.approx(10.0)
    undecided = plan.decide()
    clock.now += 1.0
    plan.done(undecided)  # never told: from the decision, as before
    assert plan.status().flex_latency_s == pytest.approx(5.5)


def test_done_is_idempotent_and_failures_are_not_latencies():
    clock = FakeClock()
    plan = planner(1000.0, clock, concurrency=2, items=10)
    failed = plan.decide()
    clock.now += 0.1
    plan.done(failed, ok=False)  # a 400 comes back at once
    plan.done(failed)
    assert plan.status().flex_latency_s is None
    assert plan.status().in_flight == 0
    ok = plan.decide()
    clock.now += 10.0
    plan.done(ok)
    plan.done(ok)
    assert plan.status().flex_latency_s == pytest.approx(10.0)
    assert plan.status().in_flight == 0


def test_expect_and_skip_count_the_items_left():
    clock = FakeClock()
    plan = planner(1000.0, clock, items=5)
    plan.expect(10)
    plan.skip(3)  # already done in an earlier session
    assert plan.remaining == 12
    plan.skip(100)
    assert plan.remaining == 0
    plan.decide()  # an item nobody announced is still decided
    assert plan.remaining == 0 and plan.sent_flex == 1


def test_from_duration_and_from_wall_clock_map_onto_the_clock():
    clock = FakeClock(500.0)
    assert DeadlinePlanner.from_duration(60.0, clock=clock, concurrency=1).deadline_at == 560.0
    wall = DeadlinePlanner.from_wall_clock(datetime.now(UTC) + timedelta(hours=1), clock=clock, concurrency=1)
    assert wall.deadline_at == pytest.approx(500.0 + 3600.0, abs=5.0)
    with pytest.raises(ValueError, match="timezone-aware"):
        DeadlinePlanner.from_wall_clock(datetime(2030, 1, 1), clock=clock, concurrency=1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"concurrency": 0},
        {"concurrency": True},
        {"safety_margin": -0.1},
        {"tail_sd": float("nan")},
        {"standard_latency_ratio": 0.0},
        {"smoothing": 0.0},
    ],
)
def test_invalid_settings_are_refused(kwargs):
    kwargs.setdefault("concurrency", 1)
    with pytest.raises(ValueError):
        DeadlinePlanner(100.0, **kwargs)


def test_infinite_deadline_is_refused():
    with pytest.raises(ValueError, match="deadline_at"):
        DeadlinePlanner(float("inf"), concurrency=1)


def test_status_is_json_safe():
    clock = FakeClock()
    plan = planner(100.0, clock, items=3)
    train(plan, clock, 1.0 / 3.0, 2)
    assert json.loads(json.dumps(plan.status().as_dict()))["flex_latency_s"] == 0.333


# -- whole runs, simulated ---------------------------------------------------------------------------


@dataclass
class Run:
    finished_at: float
    fallback: list[int] = field(default_factory=list)  # send positions of the items sent to the fallback tier
    planner: DeadlinePlanner | None = None


def simulate(
    items: int,
    concurrency: int,
    deadline: float | None,
    *,
    flex_s: float,
    standard_s: float,
    seed: int = 1,
    jitter: float = 0.3,
    flex_slows_at: float | None = None,
) -> Run:
    """``concurrency`` workers each take the next item as soon as they are free; each item takes its
    tier's latency (jittered). Without a deadline, no planner: everything on flex."""
    rng = random.Random(seed)
    clock = FakeClock()
    plan = (
        DeadlinePlanner(deadline, concurrency=concurrency, items=items, clock=clock) if deadline is not None else None
    )
    run = Run(0.0, planner=plan)
    events: list[tuple[float, int, TierDecision | None]] = []
    sent = 0

    def start() -> None:
        nonlocal sent
        if sent >= items:
            return
        decision = plan.decide() if plan is not None else None
        if decision is not None and decision.fallback:
            run.fallback.append(sent)
            base = standard_s
        else:
            slow = flex_slows_at is not None and clock.now >= flex_slows_at
            base = flex_s * (2.0 if slow else 1.0)
        heapq.heappush(events, (clock.now + base * rng.uniform(1 - jitter, 1 + jitter), sent, decision))
        sent += 1

    for _ in range(concurrency):
        start()
    while events:
        clock.now, _, decision = heapq.heappop(events)
        if plan is not None and decision is not None:
            plan.done(decision)
        start()
    run.finished_at = clock.now
    return run


def fewest_on_fallback(items: int, concurrency: int, deadline: float, flex_s: float, standard_s: float) -> float:
    """The fluid lower bound: slot-seconds F * flex + S * standard <= concurrency * deadline."""
    return max(0.0, (items * flex_s - concurrency * deadline) / (flex_s - standard_s))


def test_a_deadline_too_short_for_flex_alone_is_made_with_a_minority_on_the_fallback_tier():
    shape = dict(items=1000, concurrency=20, flex_s=10.0, standard_s=2.0)
    flex_alone = simulate(deadline=None, **shape)
    deadline = 0.8 * flex_alone.finished_at  # flex alone would be 20 % late
    run = simulate(deadline=deadline, **shape)
    assert run.finished_at <= deadline
    assert 0 < len(run.fallback) < 1000 // 2
    # The fewest: close to the fluid lower bound (the safety margin and whole items cost a little).
    assert len(run.fallback) <= 1.3 * fewest_on_fallback(deadline=deadline, **shape) + 20
    # As late as possible: apart from a few items sent early to measure the fallback tier, at the end.
    late = [position for position in run.fallback if position >= 1000 * 0.6]
    assert len(late) >= len(run.fallback) - 10
    assert run.planner is not None
    status = run.planner.status()
    assert status.finished_late == 0 and not status.missed
    assert status.sent_fallback == len(run.fallback)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_generous_deadline_sends_nothing_to_the_fallback_tier(seed):
    shape = dict(items=1000, concurrency=20, flex_s=10.0, standard_s=2.0, seed=seed)
    flex_alone = simulate(deadline=None, **shape)
    run = simulate(deadline=1.3 * flex_alone.finished_at, **shape)
    assert run.fallback == []
    assert run.finished_at == pytest.approx(flex_alone.finished_at)


@pytest.mark.parametrize(
    ("concurrency", "items", "flex_s", "standard_s", "share"),
    [
        (200, 5000, 60.0, 5.0, 0.9),  # many slots, a slow flex
        (5, 300, 30.0, 3.0, 0.85),  # few slots
        (100, 3000, 40.0, 10.0, 0.95),  # a fallback tier only four times faster, a deadline just short
    ],
)
def test_other_shapes_of_runs_are_on_time_too(concurrency, items, flex_s, standard_s, share):
    shape = dict(items=items, concurrency=concurrency, flex_s=flex_s, standard_s=standard_s)
    deadline = share * simulate(deadline=None, **shape).finished_at
    run = simulate(deadline=deadline, **shape)
    assert run.finished_at <= deadline
    assert 0 < len(run.fallback) < items // 2


def test_flex_slowing_down_mid_run_is_caught_in_time():
    shape = dict(items=1000, concurrency=20, flex_s=10.0, standard_s=2.0)
    deadline = 1.1 * simulate(deadline=None, **shape).finished_at  # fits flex as it is at the start
    slowed = simulate(deadline=None, flex_slows_at=200.0, **shape)
    assert slowed.finished_at > deadline  # flex alone misses once it slows to half speed
    run = simulate(deadline=deadline, flex_slows_at=200.0, **shape)
    assert run.finished_at <= deadline
    assert 0 < len(run.fallback) < 1000 // 2


def test_a_deadline_nobody_can_make_is_reported():
    shape = dict(items=1000, concurrency=20, flex_s=10.0, standard_s=2.0)
    run = simulate(deadline=60.0, **shape)  # even the fallback tier needs about 100 s
    assert run.finished_at > 60.0
    assert len(run.fallback) > 900  # the faster tier for nearly everything: late beats later
    assert run.planner is not None
    status = run.planner.status()
    assert status.missed
    assert status.finished_late > 0
    assert status.miss_predictions > 0
