"""The live state of a run, read only from what its engine sessions checkpoint on storage.

The UI's Flex tab shows it. It never asks a triggerer: a run may move between triggerers, restart,
or be picked up by a task retry, and every engine session leaves its own ``_progress/<session>.json``
(see :class:`~flex_provider.engine.progress.SessionProgress`) in the run's folder. Merging them:

- request counters (requests, 429s, fallbacks...), tokens, cost and tiers add up over the sessions:
  what a crashed session sent and was billed for stays sent and billed;
- done / succeeded / failed / skipped / in_flight / total are the latest session's view: it counts the
  items earlier sessions finished (found final on storage, ``skipped``) besides its own. Note the two
  skips: ``skipped`` is items *resumed* (final on storage, not sent again: it has meant this since
  the first release), ``budget_skipped`` items *not sent because of the budget* (records with status
  ``"skipped"``, what the summary's ``skipped`` counts; a later run with a higher cap sends them);
- ``budget`` and ``deadline`` are the latest session's (``None`` when the run has none);
- once ``_manifest.json`` is there (and no session started after it), the run is finished and the
  totals are the manifest's, the numbers the operator returned.

Files of older versions (request counters only), a torn or foreign progress file, a corrupt manifest:
read what can be read, skip the rest. Counts, ids, error kinds and money only: never a prompt, an
output or a key (failure messages were redacted and freed of model output when the records were built).

Blocking I/O: call :func:`read_live_state` from a thread or a sync endpoint.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, TypedDict, cast

from flex_provider.engine.progress import (
    FAILURES_SHOWN,
    PROGRESS_FORMAT,
    FailureGroup,
    FailureSample,
    FailureTally,
    clip,
    iso,
)

LIVE_FORMAT = 1
SERIES_POINTS_SHOWN = 500
THROUGHPUT_WINDOW_S = 300.0  # throughput (and so the ETA) over the last few minutes, not the whole run
_GROUP_KEYS = FailureGroup.__required_keys__
_COUNTERS = ("requests", "unavailable", "rate_limited", "transient_errors", "malformed", "fallbacks")


class LiveTokens(TypedDict):
    input: int
    cached: int
    output: int


class LiveCost(TypedDict):
    """USD. Every amount is None once some tokens could not be priced (``unpriced_tokens``): the
    cost is then unknown, not the partial sum of the models that had a price."""

    actual: float | None
    standard_equivalent: float | None
    saved: float | None  # by flex
    cache_saved: float | None  # by the prompt cache
    unpriced_tokens: int


def _live_cost(actual: float, standard: float, cache_saved: float, unpriced: int) -> LiveCost:
    if unpriced:
        return {
            "actual": None,
            "standard_equivalent": None,
            "saved": None,
            "cache_saved": None,
            "unpriced_tokens": unpriced,
        }
    return {
        "actual": round(actual, 6),
        "standard_equivalent": round(standard, 6),
        "saved": round(standard - actual, 6),
        "cache_saved": round(cache_saved, 6),
        "unpriced_tokens": 0,
    }


class LivePoint(TypedDict):
    """The run at one checkpoint: counters of every session up to then (``done``: the latest
    session's view)."""

    ts: float  # epoch seconds
    done: int
    unavailable: int
    rate_limited: int
    cost: float
    standard_cost: float
    tiers: dict[str, int]


class LiveState(TypedDict):
    """What the Flex tab shows; JSON-ready, keys in this order (the contract with the UI plugin)."""

    format: int
    finished: bool  # _manifest.json present: the numbers below are the final ones
    total: int | None  # items in the input, when known
    done: int
    succeeded: int
    failed: int
    skipped: int  # items resumed: already final from earlier sessions, not sent again (see budget_skipped)
    in_flight: int
    requests: int
    unavailable: int
    rate_limited: int
    transient_errors: int
    malformed: int
    fallbacks: int
    fallbacks_by_reason: dict[str, int]
    tokens: LiveTokens
    cost: LiveCost
    tiers: dict[str, int]  # items served per service tier, as the server reported it
    throughput_per_min: float | None
    eta_s: float | None
    eta_at: str | None
    started_at: str | None
    updated_at: str | None
    duration_s: float | None
    model: str | None
    service_tier: str | None
    output_path: str | None
    sessions: int
    failures: list[FailureSample]
    failure_groups: list[FailureGroup]
    series: list[LivePoint]
    # Added later (readers of older states find them missing): the budget and the deadline.
    budget_skipped: int  # items not sent: over the budget (the summary's ``skipped``), not resumed ones
    budget: LiveBudget | None  # None: the run has no max_cost_usd
    deadline: LiveDeadline | None  # None: the run has no deadline


class LiveBudget(TypedDict):
    """USD; ``spent`` includes what earlier sessions in the folder spent."""

    max_cost_usd: float
    spent: float
    reserved: float  # worst cases of the requests in flight (0 once finished)
    exhausted: bool  # items are being (were) skipped


class LiveDeadline(TypedDict):
    at: str  # ISO 8601
    # "on_track"; "at_risk" (the planner says even the fallback tier cannot make it, or the ETA is
    # past the deadline); "missed" (passed with items left, or items finished late); "met" (finished in time)
    status: str
    predicted_finish: str | None  # the ETA (ISO 8601), while running and known
    on_fallback: int  # items sent to the fallback tier because of the deadline (fallbacks_by_reason)


def read_live_state(root: Any) -> LiveState | None:
    """The live state of the run whose work folder is ``root`` (an ``ObjectStoragePath`` or a
    ``pathlib.Path``); None while the folder holds no checkpoint."""
    # Imported here: the store imports the openai SDK (for its error types), which the UI plugin
    # must not pay for when it is merely loaded.
    from flex_provider.engine.records import as_summary
    from flex_provider.engine.store import CorruptCheckpointError, ResultStore

    store = ResultStore(root)
    sessions = store.load_sessions()
    try:
        raw = store.read_manifest()
        manifest: Mapping[str, Any] | None = as_summary(raw) if raw is not None else None
    except (CorruptCheckpointError, ValueError):  # half-written or foreign: the sessions still tell
        manifest = None
    if not sessions and manifest is None:
        return None
    return merge_live_state(sessions, manifest)


# -- merging (pure: what read_live_state found, in, the live state out) ------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _float(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _epoch(text: Any) -> float | None:
    """An ISO 8601 time as epoch seconds (None if it is not one)."""
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def _counts(value: Any) -> dict[str, int]:
    """A ``{name: count}`` object as read back (anything else: empty)."""
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and _int(v) > 0}


def _add(into: dict[str, int], counts: Mapping[str, int]) -> None:
    for key, count in counts.items():
        into[key] = into.get(key, 0) + count


class _Session:
    """One progress file, its fields checked (files are read back, not trusted)."""

    __slots__ = ("data", "live", "name", "points", "started", "updated")

    def __init__(self, name: str, data: Mapping[str, Any]) -> None:
        self.name = name
        self.data = data
        self.live = _int(data.get("format")) >= PROGRESS_FORMAT  # else: request counters only
        self.started = _epoch(data.get("started_at")) if self.live else None
        self.updated = _epoch(data.get("updated_at")) if self.live else None
        points = data.get("series") if self.live else None
        self.points = sorted(
            (p for p in points if isinstance(p, dict) and _float(p.get("ts")) > 0) if isinstance(points, list) else (),
            key=lambda p: _float(p["ts"]),
        )

    def get_int(self, name: str) -> int:
        return _int(self.data.get(name))

    def fallback_reasons(self) -> dict[str, int]:
        """By reason; fallbacks a file does not attribute (older versions) were for flex capacity."""
        reasons = _counts(self.data.get("fallbacks_by_reason")) if self.live else {}
        rest = self.get_int("fallbacks") - sum(reasons.values())
        if rest > 0:
            reasons["unavailable"] = reasons.get("unavailable", 0) + rest
        return reasons

    def failures(self, latest: bool) -> list[FailureSample]:
        """Its failed items; an earlier session's retryable ones were sent again by a later one."""
        found = self.data.get("failures") if self.live else None
        out: list[FailureSample] = []
        for entry in found if isinstance(found, list) else ():
            if (
                isinstance(entry, dict)
                and isinstance(entry.get("id"), str)
                and (latest or entry.get("retryable") is False)
            ):
                code, status = entry.get("code"), entry.get("status_code")
                out.append(
                    {
                        "id": entry["id"],
                        "type": _str(entry.get("type")) or "unknown",
                        "code": _str(code),
                        "status_code": status if _is_int(status) else None,
                        "retryable": entry.get("retryable") is True,
                        "message": clip(entry.get("message")),
                    }
                )
        return out

    def failure_groups(self, latest: bool) -> list[Mapping[str, Any]]:
        groups = self.data.get("failure_groups") if self.live else None
        return [
            g
            for g in (groups if isinstance(groups, list) else ())
            if isinstance(g, dict) and (latest or g.get("retryable") is False)
        ]


def _halve(points: list[LivePoint], cap: int) -> list[LivePoint]:
    """Every other point until at most ``cap`` remain; the newest is always kept."""
    while len(points) > cap:
        points = points[(len(points) - 1) % 2 :: 2]
    return points


def _series(sessions: Sequence[_Session]) -> list[LivePoint]:
    """Every session's points in time order; at each point, counters are the sum of each session's
    latest sample so far (what earlier sessions did stays done), ``done`` the newest session's."""
    timeline = sorted(
        ((_float(p["ts"]), order, p) for order, session in enumerate(sessions) for p in session.points),
        key=lambda entry: entry[:2],
    )
    last: dict[int, Mapping[str, Any]] = {}
    out: list[LivePoint] = []
    for ts, order, point in timeline:
        last[order] = point
        tiers: dict[str, int] = {}
        for sample in last.values():
            _add(tiers, _counts(sample.get("tiers")))
        out.append(
            {
                "ts": ts,
                "done": _int(last[max(last)].get("done")),
                "unavailable": sum(_int(s.get("unavailable")) for s in last.values()),
                "rate_limited": sum(_int(s.get("rate_limited")) for s in last.values()),
                "cost": round(sum(_float(s.get("cost")) for s in last.values()), 6),
                "standard_cost": round(sum(_float(s.get("standard_cost")) for s in last.values()), 6),
                "tiers": tiers,
            }
        )
    return _halve(out, SERIES_POINTS_SHOWN)


def _throughput(session: _Session | None) -> tuple[float, float] | None:
    """(items per second over the last THROUGHPUT_WINDOW_S of the session, ts of its newest sample).
    Items the session finished itself only: a burst of items found final on storage is no speed."""
    if session is None or not session.points:
        return None
    samples = [(_float(p["ts"]), _int(p.get("processed", p.get("done")))) for p in session.points]
    if session.started is not None and session.started < samples[0][0]:
        samples.insert(0, (session.started, 0))  # the session's start: nothing processed yet
    newest = samples[-1]
    since = newest[0] - THROUGHPUT_WINDOW_S
    old = next((s for s in reversed(samples[:-1]) if s[0] <= since), samples[0])
    elapsed = newest[0] - old[0]
    if elapsed <= 0:
        return None
    return max(newest[1] - old[1], 0) / elapsed, newest[0]


def merge_live_state(
    found: Sequence[tuple[str, Mapping[str, Any]]], manifest: Mapping[str, Any] | None = None
) -> LiveState:
    """The live state from ``(session, progress)`` pairs (``ResultStore.load_sessions``) and the run
    summary (``_manifest.json`` as checked by ``as_summary``), if any."""
    sessions = sorted((_Session(name, data) for name, data in found), key=lambda s: (s.started or 0.0, s.name))
    live = [s for s in sessions if s.live]
    latest = live[-1] if live else None
    if manifest is not None and latest is not None:
        finished_at = _epoch(manifest.get("finished_at"))
        if finished_at is not None and latest.started is not None and latest.started > finished_at:
            manifest = None  # an earlier run's summary: a new session has been working since

    counters = {name: sum(s.get_int(name) for s in sessions) for name in _COUNTERS}
    reasons: dict[str, int] = {}
    tiers: dict[str, int] = {}
    tokens = {"input": 0, "cached": 0, "output": 0}
    actual = standard = cache_saved = 0.0
    unpriced = 0
    failures: dict[str, FailureSample] = {}
    groups = FailureTally()
    for session in sessions:
        _add(reasons, session.fallback_reasons())
        if not session.live:
            continue
        is_latest = session is latest
        _add(tiers, _counts(session.data.get("tiers")))
        used = session.data.get("tokens")
        for name in tokens:
            tokens[name] += _int(used.get(name)) if isinstance(used, dict) else 0
        cost = session.data.get("cost")
        if isinstance(cost, dict):
            actual += _float(cost.get("actual"))
            standard += _float(cost.get("standard_equivalent"))
            cache_saved += _float(cost.get("cache_saved"))
            unpriced += _int(cost.get("unpriced_tokens"))
        for sample in session.failures(is_latest):
            failures[sample["id"]] = sample
        for group in session.failure_groups(is_latest):
            groups.add_group(group)

    view = latest.data if latest is not None else {}
    skipped = _int(view.get("resumed"))
    resumed_failed = min(_int(view.get("resumed_failed")), skipped)
    succeeded = skipped - resumed_failed + _int(view.get("succeeded"))
    failed = resumed_failed + _int(view.get("failed"))
    total = next((s.data["total"] for s in reversed(live) if _is_int(s.data.get("total"))), None)
    first = next((s for s in live if s.started is not None), None)
    updates = [s.updated for s in live if s.updated is not None]
    updated_ts = max(updates) if updates else None
    speed = _throughput(latest)

    budget_skipped = _int(view.get("budget_skipped"))
    state: LiveState = {
        "format": LIVE_FORMAT,
        "finished": manifest is not None,
        "total": total,
        "done": succeeded + failed,
        "succeeded": succeeded,
        "failed": failed,
        "skipped": skipped,
        "in_flight": _int(view.get("in_flight")),
        "requests": counters["requests"],
        "unavailable": counters["unavailable"],
        "rate_limited": counters["rate_limited"],
        "transient_errors": counters["transient_errors"],
        "malformed": counters["malformed"],
        "fallbacks": counters["fallbacks"],
        "fallbacks_by_reason": reasons,
        "tokens": {"input": tokens["input"], "cached": tokens["cached"], "output": tokens["output"]},
        "cost": _live_cost(actual, standard, cache_saved, unpriced),
        "tiers": tiers,
        "throughput_per_min": round(speed[0] * 60, 3) if speed is not None else None,
        "eta_s": None,
        "eta_at": None,
        "started_at": first.data["started_at"] if first is not None else None,
        "updated_at": iso(updated_ts) if updated_ts is not None else None,
        "duration_s": (
            round(updated_ts - first.started, 3)
            if first is not None and first.started is not None and updated_ts is not None
            else None
        ),
        "model": _str(view.get("model")),
        "service_tier": _str(view.get("service_tier")),
        "output_path": _str(view.get("output_path")),
        "sessions": len(sessions),
        "failures": list(failures.values())[:FAILURES_SHOWN],
        "failure_groups": groups.result(),
        "series": _series(live),
        "budget_skipped": budget_skipped,
        "budget": _budget(view.get("budget")),
        "deadline": None,
    }
    if manifest is not None:
        _finish(state, manifest)
    elif speed is not None and total is not None and speed[0] > 0:
        eta = max(total - state["done"] - budget_skipped, 0) / speed[0]
        state["eta_s"] = round(eta, 1)
        state["eta_at"] = iso(speed[1] + eta)
    state["deadline"] = _deadline(view.get("deadline"), state, manifest, updated_ts)
    return state


def _budget(found: Any) -> LiveBudget | None:
    if not isinstance(found, dict) or not isinstance(found.get("max_cost_usd"), int | float):
        return None
    return {
        "max_cost_usd": round(_float(found.get("max_cost_usd")), 6),
        "spent": round(_float(found.get("spent")), 6),
        "reserved": round(_float(found.get("reserved")), 6),
        "exhausted": found.get("exhausted") is True,
    }


def _deadline(
    found: Any, state: LiveState, manifest: Mapping[str, Any] | None, updated: float | None
) -> LiveDeadline | None:
    """Where the run stands against its deadline: the session's view while running, the summary's at the end."""
    summary = manifest.get("deadline") if manifest is not None else None
    source = summary if isinstance(summary, dict) else found
    at = _epoch(source.get("at")) if isinstance(source, dict) else None
    if at is None or not isinstance(source, dict):
        return None
    on_fallback = state["fallbacks_by_reason"].get("deadline", 0)
    if isinstance(summary, dict):
        status = "met" if summary.get("met") is True else "missed"
        on_fallback = _int(summary.get("on_fallback")) or on_fallback
    elif source.get("missed") is True or (updated is not None and updated > at):
        status = "missed"
    elif source.get("predicted_miss") is True or ((_epoch(state["eta_at"]) or 0.0) > at):
        status = "at_risk"
    else:
        status = "on_track"
    return {
        "at": iso(at),
        "status": status,
        "predicted_finish": state["eta_at"] if manifest is None else None,
        "on_fallback": on_fallback,
    }


def _finish(state: LiveState, summary: Mapping[str, Any]) -> None:
    """The run is over: its totals are the manifest's (the numbers the operator returned)."""
    state["total"] = _int(summary.get("total"))
    state["succeeded"] = _int(summary.get("succeeded"))
    state["failed"] = _int(summary.get("failed"))
    state["done"] = state["succeeded"] + state["failed"]
    this_run = summary.get("this_run")
    if isinstance(this_run, dict):
        state["skipped"] = _int(this_run.get("resumed"))
    state["budget_skipped"] = _int(summary.get("skipped"))
    budget = _budget(summary.get("budget"))
    if budget is not None:
        budget["reserved"] = 0.0
    state["budget"] = budget or state["budget"]
    state["in_flight"] = 0
    state["requests"] = _int(summary.get("requests"))
    state["unavailable"] = _int(summary.get("unavailable"))
    state["rate_limited"] = _int(summary.get("rate_limited"))
    state["transient_errors"] = _int(summary.get("transient_errors"))
    state["malformed"] = _int(summary.get("malformed_answers"))
    state["fallbacks"] = _int(summary.get("fallbacks"))
    usage = summary.get("usage")
    if isinstance(usage, dict):
        state["tokens"] = {
            "input": _int(usage.get("input")),
            "cached": _int(usage.get("cached")),
            "output": _int(usage.get("output")),
        }
    cost = summary.get("cost_usd")
    if isinstance(cost, dict):
        state["cost"] = _live_cost(
            _float(cost.get("actual")),
            _float(cost.get("standard_equivalent")),
            _float(cost.get("cache_saved")),
            _int(cost.get("unpriced_tokens")),
        )
    state["tiers"] = _counts(summary.get("tiers")) or state["tiers"]  # manifests before tiers: the sessions'
    groups = summary.get("failures")
    state["failure_groups"] = (
        [cast(FailureGroup, g) for g in groups if isinstance(g, dict) and g.keys() >= _GROUP_KEYS]
        if isinstance(groups, list)
        else []
    )
    finished_at = _epoch(summary.get("finished_at"))
    if finished_at is not None:
        updated = _epoch(state["updated_at"])
        state["updated_at"] = iso(max(finished_at, updated or finished_at))
    duration = summary.get("duration_s")
    state["duration_s"] = _float(duration) if duration is not None else state["duration_s"]
    state["model"] = _str(summary.get("model")) or state["model"]
    state["service_tier"] = _str(summary.get("service_tier")) or state["service_tier"]
    state["output_path"] = _str(summary.get("output_path")) or state["output_path"]
    state["eta_s"] = state["eta_at"] = None
