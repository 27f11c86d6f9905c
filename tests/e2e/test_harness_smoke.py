"""Smoke tests of the e2e harness with a BUILT-IN deferrable operator.

They prove the harness (not our provider): a real triggerer runs the trigger, trigger logs land
beside the task log, XCom comes back over REST, and a SIGKILLed triggerer's trigger is picked up by
a replacement (SQLite) or by the surviving HA peer (PostgreSQL).
"""

from __future__ import annotations

import signal
import textwrap
import time

import psutil
import pytest
from harness import AirflowCluster

pytestmark = pytest.mark.e2e


def _dag_source(dag_id: str, wait_seconds: int) -> str:
    """A sensor that defers to the triggerer (``DateTimeTrigger``), then a PythonOperator.

    ``DateTimeSensorAsync`` with a target rendered when the task *starts*: the wait does not
    depend on how long the scheduler and a cold worker took (``TimeDeltaSensor`` counts from the
    run's ``run_after``, so on a slow box it may never defer). The trigger stores the absolute
    moment, so a trigger restarted on another triggerer keeps the original deadline.
    """
    return textwrap.dedent(
        f"""
        from airflow.providers.standard.operators.python import PythonOperator
        from airflow.providers.standard.sensors.date_time import DateTimeSensorAsync
        from airflow.sdk import DAG


        def _answer(**context):
            return {{"answer": 42, "run_id": context["run_id"]}}


        with DAG({dag_id!r}, schedule=None, catchup=False, tags=["e2e"]):
            wait = DateTimeSensorAsync(
                task_id="wait",
                target_time=(
                    "{{{{ (macros.datetime.utcnow() + macros.timedelta(seconds={wait_seconds}))"
                    ".isoformat() }}}}+00:00"
                ),
            )
            answer = PythonOperator(task_id="answer", python_callable=_answer)
            wait >> answer
        """
    )


def _wait_for_trigger_log(af: AirflowCluster, dag_id: str, run_id: str, job_id: int, timeout: float = 30):
    """The triggerer writes ``attempt=1.log.trigger.<job_id>.log`` once it starts the trigger."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in af.trigger_log_files(af.task_log_files(dag_id, run_id, "wait")):
            if path.name == f"attempt=1.log.trigger.{job_id}.log" and path.stat().st_size > 0:
                return path
        time.sleep(0.3)
    raise AssertionError(f"no trigger log for job {job_id}: {af.task_log_files(dag_id, run_id, 'wait')}")


def test_deferrable_sensor_runs_in_triggerer(airflow_cluster_factory):
    dag_id = "e2e_smoke_defer"
    t0 = time.monotonic()
    af = airflow_cluster_factory(dag_files={"smoke.py": _dag_source(dag_id, 6)})
    startup = time.monotonic() - t0
    print(f"\n[e2e] sqlite cluster ready in {startup:.1f}s, timings={af.timings}")

    run_id = af.trigger_dag(dag_id, conf={"hello": "world"})
    ti = af.wait_for_task_state(dag_id, run_id, "wait", "deferred", timeout=60)
    assert ti["try_number"] == 1

    triggerer_job = af.triggerer(0).job_id
    assert af.wait_for_trigger_assignment(dag_id, run_id, "wait") == 0
    row = af.trigger_of(dag_id, run_id, "wait")
    assert row is not None
    assert row["classpath"].endswith("DateTimeTrigger")
    assert row["triggerer_id"] == triggerer_job
    trigger_log = _wait_for_trigger_log(af, dag_id, run_id, triggerer_job)

    assert af.wait_for_run(dag_id, run_id, timeout=120) == "success"
    print(f"[e2e] run finished {time.monotonic() - t0 - startup:.1f}s after trigger")
    states = {t["task_id"]: (t["state"], t["try_number"], t["map_index"]) for t in af.task_instances(dag_id, run_id)}
    assert states == {"wait": ("success", 1, -1), "answer": ("success", 1, -1)}
    assert af.xcom(dag_id, run_id, "answer") == {"answer": 42, "run_id": run_id}
    assert af.dag_run(dag_id, run_id)["conf"] == {"hello": "world"}

    text = trigger_log.read_text()
    assert "Trigger fired event" in text
    files = af.task_log_files(dag_id, run_id, "wait")
    assert af.task_log_dir(dag_id, run_id, "wait") / "attempt=1.log" in files
    # the UI/API log view stitches worker and trigger logs together
    assert "Trigger fired event" in af.task_log_via_api(dag_id, run_id, "wait")

    # secrets the harness generated must never reach a log file
    logs = af.all_log_text()
    for secret in (af.password, af.jwt_secret, af.fernet_key, af.api_secret_key):
        assert secret not in logs

    # stop() leaves no process behind (task supervisors and TriggerRunner leave the groups)
    pids = [p.pid for p in af.processes.values()]
    af.stop()
    assert af.tagged_processes() == []
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie" for pid in pids)
    print(f"[e2e] stop took {af.timings['stop']:.1f}s")


def test_sigkilled_triggerer_is_replaced(airflow_cluster_factory):
    dag_id = "e2e_smoke_kill"
    t0 = time.monotonic()
    af = airflow_cluster_factory(dag_files={"kill.py": _dag_source(dag_id, 20)})
    print(f"\n[e2e] sqlite cluster ready in {time.monotonic() - t0:.1f}s, timings={af.timings}")
    run_id = af.trigger_dag(dag_id)
    af.wait_for_task_state(dag_id, run_id, "wait", "deferred", timeout=60)
    old_job = af.triggerer(0).job_id
    assert af.wait_for_trigger_assignment(dag_id, run_id, "wait") == 0
    _wait_for_trigger_log(af, dag_id, run_id, old_job)

    tree = [af.triggerer(0).pid, *(c.pid for c in psutil.Process(af.triggerer(0).pid).children(recursive=True))]
    assert len(tree) >= 2  # the triggerer and its TriggerRunner subprocess
    killed_at = time.monotonic()
    af.kill_triggerer(0, signal.SIGKILL)
    assert not af.triggerer(0).alive()
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in tree)

    new_index = af.start_triggerer()
    new_job = af.triggerer(new_index).job_id
    assert new_job != old_job
    assert af.wait_for_trigger_assignment(dag_id, run_id, "wait", timeout=60, exclude_job_ids=[old_job]) == new_index
    print(f"\n[e2e] replacement triggerer took the trigger {time.monotonic() - killed_at:.1f}s after kill")
    assert af.wait_for_run(dag_id, run_id, timeout=120) == "success"
    assert af.task_instance(dag_id, run_id, "wait")["try_number"] == 1
    assert af.xcom(dag_id, run_id, "answer")["answer"] == 42
    assert "Trigger fired event" in _wait_for_trigger_log(af, dag_id, run_id, new_job).read_text()


@pytest.mark.distributed
def test_postgres_two_triggerers_takeover(airflow_cluster_factory):
    dag_id = "e2e_smoke_ha"
    t0 = time.monotonic()
    af = airflow_cluster_factory(dag_files={"ha.py": _dag_source(dag_id, 20)}, backend="postgres", triggerers=2)
    print(f"\n[e2e] postgres cluster with 2 triggerers ready in {time.monotonic() - t0:.1f}s, {af.timings}")
    assert len({af.triggerer(0).job_id, af.triggerer(1).job_id}) == 2

    run_id = af.trigger_dag(dag_id)
    af.wait_for_task_state(dag_id, run_id, "wait", "deferred", timeout=60)
    holder = af.wait_for_trigger_assignment(dag_id, run_id, "wait")
    survivor = 1 - holder
    holder_job = af.triggerer(holder).job_id
    _wait_for_trigger_log(af, dag_id, run_id, holder_job)

    killed_at = time.monotonic()
    af.kill_triggerer(holder, signal.SIGKILL)
    assert af.wait_for_trigger_assignment(dag_id, run_id, "wait", timeout=60, exclude_job_ids=[holder_job]) == survivor
    takeover = time.monotonic() - killed_at
    print(f"[e2e] surviving triggerer took over after {takeover:.1f}s")
    assert takeover < af.triggerer_health_check_threshold + 15
    assert af.wait_for_run(dag_id, run_id, timeout=120) == "success"
    assert af.triggerer(survivor).alive()
    assert af.xcom(dag_id, run_id, "answer")["answer"] == 42
    survivor_log = _wait_for_trigger_log(af, dag_id, run_id, af.triggerer(survivor).job_id)
    assert "Trigger fired event" in survivor_log.read_text()
