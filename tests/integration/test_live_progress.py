"""The live state read from storage while the real engine runs against the emulator over HTTP.

The reader runs in another thread and sees only the files in the run's folder, as the UI plugin
does in the api-server: no shared memory with the engine, no triggerer to ask.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from itertools import pairwise
from pathlib import Path

import pytest

from flex_provider.engine import ResultStore
from flex_provider.live import LiveState, merge_live_state, read_live_state
from tests.integration.conftest import API_KEY
from tests.integration.helpers import make_engine, make_items

pytestmark = pytest.mark.integration

FALLBACK = {"max_attempts": 1, "initial_wait_s": 0.0, "max_wait_s": 0.01, "jitter_s": 0.0}  # first 429: fall back


@contextmanager
def watching(root: Path, every_s: float = 0.05) -> Iterator[list[LiveState]]:
    """Read the live state of ``root`` from another thread until the block ends."""
    states: list[LiveState] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            state = read_live_state(root)
            if state is not None:
                states.append(state)
            stop.wait(every_s)

    thread = threading.Thread(target=watch, name="live-state-reader", daemon=True)
    thread.start()
    try:
        yield states
    finally:
        stop.set()
        thread.join(10)


def assert_monotonic(values: list[int]) -> None:
    assert all(a <= b for a, b in pairwise(values)), values


async def test_the_live_state_follows_a_run_and_ends_on_the_servers_and_the_manifests_numbers(emu, tmp_path: Path):
    emu.update(latency_s=0.6, latency_jitter=0.5, unavailable_rate=0.15, seed=11)
    engine = make_engine(emu, tmp_path, API_KEY, on_unavailable="fallback", retry=FALLBACK, max_concurrency=8)
    items = make_items(60)
    started = time.monotonic()
    with watching(tmp_path) as states:
        summary = await engine.run(items, total=len(items))
    took = time.monotonic() - started
    final = read_live_state(tmp_path)

    mid = [s for s in states if not s["finished"]]
    assert took > 3 and len(mid) > 20  # a run of a few seconds, seen many times while it ran
    assert_monotonic([s["done"] for s in mid])
    assert_monotonic([s["requests"] for s in mid])
    assert any(s["in_flight"] > 0 and 0 < s["done"] < 60 for s in mid)
    running = [s for s in mid if 10 <= s["done"] < 55]
    assert running and all(s["eta_s"] is not None and s["eta_at"] is not None for s in running)
    assert all(s["throughput_per_min"] and s["throughput_per_min"] > 0 for s in running)
    for state in running:  # the ETA lands after the checkpoint it was computed at
        assert datetime.fromisoformat(state["eta_at"]) >= datetime.fromisoformat(state["updated_at"])
    assert all(s["total"] == 60 and s["sessions"] == 1 and s["skipped"] == 0 for s in mid)
    assert all(len(s["series"]) >= 1 and s["series"][-1]["done"] == s["done"] for s in mid)

    assert final is not None and final["finished"]
    stats = emu.stats()
    assert final["requests"] == stats["requests"] == summary["requests"]  # what the server saw
    assert final["unavailable"] == stats["by_error_code"].get("resource_unavailable", 0) > 0
    assert final["fallbacks"] == summary["fallbacks"] == final["fallbacks_by_reason"].get("unavailable", 0)
    assert final["cost"]["actual"] == summary["cost_usd"]["actual"] > 0
    manifest = json.loads((tmp_path / "_manifest.json").read_text())
    assert final["cost"]["actual"] == manifest["cost_usd"]["actual"]
    assert final["tiers"] == summary["tiers"] == manifest["tiers"]
    assert sum(final["tiers"].values()) == 60 and final["tiers"]["flex"] > 0 and final["tiers"]["default"] > 0
    assert final["fallbacks"] == final["tiers"]["default"]
    billed = merge_live_state(ResultStore(tmp_path).load_sessions())  # the sessions' own view, no manifest
    assert not billed["finished"] and billed["cost"] == final["cost"] and billed["tokens"] == final["tokens"]
    assert billed["tiers"] == final["tiers"] and billed["done"] == 60 and billed["in_flight"] == 0
    assert (final["done"], final["succeeded"], final["in_flight"], final["eta_s"]) == (60, 60, 0, None)
    # While running, money and tokens are what was billed so far: they end where the manifest does.
    last = mid[-1]
    assert last["cost"]["actual"] <= final["cost"]["actual"] + 1e-9
    assert last["tokens"]["input"] <= final["tokens"]["input"]
    assert "my invoice" not in json.dumps(states) + json.dumps(final)  # no prompt text anywhere


async def test_the_progress_file_stays_current_while_nothing_finishes(emu, tmp_path: Path):
    """Flex answers can take minutes: the session must still say it is alive and what is in flight."""
    emu.update(latency_s=3.0, latency_jitter=0.0)
    engine = make_engine(emu, tmp_path, API_KEY, max_concurrency=4, progress_interval_s=0.3, flush_interval_s=5.0)
    with watching(tmp_path) as states:
        await engine.run(make_items(4), total=4)

    waiting = [s for s in states if s["done"] == 0]
    assert waiting and all(s["in_flight"] == 4 for s in waiting[1:])
    updates = sorted({s["updated_at"] for s in waiting if s["updated_at"]})
    assert len(updates) >= 5  # rewritten every progress interval though nothing finished
    assert all(s["eta_s"] is None for s in waiting)  # no throughput yet: no guess


async def test_after_a_restart_the_new_session_counts_what_the_first_one_did(emu, tmp_path: Path):
    """A triggerer dies mid-run; another one (a new engine session) finishes the run from storage."""
    emu.update(latency_s=0.3, latency_jitter=0.5)
    items = make_items(48)
    first = make_engine(emu, tmp_path, API_KEY, max_concurrency=6)
    task = asyncio.create_task(first.run(items, total=len(items)))
    while not ResultStore(tmp_path).part_files():
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    task.cancel()  # the triggerer stops: what finished is flushed, the rest is in flight
    with pytest.raises(asyncio.CancelledError):
        await task
    before = read_live_state(tmp_path)
    assert before is not None and not before["finished"] and 0 < before["done"] < 48

    second = make_engine(emu, tmp_path, API_KEY, max_concurrency=6, engine={"lease_ttl_s": 0.5})
    with watching(tmp_path) as states:
        summary = await second.run(items, total=len(items))
    final = read_live_state(tmp_path)

    running = [s for s in states if not s["finished"] and s["sessions"] == 2]
    assert running
    assert all(s["skipped"] == before["done"] for s in running[-5:])  # the first session's items, not sent again
    assert_monotonic([s["done"] for s in running])
    assert all(s["requests"] >= before["requests"] for s in running)  # the dead session's requests still count
    assert final is not None and final["finished"] and final["sessions"] == 2
    assert final["done"] == summary["total"] == 48
    assert final["cost"]["actual"] == summary["cost_usd"]["actual"]
    billed = merge_live_state(ResultStore(tmp_path).load_sessions())  # both sessions' bills, no manifest
    assert billed["cost"]["actual"] == pytest.approx(final["cost"]["actual"], abs=2e-6)
    assert billed["tokens"] == final["tokens"] and billed["tiers"] == final["tiers"]
    assert final["series"][0]["ts"] < datetime.fromisoformat(before["updated_at"]).timestamp() + 1e-3
