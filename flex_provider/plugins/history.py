"""The savings history: one row per finished flex task, from the ``flex_run_summary`` XComs.

One query (XCom joined to its DAG run for the run's date), newest first, limited to the DAGs the
caller may read: never one read per run.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any, TypedDict

from airflow.models.dagrun import DagRun
from airflow.models.xcom import XComModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from flex_provider.plugins.run_summary import RUN_SUMMARY_XCOM_KEY, SummaryCost, read_run_summary

MAX_LIMIT = 1000


class RunRow(TypedDict):
    """One finished flex task, as ``GET /flex/api/runs`` lists it."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    date: str | None  # the run's logical date, or when it was due (run_after) for runs without one
    finished_at: str
    items: int
    succeeded: int
    failed: int
    cost: SummaryCost  # USD: actual, standard_equivalent, saved
    duration_s: float
    tiers: dict[str, int]
    model: str
    service_tier: str
    output_path: str | None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def flex_runs(session: Session, dag_ids: Collection[str], limit: int = 50) -> list[RunRow]:
    """The newest ``limit`` finished flex tasks of ``dag_ids``."""
    if not dag_ids:
        return []
    stmt = (
        select(
            XComModel.dag_id,
            XComModel.run_id,
            XComModel.task_id,
            XComModel.map_index,
            XComModel.value,
            XComModel.timestamp,
            DagRun.logical_date,
            DagRun.run_after,
        )
        .join(DagRun, DagRun.id == XComModel.dag_run_id)
        .where(XComModel.key == RUN_SUMMARY_XCOM_KEY, XComModel.dag_id.in_(list(dag_ids)))
        .order_by(XComModel.timestamp.desc(), XComModel.dag_id, XComModel.run_id, XComModel.task_id)
        .limit(max(1, min(limit, MAX_LIMIT)))
    )
    rows: list[RunRow] = []
    for row in session.execute(stmt):
        summary = read_run_summary(_xcom_value(row))
        if summary is None:
            continue
        rows.append(
            {
                "dag_id": row.dag_id,
                "run_id": row.run_id,
                "task_id": row.task_id,
                "map_index": row.map_index,
                "date": _iso(row.logical_date or row.run_after),
                "finished_at": summary["finished_at"] or _iso(row.timestamp) or "",
                "items": summary["total"],
                "succeeded": summary["succeeded"],
                "failed": summary["failed"],
                "cost": summary["cost"],
                "duration_s": summary["duration_s"],
                "tiers": summary["tiers"],
                "model": summary["model"],
                "service_tier": summary["service_tier"],
                "output_path": summary["output_path"],
            }
        )
    return rows


def _xcom_value(row: Any) -> Any:
    """The stored value, decoded the way Airflow's XCom API decodes it (values written through the
    Task Execution API are already plain JSON; others carry Airflow's encoding)."""
    try:
        return XComModel.deserialize_value(row)
    except Exception:
        return None
