"""Throughput through the Airflow path (operator -> FlexJob -> trigger -> engine) against the engine alone.

    .venv/bin/python benchmarks/airflow_path.py                         # N=3000 C=200 L=0.5 s: engine, dagtest, triggerer
    .venv/bin/python benchmarks/airflow_path.py --phases engine,job,dagtest --repeat 2
    .venv/bin/python benchmarks/airflow_path.py --phases engine,dagtest,dagtest-nofreeze --repeat 3   # A/B
    .venv/bin/python benchmarks/airflow_path.py --n 300 --c 50 --latency 0.2 --phases engine,dagtest   # small
    .venv/bin/python benchmarks/airflow_path.py --phases dagtest --profile /tmp/ap   # + cProfile of each child
    .venv/bin/python benchmarks/airflow_path.py --phases dagtest --pyspy /tmp/ap     # + py-spy raw samples

One emulator process (``python -m flex_provider.emulator``, latency ``--latency``, jitter 0) serves
every phase; the emulator is reset between phases. Every phase runs the same N prompts (a JSON Lines
file of ``{"id", "text"}``) with ``max_concurrency=C``:

* engine: ``FlexEngine`` directly in a fresh Python process, items prebuilt as ``WorkItem`` s (as
  ``throughput.py``'s engine phase), client from ``FlexHook.build_client(max_connections=C+16)``;
* job (opt-in): ``run_job(FlexJob(input_uri=...))`` in a fresh process: the job path the trigger
  runs (staged JSON Lines read and rendered by the feeder, metrics, ``RunLog``), without Airflow;
* dagtest: the real ``FlexLLMOperator`` (``deferrable=True``, ``input_path``, ``output_path``)
  through ``dag.test()`` in a fresh process: the task defers and Airflow runs the trigger inline;
* job-nofreeze, dagtest-nofreeze (opt-in): the same with ``FLEX_PROVIDER_GC_FREEZE=0`` (run_job's
  one-off ``gc.freeze()`` of the start-up heap off): the A/B of that change, interleaved;
* triggerer: the same operator on a real Airflow (api-server, scheduler, dag-processor, one
  triggerer; SQLite, LocalExecutor; ``tests/e2e/harness.py``): the trigger runs in the triggerer.

What is timed is the marginal time of the requests, without Airflow's start-up, DAG parsing,
validation, staging and finalisation: this process polls the emulator's ``/emulator/stats`` every
``--poll`` seconds, and the window runs from the first request the emulator saw (``responses.create``
arrivals) to the N-th answer (each end the midpoint of the two polls around it: +/- poll/2). From the
same polls: requests in flight (mean over the window; max is the emulator's own ``max_in_flight``)
and the CPU the client process(es) used inside the window (psutil: the child for engine/job/dagtest,
the triggerer's process tree for triggerer). Each phase is checked against the emulator's counters
(exactly N requests, all 200). Efficiency = items/s / (C / L); "ratio" = items/s / engine's items/s
of the same repeat. Also printed: the engine's own "in flight" from its progress lines (every 5 s,
while at least C items are left): workers holding an item, waiting for the network or for the event
loop alike, so it stays at C unless workers idle (a starved feeder, workers stuck behind
checkpoints), and, for the child phases, the GC passes inside the window (``gc.callbacks``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import datetime
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
# FLEX_BENCH_CODE (set by --code): the checkout whose flex_provider the phases run (before/after).
sys.path.insert(0, os.environ.get("FLEX_BENCH_CODE") or str(Path(__file__).resolve().parent.parent))

import psutil
from _common import ROOT, Emulator, machine_busy_s, machine_line, run_emulator

API_KEY = "sk-bench-not-a-real-key"
CONN_ID = "flex_bench"
PHASES = ("engine", "job", "dagtest", "triggerer", "job-nofreeze", "dagtest-nofreeze")
RESULT_PREFIX = "AIRFLOW_PATH_RESULT "

DAG_SOURCE = """\
import datetime
from airflow.sdk import DAG
from flex_provider.operators.flex import FlexLLMOperator

with DAG({dag_id!r}, schedule=None, start_date=datetime.datetime(2025, 1, 1), catchup=False) as dag:
    FlexLLMOperator(task_id="enrich", conn_id={conn!r}, model={model!r}, input_path={input_uri!r},
                    output_path={out!r} + "/{{{{ run_id }}}}", max_concurrency={c}, deferrable=True)
"""


def prompts(n: int) -> list[dict[str, str]]:
    """The same texts as ``throughput.py``, as JSON Lines items."""
    return [
        {
            "id": f"ticket-{i}",
            "text": f"Classify this support ticket #{i}: my invoice {i} is wrong, the amount charged is too high.",
        }
        for i in range(n)
    ]


# -- children: one fresh process per phase run ----------------------------------------------------
def _progress_logger() -> Any:
    """The engine's INFO lines (start, a progress line every 5 s) to stdout, as Airflow shows them."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return logging.getLogger("flex_provider.bench")


def _report(payload: dict[str, Any]) -> None:
    print(RESULT_PREFIX + json.dumps(payload), flush=True)


async def _child_engine(args: argparse.Namespace) -> int:
    from flex_provider.engine import FlexEngine, PromptBuilder, RequestSpec, ResultStore, RunOptions
    from flex_provider.hooks.flex import ClientSettings, FlexHook

    builder = PromptBuilder()
    with open(args.input, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    items = [builder.build(row, f"items[{i}]") for i, row in enumerate(rows)]
    client = FlexHook.build_client(ClientSettings(API_KEY, args.base_url), max_connections=args.c + 16)
    async with client:
        engine = FlexEngine(
            client,
            RequestSpec(model=args.model),
            RunOptions(max_concurrency=args.c),
            ResultStore(Path(args.out)),
            logger=_progress_logger(),
        )
        summary = await engine.run(items, total=len(items))
    return int(summary["succeeded"])


async def _child_job(args: argparse.Namespace) -> int:
    from flex_provider.engine import RequestSpec, RunOptions
    from flex_provider.hooks.flex import ClientSettings
    from flex_provider.job import FlexJob, run_job

    job = FlexJob(
        conn_id=CONN_ID,
        spec=RequestSpec(model=args.model),
        options=RunOptions(max_concurrency=args.c),
        work_uri=Path(args.out).as_uri(),
        output_uri=Path(args.out).as_uri(),
        input_uri=Path(args.input).as_uri(),
        input_label="input_path",
        template_context={"dag_id": "bench", "task_id": "enrich"},
    )
    job.total = job.validate_input()
    event = await run_job(job, _progress_logger(), settings=ClientSettings(API_KEY, args.base_url))
    if event.status != "success":
        raise RuntimeError(f"job: {event}")
    return int(event.succeeded or 0)


def _child_dagtest(args: argparse.Namespace) -> int:
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_dag", args.dag_file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    run = module.dag.test()
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    if states != {"enrich": "success"}:
        raise RuntimeError(f"dag.test: task states {states}")
    return args.n


class GcLog:
    """Every collection of the cyclic GC in this process: (monotonic start, seconds, generation).
    ``time.monotonic`` is CLOCK_MONOTONIC, the same clock in every process: the parent sums what
    fell inside its window."""

    def __init__(self) -> None:
        self.events: list[tuple[float, float, int]] = []
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._start = time.monotonic()
        else:
            self.events.append((self._start, time.monotonic() - self._start, info["generation"]))


def child_main(args: argparse.Namespace) -> int:
    import gc

    gc_log = GcLog()
    gc.callbacks.append(gc_log)

    def work() -> int:
        if args.child == "engine":
            return asyncio.run(_child_engine(args))
        if args.child == "job":
            return asyncio.run(_child_job(args))
        return _child_dagtest(args)

    if args.profile_to:
        profiler = cProfile.Profile()
        done = profiler.runcall(work)
        profiler.dump_stats(args.profile_to)
    else:
        done = work()
    gc.callbacks.remove(gc_log)
    _report({"done": done, "gc": gc_log.events, "objects": len(gc.get_objects())})
    return 0


# -- the parent: emulator, polling, phases ----------------------------------------------------------
@dataclass
class Sample:
    t: float
    arrived: int  # responses.create requests the emulator received
    answered: int  # ... and finished (any status)
    in_flight: int
    cpu: float  # CPU seconds of the watched processes (cumulative)
    groups: dict[str, float]  # CPU seconds of other process groups (emulator, Airflow components)


@dataclass
class Watch:
    """Polls the emulator (and the CPU of the processes under test) in a thread."""

    emu: Emulator
    period: float
    procs: Callable[[], list[psutil.Process]]
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    groups: dict[str, Callable[[], list[psutil.Process]]] = field(default_factory=dict)
    _cpu_seen: dict[int, float] = field(default_factory=dict)

    def _cpu(self, procs: list[psutil.Process]) -> float:
        """Cumulative CPU of ``procs`` (a process that exited keeps its last reading)."""
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                self._cpu_seen[proc.pid] = times.user + times.system
        return sum(self._cpu_seen.get(proc.pid, 0.0) for proc in procs)

    def _loop(self) -> None:
        while not self._stop.is_set():
            t = time.monotonic()
            with contextlib.suppress(Exception):
                stats = self.emu.stats()
                self.samples.append(
                    Sample(
                        t,
                        stats["by_endpoint"].get("responses.create", 0),
                        stats["requests"],
                        stats["in_flight"],
                        self._cpu(self.procs()),
                        {name: self._cpu(procs()) for name, procs in self.groups.items()},
                    )
                )
            self._stop.wait(max(0.0, self.period - (time.monotonic() - t)))

    def __enter__(self) -> Watch:
        self._thread = threading.Thread(target=self._loop, name="emulator-watch", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def window(self, n: int) -> tuple[float, float, float, float, dict[str, float]]:
        """(start, end, mean in flight, CPU seconds, CPU seconds of each group) of the requests:
        first arrival to N-th answer."""
        s = self.samples
        first = next((i for i, x in enumerate(s) if x.arrived > 0), None)
        last = next((i for i, x in enumerate(s) if x.answered >= n), None)
        if first is None or last is None or first == 0:
            raise RuntimeError("the watch missed the start or the end of the requests")
        start = (s[first - 1].t + s[first].t) / 2
        end = (s[last - 1].t + s[last].t) / 2
        inside = s[first:last] or [s[first]]
        mean_in_flight = statistics.fmean(x.in_flight for x in inside)
        cpu = (s[last].cpu + s[last - 1].cpu) / 2 - (s[first].cpu + s[first - 1].cpu) / 2
        groups = {
            name: (s[last].groups[name] + s[last - 1].groups[name]) / 2
            - (s[first].groups[name] + s[first - 1].groups[name]) / 2
            for name in s[first].groups
        }
        return start, end, mean_in_flight, cpu, groups


def _child_env(home: Path, dags: Path, base_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        {
            "PYTHONPATH": os.pathsep.join(
                filter(None, [os.environ.get("FLEX_BENCH_CODE") or str(ROOT), os.environ.get("PYTHONPATH")])
            ),
            "PYTHONUNBUFFERED": "1",
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            f"AIRFLOW_CONN_{CONN_ID.upper()}": _conn_json(base_url),
        }
    )
    return env


def _conn_json(base_url: str) -> str:
    return json.dumps({"conn_type": "openai_flex", "password": API_KEY, "host": base_url})


def _harness() -> Any:
    sys.path.insert(0, str(ROOT / "tests" / "e2e"))
    import harness  # the project's way to start a real Airflow (tests/e2e/harness.py)

    return harness


@dataclass
class Bench:
    args: argparse.Namespace
    emu: Emulator
    tmp: Path
    input_path: Path
    home: Path
    dags: Path
    runs: int = 0

    def _measure(
        self,
        name: str,
        start: Callable[[Watch], Callable[[], dict[str, Any]]],
        procs_of: list,
        groups: dict[str, Callable[[], list[psutil.Process]]] | None = None,
    ) -> dict[str, Any]:
        """Reset the emulator, start the phase (``start`` returns a function waiting for its end)."""
        self.emu.reset()
        busy0, _ = machine_busy_s()
        emu_cpu0, t0 = self.emu.cpu_s(), time.monotonic()
        emu_procs = [self.emu.ps]
        groups = {"emulator": lambda: emu_procs, **(groups or {})}
        with Watch(self.emu, self.args.poll, lambda: procs_of, groups=groups) as watch:
            wait = start(watch)
            child = wait()
        wall = time.monotonic() - t0
        busy1, _ = machine_busy_s()
        stats = self.emu.stats()
        n = self.args.n
        if stats["by_endpoint"].get("responses.create", 0) != n or stats["by_status"].get("200", 0) != n:
            raise RuntimeError(f"{name}: emulator saw {stats['by_endpoint']} requests, statuses {stats['by_status']}")
        w0, w1, mean_in_flight, cpu, group_cpu = watch.window(n)
        marginal = w1 - w0
        gc_events = [e for e in (child or {}).get("gc", []) if w0 <= e[0] <= w1]
        ips = n / marginal
        emu_cpu = self.emu.cpu_s() - emu_cpu0
        return {
            "phase": name,
            "marginal_s": marginal,
            "items_s": ips,
            "eff": ips / (self.args.c / self.args.latency),
            "max_in_flight": stats["max_in_flight"],
            "mean_in_flight": mean_in_flight,
            "cpu_per_1k": cpu / n * 1000,
            "cpu_util": cpu / marginal,
            "wall_s": wall,
            "machine_cores": (busy1 - busy0) / wall,
            "emu_cpu_per_1k": emu_cpu / n * 1000,
            "gc_s": sum(e[1] for e in gc_events) if child and "gc" in child else None,  # child phases only
            "gc_full": sum(1 for e in gc_events if e[2] == 2),
            "gc_max_ms": max((e[1] for e in gc_events), default=0.0) * 1000,
            "objects": (child or {}).get("objects"),
            "engine_in_flight": (child or {}).get("engine_in_flight") or [],
            "group_cores": {k: v / marginal for k, v in group_cpu.items()},
        }

    def _child(
        self, mode: str, watch_procs: list, extra: list[str], env: dict[str, str] | None = None
    ) -> Callable[[Watch], Callable[[], None]]:
        self.runs += 1
        out = self.tmp / f"out-{mode}-{self.runs}"
        log = self.tmp / f"{mode}-{self.runs}.log"
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            mode,
            "--n",
            str(self.args.n),
            "--c",
            str(self.args.c),
            "--model",
            self.args.model,
            "--base-url",
            self.emu.base_url,
            "--input",
            str(self.input_path),
            "--out",
            str(out),
            *extra,
        ]
        if self.args.profile:
            self.args.profile.mkdir(parents=True, exist_ok=True)
            cmd += ["--profile-to", str(self.args.profile / f"{mode}-{self.runs}.prof")]
        if self.args.pyspy:
            self.args.pyspy.mkdir(parents=True, exist_ok=True)
            spy = Path(sys.executable).with_name("py-spy")
            cmd = [str(spy), "record", "--format", "raw", "-r", "200", "--gil", "-o",
                   str(self.args.pyspy / f"{mode}-{self.runs}.txt"), "--", *cmd]  # fmt: skip

        def start(watch: Watch) -> Callable[[], None]:
            handle = open(log, "w", encoding="utf-8")  # noqa: SIM115 - closed in wait()
            proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env={**_child_env(self.home, self.dags, self.emu.base_url), **(env or {})},
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            ps = psutil.Process(proc.pid)
            watch_procs[:] = [ps]

            def wait() -> dict[str, Any]:
                try:
                    deadline = time.monotonic() + self.args.phase_timeout
                    while proc.poll() is None:
                        if time.monotonic() > deadline:
                            raise RuntimeError(f"{mode} did not finish in {self.args.phase_timeout} s (log {log})")
                        with contextlib.suppress(psutil.Error):  # py-spy: the python child is a grandchild
                            watch_procs[:] = [ps, *ps.children(recursive=True)]
                        time.sleep(0.05)
                finally:
                    if proc.poll() is None:
                        os.killpg(proc.pid, 9)
                        proc.wait()
                    handle.close()
                text = log.read_text(errors="replace")
                if proc.returncode != 0 or RESULT_PREFIX not in text:
                    raise RuntimeError(f"{mode} exited {proc.returncode}; log {log}:\n{text[-4000:]}")
                line = next(x for x in text.splitlines() if x.startswith(RESULT_PREFIX))
                return {
                    **json.loads(line[len(RESULT_PREFIX) :]),
                    "engine_in_flight": _engine_in_flight(text, self.args.c),
                }

            return wait

        return start

    def dag_file(self, name: str) -> Path:
        path = self.dags / f"{name}.py"
        path.write_text(
            DAG_SOURCE.format(
                dag_id=name,
                conn=CONN_ID,
                model=self.args.model,
                input_uri=self.input_path.as_uri(),
                out=(self.tmp / f"out-{name}").as_uri(),
                c=self.args.c,
            )
        )
        return path

    def phase(self, name: str, cluster: Any = None) -> dict[str, Any]:
        procs: list = []
        if name.endswith("-nofreeze"):  # the same run with run_job's gc.freeze() turned off (A/B)
            mode = name.removesuffix("-nofreeze")
            extra = ["--dag-file", str(self.dag_file("bench_dagtest"))] if mode == "dagtest" else []
            return self._measure(name, self._child(mode, procs, extra, {"FLEX_PROVIDER_GC_FREEZE": "0"}), procs)
        if name in ("engine", "job"):
            return self._measure(name, self._child(name, procs, []), procs)
        if name == "dagtest":
            return self._measure(
                name, self._child("dagtest", procs, ["--dag-file", str(self.dag_file("bench_dagtest"))]), procs
            )
        return self._measure(name, self._cluster_start(cluster, procs), procs, _component_groups(cluster))

    def _cluster_start(self, af: Any, procs: list) -> Callable[[Watch], Callable[[], None]]:
        def start(watch: Watch) -> Callable[[], None]:
            triggerer = psutil.Process(af.triggerer(0).pid)
            procs[:] = [triggerer, *triggerer.children(recursive=True)]
            run_id = af.trigger_dag("bench_triggerer")
            self.runs += 1
            spy = _spy_tree(self.args.pyspy, triggerer, f"triggerer-{self.runs}")

            def wait() -> dict[str, Any]:
                try:
                    return finish()
                finally:
                    if spy is not None:
                        spy.send_signal(2)  # py-spy writes its file on SIGINT
                        spy.wait(timeout=60)

            def finish() -> dict[str, Any]:
                deadline = time.monotonic() + self.args.phase_timeout
                while True:
                    with contextlib.suppress(psutil.Error):
                        procs[:] = [triggerer, *triggerer.children(recursive=True)]
                    state = af.dag_run("bench_triggerer", run_id)["state"]
                    if state in ("success", "failed"):
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"triggerer run not finished in {self.args.phase_timeout} s")
                    time.sleep(0.5)
                if state != "success":
                    raise RuntimeError(f"triggerer run {state}: {af.diagnostics()}")
                logs = af.trigger_log_files(af.task_log_files("bench_triggerer", run_id, "enrich"))
                return {
                    "engine_in_flight": _engine_in_flight(
                        "".join(p.read_text(errors="replace") for p in logs), self.args.c
                    )
                }

            return wait

        return start


def _spy_tree(folder: Path | None, triggerer: psutil.Process, name: str) -> subprocess.Popen[bytes] | None:
    """``--pyspy``: attach py-spy to the triggerer and its children (the TriggerRunner among them)."""
    if not folder:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    spy = Path(sys.executable).with_name("py-spy")
    out = folder / f"{name}.txt"
    cmd = [str(spy), "record", "--format", "raw", "-r", "200", "--gil", "--subprocesses", "-o", str(out)]
    cmd += ["--pid", str(triggerer.pid)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def _component_groups(af: Any) -> dict[str, Callable[[], list[psutil.Process]]]:
    """CPU groups of a cluster: the triggerer's own process (supervisor: DB, heartbeats, logs), its
    TriggerRunner child (the event loop running the trigger), and every other component's tree."""
    trig_pid = af.triggerer(0).pid

    def supervisor() -> list[psutil.Process]:
        return _tree(trig_pid)[:1]

    def runner() -> list[psutil.Process]:
        return _tree(trig_pid)[1:]

    groups: dict[str, Callable[[], list[psutil.Process]]] = {
        "triggerer-supervisor": supervisor,
        "trigger-runner": runner,
    }
    for name, comp in af.processes.items():
        if not name.startswith("triggerer"):
            groups[name] = lambda pid=comp.pid: _tree(pid)
    return groups


_PROGRESS = re.compile(r"flex progress: done ([\d,]+)/([\d,]+) .*?in flight (\d+)")


def _engine_in_flight(log_text: str, c: int) -> list[int]:
    """The engine's own "in flight" (workers holding an item) at each progress line that still had
    at least ``c`` items to do (near the end fewer than ``c`` are left, and so in flight)."""
    number = lambda text: int(text.replace(",", ""))  # noqa: E731
    return [int(m[3]) for m in _PROGRESS.finditer(log_text) if number(m[2]) - number(m[1]) >= c]


def print_row(r: dict[str, Any], ratio: float | None) -> None:
    ratio_text = f" | ratio to engine {ratio:.2f}" if ratio is not None else ""
    gc_text = (
        f" | GC in window {r['gc_s']:.2f} s ({r['gc_full']} full, longest {r['gc_max_ms']:.0f} ms; "
        f"{r['objects']:,} objects at exit)"
        if r["gc_s"] is not None
        else ""
    )
    engine_text = f" | engine in flight at progress lines {r['engine_in_flight']}" if r["engine_in_flight"] else ""
    print(
        f"  {r['phase']:<10} marginal {r['marginal_s']:6.2f} s | {r['items_s']:7.1f} items/s | efficiency "
        f"{r['eff']:.3f}{ratio_text} | in flight mean {r['mean_in_flight']:5.1f} max {r['max_in_flight']}{engine_text} | "
        f"client CPU {r['cpu_per_1k']:.2f} s/1k req ({r['cpu_util'] * 100:.0f}% of a core) | phase wall "
        f"{r['wall_s']:.1f} s{gc_text} | cores used in window: "
        + ", ".join(f"{k} {v:.2f}" for k, v in r["group_cores"].items())
        + f" | machine {r['machine_cores']:.2f} cores busy | load1 {os.getloadavg()[0]:.2f}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--c", "--concurrency", dest="c", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.5, help="emulator flex latency in seconds (jitter 0)")
    parser.add_argument("--model", default="gpt-5-mini")
    parser.add_argument("--phases", default="engine,dagtest,triggerer", help=f"comma list of {', '.join(PHASES)}")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--poll", type=float, default=0.1, help="emulator stats poll period (s)")
    parser.add_argument("--phase-timeout", type=float, default=600.0)
    parser.add_argument("--profile", type=Path, default=None, help="folder: cProfile each child (inflates CPU)")
    parser.add_argument(
        "--airflow-db", type=Path, default=None, help="a migrated Airflow SQLite file to copy (default: migrate one)"
    )
    parser.add_argument(
        "--code", type=Path, default=None, help="a checkout whose flex_provider the phases run (e.g. an older commit)"
    )
    parser.add_argument("--pyspy", type=Path, default=None, help="folder: py-spy record --gil --format raw each child")
    # internal: one phase in a fresh process
    parser.add_argument("--child", choices=("engine", "job", "dagtest"), help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--dag-file", help=argparse.SUPPRESS)
    parser.add_argument("--profile-to", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args)
    if args.code:
        os.environ["FLEX_BENCH_CODE"] = str(args.code.resolve())  # children and Airflow components
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = set(phases) - set(PHASES)
    if unknown:
        parser.error(f"unknown phase(s) {sorted(unknown)}")
    if args.latency <= 0:
        parser.error("--latency must be > 0 (efficiency is relative to C/L)")
    print(
        f"flex Airflow-path benchmark {datetime.datetime.now().isoformat(timespec='seconds')}: N={args.n} "
        f"C={args.c} L={args.latency}s model={args.model} phases={','.join(phases)} repeat={args.repeat} "
        f"code={args.code or ROOT}; "
        f"{machine_line()}"
    )
    ideal = args.c / args.latency
    print(f"ideal rate C/L = {ideal:.0f} items/s; ideal marginal time = {args.n / ideal:.2f} s (+ one latency)")
    results: dict[str, list[dict[str, Any]]] = {p: [] for p in phases}
    with run_emulator(args.latency) as emu, tempfile.TemporaryDirectory(prefix="flex-airflow-path-") as tmp_name:
        tmp = Path(tmp_name)
        input_path = tmp / "input.jsonl"
        input_path.write_text("".join(json.dumps(row) + "\n" for row in prompts(args.n)), encoding="utf-8")
        home, dags = tmp / "home", tmp / "dags"
        home.mkdir()
        dags.mkdir()
        bench = Bench(args, emu, tmp, input_path, home, dags)
        if {"dagtest", "dagtest-nofreeze"} & set(phases):
            shutil.copyfile(args.airflow_db or _harness().sqlite_template(), home / "airflow.db")
        with contextlib.ExitStack() as stack:
            cluster = None
            if "triggerer" in phases:
                bench.dag_file("bench_triggerer")
                t0 = time.monotonic()
                cluster = _harness().AirflowCluster(
                    home=tmp / "cluster",
                    dags_folder=dags,
                    env={
                        f"AIRFLOW_CONN_{CONN_ID.upper()}": _conn_json(emu.base_url),
                        "PYTHONPATH": _child_env(home, dags, emu.base_url)["PYTHONPATH"],
                    },
                )
                stack.enter_context(cluster)
                print(f"Airflow cluster ready in {time.monotonic() - t0:.1f} s (not measured)", flush=True)
            for run in range(args.repeat):
                print(f"run {run + 1}/{args.repeat}", flush=True)
                engine_ips = None
                for name in phases:
                    r = bench.phase(name, cluster)
                    results[name].append(r)
                    if name == "engine":
                        engine_ips = r["items_s"]
                    r["ratio"] = r["items_s"] / engine_ips if engine_ips and name != "engine" else None
                    print_row(r, r["ratio"])

    print("\nsummary (mean over runs)")
    for name in phases:
        rs = results[name]
        ratios = [r["ratio"] for r in rs if r["ratio"] is not None]
        print(
            f"  {name:<10} items/s {statistics.fmean(r['items_s'] for r in rs):6.1f} | efficiency "
            f"{statistics.fmean(r['eff'] for r in rs):.3f} | in flight mean "
            f"{statistics.fmean(r['mean_in_flight'] for r in rs):.0f} max {max(r['max_in_flight'] for r in rs)}"
            + (
                f" | ratio to engine {statistics.fmean(ratios):.2f} ({', '.join(f'{x:.2f}' for x in ratios)})"
                if ratios
                else ""
            )
        )
    print("\nREADME rows:")
    print(
        "| date | N | C | L (s) | phase | items/s | efficiency | ratio to engine | in flight mean/max | client CPU s/1k | machine cores busy |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    today = datetime.date.today().isoformat()
    for name in phases:
        rs = results[name]
        print(
            f"| {today} | {args.n} | {args.c} | {args.latency} | {name} | "
            + " / ".join(f"{r['items_s']:.0f}" for r in rs)
            + " | "
            + " / ".join(f"{r['eff']:.2f}" for r in rs)
            + " | "
            + " / ".join("—" if r["ratio"] is None else f"{r['ratio']:.2f}" for r in rs)
            + " | "
            + " / ".join(f"{r['mean_in_flight']:.0f}/{r['max_in_flight']}" for r in rs)
            + " | "
            + " / ".join(f"{r['cpu_per_1k']:.2f}" for r in rs)
            + " | "
            + " / ".join(f"{r['machine_cores']:.2f}" for r in rs)
            + " |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
