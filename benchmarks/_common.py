"""Shared helpers of the benchmark scripts: the emulator subprocess, CPU/RSS probes.

Everything runs on loopback. The emulator always runs as a separate process so its CPU is not
charged to the client under test (and so the GIL of the benchmark process is not shared).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import resource
import select
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
READY_PREFIX = "flex emulator listening on "


@dataclass
class Emulator:
    proc: subprocess.Popen
    base_url: str  # http://127.0.0.1:PORT/v1
    ps: psutil.Process = field(init=False)

    def __post_init__(self) -> None:
        self.ps = psutil.Process(self.proc.pid)

    @property
    def root_url(self) -> str:
        return self.base_url.removesuffix("/v1")

    def cpu_s(self) -> float:
        t = self.ps.cpu_times()
        return t.user + t.system

    def rss_mb(self) -> float:
        return self.ps.memory_info().rss / 2**20

    def stats(self) -> dict:
        with urllib.request.urlopen(self.root_url + "/emulator/stats", timeout=30) as resp:
            return json.loads(resp.read())

    def reset(self) -> None:
        req = urllib.request.Request(self.root_url + "/emulator/reset", data=b"", method="POST")
        with urllib.request.urlopen(req, timeout=30) as resp:
            resp.read()


@contextlib.contextmanager
def run_emulator(
    latency_s: float,
    *,
    cpu: int | None = None,
    extra: list[str] | None = None,
    startup_timeout: float = 30.0,
) -> Iterator[Emulator]:
    """``python -m flex_provider.emulator`` on a free loopback port; killed in ``finally``.

    ``cpu``: pin the emulator to that core (sched_setaffinity), or None to leave it unpinned.
    """
    cmd = [
        sys.executable,
        "-m",
        "flex_provider.emulator",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--latency-s",
        str(latency_s),
        "--latency-jitter",
        "0",
        *(extra or []),
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        if cpu is not None:
            os.sched_setaffinity(proc.pid, {cpu})
        deadline = time.monotonic() + startup_timeout
        base_url = None
        assert proc.stdout is not None
        while base_url is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or proc.poll() is not None:
                raise RuntimeError(f"emulator did not start (exit code {proc.poll()})")
            ready, _, _ = select.select([proc.stdout], [], [], min(remaining, 0.5))
            if ready:
                line = proc.stdout.readline()
                if line.startswith(READY_PREFIX):
                    base_url = line[len(READY_PREFIX) :].strip()
        yield Emulator(proc, base_url)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def rss_mb() -> float:
    """Current RSS of this process in MiB."""
    return psutil.Process().memory_info().rss / 2**20


def maxrss_mb() -> float:
    """Peak RSS of this process so far (ru_maxrss, KiB on Linux) in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class RssSampler:
    """Samples this process's RSS every ``period`` seconds in a daemon thread.

    ``progress`` (optional callable -> int) is read with each sample so RSS can be reported
    against progress (items done)."""

    def __init__(self, period: float = 0.5, progress=None) -> None:
        self.period = period
        self.progress = progress
        self.samples: list[tuple[float, int, float]] = []  # (t, done, rss MiB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self._ps = psutil.Process()
        self._t0 = time.monotonic()

    def _sample(self) -> None:
        done = self.progress() if self.progress else 0
        self.samples.append((time.monotonic() - self._t0, done, self._ps.memory_info().rss / 2**20))

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            self._sample()

    def __enter__(self) -> RssSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sample()

    @property
    def peak(self) -> float:
        return max(s[2] for s in self.samples)

    def at_progress(self, fraction: float, total: int) -> float | None:
        """RSS of the first sample at or beyond ``fraction`` of ``total`` items done."""
        target = fraction * total
        for _, done, rss in self.samples:
            if done >= target:
                return rss
        return None


def machine_busy_s() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine since boot, from /proc/stat (all cores)."""
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            fields = [int(x) for x in handle.readline().split()[1:]]
    except OSError:
        return 0.0, 0.0
    hz = os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq) / hz, steal / hz


class GcTimer:
    """Time spent in the cyclic garbage collector (all generations) while in the ``with`` block."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = [0, 0, 0]
        self._start = 0.0

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._start
            self.collections[info["generation"]] += 1

    def __enter__(self) -> GcTimer:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)


def pin_self(cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def machine_line() -> str:
    load = os.getloadavg()
    return (
        f"python {sys.version.split()[0]}, {os.cpu_count()} cores, "
        f"load avg at start {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}"
    )
