"""An auth manager for tests: Airflow's SimpleAuthManager, except that named users may not read
named DAGs.

``FLEX_TEST_DENIED_DAGS="outsider:dag_a,dag_b;other:dag_c"`` keeps ``outsider`` away from
``dag_a`` and ``dag_b`` (every access entity: the DAG, its runs, task instances, XComs...) and
``other`` from ``dag_c``; everything else is SimpleAuthManager's answer (by role). Configure it with
``AIRFLOW__CORE__AUTH_MANAGER=restricted_auth.RestrictedAuthManager`` and this folder on
``PYTHONPATH`` (the e2e folder is not a package).
"""

from __future__ import annotations

import os
from typing import Any

from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

DENIED_ENV = "FLEX_TEST_DENIED_DAGS"


def denied_dags(username: str, spec: str | None = None) -> set[str]:
    """The DAG ids ``username`` may not read, from ``spec`` (default: the environment variable)."""
    spec = os.environ.get(DENIED_ENV, "") if spec is None else spec
    denied: set[str] = set()
    for entry in spec.split(";"):
        user, _, dags = entry.partition(":")
        if user.strip() == username:
            denied.update(d.strip() for d in dags.split(",") if d.strip())
    return denied


class RestrictedAuthManager(SimpleAuthManager):
    def is_authorized_dag(self, *, method: Any, user: Any, access_entity: Any = None, details: Any = None) -> bool:
        dag_id = getattr(details, "id", None)
        if dag_id and dag_id in denied_dags(user.username):
            return False
        return super().is_authorized_dag(method=method, user=user, access_entity=access_entity, details=details)
