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
        capture_output=True, text=True, timeout=60,
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
        env=env, capture_output=True, text=True, timeout=600,
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
