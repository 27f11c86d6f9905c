"""What a flex task tells the assets it updates: the ``extra`` of its outlet asset events.

A DAG scheduled on the asset reads it from ``triggering_asset_events`` and knows, without opening
the manifest, how many items the run produced and where they are. Small and JSON-native (it is
stored in the metadata database with every event): counts, cost and a location, never results.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _count(value: Any) -> int:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def _usd(value: Any) -> float | None:
    """USD to the micro-dollar; None (an unknown cost: a model without a price) stays None."""
    return round(float(value), 6) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _difference(standard: float | None, actual: float | None) -> float | None:
    return round(standard - actual, 6) if standard is not None and actual is not None else None


def asset_extra(summary: Mapping[str, Any], *, output_path: str | None = None) -> dict[str, Any]:
    """The asset event ``extra`` for a run summary (:class:`~flex_provider.engine.records.RunSummary`).

    ``output_path`` overrides the summary's (which is None in XCom mode, where results live in XCom).
    Keys: ``total``, ``succeeded``, ``failed``, ``cost_usd`` (``actual``, ``standard_equivalent``,
    ``saved``, ``cache_saved``; all None when the cost is unknown), ``output_path``, ``model``, ``finished_at``."""
    cost = summary.get("cost_usd") or {}
    actual, standard = _usd(cost.get("actual")), _usd(cost.get("standard_equivalent"))
    where = output_path if output_path is not None else summary.get("output_path")
    return {
        "total": _count(summary.get("total")),
        "succeeded": _count(summary.get("succeeded")),
        "failed": _count(summary.get("failed")),
        "cost_usd": {
            "actual": actual,
            "standard_equivalent": standard,
            "saved": _usd(cost["saved"]) if "saved" in cost else _difference(standard, actual),
            "cache_saved": _usd(cost.get("cache_saved")),
        },
        "output_path": str(where) if where is not None else None,
        "model": str(summary["model"]) if summary.get("model") is not None else None,
        "finished_at": str(summary["finished_at"]) if summary.get("finished_at") is not None else None,
    }
