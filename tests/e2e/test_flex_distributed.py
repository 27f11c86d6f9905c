"""Distributed deployment: PostgreSQL metadata DB, two triggerers. Kill the triggerer that runs a
flex trigger mid-run; the surviving one takes over and the run completes exactly once."""

from __future__ import annotations

import hashlib
import json
import random
import signal
import socket
import time
import uuid
from pathlib import Path

import pytest

from flex_provider.emulator import EmulatorConfig, serve_in_thread

pytestmark = [pytest.mark.e2e, pytest.mark.distributed]

API_KEY = "sk-e2e-distributed-SECRET-9f8e7d"
HERE = Path(__file__).resolve().parent


def redis_available() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1):
            return True
    except OSError:
        return False


def celery_env(db_url: str) -> dict[str, str]:
    """CeleryExecutor on the machine's Redis; a private queue (and Redis DB) per test so parallel
    runs never pick up each other's tasks. Results go to the cluster's own PostgreSQL database."""
    queue = f"flex-e2e-{uuid.uuid4().hex[:8]}"
    return {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:6379/{random.randint(1, 15)}",
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + db_url,
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": queue,
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
    }


def part_ids(folder: Path) -> list[str]:
    return [json.loads(line)["id"] for p in sorted(folder.glob("part-*.jsonl")) for line in p.read_text().splitlines()]


@pytest.mark.parametrize(
    ("dag_id", "executor"),
    [
        ("flex_e2e_kill_inline", "LocalExecutor"),
        ("flex_e2e_kill_background", "LocalExecutor"),
        ("flex_e2e_kill_inline", "CeleryExecutor"),
    ],
)
def test_two_triggerers_on_postgres_survivor_finishes_exactly_once(
    airflow_cluster_factory, tmp_path, dag_id, executor
) -> None:
    background = dag_id.endswith("background")
    if executor == "CeleryExecutor" and not redis_available():
        pytest.skip("Redis at 127.0.0.1:6379 is not reachable")
    with serve_in_thread(EmulatorConfig(api_key=API_KEY, latency_s=8.0 if background else 1.0)) as emu:
        conn = {"conn_type": "openai_flex", "password": API_KEY, "host": emu.base_url}
        env = {
            "AIRFLOW_CONN_OPENAI_DEFAULT": json.dumps(conn),
            "FLEX_E2E_DATA": str(tmp_path / "data"),
            "FLEX_E2E_OUT": (tmp_path / "out").as_uri(),
        }
        af = airflow_cluster_factory(
            dag_files={"flex_e2e_dags.py": (HERE / "flex_e2e_dags.py").read_text()},
            backend="postgres",
            triggerers=2,
            env=env,
            start=False,
        )
        if executor == "CeleryExecutor":
            af.extra_env.update(celery_env(af.db_url))
        af.start(wait_for_dags=(dag_id,))
        if executor == "CeleryExecutor":
            queue = af.extra_env["AIRFLOW__OPERATORS__DEFAULT_QUEUE"]
            af._spawn("celery-worker", ["celery", "worker", "--queues", queue, "--concurrency", "2"])
        run_id = af.trigger_dag(dag_id)
        out = tmp_path / "out" / ("bg" if background else "inline") / run_id
        af.wait_for_task_state(dag_id, run_id, "enrich", "deferred", timeout=90)
        holder = af.wait_for_trigger_assignment(dag_id, run_id, "enrich", timeout=90)
        holder_job = af.triggerer(holder).job_id
        total = 60 if background else 240

        deadline = time.monotonic() + 90
        if background:
            def progressed() -> bool:
                pending = out / "_pending"
                return pending.exists() and sum(len(p.read_text().splitlines()) for p in pending.glob("*.jsonl")) >= total
        else:
            def progressed() -> bool:
                return len(part_ids(out)) >= 48
        while not progressed():
            assert time.monotonic() < deadline, "no progress before the kill"
            time.sleep(0.2)

        af.kill_triggerer(holder, signal.SIGKILL)
        saved_before = set(part_ids(out))
        survivor = af.wait_for_trigger_assignment(
            dag_id, run_id, "enrich", timeout=90, exclude_job_ids=[holder_job]
        )
        assert survivor == 1 - holder and af.triggerer(survivor).alive()
        assert af.wait_for_run(dag_id, run_id, timeout=240) == "success"

        ids = part_ids(out)
        assert len(ids) == len(set(ids)) == total  # exactly once
        stats = emu.stats()
        prefix = "background" if background else "inline"
        inputs = {i: stats["inputs"][hashlib.sha256(f"{prefix} document {i}".encode()).hexdigest()[:16]] for i in range(total)}
        if background:
            assert stats["background"]["created"] == total  # zero re-sent
        else:
            resent = {f"inline-{i}" for i, v in inputs.items() if v["succeeded"] > 1}
            assert not resent & saved_before and len(resent) <= 12 + 24
        assert af.task_instance(dag_id, run_id, "enrich")["try_number"] == 1
        assert API_KEY not in af.all_log_text()
        if executor == "CeleryExecutor":
            assert "celery" in (af.proc_logs_folder / "celery-worker.log").read_text().lower()
