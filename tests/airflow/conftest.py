"""Airflow-level fixtures: a migrated SQLite metadata DB, DAG files written on the fly, an emulator
reached through a real Airflow connection (AIRFLOW_CONN_* env var)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

from flex_provider.emulator import EmulatorConfig, EmulatorServer
from tests.conftest import AIRFLOW_TEST_HOME

API_KEY = "sk-test-airflow-SECRET-5c1d9e8f7a"
BASE_CONFIG = EmulatorConfig(api_key=API_KEY, latency_s=0.02, latency_jitter=0.5, standard_latency_s=0.005)
CONN_ID = "flex_test"


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True, timeout=300)
    return AIRFLOW_TEST_HOME


@pytest.fixture(scope="module")
def emulator_base_config() -> EmulatorConfig:
    return BASE_CONFIG


@pytest.fixture
def emu(emu: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> EmulatorServer:
    """The shared emulator, reachable through the ``flex_test`` Airflow connection."""
    conn = {"conn_type": "openai_flex", "password": API_KEY, "host": emu.base_url}
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(conn))
    return emu


def write_dag(body: str, **fmt: Any) -> Any:
    """Write a DAG file into the dags folder (dag.test() serialises DAGs from there) and import it.
    ``body`` defines the operator(s) inside ``with DAG(DAG_ID, ...)``; returns the DAG object."""
    dag_id = f"t_{uuid.uuid4().hex[:10]}"
    source = textwrap.dedent(
        """
        import datetime
        from airflow.sdk import DAG
        from flex_provider.operators.flex import FlexLLMOperator
        CONN_ID = {conn!r}
        with DAG({dag_id!r}, schedule=None, start_date=datetime.datetime(2025, 1, 1), catchup=False) as dag:
        {body}
        """
    ).format(conn=CONN_ID, dag_id=dag_id, body=textwrap.indent(textwrap.dedent(body).format(**fmt), "    "))
    path = AIRFLOW_TEST_HOME / "dags" / f"{dag_id}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(dag_id, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


def task_states(dag_run: Any) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}


def xcom(dag_run: Any, task_id: str) -> Any:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id, task_id=task_id, key="return_value")
            .one_or_none()
        )
        return None if row is None else XComModel.deserialize_value(row)
