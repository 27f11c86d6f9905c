"""The engine's own CPU per item, without HTTP: floor loop vs FlexEngine over a stub client.

    .venv/bin/python benchmarks/overhead.py [--n 20000] [--concurrency 200] [--repeat 3]

The stub's ``responses.create`` yields to the loop once and returns the same parsed ``Response``
(fetched once from an in-process emulator so it has the real shape), so what is left is the cost of
the loop around the call: for the floor a semaphore, ``gather`` and ``output_text``; for the engine
the feeder thread and queue, tenacity, the AdaptiveLimiter, CallBuilder, usage/cost accounting,
record building, part-file writes (JSON in a thread) and the final read-back (``_finalize``).
The difference per item is the engine's overhead; compare it with the SDK+HTTP cost per request
measured by ``throughput.py`` (a few ms). No network, no subprocess, bounded by ``--n``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import io
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from openai import AsyncOpenAI

from flex_provider.emulator import EmulatorConfig
from flex_provider.emulator.server import serve_in_thread
from flex_provider.engine import FlexEngine, PromptBuilder, RequestSpec, ResultStore, RunOptions, runner
from flex_provider.engine.usage import Usage
from flex_provider.hooks.flex import FlexHook


class _StubResponses:
    def __init__(self, response) -> None:
        self.response = response
        self.calls = 0

    async def create(self, **kwargs):
        self.calls += 1
        await asyncio.sleep(0)
        return self.response


class StubClient:
    def __init__(self, response) -> None:
        self.responses = _StubResponses(response)

    async def close(self) -> None:
        pass


def real_response():
    with serve_in_thread(EmulatorConfig(latency_s=0.0)) as emu:

        async def fetch():
            async with AsyncOpenAI(api_key="x", base_url=emu.base_url, max_retries=0) as client:
                return await client.responses.create(
                    model="gpt-5-mini",
                    input="Classify this support ticket #1: my invoice is wrong.",
                    service_tier="flex",
                )

        return asyncio.run(fetch())


async def floor(client, texts, c):
    sem = asyncio.Semaphore(c)

    async def one(text):
        async with sem:
            response = await client.responses.create(model="gpt-5-mini", input=text, service_tier="flex")
            return response.output_text

    return len(await asyncio.gather(*(one(t) for t in texts)))


class _SingleAttempt:
    """Stands in for tenacity's AsyncRetrying: one attempt, no retry (diagnostic variant only)."""

    def __init__(self) -> None:
        self._done = False

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self._done:
            raise StopAsyncIteration
        self._done = True
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _NoopStore(ResultStore):
    """Writes nothing and reads nothing back (diagnostic variant only)."""

    def write_part(self, records):
        return "noop"

    def write_progress(self, counters):
        pass

    def iter_part_records(self):
        return iter(())


VARIANTS = {
    "engine": "as shipped",
    "engine-single-attempt": "tenacity's AsyncRetrying replaced by a single attempt (upper bound of a no-tenacity fast path)",
    "engine-usage-dict": "Usage.as_dict as a dict literal instead of dataclasses.asdict",
    "engine-noop-store": "ResultStore that writes and reads nothing (cost of part files + _finalize)",
}


@contextlib.contextmanager
def patched(variant: str):
    """Benchmark-side monkeypatches for the diagnostic variants; the engine's files are untouched."""
    saved_retrying, saved_as_dict = runner.item_retrying, Usage.as_dict
    try:
        if variant == "engine-single-attempt":
            runner.item_retrying = lambda *a, **k: _SingleAttempt()
        if variant == "engine-usage-dict":
            Usage.as_dict = lambda self: {
                "input": self.input,
                "cached": self.cached,
                "output": self.output,
                "reasoning": self.reasoning,
            }
        yield
    finally:
        runner.item_retrying, Usage.as_dict = saved_retrying, saved_as_dict


async def engine(client, texts, c, out, timings, variant="engine"):
    builder = PromptBuilder()
    items = [builder.build({"id": f"t-{i}", "text": t}, f"items[{i}]") for i, t in enumerate(texts)]
    store = _NoopStore(out) if variant == "engine-noop-store" else ResultStore(out)
    eng = FlexEngine(client, RequestSpec(model="gpt-5-mini"), RunOptions(max_concurrency=c), store)
    finalize = eng._finalize

    def timed_finalize(started):  # benchmark-side instrumentation only
        t0 = time.perf_counter()
        try:
            return finalize(started)
        finally:
            timings["finalize_s"] = time.perf_counter() - t0

    eng._finalize = timed_finalize
    await eng.run(items, total=len(items))
    return eng.counters.succeeded


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--concurrency", "-c", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one extra engine run")
    parser.add_argument(
        "--variants",
        default="engine",
        help="comma list of engine variants to run besides the floor: " + ", ".join(VARIANTS) + " (or 'all')",
    )
    args = parser.parse_args(argv)
    FlexHook.quiet_http_logs()
    response = real_response()
    texts = [
        f"Classify this support ticket #{i}: my invoice {i} is wrong, the amount is too high." for i in range(args.n)
    ]
    variants = list(VARIANTS) if args.variants == "all" else [v.strip() for v in args.variants.split(",") if v.strip()]
    phases = ["floor", *variants]
    res: dict[str, list[float]] = {p: [] for p in phases}
    fin: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.repeat):
            for phase in phases:
                gc.collect()
                client = StubClient(response)
                timings: dict = {}
                with patched(phase):
                    c0, t0 = time.process_time(), time.perf_counter()
                    if phase == "floor":
                        done = asyncio.run(floor(client, texts, args.concurrency))
                    else:
                        done = asyncio.run(
                            engine(client, texts, args.concurrency, Path(tmp) / f"{phase}-{run}", timings, phase)
                        )
                    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
                assert done == args.n and client.responses.calls == args.n, (done, client.responses.calls)
                res[phase].append(cpu / args.n * 1e6)
                extra = ""
                if phase == "engine":
                    fin.append(timings["finalize_s"])
                    extra = f" (of which _finalize {timings['finalize_s']:.2f} s wall)"
                print(
                    f"run {run + 1} {phase:<22} {cpu / args.n * 1e6:7.1f} us CPU/item, wall {wall:5.2f} s "
                    f"({args.n / wall:,.0f} items/s){extra}",
                    flush=True,
                )
        if args.profile:
            prof = cProfile.Profile()
            prof.enable()
            asyncio.run(engine(StubClient(response), texts, args.concurrency, Path(tmp) / "prof", {}))
            prof.disable()
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(30)
            print(buf.getvalue())
    f = statistics.fmean(res["floor"])
    print(f"\nN={args.n} C={args.concurrency}, CPU per item (mean of {args.repeat} runs; runs in brackets):")
    print(f"  floor                  {f:6.1f} us  [{', '.join(f'{x:.0f}' for x in res['floor'])}]")
    base = statistics.fmean(res["engine"]) if "engine" in res else None
    for phase in variants:
        m = statistics.fmean(res[phase])
        vs = f"; vs engine {m - base:+.1f} us" if base is not None and phase != "engine" else ""
        print(
            f"  {phase:<22} {m:6.1f} us  [{', '.join(f'{x:.0f}' for x in res[phase])}]  "
            f"overhead over floor {m - f:+.1f} us{vs}  -- {VARIANTS[phase]}"
        )
    if fin:
        print(
            f"  engine _finalize: {statistics.fmean(fin):.2f} s wall ({statistics.fmean(fin) / args.n * 1e6:.1f} us/item)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
