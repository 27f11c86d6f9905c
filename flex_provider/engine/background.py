"""Background mode: poll many stored response ids in batches instead of holding a connection each.

A request created with ``background=True`` survives a client restart; the engine checkpoints its id
and waits here. One polling loop serves every waiting item, retrieving ids concurrently (bounded)
once per ``interval`` seconds, so 10,000 outstanding responses cost one sweep per interval.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import openai

from flex_provider.engine.errors import Verdict, classify

TERMINAL = {"completed", "failed", "cancelled", "incomplete"}


class ResponseGone(RuntimeError):
    """The stored response id is unknown to the server (expired or never created): create anew."""


class BackgroundPoller:
    def __init__(self, client: Any, interval: float, concurrency: int = 16, timeout: float = 60.0) -> None:
        self.client = client
        self.interval = interval
        self.timeout = timeout
        self._sem = asyncio.Semaphore(concurrency)
        self._waiting: dict[str, asyncio.Future[Any]] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    async def wait(self, response_id: str) -> Any:
        """Wait for a terminal response object; raises ResponseGone or a fatal API error."""
        future = self._waiting.get(response_id)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._waiting[response_id] = future
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop(), name="flex-background-poller")
        return await future

    async def _loop(self) -> None:
        while self._waiting:
            await asyncio.sleep(self.interval)
            await asyncio.gather(*(self._poll(rid) for rid in list(self._waiting)))

    async def _poll(self, response_id: str) -> None:
        future = self._waiting.get(response_id)
        if future is None or future.done():
            self._waiting.pop(response_id, None)
            return
        async with self._sem:
            try:
                # A deadline on the whole poll: a body trickling in byte by byte must not hold up the sweep.
                async with asyncio.timeout(self.timeout):
                    response = await self.client.responses.retrieve(response_id, timeout=self.timeout)
            except openai.NotFoundError:
                self._resolve(response_id, exc=ResponseGone(f"background response {response_id} is gone"))
                return
            except Exception as exc:
                if classify(exc) in (Verdict.TRANSIENT, Verdict.RATE_LIMITED, Verdict.UNAVAILABLE):
                    return  # try again next sweep (a malformed answer included)
                self._resolve(response_id, exc=exc)
                return
        # A malformed body (null, text, no status) is not an answer: poll again next sweep.
        if not isinstance(response, (str, type(None))) and getattr(response, "status", None) in TERMINAL:
            self._resolve(response_id, value=response)

    def _resolve(self, response_id: str, value: Any = None, exc: BaseException | None = None) -> None:
        future = self._waiting.pop(response_id, None)
        if future is None or future.done():
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(value)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for future in self._waiting.values():
            future.cancel()
        self._waiting.clear()


async def cancel_responses(client: Any, response_ids: list[str], concurrency: int = 16) -> int:
    """Cancel background responses (idempotent server-side); returns how many calls succeeded."""
    sem = asyncio.Semaphore(concurrency)

    async def one(rid: str) -> bool:
        async with sem:
            try:
                await client.responses.cancel(rid, timeout=30)
                return True
            except Exception:
                return False

    results = await asyncio.gather(*(one(rid) for rid in response_ids))
    return sum(results)
