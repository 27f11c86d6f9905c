"""FlexTrigger on its own: serialise -> rebuild (what the triggerer does) -> run against the emulator."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from airflow.sdk.exceptions import TaskDeferred

from flex_provider.engine.store import ResultStore
from flex_provider.operators.flex import FlexLLMOperator
from flex_provider.triggers.flex import FlexTrigger
from tests.airflow.conftest import API_KEY, CONN_ID
from tests.fakes import FakeTI

pytestmark = pytest.mark.integration


def deferred_trigger(tmp_path: Path, **kwargs) -> FlexTrigger:
    """The trigger exactly as the operator hands it to Airflow."""
    ti = FakeTI(dag_id="d", run_id="r1", task_id="t", map_index=-1)
    op = FlexLLMOperator(task_id="t", conn_id=CONN_ID, model="gpt-5-mini", output_path=f"file://{tmp_path}", **kwargs)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute({"ti": ti, "ds": "2026-01-01", "params": {}})
    return deferred.value.trigger


async def run_to_event(trigger: FlexTrigger) -> dict:
    events = [event async for event in trigger.run()]
    assert len(events) == 1
    return events[0].payload


async def test_serialize_rebuild_and_run_over_http(airflow_db, emu, tmp_path: Path) -> None:
    trigger = deferred_trigger(tmp_path, items=[f"doc {i}" for i in range(20)], max_concurrency=4)
    classpath, kwargs = trigger.serialize()
    # The triggerer stores kwargs as JSON and rebuilds the class from its path.
    kwargs = json.loads(json.dumps(kwargs))
    assert API_KEY not in json.dumps(kwargs)
    module, _, name = classpath.rpartition(".")
    rebuilt = getattr(__import__(module, fromlist=[name]), name)(**kwargs)

    payload = await run_to_event(rebuilt)
    assert payload["status"] == "success" and payload["total"] == payload["succeeded"] == 20
    assert set(payload) <= {"status", "work_uri", "output_path", "total", "succeeded", "failed"}  # small event
    assert emu.stats()["requests"] == 20

    # at-least-once delivery: the triggerer may run the same trigger again; nothing is re-sent
    payload = await run_to_event(FlexTrigger(**kwargs))
    assert payload["succeeded"] == 20 and emu.stats()["requests"] == 20


async def test_fatal_error_becomes_error_event(airflow_db, emu, tmp_path: Path) -> None:
    emu.update(insufficient_quota=True)
    payload = await run_to_event(deferred_trigger(tmp_path, items=["a", "b"]))
    assert payload["status"] == "error" and payload["kind"] == "aborted"
    assert "insufficient_quota" in payload["message"] and API_KEY not in payload["message"]


async def test_on_kill_cancels_outstanding_background_responses(airflow_db, emu, tmp_path: Path) -> None:
    emu.update(latency_s=30)  # responses stay in progress on the server
    trigger = deferred_trigger(tmp_path, items=[f"doc {i}" for i in range(6)], submit_mode="background",
                               poll_interval=0.2)
    task = asyncio.create_task(run_to_event(trigger))
    while emu.stats()["background"]["created"] < 6:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # let the group commit land
    task.cancel()  # the triggerer cancels run() first, then calls on_kill()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(ResultStore(tmp_path).load().pending) == 6
    await trigger.on_kill()
    assert emu.stats()["background"]["cancelled"] == 6


async def test_cleanup_does_not_cancel_remote_work(airflow_db, emu, tmp_path: Path) -> None:
    emu.update(latency_s=30)
    trigger = deferred_trigger(tmp_path, items=["a", "b"], submit_mode="background", poll_interval=0.2)
    task = asyncio.create_task(run_to_event(trigger))
    while emu.stats()["background"]["created"] < 2:
        await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await trigger.cleanup()
    assert emu.stats()["background"]["cancelled"] == 0


def test_trigger_module_imports_no_sdk() -> None:
    """The triggerer imports trigger classes on its event loop: that import must stay light."""
    import subprocess
    import sys

    code = (
        "import sys, airflow.triggers.base; before = set(sys.modules); "
        "import flex_provider.triggers.flex; new = set(sys.modules) - before; "
        "heavy = sorted(m for m in new if m.split('.')[0] in ('openai', 'httpx2', 'jsonschema', 'jinja2', 'tenacity')); "
        "print(heavy); assert not heavy"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def test_on_kill_in_the_worker_path_cancels_outstanding_background_responses(airflow_db, emu, tmp_path: Path) -> None:
    """deferrable=False: the task runs the job in the worker; killing it must cancel the background
    responses too (before, only the trigger's on_kill did)."""
    import threading
    import time

    emu.update(latency_s=30)
    ti = FakeTI(dag_id="d", run_id="r1", task_id="t", map_index=-1)
    op = FlexLLMOperator(
        task_id="t", conn_id=CONN_ID, model="gpt-5-mini", output_path=f"file://{tmp_path}", deferrable=False,
        items=[f"doc {i}" for i in range(4)], submit_mode="background", poll_interval=0.2,
    )
    outcome: list[BaseException | None] = []

    def work() -> None:
        try:
            op.execute({"ti": ti, "ds": "2026-01-01", "params": {}})
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    deadline = time.monotonic() + 30
    while len(ResultStore(tmp_path).load().pending) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    op.on_kill()  # Airflow calls it from another thread (or a signal handler) while execute runs
    assert emu.stats()["background"]["cancelled"] == 4
    worker.join(30)  # the cancelled responses end the run: the items fail, nothing hangs
    assert outcome and outcome[0] is not None
