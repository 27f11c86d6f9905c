"""One task instance's flex run as the Flex tab shows it: the task instance, then the live state
read from what the run checkpoints on storage.

The work folder comes from the ``flex_results_uri`` XCom the operator pushes before it defers, and
:func:`flex_provider.live.read_live_state` reads it. The UI never talks to a triggerer: the numbers
are the same whichever triggerer runs the trigger, and survive a triggerer restart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow.models.taskinstance import TaskInstance
from airflow.models.xcom import XComModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from flex_provider.links import RESULTS_XCOM_KEY

if TYPE_CHECKING:
    from flex_provider.live import LiveState

# The task may still make progress in these states (the page keeps refreshing).
ACTIVE_STATES = frozenset(
    {"scheduled", "queued", "running", "deferred", "up_for_retry", "up_for_reschedule", "restarting"}
)
LiveReader = Callable[[Any], "LiveState | None"]  # read_live_state: a folder in, the live state out


@dataclass(frozen=True)
class TaskRef:
    """A task instance found in the metadata database, and where its flex run works (if known)."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    state: str | None
    try_number: int
    operator: str | None
    work_uri: str | None  # None: the operator has not pushed it (not started, or not a flex task)


def find_task(session: Session, dag_id: str, run_id: str, task_id: str, map_index: int) -> TaskRef | None:
    """The task instance and its ``flex_results_uri`` XCom (None for an unknown task instance)."""
    ti = session.execute(
        select(TaskInstance.state, TaskInstance.try_number, TaskInstance.operator, TaskInstance.custom_operator_name)
        .where(
            TaskInstance.dag_id == dag_id,
            TaskInstance.run_id == run_id,
            TaskInstance.task_id == task_id,
            TaskInstance.map_index == map_index,
        )
        .limit(1)
    ).one_or_none()
    if ti is None:
        return None
    xcom = session.execute(
        select(XComModel.value)
        .where(
            XComModel.dag_id == dag_id,
            XComModel.run_id == run_id,
            XComModel.task_id == task_id,
            XComModel.map_index == map_index,
            XComModel.key == RESULTS_XCOM_KEY,
        )
        .limit(1)
    ).one_or_none()
    uri: Any = None
    if xcom is not None:
        try:
            uri = XComModel.deserialize_value(xcom)
        except Exception:
            uri = None
    return TaskRef(
        dag_id=dag_id,
        run_id=run_id,
        task_id=task_id,
        map_index=map_index,
        state=str(ti.state) if ti.state is not None else None,
        try_number=int(ti.try_number or 0),
        operator=ti.custom_operator_name or ti.operator,
        work_uri=uri if isinstance(uri, str) and uri else None,
    )


class CheckpointUnreadable(Exception):
    """The run's folder could not be read (storage down, permissions, a damaged file)."""


def task_view(ref: TaskRef, reader: LiveReader | None = None) -> dict[str, Any]:
    """The answer of ``GET /flex/api/runs/{dag_id}/{run_id}/{task_id}``: the task instance, a
    ``status`` (``not_started``, ``running``, ``finished``, or ``stopped`` when the task ended
    without finishing its run), a ``message`` for the first and last, then the live state's keys.
    Blocking (storage reads, and the first call imports the engine's store and the openai SDK for
    its error types): call it from a thread, never on the api-server's event loop."""
    view: dict[str, Any] = {
        "dag_id": ref.dag_id,
        "run_id": ref.run_id,
        "task_id": ref.task_id,
        "map_index": ref.map_index,
        "state": ref.state,
        "try_number": ref.try_number,
        "operator": ref.operator,
    }
    active = ref.state in ACTIVE_STATES
    message: str | None = None
    if ref.work_uri is None:
        if active or ref.state is None:
            message = "The flex run has not started yet: the task has not built its job."
        else:
            message = (
                "This task instance recorded no flex run: it is not a FlexLLMOperator task, "
                "or it ended before it built its job (see its log)."
            )
        return {**view, "status": "not_started", "message": message}
    from flex_provider.utils.storage import storage_path

    if reader is None:
        from flex_provider.live import read_live_state

        reader = read_live_state
    try:
        live = reader(storage_path(ref.work_uri))
    except Exception as exc:
        raise CheckpointUnreadable(f"cannot read the flex run's folder {ref.work_uri}: {type(exc).__name__}") from exc
    if live is None:
        return {
            **view,
            "status": "not_started",
            "message": "The flex run has no checkpoint yet: its first one is written a few seconds after it starts.",
        }
    if live["finished"]:
        status = "finished"
    elif active:
        status = "running"
    else:
        status = "stopped"
        message = (
            f"The task is {ref.state} and its flex run did not finish: these are the numbers of its last "
            "checkpoint. Clearing the task resumes the run from there."
        )
    return {**view, "status": status, "message": message, **live}
