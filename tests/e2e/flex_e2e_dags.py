"""DAG file copied into the e2e clusters' dags folder (not collected by pytest: no test_ prefix).

Paths and sizes come from environment variables the test sets on every Airflow component.
"""

import json
import os
from datetime import timedelta
from pathlib import Path

from airflow.sdk import DAG

from flex_provider.operators.flex import FlexLLMOperator

DATA = Path(os.environ.get("FLEX_E2E_DATA", "/tmp/flex-e2e-data"))
OUT = os.environ.get("FLEX_E2E_OUT", "file:///tmp/flex-e2e-out")


def corpus(name: str, n: int) -> str:
    """Write n unique documents for one DAG (text differs per DAG so the emulator stats separate them)."""
    path = DATA / f"{name}.jsonl"
    if not path.exists():
        DATA.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps({"id": f"{name}-{i}", "text": f"{name} document {i}"}) + "\n" for i in range(n)))
        tmp.rename(path)
    return path.as_uri()


COMMON = {"conn_id": "openai_default", "model": "gpt-5-mini", "instructions": "Classify the document.",
          "deferrable": True}

with DAG("flex_e2e_basic", schedule=None, catchup=False):
    FlexLLMOperator(task_id="enrich", input_path=corpus("basic", 60), output_path=OUT + "/basic/{{ run_id }}",
                    max_concurrency=8, progress_interval=1, **COMMON)

with DAG("flex_e2e_kill_inline", schedule=None, catchup=False):
    FlexLLMOperator(task_id="enrich", input_path=corpus("inline", 240), output_path=OUT + "/inline/{{ run_id }}",
                    max_concurrency=12, progress_interval=2, **COMMON)

with DAG("flex_e2e_kill_background", schedule=None, catchup=False):
    FlexLLMOperator(task_id="enrich", input_path=corpus("background", 60), output_path=OUT + "/bg/{{ run_id }}",
                    max_concurrency=60, submit_mode="background", poll_interval=0.5, progress_interval=2, **COMMON)

with DAG("flex_e2e_retry", schedule=None, catchup=False,
         default_args={"retries": 1, "retry_delay": timedelta(seconds=2)}):
    # XCom mode: checkpoints go to FLEX_PROVIDER_CHECKPOINT_ROOT, per dag/run/task.
    FlexLLMOperator(task_id="enrich", items=[f"retry document {i}" for i in range(40)], on_unavailable="fail",
                    max_concurrency=8, **COMMON)

with DAG("flex_e2e_chaos", schedule=None, catchup=False):
    # Unattended nights: every fault of the emulator at once (set by the test), one triggerer kill.
    # timeout=3 turns trickled bodies into timeouts; short backoff keeps the run to about a minute.
    FlexLLMOperator(task_id="enrich", input_path=corpus("chaos", 2000), output_path=OUT + "/chaos/{{ run_id }}",
                    max_concurrency=40, progress_interval=2, timeout=3, max_failed=0.05,
                    retry={"initial_wait_s": 0.2, "max_wait_s": 2.0, "jitter_s": 0.2, "max_attempts": 15},
                    **COMMON)
