"""Support tickets on OpenAI Flex, split into shards that the deployment's triggerers share.

**What it shows.** `flex_sharded(task_id="triage", shards=4, ...)` is one call with
`FlexLLMOperator`'s arguments. It builds a task group `triage` holding `triage.shard`, a mapped
task with one instance per shard, and `triage.merge`. Each shard defers to a trigger of its own,
so with several triggerers (HA) the shards run on several machines at once, and a dead
triggerer's shards move to a live one and resume from their checkpoints. Shard k sends the tickets
at input positions p with `p % 4 == k` into `<output>/shards/<k>-of-4/`. The merge then writes one
`_manifest.json` for the whole input, with counts, cost, tiers and failures summed. Its `parts`
lists every shard's part files, so the results are read in place and nothing is copied.
`triage.output` is that merged summary. `report` reads every record once through
`flex_provider.shards.iter_records` and logs counts per category, never ticket texts.

**How to run.** Set `OPENAI_API_KEY` (or create the `openai_default` connection), then:

```bash
airflow dags test flex_sharded_enrichment
```

Without a key, point `OPENAI_BASE_URL` at the project's emulator (`python -m flex_provider.emulator`).

**Clearing.** Clear the task group `triage` to finish a run whose items failed. Each shard resumes
from its folder and sends only what is missing, and the merge writes the summary again. Nothing is
counted or paid for twice. Keep `shards` fixed for an output folder: another count is refused
rather than paying again for every item.

**Settings** (the same as `flex_nightly_enrichment`): input `flex_demo_input` / `FLEX_DEMO_INPUT`
(default: the bundled 262 tickets); output root `flex_output_root` / `FLEX_DEMO_OUTPUT_ROOT`
(default `file:///tmp/flex_provider_results`), results in `<root>/sharded/<YYYY-MM-DD>`;
model `FLEX_DEMO_MODEL` (default `gpt-5-mini`).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import pendulum
from airflow.sdk import DAG, ObjectStoragePath, task
from pydantic import BaseModel, Field

from flex_provider.engine.records import summary_lines
from flex_provider.operators.sharded import flex_sharded
from flex_provider.shards import iter_records

BUNDLED_CORPUS = (Path(__file__).parent / "data" / "support_tickets.jsonl").resolve().as_uri()
DEFAULT_INPUT = os.environ.get("FLEX_DEMO_INPUT") or BUNDLED_CORPUS
DEFAULT_OUTPUT_ROOT = os.environ.get("FLEX_DEMO_OUTPUT_ROOT") or "file:///tmp/flex_provider_results"
MODEL = os.environ.get("FLEX_DEMO_MODEL") or "gpt-5-mini"

log = logging.getLogger("airflow.task")


class Triage(BaseModel):
    """What the model returns for one ticket."""

    category: Literal["billing", "access", "bug", "feature", "delivery", "other"] = Field(description="Main topic")
    urgency: int = Field(ge=1, le=5, description="1 = whenever, 5 = business is blocked right now")


with DAG(
    dag_id="flex_sharded_enrichment",
    description="Triage support tickets on OpenAI Flex, in shards spread over the triggerers",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    tags=["flex", "openai", "llm", "example"],
    doc_md=__doc__,
    user_defined_macros={"default_input": DEFAULT_INPUT, "default_output_root": DEFAULT_OUTPUT_ROOT},
) as dag:
    triage = flex_sharded(
        task_id="triage",
        shards=4,
        conn_id="openai_default",
        model=MODEL,
        instructions="Triage this customer-support ticket: its main topic and how urgent it is.",
        input_path="{{ var.value.get('flex_demo_input', default_input) }}",
        prompt_template="Subject: {{ item.subject }}\n\n{{ item.text }}",
        response_format=Triage,
        request_options={"max_output_tokens": 600, "reasoning": {"effort": "low"}},
        max_concurrency=16,  # per shard: 4 shards, up to 64 requests in flight in all
        on_unavailable="fallback",
        output_path="{{ var.value.get('flex_output_root', default_output_root) }}"
        "/sharded/{{ (dag_run.logical_date or dag_run.run_after) | ds }}",
        max_failed=0.01,  # of the whole input: the merge judges it over every shard
        deferrable=True,
    )

    @task
    def report(summary: dict[str, Any]) -> dict[str, Any]:
        """Count the merged results; log aggregates only, never ticket content."""
        root = ObjectStoragePath(summary["output_path"])
        categories: Counter[str] = Counter()
        seen = 0
        for record in iter_records(root):  # every shard's records, each once
            seen += 1
            output = record.get("output")
            categories[str(output.get("category")) if isinstance(output, dict) else "unparsed"] += 1
        log.info("Sharded flex triage of %d ticket(s) in %d shard(s) at %s", seen, len(summary["shards"]), root)
        for line in summary_lines(summary):  # type: ignore[arg-type]
            log.info("  %s", line)
        log.info("  categories: %s", ", ".join(f"{k}={v}" for k, v in sorted(categories.items())))
        return {"records": seen, "categories": dict(categories)}

    report(triage.output)
