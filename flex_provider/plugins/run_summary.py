"""The compact summary a finished flex task leaves in XCom (key ``flex_run_summary``) for the
savings history: counts, cost, tiers, usage, duration, where the results are, the model.

Small on purpose: the Flex page lists many runs from one database query, so every run's row must be
cheap to read. Failures appear only as counts per kind (no message, no item id); never a prompt, an
output or a key. No Airflow import: the operator builds it in the worker, the plugin reads it in the
api-server.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict, cast

from flex_provider.engine.pricing import read_cost

RUN_SUMMARY_XCOM_KEY = "flex_run_summary"
RUN_SUMMARY_FORMAT = 1


class FailureCount(TypedDict):
    type: str
    code: str | None
    status_code: int | None
    retryable: bool
    count: int


class SummaryCost(TypedDict):
    """USD; all None when the run's cost is unknown (a model without a price)."""

    actual: float | None
    standard_equivalent: float | None
    saved: float | None
    cache_saved: float | None


class FlexRunSummary(TypedDict):
    """The value of the ``flex_run_summary`` XCom."""

    format: int
    total: int
    succeeded: int
    failed: int
    failures: list[FailureCount]  # by kind, biggest first (as the run summary groups them)
    requests: int
    unavailable: int
    rate_limited: int
    fallbacks: int
    usage: dict[str, int]  # input, cached, output, reasoning tokens
    cost: SummaryCost  # USD
    tiers: dict[str, int]  # items answered per tier as the server reported it
    duration_s: float
    finished_at: str
    model: str
    service_tier: str  # the tier asked for
    output_path: str | None  # None in XCom mode (the records are the task's return value)


def _int(value: Any) -> int:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def _float(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _counts(value: Any) -> dict[str, int]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): _int(v) for k, v in value.items()}


def build_run_summary(summary: Mapping[str, Any]) -> FlexRunSummary:
    """From a run summary (``_manifest.json``, :class:`~flex_provider.engine.records.RunSummary`).
    Lenient with missing keys: a manifest written by an older release still gives a row."""
    failures: list[FailureCount] = []
    for group in summary.get("failures") or ():
        if isinstance(group, Mapping):
            failures.append(
                {
                    "type": str(group.get("type") or "unknown"),
                    "code": _str_or_none(group.get("code")),
                    "status_code": group.get("status_code") if isinstance(group.get("status_code"), int) else None,
                    "retryable": group.get("retryable") is True,
                    "count": _int(group.get("count")),
                }
            )
    return {
        "format": RUN_SUMMARY_FORMAT,
        "total": _int(summary.get("total")),
        "succeeded": _int(summary.get("succeeded")),
        "failed": _int(summary.get("failed")),
        "failures": failures,
        "requests": _int(summary.get("requests")),
        "unavailable": _int(summary.get("unavailable")),
        "rate_limited": _int(summary.get("rate_limited")),
        "fallbacks": _int(summary.get("fallbacks")),
        "usage": _counts(summary.get("usage")),
        "cost": cast(SummaryCost, read_cost(summary.get("cost_usd"))),
        "tiers": _counts(summary.get("tiers")),
        "duration_s": round(_float(summary.get("duration_s")), 3),
        "finished_at": str(summary.get("finished_at") or ""),
        "model": str(summary.get("model") or ""),
        "service_tier": str(summary.get("service_tier") or ""),
        "output_path": _str_or_none(summary.get("output_path")),
    }


def read_run_summary(value: Any) -> FlexRunSummary | None:
    """An XCom value read back, as this release shows it (None when it is not a run summary).
    Later formats only add keys: the known ones are read, the others left out."""
    if not isinstance(value, Mapping) or not isinstance(value.get("format"), int):
        return None
    if not isinstance(value.get("cost"), Mapping):
        return None
    return build_run_summary({**value, "cost_usd": value["cost"]})
