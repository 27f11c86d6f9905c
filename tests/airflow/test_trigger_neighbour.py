"""FlexTrigger as a neighbour in the triggerer: its run must not hold the triggerer's event loop
(where every other trigger of the deployment runs), and running it elsewhere must keep what
running it on that loop gave: log lines in the task's trigger log, cancellation that waits for
the checkpoints, errors that reach the triggerer.

The real targets (canary p99 < 50 ms, no watchdog warning at C=200) are measured by
``benchmarks/triggerer_canary.py``; the bound here is generous because test machines are noisy."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from pathlib import Path

import pytest
import structlog

from flex_provider.engine.loop_thread import THREAD_NAME
from flex_provider.engine.store import ResultStore
from flex_provider.triggers.flex import ENGINE_THREAD_ENV, FlexTrigger
from tests.airflow.test_trigger import deferred_trigger, run_to_event

pytestmark = pytest.mark.integration


def no_loop_thread_left(timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(t.name == THREAD_NAME and t.is_alive() for t in threading.enumerate()):
            return True
        time.sleep(0.02)
    return False


class Canary:
    """What the triggerer's watchdog does: sleep 100 ms in a loop, note how late each wake-up is."""

    def __init__(self) -> None:
        self.late: list[float] = []
        self.stopped = False

    async def run(self) -> None:
        while not self.stopped:
            before = time.monotonic()
            await asyncio.sleep(0.1)
            self.late.append(time.monotonic() - before - 0.1)


async def test_a_full_speed_run_leaves_the_triggerer_loop_responsive(airflow_db, emu, tmp_path: Path) -> None:
    """300 requests in flight whose answers arrive together: parsing them on the triggerer's loop
    held it 0.6-2 s (FLEX_PROVIDER_ENGINE_THREAD=off makes this test fail); on the flex loop
    thread the canary's worst wake-up here was 35-50 ms late (2 cores, load average 7-8)."""
    emu.update(latency_s=0.3, latency_jitter=0.0)
    trigger = deferred_trigger(tmp_path, items=[f"doc {i}" for i in range(300)], max_concurrency=300)
    canary = Canary()
    gc.freeze()  # what the trigger does around its first load of the SDK (already loaded in this process)
    try:
        watching = asyncio.create_task(canary.run())
        payload = await run_to_event(trigger)
        canary.stopped = True
        await watching
    finally:
        gc.unfreeze()
    assert payload["status"] == "success" and payload["succeeded"] == 300
    assert len(canary.late) >= 5
    assert max(canary.late) < 0.5, sorted(canary.late)[-5:]


def _tag_thread(_logger: object, _name: str, event: dict) -> dict:
    event["thread"] = threading.current_thread().name
    return event


async def test_log_lines_carry_the_trigger_context(airflow_db, emu, tmp_path: Path) -> None:
    """Airflow routes a log line to the task's trigger log by the ``trigger_id`` it binds (structlog
    contextvars) in the trigger's task; the run happens on the flex loop thread, and its lines
    must still carry it."""
    trigger = deferred_trigger(tmp_path, items=[f"doc {i}" for i in range(10)], max_concurrency=4)
    structlog.contextvars.bind_contextvars(trigger_id=4242, task_id="t")
    try:
        with structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars, _tag_thread]) as logs:
            payload = await run_to_event(trigger)
    finally:
        structlog.contextvars.unbind_contextvars("trigger_id", "task_id")
    assert payload["status"] == "success"
    lines = [entry for entry in logs if str(entry["event"]).startswith(("flex run starting", "flex progress"))]
    assert any(str(e["event"]).startswith("flex run starting") for e in lines), logs
    assert any(str(e["event"]).startswith("flex progress: done 10") for e in lines), logs
    assert all(e.get("trigger_id") == 4242 and e["thread"] == THREAD_NAME for e in lines), lines


async def test_cancelled_run_has_saved_its_checkpoints_when_run_returns(airflow_db, emu, tmp_path: Path) -> None:
    """The triggerer cancels run() (task cleared, triggerer stopping) and then calls on_kill() or
    exits: the engine, in its own loop, must have finished its cancellation (finished records
    written) by the time run() raises, and leave no thread behind."""
    emu.update(latency_s=0.2, latency_jitter=0.0)
    trigger = deferred_trigger(tmp_path, items=[f"doc {i}" for i in range(60)], max_concurrency=4)
    task = asyncio.create_task(run_to_event(trigger))
    while emu.stats()["requests"] < 12:
        await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    finished = len(ResultStore(tmp_path).load().final_prompts)  # at once: no waiting for a late flush
    assert finished >= 8
    assert no_loop_thread_left()


async def test_an_error_escaping_the_run_reaches_the_triggerer(airflow_db) -> None:
    """A payload the job cannot even be built from fails the trigger (Airflow fails the task with
    it), as it did when the run shared the triggerer's loop."""
    with pytest.raises(KeyError, match="work_uri"):
        await run_to_event(FlexTrigger({"format": 2, "spec": {"model": "gpt-5-mini"}}))
    assert no_loop_thread_left()


async def test_engine_thread_can_be_switched_off(airflow_db, emu, tmp_path: Path, monkeypatch) -> None:
    """FLEX_PROVIDER_ENGINE_THREAD=off: the run happens on the caller's loop, as before."""
    monkeypatch.setenv(ENGINE_THREAD_ENV, "off")
    trigger = deferred_trigger(tmp_path, items=["a", "b"], max_concurrency=2)
    with structlog.testing.capture_logs(processors=[_tag_thread]) as logs:
        payload = await run_to_event(trigger)
    assert payload["status"] == "success" and payload["succeeded"] == 2
    starting = [e for e in logs if str(e["event"]).startswith("flex run starting")]
    assert starting and starting[0]["thread"] == threading.current_thread().name


def test_first_sdk_load_freezes_the_heap() -> None:
    """A full garbage collection walks every object of the triggerer process holding the GIL
    (100-500 ms): the trigger freezes the heap around its first load of the SDK, so that later
    collections leave Airflow's and the SDK's objects out. In a fresh interpreter, like a triggerer."""
    import subprocess
    import sys

    code = (
        "import gc, airflow.triggers.base, flex_provider.triggers.flex as f; "
        "assert gc.get_freeze_count() == 0; f._load_job_module(); "
        "import openai; frozen = gc.get_freeze_count(); unfrozen = len(gc.get_objects()); "
        "print(frozen, unfrozen); assert frozen > 100_000 and unfrozen < frozen / 10, (frozen, unfrozen)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def test_heap_freeze_can_be_switched_off(monkeypatch) -> None:
    from flex_provider.triggers.flex import GC_FREEZE_ENV, freeze_heap

    monkeypatch.setenv(GC_FREEZE_ENV, "off")
    before = gc.get_freeze_count()
    freeze_heap()
    assert gc.get_freeze_count() == before
