"""Throughput and CPU cost of the engine against the bare-SDK floor, on the flex emulator.

    .venv/bin/python benchmarks/throughput.py                      # N=5000, C=200, L=0.5 s, 2 repeats
    .venv/bin/python benchmarks/throughput.py --repeat 3 --phases floor,engine,engine-sharded
    .venv/bin/python benchmarks/throughput.py --pin                # emulator on core 1, benchmark on core 0
    .venv/bin/python benchmarks/throughput.py --gc-freeze          # gc.freeze() after imports (diagnostic)
    .venv/bin/python benchmarks/throughput.py --profile /tmp/prof  # + one cProfile'd run of each phase

The emulator runs as a separate process (``python -m flex_provider.emulator``, fixed latency,
``--latency-jitter 0``), unpinned unless ``--pin``, on loopback. Against the same emulator, this
process runs, in turn and ``--repeat`` times (phases interleaved so drift hits all of them alike):

* floor: a bare ``AsyncOpenAI(max_retries=0)`` (SDK default pool) + ``asyncio.Semaphore(C)`` +
  ``asyncio.gather`` sending N ``responses.create(..., service_tier="flex")``, keeping ``output_text``;
* engine: ``FlexEngine`` (client from ``FlexHook.build_client`` with ``max_connections=C+16``, as the
  trigger builds it) over the same N items, writing part files to a temp folder through
  ``ResultStore(pathlib.Path)``;
* engine-sharded (opt-in): the same engine over a benchmark-side wrapper that spreads requests over
  ``--shards`` AsyncOpenAI clients (one connection pool each): the measurement behind a proposal.

Importing Airflow turns on INFO logging, which would make httpx log every request of the floor;
``FlexHook.quiet_http_logs()`` is applied first, as the engine's client builder does.

For each: items/s, efficiency = (items/s) / (C / L), CPU seconds per 1,000 requests of this process
(``time.process_time``, all threads) and of the emulator process (psutil), wall time, peak RSS (sampled
every 0.1 s, and ru_maxrss), time in the garbage collector, and the CPU used by every other process
on the machine (from /proc/stat) so a noisy run can be recognised. Each phase is checked against the
emulator's own counters (exactly N requests, N x 200). The run is bounded: every phase has a
wall-clock limit (``--phase-timeout``) and the emulator is killed in ``finally``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import datetime
import gc
import io
import itertools
import logging
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import GcTimer, RssSampler, machine_busy_s, machine_line, maxrss_mb, pin_self, run_emulator
from openai import AsyncOpenAI

from flex_provider.engine import FlexEngine, PromptBuilder, RequestSpec, ResultStore, RunOptions
from flex_provider.hooks.flex import ClientSettings, FlexHook

API_KEY = "sk-bench-not-a-real-key"


def prompts(n: int) -> list[tuple[str, str]]:
    return [
        (f"ticket-{i}", f"Classify this support ticket #{i}: my invoice {i} is wrong, the amount charged is too high.")
        for i in range(n)
    ]


async def run_floor(base_url: str, data: list[tuple[str, str]], c: int, model: str) -> int:
    client = AsyncOpenAI(api_key=API_KEY, base_url=base_url, max_retries=0)
    sem = asyncio.Semaphore(c)

    async def one(text: str) -> str:
        async with sem:
            response = await client.responses.create(model=model, input=text, service_tier="flex")
            return response.output_text

    async with client:
        outputs = await asyncio.gather(*(one(text) for _, text in data))
    return sum(1 for o in outputs if o)


class _RoundRobin:
    def __init__(self, targets: list) -> None:
        self._targets = itertools.cycle(targets)

    def create(self, **kwargs):
        return next(self._targets).create(**kwargs)


class ShardedClient:
    """Benchmark-only stand-in for a proposed engine change: K AsyncOpenAI clients, each with its
    own connection pool of C/K (+16) connections, used round-robin. httpcore2's pool scans (and
    probes the socket of) every idle connection on each request start and each response close, so
    the cost per request grows with the pool size; K pools of C/K connections divide that scan."""

    def __init__(self, base_url: str, c: int, shards: int) -> None:
        self.clients = [
            FlexHook.build_client(ClientSettings(API_KEY, base_url), max_connections=-(-c // shards) + 16)
            for _ in range(shards)
        ]
        self.responses = _RoundRobin([cl.responses for cl in self.clients])

    async def __aenter__(self) -> ShardedClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for client in self.clients:
            await client.close()


async def run_engine(base_url: str, data: list[tuple[str, str]], c: int, model: str, out: Path, shards: int = 1) -> int:
    builder = PromptBuilder()
    items = [builder.build({"id": rid, "text": text}, f"items[{i}]") for i, (rid, text) in enumerate(data)]
    if shards > 1:
        client = ShardedClient(base_url, c, shards)
    else:
        client = FlexHook.build_client(ClientSettings(API_KEY, base_url), max_connections=c + 16)
    async with client:
        engine = FlexEngine(
            client,
            RequestSpec(model=model),
            RunOptions(max_concurrency=c),
            ResultStore(out),
            secrets=(API_KEY,),
        )
        summary = await engine.run(items, total=len(items))
    if summary["failed"]:
        raise RuntimeError(f"engine: {summary['failed']} item(s) failed: {summary['failed_ids'][:5]}")
    return summary["succeeded"]


def measure(name: str, emu, coro_factory, args, timeout: float, profile_to: Path | None = None) -> dict:
    gc.collect()
    emu.reset()
    emu_cpu0 = emu.cpu_s()
    busy0, steal0 = machine_busy_s()
    profiler = cProfile.Profile() if profile_to else None
    with RssSampler(period=0.1) as rss, GcTimer() as gct:
        cpu0, t0 = time.process_time(), time.perf_counter()
        if profiler:
            profiler.enable()
        done = asyncio.run(asyncio.wait_for(coro_factory(), timeout))
        if profiler:
            profiler.disable()
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    emu_cpu = emu.cpu_s() - emu_cpu0
    busy1, steal1 = machine_busy_s()
    others = max(0.0, (busy1 - busy0) - cpu - emu_cpu) / wall  # cores used by everything else
    steal = (steal1 - steal0) / wall
    stats = emu.stats()
    n = args.n
    ok_200 = stats["by_status"].get("200", 0)
    if done != n or stats["by_endpoint"].get("responses.create", 0) != n or ok_200 != n:
        raise RuntimeError(
            f"{name}: {done} outputs, emulator saw {stats['by_endpoint']} requests, statuses {stats['by_status']}"
        )
    ips = n / wall
    result = {
        "phase": name,
        "wall_s": wall,
        "items_s": ips,
        "eff": ips / (args.concurrency / args.latency) if args.latency > 0 else float("nan"),
        "cpu_per_1k": cpu / n * 1000,
        "emu_cpu_per_1k": emu_cpu / n * 1000,
        "cpu_util": cpu / wall,
        "peak_rss_mb": rss.peak,
        "maxrss_mb": maxrss_mb(),
        "max_in_flight": stats.get("max_in_flight"),
        "others_cores": others,
        "gc_s": gct.seconds,
        "steal_cores": steal,
    }
    load1 = os.getloadavg()[0]
    result["load1"] = load1
    print(
        f"  {name:<14} wall {wall:6.2f} s | {ips:7.1f} items/s | efficiency {result['eff']:.3f} | "
        f"CPU {result['cpu_per_1k']:.2f} s/1k req ({result['cpu_util'] * 100:.0f}% of a core) | "
        f"emulator CPU {result['emu_cpu_per_1k']:.2f} s/1k | peak RSS {rss.peak:.0f} MiB "
        f"(ru_maxrss so far {result['maxrss_mb']:.0f} MiB) | GC {gct.seconds:.2f} s ({gct.collections[2]} full) | emulator max in flight {result['max_in_flight']} | other processes {others:.2f} cores, steal {steal:.2f} | "
        f"load1 {load1:.2f}",
        flush=True,
    )
    if profiler and profile_to:
        profile_to.parent.mkdir(parents=True, exist_ok=True)
        profiler.dump_stats(profile_to)
        buf = io.StringIO()
        pstats.Stats(profiler, stream=buf).sort_stats("tottime").print_stats(25)
        print(f"  cProfile of {name} (main thread, by tottime) -> {profile_to}")
        print("\n".join("    " + line for line in buf.getvalue().splitlines()[:45] if line.strip()))
    return result


def spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    if len(values) < 2:
        return f"{mean:.3f}"
    return f"{mean:.3f} (min {min(values):.3f}, max {max(values):.3f}, ±{(max(values) - min(values)) / 2 / mean * 100:.1f}%)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--concurrency", "-c", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.5, help="emulator flex latency in seconds (jitter 0)")
    parser.add_argument("--model", default="gpt-5-mini")
    parser.add_argument("--repeat", type=int, default=2, help="floor/engine pairs to run (default 2)")
    parser.add_argument(
        "--phases",
        default="floor,engine",
        help="comma list of floor, engine, engine-sharded (the last: engine over --shards client pools)",
    )
    parser.add_argument("--shards", type=int, default=4, help="client pools for the engine-sharded phase")
    parser.add_argument("--pin", action="store_true", help="pin the emulator to core 1 and this process to core 0")
    parser.add_argument("--phase-timeout", type=float, default=300.0, help="wall-clock limit of one phase (s)")
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="gc.freeze() after imports and warm-up (what a triggerer-level setting would give; not the default)",
    )
    parser.add_argument("--profile", type=Path, default=None, help="folder for one extra cProfile'd run per phase")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    # Importing Airflow configures logging at INFO, which would make httpx log every request of the
    # floor (the engine's FlexHook.build_client quiets it); quiet it for both, as a bare script would be.
    FlexHook.quiet_http_logs()
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    data = prompts(args.n)

    print(
        f"flex throughput benchmark {datetime.datetime.now().isoformat(timespec='seconds')}: N={args.n} "
        f"C={args.concurrency} L={args.latency}s model={args.model} pinned={args.pin} gc_freeze={args.gc_freeze}; "
        f"{machine_line()}"
    )
    ideal = args.concurrency / args.latency if args.latency > 0 else float("inf")
    print(f"ideal rate C/L = {ideal:.0f} items/s; ideal wall = {args.n / ideal:.2f} s")
    results: dict[str, list[dict]] = {p: [] for p in phases}
    pin_self(0 if args.pin else None)
    with run_emulator(args.latency, cpu=1 if args.pin else None) as emu, tempfile.TemporaryDirectory() as tmp:

        def factory(phase: str, run: int):
            if phase == "floor":
                return lambda: run_floor(emu.base_url, data, args.concurrency, args.model)
            out = Path(tmp) / f"{phase}-{run}"
            shards = args.shards if phase == "engine-sharded" else 1
            return lambda: run_engine(emu.base_url, data, args.concurrency, args.model, out, shards)

        # Warm-up: imports, emulator code paths, one round of connections (not measured).
        asyncio.run(run_floor(emu.base_url, data[:50], 50, args.model))
        if args.gc_freeze:
            gc.collect()
            gc.freeze()
            print(f"gc.freeze(): {gc.get_freeze_count()} objects moved to the permanent generation")
        for run in range(args.repeat):
            print(f"run {run + 1}/{args.repeat}")
            for phase in phases:
                results[phase].append(measure(phase, emu, factory(phase, run), args, args.phase_timeout))
        if args.profile:
            print("profiled runs (cProfile overhead inflates CPU; not used in the figures above)")
            for phase in phases:
                measure(phase, emu, factory(phase, 99), args, args.phase_timeout, args.profile / f"{phase}.prof")

    print("\nsummary (mean over runs, spread = half the min..max range)")
    for phase in phases:
        rs = results[phase]
        print(
            f"  {phase:<14} items/s {spread([r['items_s'] for r in rs])}\n"
            f"         efficiency {spread([r['eff'] for r in rs])}\n"
            f"         CPU s/1k req {spread([r['cpu_per_1k'] for r in rs])}; "
            f"emulator CPU s/1k req {spread([r['emu_cpu_per_1k'] for r in rs])}\n"
            f"         wall s {spread([r['wall_s'] for r in rs])}; peak RSS MiB {spread([r['peak_rss_mb'] for r in rs])}\n"
            f"         other processes on the machine: {', '.join(format(r['others_cores'], '.2f') for r in rs)} cores"
        )
    if "floor" in results:
        for phase in (p for p in phases if p != "floor"):
            ratios = [e["cpu_per_1k"] / f["cpu_per_1k"] for f, e in zip(results["floor"], results[phase], strict=True)]
            eff = statistics.fmean(r["eff"] for r in results[phase])
            print(
                f"  {phase}: CPU ratio {phase}/floor per run {', '.join(f'{r:.2f}' for r in ratios)} "
                f"(mean {statistics.fmean(ratios):.2f}; target <= 1.3: {'met' if max(ratios) <= 1.3 else 'MISSED'}); "
                f"efficiency {eff:.3f} (target >= 0.9: {'met' if eff >= 0.9 else 'MISSED'})"
            )
        feff = statistics.fmean(r["eff"] for r in results["floor"])
        print(f"  floor efficiency {feff:.3f}: the bare SDK loop's own ceiling on this machine")

    print("\nREADME rows:")
    print(
        "| date | N | C | L (s) | pinned | phase | items/s | efficiency | CPU s/1k req | emulator CPU s/1k | wall s | peak RSS MiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    today = datetime.date.today().isoformat()
    for phase in phases:
        rs = results[phase]
        print(
            f"| {today} | {args.n} | {args.concurrency} | {args.latency} | {'yes' if args.pin else 'no'} | {phase} | "
            + " | ".join(
                "/".join(f"{r[key]:{fmt}}" for r in rs)
                for key, fmt in (
                    ("items_s", ".0f"),
                    ("eff", ".2f"),
                    ("cpu_per_1k", ".2f"),
                    ("emu_cpu_per_1k", ".2f"),
                    ("wall_s", ".1f"),
                    ("peak_rss_mb", ".0f"),
                )
            )
            + " |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
