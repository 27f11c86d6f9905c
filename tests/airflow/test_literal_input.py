"""A document that contains ``{{ ... }}`` must reach the model as written, not rendered by Airflow's
Jinja (which could pull a Variable or a connection into the prompt). ``input`` is templated, so the
safe ways are ``literal()`` and ``input_path``; the first test shows the leak they prevent.

What the emulator received is checked through its per-input stats, keyed by a hash of the user text.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from flex_provider.emulator.content import input_key
from flex_provider.job import json_size
from flex_provider.operators.flex import MIN_RECORD_BYTES
from tests.airflow.conftest import API_KEY, task_states, write_dag, xcom
from tests.conftest import AIRFLOW_TEST_HOME

pytestmark = [pytest.mark.integration]
REPO_DAGS = Path(__file__).resolve().parents[2] / "dags"

SECRET = "TOPSECRET-value-of-a-variable"
DOCUMENT = "Post-mortem.\nThe template engine printed {{ var.value.secret_thing }} into the page.\nEnd."
RENDERED = DOCUMENT.replace("{{ var.value.secret_thing }}", SECRET)


@pytest.fixture
def secret_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_VAR_SECRET_THING", SECRET)


def received(emu) -> set[str]:
    return set(emu.stats()["inputs"])


def test_plain_input_is_rendered_by_airflow_which_leaks_the_variable(airflow_db, emu, secret_variable) -> None:
    """The unsafe pattern (why the README shows literal() and input_path): the secret is sent."""
    dag = write_dag(
        """
        FlexLLMOperator(task_id="analyse", conn_id=CONN_ID, model="o4-mini", input={doc!r})
        """,
        doc=DOCUMENT,
    )
    assert task_states(dag.test()) == {"analyse": "success"}
    assert input_key(RENDERED) in received(emu) and input_key(DOCUMENT) not in received(emu)


def test_literal_input_reaches_the_model_with_its_braces(airflow_db, emu, secret_variable) -> None:
    dag = write_dag(
        """
        from airflow.sdk import literal
        FlexLLMOperator(task_id="analyse", conn_id=CONN_ID, model="o4-mini", input=literal({doc!r}))
        """,
        doc=DOCUMENT,
    )
    run = dag.test()
    assert task_states(run) == {"analyse": "success"}
    assert isinstance(xcom(run, "analyse"), str)
    assert received(emu) == {input_key(DOCUMENT)}  # the literal braces, not the variable's value


def test_input_path_is_read_as_data_never_rendered(airflow_db, emu, secret_variable, tmp_path: Path) -> None:
    source = tmp_path / "document.jsonl"
    source.write_text(json.dumps({"id": "doc-1", "text": DOCUMENT}) + "\n", encoding="utf-8")
    dag = write_dag(
        """
        FlexLLMOperator(task_id="analyse", conn_id=CONN_ID, model="o4-mini", input_path={src!r})
        """,
        src=f"file://{source}",
    )
    run = dag.test()
    assert task_states(run) == {"analyse": "success"}
    (record,) = xcom(run, "analyse")
    assert record["id"] == "doc-1" and record["status"] == "succeeded"
    assert received(emu) == {input_key(DOCUMENT)}
    # MIN_RECORD_BYTES is an honest lower bound of a real record without its output.
    assert json_size({**record, "output": None}) >= MIN_RECORD_BYTES


def test_example_single_document_dag_sends_the_file_as_written(airflow_db, emu, secret_variable, monkeypatch) -> None:
    """dags/flex_single_document.py with a document holding Jinja: the document is sent as written."""
    folder = AIRFLOW_TEST_HOME / "dags" / "single_document_copy"
    (folder / "data").mkdir(parents=True, exist_ok=True)
    try:
        shutil.copy(REPO_DAGS / "flex_single_document.py", folder / "flex_single_document.py")
        (folder / "data" / "long_document.md").write_text(DOCUMENT, encoding="utf-8")
        conn = {"conn_type": "openai_flex", "password": API_KEY, "host": emu.base_url}
        monkeypatch.setenv("AIRFLOW_CONN_OPENAI_DEFAULT", json.dumps(conn))
        spec = importlib.util.spec_from_file_location("single_document_copy", folder / "flex_single_document.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        run = module.dag.test()
    finally:
        shutil.rmtree(folder)
    assert task_states(run) == {"analyse_document": "success", "log_length": "success"}
    assert received(emu) == {input_key(DOCUMENT)}
