"""dags/flex_sharded_enrichment.py runs as-is with `airflow dags test` (a real CLI subprocess) against
the emulator: four shards, one merged manifest (over the first 30 bundled tickets: the run's time is
mostly Airflow's, four deferrals in turn, and the full 262 add nothing but seconds)."""

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
DAGS = Path(__file__).resolve().parents[2] / "dags"
TICKETS = 30


def test_the_sharded_example_is_a_group_of_four_shards_and_a_merge() -> None:
    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    assert "_flex_sharded_check" not in bag.dag_ids  # the parse-time check leaves no DAG behind
    dag = bag.dags["flex_sharded_enrichment"]
    assert set(dag.task_ids) == {"triage.shard", "triage.merge", "report"}
    assert dag.get_task("triage.shard").expand_input.value == {"shard": [0, 1, 2, 3]}
    assert dag.get_task("report").upstream_task_ids == {"triage.merge"}
    assert "```bash\nairflow dags test flex_sharded_enrichment\n```" in dag.doc_md


def test_the_sharded_example_runs_with_airflow_dags_test(airflow_db, emu, tmp_path: Path) -> None:
    emu.update(unavailable_rate=0.1, retry_after_s=0.05)
    subset = tmp_path / "tickets.jsonl"
    subset.write_text(
        "".join((DAGS / "data" / "support_tickets.jsonl").read_text().splitlines(keepends=True)[:TICKETS])
    )
    env = dict(os.environ)
    env.update(
        AIRFLOW__CORE__DAGS_FOLDER=str(DAGS),
        AIRFLOW_CONN_OPENAI_DEFAULT=json.dumps({"conn_type": "openai_flex", "password": API_KEY, "host": emu.base_url}),
        FLEX_DEMO_OUTPUT_ROOT=tmp_path.as_uri(),
        FLEX_DEMO_INPUT=subset.as_uri(),
    )
    done = subprocess.run(
        [sys.executable, "-m", "airflow", "dags", "test", "flex_sharded_enrichment"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert API_KEY not in output
    folder = next(tmp_path.glob("sharded/*"))
    manifest = json.loads((folder / "_manifest.json").read_text())
    assert manifest["total"] == manifest["succeeded"] == TICKETS
    assert manifest["requests"] == emu.stats()["requests"] and manifest["unavailable"] > 0
    assert sorted(s["path"] for s in manifest["shards"]) == [f"shards/{k}-of-4" for k in range(4)]
    assert sum(s["total"] for s in manifest["shards"]) == TICKETS
    ids = [json.loads(line)["id"] for name in manifest["parts"] for line in (folder / name).read_text().splitlines()]
    assert len(ids) == len(set(ids)) == TICKETS
    assert f"Sharded flex triage of {TICKETS} ticket(s) in 4 shard(s)" in output
