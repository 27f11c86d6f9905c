"""The example DAGs in dags/ run as-is with `airflow dags test` (a real CLI subprocess) against the
emulator, reached through the `openai_default` connection."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from airflow.dag_processing.dagbag import DagBag

from tests.airflow.conftest import API_KEY

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "dags"


def test_corpus_generator_lives_outside_dags_and_rebuilds_the_bundled_corpus(tmp_path: Path) -> None:
    """scripts/make_support_tickets.py (not in dags/, which the dag processor parses) writes exactly
    the bundled dags/data/support_tickets.jsonl (fixed seed)."""
    assert not list(DAGS.rglob("make_support_tickets.py"))
    out = tmp_path / "tickets.jsonl"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_support_tickets.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "wrote 262 tickets" in done.stdout
    assert out.read_bytes() == (DAGS / "data" / "support_tickets.jsonl").read_bytes()


def test_example_dags_import_without_errors() -> None:
    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    assert {"flex_nightly_enrichment", "flex_single_document"} <= set(bag.dag_ids)
    nightly = bag.dags["flex_nightly_enrichment"]
    assert nightly.schedule == "@daily"


@pytest.mark.parametrize("dag_id", ["flex_nightly_enrichment", "flex_single_document"])
def test_example_dag_runs_with_airflow_dags_test(airflow_db, emu, tmp_path: Path, dag_id: str) -> None:
    emu.update(unavailable_rate=0.1, retry_after_s=0.05)
    env = dict(os.environ)
    env.update(
        AIRFLOW__CORE__DAGS_FOLDER=str(DAGS),
        AIRFLOW_CONN_OPENAI_DEFAULT=json.dumps({"conn_type": "openai_flex", "password": API_KEY, "host": emu.base_url}),
        FLEX_DEMO_OUTPUT_ROOT=tmp_path.as_uri(),
    )
    done = subprocess.run(
        [sys.executable, "-m", "airflow", "dags", "test", dag_id],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "state=success" in output or "DagRun Finished" in output
    assert API_KEY not in output
    if dag_id == "flex_nightly_enrichment":
        manifest = json.loads(next(tmp_path.glob("nightly/*/_manifest.json")).read_text())
        assert manifest["total"] == manifest["succeeded"] == 262
        assert manifest["unavailable"] > 0 and manifest["cost_usd"]["saved"] > 0
        record = json.loads(next(tmp_path.glob("nightly/*/part-*.jsonl")).read_text().splitlines()[0])
        assert set(record["output"]) == {"category", "sentiment", "urgency", "language", "summary", "needs_human"}
    else:
        assert emu.stats()["requests"] >= 1
        assert "analysis:" in output and "characters" in output


def test_nightly_doc_md_is_markdown_not_rst() -> None:
    nightly = DagBag(dag_folder=str(DAGS)).dags["flex_nightly_enrichment"]
    doc = nightly.doc_md
    import re

    assert "::" not in doc and not re.search(r"(?<!`)``(?!`)", doc)  # RST literal blocks, inline literals
    assert "```bash\nairflow dags test flex_nightly_enrichment\n```" in doc
    assert 'redo_failed="all"' in doc


def test_nightly_report_logs_a_readable_summary_through_the_task_logger(tmp_path: Path, caplog, capsys) -> None:
    import logging

    from flex_provider.engine.pricing import PriceTable
    from flex_provider.engine.records import summarize_records
    from flex_provider.engine.store import ResultStore

    enriched = {"category": "billing_payments", "sentiment": "negative", "urgency": 4, "needs_human": True}
    error = {
        "type": "BadRequestError",
        "status_code": 400,
        "code": "invalid_value",
        "message": "Invalid value for 'reasoning.effort'.",
        "retryable": False,
    }
    records = [
        {
            "id": "TCK-1",
            "status": "succeeded",
            "output": enriched,
            "usage": {"input": 1200, "output": 300},
            "model": "gpt-5-mini",
            "service_tier": "flex",
        },
        {"id": "TCK-2", "status": "failed", "output": None, "error": error, "usage": None},
    ]
    store = ResultStore(tmp_path)
    store.write_part(records)
    header = {
        "status": "success",
        "requests": 3,
        "unavailable": 1,
        "rate_limited": 0,
        "transient_errors": 0,
        "malformed_answers": 0,
        "fallbacks": 0,
        "this_run": {"requests": 3, "resumed": 0},
        "model": "gpt-5-mini",
        "service_tier": "flex",
        "output_path": tmp_path.as_uri(),
        "duration_s": 12.5,
        "finished_at": "2026-11-28T02:00:00+00:00",
    }
    manifest = store.finalize(header, lambda rs: dict(summarize_records(rs, PriceTable(), "gpt-5-mini")))

    report = DagBag(dag_folder=str(DAGS)).dags["flex_nightly_enrichment"].get_task("report").python_callable
    capsys.readouterr()
    with caplog.at_level(logging.INFO, logger="airflow.task"):
        result = report(manifest)
    printed = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    # no bare print() (it lands in a collapsed log group): what reaches stdout is the logger's lines
    assert all("[airflow.task]" in line for line in printed), printed
    logged = [r.getMessage() for r in caplog.records if r.name == "airflow.task"]
    assert logged[0] == f"Flex enrichment report for {tmp_path.as_uri()}"
    text = "\n".join(logged)
    assert "2 item(s): succeeded 1, failed 1; requests 3 " in text
    assert "tokens in 1,200 (cached 0) out 300; cost $" in text and "saved $" in text
    assert (
        "failed: 1 x BadRequestError 400 invalid_value (not retryable): Invalid value for 'reasoning.effort'." in text
    )
    assert "category: billing_payments=1" in text
    assert "{" not in text  # no dict reprs
    assert result["needs_human"] == 1 and result["unparsed"] == 1
