"""Every benchmark script runs, at a tiny size, inside ``make test``: so that none of them rots.

Each script runs as a subprocess (as a user runs it: ``python benchmarks/<script>.py ...``) and must
exit 0 and print the figures it always prints (its summary / "README row(s)" table). The numbers
themselves are not checked: at these sizes they mean nothing. What is checked is that the script
still works against the current engine, job path, emulator and Airflow: the scripts verify their own
runs (throughput.py compares every phase with the emulator's counters, memory.py that all N items
succeeded, overhead.py that the stub client saw exactly N calls).

``worker_slots.py`` needs a real Airflow cluster (minutes even at ``--docs 20``), so here it runs
with ``--check``: it writes the documents and both benchmark DAG files and parses them with
Airflow's DagBag, without starting a cluster.

The whole file takes ~25 s on a 2-core machine.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.bench

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"
TIMEOUT_S = 120  # per script; each takes a few seconds here


def run_script(name: str, *args: str, expect_rc: int = 0) -> str:
    """Run ``benchmarks/<name>`` and return its stdout. Its own process group, so that on a timeout
    the emulator subprocess it started goes too."""
    proc = subprocess.Popen(
        [sys.executable, str(BENCH / name), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{name} {' '.join(args)} did not finish in {TIMEOUT_S} s\n{out[-3000:]}\n{err[-3000:]}")
    assert proc.returncode == expect_rc, f"{name} exited {proc.returncode}\n{out[-3000:]}\n{err[-3000:]}"
    return out


def readme_rows(out: str, header: str) -> list[str]:
    """The table rows printed after ``header`` (e.g. "README rows:"), without the two header lines."""
    assert header in out, out[-3000:]
    lines = out.split(header, 1)[1].strip().splitlines()
    return [line for line in lines[2:] if line.startswith("| ")]


def test_throughput_every_phase() -> None:
    phases = [
        "sdk-default",
        "sdk-aiohttp",
        "sdk-post",
        "raw-aiohttp",
        "engine-aiohttp",
        "engine-httpx",
        "engine-sharded",
    ]
    out = run_script(
        "throughput.py",
        *("--n", "100", "--concurrency", "20", "--latency", "0.05", "--repeat", "1"),
        *("--phases", ",".join(phases), "--shards", "2", "--phase-timeout", "60"),
    )
    assert "ideal rate C/L = 400 items/s" in out and "FlexHook default transport: aiohttp" in out
    assert "summary (mean over runs" in out
    for phase in phases[1:]:
        assert re.search(rf"^  {phase} +throughput x\d+\.\d\d \(\d+\.\d\d\); CPU x\d+\.\d\d", out, re.M), out[-3000:]
    assert re.search(r"targets, engine-aiohttp vs sdk-default \(means\): throughput x\d", out), out[-3000:]
    assert re.search(r"^quietest run: 1 of 1", out, re.M), out[-3000:]
    rows = readme_rows(out, "README rows:")
    assert [row.split(" | ")[5] for row in rows] == phases, rows
    assert all(" | 100 | 20 | 0.05 | no | " in row for row in rows), rows


def test_memory_job_path() -> None:
    out = run_script("memory.py", *("--n", "300", "--concurrency", "20", "--max-seconds", "60", "--period", "0.1"))
    assert "run: 300 succeeded, 0 failed" in out, out[-3000:]
    assert re.search(r"RSS MiB: before \d+ \| 10% \S+ \| 50% \S+ \| 90% \S+ \| peak", out), out[-3000:]
    assert "target peak RSS < 300 MB at N=100,000: n/a (N < 100,000)" in out
    rows = readme_rows(out, "README row:")
    assert len(rows) == 1 and rows[0].split(" | ")[1:4] == ["300", "20", "0.0"], rows


def test_overhead_all_variants() -> None:
    out = run_script("overhead.py", *("--n", "300", "--repeat", "1", "--variants", "all"))
    assert "N=300 C=200, CPU per item (mean of 1 runs" in out, out[-3000:]
    assert re.search(r"^  floor +\d+\.\d us", out, re.M), out[-3000:]
    variants = re.findall(r"^  (engine[\w-]*) +\d+\.\d us .* overhead over floor", out, re.M)
    assert variants[0] == "engine" and len(variants) >= 4, out[-3000:]  # as shipped + the diagnostic variants
    assert re.search(r"engine _finalize: \d+\.\d\d s wall", out), out[-3000:]


PYSPY_RAW = """\
<module> (benchmarks/throughput.py:300);run (/usr/lib/python3.11/asyncio/runners.py:190);run_forever (/usr/lib/python3.11/asyncio/base_events.py:608);_run_once (/usr/lib/python3.11/asyncio/base_events.py:1922);_assign_requests_to_connections (/x/.venv/lib/python3.11/site-packages/httpcore2/_async/connection_pool.py:250) 6
<module> (benchmarks/throughput.py:300);run (/usr/lib/python3.11/asyncio/runners.py:190);run_forever (/usr/lib/python3.11/asyncio/base_events.py:608);_run_once (/usr/lib/python3.11/asyncio/base_events.py:1922);_call_one (/work/main/flex_provider/engine/runner.py:400);create (/x/.venv/lib/python3.11/site-packages/openai/resources/responses/responses.py:800) 3
<module> (benchmarks/throughput.py:300);run (/usr/lib/python3.11/asyncio/runners.py:190);run_forever (/usr/lib/python3.11/asyncio/base_events.py:608);_run_once (/usr/lib/python3.11/asyncio/base_events.py:1922);_call_one (/work/main/flex_provider/engine/runner.py:400) 1
_bootstrap (/usr/lib/python3.11/threading.py:995);run (/work/main/benchmarks/_common.py:150);sleep (<built-in>) 90
a line that is not a sample
"""


def test_pyspy_top_on_a_synthetic_raw_file(tmp_path: Path) -> None:
    raw = tmp_path / "engine.txt"
    raw.write_text(PYSPY_RAW)
    out = run_script("pyspy_top.py", str(raw), "--top", "5", "--group")
    # only the event-loop thread's 10 samples count (the sampler thread's 90 are left out)
    assert out.startswith("10 samples\n"), out
    assert re.search(r"^   60\.0%  _assign_requests_to_connections \(httpcore2/", out, re.M), out
    assert re.search(r"^  100\.0%  _run_once \(stdlib/asyncio/base_events\.py\)", out, re.M), out
    assert "self samples by package" in out and re.search(r"^   10\.0%  flex_provider$", out, re.M), out
    assert run_script("pyspy_top.py", str(raw), "--all-threads").startswith("100 samples\n")
    assert "no samples matched" in run_script("pyspy_top.py", str(raw), "--only", "nothing-like-this", expect_rc=1)


def test_worker_slots_help_and_check() -> None:
    assert "--docs" in run_script("worker_slots.py", "--help")
    out = run_script("worker_slots.py", "--check", "--docs", "5", "--concurrency", "3")
    assert "# check: flex_bench_deferrable parses: enrich (FlexLLMOperator)" in out, out
    assert "# check: flex_bench_mapped parses: respond (MappedOperator)" in out, out
    assert out.rstrip().endswith("# check: ok"), out
