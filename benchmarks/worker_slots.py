"""Worker slots held by one deferrable FlexLLMOperator vs the official operator mapped over the same documents.

    .venv/bin/python benchmarks/worker_slots.py --docs 20                 # quick check (~2 min)
    .venv/bin/python benchmarks/worker_slots.py                           # N=500, L=2 s, P=8, C=50
    .venv/bin/python benchmarks/worker_slots.py --backend sqlite          # metadata DB in SQLite instead
    .venv/bin/python benchmarks/worker_slots.py --check --docs 5          # no cluster: parse the two DAGs (~5 s)

One real Airflow 3.3 cluster (``tests/e2e/harness.py``: api-server, scheduler, dag-processor, one
triggerer as separate processes, LocalExecutor with ``[core] parallelism = P``), one flex emulator
(in-process thread, ``latency_s=L``, jitter 20 %, API key checked), the same N documents (one JSONL
file, read by both DAG files), and two DAGs run one after the other on that cluster:

* A ``flex_bench_deferrable``: ONE ``FlexLLMOperator`` task (``input_path=`` the JSONL file,
  ``max_concurrency=C``, ``output_path=`` a temp folder). It validates, defers, the requests run
  in the triggerer, and it resumes on a worker to write the summary.
* B ``flex_bench_mapped``: ``OpenAIResponseOperator.partial(conn_id=..., model=...,
  response_kwargs={"service_tier": "flex", "instructions": ...}).expand(input_text=[N texts])``
  from ``apache-airflow-providers-openai``: one mapped task instance per document, each holding a
  worker slot (a LocalExecutor process) for the whole blocking ``responses.create`` call. Its
  connection is conn type ``openai`` with password = API key and host = base URL (``OpenAIHook``
  passes ``conn.host`` as ``base_url`` to ``OpenAI(...)``).

Both send the same model (``gpt-5-mini``), instructions and texts with ``service_tier="flex"``.

Measured per run
----------------
* wall time: dag run ``start_date`` -> ``end_date`` (REST API);
* worker-slot-seconds, two ways:
  - sampled: the benchmark polls ``GET .../taskInstances?state=running&state=deferred`` about every
    0.5 s and credits each TI seen ``running`` with the time elapsed since the previous poll
    (resolution ~ one poll interval per state change; deferred time is counted separately);
  - from dates: B = sum over TIs of ``end_date - start_date``. For A, Airflow keeps the TI's
    ``start_date`` across the deferral, so ``end_date - start_date`` includes the deferred time;
    the deferred interval is ``trigger.created_date`` (trigger row written when the task defers,
    captured while the TI is deferred) -> ``scheduled_when`` (``scheduled_dttm``, reset by the
    scheduler when the trigger event arrives), and running = total - deferred. That subtracts
    only the deferral itself, so the scheduled -> queued -> running wait after the resume stays in
    (a slight over-estimate for A);
* task instances: rows in the run's TI list;
* requests sent: the emulator's ``requests`` counter (``GET /emulator/stats``), reset before each run.

Note the slot a LocalExecutor worker really holds starts at ``queued`` (the worker process picks the
workload and starts the task supervisor), so both methods under-count B's slot occupancy a little.
``[core] parallelism`` bounds B: at best it needs N * L / P seconds. Everything is bounded by
``--run-timeout``; the cluster is stopped (and a PostgreSQL database dropped) in ``finally``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from harness import AirflowCluster, postgres_available, postgres_database  # noqa: E402

from flex_provider.emulator import EmulatorConfig, serve_in_thread  # noqa: E402

API_KEY = "sk-bench-slots-not-a-real-key"
MODEL = "gpt-5-mini"
INSTRUCTIONS = "Classify the document."
DAG_A = "flex_bench_deferrable"
DAG_B = "flex_bench_mapped"
OFFICIAL_CONN_ID = "openai_official"

DAG_A_SOURCE = '''"""Benchmark DAG A (benchmarks/worker_slots.py): one deferrable FlexLLMOperator over the documents."""
from airflow.sdk import DAG

from flex_provider.operators.flex import FlexLLMOperator

with DAG("{dag_id}", schedule=None, catchup=False):
    FlexLLMOperator(
        task_id="enrich",
        conn_id="openai_default",
        model="{model}",
        instructions="{instructions}",
        input_path="{input_path}",
        output_path="{output_path}/{{{{ run_id }}}}",
        max_concurrency={concurrency},
        progress_interval=5,
        deferrable=True,
    )
'''

DAG_B_SOURCE = '''"""Benchmark DAG B (benchmarks/worker_slots.py): the official operator mapped over the documents."""
import json

from airflow.providers.openai.operators.openai import OpenAIResponseOperator
from airflow.sdk import DAG

with open("{input_file}") as fh:
    TEXTS = [json.loads(line)["text"] for line in fh if line.strip()]

with DAG("{dag_id}", schedule=None, catchup=False):
    OpenAIResponseOperator.partial(
        task_id="respond",
        conn_id="{conn_id}",
        model="{model}",
        response_kwargs={{"service_tier": "flex", "instructions": "{instructions}"}},
    ).expand(input_text=TEXTS)
'''


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------
def parse_ts(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


def seconds(a: dt.datetime | None, b: dt.datetime | None) -> float | None:
    return (b - a).total_seconds() if a is not None and b is not None else None


def write_documents(path: Path, n: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        for i in range(n):
            text = f"Document {i}: customer writes that invoice {i} was charged twice and asks for a refund."
            fh.write(json.dumps({"id": f"doc-{i}", "text": text}) + "\n")


def write_dags(base: Path, n_docs: int, concurrency: int) -> Path:
    """The N documents (``base/data/docs.jsonl``) and the two benchmark DAG files; returns the DAGs folder."""
    docs = base / "data" / "docs.jsonl"
    write_documents(docs, n_docs)
    dags = base / "dags"
    dags.mkdir()
    fmt = {"model": MODEL, "instructions": INSTRUCTIONS}
    (dags / "flex_bench_deferrable.py").write_text(
        DAG_A_SOURCE.format(dag_id=DAG_A, input_path=docs.as_uri(), output_path=(base / "out").as_uri(),
                            concurrency=concurrency, **fmt)
    )
    (dags / "flex_bench_mapped.py").write_text(
        DAG_B_SOURCE.format(dag_id=DAG_B, input_file=str(docs), conn_id=OFFICIAL_CONN_ID, **fmt)
    )
    return dags


def check_dags(base: Path, dags: Path) -> int:
    """``--check``: parse both DAG files with Airflow's DagBag in a private AIRFLOW_HOME (no cluster,
    no emulator) and print what each holds; 0 if both import without errors."""
    os.environ["AIRFLOW_HOME"] = str(base / "home")
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(dags))
    for path, error in sorted(bag.import_errors.items()):
        print(f"# check: import error in {path}: {error}", file=sys.stderr)
    missing = sorted({DAG_A, DAG_B} - set(bag.dag_ids))
    for dag_id in (DAG_A, DAG_B):
        if dag_id in bag.dags:
            dag = bag.dags[dag_id]
            tasks = ", ".join(f"{t.task_id} ({type(t).__name__})" for t in dag.tasks)
            print(f"# check: {dag_id} parses: {tasks}", flush=True)
    ok = not bag.import_errors and not missing
    print("# check: ok" if ok else f"# check: FAILED; DAGs missing: {', '.join(missing) or 'none'}", flush=True)
    return 0 if ok else 1


def tis_in_states(af: AirflowCluster, dag_id: str, run_id: str, states: list[str]) -> list[dict[str, Any]]:
    """Task instances of the run in one of ``states`` (one REST call per 100 rows)."""
    out: list[dict[str, Any]] = []
    offset = 0
    while True:
        page = af.api(
            "GET",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances",
            params={"state": states, "limit": 100, "offset": offset},
        ).json()
        out.extend(page["task_instances"])
        offset += len(page["task_instances"])
        if not page["task_instances"] or offset >= page["total_entries"]:
            return out


def worker_parse_ms(af: AirflowCluster, dag_id: str, run_id: str) -> list[float]:
    """``dag_file_parse_ms`` of every "Worker startup parse complete" line in the run's task logs:
    each task process (each try, and each resume after a deferral) parses the DAG file first."""
    out: list[float] = []
    folder = af.logs_folder / f"dag_id={dag_id}" / f"run_id={run_id}"
    for path in folder.rglob("attempt=*.log"):
        if ".trigger." in path.name:
            continue
        for line in path.read_text(errors="replace").splitlines():
            if "Worker startup parse complete" in line:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    out.append(float(json.loads(line)["dag_file_parse_ms"]))
    return out


def machine_line() -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{platform.node()} | {os.cpu_count()} CPUs | Python {platform.python_version()} | load avg {load}"


# ------------------------------------------------------------------------------------------------
# one measured run
# ------------------------------------------------------------------------------------------------
def measure(af: AirflowCluster, emu: Any, dag_id: str, timeout: float, poll: float) -> dict[str, Any]:
    emu.reset()
    run_id = af.trigger_dag(dag_id)
    running_s: dict[tuple[str, int], float] = defaultdict(float)
    deferred_s: dict[tuple[str, int], float] = defaultdict(float)
    trigger_created: dict[tuple[str, int], dt.datetime] = {}
    max_running = 0
    samples = 0
    state = "queued"
    start = time.monotonic()
    prev = start
    last_report = start
    while True:
        t0 = time.monotonic()
        seen = tis_in_states(af, dag_id, run_id, ["running", "deferred"])
        now = (t0 + time.monotonic()) / 2  # the observation is credited at the call's midpoint
        step = now - prev
        prev = now
        samples += 1
        n_running = 0
        for ti in seen:
            key = (ti["task_id"], ti["map_index"])
            if ti["state"] == "running":
                running_s[key] += step
                n_running += 1
            elif ti["state"] == "deferred":
                deferred_s[key] += step
                trig = ti.get("trigger") or {}
                if key not in trigger_created and trig.get("created_date"):
                    trigger_created[key] = parse_ts(trig["created_date"])
        max_running = max(max_running, n_running)
        state = af.dag_run(dag_id, run_id)["state"]
        if state in ("success", "failed"):
            break
        if time.monotonic() - start > timeout:
            raise RuntimeError(f"{dag_id} run {run_id} still {state} after {timeout:.0f} s")
        if time.monotonic() - last_report >= 20:
            last_report = time.monotonic()
            done = emu.stats()["by_status"]
            print(
                f"  [{dag_id}] {time.monotonic() - start:5.0f} s: {n_running} running, "
                f"{sum(1 for t in seen if t['state'] == 'deferred')} deferred, emulator statuses {done}",
                file=sys.stderr,
                flush=True,
            )
        time.sleep(max(0.0, poll - (time.monotonic() - t0)))

    run = af.dag_run(dag_id, run_id)
    tis = af.task_instances(dag_id, run_id)
    stats = emu.stats()
    total_dates = 0.0
    running_dates = 0.0
    deferred_dates = 0.0
    missing_dates = 0
    for ti in tis:
        key = (ti["task_id"], ti["map_index"])
        start_d, end_d = parse_ts(ti.get("start_date")), parse_ts(ti.get("end_date"))
        total = seconds(start_d, end_d)
        if total is None:
            missing_dates += 1
            continue
        deferred = 0.0
        if key in trigger_created:
            resumed = parse_ts(ti.get("scheduled_when"))
            deferred = seconds(trigger_created[key], resumed) or 0.0
            if deferred < 0:  # should not happen; fall back to the sampled deferred time
                deferred = deferred_s[key]
        total_dates += total
        deferred_dates += deferred
        running_dates += total - deferred
    states: dict[str, int] = defaultdict(int)
    for ti in tis:
        states[ti["state"]] += 1
    result = {
        "dag_id": dag_id,
        "run_id": run_id,
        "state": run["state"],
        "wall_s": seconds(parse_ts(run.get("start_date")), parse_ts(run.get("end_date"))),
        "slot_s_sampled": sum(running_s.values()),
        "deferred_s_sampled": sum(deferred_s.values()),
        "slot_s_dates": running_dates,
        "ti_total_s_dates": total_dates,
        "deferred_s_dates": deferred_dates,
        "ti_missing_dates": missing_dates,
        "task_instances": len(tis),
        "ti_states": dict(states),
        "max_running_seen": max_running,
        "samples": samples,
        "requests": stats["requests"],
        "by_tier": stats["by_tier"],
        "by_status": stats["by_status"],
        "emulator_max_in_flight": stats["max_in_flight"],
    }
    parses = worker_parse_ms(af, dag_id, run_id)
    result["worker_dag_parses"] = len(parses)
    result["worker_dag_parse_s_total"] = sum(parses) / 1000
    result["worker_dag_parse_s_median"] = statistics.median(parses) / 1000 if parses else None
    if dag_id == DAG_A and run["state"] == "success":
        with contextlib.suppress(Exception):
            summary = af.xcom(dag_id, run_id, "enrich")
            result["summary"] = {k: summary.get(k) for k in ("total", "succeeded", "failed", "requests")}
    return result


# ------------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------------
def ratio(b: float | None, a: float | None) -> str:
    return f"{b / a:.1f}x" if a and b is not None else "n/a"


def table(a: dict[str, Any], b: dict[str, Any]) -> str:
    def f1(v: float | None) -> str:
        return f"{v:.1f}" if v is not None else "n/a"

    rows = [
        ("wall time (dag run start -> end), s", f1(a["wall_s"]), f1(b["wall_s"]), ratio(b["wall_s"], a["wall_s"])),
        (
            "worker-slot-seconds (sampled `running`, 0.5 s polls)",
            f1(a["slot_s_sampled"]),
            f1(b["slot_s_sampled"]),
            ratio(b["slot_s_sampled"], a["slot_s_sampled"]),
        ),
        (
            "worker-slot-seconds (TI dates, minus deferral for A)",
            f1(a["slot_s_dates"]),
            f1(b["slot_s_dates"]),
            ratio(b["slot_s_dates"], a["slot_s_dates"]),
        ),
        ("task instances", str(a["task_instances"]), str(b["task_instances"]),
         ratio(b["task_instances"], a["task_instances"])),
        ("requests sent (emulator)", str(a["requests"]), str(b["requests"]), ratio(b["requests"], a["requests"])),
    ]
    lines = [
        "| | FlexLLMOperator (deferrable) | OpenAIResponseOperator (mapped) | ratio B/A |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {name} | {va} | {vb} | {r} |" for name, va, vb, r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=500, help="documents (N)")
    parser.add_argument("--latency", type=float, default=2.0, help="emulator mean flex latency, s (L)")
    parser.add_argument("--jitter", type=float, default=0.2, help="emulator relative latency jitter")
    parser.add_argument("--parallelism", type=int, default=8, help="[core] parallelism of the LocalExecutor (P)")
    parser.add_argument("--concurrency", type=int, default=50, help="FlexLLMOperator max_concurrency (C)")
    parser.add_argument("--backend", choices=("auto", "postgres", "sqlite"), default="auto",
                        help="metadata DB; auto = PostgreSQL at 127.0.0.1:5432 if reachable, else SQLite")
    parser.add_argument("--poll", type=float, default=0.5, help="sampling interval, s")
    parser.add_argument("--run-timeout", type=float, default=1800.0, help="per DAG run, s")
    parser.add_argument("--only", choices=("A", "B"), help="run one side only (debugging)")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (logs, outputs)")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--check", action="store_true",
                        help="no cluster, no run: write the documents and both DAG files, parse them, exit")
    args = parser.parse_args(argv)

    if args.check:
        base = Path(tempfile.mkdtemp(prefix="flex-bench-slots-check-"))
        try:
            return check_dags(base, write_dags(base, args.docs, args.concurrency))
        finally:
            shutil.rmtree(base, ignore_errors=True)

    backend = args.backend
    if backend == "auto":
        backend = "postgres" if postgres_available() else "sqlite"
    elif backend == "postgres" and not postgres_available():
        parser.error("PostgreSQL at 127.0.0.1:5432 is not reachable")

    base = Path(tempfile.mkdtemp(prefix="flex-bench-slots-"))
    dags = write_dags(base, args.docs, args.concurrency)

    print(f"# worker slots: N={args.docs}, L={args.latency} s (jitter {args.jitter:.0%}), "
          f"LocalExecutor parallelism P={args.parallelism}, FlexLLMOperator max_concurrency C={args.concurrency}, "
          f"metadata DB {backend}", flush=True)
    print(f"# {machine_line()}", flush=True)
    print(f"# temp folder {base}", flush=True)

    results: dict[str, dict[str, Any]] = {}
    config = EmulatorConfig(api_key=API_KEY, latency_s=args.latency, latency_jitter=args.jitter, seed=0)
    with serve_in_thread(config) as emu, contextlib.ExitStack() as stack:
        env = {
            "AIRFLOW_CONN_OPENAI_DEFAULT": json.dumps(
                {"conn_type": "openai_flex", "password": API_KEY, "host": emu.base_url}
            ),
            f"AIRFLOW_CONN_{OFFICIAL_CONN_ID.upper()}": json.dumps(
                {"conn_type": "openai", "password": API_KEY, "host": emu.base_url}
            ),
            "FLEX_PROVIDER_CHECKPOINT_ROOT": (base / "checkpoints").as_uri(),
        }
        kwargs: dict[str, Any] = {}
        if backend == "postgres":
            kwargs = {"db_url": stack.enter_context(postgres_database()), "migrate": False}
        af = AirflowCluster(home=base / "home", dags_folder=dags, env=env, parallelism=args.parallelism,
                            startup_timeout=180, **kwargs)
        try:
            t0 = time.monotonic()
            af.start(wait_for_dags=[DAG_A, DAG_B])
            print(f"# cluster ready in {time.monotonic() - t0:.1f} s", flush=True)
            for side, dag_id in (("A", DAG_A), ("B", DAG_B)):
                if args.only and args.only != side:
                    continue
                print(f"# running {side}: {dag_id} ...", flush=True)
                res = measure(af, emu, dag_id, args.run_timeout, args.poll)
                results[side] = res
                print(f"# {side}: {json.dumps(res, default=str)}", flush=True)
                if res["state"] != "success":
                    print(af.diagnostics(lines=30), file=sys.stderr)
        except BaseException:
            with contextlib.suppress(Exception):
                print(af.diagnostics(lines=40), file=sys.stderr)
            raise
        finally:
            af.stop()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)

    if "A" in results and "B" in results:
        a, b = results["A"], results["B"]
        print()
        print(f"N={args.docs} documents, flex emulator latency {args.latency} s +/- {args.jitter:.0%}, "
              f"LocalExecutor parallelism {args.parallelism} (both runs, same cluster, {backend} metadata DB), "
              f"FlexLLMOperator max_concurrency {args.concurrency}; B best case N*L/P = "
              f"{args.docs * args.latency / args.parallelism:.0f} s.")
        print()
        print(table(a, b))
        print()
        print(f"A: TI running+deferred {a['ti_total_s_dates']:.1f} s, of which deferred {a['deferred_s_dates']:.1f} s "
              f"(sampled deferred {a['deferred_s_sampled']:.1f} s); emulator max in flight "
              f"{a['emulator_max_in_flight']}; summary {a.get('summary')}")
        for side, r in (("A", a), ("B", b)):
            print(f"{side}: {r['worker_dag_parses']} worker DAG-file parses, {r['worker_dag_parse_s_total']:.1f} s in total "
                  f"(median {r['worker_dag_parse_s_median'] or 0:.2f} s each), part of the worker-slot-seconds above")
        print(f"B: TI states {b['ti_states']}; max TIs seen running at once {b['max_running_seen']}; "
              f"emulator max in flight {b['emulator_max_in_flight']}; by tier {b['by_tier']}; "
              f"by status {b['by_status']}")
    ok = all(r["state"] == "success" for r in results.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
