"""RunMetrics on its own: increments since the previous call, never twice, never negative."""

from __future__ import annotations

import asyncio
from typing import Any

from flex_provider.engine.progress import RunCounters
from flex_provider.engine.usage import Usage
from flex_provider.metrics import METRIC_NAMES, RunMetrics, tags_for


class Fake:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def incr(self, stat: str, count: int, *, tags: dict[str, Any]) -> None:
        self.calls.append((stat, count))


def test_names_are_documented_and_prefixed() -> None:
    assert all(name.startswith("flex.") for name in METRIC_NAMES)
    assert {
        "flex.requests",
        "flex.unavailable",
        "flex.rate_limited",
        "flex.fallbacks",
        "flex.tokens.input",
        "flex.tokens.output",
        "flex.items.succeeded",
        "flex.items.failed",
        "flex.items.skipped",
        "flex.fallbacks.deadline",
        "flex.fallbacks.unavailable",
        "flex.cost.actual_microusd",
        "flex.cost.standard_microusd",
    } <= set(METRIC_NAMES)


def test_take_returns_increments_since_last_call() -> None:
    counters = RunCounters()
    meter = RunMetrics({})
    assert meter.take(counters) == {}
    counters.requests, counters.unavailable, counters.succeeded = 5, 2, 3
    counters.usage.add(Usage(input=100, cached=40, output=20))
    counters.cost.actual, counters.cost.standard_equivalent = 0.0000125, 0.000025
    assert meter.take(counters) == {
        "flex.requests": 5,
        "flex.unavailable": 2,
        "flex.items.succeeded": 3,
        "flex.tokens.input": 100,
        "flex.tokens.cached": 40,
        "flex.tokens.output": 20,
        "flex.cost.actual_microusd": 12,
        "flex.cost.standard_microusd": 25,
    }
    assert meter.take(counters) == {}  # nothing grew: nothing again
    counters.fell_back("deadline")
    counters.fell_back("unavailable")
    counters.fell_back("deadline")
    counters.budget_skipped = 4
    assert meter.take(counters) == {
        "flex.fallbacks": 3,
        "flex.fallbacks.deadline": 2,
        "flex.fallbacks.unavailable": 1,
        "flex.items.skipped": 4,
    }
    counters.requests += 1
    counters.cost.actual += 0.0000004  # sub-micro-dollar growth is sent once the running total rounds up
    assert meter.take(counters) == {"flex.requests": 1, "flex.cost.actual_microusd": 1}


def test_cost_in_many_small_steps_adds_up_to_the_rounded_total() -> None:
    counters, meter, sent = RunCounters(), RunMetrics({}), 0
    for _ in range(1000):
        counters.cost.actual += 0.0000003  # 0.3 micro-dollars a step
        sent += meter.take(counters).get("flex.cost.actual_microusd", 0)
    assert sent == round(counters.cost.actual * 1e6) == 300


def test_send_swallows_errors_and_warns_once(caplog) -> None:
    class Broken:
        def incr(self, *a: Any, **k: Any) -> None:
            raise RuntimeError("boom")

    meter = RunMetrics({})
    meter._stats = Broken()
    meter.send({"flex.requests": 1})
    meter.send({"flex.requests": 1})
    assert sum("flex metrics" in r.getMessage() for r in caplog.records) == 1


def test_watching_sends_on_ticks_and_at_the_end() -> None:
    fake, counters = Fake(), RunCounters()
    meter = RunMetrics({"model": "m"})
    meter._stats = fake

    async def run() -> None:
        async with meter.watching(counters, 0.05):
            for _ in range(4):
                counters.requests += 1
                await asyncio.sleep(0.08)
            counters.requests += 10  # after the last tick: sent by the final call

    asyncio.run(run())
    assert sum(count for _, count in fake.calls) == 14
    assert len(fake.calls) >= 3


def test_tags_from_template_context() -> None:
    assert tags_for({"dag_id": "d", "task_id": "t", "run_id": "r", "ds": "x"}, "gpt-5-mini") == {
        "dag_id": "d",
        "task_id": "t",
        "model": "gpt-5-mini",
    }
    assert tags_for({}, "m") == {"model": "m"}
