"""Stand-ins for Airflow objects where a test calls an operator method directly."""

from __future__ import annotations

from typing import Any


class FakeTI:
    """The task-instance fields the operator reads, and the XComs it pushes (kept in ``pushed``)."""

    def __init__(self, dag_id: str = "d", run_id: str = "r1", task_id: str = "t", map_index: int = -1) -> None:
        self.dag_id, self.run_id, self.task_id, self.map_index = dag_id, run_id, task_id, map_index
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value
