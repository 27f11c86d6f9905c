"""The engine: many items through one AsyncOpenAI client, bounded, retried, checkpointed.

Plain asyncio, no Airflow. The trigger runs it in the triggerer (``deferrable=True``); the operator
runs the very same code with ``asyncio.run`` in the worker (``deferrable=False``).

Shape of a run: a feeder reads items in chunks in a thread (storage I/O and Jinja rendering stay off
the event loop) into a small queue; ``max_concurrency`` workers take items one at a time, so memory
does not grow with the number of items; finished records are buffered and written as whole part
files every ``flush_every`` records or ``flush_interval_s`` seconds; the manifest comes last.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import itertools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import openai
from tenacity import RetryCallState

from flex_provider.engine.attempt import ItemAttempt
from flex_provider.engine.background import BackgroundFailed, BackgroundPoller, BackgroundSubmitter, PendingEntry
from flex_provider.engine.calls import CallBuilder, Reply
from flex_provider.engine.concurrency import AdaptiveLimiter
from flex_provider.engine.config import RequestSpec, RunOptions
from flex_provider.engine.errors import (
    MALFORMED_ERRORS,
    FlexRunAborted,
    OutputValidationError,
    Verdict,
    WaitTooLong,
    classify,
    error_info,
    redact,
)
from flex_provider.engine.health import RunHealth
from flex_provider.engine.items import WorkItem
from flex_provider.engine.lease import FolderLease
from flex_provider.engine.pricing import CostTally, PriceTable
from flex_provider.engine.progress import RunCounters
from flex_provider.engine.retry import item_retrying, rate_limit_too_long, server_wait_hint
from flex_provider.engine.store import ResultStore
from flex_provider.engine.usage import Usage

log = logging.getLogger("flex_provider.engine")

T = TypeVar("T")
_Queue = asyncio.Queue[tuple[WorkItem, str] | None]  # (item, prompt_hash), then one None per worker

_FEED_CHUNK = 256

# Every way one item can end in failure without the run being broken; anything else is a bug of
# ours, which must stop the run loudly instead of marking thousands of items failed.
_ITEM_ERRORS = (openai.OpenAIError, OutputValidationError, TimeoutError, WaitTooLong, *MALFORMED_ERRORS)


def prompt_hash(prompt: str) -> str:
    """What was sent, in 16 hex characters: on resume a changed prompt is sent again."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]


async def _finish_even_if_cancelled(write: Awaitable[None]) -> None:
    """Storage writes run in threads, which cancellation cannot stop. Wait for the write to end
    before letting a cancellation through, so no later write (or the manifest) overtakes it."""
    future = asyncio.ensure_future(write)
    try:
        await asyncio.shield(future)
    except asyncio.CancelledError:
        await future
        raise


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


class FlexEngine:
    def __init__(
        self,
        client: Any,
        spec: RequestSpec,
        options: RunOptions,
        store: ResultStore,
        *,
        secrets: tuple[str, ...] = (),
        logger: logging.Logger | logging.LoggerAdapter | None = None,
        output_uri: str | None = None,
        prompt_template: str | None = None,
        endpoint: str = "the configured server",
        connect_grace_s: float = 60.0,
        lease_ttl_s: float = 30.0,
        lease_settle_s: float = 1.0,
    ) -> None:
        self.client = client
        self.spec = spec
        self.options = options
        self.store = store
        self.secrets = secrets
        self.log = logger or log
        self.output_uri = output_uri
        self.prompt_template = prompt_template  # part of the fingerprint: it shapes every prompt
        self.calls = CallBuilder(spec)
        self.prices = PriceTable(options.prices)
        self.limiter = AdaptiveLimiter(options.max_concurrency, max_pause_s=options.retry.max_retry_after_s)
        self.health = RunHealth(endpoint, secrets=secrets, connect_grace_s=connect_grace_s)
        self.counters = RunCounters()
        self.background = (
            BackgroundSubmitter(
                BackgroundPoller(client, options.poll_interval_s),
                self.calls,
                self.counters,
                create=self._create_background,
                write_pending=self._write_pending,
                max_attempts=options.retry.max_attempts,
                secrets=secrets,
            )
            if options.submit_mode == "background"
            else None
        )
        self._buffer: list[dict[str, Any]] = []
        self._flush_lock = asyncio.Lock()
        self._dirty_progress = False
        self._finished = asyncio.Event()
        # XCom mode: stop sending once the finished records would not fit in XCom anyway.
        self._max_result_bytes = options.max_result_bytes
        self._result_bytes = 0
        self._stop_reason: str | None = None  # "result_bytes" or "lease": finish in-flight items, send no more
        self._lease = FolderLease(
            store.root,
            store.session,
            ttl_s=lease_ttl_s,
            settle_s=lease_settle_s,
            logger=self.log,
            on_lost=lambda: self._stop("lease"),
        )

    # -- public ----------------------------------------------------------------------------
    async def run(self, items: Iterable[WorkItem], total: int | None = None) -> dict[str, Any]:
        """Process every item that has no final record yet; return the run summary.

        Raises FlexRunAborted on run-wide errors (bad key, no quota) after saving what finished.
        One engine session at a time works in a folder: the run waits for the folder's lease first
        (a live holder finishes, a dead one expires after ``lease_ttl_s``).
        """
        async with self._lease:
            return await self._run_holding_lease(items, total)

    def _stop(self, reason: str) -> None:
        if self._stop_reason is None:
            self._stop_reason = reason

    async def _run_holding_lease(self, items: Iterable[WorkItem], total: int | None) -> dict[str, Any]:
        started = time.monotonic()
        await asyncio.to_thread(self.store.claim, self.fingerprint(), self._description())
        state = await asyncio.to_thread(self.store.load)
        if self.background is not None:
            self.background.adopt(cast("dict[str, PendingEntry]", state.pending))  # validated by store.load
        finished = state.final_prompts  # id -> hash of the prompt its final record answered
        self._result_bytes = state.final_bytes
        self.log.info(
            "flex run starting: %d item(s) already final on storage, %d retryable failure(s) to redo, "
            "%d background response(s) to re-attach, model=%s tier=%s concurrency=%d mode=%s",
            len(finished),
            len(state.retryable_ids),
            len(state.pending),
            self.spec.model,
            self.spec.service_tier,
            self.options.max_concurrency,
            self.options.submit_mode,
        )
        try:
            if self._over_result_limit():
                self._stop("result_bytes")
            else:
                await self._run_workers(items, finished, total)
            if self._stop_reason is not None:
                raise self._stopped_error()
        except BaseException:  # aborted, failed or cancelled (trigger killed/moved): keep what finished
            await asyncio.shield(self._flush(force=True))
            raise
        finally:
            if self.background is not None:
                await self.background.close()
        await self._flush(force=True)
        self.log.info(self.counters.line(total))
        return await asyncio.to_thread(self._finalize, started)

    def _over_result_limit(self) -> bool:
        return self._max_result_bytes is not None and self._result_bytes > self._max_result_bytes

    def _stopped_error(self) -> FlexRunAborted:
        if self._stop_reason == "lease":
            return FlexRunAborted(
                f"flex run stopped sending: another engine session ({self._lease.lost_to or 'unknown'}) took over "
                f"the output folder {self.store.root} after this one missed its lease heartbeats; it finishes the "
                "remaining items. Results received here are kept.",
                {"type": "LeaseLost"},
            )
        return FlexRunAborted(
            f"flex run stopped sending: the finished records already take {self._result_bytes} bytes, over the "
            f"XCom limit of {self._max_result_bytes} bytes (xcom_max_bytes), so a bigger run could only be refused "
            "after paying for it. Set output_path (e.g. 's3://bucket/folder/') to write results to object storage; "
            "pointing output_path at the folder named below reuses every answer already paid for.",
            {"type": "ResultsTooLarge", "result_bytes": self._result_bytes},
        )

    async def _run_workers(self, items: Iterable[WorkItem], finished: dict[str, str | None], total: int | None) -> None:
        queue: _Queue = asyncio.Queue(maxsize=self.options.max_concurrency * 2)
        try:
            async with asyncio.TaskGroup() as group:
                feeder = group.create_task(self._feed(items, finished, queue), name="flex-feeder")
                workers = [
                    group.create_task(self._worker(queue), name=f"flex-worker-{i}")
                    for i in range(self.options.max_concurrency)
                ]
                ticker = group.create_task(self._tick(total), name="flex-ticker")
                await feeder
                for _ in workers:
                    await queue.put(None)
                await asyncio.gather(*workers)
                self._finished.set()
                await ticker
        except BaseExceptionGroup as group_error:
            # Surface one clear error, the run-wide abort first, instead of an exception group.
            errors = group_error.exceptions
            raise next((e for e in errors if isinstance(e, FlexRunAborted)), errors[0]) from None

    def fingerprint(self) -> str:
        """What makes two runs' answers interchangeable: the request, not the tier or retry settings."""
        spec = dataclasses.asdict(self.spec)
        spec.pop("timeout", None)
        spec.pop("service_tier", None)
        spec["prompt_template"] = self.prompt_template
        blob = json.dumps(spec, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def _description(self) -> dict[str, Any]:
        return {"model": self.spec.model, "api": self.spec.api, "service_tier": self.spec.service_tier}

    # -- feeding ---------------------------------------------------------------------------
    async def _feed(self, items: Iterable[WorkItem], finished: dict[str, str | None], queue: _Queue) -> None:
        iterator: Iterator[WorkItem] = iter(items)

        def next_chunk() -> list[tuple[WorkItem, str]]:  # in a thread: storage reads, rendering, hashing
            return [(item, prompt_hash(item.prompt)) for item in itertools.islice(iterator, _FEED_CHUNK)]

        seen: set[str] = set()
        position = 0
        while self._stop_reason is None:
            chunk = await asyncio.to_thread(next_chunk)
            if not chunk:
                return
            for entry in chunk:
                item = entry[0]
                item.index, position = position, position + 1
                if item.id in seen:
                    self.counters.duplicates += 1
                    continue
                seen.add(item.id)
                if item.id in finished:
                    stored = finished[item.id]
                    if stored is None or stored == entry[1]:  # no hash: written before hashes existed
                        self.counters.resumed += 1
                        continue
                    self.counters.prompt_changed += 1  # same id, another prompt: the old answer is stale
                await queue.put(entry)

    async def _worker(self, queue: _Queue) -> None:
        while (entry := await queue.get()) is not None:
            if self._stop_reason is not None:
                continue  # drain: the feeder is stopping too
            self.counters.in_flight += 1
            try:
                record = await self._process(*entry)
            finally:
                self.counters.in_flight -= 1
            self._buffer.append(record)
            if self._max_result_bytes is not None:
                self._result_bytes += len(
                    json.dumps(record, ensure_ascii=False, default=str).encode("utf-8", "replace")
                )
                if self._over_result_limit():
                    self._stop("result_bytes")
            if len(self._buffer) >= self.options.flush_every:
                await self._flush()

    async def _tick(self, total: int | None) -> None:
        """Flush on a timer and report progress, until the workers are done."""
        next_report = time.monotonic() + self.options.progress_interval_s
        period = min(self.options.flush_interval_s, self.options.progress_interval_s)
        while not self._finished.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._finished.wait(), period)
            await self._flush()
            if time.monotonic() >= next_report:
                self.log.info(self.counters.line(total))
                next_report = time.monotonic() + self.options.progress_interval_s

    # -- one item ----------------------------------------------------------------------------
    async def _process(self, item: WorkItem, sent_hash: str) -> dict[str, Any]:
        attempt = ItemAttempt(item, sent_hash, self.spec.service_tier)
        try:
            try:
                reply = await self._on_tier(attempt)
            except Exception as exc:
                why = classify(exc)
                if not (
                    why is Verdict.UNAVAILABLE
                    and self.options.on_unavailable == "fallback"
                    and attempt.requested_tier != self.options.fallback_tier
                ):
                    raise
                self.counters.fallbacks += 1
                self._dirty_progress = True
                attempt.fall_back(self.options.fallback_tier, why)
                reply = await self._on_tier(attempt)
        except asyncio.CancelledError:
            raise
        except (*_ITEM_ERRORS, BackgroundFailed) as exc:
            # Only answers (or silences) of the API make an item fail; a bug of ours must stop the run.
            verdict = classify(exc) if not isinstance(exc, BackgroundFailed) else None
            if verdict is Verdict.FATAL:
                info = error_info(exc, self.secrets)
                raise FlexRunAborted(
                    f"flex run stopped: {info.get('status_code', '')} {info.get('code') or info['type']}: "
                    f"{info['message']} (no item can succeed with this key/account; fix it and retry the task, "
                    "finished items are kept)",
                    info,
                ) from None
            if verdict is Verdict.ITEM_FAILED:
                self.health.on_item_failed(exc)  # the same refusal for item after item stops the run
            return self._failure(attempt, exc)
        self.health.on_item_succeeded()
        return self._success(attempt, reply)

    async def _on_tier(self, attempt: ItemAttempt) -> Reply:
        if self.background is None:
            return await self._with_retries(
                lambda: self.calls.send(self.client, attempt.item.prompt, attempt.requested_tier),
                attempt,
                retry_unavailable=self.options.on_unavailable != "fail",
            )
        return await self.background.answer(attempt)

    async def _with_retries(
        self, call: Callable[[], Awaitable[T]], attempt: ItemAttempt, *, retry_unavailable: bool
    ) -> T:
        retrying = item_retrying(
            self.options.retry, retry_unavailable=retry_unavailable, before_sleep=self._before_sleep
        )
        async for retry in retrying:
            with retry:
                attempt.attempts += 1
                await self.limiter.acquire()
                try:
                    self.counters.requests += 1
                    self._dirty_progress = True
                    # ``timeout`` bounds the whole request, body included: httpx's timeout is per read,
                    # so a body trickling in a byte at a time would otherwise never time out.
                    async with asyncio.timeout(self.spec.timeout):
                        result = await call()
                except openai.APIStatusError as exc:
                    self.health.on_answer()
                    self._count_error(exc)
                    raise
                except (openai.APITimeoutError, TimeoutError):
                    self.counters.transient_errors += 1
                    raise
                except openai.APIConnectionError as exc:
                    self.counters.transient_errors += 1
                    self.health.on_connection_error(exc)  # a broken configuration stops the run
                    raise
                except MALFORMED_ERRORS:
                    self.health.on_answer()
                    self.counters.malformed += 1
                    self.counters.transient_errors += 1
                    raise
                finally:
                    self.limiter.release()
                self.health.on_answer()
                self.limiter.on_success()
        return result

    def _count_error(self, exc: openai.APIStatusError) -> None:
        verdict = classify(exc)
        if verdict is Verdict.UNAVAILABLE:
            self.counters.unavailable += 1
        elif verdict is Verdict.RATE_LIMITED:
            self.counters.rate_limited += 1
            too_long = rate_limit_too_long(exc, self.options.retry)
            if too_long is not None:
                raise WaitTooLong(redact(too_long, self.secrets)) from None  # not slept, not retried
            self.limiter.on_rate_limited(server_wait_hint(exc))
        elif verdict is Verdict.TRANSIENT:
            self.counters.transient_errors += 1

    async def _before_sleep(self, retry_state: RetryCallState) -> None:
        if self.log.isEnabledFor(logging.DEBUG):
            exc = retry_state.outcome.exception() if retry_state.outcome else None
            self.log.debug("retrying after %s (attempt %d)", type(exc).__name__, retry_state.attempt_number)

    # -- background mode: the loop is BackgroundSubmitter's; retries and storage stay here ----------
    async def _create_background(self, attempt: ItemAttempt) -> str:
        """Create a background response for ``attempt`` within its retry budget; returns its id."""
        return await self._with_retries(
            lambda: self.calls.create_background(self.client, attempt.item.prompt, attempt.requested_tier),
            attempt,
            retry_unavailable=self.options.on_unavailable != "fail",
        )

    async def _write_pending(self, batch: list[PendingEntry]) -> None:
        entries = cast("list[dict[str, Any]]", batch)  # ResultStore takes plain dicts
        await _finish_even_if_cancelled(asyncio.to_thread(self.store.write_pending, entries))

    # -- records -----------------------------------------------------------------------------
    def _success(self, attempt: ItemAttempt, reply: Reply) -> dict[str, Any]:
        item, sent_hash, attempts, fell_back = attempt.item, attempt.prompt_hash, attempt.attempts, attempt.fell_back
        asked = self.spec.service_tier
        self.counters.succeeded += 1
        model = reply.model or self.spec.model  # priced and recorded as the server says it answered
        self._account(reply.usage, reply.service_tier, model)
        return {
            "id": item.id,
            "index": item.index,
            "status": "succeeded",
            "output": reply.output,
            "service_tier": reply.service_tier,
            "requested_tier": self.options.fallback_tier if fell_back else asked,
            "fallback": fell_back,
            "model": model,
            "usage": reply.usage.as_dict(),
            "attempts": attempts,
            "error": None,
            "response_id": reply.response_id,
            "prompt_hash": sent_hash,
            "finished_at": _now(),
        }

    def _failure(self, attempt: ItemAttempt, exc: BaseException) -> dict[str, Any]:
        item, sent_hash, attempts, fell_back = attempt.item, attempt.prompt_hash, attempt.attempts, attempt.fell_back
        self.counters.failed += 1
        info = error_info(exc, self.secrets)
        if isinstance(exc, BackgroundFailed):
            info["retryable"] = exc.retryable
        else:
            # Budget exhausted on a retryable error: a later run (task retry, re-run) may succeed.
            info["retryable"] = isinstance(exc, WaitTooLong) or classify(exc) in (
                Verdict.UNAVAILABLE,
                Verdict.RATE_LIMITED,
                Verdict.TRANSIENT,
            )
        usage = getattr(exc, "usage", None) or Usage()
        tier = getattr(exc, "service_tier", None)
        model = getattr(exc, "model", None) or self.spec.model
        self._account(usage, tier, model)
        return {
            "id": item.id,
            "index": item.index,
            "status": "failed",
            "output": None,
            "service_tier": tier,
            "requested_tier": self.options.fallback_tier if fell_back else self.spec.service_tier,
            "fallback": fell_back,
            "model": model,
            "usage": usage.as_dict(),
            "attempts": attempts,
            "error": info,
            "response_id": None,
            "prompt_hash": sent_hash,
            "finished_at": _now(),
        }

    def _account(self, usage: Usage, tier: str | None, model: str) -> None:
        self.counters.usage.add(usage)
        self.counters.cost.add(self.prices, model, tier, usage)

    async def _flush(self, force: bool = False) -> None:
        if not self._buffer and not (force or self._dirty_progress):
            return
        async with self._flush_lock:
            batch, self._buffer = self._buffer, []
            counters = self.counters.persisted()
            self._dirty_progress = False
            await _finish_even_if_cancelled(asyncio.to_thread(self._write_checkpoint, batch, counters))

    def _write_checkpoint(self, batch: list[dict[str, Any]], counters: dict[str, Any]) -> None:
        if batch:
            self.store.write_part(batch)
        self.store.write_progress(counters)

    # -- the end -------------------------------------------------------------------------------
    def _finalize(self, started: float) -> dict[str, Any]:
        totals = {name: 0 for name in RunCounters.PERSISTED}
        for session in self.store.load_progress():
            for name in totals:
                totals[name] += int(session.get(name, 0))
        summary: dict[str, Any] = {
            "status": "success",
            "requests": totals["requests"],
            "unavailable": totals["unavailable"],
            "rate_limited": totals["rate_limited"],
            "transient_errors": totals["transient_errors"],
            "malformed_answers": totals["malformed"],
            "fallbacks": totals["fallbacks"],
            "this_run": {
                "requests": self.counters.requests,
                "resumed": self.counters.resumed,
                "processed": self.counters.succeeded + self.counters.failed,
                "duplicates_in_input": self.counters.duplicates,
                "prompt_changed": self.counters.prompt_changed,
                "background_reattached": self.counters.background_reattached,
            },
            "model": self.spec.model,
            "service_tier": self.spec.service_tier,
            "output_path": self.output_uri,
            "duration_s": round(time.monotonic() - started, 3),
            "finished_at": _now(),
        }
        return self.store.finalize(summary, self._summarize_records)

    def _summarize_records(self, records: Iterable[dict[str, Any]]) -> dict[str, Any]:
        """Totals over the final records on storage: this run's and earlier sessions' alike."""
        succeeded = failed = 0
        usage = Usage()
        cost = CostTally()
        failed_ids: list[str] = []
        for record in records:
            if record.get("status") == "succeeded":
                succeeded += 1
            else:
                failed += 1
                if len(failed_ids) < 20:
                    failed_ids.append(record.get("id"))
            record_usage = Usage.from_dict(record.get("usage"))
            usage.add(record_usage)
            cost.add(self.prices, record.get("model") or self.spec.model, record.get("service_tier"), record_usage)
        return {
            "total": succeeded + failed,
            "succeeded": succeeded,
            "failed": failed,
            "failed_ids": failed_ids,
            "usage": usage.as_dict(),
            "cost_usd": cost.as_dict(),
        }
