"""What a flex task tells the assets it updates: the ``extra`` of its outlet asset events.

A DAG scheduled on the asset reads it from ``triggering_asset_events`` and knows, without opening
the manifest, how many items the run produced and where they are. Small and JSON-native (it is
stored in the metadata database with every event): counts, cost and a location, never results.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flex_provider.engine.pricing import read_cost


def _count(value: Any) -> int:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def asset_extra(summary: Mapping[str, Any], *, output_path: str | None = None) -> dict[str, Any]:
    """The asset event ``extra`` for a run summary (:class:`~flex_provider.engine.records.RunSummary`).

    ``output_path`` overrides the summary's (which is None in XCom mode, where results live in XCom).
    Keys: ``total``, ``succeeded``, ``failed``, ``cost_usd`` (``actual``, ``standard_equivalent``,
    ``saved``, ``cache_saved``; all None when the cost is unknown), ``output_path``, ``model``, ``finished_at``."""
    where = output_path if output_path is not None else summary.get("output_path")
    return {
        "total": _count(summary.get("total")),
        "succeeded": _count(summary.get("succeeded")),
        "failed": _count(summary.get("failed")),
        "cost_usd": read_cost(summary.get("cost_usd")),
        "output_path": str(where) if where is not None else None,
        "model": str(summary["model"]) if summary.get("model") is not None else None,
        "finished_at": str(summary["finished_at"]) if summary.get("finished_at") is not None else None,
    }
