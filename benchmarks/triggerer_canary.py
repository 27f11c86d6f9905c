"""Is a running flex task a good neighbour in the triggerer? A canary trigger measures it.

One Airflow triggerer runs every deferred task of a deployment on ONE asyncio event loop. Anything a
trigger does between two ``await`` (parsing 200 answers that arrived together, building an SSL
context, importing the SDK) makes every other trigger late. Airflow's own referee is the
triggerer's watchdog (``block_watchdog`` in ``airflow/jobs/triggerer_job_runner.py``): it sleeps
100 ms in a loop and logs "Triggerer's async thread was blocked for X seconds" (stat
``triggers.blocked_main_thread``) when a tick took longer than ``[triggerer]
blocked_main_thread_warning_threshold`` (default 0.2 s).

The canary does the same as the watchdog, on the same loop as the flex trigger: it sleeps 100 ms,
over and over, and records how late each wake-up is (lateness = elapsed - 0.1 s). It starts before
the flex trigger, so the moment the flex trigger starts (imports, client, store) is measured too.

Two modes:

* ``--mode inprocess`` (fast, ~1 min for the three C values): a fresh Python process per C, holding
  only what a triggerer holds before a flex trigger starts (``airflow.triggers.base`` and the
  trigger class), runs ``FlexTrigger(job).run()`` and the canary coroutine on one asyncio loop. No
  Airflow components; the connection comes from an ``AIRFLOW_CONN_*`` variable.
* ``--mode airflow`` (~2-4 min): a real Airflow 3.3 cluster (``tests/e2e/harness.py``: api-server,
  scheduler, dag-processor, triggerer on SQLite) with a canary DAG (a deferrable task whose trigger
  is :class:`CanaryTrigger`) and one flex DAG per C. The canary is deferred first; then the flex
  task runs at full speed in the same triggerer. Also counts the watchdog's warnings in the
  triggerer's log (threshold set to ``--threshold``, 0.15 s by default, so a warning is a tick more
  than 50 ms late).

The emulator runs as a separate process (``--latency L``, no jitter), as in the other benchmarks.
Lateness is reported over the flex trigger's whole run ("run"), and over its first 3 s
("start"). The CPU used by other processes on the machine is printed: figures from a busy machine
are worse, and tell you so.

    .venv/bin/python benchmarks/triggerer_canary.py                              # in-process, C=20,50,200
    .venv/bin/python benchmarks/triggerer_canary.py --mode airflow               # real triggerer
    .venv/bin/python benchmarks/triggerer_canary.py --mode both --concurrency 200 --n 3000
    .venv/bin/python benchmarks/triggerer_canary.py --engine-thread off          # the old way: engine on the loop

``--engine-thread on|off`` sets ``FLEX_PROVIDER_ENGINE_THREAD`` for the flex trigger (see
``flex_provider/triggers/flex.py``): ``on`` (the default) runs the engine on its own event loop in a
thread of the triggerer process, ``off`` runs it on the triggerer's loop (the behaviour before).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent

PERIOD_S = 0.1  # the watchdog's tick
START_WINDOW_S = 3.0  # "the moment the trigger starts": the first seconds of the flex trigger
BASELINE_S = 10.0  # C=0: the canary alone for this long (the machine's own noise)
API_KEY = "sk-canary-not-a-real-key"
CONN_ID = "flex_canary"
MODEL = "gpt-5-mini"


# -- the canary ------------------------------------------------------------------------------------
class Canary:
    """Sleeps ``period`` seconds in a loop and records each wake-up's lateness, like the watchdog."""

    def __init__(self, period: float = PERIOD_S) -> None:
        self.period = period
        self.samples: list[tuple[float, float]] = []  # (wall time of the wake-up, lateness s)
        self.stopped = False

    async def run(self) -> None:
        while not self.stopped:
            before = time.monotonic()
            await asyncio.sleep(self.period)
            elapsed = time.monotonic() - before
            self.samples.append((time.time(), elapsed - self.period))


class CanaryTrigger(BaseTrigger):
    """The canary as a trigger of its own (``--mode airflow``): it runs until ``stop_path`` exists,
    then writes its samples to ``samples_path`` (JSON) and fires. A file, not the event, carries
    the samples: events are logged whole and stored in the metadata database."""

    def __init__(self, samples_path: str, stop_path: str, period: float = PERIOD_S) -> None:
        super().__init__()
        self.samples_path = samples_path
        self.stop_path = stop_path
        self.period = period

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{__name__}.CanaryTrigger",
            {"samples_path": self.samples_path, "stop_path": self.stop_path, "period": self.period},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        import gc

        canary = Canary(self.period)
        gc_pauses = GcPauses()  # in the triggerer process: every collection, whichever thread
        gc.callbacks.append(gc_pauses)
        started = Path(self.samples_path).with_suffix(".started")
        await asyncio.to_thread(started.write_text, str(time.time()))
        task = asyncio.create_task(canary.run())
        stop = Path(self.stop_path)
        while not await asyncio.to_thread(stop.exists):
            await asyncio.sleep(0.5)
        canary.stopped = True
        await task
        gc.callbacks.remove(gc_pauses)
        heap = {"tracked": len(gc.get_objects()), "frozen": gc.get_freeze_count()}
        result = {"samples": canary.samples, "gc": gc_pauses.pauses, "heap": heap}
        await asyncio.to_thread(Path(self.samples_path).write_text, json.dumps(result))
        yield TriggerEvent({"ticks": len(canary.samples)})


# -- figures ---------------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def lateness_figures(samples: list[tuple[float, float]], start: float, end: float, threshold: float) -> dict[str, Any]:
    """Lateness (ms) of the wake-ups between ``start`` and ``end`` (wall times), and in the start window."""
    run = [late for t, late in samples if start <= t <= end + PERIOD_S]
    first = [late for t, late in samples if start <= t <= start + START_WINDOW_S]
    over = threshold - PERIOD_S  # a watchdog warning is a tick later than this
    return {
        "ticks": len(run),
        "p50_ms": percentile(run, 50) * 1000,
        "p99_ms": percentile(run, 99) * 1000,
        "max_ms": max(run, default=float("nan")) * 1000,
        "start_max_ms": max(first, default=float("nan")) * 1000,
        "late_50ms": sum(1 for x in run if x > 0.05),
        "over_threshold": sum(1 for x in run if x > over),
        "late_100ms": sum(1 for x in run if x > 0.1),  # what the default threshold (0.2 s) warns about
    }


def machine_busy_s() -> float:
    """Busy CPU seconds of the whole machine since boot (all cores), from /proc/stat."""
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            fields = [int(x) for x in handle.readline().split()[1:]]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq = (fields + [0] * 7)[:7]
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def write_items(path: Path, n: int) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for i in range(n):
            handle.write(json.dumps({"id": f"doc-{i}", "text": f"canary benchmark document {i}"}) + "\n")


def job_payload(work: Path, input_path: Path, concurrency: int) -> dict[str, Any]:
    """A flex job as the operator would hand it to the trigger (built in the parent, which may
    import the SDK: the measured child must start without it, like a triggerer)."""
    from flex_provider.engine.config import request_spec_from_dict, run_options_from_dict
    from flex_provider.job import FlexJob

    job = FlexJob(
        conn_id=CONN_ID,
        spec=request_spec_from_dict({"model": MODEL, "instructions": "Classify the document."}),
        options=run_options_from_dict(
            {"max_concurrency": concurrency, "progress_interval_s": 1.0, "retry": {"max_attempts": 3}}
        ),
        work_uri=work.as_uri(),
        output_uri=work.as_uri(),
        input_uri=input_path.as_uri(),
        input_label="input_path",
    )
    return job.to_payload()


# -- in-process mode -------------------------------------------------------------------------------
class GcPauses:
    """Every garbage collection in the process (any thread): wall time, duration, generation. A
    collection holds the GIL throughout, so a long one stalls the triggerer's loop whichever
    thread triggered it."""

    def __init__(self) -> None:
        self.pauses: list[tuple[float, float, int]] = []
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.pauses.append((time.time(), time.perf_counter() - self._start, info["generation"]))


async def _child_main(payload: dict[str, Any], warmup_s: float) -> dict[str, Any]:
    import gc

    from flex_provider.triggers.flex import FlexTrigger

    gc_pauses = GcPauses()
    gc.callbacks.append(gc_pauses)
    canary = Canary()
    watching = asyncio.create_task(canary.run())
    await asyncio.sleep(warmup_s)
    started = time.time()
    cpu0 = time.process_time()
    if payload is None:  # C=0: the canary alone
        await asyncio.sleep(BASELINE_S)
        events = [TriggerEvent({"status": "success", "succeeded": 0})]
    else:
        events = [event async for event in FlexTrigger(payload).run()]
    ended = time.time()
    cpu = time.process_time() - cpu0
    await asyncio.sleep(0.3)
    canary.stopped = True
    await watching
    gc.callbacks.remove(gc_pauses)
    return {
        "heap": {"tracked": len(gc.get_objects()), "frozen": gc.get_freeze_count()},
        "samples": canary.samples,
        "start": started,
        "end": ended,
        "event": events[0].payload,
        "cpu_s": cpu,
        "gc": gc_pauses.pauses,
    }


def run_child(args: argparse.Namespace) -> int:
    """``--child``: the measured process of ``--mode inprocess``."""
    spec = json.loads(Path(args.child).read_text())
    result = asyncio.run(_child_main(spec["payload"], spec["warmup_s"]))
    Path(spec["result_path"]).write_text(json.dumps(result))
    return 0


def diagnose(result: dict[str, Any]) -> None:
    """The latest wake-ups of a run, each with the garbage collections that overlapped it."""
    pauses = result["gc"]
    full = [p for p in pauses if p[2] == 2]
    print(f"  heap at the end: {result['heap']}")
    print(
        f"  gc: {len(pauses)} collections, {len(full)} of generation 2, longest "
        f"{max((p[1] for p in pauses), default=0) * 1000:.0f} ms, total {sum(p[1] for p in pauses) * 1000:.0f} ms"
    )
    for ended, took, generation in sorted(pauses, key=lambda p: -p[1])[:4]:
        print(f"  gc generation {generation} took {took * 1000:.0f} ms, ended at +{ended - result['start']:.2f} s")
    for woke, late in sorted(result["samples"], key=lambda s: -s[1])[:8]:
        began = woke - PERIOD_S - late
        inside = [p for p in pauses if p[0] - p[1] <= woke and p[0] >= began]  # overlapping the tick
        gc_ms = sum(p[1] for p in inside) * 1000
        print(
            f"  late {late * 1000:6.0f} ms at +{woke - result['start']:6.2f} s: {len(inside)} gc inside "
            f"({gc_ms:.0f} ms, generations {sorted({p[2] for p in inside})})"
        )


def measure_inprocess(base_url: str, concurrency: int, n: int, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    case = tmp / f"inproc-c{concurrency}-{time.monotonic_ns()}"
    case.mkdir()
    write_items(case / "items.jsonl", n)
    spec = {
        "payload": job_payload(case / "out", case / "items.jsonl", concurrency) if concurrency else None,
        "warmup_s": 1.0,
        "result_path": str(case / "result.json"),
    }
    (case / "spec.json").write_text(json.dumps(spec))
    env = {
        **os.environ,
        f"AIRFLOW_CONN_{CONN_ID.upper()}": json.dumps(
            {"conn_type": "openai_flex", "password": API_KEY, "host": base_url}
        ),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "FLEX_PROVIDER_ENGINE_THREAD": args.engine_thread,
        "FLEX_PROVIDER_GC_FREEZE": args.gc_freeze,
    }
    busy0, t0 = machine_busy_s(), time.monotonic()
    with (case / "child.log").open("wb") as out:  # the trigger's log lines: kept, not shown
        done = subprocess.run(
            [sys.executable, __file__, "--child", str(case / "spec.json")],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=args.run_timeout,
            check=False,
        )
    wall = time.monotonic() - t0
    if done.returncode != 0:
        raise RuntimeError(f"in-process child failed ({done.returncode}):\n{(case / 'child.log').read_text()[-3000:]}")
    result = json.loads((case / "result.json").read_text())
    event = result["event"]
    if event.get("status") != "success" or event.get("succeeded") != n:
        raise RuntimeError(f"flex run did not succeed: {event}")
    duration = result["end"] - result["start"]
    figures = lateness_figures(result["samples"], result["start"], result["end"], args.threshold)
    if args.diagnose:
        diagnose(result)
    return {
        "mode": "inprocess",
        "c": concurrency,
        "n": n,
        "items_per_s": n / duration,
        "duration_s": duration,
        "warnings": None,
        "other_cpu": max(0.0, (machine_busy_s() - busy0) - result["cpu_s"]) / wall,
        **figures,
    }


# -- real-triggerer mode ---------------------------------------------------------------------------
CANARY_DAG = "flex_canary_watch"

DAGS_SOURCE = '''"""DAGs of benchmarks/triggerer_canary.py: a canary deferrable task, and flex tasks at C={cs}."""
import datetime
import os

from airflow.sdk import DAG, BaseOperator

from flex_provider.operators.flex import FlexLLMOperator
from triggerer_canary import CanaryTrigger

DATA = os.environ["FLEX_CANARY_DATA"]


class CanaryOperator(BaseOperator):
    def execute(self, context):
        run_id = context["run_id"].replace(":", "_").replace("+", "_")
        self.defer(
            trigger=CanaryTrigger(f"{{DATA}}/canary-{{run_id}}.json", f"{{DATA}}/canary-{{run_id}}.stop"),
            method_name="done",
        )

    def done(self, context, event=None):
        return event


with DAG("{canary}", schedule=None, start_date=datetime.datetime(2025, 1, 1), catchup=False, max_active_runs=4):
    CanaryOperator(task_id="canary")

for c, n in {cases!r}:
    with DAG(f"flex_canary_c{{c}}", schedule=None, start_date=datetime.datetime(2025, 1, 1), catchup=False):
        FlexLLMOperator(
            task_id="enrich",
            conn_id="{conn}",
            model="{model}",
            instructions="Classify the document.",
            input_path=f"file://{{DATA}}/items-c{{c}}.jsonl",
            output_path=f"file://{{DATA}}/out-c{{c}}/{{{{ run_id }}}}",
            max_concurrency=c,
            progress_interval=1.0,
            deferrable=True,
        )
'''


def triggerer_warnings(text: str) -> list[float]:
    """The watchdog's warnings in a triggerer log: how long each blocked tick took (s)."""
    import re

    return [float(m) for m in re.findall(r"async thread was blocked for ([0-9.]+) seconds", text)]


def measure_airflow(base_url: str, cases: list[tuple[int, int]], args: argparse.Namespace, tmp: Path) -> list[dict]:
    sys.path.insert(0, str(ROOT / "tests" / "e2e"))
    from harness import AirflowCluster

    data = tmp / "data"
    dags = tmp / "dags"
    data.mkdir(parents=True)
    dags.mkdir(parents=True)
    flex_cases = [(c, n) for c, n in cases if c > 0]
    for c, n in flex_cases:
        write_items(data / f"items-c{c}.jsonl", n)
    (dags / "flex_canary_dags.py").write_text(
        DAGS_SOURCE.format(
            cs=",".join(str(c) for c, _ in flex_cases), canary=CANARY_DAG, cases=flex_cases, conn=CONN_ID, model=MODEL
        )
    )
    env = {
        "FLEX_CANARY_DATA": str(data),
        "FLEX_PROVIDER_ENGINE_THREAD": args.engine_thread,
        "FLEX_PROVIDER_GC_FREEZE": args.gc_freeze,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE), os.environ.get("PYTHONPATH", "")]),
        "AIRFLOW__TRIGGERER__BLOCKED_MAIN_THREAD_WARNING_THRESHOLD": str(args.threshold),
        "FLEX_PROVIDER_CHECKPOINT_ROOT": (tmp / "checkpoints").as_uri(),
    }
    rows = []
    cluster = AirflowCluster(home=tmp / "home", dags_folder=dags, env=env, parallelism=4)
    try:
        cluster.start(wait_for_dags=[CANARY_DAG, *(f"flex_canary_c{c}" for c, _ in flex_cases)])
        # In the metadata DB, not an AIRFLOW_CONN_* variable: the triggerer then reads it through its
        # supervisor, from the flex loop thread (Airflow bridges that call to its own loop).
        cluster.cli(
            "connections",
            "add",
            CONN_ID,
            "--conn-type",
            "openai_flex",
            "--conn-password",
            API_KEY,
            "--conn-host",
            base_url,
        )
        for dag_id in [CANARY_DAG, *(f"flex_canary_c{c}" for c, _ in flex_cases)]:
            cluster.unpause(dag_id)
        triggerer_log = cluster.triggerer(0).log_path
        for c, n in cases:
            canary_run = cluster.trigger_dag(CANARY_DAG)
            safe = canary_run.replace(":", "_").replace("+", "_")
            started_file = data / f"canary-{safe}.started"
            deadline = time.monotonic() + 120
            while not started_file.exists():
                if time.monotonic() > deadline:
                    raise RuntimeError("the canary trigger did not start")
                time.sleep(0.2)
            time.sleep(2.0)  # a quiet baseline before the flex trigger arrives
            log_offset = triggerer_log.stat().st_size
            busy0, t0 = machine_busy_s(), time.monotonic()
            if c == 0:  # the canary alone: the noise floor of this machine and triggerer
                start = time.time()
                time.sleep(BASELINE_S)
                end, state = time.time(), "success"
            else:
                flex_run = cluster.trigger_dag(f"flex_canary_c{c}")
                state = cluster.wait_for_run(f"flex_canary_c{c}", flex_run, timeout=args.run_timeout)
            wall = time.monotonic() - t0
            other_cpu = (machine_busy_s() - busy0) / wall  # includes Airflow's own processes here
            (data / f"canary-{safe}.stop").write_text("stop")
            if state != "success":
                raise RuntimeError(f"flex run C={c} ended {state}:\n{cluster.diagnostics()}")
            cluster.wait_for_run(CANARY_DAG, canary_run, timeout=60)
            canary = json.loads((data / f"canary-{safe}.json").read_text())
            samples = [(s[0], s[1]) for s in canary["samples"]]
            if c > 0:
                start, end = flex_trigger_window(cluster, f"flex_canary_c{c}", flex_run)
            if args.diagnose:
                diagnose({**canary, "start": start})
            with triggerer_log.open("rb") as handle:
                handle.seek(log_offset)
                warnings = triggerer_warnings(handle.read().decode("utf-8", "replace"))
            summary = cluster.xcom(f"flex_canary_c{c}", flex_run, "enrich") if c > 0 else {"succeeded": 0}
            if summary["succeeded"] != (n if c > 0 else 0):
                raise RuntimeError(f"flex run C={c}: {summary['succeeded']} of {n} succeeded")
            rows.append(
                {
                    "mode": "airflow",
                    "c": c,
                    "n": n if c > 0 else 0,
                    "items_per_s": (n if c > 0 else 0) / (end - start),
                    "duration_s": end - start,
                    "warnings": len(warnings),
                    "worst_warning_s": max(warnings, default=0.0),
                    "other_cpu": other_cpu,
                    **lateness_figures(samples, start, end, args.threshold),
                }
            )
            print(row_text(rows[-1]), flush=True)
    finally:
        cluster.stop()
    return rows


def flex_trigger_window(cluster: Any, dag_id: str, run_id: str) -> tuple[float, float]:
    """When the flex trigger ran in the triggerer (wall times): from its trigger log's first line
    to its last. Falls back to the task's start/end dates."""
    import datetime as dt

    stamps: list[float] = []
    for path in cluster.trigger_log_files(cluster.task_log_files(dag_id, run_id, "enrich")):
        for line in path.read_text(errors="replace").splitlines():
            try:
                stamp = json.loads(line).get("timestamp")
            except ValueError:
                continue
            if stamp:
                stamps.append(dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp())
    if stamps:
        return min(stamps), max(stamps)
    ti = cluster.task_instance(dag_id, run_id, "enrich")
    return (
        dt.datetime.fromisoformat(ti["start_date"]).timestamp(),
        dt.datetime.fromisoformat(ti["end_date"]).timestamp(),
    )


# -- output ----------------------------------------------------------------------------------------
HEADER = (
    "| mode | engine thread | gc freeze | C | N | items/s | canary p50 ms | p99 ms | max ms | start max ms | "
    "ticks > 50 ms | watchdog warnings | other CPU (cores) |"
)


def row_text(row: dict[str, Any]) -> str:
    warnings = "-" if row["warnings"] is None else f"{row['warnings']} (worst {row['worst_warning_s']:.2f} s)"
    share = 100 * row["late_50ms"] / max(1, row["ticks"])
    return (
        f"| {row['mode']} | {row.get('engine_thread', '')} | {row.get('gc_freeze', '')} | {row['c']} | {row['n']} | {row['items_per_s']:.0f} | "
        f"{row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {row['max_ms']:.0f} | {row['start_max_ms']:.0f} | "
        f"{row['late_50ms']}/{row['ticks']} ({share:.1f} %) | {warnings} | {row['other_cpu']:.2f} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("inprocess", "airflow", "both"), default="inprocess")
    parser.add_argument(
        "--concurrency",
        default="0,20,50,200",
        help=f"comma-separated C values; 0 = the canary alone for {BASELINE_S:.0f} s",
    )
    parser.add_argument("--n", type=int, default=None, help="items per run (default 15 x C: ~7.5 s at L=0.5)")
    parser.add_argument("--latency", type=float, default=0.5, help="emulator latency L (s)")
    parser.add_argument("--threshold", type=float, default=0.15, help="watchdog warning threshold (s)")
    parser.add_argument("--engine-thread", choices=("on", "off"), default="on")
    parser.add_argument("--gc-freeze", choices=("on", "off"), default="on")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--diagnose", action="store_true", help="print the latest ticks and the GC pauses")
    parser.add_argument("--run-timeout", type=float, default=600.0)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return run_child(args)

    sys.path.insert(0, str(HERE))
    from _common import machine_line, run_emulator

    concurrencies = [int(c) for c in args.concurrency.split(",") if c]
    cases = [(c, (args.n or 15 * c) if c > 0 else 0) for c in concurrencies]
    modes = ("inprocess", "airflow") if args.mode == "both" else (args.mode,)
    print(
        f"# {machine_line()}; L={args.latency} s, watchdog threshold {args.threshold} s, "
        f"FLEX_PROVIDER_ENGINE_THREAD={args.engine_thread}, FLEX_PROVIDER_GC_FREEZE={args.gc_freeze}",
        flush=True,
    )
    rows: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="flex-canary-") as tmp_name,
        run_emulator(args.latency, extra=["--api-key", API_KEY]) as emu,
    ):
        tmp = Path(tmp_name)
        for repeat in range(args.repeat):
            if "inprocess" in modes:
                for c, n in cases:
                    emu.reset()
                    row = {
                        **measure_inprocess(emu.base_url, c, n, args, tmp),
                        "engine_thread": args.engine_thread,
                        "gc_freeze": args.gc_freeze,
                    }
                    rows.append(row)
                    print(row_text(row), flush=True)
            if "airflow" in modes:
                emu.reset()
                for row in measure_airflow(emu.base_url, cases, args, tmp / f"airflow-{repeat}"):
                    row["engine_thread"] = args.engine_thread
                    row["gc_freeze"] = args.gc_freeze
                    rows.append(row)
    print("\nRows for the README:\n")
    print(HEADER)
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|---:|")
    for row in rows:
        print(row_text(row))
    print(
        f"\nlateness = how late each 100 ms wake-up of the canary was; 'start' = the flex trigger's first "
        f"{START_WINDOW_S:.0f} s; a watchdog warning = a tick longer than {args.threshold} s; "
        "other CPU = CPU of every other process on the machine (in airflow mode: Airflow's own too)."
    )
    print(f"rerun: {Path(sys.executable).name} benchmarks/triggerer_canary.py " + " ".join(argv or sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
