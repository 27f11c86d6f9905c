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
from flex_provider.engine.budget import OverBudget
from flex_provider.engine.calls import Reply
from flex_provider.engine.errors import FlexRunAborted, Verdict, WaitTooLong, classify, error_info
from flex_provider.engine.pricing import TIER_MULTIPLIER, CostTally, PriceTable, cost_text
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


# An item not sent because the budget could not afford it: retryable, so a run with a higher cap sends it.
SKIPPED: Literal["skipped"] = "skipped"
BUDGET_CODE = "budget"


class ResultRecord(TypedDict):
    """One line of a part file: the final (or latest) outcome of one item."""

    id: str
    index: int  # position in the input
    # "skipped": not sent, the budget could not afford it (error.code "budget", retryable)
    status: Literal["succeeded", "failed", "skipped"]
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
    # Keys added later come last, so the keys above stay where every earlier version wrote them.
    fallback_reason: str | None  # why it fell back: "unavailable" (flex capacity) or "deadline"; None if not


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
    # Keys added later come last.
    fallbacks_by_reason: dict[str, int]  # "unavailable", "deadline": adds up to ``fallbacks``
    budget: BudgetSummary | None  # None: no max_cost_usd
    deadline: DeadlineSummary | None  # None: no deadline
    rate_limits: dict[str, Any] | None  # the pacer's figures (RatePacer.stats); None in older summaries


class BudgetSummary(TypedDict):
    """``Budget.as_dict()``: the cap, what was spent (earlier sessions in the folder included) and
    how many requests it refused (those items are ``skipped``)."""

    max_cost_usd: float
    spent: float
    spent_before: float
    spent_this_run: float
    reserved: float
    refused: int
    exhausted: bool
    unknown_costs: int
    overruns: int


class DeadlineSummary(TypedDict):
    """Where the run ended against its deadline; ``on_fallback`` and ``extra_cost_usd`` are over
    the final records (sessions before this one included)."""

    at: str  # ISO 8601
    met: bool  # every item finished by ``at``
    finished_late: int
    predicted_miss: bool  # the planner's last plan said even the fallback tier could not make it
    sent_flex: int  # this session's decisions
    sent_fallback: int
    flex_latency_s: float | None
    fallback_latency_s: float | None
    on_fallback: int  # final records sent to the fallback tier because of the deadline
    extra_cost_usd: float | None  # what they cost over their flex price (None: a model had no price)


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
    skipped: int  # not sent: the budget could not afford them (records "skipped"); part of ``total``


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
    # Written before budgets, deadlines and pacing: none of them was set.
    manifest.setdefault("skipped", 0)
    manifest.setdefault(
        "fallbacks_by_reason", {"unavailable": manifest["fallbacks"]} if manifest.get("fallbacks") else {}
    )
    for key in ("budget", "deadline", "rate_limits"):
        manifest.setdefault(key, None)
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
    status: Literal["skipped"] | None = None,
) -> ResultRecord:
    """The one record builder: a success has ``error=None``, a failure its :func:`failure_info`,
    an item the budget could not afford ``status="skipped"``."""
    item = attempt.item
    return {
        "id": item.id,
        "index": item.index,
        "status": status or ("succeeded" if error is None else "failed"),
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
        "fallback_reason": attempt.fallback_reason,
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

    def skipped(self, attempt: ItemAttempt, exc: OverBudget) -> ResultRecord:
        """Not sent: the budget could not afford it. Retryable: a later run with a higher cap sends it."""
        self.counters.budget_skipped += 1
        info: ErrorInfo = {"type": "OverBudget", "code": BUDGET_CODE, "message": str(exc), "retryable": True}
        return build_record(
            attempt,
            output=None,
            service_tier=None,
            model=self.default_model,
            usage=Usage(),
            error=info,
            response_id=None,
            status=SKIPPED,
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


def fallback_reasons(session: Mapping[str, Any]) -> dict[str, int]:
    """One session's fallbacks by reason; those a file does not attribute (older versions, which
    fell back only when flex was unavailable) count as ``unavailable``."""
    found = session.get("fallbacks_by_reason")
    reasons = {
        k: v
        for k, v in (found.items() if isinstance(found, dict) else ())
        if isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v > 0
    }
    fallbacks = session.get("fallbacks")
    rest = (fallbacks if isinstance(fallbacks, int) and not isinstance(fallbacks, bool) else 0) - sum(reasons.values())
    if rest > 0:
        reasons["unavailable"] = reasons.get("unavailable", 0) + rest
    return reasons


def run_header(
    sessions: Iterable[Mapping[str, Any]],
    counters: RunCounters,
    *,
    model: str,
    service_tier: str,
    output_path: str | None,
    duration_s: float,
    budget: BudgetSummary | None = None,
    deadline: DeadlineSummary | None = None,
    rate_limits: dict[str, Any] | None = None,
) -> RunHeader:
    """The summary's counters: request counters summed over every session's saved progress
    (``sessions``, this one's included: crashed sessions' requests count too), plus ``this_run``
    and where the run stands against its budget, deadline and rate limits."""
    totals = dict.fromkeys(RunCounters.PERSISTED, 0)
    reasons: dict[str, int] = {}
    for session in sessions:
        for name in totals:
            totals[name] += int(session.get(name, 0))
        for reason, count in fallback_reasons(session).items():
            reasons[reason] = reasons.get(reason, 0) + count
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
        "fallbacks_by_reason": reasons,
        "budget": budget,
        "deadline": deadline,
        "rate_limits": rate_limits,
    }


class DeadlineTally:
    """Final records sent to the fallback tier because of the deadline, and what that cost over
    the price of the run's own tier (flex): the deadline's price."""

    __slots__ = ("extra", "items", "own_multiplier", "unpriced")

    def __init__(self, own_tier: str) -> None:
        self.own_multiplier = TIER_MULTIPLIER.get(own_tier, 1.0)
        self.items = 0
        self.extra = 0.0
        self.unpriced = False

    def add(self, record: Mapping[str, Any], prices: PriceTable, model: str, usage: Usage) -> None:
        if record.get("fallback_reason") != "deadline":
            return
        self.items += 1
        standard = prices.standard_cost(model, usage)
        if standard is None:
            self.unpriced = True
            return
        served = record.get("service_tier")
        self.extra += standard * (TIER_MULTIPLIER.get(served, 1.0) if isinstance(served, str) else 1.0)
        self.extra -= standard * self.own_multiplier

    def extra_cost(self) -> float | None:
        return None if self.unpriced else round(self.extra, 6)


def summarize_records(
    records: Iterable[Mapping[str, Any]],
    prices: PriceTable,
    default_model: str,
    deadline: DeadlineTally | None = None,
) -> RecordTotals:
    """Totals over final records as read back from storage (so fields are checked, not trusted);
    priced by the model and tier each record says it was served with. ``deadline`` (optional)
    tallies the records the deadline sent to the fallback tier as they go by."""
    succeeded = failed = skipped = 0
    usage = Usage()
    cost = CostTally()
    failed_ids: list[str] = []
    failures = FailureTally()
    tiers: dict[str, int] = {}
    for record in records:
        tier = record.get("service_tier")
        if isinstance(tier, str):
            tiers[tier] = tiers.get(tier, 0) + 1
        status = record.get("status")
        if status == "succeeded":
            succeeded += 1
        elif status == SKIPPED:
            skipped += 1
            continue  # not sent: no usage, no cost
        else:
            failed += 1
            if len(failed_ids) < FAILED_IDS_SHOWN:
                failed_ids.append(record.get("id"))  # type: ignore[arg-type]  # store.as_record checked it is a str
            failures.add(record)
        record_usage = Usage.from_dict(record.get("usage"))
        usage.add(record_usage)
        model = record.get("model") or default_model
        cost.add(prices, model, record.get("service_tier"), record_usage)
        if deadline is not None:
            deadline.add(record, prices, model, record_usage)
    return {
        "total": succeeded + failed + skipped,
        "succeeded": succeeded,
        "failed": failed,
        "failed_ids": failed_ids,
        "failures": failures.result(),
        "usage": usage.as_dict(),
        "cost_usd": cost.as_dict(),
        "tiers": tiers,
        "skipped": skipped,
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
    skipped = summary.get("skipped") or 0
    lines = [
        f"{summary['total']:,} item(s): succeeded {summary['succeeded']:,}, failed {summary['failed']:,}"
        + (f", skipped {skipped:,} (over budget)" if skipped else "")
        + "; "
        f"requests {summary['requests']:,} (this run {summary['this_run']['requests']:,}, "
        f"resumed {summary['this_run']['resumed']:,}), unavailable(429) {summary['unavailable']:,}, "
        f"rate-limited(429) {summary['rate_limited']:,}, transient errors {summary['transient_errors']:,}, "
        f"fallbacks {summary['fallbacks']:,}",
        f"{usage_text(summary['usage'])}; {cost_text(summary['cost_usd'])}; {summary['duration_s']:,.1f}s",
    ]
    lines += [line for line, _ in controls_lines(summary)]
    lines += [f"failed: {failure_text(group)}" for group in summary["failures"]]
    return lines


def controls_lines(summary: RunSummary) -> list[tuple[str, bool]]:
    """The budget and the deadline, when the run had them, each with whether it is a warning (items
    left unsent by the budget, a missed deadline)."""
    lines = []
    budget = summary.get("budget")
    if budget:
        line = (
            f"budget: spent ${budget['spent']:,.4f} of max_cost_usd ${budget['max_cost_usd']:,.4f} "
            f"(${budget['spent_before']:,.4f} in earlier sessions)"
        )
        skipped = summary.get("skipped") or 0
        if skipped:
            line += f"; exhausted: {skipped:,} item(s) not sent (status skipped, sent by a run with a higher cap)"
        lines.append((line, bool(skipped)))
    deadline = summary.get("deadline")
    if deadline:
        extra = deadline.get("extra_cost_usd")
        cost = f"${extra:,.4f}" if isinstance(extra, (int, float)) else "unknown"
        verdict = "met" if deadline["met"] else f"MISSED ({deadline['finished_late']:,} item(s) finished late)"
        lines.append(
            (
                f"deadline {deadline['at']}: {verdict}; {deadline['on_fallback']:,} item(s) sent to the fallback "
                f"tier for it, costing {cost} more than on {summary['service_tier']}",
                not deadline["met"],
            )
        )
    return lines
