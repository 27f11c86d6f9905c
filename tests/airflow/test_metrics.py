"""Flex metrics through Airflow's Stats: a run (trigger path and worker path, against the emulator)
sends increments whose totals equal the run's summary, sends nothing twice, and a broken Stats never
fails the run."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

import flex_provider.metrics as metrics_module
from flex_provider.engine.store import ResultStore
from flex_provider.metrics import METRIC_NAMES
from flex_provider.operators.flex import FlexLLMOperator
from flex_provider.triggers.flex import FlexTrigger
from tests.airflow.conftest import CONN_ID
from tests.airflow.test_trigger import deferred_trigger, run_to_event
from tests.fakes import FakeTI

pytestmark = pytest.mark.integration

FAST_RETRY = {"max_attempts": 30, "max_elapsed_s": 60, "initial_wait_s": 0.01, "max_wait_s": 0.05, "jitter_s": 0.01}


class RecordingStats:
    """Stands in for Airflow's Stats module: records every incr(stat, count, tags=...)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, dict[str, Any]]] = []

    def incr(self, stat: str, count: int | None = None, rate: Any = None, *, tags: dict[str, Any] | None = None):
        assert isinstance(count, int) and count > 0, (stat, count)  # increments only, never zero
        self.calls.append((stat, count, dict(tags or {})))

    def totals(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for stat, count, _ in self.calls:
            out[stat] += count
        return dict(out)


class BrokenStats:
    def incr(self, *args: Any, **kwargs: Any) -> None:
        raise OSError("statsd is down")


@pytest.fixture
def stats(monkeypatch: pytest.MonkeyPatch) -> RecordingStats:
    fake = RecordingStats()
    monkeypatch.setattr(metrics_module, "resolve_stats", lambda: fake)
    return fake


def assert_totals_match_summary(stats: RecordingStats, summary: dict[str, Any]) -> None:
    totals = stats.totals()
    assert set(totals) <= set(METRIC_NAMES)
    assert totals.get("flex.requests", 0) == summary["requests"]
    assert totals.get("flex.unavailable", 0) == summary["unavailable"]
    assert totals.get("flex.rate_limited", 0) == summary["rate_limited"]
    assert totals.get("flex.fallbacks", 0) == summary["fallbacks"]
    assert totals.get("flex.items.succeeded", 0) == summary["succeeded"]
    assert totals.get("flex.items.failed", 0) == summary["failed"]
    assert totals.get("flex.tokens.input", 0) == summary["usage"]["input"]
    assert totals.get("flex.tokens.output", 0) == summary["usage"]["output"]
    assert totals.get("flex.tokens.cached", 0) == summary["usage"]["cached"]
    # micro-dollars, rounded once from the running total (the summary rounds to 6 decimals too)
    assert abs(totals.get("flex.cost.actual_microusd", 0) - summary["cost_usd"]["actual"] * 1e6) <= 2
    assert abs(totals.get("flex.cost.standard_microusd", 0) - summary["cost_usd"]["standard_equivalent"] * 1e6) <= 2


async def test_trigger_path_emits_summary_totals_once(airflow_db, emu, tmp_path: Path, stats) -> None:
    emu.update(unavailable_rate=0.3, latency_s=0.05)
    trigger = deferred_trigger(
        tmp_path,
        items=[f"doc {i}" for i in range(30)],
        max_concurrency=3,
        progress_interval=0.05,
        on_unavailable="fallback",
        retry={**FAST_RETRY, "max_attempts": 2},
    )
    kwargs = json.loads(json.dumps(trigger.serialize()[1]))
    payload = await run_to_event(FlexTrigger(**kwargs))
    assert payload["status"] == "success" and payload["succeeded"] == 30

    summary = ResultStore(tmp_path).read_manifest()
    assert summary["unavailable"] > 0 and summary["fallbacks"] > 0  # the fault counters were exercised
    assert summary["usage"]["input"] > 0 and summary["cost_usd"]["actual"] > 0
    assert_totals_match_summary(stats, summary)
    assert emu.stats()["requests"] == summary["requests"]
    # sent as the run went (every progress tick), not only at the end
    assert sum(1 for stat, _, _ in stats.calls if stat == "flex.requests") >= 2
    assert {json.dumps(tags, sort_keys=True) for _, _, tags in stats.calls} == {
        json.dumps({"dag_id": "d", "model": "gpt-5-mini", "task_id": "t"}, sort_keys=True)
    }

    # At-least-once delivery: the same trigger runs again, finds everything on storage, sends
    # no request and so no metric: nothing is counted twice.
    before = list(stats.calls)
    payload = await run_to_event(FlexTrigger(**kwargs))
    assert payload["succeeded"] == 30
    assert stats.calls == before


def test_worker_path_emits_the_same_metrics(airflow_db, emu, tmp_path: Path, stats) -> None:
    ti = FakeTI(dag_id="dw", run_id="r1", task_id="tw", map_index=-1)
    op = FlexLLMOperator(
        task_id="tw",
        conn_id=CONN_ID,
        model="o4-mini",
        output_path=f"file://{tmp_path}",
        deferrable=False,
        items=[f"doc {i}" for i in range(12)],
        max_concurrency=4,
        progress_interval=0.05,
    )
    result = op.execute({"ti": ti, "ds": "2026-01-01", "params": {}})
    assert result["succeeded"] == 12
    assert_totals_match_summary(stats, ResultStore(tmp_path).read_manifest())
    assert stats.totals()["flex.requests"] == 12
    assert all(tags == {"dag_id": "dw", "task_id": "tw", "model": "o4-mini"} for _, _, tags in stats.calls)


@pytest.mark.parametrize("broken", ["incr", "resolve"])
async def test_broken_stats_never_fails_the_run(
    airflow_db, emu, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, broken: str
) -> None:
    def resolve() -> Any:
        if broken == "resolve":
            raise ImportError("no metrics backend")
        return BrokenStats()

    monkeypatch.setattr(metrics_module, "resolve_stats", resolve)
    trigger = deferred_trigger(tmp_path, items=[f"doc {i}" for i in range(8)], progress_interval=0.05)
    payload = await run_to_event(trigger)
    assert payload["status"] == "success" and payload["succeeded"] == 8


async def test_error_event_still_sends_what_was_counted(airflow_db, emu, tmp_path: Path, stats) -> None:
    """An aborted run (no quota) reports an error event; the requests it made are still counted."""
    emu.update(insufficient_quota=True)
    payload = await run_to_event(deferred_trigger(tmp_path, items=["a", "b"]))
    assert payload["status"] == "error" and payload["kind"] == "aborted"
    assert stats.totals().get("flex.requests", 0) == emu.stats()["requests"] >= 1


def test_real_airflow_stats_receives_tagged_increments(monkeypatch: pytest.MonkeyPatch) -> None:
    """Through Airflow's own Stats module (the task SDK's copy, as the task runner initialises it):
    resolve_stats finds the initialised one and incr(stat, count, tags=...) reaches its backend."""
    from airflow.sdk._shared.observability.metrics import stats as sdk_stats
    from airflow.sdk._shared.observability.metrics.base_stats_logger import NoStatsLogger

    received: list[tuple[str, dict[str, Any]]] = []

    class Backend(NoStatsLogger):
        @classmethod
        def incr(cls, stat: str, count: int = 1, rate: int = 1, *, tags: dict[str, Any] | None = None) -> None:
            received.append((stat, {"count": count, "tags": tags}))

    monkeypatch.setattr(sdk_stats, "_factory", None)
    monkeypatch.setattr(sdk_stats, "_backend", None)
    monkeypatch.setattr(sdk_stats, "_export_legacy_names", True)
    sdk_stats.initialize(factory=Backend, export_legacy_names=True)
    assert metrics_module.resolve_stats() is sdk_stats

    from flex_provider.engine.progress import RunCounters

    meter = metrics_module.RunMetrics({"dag_id": "d", "task_id": "t", "model": "m"})
    counters = RunCounters(requests=3, succeeded=2, failed=1)
    meter.emit(counters)
    meter.emit(counters)  # nothing grew: nothing sent
    assert received == [
        ("flex.requests", {"count": 3, "tags": {"dag_id": "d", "task_id": "t", "model": "m"}}),
        ("flex.items.succeeded", {"count": 2, "tags": {"dag_id": "d", "task_id": "t", "model": "m"}}),
        ("flex.items.failed", {"count": 1, "tags": {"dag_id": "d", "task_id": "t", "model": "m"}}),
    ]
