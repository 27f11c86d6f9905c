"""The engine: many items through one AsyncOpenAI client, bounded, retried, checkpointed.

Plain asyncio, no Airflow. The trigger runs it in the triggerer (``deferrable=True``); the operator
runs the very same code with ``asyncio.run`` in the worker (``deferrable=False``).

Shape of a run: a feeder reads items in chunks in a thread (storage I/O and Jinja rendering stay off
the event loop) into a small queue; ``max_concurrency`` workers take items one at a time, so memory
does not grow with the number of items; finished records are buffered and written as whole part
files every ``flush_every`` records or ``flush_interval_s`` seconds; the manifest comes last.

This module is the orchestration only. Per item, an :class:`~flex_provider.engine.attempt.ItemAttempt`
carries the tier asked and the requests sent; background mode's submit/re-attach loop is
:class:`~flex_provider.engine.background.BackgroundSubmitter`; records and the summary are built in
:mod:`flex_provider.engine.records`; the budget, the rate pacer and the deadline planner are called
through :class:`~flex_provider.engine.controls.RunControls`. Retries, health and storage stay here,
where the run's state is.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, TypeVar, cast

import openai
from tenacity import RetryCallState

from flex_provider.engine.aio import finish_even_if_cancelled
from flex_provider.engine.attempt import ItemAttempt, prompt_hash
from flex_provider.engine.background import BackgroundFailed, BackgroundPoller, BackgroundSubmitter, PendingEntry
from flex_provider.engine.budget import OverBudget
from flex_provider.engine.calls import CallBuilder, Created, Reply
from flex_provider.engine.concurrency import AdaptiveLimiter
from flex_provider.engine.config import RequestSpec, RunOptions
from flex_provider.engine.controls import RunControls, Ticket
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
from flex_provider.engine.estimate import DEFAULT_MAX_OUTPUT_TOKENS
from flex_provider.engine.health import RunHealth
from flex_provider.engine.idindex import IdIndex, id_key
from flex_provider.engine.items import WorkItem
from flex_provider.engine.lease import FolderLease
from flex_provider.engine.logs import RunLog
from flex_provider.engine.pricing import PriceTable
from flex_provider.engine.progress import LiveProgress, RunCounters, SessionProgress
from flex_provider.engine.records import (
    BudgetSummary,
    DeadlineTally,
    Recorder,
    ResultBytes,
    ResultRecord,
    RunSummary,
    as_summary,
    run_header,
    summarize_records,
)
from flex_provider.engine.retry import item_retrying, rate_limit_too_long, server_wait_hint
from flex_provider.engine.store import ResultStore, StoreState

log = logging.getLogger("flex_provider.engine")

T = TypeVar("T", Reply, Created)
_Queue = asyncio.Queue[tuple[WorkItem, str] | None]  # (item, prompt_hash), then one None per worker

_FEED_CHUNK = 256

# Every way one item can end in failure without the run being broken; anything else is a bug of
# ours, which must stop the run loudly instead of marking thousands of items failed.
_ITEM_ERRORS = (
    openai.OpenAIError,
    OutputValidationError,
    TimeoutError,
    WaitTooLong,
    BackgroundFailed,
    *MALFORMED_ERRORS,
)


class FlexEngine:
    """One run over one output folder: feeds items to workers, sends each (retried, bounded by the
    adaptive limiter), checkpoints the records, and stops the whole run only for run-wide causes."""

    def __init__(
        self,
        client: Any,
        spec: RequestSpec,
        options: RunOptions,
        store: ResultStore,
        *,
        secrets: tuple[str, ...] = (),
        logger: RunLog | None = None,
        output_uri: str | None = None,
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
        # With a budget, a request without an output bound gets the default one: else it has no worst case.
        self.calls = CallBuilder(
            spec, default_output_bound=DEFAULT_MAX_OUTPUT_TOKENS if options.max_cost_usd is not None else None
        )
        self.prices = PriceTable(options.prices)
        self.limiter = AdaptiveLimiter(options.max_concurrency, max_pause_s=options.retry.max_retry_after_s)
        self.health = RunHealth(endpoint, secrets=secrets, connect_grace_s=connect_grace_s)
        self.counters = RunCounters()
        self.controls = RunControls(
            spec, options, self.prices, self.counters, request_options=self.calls.request_options, logger=self.log
        )
        self.records = Recorder(self.counters, self.prices, spec.model, secrets)
        self.progress = LiveProgress(
            store.session, model=spec.model, service_tier=spec.service_tier, output_path=output_uri
        )
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
        self._buffer: list[ResultRecord] = []
        self._flush_lock = asyncio.Lock()
        self._flushes = 0  # flushes writing or waiting for the lock
        self._dirty_progress = False
        self._finished = asyncio.Event()
        self._result_bytes = ResultBytes(options.max_result_bytes)  # XCom mode only
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
    async def run(self, items: Iterable[WorkItem], total: int | None = None) -> RunSummary:
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

    async def _run_holding_lease(self, items: Iterable[WorkItem], total: int | None) -> RunSummary:
        started = time.monotonic()
        await asyncio.to_thread(self.store.claim, self.fingerprint(), self._description())
        state = await asyncio.to_thread(self.store.load, self.options.redo_failed)
        spent_before = await asyncio.to_thread(self._spent_before) if self.controls.budget is not None else 0.0
        self.controls.start(total=total, spent_before=spent_before)
        self.progress.start(total)
        if self.background is not None:
            self.background.adopt(cast("dict[str, PendingEntry]", state.pending))  # validated by store.load
        finished = state.final_prompts  # id -> hash of the prompt its final record answered
        self._result_bytes.used = state.final_bytes
        self.log.info(
            "flex run starting: %d item(s) already final on storage, %d retryable failure(s) or skipped item(s) to redo, "
            "%d non-retryable failure(s) to redo (redo_failed=%s), %d background response(s) to re-attach, "
            "model=%s tier=%s concurrency=%d mode=%s%s",
            len(finished),
            len(state.retryable_ids),
            len(state.redo_ids),
            self.options.redo_failed,
            len(state.pending),
            self.spec.model,
            self.spec.service_tier,
            self.options.max_concurrency,
            self.options.submit_mode,
            self._controls_text(spent_before),
        )
        try:
            if self._result_bytes.over:
                self._stop("result_bytes")
            else:
                await self._run_workers(items, state, total)
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
        summary = await asyncio.to_thread(self._finalize, started)
        deadline = summary["deadline"]
        if deadline is not None and not deadline["met"]:
            self.log.warning(
                "flex run missed its deadline %s: %d item(s) finished after it (%d sent to %s for the deadline); "
                "flex and the fallback tier together were too slow for the items and max_concurrency",
                deadline["at"],
                deadline["finished_late"],
                deadline["on_fallback"],
                self.options.fallback_tier,
            )
        return summary

    def _controls_text(self, spent_before: float) -> str:
        """The start line's note on budget, deadline and user rate caps (empty when none is set)."""
        parts = []
        if self.options.max_cost_usd is not None:
            parts.append(f"max_cost_usd=${self.options.max_cost_usd:,.4f} (${spent_before:,.4f} spent before)")
        if self.options.deadline_at is not None:
            parts.append(f"deadline={self.options.deadline_at}")
        for name in ("max_requests_per_minute", "max_tokens_per_minute"):
            cap = getattr(self.options, name)
            if cap is not None:
                parts.append(f"{name}={cap:g} per {self.options.rate_limit_window_s:g}s")
        return (" " + " ".join(parts)) if parts else ""

    def _spent_before(self) -> float:
        """What earlier sessions in this folder spent (their progress files), in a thread."""
        spent = 0.0
        for progress in self.store.load_progress():
            cost = progress.get("cost")
            actual = cost.get("actual") if isinstance(cost, dict) else None
            if isinstance(actual, int | float) and not isinstance(actual, bool) and actual > 0:
                spent += float(actual)
        return spent

    def _stopped_error(self) -> FlexRunAborted:
        if self._stop_reason == "lease":
            return FlexRunAborted(
                f"flex run stopped sending: another engine session ({self._lease.lost_to or 'unknown'}) took over "
                f"the output folder {self.store.root} after this one missed its lease heartbeats; it finishes the "
                "remaining items. Results received here are kept.",
                {"type": "LeaseLost"},
            )
        return self._result_bytes.stopped_error()

    async def _run_workers(self, items: Iterable[WorkItem], state: StoreState, total: int | None) -> None:
        queue: _Queue = asyncio.Queue(maxsize=self.options.max_concurrency * 2)
        try:
            async with asyncio.TaskGroup() as group:
                feeder = group.create_task(self._feed(items, state, queue), name="flex-feeder")
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
        return self.spec.fingerprint()

    def _description(self) -> dict[str, Any]:
        return {"model": self.spec.model, "api": self.spec.api, "service_tier": self.spec.service_tier}

    # -- feeding ---------------------------------------------------------------------------
    async def _feed(self, items: Iterable[WorkItem], state: StoreState, queue: _Queue) -> None:
        iterator: Iterator[WorkItem] = iter(items)
        finished = state.final_prompts  # id -> hash of the prompt its final record answered

        def next_chunk() -> list[tuple[WorkItem, str]]:  # in a thread: storage reads, rendering, hashing
            return [(item, prompt_hash(item.prompt)) for item in itertools.islice(iterator, _FEED_CHUNK)]

        not_final = object()  # finished.get's default: no final record on storage
        seen = IdIndex()  # digests of the ids fed so far that ItemIds did not make unique already
        position = 0
        try:
            while self._stop_reason is None:
                chunk = await asyncio.to_thread(next_chunk)
                if not chunk:
                    return
                for entry in chunk:
                    item = entry[0]
                    item.index, position = position, position + 1
                    if not item.unique:
                        key = id_key(item.id)
                        if key in seen:
                            self.counters.duplicates += 1
                            self.controls.not_sent()
                            continue
                        seen.add(key)
                    stored = finished.get(item.id, not_final)
                    if stored is not not_final:
                        if stored is None or stored == entry[1]:  # no hash: written before hashes existed
                            self.counters.resumed += 1
                            if item.id in state.final_failed:
                                self.counters.resumed_failed += 1
                            self.controls.not_sent()
                            continue
                        self.counters.prompt_changed += 1  # same id, another prompt: the old answer is stale
                    self.controls.queued()
                    await queue.put(entry)
        finally:
            # The feeder is the last reader of what load() found: drop its id index now, so that
            # finalize does not build its own beside it (~50-75 MB at a million items).
            state.final_prompts = {}
            state.retryable_ids = state.redo_ids = state.final_failed = frozenset()

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
            self.progress.on_record(record)
            if self._result_bytes.add(record):
                self._stop("result_bytes")
            if len(self._buffer) >= self.options.flush_every:
                await self._flush()

    async def _tick(self, total: int | None) -> None:
        """Flush on a timer and report progress, until the workers are done. The progress file is
        rewritten at every report even when nothing finished: flex answers can take minutes, and
        the live state's ``updated_at`` and ``in_flight`` must still say the session is alive."""
        next_report = time.monotonic() + self.options.progress_interval_s
        period = min(self.options.flush_interval_s, self.options.progress_interval_s)
        while not self._finished.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._finished.wait(), period)
            report = time.monotonic() >= next_report
            await self._flush(force=report)
            if report:
                self.log.info(self.counters.line(total))
                next_report = time.monotonic() + self.options.progress_interval_s

    # -- one item ----------------------------------------------------------------------------
    async def _process(self, item: WorkItem, sent_hash: str) -> ResultRecord:
        """One item, first request to record. The tier policy: the deadline planner may send the
        item to ``fallback_tier`` from the start (``fallback_reason="deadline"``); otherwise only
        ``unavailable`` (flex has no capacity) moves it there, once; a FATAL answer stops the whole
        run; a request the budget cannot afford ends the item ``skipped``; any other API outcome
        ends this item alone (retryable or not, as its record says)."""
        attempt = ItemAttempt(item, sent_hash, self.spec.service_tier)
        outcome: tuple[Reply | None, BaseException | None] = (None, None)
        self.controls.begin(attempt)
        if attempt.fell_back:
            self._dirty_progress = True
        try:
            record, outcome = await self._answer(attempt)
            return record
        finally:
            self.controls.end(attempt, *outcome)

    async def _answer(self, attempt: ItemAttempt) -> tuple[ResultRecord, tuple[Reply | None, BaseException | None]]:
        """The item's record, and its outcome: the reply, or what failed it (both None: skipped)."""
        try:
            try:
                reply = await self._on_tier(attempt)
            except Exception as exc:
                why = classify(exc)
                if not (
                    why is Verdict.UNAVAILABLE
                    and self.options.on_unavailable == "fallback"
                    and attempt.requested_tier != self.options.fallback_tier
                    and not isinstance(exc, OverBudget)
                ):
                    raise
                self.counters.fell_back(why.value)
                self._dirty_progress = True
                attempt.fall_back(self.options.fallback_tier, why.value)
                self.controls.fell_back(attempt)
                reply = await self._on_tier(attempt)
        except asyncio.CancelledError:
            raise
        except OverBudget as exc:
            self._dirty_progress = True
            return self.records.skipped(attempt, exc), (None, None)
        except _ITEM_ERRORS as exc:
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
            return self.records.failure(attempt, exc), (None, exc)
        self.health.on_item_succeeded()
        return self.records.success(attempt, reply), (reply, None)

    async def _on_tier(self, attempt: ItemAttempt) -> Reply:
        """The answer on ``attempt.requested_tier``: one retried call, or the background loop."""
        if self.background is None:
            return await self._with_retries(
                lambda: self.calls.send(self.client, attempt.item.prompt, attempt.requested_tier), attempt
            )
        return await self.background.answer(attempt)

    async def _with_retries(self, call: Callable[[], Awaitable[T]], attempt: ItemAttempt) -> T:
        """``call`` within the item's retry budget. Every request passes the adaptive limiter (in
        flight), the budget and the rate pacer (:class:`RunControls`), is counted (item and run) and
        bounded as a whole; each outcome feeds the run's health checks and settles what the request
        held. A request the budget cannot afford raises OverBudget (not retried)."""
        retrying = item_retrying(
            self.options.retry,
            retry_unavailable=self.options.on_unavailable != "fail",
            before_sleep=self._before_sleep,
        )
        controls = self.controls
        async for retry in retrying:
            with retry:
                await self.limiter.acquire()
                ticket: Ticket | None = None
                try:
                    ticket = await controls.admit(attempt)
                    attempt.attempts += 1
                    self.counters.requests += 1
                    self._dirty_progress = True
                    ticket.sent = True
                    # ``timeout`` bounds the whole request, body included: httpx's timeout is per read,
                    # so a body trickling in a byte at a time would otherwise never time out.
                    async with asyncio.timeout(self.spec.timeout):
                        result = await call()
                except openai.APIStatusError as exc:
                    self.health.on_answer()
                    self._count_error(exc, cast(Ticket, ticket))  # only a sent request gets an answer
                    raise
                except (openai.APITimeoutError, TimeoutError):
                    self.counters.transient_errors += 1
                    if ticket is not None:
                        controls.no_answer(ticket)
                    raise
                except openai.APIConnectionError as exc:
                    self.counters.transient_errors += 1
                    if ticket is not None:
                        controls.no_answer(ticket)
                    self.health.on_connection_error(exc)  # a broken configuration stops the run
                    raise
                except MALFORMED_ERRORS as exc:
                    self.health.on_answer()
                    self.counters.malformed += 1
                    self.counters.transient_errors += 1
                    if ticket is not None:
                        controls.invalid_answer(ticket, attempt, exc)
                    raise
                except OutputValidationError as exc:  # billed: a wrong answer is an answer
                    if ticket is not None:
                        controls.invalid_answer(ticket, attempt, exc)
                    raise
                else:
                    controls.answered(ticket, attempt, result)
                finally:
                    self.limiter.release()
                    if ticket is not None:
                        controls.release(ticket)  # a no-op once settled above
                self.health.on_answer()
                self.limiter.on_success()
        return result

    def _count_error(self, exc: openai.APIStatusError, ticket: Ticket) -> None:
        """Count an error answer and give back what its request held; a rate limit also slows the
        run down (the pacer's bucket, or the adaptive limiter when the server announces no limits),
        or ends the item at once when its reset is further away than the item may wait (a daily limit)."""
        verdict = classify(exc)
        rate_limited = verdict is Verdict.RATE_LIMITED
        too_long = rate_limit_too_long(exc, self.options.retry) if rate_limited else None
        paced = self.controls.refused(ticket, exc, rate_limited=rate_limited, pause=too_long is None)
        if verdict is Verdict.UNAVAILABLE:
            self.counters.unavailable += 1
        elif rate_limited:
            self.counters.rate_limited += 1
            if too_long is not None:
                raise WaitTooLong(redact(too_long, self.secrets)) from None  # not slept, not retried
            if not paced:  # no limit known: back off by concurrency instead
                self.limiter.on_rate_limited(server_wait_hint(exc))
        elif verdict is Verdict.TRANSIENT:
            self.counters.transient_errors += 1

    async def _before_sleep(self, retry_state: RetryCallState) -> None:
        if self.log.isEnabledFor(logging.DEBUG):
            exc = retry_state.outcome.exception() if retry_state.outcome else None
            self.log.debug("retrying after %s (attempt %d)", type(exc).__name__, retry_state.attempt_number)

    # -- background mode: the loop is BackgroundSubmitter's; retries and storage stay here ----------
    async def _create_background(self, attempt: ItemAttempt) -> str:
        """Create a background response for ``attempt`` within its retry budget; returns its id.
        The budget stays held (``attempt.held``) until the response is answered."""
        self.controls.replaced(attempt)
        created = await self._with_retries(
            lambda: self.calls.create_background(self.client, attempt.item.prompt, attempt.requested_tier), attempt
        )
        return created.response_id

    async def _write_pending(self, batch: list[PendingEntry]) -> None:
        """Returns only once ``batch`` is on storage: the submitter waits on an id only after that."""
        entries = cast("list[dict[str, Any]]", batch)  # ResultStore takes plain dicts
        await finish_even_if_cancelled(asyncio.to_thread(self.store.write_pending, entries))

    async def _flush(self, force: bool = False) -> None:
        """Write the buffered records as one part file, then this session's progress (request
        counters and live state, snapshotted here in the loop and serialised in the thread).

        Unless ``force``, a flush already writing or waiting is not waited for: the records stay
        buffered and go with it or the next one. (Waiting made every worker that finished during a
        write queue for a flush of its own: hundreds of near-empty checkpoints in a row, each a
        thread round trip, with up to half the workers idle in that queue instead of sending.)"""
        if not self._buffer and not (force or self._dirty_progress):
            return
        if not force and self._flushes:
            return
        self._flushes += 1
        try:
            async with self._flush_lock:
                batch, self._buffer = self._buffer, []
                progress = self.progress.snapshot(self.counters, self.controls.live())
                self._dirty_progress = False
                await finish_even_if_cancelled(asyncio.to_thread(self._write_checkpoint, batch, progress))
        finally:
            self._flushes -= 1

    def _write_checkpoint(self, batch: list[ResultRecord], progress: SessionProgress) -> None:
        if batch:
            self.store.write_part(cast("list[dict[str, Any]]", batch))  # ResultStore takes plain dicts
        self.store.write_progress(progress)

    # -- the end -------------------------------------------------------------------------------
    def _finalize(self, started: float) -> RunSummary:
        """Compact the parts and write the manifest: counters of every session, totals of every record."""
        deadline = self.controls.deadline_summary()
        header = run_header(
            self.store.load_progress(),
            self.counters,
            model=self.spec.model,
            service_tier=self.spec.service_tier,
            output_path=self.output_uri,
            duration_s=round(time.monotonic() - started, 3),
            budget=cast("BudgetSummary | None", self.controls.budget_summary()),
            rate_limits=self.controls.rate_limit_summary(),
        )
        tally = DeadlineTally(self.spec.service_tier) if deadline is not None else None

        def summarize(records: Iterable[dict[str, Any]]) -> dict[str, Any]:  # during the compaction pass
            totals: dict[str, Any] = dict(summarize_records(records, self.prices, self.spec.model, tally))
            if deadline is not None and tally is not None:  # over every final record, earlier sessions' too
                totals["deadline"] = {**deadline, "on_fallback": tally.items, "extra_cost_usd": tally.extra_cost()}
            return totals

        # the store takes plain dicts; the ids it will find: about those done, and those skipped here
        expected_ids = self.counters.done + self.counters.budget_skipped
        manifest = self.store.finalize(cast("dict[str, Any]", header), summarize, expected_ids=expected_ids)
        return as_summary(manifest)
