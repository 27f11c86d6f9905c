"""DAG file copied into the sharded e2e cluster's dags folder (not collected by pytest: no test_ prefix).

One input of 240 documents in 4 shards; paths come from environment variables the test sets."""

import json
import os
from pathlib import Path

from airflow.sdk import DAG

from flex_provider.operators.sharded import flex_sharded

DATA = Path(os.environ.get("FLEX_E2E_DATA", "/tmp/flex-e2e-data"))
OUT = os.environ.get("FLEX_E2E_OUT", "file:///tmp/flex-e2e-out")
TOTAL = 240


def corpus(name: str, n: int) -> str:
    path = DATA / f"{name}.jsonl"
    if not path.exists():
        DATA.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(
            "".join(json.dumps({"id": f"{name}-{i}", "text": f"{name} document {i}"}) + "\n" for i in range(n))
        )
        tmp.rename(path)
    return path.as_uri()


with DAG("flex_e2e_shards_kill", schedule=None, catchup=False):
    flex_sharded(
        task_id="enrich",
        shards=4,
        conn_id="openai_default",
        model="gpt-5-mini",
        instructions="Classify the document.",
        input_path=corpus("sharded", TOTAL),
        output_path=OUT + "/sharded/{{ run_id }}",
        max_concurrency=4,
        progress_interval=2,
        deferrable=True,
    )
