"""What a run leaves behind: one record per item, and the summary (``_manifest.json``, XCom, logs).

Their JSON shapes are a contract: the operator, the example DAGs, ``scripts/demo.py``, the README
and the store's resume logic read them. The TypedDicts below name every key; the builders
write the keys in the order the README shows, so a record or a manifest stays byte-for-byte what
earlier versions wrote. A success and a failure are built by the same function, so they cannot drift.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal, TypedDict, cast

from flex_provider.engine.attempt import ItemAttempt
from flex_provider.engine.background import BackgroundFailed
from flex_provider.engine.calls import Reply
from flex_provider.engine.errors import FlexRunAborted, Verdict, WaitTooLong, classify, error_info
from flex_provider.engine.pricing import CostTally, PriceTable, cost_text
from flex_provider.engine.progress import FailureGroup, FailureTally, RunCounters
from flex_provider.engine.usage import Usage

FAILED_IDS_SHOWN = 20  # the summary names the first few failed ids, not all of them

# Budget exhausted on one of these: a later run (task retry, re-run) may succeed.
_RETRYABLE = (Verdict.UNAVAILABLE, Verdict.RATE_LIMITED, Verdict.TRANSIENT)


class _ErrorBase(TypedDict):
    type: str  # exception class name, e.g. "BadRequestError"
    message: str  # redacted: no API key, even masked
    retryable: bool  # may a later run succeed (the item is sent again on resume)


class ErrorInfo(_ErrorBase, total=False):
    """The ``error`` of a failed record, written in the order type, status_code, code, message,
    request_id, retryable; the three below only for API errors (request_id when the server sent one).
    (Optional keys by ``total=False``: ``NotRequired`` is not seen at runtime under postponed annotations.)"""

    status_code: int
    code: str | None
    request_id: str


class ResultRecord(TypedDict):
    """One line of a part file: the final (or latest) outcome of one item."""

    id: str
    index: int  # position in the input
    status: Literal["succeeded", "failed"]
    output: Any  # text, or the parsed JSON value with a response schema: any JSON value
    service_tier: str | None  # as served (the server's word); None when no answer said
    requested_tier: str  # the tier asked for last: the fallback tier if the item fell back
    fallback: bool
    model: str  # as the server reported it (the spec's model when it did not say)
    usage: dict[str, int]  # Usage.as_dict(): input, cached, output, reasoning
    attempts: int  # requests sent for the item in this run, over every tier
    error: ErrorInfo | None
    response_id: str | None
    prompt_hash: str  # hash of the prompt sent: a changed prompt is sent again on resume
    finished_at: str  # ISO 8601, UTC, microseconds


class ThisRun(TypedDict):
    """Counts of this engine session only (the other counters add up every session's)."""

    requests: int
    resumed: int  # items skipped because storage already held their final record
    processed: int  # items this session finished, succeeded or failed
    duplicates_in_input: int
    prompt_changed: int  # items with a final record for another prompt: sent again
    background_reattached: int


class RunHeader(TypedDict):
    """The part of the summary known before the records are read back (keys in this order)."""

    status: Literal["success"]
    requests: int
    unavailable: int
    rate_limited: int
    transient_errors: int
    malformed_answers: int
    fallbacks: int
    this_run: ThisRun
    model: str
    service_tier: str
    output_path: str | None
    duration_s: float
    finished_at: str


class RecordTotals(TypedDict):
    """Totals over the final records on storage, this session's and earlier ones' alike."""

    total: int
    succeeded: int
    failed: int
    failed_ids: list[str]  # the first FAILED_IDS_SHOWN
    failures: list[FailureGroup]  # failed records by kind, biggest first (see FailureTally)
    usage: dict[str, int]
    cost_usd: dict[
        str, float | None
    ]  # CostTally.as_dict(): actual, standard_equivalent, saved, cache_saved (None: unknown)
    tiers: dict[str, int]  # final records by the service tier that served them (records without one: not counted)


class RunSummary(RunHeader, RecordTotals):
    """What ``FlexEngine.run`` returns and ``_manifest.json`` holds: header, totals, then the parts."""

    parts: list[str]


def as_summary(manifest: Any, where: str = "_manifest.json") -> RunSummary:
    """A manifest read back from storage, checked to be a summary (what the operator returns and
    the example DAGs and the demo read); a ValueError names the missing keys."""
    if not isinstance(manifest, dict):
        raise ValueError(f"{where}: expected a run summary (a JSON object), got {type(manifest).__name__}")
    if "failures" not in manifest:  # written by a release before 0.3 (a triggerer not yet upgraded)
        manifest["failures"] = []
    if "tiers" not in manifest:  # written before summaries counted records by tier
        manifest["tiers"] = {}
    required = set(RunSummary.__required_keys__)
    missing = sorted(required - set(manifest))
    if missing:
        raise ValueError(f"{where}: not a run summary of this provider, missing {missing}")
    return cast(RunSummary, manifest)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def build_record(
    attempt: ItemAttempt,
    *,
    output: Any,
    service_tier: str | None,
    model: str,
    usage: Usage,
    error: ErrorInfo | None,
    response_id: str | None,
) -> ResultRecord:
    """The one record builder: a success has ``error=None``, a failure its :func:`failure_info`."""
    item = attempt.item
    return {
        "id": item.id,
        "index": item.index,
        "status": "succeeded" if error is None else "failed",
        "output": output,
        "service_tier": service_tier,
        "requested_tier": attempt.requested_tier,
        "fallback": attempt.fell_back,
        "model": model,
        "usage": usage.as_dict(),
        "attempts": attempt.attempts,
        "error": error,
        "response_id": response_id,
        "prompt_hash": attempt.prompt_hash,
        "finished_at": now(),
    }


def failure_info(exc: BaseException, secrets: tuple[str, ...] = ()) -> ErrorInfo:
    """The ``error`` of a failed record: :func:`~flex_provider.engine.errors.error_info`, plus
    whether a later run may succeed."""
    info = error_info(exc, secrets)
    if isinstance(exc, BackgroundFailed):
        info["retryable"] = exc.retryable
    else:
        info["retryable"] = isinstance(exc, WaitTooLong) or classify(exc) in _RETRYABLE
    return cast(ErrorInfo, info)  # error_info writes type, [status_code, code,] message[, request_id]


class Recorder:
    """Turns an item's outcome into its record, and keeps the run's item, token and cost counters in
    step with the records (the progress line reports them): each outcome is counted exactly once."""

    __slots__ = ("counters", "default_model", "prices", "secrets")

    def __init__(
        self, counters: RunCounters, prices: PriceTable, default_model: str, secrets: tuple[str, ...] = ()
    ) -> None:
        self.counters = counters
        self.prices = prices
        self.default_model = default_model  # for answers that do not say which model served them
        self.secrets = secrets

    def success(self, attempt: ItemAttempt, reply: Reply) -> ResultRecord:
        self.counters.succeeded += 1
        model = reply.model or self.default_model  # priced and recorded as the server says it answered
        self._account(reply.usage, reply.service_tier, model)
        return build_record(
            attempt,
            output=reply.output,
            service_tier=reply.service_tier,
            model=model,
            usage=reply.usage,
            error=None,
            response_id=reply.response_id,
        )

    def failure(self, attempt: ItemAttempt, exc: BaseException) -> ResultRecord:
        self.counters.failed += 1
        info = failure_info(exc, self.secrets)
        # A refused or invalid answer was billed all the same: the exception carries what it cost.
        usage = getattr(exc, "usage", None) or Usage()
        tier = getattr(exc, "service_tier", None)
        model = getattr(exc, "model", None) or self.default_model
        self._account(usage, tier, model)
        return build_record(
            attempt, output=None, service_tier=tier, model=model, usage=usage, error=info, response_id=None
        )

    def _account(self, usage: Usage, tier: str | None, model: str) -> None:
        self.counters.served(tier)
        self.counters.usage.add(usage)
        self.counters.cost.add(self.prices, model, tier, usage)


class ResultBytes:
    """XCom mode: the bytes the final records take as JSON, against ``limit`` (None: not counted).

    The engine stops sending once over the limit: a result too big for XCom could only be refused
    after paying for every answer in it."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int | None, used: int = 0) -> None:
        self.limit = limit
        self.used = used  # records already on storage count too (set from the store's state)

    @property
    def over(self) -> bool:
        return self.limit is not None and self.used > self.limit

    def add(self, record: ResultRecord) -> bool:
        """Count one more finished record; True once the records are over the limit."""
        if self.limit is None:
            return False
        self.used += len(json.dumps(record, ensure_ascii=False, default=str).encode("utf-8", "replace"))
        return self.used > self.limit

    def stopped_error(self) -> FlexRunAborted:
        """Why the run stopped sending, and how to get the rest (XCom cannot hold it)."""
        return FlexRunAborted(
            f"flex run stopped sending: the finished records already take {self.used} bytes, over the "
            f"XCom limit of {self.limit} bytes (xcom_max_bytes), so a bigger run could only be refused "
            "after paying for it. Set output_path (e.g. 's3://bucket/folder/') to write results to object storage; "
            "pointing output_path at the folder named below reuses every answer already paid for.",
            {"type": "ResultsTooLarge", "result_bytes": self.used},
        )


def run_header(
    sessions: Iterable[Mapping[str, Any]],
    counters: RunCounters,
    *,
    model: str,
    service_tier: str,
    output_path: str | None,
    duration_s: float,
) -> RunHeader:
    """The summary's counters: request counters summed over every session's saved progress
    (``sessions``, this one's included: crashed sessions' requests count too), plus ``this_run``."""
    totals = dict.fromkeys(RunCounters.PERSISTED, 0)
    for session in sessions:
        for name in totals:
            totals[name] += int(session.get(name, 0))
    return {
        "status": "success",
        "requests": totals["requests"],
        "unavailable": totals["unavailable"],
        "rate_limited": totals["rate_limited"],
        "transient_errors": totals["transient_errors"],
        "malformed_answers": totals["malformed"],
        "fallbacks": totals["fallbacks"],
        "this_run": {
            "requests": counters.requests,
            "resumed": counters.resumed,
            "processed": counters.succeeded + counters.failed,
            "duplicates_in_input": counters.duplicates,
            "prompt_changed": counters.prompt_changed,
            "background_reattached": counters.background_reattached,
        },
        "model": model,
        "service_tier": service_tier,
        "output_path": output_path,
        "duration_s": duration_s,
        "finished_at": now(),
    }


def summarize_records(records: Iterable[Mapping[str, Any]], prices: PriceTable, default_model: str) -> RecordTotals:
    """Totals over final records as read back from storage (so fields are checked, not trusted);
    priced by the model and tier each record says it was served with."""
    succeeded = failed = 0
    usage = Usage()
    cost = CostTally()
    failed_ids: list[str] = []
    failures = FailureTally()
    tiers: dict[str, int] = {}
    for record in records:
        tier = record.get("service_tier")
        if isinstance(tier, str):
            tiers[tier] = tiers.get(tier, 0) + 1
        if record.get("status") == "succeeded":
            succeeded += 1
        else:
            failed += 1
            if len(failed_ids) < FAILED_IDS_SHOWN:
                failed_ids.append(record.get("id"))  # type: ignore[arg-type]  # store.as_record checked it is a str
            failures.add(record)
        record_usage = Usage.from_dict(record.get("usage"))
        usage.add(record_usage)
        cost.add(prices, record.get("model") or default_model, record.get("service_tier"), record_usage)
    return {
        "total": succeeded + failed,
        "succeeded": succeeded,
        "failed": failed,
        "failed_ids": failed_ids,
        "failures": failures.result(),
        "usage": usage.as_dict(),
        "cost_usd": cost.as_dict(),
        "tiers": tiers,
    }


# -- for people: the summary as log lines (counts, ids and money only, never a prompt or output) ------


def usage_text(usage: Mapping[str, int]) -> str:
    """``tokens in 1,234 (cached 0) out 5,678``"""
    return f"tokens in {usage.get('input', 0):,} (cached {usage.get('cached', 0):,}) out {usage.get('output', 0):,}"


def failure_text(group: FailureGroup) -> str:
    """``179 x NotFoundError 404 model_not_found (not retryable): <message> (e.g. id-1, id-2)``"""
    kind = " ".join(str(part) for part in (group["type"], group["status_code"], group["code"]) if part is not None)
    retry = "retryable" if group["retryable"] else "not retryable"
    message = f": {group['sample_message']}" if group["sample_message"] else ""
    ids = f" (e.g. {', '.join(group['sample_ids'])})" if group["sample_ids"] else ""
    return f"{group['count']:,} x {kind} ({retry}){message}{ids}"


def summary_lines(summary: RunSummary) -> list[str]:
    """The summary as a few lines a person reads: items, requests, tokens, money, failures by reason."""
    lines = [
        f"{summary['total']:,} item(s): succeeded {summary['succeeded']:,}, failed {summary['failed']:,}; "
        f"requests {summary['requests']:,} (this run {summary['this_run']['requests']:,}, "
        f"resumed {summary['this_run']['resumed']:,}), unavailable(429) {summary['unavailable']:,}, "
        f"rate-limited(429) {summary['rate_limited']:,}, transient errors {summary['transient_errors']:,}, "
        f"fallbacks {summary['fallbacks']:,}",
        f"{usage_text(summary['usage'])}; {cost_text(summary['cost_usd'])}; {summary['duration_s']:,.1f}s",
    ]
    lines += [f"failed: {failure_text(group)}" for group in summary["failures"]]
    return lines
