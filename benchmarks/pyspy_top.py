"""Summarise a py-spy ``--format raw`` (collapsed stacks) file: where the CPU of the main thread goes.

    .venv/bin/py-spy record --nonblocking --format raw -o /tmp/engine.txt -- \\
        .venv/bin/python benchmarks/throughput.py --phases engine --repeat 1
    .venv/bin/python benchmarks/pyspy_top.py /tmp/engine.txt [--top 30] [--group]

Prints the top functions by self samples (leaf frame) and by inclusive samples (anywhere on the
stack, counted once per sample), and, with ``--group``, the share per package (openai, httpx2,
httpcore2, anyio, asyncio, pydantic, tenacity, flex_provider, json, ...) by leaf frame.
Only samples of the thread running the event loop are kept (the stack that contains
``asyncio`` ``run_forever``/``_run_once``), so the feeder/writer threads and the RSS sampler do not blur
the picture; pass ``--all-threads`` to keep everything.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

PACKAGES = (
    "flex_provider",
    "openai",
    "httpx2",
    "httpcore2",
    "h11",
    "anyio",
    "pydantic",
    "pydantic_core",
    "tenacity",
    "jinja2",
    "asyncio",
    "json",
    "typing",
    "logging",
    "structlog",
    "airflow",
    "benchmarks",
)


def package_of(file: str) -> str:
    for part in re.split(r"[/\\]", file):
        name = part.removesuffix(".py")
        if name in PACKAGES:
            return name
        if part == "site-packages":
            continue
    if "/python3." in file and "site-packages" not in file:
        return "stdlib:" + file.rsplit("/", 1)[-1].removesuffix(".py")
    return "other"


def short(frame: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    file = m.group("file")
    if "site-packages/" in file:
        file = file.split("site-packages/", 1)[1]
    elif "/lib/python3." in file:
        file = "stdlib/" + file.split("/lib/python3.", 1)[1].split("/", 1)[1]
    elif "/work/main/" in file:
        file = file.split("/work/main/", 1)[1]
    return f"{m.group('func')} ({file})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("path")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--group", action="store_true")
    parser.add_argument("--all-threads", action="store_true")
    parser.add_argument("--only", default=None, help="keep stacks containing this substring (e.g. run_engine)")
    args = parser.parse_args(argv)

    self_counts: collections.Counter[str] = collections.Counter()
    incl_counts: collections.Counter[str] = collections.Counter()
    pkg_counts: collections.Counter[str] = collections.Counter()
    total = 0
    with open(args.path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            line = line.rstrip("\n")
            if not line:
                continue
            stack, _, count_text = line.rpartition(" ")
            try:
                count = int(count_text)
            except ValueError:
                continue
            frames = stack.split(";")
            if not args.all_threads and not any("_run_once" in f or "run_forever" in f for f in frames):
                continue
            if args.only and not any(args.only in f for f in frames):
                continue
            total += count
            leaf = frames[-1]
            self_counts[short(leaf)] += count
            m = _FRAME.match(leaf)
            pkg_counts[package_of(m.group("file")) if m else "other"] += count
            for name in {short(f) for f in frames}:  # once per sample, even if recursive
                incl_counts[name] += count
    if not total:
        print("no samples matched")
        return 1
    print(f"{total} samples")
    print(f"\ntop {args.top} by self samples")
    for name, count in self_counts.most_common(args.top):
        print(f"  {count / total * 100:5.1f}%  {name}")
    print(f"\ntop {args.top} by inclusive samples")
    for name, count in incl_counts.most_common(args.top + 15)[: args.top + 15]:
        print(f"  {count / total * 100:5.1f}%  {name}")
    if args.group:
        print("\nself samples by package")
        for name, count in pkg_counts.most_common():
            print(f"  {count / total * 100:5.1f}%  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
