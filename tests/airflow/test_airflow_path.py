"""The Airflow path (operator -> FlexJob -> trigger -> run_job -> engine) keeps the engine's pace.

``benchmarks/airflow_path.py`` measures it; these tests pin what made the difference, without timing:
a run freezes the process's start-up heap out of the garbage collector once (in an Airflow process
every full collection otherwise walks 0.3-0.75 million objects with the event loop stopped), and the
operator keeps ``max_concurrency`` requests in flight through ``dag.test()``.

The collector itself is replaced by a recorder: freezing the pytest process for real would change
the rest of the session.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

import flex_provider.job as job_module
from flex_provider.engine import RequestSpec, RunOptions
from flex_provider.hooks.flex import ClientSettings
from flex_provider.job import FlexJob, freeze_startup_heap, run_job
from tests.airflow.conftest import API_KEY, task_states, write_dag

pytestmark = [pytest.mark.integration]


class RecordingGc:
    """Stands in for the ``gc`` module inside ``flex_provider.job``."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def collect(self, *args: Any) -> int:
        self.calls.append("collect")
        return 0

    def freeze(self) -> None:
        self.calls.append("freeze")

    def get_freeze_count(self) -> int:
        return 123_456


@pytest.fixture
def recording_gc(monkeypatch: pytest.MonkeyPatch) -> RecordingGc:
    fake = RecordingGc()
    monkeypatch.setattr(job_module, "gc", fake)
    monkeypatch.setattr(job_module, "_heap_frozen", False)  # as in a fresh process
    monkeypatch.delenv(job_module.GC_FREEZE_ENV, raising=False)
    return fake


def _job(tmp_path: Any, n: int) -> FlexJob:
    return FlexJob(
        conn_id="unused",
        spec=RequestSpec(model="gpt-5-mini"),
        options=RunOptions(max_concurrency=4),
        work_uri=(tmp_path / "out").as_uri(),
        items=[f"document {i}" for i in range(n)],
        total=n,
    )


async def test_run_job_freezes_the_heap_once_per_process(emu, recording_gc, tmp_path, caplog) -> None:
    settings = ClientSettings(API_KEY, emu.base_url)
    log = logging.getLogger("flex_provider.test_airflow_path")
    with caplog.at_level(logging.INFO, logger=log.name):
        first = await run_job(_job(tmp_path / "a", 3), log, settings=settings, metrics=False)
        second = await run_job(_job(tmp_path / "b", 3), log, settings=settings, metrics=False)
    assert (first.status, first.succeeded, second.status, second.succeeded) == ("success", 3, "success", 3)
    # Collected first (no garbage gets frozen), frozen once: a later run does not freeze again.
    assert recording_gc.calls == ["collect", "freeze"]
    said = [r.getMessage() for r in caplog.records if "frozen out of garbage collection" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("flex: 123456 long-lived objects frozen"), said


@pytest.mark.parametrize("value", ["0", "false", "No", "off"])
def test_freeze_can_be_turned_off(recording_gc, monkeypatch, value) -> None:
    monkeypatch.setenv(job_module.GC_FREEZE_ENV, value)
    assert freeze_startup_heap() is False
    assert recording_gc.calls == []


def test_freeze_without_a_logger(recording_gc) -> None:
    assert freeze_startup_heap() is True
    assert freeze_startup_heap() is False
    assert recording_gc.calls == ["collect", "freeze"]


def test_dag_test_run_freezes_and_keeps_max_concurrency_in_flight(airflow_db, emu, recording_gc, tmp_path) -> None:
    """Through the real operator (deferred, trigger inline in dag.test): the heap is frozen before
    the requests, and the emulator sees ``max_concurrency`` requests at once (answers take 0.3 s,
    so a feeder or an event loop that fell behind would show as fewer)."""
    emu.update(latency_s=0.3, latency_jitter=0.0)
    source = tmp_path / "in.jsonl"
    source.write_text("".join(f'{{"id": "t{i}", "text": "ticket {i}"}}\n' for i in range(24)))
    dag = write_dag(
        """
        FlexLLMOperator(task_id="enrich", conn_id=CONN_ID, model="gpt-5-mini", input_path={src!r},
                        output_path={out!r}, max_concurrency=12, progress_interval=0.5)
        """,
        src=source.as_uri(),
        out=(tmp_path / "out").as_uri(),
    )
    run = dag.test()
    assert task_states(run) == {"enrich": "success"}
    stats = emu.stats()
    assert stats["by_status"] == {"200": 24}
    assert stats["max_in_flight"] == 12
    assert recording_gc.calls == ["collect", "freeze"]
