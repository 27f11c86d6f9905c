"""The plugin's JSON API, under ``/flex/api``. Every route asks Airflow who the caller is and what
they may read (see :mod:`flex_provider.plugins.auth`); no route returns a prompt, an output or a key.

* ``GET /flex/api/runs/{dag_id}/{run_id}/{task_id}?map_index=-1``: the task instance and the live
  state of its flex run (404 for an unknown task instance);
* ``GET /flex/api/runs?dag_id=&limit=50``: finished flex tasks, newest first, of the DAGs the caller
  may read.

The routes are plain ``def``: FastAPI runs them in its thread pool, so database and storage reads
never block the api-server's event loop.
"""

from __future__ import annotations

from typing import Annotated, Any

from airflow.utils.session import create_session
from fastapi import APIRouter, HTTPException, Query, Response, status

from flex_provider.plugins.auth import ReadableDagIds, can_read_dag, can_read_task_instances
from flex_provider.plugins.history import MAX_LIMIT, flex_runs
from flex_provider.plugins.task_state import CheckpointUnreadable, find_task, task_view

router = APIRouter(prefix="/api")
NO_STORE = {"Cache-Control": "no-store"}  # live numbers, and per-user answers


@router.get("/runs/{dag_id}/{run_id}/{task_id}", dependencies=[can_read_task_instances])
def get_task_run(
    dag_id: str,
    run_id: str,
    task_id: str,
    response: Response,
    map_index: Annotated[int, Query(ge=-1)] = -1,
) -> dict[str, Any]:
    """The task instance (state, try_number, operator), a ``status`` and the live state of its run."""
    response.headers.update(NO_STORE)
    with create_session(scoped=False) as session:  # closed before the storage read below
        ref = find_task(session, dag_id, run_id, task_id, map_index)
    if ref is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            f"no task instance {task_id!r} (map_index {map_index}) in run {run_id!r} of DAG {dag_id!r}",
        )
    try:
        return task_view(ref)
    except CheckpointUnreadable as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None


@router.get("/runs", dependencies=[can_read_dag])
def list_runs(
    readable: ReadableDagIds,
    response: Response,
    dag_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
) -> dict[str, Any]:
    """Finished flex tasks, newest first: ``{"runs": [...], "total_entries": n}``."""
    response.headers.update(NO_STORE)
    if dag_id is not None and dag_id != "~":  # "~": every DAG, as in Airflow's own API
        if dag_id not in readable:
            raise HTTPException(status.HTTP_403_FORBIDDEN, "Forbidden")
        readable = {dag_id}
    with create_session(scoped=False) as session:
        runs = flex_runs(session, readable, limit)
    return {"runs": runs, "total_entries": len(runs)}
