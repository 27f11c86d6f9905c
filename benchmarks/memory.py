"""Memory of a long job: does RSS stay flat as the number of items grows?

    .venv/bin/python benchmarks/memory.py                 # N=100,000, C=200, L=0 s
    .venv/bin/python benchmarks/memory.py --n 10000       # for comparison

Writes a JSON Lines file of N synthetic support tickets (~600 bytes of text each) to a temp dir,
then runs the real job path: ``FlexJob(input_uri="file://...", work_uri="file://...")`` through
``run_job`` (the function the trigger and the non-deferrable operator call), so items are streamed
by ``FlexJob.iter_items()`` through ``ObjectStoragePath`` and rendered with a Jinja ``prompt_template``,
and results go to part files through ``ResultStore(ObjectStoragePath)``. The client is built like the
trigger builds it (``FlexHook.build_client(..., max_connections=C+16)``), against the emulator run as a
separate process on loopback.

A daemon thread samples this process's RSS every 0.5 s together with the number of finished items;
the script prints peak RSS, RSS before the run, and RSS at 10/50/90 % progress. It stops by itself:
the run is cancelled after ``--max-seconds`` (default 480) and the rate so far is reported with
the projected time for N. The emulator subprocess is killed in ``finally``.

``--stub-client``: the same job path, but the client is a stub that answers every request at once
with one real parsed ``Response`` (fetched from an in-process emulator first, as ``overhead.py``
does): no HTTP, so a million items take minutes instead of an hour on a busy 2-core machine.
What is measured is then what the engine holds per item (id indexes, records, the end of the run),
not the SDK's and httpx's per-request buffers, which stay flat in the number of items anyway.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import logging
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import RssSampler, machine_line, maxrss_mb, rss_mb, run_emulator

from flex_provider.engine.config import RequestSpec, RunOptions
from flex_provider.hooks.flex import ClientSettings, FlexHook
from flex_provider.job import FlexJob, run_job

API_KEY = "sk-bench-not-a-real-key"
TEMPLATE = (
    "Classify this support ticket.\nSubject: {{ item.subject }}\nCustomer: {{ item.customer }}\n\n{{ item.body }}"
)
WORDS = [
    "invoice",
    "billing",
    "charge",
    "refund",
    "account",
    "password",
    "login",
    "error",
    "payment",
    "card",
    "subscription",
    "plan",
    "upgrade",
    "downgrade",
    "cancel",
    "delivery",
    "order",
    "package",
    "shipping",
    "tracking",
    "address",
    "damaged",
    "missing",
    "wrong",
    "late",
    "support",
    "please",
    "help",
    "urgent",
    "again",
    "since",
    "yesterday",
    "still",
    "not",
    "working",
    "thanks",
    "regards",
    "customer",
    "service",
    "team",
]


def write_tickets(path: Path, n: int, text_bytes: int = 600, seed: int = 7) -> int:
    """Stream N tickets to ``path``; returns the file size in bytes."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as handle:
        for i in range(n):
            words: list[str] = []
            size = 0
            while size < text_bytes:
                word = rng.choice(WORDS)
                words.append(word)
                size += len(word) + 1
            body = " ".join(words)[:text_bytes]
            record = {
                "id": f"ticket-{i:07d}",
                "subject": f"Ticket {i}: {rng.choice(WORDS)} {rng.choice(WORDS)}",
                "customer": f"cust-{rng.randrange(10**6):06d}",
                "body": body,
            }
            handle.write(json.dumps(record) + "\n")
    return path.stat().st_size


async def run_bench_job(job: FlexJob, base_url: str, holder: dict) -> dict:
    def on_engine(engine) -> None:
        holder["engine"] = engine

    logger = logging.getLogger("flex_provider.bench")
    event = await run_job(job, logger, settings=ClientSettings(API_KEY, base_url), on_engine=on_engine)
    return event.to_payload()


class _StubResponses:
    def __init__(self, response) -> None:
        self.response = response

    async def create(self, **kwargs):
        await asyncio.sleep(0)
        return self.response


class StubClient:
    """Answers every ``responses.create`` with the same parsed Response (see ``--stub-client``)."""

    def __init__(self, response) -> None:
        self.responses = _StubResponses(response)

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc) -> None:
        pass

    async def close(self) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--concurrency", "-c", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.0, help="emulator flex latency in seconds (jitter 0)")
    parser.add_argument("--model", default="gpt-5-mini")
    parser.add_argument("--text-bytes", type=int, default=600)
    parser.add_argument("--no-template", action="store_true", help="send the body as 'text' instead of a template")
    parser.add_argument("--max-seconds", type=float, default=480.0, help="cancel the run after this (default 480)")
    parser.add_argument("--period", type=float, default=0.5, help="RSS sampling period in seconds")
    parser.add_argument("--stub-client", action="store_true", help="no HTTP: a stub client answers at once")
    args = parser.parse_args(argv)
    FlexHook.quiet_http_logs()
    logging.getLogger("flex_provider").setLevel(logging.WARNING)

    print(
        f"flex memory benchmark {datetime.datetime.now().isoformat(timespec='seconds')}: N={args.n} "
        f"C={args.concurrency} L={args.latency}s text={args.text_bytes} B template={not args.no_template}"
        f"{' client=stub (no HTTP)' if args.stub_client else ''}; "
        f"{machine_line()}",
        flush=True,
    )
    holder: dict = {}

    def progress() -> int:
        engine = holder.get("engine")
        return engine.counters.succeeded + engine.counters.failed if engine is not None else 0

    with tempfile.TemporaryDirectory(prefix="flex-mem-") as tmp:
        tmp_path = Path(tmp)
        items_file = tmp_path / "items.jsonl"
        t0 = time.perf_counter()
        size = write_tickets(items_file, args.n, args.text_bytes)
        print(
            f"input: {items_file.name} {size / 2**20:.1f} MiB, {args.n} lines, written in {time.perf_counter() - t0:.1f} s"
        )
        if args.no_template:
            # Same tickets with the prompt already in "text" (rewritten streaming, line by line).
            text_file = tmp_path / "items-text.jsonl"
            with items_file.open(encoding="utf-8") as src, text_file.open("w", encoding="utf-8") as dst:
                for line in src:
                    rec = json.loads(line)
                    dst.write(json.dumps({"id": rec["id"], "text": f"{rec['subject']}\n\n{rec['body']}"}) + "\n")
            items_file = text_file
        job = FlexJob(
            conn_id="flex_bench",
            spec=RequestSpec(model=args.model, prompt_template=None if args.no_template else TEMPLATE),
            options=RunOptions(max_concurrency=args.concurrency),
            work_uri=f"file://{tmp_path / 'out'}",
            output_uri=f"file://{tmp_path / 'out'}",
            input_uri=f"file://{items_file}",
            input_label="input_path",
            total=args.n,
        )
        # Background responses are not used here; forget stored responses quickly so the emulator
        # process (not under test) stays small over 100k requests.
        if args.stub_client:
            from overhead import real_response

            import flex_provider.job as job_module

            stub = StubClient(real_response())
            job_module.job_client = lambda job, settings: stub  # type: ignore[assignment]
        with run_emulator(args.latency, extra=["--background-expiry", "5"]) as emu:
            before = rss_mb()
            print(
                f"RSS before the run: {before:.0f} MiB (imports: Airflow SDK, openai, engine); emulator {emu.rss_mb():.0f} MiB"
            )
            marks = {f: False for f in (0.1, 0.25, 0.5, 0.75, 0.9)}
            result: dict | None = None
            timed_out = False
            cpu0 = time.process_time()
            emu_cpu0 = emu.cpu_s()
            start = time.perf_counter()
            with RssSampler(period=args.period, progress=progress) as sampler:

                async def main_coro():
                    task = asyncio.ensure_future(run_bench_job(job, emu.base_url, holder))
                    deadline = time.perf_counter() + args.max_seconds
                    while not task.done():
                        await asyncio.wait({task}, timeout=1.0)
                        done = progress()
                        for frac, seen in marks.items():
                            if not seen and done >= frac * args.n:
                                marks[frac] = True
                                el = time.perf_counter() - start
                                print(
                                    f"  {frac * 100:3.0f}%: {done:>7} done, {el:6.1f} s, {done / el:6.1f} items/s, "
                                    f"RSS {rss_mb():.0f} MiB, emulator RSS {emu.rss_mb():.0f} MiB",
                                    flush=True,
                                )
                        if time.perf_counter() > deadline and not task.done():
                            task.cancel()
                            with_cancel = await asyncio.gather(task, return_exceptions=True)
                            del with_cancel
                            return None
                    return task.result()

                result = asyncio.run(main_coro())
                timed_out = result is None
            wall = time.perf_counter() - start
            cpu = time.process_time() - cpu0
            emu_cpu = emu.cpu_s() - emu_cpu0
            emu_rss = emu.rss_mb()
        done = progress()
        parts = sorted((tmp_path / "out").glob("part-*.jsonl"))
        out_bytes = sum(p.stat().st_size for p in parts)

    print()
    if timed_out:
        rate = done / wall if wall else 0.0
        print(
            f"STOPPED after {wall:.0f} s (--max-seconds): {done}/{args.n} items at {rate:.1f} items/s; "
            f"N={args.n} would take ~{args.n / rate / 60:.1f} min at this rate"
            if rate
            else "no item finished"
        )
    else:
        assert result is not None
        if result.get("status") != "success" or result.get("succeeded") != args.n:
            print(f"run did not succeed: {result}")
            return 1
        print(
            f"run: {result['succeeded']} succeeded, {result['failed']} failed, {len(parts)} part files, {out_bytes / 2**20:.1f} MiB of results"
        )
    rate = done / wall if wall else 0.0
    print(
        f"wall {wall:.1f} s, {rate:.1f} items/s, CPU {cpu / max(done, 1) * 1000:.2f} s/1k items "
        f"({cpu / wall * 100:.0f}% of a core); emulator CPU {emu_cpu / max(done, 1) * 1000:.2f} s/1k, "
        f"emulator RSS at end {emu_rss:.0f} MiB"
    )
    at = {f: sampler.at_progress(f, args.n) for f in (0.1, 0.5, 0.9)}
    fmt = {f: (f"{v:.0f}" if v is not None else "n/a") for f, v in at.items()}
    print(
        f"RSS MiB: before {before:.0f} | 10% {fmt[0.1]} | 50% {fmt[0.5]} | 90% {fmt[0.9]} | "
        f"peak (sampled every {args.period} s) {sampler.peak:.0f} | ru_maxrss {maxrss_mb():.0f} | "
        f"end {sampler.samples[-1][2]:.0f}"
    )
    running = [rss for _, d, rss in sampler.samples if d < args.n]
    tail = [rss for _, d, rss in sampler.samples if d >= args.n]
    print(
        f"peak RSS while items were in flight {max(running):.0f} MiB; after the last item (final flush, "
        f"_finalize reading every part back, manifest) {max(tail) if tail else float('nan'):.0f} MiB; "
        f"{(sampler.samples[-1][0] - min((t for t, d, _ in sampler.samples if d >= args.n), default=sampler.samples[-1][0])):.1f} s "
        f"spent after the last item; growth 10% -> 90%: {(at[0.9] or 0) - (at[0.1] or 0):+.0f} MiB"
        + (
            f" ({((at[0.9] or 0) - (at[0.1] or 0)) * 1024 / (0.8 * args.n):.2f} KiB/item)"
            if at[0.9] and at[0.1]
            else ""
        )
    )
    print(
        f"peak RSS above the RSS before the run: {maxrss_mb() - before:.0f} MiB, "
        f"{(maxrss_mb() - before) * 1024 / max(done, 1):.3f} KiB per item"
    )
    target = "met" if maxrss_mb() < 300 else "MISSED"
    print(f"target peak RSS < 300 MB at N=100,000: {target if args.n >= 100_000 else 'n/a (N < 100,000)'}")
    if args.n >= 1_000_000:
        print(f"target peak RSS < 300 MB at N=1,000,000: {target}")
    print("\nREADME row:")
    print(
        "| date | N | C | L (s) | items/s | wall s | CPU s/1k | RSS before | RSS 10% | RSS 50% | RSS 90% | peak RSS (ru_maxrss) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {datetime.date.today().isoformat()} | {args.n}{' (stopped)' if timed_out else ''} | {args.concurrency} | "
        f"{args.latency} | {rate:.0f} | {wall:.0f} | {cpu / max(done, 1) * 1000:.2f} | {before:.0f} | {fmt[0.1]} | "
        f"{fmt[0.5]} | {fmt[0.9]} | {maxrss_mb():.0f} |"
    )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
