"""Background mode: create responses with ``background=True``, checkpoint their ids, wait for them.

A request created with ``background=True`` survives a client restart. :class:`BackgroundSubmitter`
creates one per item (or re-attaches to the one a previous session left pending), makes its id
durable *before* waiting, and creates it anew when it vanished or failed for a passing reason.
:class:`BackgroundPoller` does the waiting: one polling loop serves every waiting item, retrieving
ids concurrently (bounded) once per ``interval`` seconds, so 10,000 outstanding responses cost one
sweep per interval instead of a held connection each.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypedDict

import openai

from flex_provider.engine.attempt import ItemAttempt
from flex_provider.engine.calls import CallBuilder, Reply
from flex_provider.engine.errors import Verdict, classify, redact
from flex_provider.engine.progress import RunCounters
from flex_provider.engine.usage import Usage

TERMINAL = {"completed", "failed", "cancelled", "incomplete"}

# ``error.code`` of a ``failed`` background response worth creating again (within the item's budget):
# the server's or the capacity's fault, not the request's. A tuple, compared with ``==``: a malformed
# body's code need not be hashable.
RECREATE_CODES = (None, "server_error", "resource_unavailable", "rate_limit_exceeded")


class _PendingBase(TypedDict):
    id: str  # the item's id
    response_id: str
    tier: str


class PendingEntry(_PendingBase, total=False):
    """One line of ``_pending/``: a background response created for an item, not yet answered.
    Written as id, response_id, tier, prompt_hash; ``prompt_hash`` is absent in entries written
    before prompt hashes existed (optional by ``total=False``: ``NotRequired`` is invisible at runtime
    under postponed annotations)."""

    prompt_hash: str | None


class BackgroundFailed(RuntimeError):
    """A background response ended ``failed``/``incomplete``/``cancelled`` on the server.

    An ``incomplete`` one (it hit ``max_output_tokens``) was generated, so billed: ``usage``,
    ``service_tier`` and ``model`` carry what the response reported (the record and the budget count
    it); None when it reported nothing."""

    usage: Usage | None = None
    service_tier: str | None = None
    model: str | None = None

    def __init__(self, status: str, message: str, retryable: bool) -> None:
        super().__init__(f"background response {status}: {message}")
        self.status = status
        self.retryable = retryable


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


class BackgroundSubmitter:
    """The background-mode answer to one item: create (or re-attach), checkpoint, wait, re-create.

    The engine hands it ``create`` (its retrying call creating a response for an attempt: requests
    and retries are counted there) and ``write_pending`` (makes entries durable on storage; must
    not return before they are). Both stay with the engine, which owns retries and storage; this
    class owns the submit/re-attach loop, the entries left by earlier sessions and the group commit.
    """

    def __init__(
        self,
        poller: BackgroundPoller,
        calls: CallBuilder,
        counters: RunCounters,
        *,
        create: Callable[[ItemAttempt], Awaitable[str]],
        write_pending: Callable[[list[PendingEntry]], Awaitable[None]],
        max_attempts: int,
        secrets: tuple[str, ...] = (),
    ) -> None:
        self.poller = poller
        self.calls = calls
        self.counters = counters
        self._create = create
        self._write_pending = write_pending
        self._max_attempts = max_attempts
        self._secrets = secrets
        self._known: dict[str, PendingEntry] = {}  # item id -> entry left pending by an earlier session
        self._buffer: list[PendingEntry] = []
        self._lock = asyncio.Lock()

    def adopt(self, pending: Mapping[str, PendingEntry]) -> None:
        """Take the pending entries found on storage at the start of the run (item id -> entry)."""
        self._known = dict(pending)

    async def answer(self, attempt: ItemAttempt) -> Reply:
        """Create (or re-attach to) a background response and wait for it through the poller.

        The response id is made durable *before* waiting, so a restarted trigger polls it instead
        of paying for the item again. A vanished id (expired) or a failed response is created anew,
        within the same retry budget."""
        item, sent_hash, tier = attempt.item, attempt.prompt_hash, attempt.requested_tier
        entry = self._known.pop(item.id, None)
        # Re-attach only to a response for this very prompt (entries of older versions carry no hash).
        if entry is not None and entry.get("tier") == tier and entry.get("prompt_hash") in (None, sent_hash):
            self.counters.background_reattached += 1
            response_id: str | None = entry["response_id"]
        else:
            response_id = None
        for _ in range(self._max_attempts):
            if response_id is None:
                response_id = await self._create(attempt)
                self.counters.background_created += 1
                await self._checkpoint(
                    {"id": item.id, "response_id": response_id, "tier": tier, "prompt_hash": sent_hash}
                )
            try:
                response = await self.poller.wait(response_id)
            except ResponseGone:
                response_id = None
                continue
            if response.status == "completed":
                return self.calls.read_response(response)
            error = getattr(response, "error", None)
            message = (
                getattr(error, "message", None)
                or getattr(getattr(response, "incomplete_details", None), "reason", None)
                or response.status
            )
            if response.status == "failed" and getattr(error, "code", None) in RECREATE_CODES:
                self.counters.transient_errors += 1
                response_id = None
                continue
            failed = BackgroundFailed(response.status, redact(str(message), self._secrets), retryable=False)
            billed = getattr(response, "usage", None)
            if billed is not None:
                failed.usage = Usage.from_api(billed)
                failed.service_tier = getattr(response, "service_tier", None)
                failed.model = getattr(response, "model", None)
            raise failed
        raise BackgroundFailed("failed", "retry budget exhausted on failed background responses", retryable=True)

    async def _checkpoint(self, entry: PendingEntry) -> None:
        """Group commit: every worker that created a response in the same moment shares one write,
        and none proceeds to wait before its id is on storage."""
        self._buffer.append(entry)
        async with self._lock:
            if entry not in self._buffer:
                return  # written by the batch just before ours
            batch, self._buffer = self._buffer, []
            await self._write_pending(batch)

    async def close(self) -> None:
        await self.poller.close()


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
