"""Throughput and CPU cost of the engine and of the bare SDK loop, per HTTP transport, on the flex emulator.

    .venv/bin/python benchmarks/throughput.py                      # N=5000, C=200, L=0.5 s, 2 repeats, 4 phases
    .venv/bin/python benchmarks/throughput.py --repeat 3 --phases sdk-default,engine-aiohttp
    .venv/bin/python benchmarks/throughput.py --phases sdk-default,sdk-aiohttp,sdk-post,raw-aiohttp,engine-aiohttp,engine-httpx
    .venv/bin/python benchmarks/throughput.py --pin                # emulator on core 1, benchmark on core 0
    .venv/bin/python benchmarks/throughput.py --gc-freeze          # gc.freeze() after imports (diagnostic)
    .venv/bin/python benchmarks/throughput.py --profile /tmp/prof  # + one cProfile'd run of each phase

The emulator runs as a separate process (``python -m flex_provider.emulator``, fixed latency,
``--latency-jitter 0``), unpinned unless ``--pin``, on loopback. Against the same emulator, this
process runs, in turn and ``--repeat`` times (phases interleaved so drift hits all of them alike):

* sdk-default: the bare SDK loop as most people write it, on the SDK's default transport (httpx2):
  ``AsyncOpenAI(max_retries=0)`` + ``asyncio.Semaphore(C)`` + ``asyncio.gather`` sending N
  ``responses.create(..., service_tier="flex")``, keeping ``output_text``. The reference of the ratios.
* sdk-aiohttp: the same loop with ``http_client=DefaultAioHttpClient()`` (the SDK's aiohttp transport,
  extra ``openai[aiohttp]``), pool sized to C.
* engine-aiohttp: ``FlexEngine`` with the client ``FlexHook.build_client`` gives by default (aiohttp,
  ``max_connections=C+16``, as the trigger builds it) over the same N items, writing part files to a
  temp folder through ``ResultStore(pathlib.Path)``;
* engine-httpx: the same engine on ``transport="httpx"`` (httpx2, the connection extra's other value);
* sdk-post (opt-in): the engine's client (aiohttp) but around the SDK's typed layer: ``client.post(
  "/responses", body=..., cast_to=httpx2.Response)`` + ``json.loads`` (no request transform, no
  response model): what the SDK's typing costs per request;
* raw-aiohttp (opt-in): aiohttp alone, no SDK (POST + ``json.loads``): the ceiling of this machine;
* engine-sharded (opt-in): the engine (httpx) over a benchmark-side wrapper that spreads requests over
  ``--shards`` AsyncOpenAI clients (one connection pool each): the measurement behind an old proposal.

Importing Airflow turns on INFO logging, which would make httpx log every request of the bare loop;
``FlexHook.quiet_http_logs()`` is applied first, as the engine's client builder does.

For each: items/s, efficiency = (items/s) / (C / L), CPU per request of this process in ms (=
s per 1,000 requests; ``time.process_time``, all threads) and of the emulator process (psutil), wall
time, peak RSS (sampled every 0.1 s, and ru_maxrss), time in the garbage collector, and the CPU used
by every other process on the machine (from /proc/stat) so a noisy run can be recognised. Each phase
is checked against the emulator's own counters (exactly N requests, N x 200). The summary gives the
ratios of every phase to sdk-default (throughput and CPU per request, per run) and checks the
engine-aiohttp targets (>= 2x the throughput of sdk-default, >= 0.9 of C/L, <= 0.6x its CPU per
request); it also names the quietest run (least CPU used by other processes). The run is bounded:
every phase has a wall-clock limit (``--phase-timeout``) and the emulator is killed in ``finally``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import datetime
import gc
import io
import itertools
import json
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
from openai import AsyncOpenAI, DefaultAioHttpClient

from flex_provider.engine import FlexEngine, PromptBuilder, RequestSpec, ResultStore, RunOptions
from flex_provider.hooks.flex import DEFAULT_TRANSPORT, ClientSettings, FlexHook

API_KEY = "sk-bench-not-a-real-key"
REFERENCE = "sdk-default"  # the ratios are to this phase
DEFAULT_PHASES = "sdk-default,sdk-aiohttp,engine-aiohttp,engine-httpx"
ALL_PHASES = (
    "sdk-default",
    "sdk-aiohttp",
    "sdk-post",
    "raw-aiohttp",
    "engine-aiohttp",
    "engine-httpx",
    "engine-sharded",
)
# engine-aiohttp against sdk-default: (throughput ratio >=, efficiency >=, CPU-per-request ratio <=)
TARGETS = (2.0, 0.9, 0.6)


def prompts(n: int) -> list[tuple[str, str]]:
    return [
        (f"ticket-{i}", f"Classify this support ticket #{i}: my invoice {i} is wrong, the amount charged is too high.")
        for i in range(n)
    ]


async def run_sdk(base_url: str, data: list[tuple[str, str]], c: int, model: str, transport: str) -> int:
    """The bare SDK loop; ``transport`` "default" (httpx2) or "aiohttp" (the SDK's DefaultAioHttpClient)."""
    http_client = None
    if transport == "aiohttp":
        import httpx2

        http_client = DefaultAioHttpClient(limits=httpx2.Limits(max_connections=c, max_keepalive_connections=c))
    client = AsyncOpenAI(api_key=API_KEY, base_url=base_url, max_retries=0, http_client=http_client)
    sem = asyncio.Semaphore(c)

    async def one(text: str) -> str:
        async with sem:
            response = await client.responses.create(model=model, input=text, service_tier="flex")
            return response.output_text

    async with client:
        outputs = await asyncio.gather(*(one(text) for _, text in data))
    return sum(1 for o in outputs if o)


def output_text(payload: dict) -> str:
    """A Responses API body's output text, picked from the JSON by hand (no SDK model)."""
    return "".join(
        part.get("text", "")
        for item in payload.get("output", [])
        if item.get("type") == "message"
        for part in item.get("content", [])
    )


async def run_sdk_post(base_url: str, data: list[tuple[str, str]], c: int, model: str) -> int:
    """The engine's client (FlexHook, aiohttp) without the SDK's typed layer: ``client.post`` with
    ``cast_to=httpx2.Response`` (no request transform, no response model) + ``json.loads``. Measures
    what the SDK's typing costs on top of the transport (the engine sends this way since the fast path in engine/calls.py)."""
    import httpx2

    client = FlexHook.build_client(ClientSettings(API_KEY, base_url), max_connections=c + 16)
    sem = asyncio.Semaphore(c)

    async def one(text: str) -> str:
        async with sem:
            body = {"model": model, "input": text, "service_tier": "flex"}
            response = await client.post("/responses", body=body, cast_to=httpx2.Response)
            return output_text(json.loads(response.content))

    async with client:
        outputs = await asyncio.gather(*(one(text) for _, text in data))
    return sum(1 for o in outputs if o)


async def run_raw_aiohttp(base_url: str, data: list[tuple[str, str]], c: int, model: str) -> int:
    """No SDK: aiohttp POSTs and ``json.loads`` of the answer (the output text picked by hand)."""
    import aiohttp

    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    sem = asyncio.Semaphore(c)
    url = base_url + "/responses"

    async def one(session: aiohttp.ClientSession, text: str) -> str:
        body = json.dumps({"model": model, "input": text, "service_tier": "flex"})
        async with sem, session.post(url, data=body, headers=headers) as resp:
            return output_text(json.loads(await resp.read()))

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=c)) as session:
        outputs = await asyncio.gather(*(one(session, text) for _, text in data))
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
            FlexHook.build_client(
                ClientSettings(API_KEY, base_url, transport="httpx"), max_connections=-(-c // shards) + 16
            )
            for _ in range(shards)
        ]
        self.responses = _RoundRobin([cl.responses for cl in self.clients])

    async def __aenter__(self) -> ShardedClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for client in self.clients:
            await client.close()


async def run_engine(
    base_url: str,
    data: list[tuple[str, str]],
    c: int,
    model: str,
    out: Path,
    transport: str | None = None,
    shards: int = 1,
) -> int:
    """The engine; ``transport`` None for the client FlexHook builds by default, else "aiohttp"/"httpx"."""
    builder = PromptBuilder()
    items = [builder.build({"id": rid, "text": text}, f"items[{i}]") for i, (rid, text) in enumerate(data)]
    if shards > 1:
        client = ShardedClient(base_url, c, shards)
    else:
        settings = ClientSettings(API_KEY, base_url)  # the default transport, as a connection without the extra
        if transport is not None:
            settings = ClientSettings(API_KEY, base_url, transport=transport)
        client = FlexHook.build_client(settings, max_connections=c + 16)
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
        f"CPU {result['cpu_per_1k']:.2f} ms/req ({result['cpu_util'] * 100:.0f}% of a core) | "
        f"emulator CPU {result['emu_cpu_per_1k']:.2f} ms/req | peak RSS {rss.peak:.0f} MiB "
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


def ratios_to_reference(results: dict[str, list[dict]], phases: list[str]) -> None:
    """Each phase against sdk-default, run by run (the same run's phases ran back to back)."""
    ref = results[REFERENCE]
    print(f"\nratios to {REFERENCE} (per run; throughput = items/s ratio, CPU = CPU-per-request ratio)")
    for phase in (p for p in phases if p != REFERENCE):
        pairs = list(zip(ref, results[phase], strict=True))
        speed = [r["items_s"] / f["items_s"] for f, r in pairs]
        cpu = [r["cpu_per_1k"] / f["cpu_per_1k"] for f, r in pairs]
        print(
            f"  {phase:<14} throughput x{statistics.fmean(speed):.2f} ({', '.join(f'{x:.2f}' for x in speed)}); "
            f"CPU x{statistics.fmean(cpu):.2f} ({', '.join(f'{x:.2f}' for x in cpu)})"
        )
    if "engine-aiohttp" in results:
        pairs = list(zip(ref, results["engine-aiohttp"], strict=True))
        speed = statistics.fmean(r["items_s"] / f["items_s"] for f, r in pairs)
        eff = statistics.fmean(r["eff"] for _, r in pairs)
        cpu = statistics.fmean(r["cpu_per_1k"] / f["cpu_per_1k"] for f, r in pairs)
        want_speed, want_eff, want_cpu = TARGETS
        print(
            f"  targets, engine-aiohttp vs {REFERENCE} (means): throughput x{speed:.2f} (>= {want_speed}: "
            f"{'met' if speed >= want_speed else 'MISSED'}); efficiency {eff:.3f} (>= {want_eff}: "
            f"{'met' if eff >= want_eff else 'MISSED'}); CPU x{cpu:.2f} (<= {want_cpu}: "
            f"{'met' if cpu <= want_cpu else 'MISSED'})"
        )


def quietest_run(results: dict[str, list[dict]], phases: list[str]) -> int:
    """The run (0-based) whose phases shared the machine with the least CPU of other processes."""
    runs = len(results[phases[0]])
    return min(range(runs), key=lambda i: statistics.fmean(results[p][i]["others_cores"] for p in phases))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--concurrency", "-c", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.5, help="emulator flex latency in seconds (jitter 0)")
    parser.add_argument("--model", default="gpt-5-mini")
    parser.add_argument("--repeat", type=int, default=2, help="rounds of all phases (default 2)")
    parser.add_argument(
        "--phases",
        default=DEFAULT_PHASES,
        help=f"comma list of {', '.join(ALL_PHASES)} (default {DEFAULT_PHASES}; ratios need {REFERENCE})",
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
    # bare loop (the engine's FlexHook.build_client quiets it); quiet it for both, as a bare script would be.
    FlexHook.quiet_http_logs()
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = [p for p in phases if p not in ALL_PHASES]
    if unknown or not phases:
        parser.error(f"unknown phase(s) {unknown}; choose from {', '.join(ALL_PHASES)}")
    data = prompts(args.n)

    print(
        f"flex throughput benchmark {datetime.datetime.now().isoformat(timespec='seconds')}: N={args.n} "
        f"C={args.concurrency} L={args.latency}s model={args.model} pinned={args.pin} gc_freeze={args.gc_freeze}; "
        f"FlexHook default transport: {DEFAULT_TRANSPORT}; {machine_line()}"
    )
    ideal = args.concurrency / args.latency if args.latency > 0 else float("inf")
    print(f"ideal rate C/L = {ideal:.0f} items/s; ideal wall = {args.n / ideal:.2f} s")
    results: dict[str, list[dict]] = {p: [] for p in phases}
    pin_self(0 if args.pin else None)
    with run_emulator(args.latency, cpu=1 if args.pin else None) as emu, tempfile.TemporaryDirectory() as tmp:

        def factory(phase: str, run: int):
            c, url = args.concurrency, emu.base_url
            if phase == "sdk-default":
                return lambda: run_sdk(url, data, c, args.model, "default")
            if phase == "sdk-aiohttp":
                return lambda: run_sdk(url, data, c, args.model, "aiohttp")
            if phase == "sdk-post":
                return lambda: run_sdk_post(url, data, c, args.model)
            if phase == "raw-aiohttp":
                return lambda: run_raw_aiohttp(url, data, c, args.model)
            out = Path(tmp) / f"{phase}-{run}"
            if phase == "engine-sharded":
                return lambda: run_engine(url, data, c, args.model, out, shards=args.shards)
            transport = None if phase == f"engine-{DEFAULT_TRANSPORT}" else phase.removeprefix("engine-")
            return lambda: run_engine(url, data, c, args.model, out, transport)

        # Warm-up: imports, emulator code paths, one round of connections on each transport (not measured).
        asyncio.run(run_sdk(emu.base_url, data[:50], 50, args.model, "default"))
        asyncio.run(run_sdk(emu.base_url, data[:50], 50, args.model, "aiohttp"))
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
            f"         CPU ms/req {spread([r['cpu_per_1k'] for r in rs])}; "
            f"emulator CPU ms/req {spread([r['emu_cpu_per_1k'] for r in rs])}\n"
            f"         wall s {spread([r['wall_s'] for r in rs])}; peak RSS MiB {spread([r['peak_rss_mb'] for r in rs])}\n"
            f"         other processes on the machine: {', '.join(format(r['others_cores'], '.2f') for r in rs)} cores"
        )
    if REFERENCE in results:
        ratios_to_reference(results, phases)
    quiet = quietest_run(results, phases)
    print(f"\nquietest run: {quiet + 1} of {args.repeat} (other processes, mean over its phases)")
    for phase in phases:
        r = results[phase][quiet]
        ref = results[REFERENCE][quiet] if REFERENCE in results else None
        vs = (
            f" | vs {REFERENCE}: throughput x{r['items_s'] / ref['items_s']:.2f}, CPU x{r['cpu_per_1k'] / ref['cpu_per_1k']:.2f}"
            if ref is not None
            else ""
        )
        print(
            f"  {phase:<14} {r['items_s']:7.1f} items/s | efficiency {r['eff']:.3f} | CPU {r['cpu_per_1k']:.2f} ms/req | "
            f"other processes {r['others_cores']:.2f} cores{vs}"
        )

    print("\nREADME rows:")
    print(
        "| date | N | C | L (s) | pinned | phase | items/s | efficiency | CPU ms/req | emulator CPU ms/req | wall s | peak RSS MiB | other processes (cores) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
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
                    ("others_cores", ".2f"),
                )
            )
            + " |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
