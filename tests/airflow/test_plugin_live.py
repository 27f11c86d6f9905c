"""The Flex tab's view of a run while it runs: the engine works a folder against a slow emulator (as
the trigger does), and the view reads that folder's checkpoints, as the api-server does."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from flex_provider.plugins.task_state import CheckpointUnreadable, TaskRef, task_view
from tests.airflow.conftest import API_KEY
from tests.integration.conftest import FAST_RETRY
from tests.integration.helpers import make_engine, make_items

pytestmark = pytest.mark.integration


def ref(work_uri: str | None, state: str = "deferred") -> TaskRef:
    return TaskRef("d", "r", "t", -1, state, 1, "FlexLLMOperator", work_uri)


def test_running_then_finished(emu, tmp_path: Path) -> None:
    emu.update(latency_s=0.4, latency_jitter=0.2, unavailable_rate=0.15, seed=3)
    items = make_items(40)
    summary: dict[str, Any] = {}

    def work() -> None:
        engine = make_engine(emu, tmp_path, API_KEY, max_concurrency=4, progress_interval_s=0.2, retry=FAST_RETRY)
        summary.update(asyncio.run(engine.run(items, total=len(items))))

    assert task_view(ref(tmp_path.as_uri()))["status"] == "not_started"  # no checkpoint yet
    worker = threading.Thread(target=work)
    worker.start()
    seen: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 60
        while worker.is_alive() and time.monotonic() < deadline:
            view = task_view(ref(tmp_path.as_uri()))
            if view["status"] == "running":
                seen.append(view)
            time.sleep(0.25)
    finally:
        worker.join(timeout=120)
    assert summary, "the run did not finish"

    mid = [v for v in seen if 0 < v["done"] < 40 and v["in_flight"] > 0]
    assert mid, [(v["done"], v["in_flight"]) for v in seen]
    assert any(v["eta_s"] is not None and v["eta_s"] > 0 and v["eta_at"] for v in mid)
    assert all(v["total"] == 40 and v["finished"] is False for v in mid)
    dones = [v["done"] for v in seen]
    assert dones == sorted(dones)  # checkpoints only move forward
    assert len(mid[-1]["series"]) >= 2

    final = task_view(ref(tmp_path.as_uri(), state="deferred"))
    assert final["status"] == "finished" and final["finished"] is True and final["eta_s"] is None
    assert (final["done"], final["succeeded"], final["failed"]) == (40, summary["succeeded"], summary["failed"])
    assert final["unavailable"] == summary["unavailable"] > 0  # the 429s are counted
    assert final["requests"] == emu.stats()["requests"]
    assert sum(final["tiers"].values()) == summary["succeeded"]


def test_storage_errors_are_reported_not_raised_raw(tmp_path: Path) -> None:
    def broken(root: Any) -> Any:
        raise PermissionError("denied")

    with pytest.raises(CheckpointUnreadable, match="PermissionError"):
        task_view(ref(tmp_path.as_uri()), reader=broken)


def test_stopped_and_not_started_messages(tmp_path: Path) -> None:
    assert "has not started yet" in task_view(ref(None, state="queued"))["message"]
    assert "not a FlexLLMOperator task" in task_view(ref(None, state="success"))["message"]
    assert task_view(ref(None, state="queued"))["state"] == "queued"
