"""FlexLLMOperator inside Airflow: dag.test() defers the task, runs FlexTrigger (in-process) against the
emulator over HTTP through a real Airflow connection, resumes the task and pushes the XCom."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flex_provider.engine.store import MANIFEST_NAME
from tests.airflow.conftest import API_KEY, task_states, write_dag, xcom
from tests.conftest import AIRFLOW_TEST_HOME

pytestmark = [pytest.mark.integration]


def test_items_defer_resume_and_return_records(airflow_db, emu, capfd) -> None:
    dag = write_dag(
        """
        FlexLLMOperator(task_id="enrich", conn_id=CONN_ID, model="gpt-5-mini", instructions="Classify.",
                        items=["first doc", {{"id": "doc-2", "text": "second doc"}}, {{"id": "doc-3", "text": "third"}}],
                        progress_interval=0.2)
        """
    )
    run = dag.test()
    assert task_states(run) == {"enrich": "success"}
    records = xcom(run, "enrich")
    assert [r["status"] for r in records] == ["succeeded"] * 3
    assert [r["id"] for r in records][1:] == ["doc-2", "doc-3"]  # input order, whatever finished first
    assert [r["index"] for r in records] == [0, 1, 2]
    assert all(r["service_tier"] == "flex" and r["usage"]["output"] > 0 for r in records)
    # The requests ran in FlexTrigger (the task deferred), not in the operator.
    printed = capfd.readouterr().out
    assert "Pausing task as DEFERRED" in printed
    assert any("flex run starting" in line and "FlexTrigger" in line for line in printed.splitlines())
    assert emu.stats()["requests"] == 3


def test_not_deferrable_runs_same_engine_in_worker(airflow_db, emu, capfd) -> None:
    dag = write_dag(
        """
        FlexLLMOperator(task_id="enrich", conn_id=CONN_ID, model="gpt-5-mini", items=["a", "b"], deferrable=False)
        """
    )
    run = dag.test()
    assert task_states(run) == {"enrich": "success"}
    assert len(xcom(run, "enrich")) == 2
    printed = capfd.readouterr().out
    assert "flex run starting" in printed and "DEFERRED" not in printed and "FlexTrigger" not in printed


def test_single_input_returns_output_text(airflow_db, emu) -> None:
    dag = write_dag(
        """
        FlexLLMOperator(task_id="analyse", conn_id=CONN_ID, model="o4-mini",
                        instructions="Analyse this document semantically.", input="A long text about {{{{ ds }}}}.")
        """
    )
    run = dag.test()
    assert task_states(run) == {"analyse": "success"}
    output = xcom(run, "analyse")
    assert isinstance(output, str) and len(output) > 20
    # input is templated: the rendered date reached the server, not the Jinja source.
    assert "{{" not in json.dumps(emu.stats())


def test_output_path_writes_parts_and_manifest_and_returns_summary(airflow_db, emu, tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(
        "".join(json.dumps({"id": f"t{i}", "subject": f"S{i}", "body": f"B{i}"}) + "\n" for i in range(25))
    )
    out = tmp_path / "out"
    dag = write_dag(
        """
        FlexLLMOperator(task_id="enrich", conn_id=CONN_ID, model="gpt-5-mini", input_path={src!r},
                        prompt_template="{{{{ item.subject }}}}: {{{{ item.body }}}} ({{{{ ds }}}})",
                        output_path={out!r}, max_concurrency=5)
        """,
        src=f"file://{source}",
        out=f"file://{out}",
    )
    run = dag.test()
    assert task_states(run) == {"enrich": "success"}
    summary = xcom(run, "enrich")
    assert summary["total"] == summary["succeeded"] == 25
    assert summary["output_path"] == f"file://{out}"
    assert summary["cost_usd"]["saved"] > 0 and summary["usage"]["input"] > 0
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    parts = sorted(p.name for p in out.glob("*.jsonl"))
    assert parts == sorted(manifest["parts"]) and parts
    lines = [json.loads(line) for p in parts for line in (out / p).read_text().splitlines()]
    assert sorted(r["id"] for r in lines) == sorted(f"t{i}" for i in range(25))


def test_max_failed_count_and_share(airflow_db, emu) -> None:
    emu.update(unavailable_rate=1.0)
    body = """
        FlexLLMOperator(task_id="enrich", conn_id=CONN_ID, model="gpt-5-mini", items=["a", "b", "c", "d"],
                        on_unavailable="fail", max_failed={max_failed})
        """
    assert task_states(write_dag(body, max_failed=0).test()) == {"enrich": "failed"}
    assert task_states(write_dag(body, max_failed=0.99).test()) == {"enrich": "failed"}  # 4 > int(0.99 * 4)
    assert task_states(write_dag(body, max_failed=4).test()) == {"enrich": "success"}


def test_empty_items_succeed_with_total_zero(airflow_db, emu, tmp_path: Path) -> None:
    dag = write_dag(
        """
        FlexLLMOperator(task_id="enrich", conn_id=CONN_ID, model="gpt-5-mini", items=[], output_path={out!r})
        """,
        out=f"file://{tmp_path}/empty",
    )
    run = dag.test()
    assert task_states(run) == {"enrich": "success"}
    assert xcom(run, "enrich")["total"] == 0
    assert emu.stats()["requests"] == 0


def test_results_too_large_for_xcom_fail_with_hint_and_keep_results(airflow_db, emu, capfd) -> None:
    dag = write_dag(
        """
        FlexLLMOperator(task_id="enrich", conn_id=CONN_ID, model="gpt-5-mini", items=["x", "y", "z"],
                        xcom_max_bytes=1000)  # 3 records pass the up-front check (3 x 300), not the real size
        """
    )
    run = dag.test()
    assert task_states(run) == {"enrich": "failed"}
    printed = capfd.readouterr()
    text = printed.out + printed.err
    assert "over the XCom limit" in text and "output_path" in text
    kept = list((AIRFLOW_TEST_HOME / "flex_checkpoints" / dag.dag_id).rglob("part-*.jsonl"))
    assert sum(len(p.read_text().splitlines()) for p in kept) == 3


def test_rejected_model_item_errors_carry_server_message(airflow_db, emu, tmp_path: Path) -> None:
    out = tmp_path / "out"
    dag = write_dag(
        """
        FlexLLMOperator(task_id="enrich", conn_id=CONN_ID, model="gpt-nope", items=["a", "b"], output_path={out!r})
        """,
        out=f"file://{out}",
    )
    assert task_states(dag.test()) == {"enrich": "failed"}
    errors = [json.loads(line)["error"] for p in out.glob("part-*.jsonl") for line in p.read_text().splitlines()]
    assert len(errors) == 2
    assert all(e["status_code"] == 404 and "gpt-nope" in e["message"] for e in errors)
    assert emu.stats()["requests"] == 2  # no retries on a 404


def test_max_failed_error_names_failures_by_reason_and_redo_failed_all_sends_them_again(
    airflow_db, emu, tmp_path: Path, capfd
) -> None:
    from flex_provider.emulator.config import DEFAULT_FLEX_MODELS, DEFAULT_MODELS

    out = tmp_path / "out"
    body = """
        FlexLLMOperator(task_id="enrich", conn_id=CONN_ID, model="gpt-nope", items=["a", "b"], output_path={out!r},
                        max_concurrency=1{extra})
        """
    assert task_states(write_dag(body, out=f"file://{out}", extra="").test()) == {"enrich": "failed"}
    printed = capfd.readouterr()
    text = printed.out + printed.err
    assert "2 of 2 item(s) failed, more than max_failed=0. Failures by reason: 2 x NotFoundError 404 " in text
    assert "model_not_found (not retryable): The model `gpt-nope` does not exist" in text
    assert 'the 2 not retryable one(s) are kept as final unless the task sets redo_failed="all"' in text
    assert "flex summary: 2 item(s): succeeded 0, failed 2; requests 2 " in text
    assert "flex summary: tokens in 0 (cached 0) out 0; cost $0.0000 vs $0.0000 standard, saved $0.0000 by flex;" in text
    assert "usage={" not in text and "cost_usd={" not in text  # no dict reprs

    emu.update(models=[*DEFAULT_MODELS, "gpt-nope"], flex_models=[*DEFAULT_FLEX_MODELS, "gpt-nope"])  # fixed
    emu.reset()
    run = write_dag(body, out=f"file://{out}", extra=', redo_failed="all"').test()
    assert task_states(run) == {"enrich": "success"}
    summary = xcom(run, "enrich")
    assert (summary["succeeded"], summary["failed"], summary["failures"]) == (2, 0, [])
    assert emu.stats()["requests"] == 2


def test_redo_failed_is_checked_at_parse_time() -> None:
    from flex_provider.engine.errors import FlexInputError
    from flex_provider.operators.flex import FlexLLMOperator

    with pytest.raises(FlexInputError, match=r"^redo_failed: expected 'retryable'"):
        FlexLLMOperator(task_id="t", model="gpt-5-mini", items=["a"], redo_failed="failed")


def test_api_key_never_in_logs_xcom_or_outputs(airflow_db, emu, tmp_path: Path, capfd) -> None:
    out = tmp_path / "out"
    dag = write_dag(
        """
        ok = FlexLLMOperator(task_id="ok", conn_id=CONN_ID, model="gpt-5-mini", items=["a", "b"], output_path={out!r})
        bad = FlexLLMOperator(task_id="bad", conn_id="flex_wrong_key", model="gpt-5-mini", items=["c"])
        """,
        out=f"file://{out}",
    )
    import os

    os.environ["AIRFLOW_CONN_FLEX_WRONG_KEY"] = json.dumps(
        {"conn_type": "openai_flex", "password": "sk-wrong-SECRET-key-1234567890", "host": emu.base_url}
    )
    try:
        run = dag.test()
    finally:
        os.environ.pop("AIRFLOW_CONN_FLEX_WRONG_KEY")
    assert task_states(run) == {"ok": "success", "bad": "failed"}
    printed = capfd.readouterr()
    haystacks = [printed.out, printed.err, json.dumps(xcom(run, "ok"))]
    haystacks += [p.read_text(errors="replace") for p in out.rglob("*") if p.is_file()]
    haystacks += [p.read_text(errors="replace") for p in (AIRFLOW_TEST_HOME / "logs").rglob("*") if p.is_file()]
    haystacks += [
        p.read_text(errors="replace") for p in (AIRFLOW_TEST_HOME / "flex_checkpoints").rglob("*") if p.is_file()
    ]
    assert "401" in printed.out + printed.err  # the bad task did fail on the key...
    for secret in (API_KEY, "sk-wrong-SECRET-key-1234567890", "SECRET"):
        assert not [h for h in haystacks if secret in h], f"{secret!r} leaked"


def test_items_from_upstream_xcom(airflow_db, emu) -> None:
    dag = write_dag(
        """
        from airflow.sdk import task

        @task
        def fetch():
            return [{{"id": "r1", "text": "Great product"}}, {{"id": "r2", "text": "Broke after a week"}}]

        FlexLLMOperator(task_id="sentiment", conn_id=CONN_ID, model="gpt-5-nano", api="chat",
                        instructions="Answer positive, neutral or negative.", items=fetch())
        """
    )
    run = dag.test()
    assert task_states(run) == {"fetch": "success", "sentiment": "success"}
    assert [r["id"] for r in xcom(run, "sentiment")] == ["r1", "r2"]
    assert emu.stats()["by_endpoint"] == {"chat.completions.create": 2}
