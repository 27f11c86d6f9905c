"""Shards across triggerers: PostgreSQL metadata DB, two triggerers of capacity 2, one input in 4
shards, so each triggerer runs two shards of it. The triggerer of two shards is killed mid-run; the
survivor takes them over once its own are done, and the merged result is exact: every id once, and
no item paid twice except those the kill caught in flight or not yet checkpointed."""

from __future__ import annotations

import hashlib
import json
import signal
import time
from pathlib import Path

import pytest

from flex_provider.emulator import EmulatorConfig, serve_in_thread

pytestmark = [pytest.mark.e2e, pytest.mark.distributed]

API_KEY = "sk-e2e-shards-SECRET-4b3a2c"
HERE = Path(__file__).resolve().parent
DAG_ID, GROUP = "flex_e2e_shards_kill", "enrich"
SHARD, MERGE = f"{GROUP}.shard", f"{GROUP}.merge"
SHARDS, TOTAL, CONCURRENCY, LATENCY_S, PROGRESS_S = 4, 240, 4, 1.0, 2


def part_ids(folder: Path) -> list[str]:
    return [json.loads(line)["id"] for p in sorted(folder.glob("part-*.jsonl")) for line in p.read_text().splitlines()]


def test_shards_spread_over_two_triggerers_and_a_killed_ones_shards_finish_exactly_once(
    airflow_cluster_factory, tmp_path
) -> None:
    started = time.monotonic()
    with serve_in_thread(EmulatorConfig(api_key=API_KEY, latency_s=LATENCY_S)) as emu:
        conn = {"conn_type": "openai_flex", "password": API_KEY, "host": emu.base_url}
        env = {
            "AIRFLOW_CONN_OPENAI_DEFAULT": json.dumps(conn),
            "FLEX_E2E_DATA": str(tmp_path / "data"),
            "FLEX_E2E_OUT": (tmp_path / "out").as_uri(),
            "AIRFLOW__TRIGGERER__CAPACITY": "2",  # 4 shards: each triggerer must take two
        }
        af = airflow_cluster_factory(
            dag_files={"flex_e2e_shards_dags.py": (HERE / "flex_e2e_shards_dags.py").read_text()},
            backend="postgres",
            triggerers=2,
            env=env,
            wait_for_dags=(DAG_ID,),
        )
        run_id = af.trigger_dag(DAG_ID)
        out = tmp_path / "out" / "sharded" / run_id
        holders = {
            k: af.wait_for_trigger_assignment(DAG_ID, run_id, SHARD, timeout=120, map_index=k) for k in range(SHARDS)
        }
        assert sorted(holders.values()) == [0, 0, 1, 1], holders  # the triggerers share the input
        victim = holders[0]
        victim_job = af.triggerer(victim).job_id
        killed = [k for k, holder in holders.items() if holder == victim]
        folders = {k: out / "shards" / f"{k}-of-{SHARDS}" for k in range(SHARDS)}

        deadline = time.monotonic() + 90
        while not all(len(part_ids(folders[k])) >= 8 for k in killed):  # both mid-run, checkpointed
            assert time.monotonic() < deadline, "no progress before the kill"
            time.sleep(0.2)
        af.kill_triggerer(victim, signal.SIGKILL)
        saved_before = {k: set(part_ids(folders[k])) for k in killed}
        assert all(len(saved) < TOTAL // SHARDS for saved in saved_before.values())  # really mid-run

        survivor = 1 - victim
        for k in killed:
            assert (
                af.wait_for_trigger_assignment(
                    DAG_ID, run_id, SHARD, timeout=150, map_index=k, exclude_job_ids=[victim_job]
                )
                == survivor
            )
        assert af.wait_for_run(DAG_ID, run_id, timeout=180) == "success"

        # exactly once, over the merged result
        manifest = json.loads((out / "_manifest.json").read_text())
        ids = [json.loads(line)["id"] for name in manifest["parts"] for line in (out / name).read_text().splitlines()]
        assert len(ids) == len(set(ids)) == TOTAL
        assert sorted(ids) == sorted(f"sharded-{i}" for i in range(TOTAL))
        assert manifest["total"] == manifest["succeeded"] == TOTAL and manifest["failed"] == 0
        assert [s["total"] for s in manifest["shards"]] == [TOTAL // SHARDS] * SHARDS

        # every request accounted for: one per item, plus the re-sends the kill justifies
        stats = emu.stats()
        sent = {
            i: stats["inputs"][hashlib.sha256(f"sharded document {i}".encode()).hexdigest()[:16]] for i in range(TOTAL)
        }
        assert all(v["succeeded"] >= 1 for v in sent.values())
        resent = {f"sharded-{i}": v["succeeded"] - 1 for i, v in sent.items() if v["succeeded"] > 1}
        shard_of = {f"sharded-{i}": i % SHARDS for i in range(TOTAL)}
        assert {shard_of[i] for i in resent} <= set(killed)  # the survivor's own shards: nothing twice
        assert not set(resent) & set().union(*saved_before.values())  # checkpointed answers are never re-bought
        # caught by the kill: in flight (max_concurrency) or answered since the last checkpoint (one
        # progress interval at max_concurrency / latency answers a second), per killed shard
        assert sum(resent.values()) <= len(killed) * (CONCURRENCY + PROGRESS_S * CONCURRENCY / LATENCY_S)
        # the rest of the requests: those the kill cut off (the emulator saw the client go: 499, not billed)
        cut_off = sum(v["statuses"].count(499) for v in sent.values())
        assert cut_off <= len(killed) * CONCURRENCY
        assert stats["requests"] == TOTAL + sum(resent.values()) + cut_off
        assert manifest["requests"] <= stats["requests"]  # the killed session's last counters may be unsaved

        for k in range(SHARDS):  # the triggers moved; no task was retried
            assert af.task_instance(DAG_ID, run_id, SHARD, map_index=k)["try_number"] == 1
        assert af.xcom(DAG_ID, run_id, MERGE)["succeeded"] == TOTAL
        assert API_KEY not in af.all_log_text()
    print(
        f"sharded distributed e2e: {time.monotonic() - started:.0f}s, re-sent {sum(resent.values())} request(s), "
        f"{cut_off} cut off by the kill, {stats['requests']} requests for {TOTAL} items"
    )
