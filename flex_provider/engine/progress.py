"""Counters of a run, the one-line progress report the trigger logs every few seconds, and the live
state each engine session checkpoints in ``_progress/<session>.json`` (what the UI's Flex tab reads,
see :mod:`flex_provider.live`).

Counts, ids, error kinds and money only: prompts and outputs may be private data and are never logged
or checkpointed here. Everything per item is O(1); what a checkpoint writes is bounded (at most
:data:`FAILURES_SHOWN` failures, :data:`FAILURE_GROUPS_TRACKED` groups, :data:`SERIES_POINTS` points)
whatever the size of the run, because the checkpoint is built in the triggerer's event loop.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypedDict

from flex_provider.engine.pricing import CostTally, cost_text
from flex_provider.engine.usage import Usage

PROGRESS_FORMAT = 1  # ``format`` of a progress file with the live state; files without it hold counters only
FAILURES_SHOWN = 20  # a session's progress file names its first few failed items one by one
FAILURE_GROUPS_SHOWN = 20  # the summary's ``failures``: at most this many groups, the biggest first
FAILURE_GROUPS_TRACKED = 200  # distinct kinds of failure counted one by one; more fold into "other"
FAILURE_SAMPLE_IDS = 5
FAILURE_MESSAGE_CHARS = 300
SERIES_POINTS = 240  # points kept per session: resolution halves when full, the newest point is always kept
SERIES_MIN_GAP_S = 1.0  # initial spacing of the series; doubles at each halving


def iso(ts: float) -> str:
    """Epoch seconds as ISO 8601 UTC, like the records' ``finished_at``."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds")


def clip(text: Any, limit: int = FAILURE_MESSAGE_CHARS) -> str:
    """A message cut to ``limit`` characters (``...`` marks the cut); not a string: empty."""
    if not isinstance(text, str):
        return ""
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class RunCounters:
    requests: int = 0
    unavailable: int = 0  # 429 resource_unavailable answers
    rate_limited: int = 0  # 429 rate_limit_exceeded answers
    transient_errors: int = 0  # 408/409/5xx/connection/timeouts/malformed answers
    malformed: int = 0  # 200 answers that could not be read (invalid JSON, HTML, no output)
    fallbacks: int = 0  # items sent to the fallback tier
    background_created: int = 0
    background_reattached: int = 0  # pending background responses picked up after a restart
    succeeded: int = 0
    failed: int = 0
    resumed: int = 0  # items skipped because storage already held their result
    resumed_failed: int = 0  # of ``resumed``, those whose final record is a failure
    duplicates: int = 0  # input items whose id was already seen in this input
    prompt_changed: int = 0  # items with a final record for another prompt: sent again
    budget_skipped: int = 0  # items not sent: the budget could not afford them (records "skipped")
    in_flight: int = 0
    usage: Usage = field(default_factory=Usage)
    cost: CostTally = field(default_factory=CostTally)
    tiers: dict[str, int] = field(default_factory=dict)  # items answered, by the tier the server says served them
    fallbacks_by_reason: dict[str, int] = field(default_factory=dict)  # e.g. {"unavailable": 3}
    started: float = field(default_factory=time.monotonic)

    PERSISTED = (
        "requests",
        "unavailable",
        "rate_limited",
        "transient_errors",
        "malformed",
        "fallbacks",
        "background_created",
        "background_reattached",
    )

    def persisted(self) -> dict[str, Any]:
        """The request counters saved with each checkpoint (so crashed sessions still count)."""
        return {name: getattr(self, name) for name in self.PERSISTED}

    def fell_back(self, reason: str) -> None:
        """One item moved to the fallback tier, for ``reason``: "unavailable" (flex had no capacity)
        or "deadline" (the deadline planner sent it there)."""
        self.fallbacks += 1
        self.fallbacks_by_reason[reason] = self.fallbacks_by_reason.get(reason, 0) + 1

    def served(self, tier: str | None) -> None:
        """One answered item, on the tier the server reported (an answer that did not say: not counted)."""
        if isinstance(tier, str):
            self.tiers[tier] = self.tiers.get(tier, 0) + 1

    @property
    def done(self) -> int:
        """Items final in this session's view: finished here, or found final on storage."""
        return self.succeeded + self.failed + self.resumed

    def line(self, total: int | None) -> str:
        done = self.succeeded + self.failed
        of = f"/{total:,}" if total is not None else ""
        u, c = self.usage, self.cost
        # One line, no space inside a label and its number's meaning ("unavailable(429)" cannot be
        # wrapped apart in a log viewer as "429" / "unavailable" could).
        skipped = f", skipped(budget) {self.budget_skipped:,}" if self.budget_skipped else ""
        return (
            f"flex progress: done {done:,}{of} (succeeded {self.succeeded:,}, failed {self.failed:,}, "
            f"resumed {self.resumed:,}{skipped}), in flight {self.in_flight}, requests {self.requests:,}, "
            f"unavailable(429) {self.unavailable:,}, rate-limited(429) {self.rate_limited:,}, "
            f"transient errors {self.transient_errors:,}, fallbacks {self.fallbacks:,}, "
            f"tokens in {u.input:,} out {u.output:,}, "
            f"{cost_text(c.as_dict())}, "
            f"elapsed {time.monotonic() - self.started:.0f}s"
        )


# -- failures, grouped and sampled ---------------------------------------------------------------


class FailureGroup(TypedDict):
    """Failed records of one kind (error type, code, status code, retryable): why items failed,
    without opening the part files. Messages are the server's (redacted), never a prompt or output."""

    type: str  # exception class name, e.g. "NotFoundError"; "other" for the folded remainder
    code: str | None
    status_code: int | None
    count: int
    retryable: bool  # sent again by a task retry/clear; if False only with redo_failed="all"
    sample_message: str  # the first record's message, cut to FAILURE_MESSAGE_CHARS
    sample_ids: list[str]  # the first FAILURE_SAMPLE_IDS


class FailureSample(TypedDict):
    """One failed item as the live state names it (the first few of a session)."""

    id: str
    type: str
    code: str | None
    status_code: int | None
    retryable: bool
    message: str  # redacted when the record was built, cut to FAILURE_MESSAGE_CHARS


_GroupKey = tuple[str, str | None, int | None, bool]


def _error_of(record: Mapping[str, Any]) -> tuple[_GroupKey, Any]:
    """The group key of a failed record, and its message (damaged or foreign fields read as unknown)."""
    error = record.get("error")
    error = error if isinstance(error, dict) else {}
    kind, code, status = error.get("type"), error.get("code"), error.get("status_code")
    key = (
        kind if isinstance(kind, str) else "unknown",
        code if isinstance(code, str) else None,
        status if isinstance(status, int) and not isinstance(status, bool) else None,
        error.get("retryable") is True,
    )
    return key, error.get("message")


def failure_sample(record: Mapping[str, Any]) -> FailureSample:
    (kind, code, status, retryable), message = _error_of(record)
    rid = record.get("id")
    return {
        "id": rid if isinstance(rid, str) else "",
        "type": kind,
        "code": code,
        "status_code": status,
        "retryable": retryable,
        "message": clip(message),
    }


class FailureTally:
    """Failed records grouped by kind, in bounded memory: at most ``FAILURE_GROUPS_TRACKED`` groups
    (each with a few ids and one message) whatever the number of records; kinds met after that are
    counted together as one ``"other"`` group, so the counts always add up to the failures."""

    __slots__ = ("groups", "other")

    def __init__(self) -> None:
        self.groups: dict[_GroupKey, FailureGroup] = {}
        self.other: FailureGroup | None = None

    def add(self, record: Mapping[str, Any]) -> None:
        key, message = _error_of(record)
        rid = record.get("id")
        self._count(key, message, 1, [rid] if isinstance(rid, str) else [])

    def add_group(self, group: Mapping[str, Any]) -> None:
        """Merge a group another tally produced (another session's, read back from storage)."""
        count = group.get("count")
        if not isinstance(count, int) or isinstance(count, bool) or count <= 0:
            return
        key, _ = _error_of({"error": group})
        ids = group.get("sample_ids")
        ids = [i for i in ids if isinstance(i, str)] if isinstance(ids, list) else []
        self._count(key, group.get("sample_message"), count, ids)

    def _count(self, key: _GroupKey, message: Any, count: int, ids: list[str]) -> None:
        group = self.groups.get(key)
        if group is None:
            if len(self.groups) < FAILURE_GROUPS_TRACKED:
                group = self.groups[key] = self._new(*key, message)
            else:
                group = self.other = self.other or self._new("other", None, None, False, "")
                group["retryable"] = group["retryable"] or key[3]
        group["count"] += count
        room = FAILURE_SAMPLE_IDS - len(group["sample_ids"])
        if room > 0 and ids:
            group["sample_ids"].extend(ids[:room])

    @staticmethod
    def _new(kind: str, code: str | None, status: int | None, retryable: bool, message: Any) -> FailureGroup:
        return {
            "type": kind,
            "code": code,
            "status_code": status,
            "count": 0,
            "retryable": retryable,
            "sample_message": clip(message),
            "sample_ids": [],
        }

    def result(self) -> list[FailureGroup]:
        """The biggest groups first (first met first among equals); past ``FAILURE_GROUPS_SHOWN``
        the smallest are folded into one ``"other"`` group. New dicts: the tally may keep counting
        while a checkpoint writes them from a thread."""
        groups = sorted(self.groups.values(), key=lambda g: -g["count"])
        if self.other is not None:
            groups.append(self.other)
        if len(groups) > FAILURE_GROUPS_SHOWN:
            shown, rest = groups[: FAILURE_GROUPS_SHOWN - 1], groups[FAILURE_GROUPS_SHOWN - 1 :]
            other = self._new("other", None, None, any(g["retryable"] for g in rest), "")
            other["count"] = sum(g["count"] for g in rest)
            other["sample_message"] = "smaller groups of other kinds of failure; see the records' error fields"
            other["sample_ids"] = [i for g in rest for i in g["sample_ids"]][:FAILURE_SAMPLE_IDS]
            groups = [*shown, other]
        return [{**g, "sample_ids": list(g["sample_ids"])} for g in groups]


# -- the live state of one session ----------------------------------------------------------------


class SeriesPoint(TypedDict):
    """One sample of a session's progress, taken at a checkpoint. Counters are this session's
    (``done`` includes items resumed from storage; ``processed`` does not: throughput uses it)."""

    ts: float  # epoch seconds
    done: int
    processed: int
    unavailable: int
    rate_limited: int
    cost: float
    standard_cost: float
    tiers: dict[str, int]


class ProgressSeries:
    """A time series of bounded size. The newest point is always the latest sample; the others are
    at least ``gap_s`` apart: a newest point closer than that to the one before it is provisional,
    replaced by the next sample instead of kept. When more than ``cap`` points are held, every other
    one goes (the newest stays) and the gap doubles: a run of any length keeps a history spanning
    the whole run, evenly spaced, in O(cap) memory."""

    __slots__ = ("cap", "gap_s", "points")

    def __init__(self, cap: int = SERIES_POINTS, gap_s: float = SERIES_MIN_GAP_S) -> None:
        if cap < 2:
            raise ValueError("a series needs room for at least two points")
        self.cap = cap
        self.gap_s = gap_s
        self.points: list[SeriesPoint] = []

    def add(self, point: SeriesPoint) -> None:
        points = self.points
        if len(points) >= 2 and points[-1]["ts"] - points[-2]["ts"] < self.gap_s:
            points[-1] = point  # the newest was provisional
            return
        points.append(point)
        if len(points) > self.cap:
            self.points = points[(len(points) - 1) % 2 :: 2]  # the newest index is kept
            self.gap_s *= 2


class ProgressCost(TypedDict):
    actual: float  # what the priced tokens cost (``unpriced_tokens`` > 0: the run's cost is unknown)
    standard_equivalent: float
    cache_saved: float
    unpriced_tokens: int


class SessionProgress(TypedDict):
    """``_progress/<session>.json``: the request counters every version wrote (summed over sessions
    by :func:`~flex_provider.engine.records.run_header`), then this session's live state."""

    requests: int
    unavailable: int
    rate_limited: int
    transient_errors: int
    malformed: int
    fallbacks: int
    background_created: int
    background_reattached: int
    format: int  # PROGRESS_FORMAT
    session: str
    total: int | None  # items in the input, when known
    succeeded: int  # finished in this session
    failed: int
    resumed: int  # found final on storage, not sent again
    resumed_failed: int  # of those, failed ones
    in_flight: int
    tokens: dict[str, int]  # Usage.as_dict(): input, cached, output, reasoning
    cost: ProgressCost
    tiers: dict[str, int]
    fallbacks_by_reason: dict[str, int]
    started_at: str  # ISO 8601 UTC
    updated_at: str
    model: str
    service_tier: str
    output_path: str | None
    failures: list[FailureSample]
    failure_groups: list[FailureGroup]
    series: list[SeriesPoint]
    budget_skipped: int  # items this session did not send: the budget could not afford them
    budget: ProgressBudget | None  # None: no max_cost_usd
    deadline: ProgressDeadline | None  # None: no deadline


class ProgressBudget(TypedDict):
    max_cost_usd: float
    spent: float  # earlier sessions in the folder included
    reserved: float  # worst cases of the requests in flight
    exhausted: bool  # a request was refused: items are being skipped


class ProgressDeadline(TypedDict):
    at: str  # ISO 8601
    predicted_miss: bool  # by the planner's latest plan, even the fallback tier cannot make it
    missed: bool  # items finished late, or the deadline passed with items left
    needed_on_fallback: int  # of the items left, how many the plan puts on the fallback tier


class LiveProgress:
    """What one engine session checkpoints besides its records: built in the event loop at each
    checkpoint (O(1) plus bounded copies), written as JSON from a thread by the store."""

    __slots__ = (
        "_started",
        "clock",
        "failures",
        "model",
        "output_path",
        "series",
        "service_tier",
        "session",
        "tally",
        "total",
    )

    def __init__(
        self,
        session: str,
        *,
        model: str,
        service_tier: str,
        output_path: str | None,
        clock: Any = time.time,
    ) -> None:
        self.session = session
        self.model = model
        self.service_tier = service_tier
        self.output_path = output_path
        self.clock = clock
        self.total: int | None = None
        self._started: float | None = None
        self.failures: list[FailureSample] = []
        self.tally = FailureTally()
        self.series = ProgressSeries()

    def start(self, total: int | None) -> None:
        """The session starts working (holds the folder's lease): ``started_at`` is now."""
        self.total = total
        self._started = self.clock()

    def on_record(self, record: Mapping[str, Any]) -> None:
        """A finished record of this session (O(1)): failures are grouped, the first few kept
        (an item skipped for the budget is not a failure: it is counted apart)."""
        if record.get("status") != "failed":
            return
        self.tally.add(record)
        if len(self.failures) < FAILURES_SHOWN:
            self.failures.append(failure_sample(record))

    def snapshot(self, counters: RunCounters, controls: Mapping[str, Any] | None = None) -> SessionProgress:
        """The progress file's content now; also samples the series. Only new containers or
        immutable values: the engine keeps counting while a thread serialises this. ``controls``:
        ``RunControls.live()`` (the budget and the deadline, when set)."""
        controls = controls or {}
        now = self.clock()
        started = self._started if self._started is not None else now
        cost = counters.cost
        tiers = dict(counters.tiers)
        self.series.add(
            {
                "ts": round(now, 3),
                "done": counters.done,
                "processed": counters.succeeded + counters.failed,
                "unavailable": counters.unavailable,
                "rate_limited": counters.rate_limited,
                "cost": round(cost.actual, 6),
                "standard_cost": round(cost.standard_equivalent, 6),
                "tiers": tiers,
            }
        )
        return {
            "requests": counters.requests,
            "unavailable": counters.unavailable,
            "rate_limited": counters.rate_limited,
            "transient_errors": counters.transient_errors,
            "malformed": counters.malformed,
            "fallbacks": counters.fallbacks,
            "background_created": counters.background_created,
            "background_reattached": counters.background_reattached,
            "format": PROGRESS_FORMAT,
            "session": self.session,
            "total": self.total,
            "succeeded": counters.succeeded,
            "failed": counters.failed,
            "resumed": counters.resumed,
            "resumed_failed": counters.resumed_failed,
            "in_flight": counters.in_flight,
            "tokens": counters.usage.as_dict(),
            "cost": {
                "actual": round(cost.actual, 6),
                "standard_equivalent": round(cost.standard_equivalent, 6),
                "cache_saved": round(cost.cache_saved, 6),
                "unpriced_tokens": cost.unpriced_tokens,
            },
            "tiers": tiers,
            "fallbacks_by_reason": dict(counters.fallbacks_by_reason),
            "started_at": iso(started),
            "updated_at": iso(now),
            "model": self.model,
            "service_tier": self.service_tier,
            "output_path": self.output_path,
            "failures": list(self.failures),
            "failure_groups": self.tally.result() if self.tally.groups or self.tally.other else [],
            "series": list(self.series.points),
            "budget_skipped": counters.budget_skipped,
            "budget": controls.get("budget"),
            "deadline": controls.get("deadline"),
        }
