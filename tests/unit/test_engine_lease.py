"""FolderLease: one engine session works in an output folder at a time (real files, small ttl)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

import pytest

from flex_provider.engine.lease import LEASE_NAME, FolderLease
from flex_provider.engine.store import ResultStore, new_session_id

FAST = {"ttl_s": 0.6, "settle_s": 0.05, "poll_s": 0.05}


def read_lease(root: Path) -> dict:
    return json.loads((root / LEASE_NAME).read_text())


def write_lease(root: Path, holder: str, expires_in: float, heartbeat_ago: float = 0.0) -> None:
    now = time.time()
    (root / LEASE_NAME).write_text(
        json.dumps({"holder": holder, "expires_at": now + expires_in, "heartbeat_at": now - heartbeat_ago})
    )


async def held_after(task: asyncio.Task, seconds: float) -> bool:
    done, _ = await asyncio.wait({task}, timeout=seconds)
    return bool(done)


async def test_acquire_on_an_empty_folder_and_release(tmp_path):
    root = tmp_path / "out"  # does not exist yet
    async with FolderLease(root, "A", **FAST) as lease:
        lease_file = read_lease(root)
        assert lease_file["holder"] == "A"
        assert lease_file["expires_at"] > time.time()
        assert {"heartbeat_at", "host", "pid"} <= set(lease_file)
        assert lease.held and not lease.lost.is_set()
    assert not (root / LEASE_NAME).exists()
    assert not lease.held


async def test_second_holder_waits_while_the_first_heartbeats_then_gets_it_on_release(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="flex_provider.engine.lease")
    first = FolderLease(tmp_path, "A", **FAST)
    await first.__aenter__()
    second = FolderLease(tmp_path, "B", log_every_s=0.3, **FAST)
    waiting = asyncio.create_task(second.__aenter__())
    assert not await held_after(waiting, 1.5)  # > 2 ttl: only the heartbeat keeps A's lease alive
    assert read_lease(tmp_path)["holder"] == "A"
    waits = [r.getMessage() for r in caplog.records if "in use by engine session A" in r.getMessage()]
    assert len(waits) >= 2 and all(r.levelno == logging.INFO for r in caplog.records if "in use" in r.getMessage())
    assert "heartbeat" in waits[0]
    started = time.monotonic()
    await first.__aexit__(None, None, None)
    assert await held_after(waiting, 1.0)
    assert time.monotonic() - started < 0.5  # right after release, not after expiry
    assert read_lease(tmp_path)["holder"] == "B" and not first.lost.is_set()
    await second.__aexit__(None, None, None)
    assert not (tmp_path / LEASE_NAME).exists()


async def test_a_dead_holders_lease_is_taken_after_it_expires(tmp_path):
    write_lease(tmp_path, "dead", expires_in=0.4, heartbeat_ago=0.2)  # killed: no more heartbeats
    started = time.monotonic()
    async with FolderLease(tmp_path, "B", **FAST):
        waited = time.monotonic() - started
        assert read_lease(tmp_path)["holder"] == "B"
    assert 0.35 <= waited < 1.5


async def test_an_already_expired_lease_is_taken_at_once(tmp_path):
    write_lease(tmp_path, "dead", expires_in=-60, heartbeat_ago=90)
    started = time.monotonic()
    async with FolderLease(tmp_path, "B", **FAST):
        assert time.monotonic() - started < 0.4


async def test_expiry_uses_the_injected_clock(tmp_path):
    (tmp_path / LEASE_NAME).write_text(json.dumps({"holder": "X", "expires_at": 1000.0, "heartbeat_at": 990.0}))
    now = [500.0]
    lease = FolderLease(tmp_path, "B", clock=lambda: now[0], **FAST)
    task = asyncio.create_task(lease.__aenter__())
    assert not await held_after(task, 0.3)
    now[0] = 1000.5
    assert await held_after(task, 0.5)
    assert read_lease(tmp_path)["expires_at"] == pytest.approx(1000.5 + FAST["ttl_s"])
    await lease.__aexit__(None, None, None)


async def test_two_contenders_racing_exactly_one_wins(tmp_path):
    async def race(root: Path) -> None:
        leases = [FolderLease(root, name, **FAST) for name in ("A", "B", "C")]
        tasks = [asyncio.create_task(lease.__aenter__()) for lease in leases]
        done, pending = await asyncio.wait(tasks, timeout=1.0)  # > settle and > one ttl
        assert len(done) == 1 and len(pending) == 2
        (winner,) = [lease for lease, task in zip(leases, tasks, strict=True) if task in done]
        assert read_lease(root)["holder"] == winner.holder
        assert not winner.lost.is_set()
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        assert read_lease(root)["holder"] == winner.holder  # the losers left no trace
        await winner.__aexit__(None, None, None)

    await asyncio.gather(*(race(tmp_path / str(n)) for n in range(4)))


async def test_a_holder_whose_lease_was_taken_over_sees_lost(tmp_path, caplog):
    called = []
    lease = FolderLease(tmp_path, "A", on_lost=lambda: called.append(True), **FAST)
    async with lease:
        write_lease(tmp_path, "intruder", expires_in=30)  # A was presumed dead and someone took over
        await asyncio.wait_for(lease.lost.wait(), timeout=1.0)  # noticed at the next heartbeat
        assert called == [True] and not lease.held
        assert "intruder" in caplog.text
    assert read_lease(tmp_path)["holder"] == "intruder"  # release never deletes another's lease


async def test_a_failing_on_lost_callback_does_not_keep_the_heartbeat_going(tmp_path, caplog):
    calls = []

    def on_lost() -> None:
        calls.append(True)
        raise RuntimeError("callback bug")

    lease = FolderLease(tmp_path, "A", on_lost=on_lost, **FAST)
    async with lease:
        write_lease(tmp_path, "intruder", expires_in=30)
        await asyncio.wait_for(lease.lost.wait(), timeout=1.0)
        await asyncio.sleep(0.5)  # two more beats' worth
        assert calls == [True]
        assert "callback bug" in caplog.text
    assert read_lease(tmp_path)["holder"] == "intruder"


def test_settle_must_be_shorter_than_a_heartbeat():
    with pytest.raises(ValueError, match="settle_s"):
        FolderLease(Path("."), "A", ttl_s=3.0, settle_s=1.0)


async def test_a_lease_file_that_disappeared_counts_as_lost(tmp_path):
    lease = FolderLease(tmp_path, "A", **FAST)
    async with lease:
        (tmp_path / LEASE_NAME).unlink()
        await asyncio.wait_for(lease.lost.wait(), timeout=1.0)
    assert not (tmp_path / LEASE_NAME).exists()


@pytest.mark.parametrize("content", [b"{broken", b"[1, 2]", b'{"holder": 3}', b'{"holder": "X"}', b"\xff\xfe"])
async def test_a_corrupt_lease_file_is_treated_as_expired(tmp_path, caplog, content):
    (tmp_path / LEASE_NAME).write_bytes(content)
    started = time.monotonic()
    async with FolderLease(tmp_path, "B", **FAST):
        assert time.monotonic() - started < 0.4
        assert read_lease(tmp_path)["holder"] == "B"
    assert any(r.levelno == logging.WARNING and LEASE_NAME in r.getMessage() for r in caplog.records)


async def test_a_storage_error_during_heartbeat_is_logged_not_lost(tmp_path, caplog, monkeypatch):
    lease = FolderLease(tmp_path, "A", **FAST)
    async with lease:
        original, failures = lease._write, []

        def flaky_write(now: float) -> None:
            if not failures:
                failures.append(now)
                raise OSError("storage hiccup")
            original(now)

        monkeypatch.setattr(lease, "_write", flaky_write)
        await asyncio.sleep(0.7)  # a few heartbeats, the first of which fails
        assert failures and not lease.lost.is_set()
        assert read_lease(tmp_path)["expires_at"] > time.time()
    assert "storage hiccup" in caplog.text


async def test_a_cancelled_holder_releases(tmp_path):
    entered = asyncio.Event()

    async def work() -> None:
        async with FolderLease(tmp_path, "A", **FAST):
            entered.set()
            await asyncio.sleep(30)

    task = asyncio.create_task(work())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not (tmp_path / LEASE_NAME).exists()


async def test_the_lease_file_is_neither_a_result_nor_removed_by_finalize(tmp_path):
    store = ResultStore(tmp_path)
    async with FolderLease(tmp_path, store.session, **FAST):
        store.write_part([{"id": "a", "status": "succeeded", "output": "x", "error": None, "finished_at": "t"}])
        assert [p.name for p in store.part_files()] == [f"part-{store.session}-00001.jsonl"]
        store.finalize({})
        assert read_lease(tmp_path)["holder"] == store.session
        assert set(store.load().final_ids) == {"a"}
    assert not (tmp_path / LEASE_NAME).exists()


def test_holder_is_a_session_id_in_practice():
    # The engine passes its store's session id; anything non-empty works.
    assert FolderLease(Path("."), new_session_id()).holder
    with pytest.raises(ValueError):
        FolderLease(Path("."), "")
