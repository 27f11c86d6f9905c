"""The "Flex results" extra link and the asset event extra, through ``dag.test()`` and the API
server's view of the serialized task."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flex_provider.assets import asset_extra
from flex_provider.engine.store import ResultStore
from flex_provider.links import RESULTS_XCOM_KEY, FlexResultsLink, results_url
from flex_provider.utils.storage import storage_path
from tests.airflow.conftest import task_states, write_dag

LINK_XCOM_KEY = FlexResultsLink().xcom_key  # where the task runner stores the computed link


# -- unit ------------------------------------------------------------------------------------------
def test_results_url() -> None:
    assert results_url("file:///data/out") == "file:///data/out"
    assert results_url("s3://my-bucket/runs/2026-01-01") == (
        "https://s3.console.aws.amazon.com/s3/buckets/my-bucket?prefix=runs/2026-01-01/"
    )
    assert results_url("s3://my-bucket") == "https://s3.console.aws.amazon.com/s3/buckets/my-bucket"
    assert results_url("gs://b/a b") == "https://console.cloud.google.com/storage/browser/b/a%20b"
    assert results_url("memory://x/y") == "memory://x/y"


def test_get_link_reads_the_xcom_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """XCom.get_value monkeypatched (the dag.test() tests below read a real XCom row)."""
    from airflow.sdk.execution_time.xcom import XCom

    seen: list[tuple[Any, str]] = []
    values = {"k1": "s3://b/out", "k2": "file:///tmp/out", "k3": None}

    def get_value(*, ti_key: Any, key: str) -> Any:
        seen.append((ti_key, key))
        return values[ti_key]

    monkeypatch.setattr(XCom, "get_value", get_value)
    link = FlexResultsLink()
    assert link.name == "Flex results"
    assert link.get_link(None, ti_key="k1") == "https://s3.console.aws.amazon.com/s3/buckets/b?prefix=out/"  # type: ignore[arg-type]
    assert link.get_link(None, ti_key="k2") == "file:///tmp/out"  # type: ignore[arg-type]
    assert link.get_link(None, ti_key="k3") == ""  # type: ignore[arg-type]
    assert {key for _, key in seen} == {RESULTS_XCOM_KEY}


def test_asset_extra_is_small_and_json_native() -> None:
    import json

    summary = {
        "status": "success",
        "requests": 12,
        "model": "gpt-5-mini",
        "output_path": "s3://b/out",
        "finished_at": "2026-01-01T00:00:00.000000+00:00",
        "total": 10,
        "succeeded": 9,
        "failed": 1,
        "failed_ids": ["x"],
        "usage": {"input": 1, "cached": 0, "output": 2, "reasoning": 0},
        "cost_usd": {"actual": 0.5, "standard_equivalent": 1.0, "saved": 0.5},
        "parts": ["part-1.jsonl"],
    }
    extra = asset_extra(summary)
    assert extra == {
        "total": 10,
        "succeeded": 9,
        "failed": 1,
        "cost_usd": {"actual": 0.5, "standard_equivalent": 1.0, "saved": 0.5, "cache_saved": None},
        "output_path": "s3://b/out",
        "model": "gpt-5-mini",
        "finished_at": "2026-01-01T00:00:00.000000+00:00",
    }
    assert json.loads(json.dumps(extra)) == extra
    assert asset_extra({**summary, "output_path": None})["output_path"] is None  # XCom mode
    assert asset_extra({**summary, "output_path": None}, output_path="file:///w")["output_path"] == "file:///w"
    assert asset_extra({"cost_usd": {"actual": 1, "standard_equivalent": 2}})["cost_usd"]["saved"] == 1.0
    unknown = {"actual": None, "standard_equivalent": None, "saved": None, "cache_saved": None, "unpriced_tokens": 9}
    # a model without a price: the event says the cost is unknown rather than $0
    assert asset_extra({"cost_usd": unknown})["cost_usd"] == dict.fromkeys(
        ("actual", "standard_equivalent", "saved", "cache_saved")
    )


# -- through dag.test() ----------------------------------------------------------------------------
def _xcom_value(dag_run: Any, task_id: str, key: str) -> Any:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id, task_id=task_id, key=key)
            .one_or_none()
        )
        return None if row is None else XComModel.deserialize_value(row)


def _asset_events(uri: str) -> list[Any]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(
            select(AssetEvent).join(AssetModel, AssetModel.id == AssetEvent.asset_id).where(AssetModel.uri == uri)
        ).all()
        return [(event.source_task_id, dict(event.extra)) for event in rows]


def _api_server_link(dag_run: Any, task_id: str) -> str:
    """What the API server answers for the link: the serialized task's XComOperatorLink."""
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.models.taskinstancekey import TaskInstanceKey

    dag = SerializedDagModel.get_dag(dag_run.dag_id)
    task = dag.get_task(task_id)
    link = task.operator_extra_link_dict["Flex results"]
    return str(link.get_link(task, ti_key=TaskInstanceKey(dag_run.dag_id, task_id, dag_run.run_id, 1, -1)))


@pytest.mark.integration
def test_link_and_asset_extra_through_dag_test(airflow_db, emu, tmp_path: Path) -> None:
    out = tmp_path / "out"
    asset_uri = f"file://{tmp_path}/enriched"
    dag = write_dag(
        """
        from airflow.sdk import Asset
        FlexLLMOperator(task_id="enrich", conn_id=CONN_ID, model="gpt-5-mini", items=["a", "b", "c"],
                           output_path={out!r}, outlets=[Asset({asset!r})])
        """,
        out=f"file://{out}",
        asset=asset_uri,
    )
    run = dag.test()
    assert task_states(run) == {"enrich": "success"}
    assert _xcom_value(run, "enrich", RESULTS_XCOM_KEY) == f"file://{out}"
    assert _xcom_value(run, "enrich", LINK_XCOM_KEY) == f"file://{out}"  # computed in the worker at the end
    assert _api_server_link(run, "enrich") == f"file://{out}"

    summary = ResultStore(out).read_manifest()
    events = _asset_events(asset_uri)
    assert len(events) == 1
    source_task, extra = events[0]
    assert source_task == "enrich"
    assert extra == asset_extra(summary)
    assert extra["total"] == extra["succeeded"] == 3 and extra["output_path"] == f"file://{out}"
    assert extra["cost_usd"]["actual"] > 0 and extra["model"] == "gpt-5-mini"


@pytest.mark.integration
def test_link_in_xcom_mode_points_at_the_checkpoint_folder(airflow_db, emu) -> None:
    dag = write_dag(
        """
        FlexLLMOperator(task_id="enrich", conn_id=CONN_ID, model="gpt-5-mini", items=["a"], deferrable=False)
        """
    )
    run = dag.test()
    assert task_states(run) == {"enrich": "success"}
    link = _xcom_value(run, "enrich", LINK_XCOM_KEY)
    assert link.startswith("file://") and "flex_checkpoints" in link
    assert ResultStore(storage_path(link)).read_manifest()["succeeded"] == 1


# -- the operator itself ---------------------------------------------------------------------------
@pytest.mark.integration
def test_operator_itself_sets_link_and_asset_extra(airflow_db, emu, tmp_path: Path) -> None:
    out = tmp_path / "out"
    asset_uri = f"file://{tmp_path}/enriched"
    dag = write_dag(
        """
        from airflow.sdk import Asset
        FlexLLMOperator(task_id="enrich", conn_id=CONN_ID, model="gpt-5-mini", items=["a", "b"],
                        output_path={out!r}, outlets=[Asset({asset!r})])
        """,
        out=f"file://{out}",
        asset=asset_uri,
    )
    run = dag.test()
    assert task_states(run) == {"enrich": "success"}
    assert _xcom_value(run, "enrich", LINK_XCOM_KEY) == f"file://{out}"
    assert _api_server_link(run, "enrich") == f"file://{out}"
    [(_, extra)] = _asset_events(asset_uri)
    assert extra == asset_extra(ResultStore(out).read_manifest())


def test_registered_extra_links_import_as_operator_links() -> None:
    """``get_provider_info()["extra-links"]`` (once it lists FlexResultsLink): every entry imports
    as a BaseOperatorLink subclass, as ProvidersManager checks."""
    import importlib

    from airflow.sdk import BaseOperatorLink

    from flex_provider import get_provider_info

    names = get_provider_info()["extra-links"]
    assert "flex_provider.links.FlexResultsLink" in names
    for name in names:
        module, _, attr = name.rpartition(".")
        assert issubclass(getattr(importlib.import_module(module), attr), BaseOperatorLink)
