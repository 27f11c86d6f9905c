"""Who may see what: Airflow's own authentication and DAG permissions, for every API route.

An app mounted by a plugin is not protected by the api-server: each route must ask. These
dependencies use Airflow's (``airflow.api_fastapi.core_api.security``), so whatever auth manager
the deployment runs (simple, FAB, Keycloak, a custom one) decides, with the JWT from the
``Authorization: Bearer`` header or the UI's ``_token`` cookie (the pages fetch with the cookie).

* a task's live state: the user may read that DAG's task instances (``requires_access_dag``
  reads ``dag_id`` from the path); no or a bad token -> 401/403, another DAG's user -> 403;
* the list of runs: only rows of DAGs the user may read (the auth manager's authorized DAG ids),
  and an explicit ``dag_id`` the user may not read -> 403.
"""

from __future__ import annotations

from typing import Annotated

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import GetUserDep, auth_manager_from_app, requires_access_dag
from fastapi import Depends, FastAPI

# 403 unless the user may read the task instances of the DAG named in the path (or ?dag_id=).
can_read_task_instances = Depends(requires_access_dag("GET", DagAccessEntity.TASK_INSTANCE))
# 403 unless the user may read the DAG named in ?dag_id= (with no dag_id: DAGs in general).
can_read_dag = Depends(requires_access_dag("GET"))


def readable_dag_ids(user: GetUserDep) -> set[str]:
    """The DAG ids this user may read, as the auth manager says."""
    return set(get_auth_manager().get_authorized_dag_ids(user=user, method="GET"))


ReadableDagIds = Annotated[set[str], Depends(readable_dag_ids)]


def share_auth_manager(app: FastAPI) -> None:
    """Airflow's security dependencies find the auth manager on ``request.app.state``; inside a
    mounted app ``request.app`` is that app, not the api-server's. Point them at the one instance
    the api-server initialised."""
    app.dependency_overrides[auth_manager_from_app] = get_auth_manager
