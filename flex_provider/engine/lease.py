"""A lease on an output folder: one engine session works in it at a time.

Two live runs in one folder (two task instances given the same output_path, or two copies of a
trigger during a triggerer handover) would otherwise both send most items. Storage here may be an
object store, with no locks and no atomic create-if-absent, so the lease is a small file,
``_lease.json``::

    {"holder": "<session>", "expires_at": <epoch s>, "heartbeat_at": <epoch s>, "ttl_s": 30,
     "host": "<hostname>", "pid": 1234}

To acquire: read it; if it is absent, unreadable, expired or already ours, write ours (whole file,
temp then rename), wait ``settle_s`` and read it back: we hold the lease only if it still names us.
The last writer wins, and the settle delay lets two near-simultaneous writers both see the same
last writer. While another live holder has it, wait, polling every ``poll_s``, and say at INFO every
``log_every_s`` which session holds it and how long ago its heartbeat was.

While held, a heartbeat renews the expiry every ``ttl_s / 3``. If on renewal the file names another
holder, or is gone, someone took over (we were presumed dead): the lease is lost, ``lost`` is set and
``on_lost`` is called, so that the engine stops sending. A storage error on renewal is logged and
retried at the next beat. On exit the file is deleted only if it still names us and has not
expired (once expired, someone may be taking it over right now).

A dead holder (kill -9) blocks others for at most ``ttl_s``. Clocks of different hosts are compared
(``expires_at`` is written by the holder): keep ``ttl_s`` well above their skew. The file starts with
``_``: the store never reads it as results nor deletes it. All storage I/O runs in threads.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from flex_provider.engine.aio import finish_even_if_cancelled
from flex_provider.engine.logs import RunLog

LEASE_NAME = "_lease.json"

log = logging.getLogger(__name__)


class FolderLease:
    """``async with FolderLease(root, session) as lease:`` waits until this session holds the
    folder, keeps it with a heartbeat, and releases it on exit. Watch ``lease.lost``."""

    def __init__(
        self,
        root: Any,
        holder: str,
        *,
        ttl_s: float = 30.0,
        settle_s: float = 1.0,
        poll_s: float = 2.0,
        log_every_s: float = 30.0,
        logger: RunLog | None = None,
        on_lost: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        if not holder:
            raise ValueError("a lease needs a holder name (the engine session id)")
        if ttl_s <= 0 or settle_s < 0 or poll_s <= 0:
            raise ValueError("ttl_s and poll_s must be > 0, settle_s >= 0")
        if settle_s >= ttl_s / 3:
            raise ValueError(f"settle_s ({settle_s}) must be shorter than a heartbeat interval (ttl_s / 3)")
        self.root = root
        self.path = root / LEASE_NAME
        self.holder = holder
        self.ttl_s = ttl_s
        self.settle_s = settle_s
        self.poll_s = poll_s
        self.log_every_s = log_every_s
        self.log = logger or log
        self.on_lost = on_lost
        self.lost = asyncio.Event()  # set when another holder took the lease over
        self.lost_to: str | None = None  # who took it (None: the file was removed)
        self._clock = clock
        self._sleep = sleep
        self._held = False
        self._expires_at = 0.0
        self._heartbeat: asyncio.Task[None] | None = None
        # Serialises file writes with the release: a heartbeat write still running in its thread
        # when the heartbeat task is cancelled must not recreate the file after the release.
        self._io_lock = threading.Lock()
        self._released = False

    @property
    def held(self) -> bool:
        return self._held

    # -- storage (blocking; called through asyncio.to_thread) ---------------------------------
    def _read(self) -> tuple[dict[str, Any] | None, str | None]:
        """``(lease, None)``; ``(None, None)`` when absent; ``(None, reason)`` when unreadable."""
        try:
            with self.path.open("rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            return None, None
        try:
            value = json.loads(data.decode("utf-8"))
        except (ValueError, RecursionError) as exc:
            return None, f"not JSON ({type(exc).__name__})"
        if not isinstance(value, dict) or not isinstance(value.get("holder"), str) or not value["holder"]:
            return None, "no holder"
        expires_at = value.get("expires_at")
        if isinstance(expires_at, bool) or not isinstance(expires_at, int | float):
            return None, "no expires_at"
        return value, None

    def _write(self, now: float) -> None:
        with self._io_lock:
            if self._released:
                return
            expires_at = now + self.ttl_s
            text = json.dumps(
                {
                    "holder": self.holder,
                    "expires_at": expires_at,
                    "heartbeat_at": now,
                    "ttl_s": self.ttl_s,
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                }
            )
            self.root.mkdir(parents=True, exist_ok=True)
            # Own temp name per holder (not the store's _tmp- prefix, which finalize sweeps).
            tmp = self.root / f"{LEASE_NAME}.{self.holder}.tmp"
            tmp.write_text(text, encoding="utf-8")
            tmp.rename(self.path)
            self._expires_at = expires_at

    def _release_if_ours(self) -> None:
        with self._io_lock:
            self._released = True
            lease, _ = self._read()
            if lease is not None and lease["holder"] == self.holder and self._clock() < lease["expires_at"]:
                self.path.unlink(missing_ok=True)

    # -- acquiring ------------------------------------------------------------------------------
    async def __aenter__(self) -> FolderLease:
        await self.acquire()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.release()

    async def acquire(self) -> None:
        """Wait until this session holds the lease, then start the heartbeat."""
        self._released = False
        self.lost.clear()
        self.lost_to = None
        started = self._clock()
        last_said: float | None = None
        wrote = False
        try:
            while True:
                lease, problem = await asyncio.to_thread(self._read)
                now = self._clock()
                if problem is not None:
                    self.log.warning(
                        "lease file %s is unreadable (%s): treating it as expired, taking it over", self.path, problem
                    )
                if lease is not None and lease["holder"] != self.holder and now < lease["expires_at"]:
                    if last_said is None or now - last_said >= self.log_every_s:
                        last_said = now
                        self._say_waiting(lease, now)
                    await self._sleep(min(self.poll_s, max(lease["expires_at"] - now, 0.0) + 0.01))
                    continue
                if lease is not None and lease["holder"] != self.holder:
                    self.log.info(
                        "lease of engine session %s on %s expired %.1f s ago (holder gone?): taking over",
                        lease["holder"],
                        self.root,
                        now - lease["expires_at"],
                    )
                wrote = True
                await asyncio.to_thread(self._write, now)
                await self._sleep(self.settle_s)
                back, _ = await asyncio.to_thread(self._read)
                if back is not None and back["holder"] == self.holder:
                    break
                # Another session wrote after us: it holds the lease (the next read shows it).
        except BaseException:
            if wrote:  # cancelled or failed while contending: leave no lease of ours behind
                await finish_even_if_cancelled(asyncio.to_thread(self._release_if_ours))
            raise
        self._held = True
        waited = self._clock() - started - self.settle_s  # the settle delay is not waiting on anyone
        self.log.info(
            "engine session %s holds the lease on %s%s",
            self.holder,
            self.root,
            f" (after waiting {waited:.0f} s)" if waited >= 1 else "",
        )
        self._heartbeat = asyncio.create_task(self._beat(), name=f"flex-lease-{self.holder}")

    def _say_waiting(self, lease: dict[str, Any], now: float) -> None:
        heartbeat_at = lease.get("heartbeat_at")
        ago = (
            f"{now - heartbeat_at:.0f} s ago"
            if isinstance(heartbeat_at, int | float) and not isinstance(heartbeat_at, bool)
            else "unknown"
        )
        self.log.info(
            "output folder %s is in use by engine session %s (host %s, pid %s; last heartbeat %s, "
            "lease expires in %.0f s): waiting for it to finish or expire",
            self.root,
            lease["holder"],
            lease.get("host", "?"),
            lease.get("pid", "?"),
            ago,
            lease["expires_at"] - now,
        )

    # -- holding --------------------------------------------------------------------------------
    async def _beat(self) -> None:
        interval = self.ttl_s / 3
        while True:
            await self._sleep(interval)
            try:
                lease, problem = await asyncio.to_thread(self._read)
                if lease is None and problem is None:
                    self._lose(None)
                    return
                if lease is not None and lease["holder"] != self.holder:
                    self._lose(lease)
                    return
                # Ours, or unreadable (a torn write of our own on a store without atomic rename):
                # renew it.
                await asyncio.to_thread(self._write, self._clock())
            except Exception as exc:  # storage hiccup: the next beat tries again
                late = self._clock() - self._expires_at
                self.log.warning(
                    "could not renew the lease on %s (%s: %s)%s; retrying",
                    self.root,
                    type(exc).__name__,
                    exc,
                    f", it expired {late:.0f} s ago" if late > 0 else "",
                )

    def _lose(self, lease: dict[str, Any] | None) -> None:
        self._held = False
        self.lost_to = lease["holder"] if lease is not None else None
        self.log.warning(
            "engine session %s LOST the lease on %s: %s; stop sending (the other session does the rest)",
            self.holder,
            self.root,
            f"engine session {self.lost_to} took it over (this one was presumed dead)"
            if lease is not None
            else "the lease file was removed (another session finished, or the folder was cleared)",
        )
        self.lost.set()
        if self.on_lost is not None:
            try:
                self.on_lost()
            except Exception:  # the caller's bug must not look like a storage error to _beat
                self.log.exception("on_lost callback of the lease on %s failed", self.root)

    async def release(self) -> None:
        """Stop the heartbeat; delete the lease file if it still names us."""
        task, self._heartbeat = self._heartbeat, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self._held:
            self._held = False
            await finish_even_if_cancelled(asyncio.to_thread(self._release_if_ours))
