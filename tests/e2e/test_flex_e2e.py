"""FlexLLMOperator on a real Airflow: scheduler, dag-processor, api-server and triggerer as separate
processes (LocalExecutor, SQLite), the emulator reached over HTTP through the `openai_default`
connection. Proves deferral into the triggerer, crash recovery and retries without re-billing.
"""

from __future__ import annotations

import hashlib
import json
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import AirflowCluster

from flex_provider.emulator import EmulatorConfig, EmulatorServer, serve_in_thread

pytestmark = pytest.mark.e2e

API_KEY = "sk-e2e-SECRET-4b7d0c9a1e2f3a5b6c"
HERE = Path(__file__).resolve().parent


def key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


BASE_EMULATOR = EmulatorConfig(api_key=API_KEY, latency_s=0.2)


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorServer]:
    with serve_in_thread(BASE_EMULATOR) as server:
        yield server


@pytest.fixture(scope="module")
def af(emu: EmulatorServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowCluster]:
    base = tmp_path_factory.mktemp("flex-e2e")
    dags = base / "dags"
    dags.mkdir()
    (dags / "flex_e2e_dags.py").write_text((HERE / "flex_e2e_dags.py").read_text())
    conn = {"conn_type": "openai_flex", "password": API_KEY, "host": emu.base_url}
    env = {
        "AIRFLOW_CONN_OPENAI_DEFAULT": json.dumps(conn),
        "FLEX_E2E_DATA": str(base / "data"),
        "FLEX_E2E_OUT": (base / "out").as_uri(),
        "FLEX_PROVIDER_CHECKPOINT_ROOT": (base / "checkpoints").as_uri(),
    }
    cluster = AirflowCluster(home=base / "home", dags_folder=dags, env=env)
    cluster.out = base / "out"  # type: ignore[attr-defined]
    cluster.checkpoints = base / "checkpoints"  # type: ignore[attr-defined]
    try:
        cluster.start(wait_for_dags=["flex_e2e_basic", "flex_e2e_kill_inline", "flex_e2e_kill_background", "flex_e2e_retry",
                                     "flex_e2e_chaos"])
        yield cluster
    except BaseException:
        sys.stderr.write(cluster.diagnostics())
        raise
    finally:
        cluster.stop()


@pytest.fixture
def fresh(emu: EmulatorServer) -> EmulatorServer:
    emu.update(**BASE_EMULATOR.model_dump())  # every knob back, fault knobs included
    emu.reset()
    return emu


def part_ids(folder: Path) -> list[str]:
    return [json.loads(line)["id"] for p in sorted(folder.glob("part-*.jsonl")) for line in p.read_text().splitlines()]


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_defers_to_triggerer_logs_progress_and_succeeds(af, fresh) -> None:
    dag_id = "flex_e2e_basic"
    fresh.update(latency_s=1.0)
    run_id = af.trigger_dag(dag_id)
    af.wait_for_task_state(dag_id, run_id, "enrich", "deferred", timeout=90)
    row = af.trigger_of(dag_id, run_id, "enrich")
    assert row is not None and row["classpath"] == "flex_provider.triggers.flex.FlexTrigger"
    job = af.triggerer(af.wait_for_trigger_assignment(dag_id, run_id, "enrich")).job_id
    # The trigger row's kwargs hold the conn_id, never the key.
    raw = af.sql("SELECT kwargs FROM trigger WHERE id = :i", {"i": row["id"]})[0]["kwargs"]
    raw = raw if isinstance(raw, str) else json.dumps(raw)
    assert API_KEY not in raw

    assert af.wait_for_run(dag_id, run_id, timeout=120) == "success"
    summary = af.xcom(dag_id, run_id, "enrich")
    assert summary["total"] == summary["succeeded"] == 60 and summary["requests"] == 60
    stats = fresh.stats()
    assert stats["requests"] == 60 and stats["by_tier"] == {"flex": 60}
    assert all(stats["inputs"][key(f"basic document {i}")]["succeeded"] == 1 for i in range(60))

    trigger_logs = [p for p in af.task_log_files(dag_id, run_id, "enrich") if p.name == f"attempt=1.log.trigger.{job}.log"]
    assert trigger_logs, af.task_log_files(dag_id, run_id, "enrich")
    text = trigger_logs[0].read_text()
    assert text.count("flex progress: done") >= 2  # progress lines while it ran (every second)
    assert "basic document" not in text  # no prompt text in the trigger log
    assert "flex progress" in af.task_log_via_api(dag_id, run_id, "enrich")


def _kill_triggerer_mid_run(af: AirflowCluster, dag_id: str, run_id: str, ready) -> int:
    index = af.wait_for_trigger_assignment(dag_id, run_id, "enrich", timeout=90)
    old_job = af.triggerer(index).job_id
    wait_until(ready, 60, "progress before the kill")
    af.kill_triggerer(index, signal.SIGKILL)
    new_index = af.start_triggerer()
    assert af.wait_for_trigger_assignment(dag_id, run_id, "enrich", timeout=90, exclude_job_ids=[old_job]) == new_index
    return old_job


def test_kill_9_triggerer_inline_mode_resends_at_most_in_flight(af, fresh) -> None:
    dag_id = "flex_e2e_kill_inline"
    fresh.update(latency_s=1.0)  # 240 items / 12 in flight / 1 s = ~20 s of work
    run_id = af.trigger_dag(dag_id)
    out = af.out / "inline" / run_id
    af.wait_for_task_state(dag_id, run_id, "enrich", "deferred", timeout=90)
    _kill_triggerer_mid_run(af, dag_id, run_id, lambda: len(part_ids(out)) >= 60)
    saved_before = set(part_ids(out))  # what the dead triggerer had checkpointed
    assert 60 <= len(saved_before) < 240

    assert af.wait_for_run(dag_id, run_id, timeout=180) == "success"
    ids = part_ids(out)
    assert len(ids) == len(set(ids)) == 240  # exactly once in the output
    inputs = fresh.stats()["inputs"]
    resent = {f"inline-{i}" for i in range(240) if inputs[key(f"inline document {i}")]["succeeded"] > 1}
    assert not resent & saved_before  # nothing with a stored result was requested again
    # Only what was in flight (12) or answered but not yet flushed (< 2 s of answers: 24) is re-sent.
    assert len(resent) <= 12 + 24, len(resent)
    assert af.task_instance(dag_id, run_id, "enrich")["try_number"] == 1


def test_kill_9_triggerer_background_mode_resends_nothing(af, fresh) -> None:
    dag_id = "flex_e2e_kill_background"
    fresh.update(latency_s=12.0)  # responses stay in progress on the server across the crash
    run_id = af.trigger_dag(dag_id)
    out = af.out / "bg" / run_id
    af.wait_for_task_state(dag_id, run_id, "enrich", "deferred", timeout=90)

    def all_submitted_and_checkpointed() -> bool:
        pending = out / "_pending"
        entries = sum(len(p.read_text().splitlines()) for p in pending.glob("*.jsonl")) if pending.exists() else 0
        return entries >= 60

    _kill_triggerer_mid_run(af, dag_id, run_id, all_submitted_and_checkpointed)
    assert af.wait_for_run(dag_id, run_id, timeout=180) == "success"
    ids = part_ids(out)
    assert len(ids) == len(set(ids)) == 60
    stats = fresh.stats()
    assert stats["background"]["created"] == 60  # zero re-sent: the new trigger polled the stored ids
    assert all(v["requests"] == 1 for v in stats["inputs"].values())
    assert af.xcom(dag_id, run_id, "enrich")["this_run"]["background_reattached"] > 0


def test_task_retry_and_clear_rerun_do_not_rebill(af, fresh) -> None:
    dag_id = "flex_e2e_retry"
    fresh.update(latency_s=0.05, unavailable_rate=0.4, seed=5)  # try 1: ~40% fail, max_failed=0 -> retry
    run_id = af.trigger_dag(dag_id)
    wait_until(lambda: af.task_instance(dag_id, run_id, "enrich")["try_number"] >= 2
               or af.task_instance(dag_id, run_id, "enrich")["state"] == "up_for_retry", 120, "first try to fail")
    fresh.update(unavailable_rate=0.0)  # flex has capacity again for try 2
    assert af.wait_for_run(dag_id, run_id, timeout=120) == "success"
    ti = af.task_instance(dag_id, run_id, "enrich")
    assert ti["try_number"] == 2
    records = af.xcom(dag_id, run_id, "enrich")
    assert [r["id"] for r in records] == sorted((r["id"] for r in records), key=[r["id"] for r in records].index)
    assert len(records) == 40 and {r["status"] for r in records} == {"succeeded"}
    inputs = fresh.stats()["inputs"]
    assert all(inputs[key(f"retry document {i}")]["succeeded"] == 1 for i in range(40))  # zero re-billed
    first_try_failures = sum(1 for i in range(40) if inputs[key(f"retry document {i}")]["requests"] == 2)
    assert first_try_failures > 0  # try 1 really failed some, and try 2 sent only those

    before = fresh.stats()["requests"]
    af.clear_task(dag_id, run_id, "enrich")
    wait_until(lambda: af.task_instance(dag_id, run_id, "enrich")["state"] != "success", 30, "clear")
    assert af.wait_for_run(dag_id, run_id, timeout=120) == "success"
    assert fresh.stats()["requests"] == before  # the cleared task re-ran from its checkpoint
    assert len(af.xcom(dag_id, run_id, "enrich")) == 40


def test_chaos_every_fault_at_once_and_a_triggerer_kill(af, fresh) -> None:
    """Unattended nights, chaos run: 2,000 items against 429s, 5xx, malformed 200s of every kind,
    trickled bodies, dropped connections and day-long rate-limit resets, with the triggerer
    SIGKILLed in the middle. Every item ends exactly once, as a success or as its own failed record
    with a clear error; the run is never aborted as a whole; nothing with a saved result is re-sent."""
    dag_id = "flex_e2e_chaos"
    fresh.update(
        latency_s=0.4,
        unavailable_rate=0.1,
        retry_after_s=0.2,
        error_rate=0.04,
        malformed_rate=0.04,
        trickle_rate=0.01,
        trickle_interval_s=0.5,
        reset_rate=0.03,
        long_wait_rate=0.003,
        seed=13,
    )
    run_id = af.trigger_dag(dag_id)
    out = af.out / "chaos" / run_id
    af.wait_for_task_state(dag_id, run_id, "enrich", "deferred", timeout=90)
    _kill_triggerer_mid_run(af, dag_id, run_id, lambda: len(part_ids(out)) >= 500)
    saved_before = set(part_ids(out))
    assert 500 <= len(saved_before) < 2000

    assert af.wait_for_run(dag_id, run_id, timeout=300) == "success"
    ti = af.task_instance(dag_id, run_id, "enrich")
    assert ti["try_number"] == 1  # no run-wide abort, no task retry needed
    records = [json.loads(line) for p in sorted(out.glob("part-*.jsonl")) for line in p.read_text().splitlines()]
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)) == 2000  # every item exactly once
    failed = [r for r in records if r["status"] != "succeeded"]
    assert len(failed) <= 100  # max_failed=0.05
    for record in failed:
        assert record["error"]["type"] and record["error"]["message"], record
    stats = fresh.stats()
    assert all(stats["faults"][name] > 0 for name in ("malformed", "trickle", "reset", "long_wait")), stats["faults"]
    inputs = stats["inputs"]
    resent = {f"chaos-{i}" for i in range(2000) if inputs[key(f"chaos document {i}")]["succeeded"] > 1}
    assert not resent & saved_before  # nothing with a stored result was requested again
    # Only what was in flight (40) or answered but not yet flushed (< 2 s at ~100 answers/s) at the kill.
    assert len(resent) <= 40 + 200, len(resent)
    summary = af.xcom(dag_id, run_id, "enrich")
    assert summary["total"] == 2000 and summary["malformed_answers"] > 0
    print(  # figures for the record (pytest -rP shows them)
        f"chaos: {len(failed)} failed of 2000 ({sorted({r['error']['type'] for r in failed})}), "
        f"{len(saved_before)} saved before the kill, {len(resent)} re-sent, faults {stats['faults']}, "
        f"requests {summary['requests']}, malformed {summary['malformed_answers']}, "
        f"duration {summary['duration_s']} s"
    )


def test_api_key_never_in_logs_xcom_or_outputs(af) -> None:
    # Runs last in the module: scans everything the previous runs left.
    assert API_KEY not in af.all_log_text()
    assert "SECRET" not in af.all_log_text()
    for folder in (af.out, af.checkpoints):
        for path in folder.rglob("*"):
            if path.is_file():
                assert API_KEY not in path.read_text(errors="replace"), path
    rows = af.sql("SELECT value FROM xcom")
    assert rows and not [r for r in rows if API_KEY in str(r["value"])]
    rows = af.sql("SELECT next_kwargs FROM task_instance")
    assert not [r for r in rows if API_KEY in str(r["next_kwargs"])]
