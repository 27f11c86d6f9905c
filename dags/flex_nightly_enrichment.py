"""Nightly enrichment of support tickets on OpenAI Flex processing (half price, slower).

**What it shows.** `enrich_tickets` sends every ticket of a JSON Lines file through
`FlexLLMOperator` with `service_tier="flex"` and a Pydantic `response_format`, so each record's
`output` is a parsed `TicketEnrichment` (category, sentiment, urgency, language, one-sentence
summary, needs_human). The task defers: the requests run in the triggerer and no worker slot is held
while flex is slow. Results go to object storage as `part-*.jsonl` files plus `_manifest.json`,
one folder per logical date (re-running a date resumes and pays only for missing tickets); XCom
carries only a small summary. `report` reads the manifest and parts back through
`ObjectStoragePath` and logs counts per category/sentiment, failures by reason and the money flex
saved. It never logs ticket texts.

**How to run.** Set `OPENAI_API_KEY` (or create the `openai_default` connection), then:

```bash
airflow dags test flex_nightly_enrichment
```

Without a key, point `OPENAI_BASE_URL` at the project's emulator (`python -m flex_provider.emulator`).

**If tickets failed** (the task fails above `max_failed`, 1%): its error names the failures by
reason. Fix the cause, then clear the task: retryable failures are sent again. Failures that are not
retryable (a 400 or 404, say) are sent again only with `redo_failed="all"`; tickets already enriched
are kept and not paid for twice.

**Settings** (an Airflow Variable wins over the environment variable, which wins over the default):

- input: Variable `flex_demo_input` / env `FLEX_DEMO_INPUT`; default: the bundled
  `data/support_tickets.jsonl` (262 fictional tickets, rebuilt by `scripts/make_support_tickets.py`).
- output root: Variable `flex_output_root` / env `FLEX_DEMO_OUTPUT_ROOT`; default
  `file:///tmp/flex_provider_results`. Any ObjectStoragePath URI works (`s3://...` needs the
  Amazon provider). Results land in `<root>/nightly/<YYYY-MM-DD>`.
- model: env `FLEX_DEMO_MODEL`, default `gpt-5-mini`.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import pendulum
from airflow.sdk import DAG, ObjectStoragePath, task
from pydantic import BaseModel, Field

from flex_provider.engine.records import RunSummary, as_summary, summary_lines
from flex_provider.operators.flex import FlexLLMOperator

BUNDLED_CORPUS = (Path(__file__).parent / "data" / "support_tickets.jsonl").resolve().as_uri()
DEFAULT_INPUT = os.environ.get("FLEX_DEMO_INPUT") or BUNDLED_CORPUS
DEFAULT_OUTPUT_ROOT = os.environ.get("FLEX_DEMO_OUTPUT_ROOT") or "file:///tmp/flex_provider_results"
MODEL = os.environ.get("FLEX_DEMO_MODEL") or "gpt-5-mini"

# Task code logs through the task logger: the lines show in the task log as they are (print() output
# lands in a collapsed group).
log = logging.getLogger("airflow.task")

Category = Literal[
    "billing_payments",
    "account_access",
    "technical_issue",
    "feature_request",
    "shipping_delivery",
    "returns_refunds",
    "privacy_data",
    "api_integration",
    "praise",
    "other",
]


class TicketEnrichment(BaseModel):
    """What the model returns for one ticket (sent to OpenAI as a strict JSON schema)."""

    category: Category = Field(description="Main topic of the ticket")
    sentiment: Literal["positive", "neutral", "negative"] = Field(description="The customer's tone")
    urgency: int = Field(ge=1, le=5, description="1 = whenever, 5 = business is blocked right now")
    language: str = Field(description="ISO 639-1 code of the language the ticket is written in")
    summary: str = Field(description="One English sentence, without names, e-mails or order numbers")
    needs_human: bool = Field(description="True if an agent must act (refund, escalation, legal, outage)")


INSTRUCTIONS = """\
You triage customer-support tickets for Brightcart, a company that sells an online store builder
(storefront, payments, inventory sync, marketplace connector, API, e-mail campaigns, mobile apps)
and point-of-sale hardware. For the ticket below, return:
- category: the single best fit;
- sentiment of the customer;
- urgency from 1 (no time pressure) to 5 (sales or access blocked right now, outage, legal deadline);
- language: ISO 639-1 code of the ticket's language;
- summary: one neutral English sentence, with no personal data (names, e-mail addresses, order numbers);
- needs_human: true when a person must act (money back, escalation, security, GDPR, outage), false
  when a help-centre answer or the product team's backlog is enough.
"""

PROMPT_TEMPLATE = """\
Ticket via {{ item.channel }}, {{ item.customer_tier }} customer, product: {{ item.product }}
Subject: {{ item.subject }}

{{ item.text }}"""

with DAG(
    dag_id="flex_nightly_enrichment",
    description="Classify and summarise support tickets every night on OpenAI Flex processing",
    schedule="@daily",
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["flex", "openai", "llm", "example"],
    doc_md=__doc__,
    user_defined_macros={"default_input": DEFAULT_INPUT, "default_output_root": DEFAULT_OUTPUT_ROOT},
) as dag:
    enrich_tickets = FlexLLMOperator(
        task_id="enrich_tickets",
        conn_id="openai_default",
        model=MODEL,
        instructions=INSTRUCTIONS,
        input_path="{{ var.value.get('flex_demo_input', default_input) }}",
        prompt_template=PROMPT_TEMPLATE,
        response_format=TicketEnrichment,
        request_options={"max_output_tokens": 1500, "reasoning": {"effort": "low"}},
        service_tier="flex",
        timeout=900,
        max_concurrency=16,
        on_unavailable="fallback",  # flex stays at capacity: finish on the standard tier (full price)
        # Manual runs may have no logical date: fall back to the day the run was created.
        output_path="{{ var.value.get('flex_output_root', default_output_root) }}"
        "/nightly/{{ (dag_run.logical_date or dag_run.run_after) | ds }}",
        max_failed=0.01,
        deferrable=True,
    )

    @task
    def report(summary: RunSummary) -> dict[str, Any]:
        """Count the enrichment results on storage; log aggregates only, never ticket content."""
        root = ObjectStoragePath(summary["output_path"])
        manifest = as_summary(json.loads((root / "_manifest.json").read_text(encoding="utf-8")))
        parts = manifest["parts"]
        counts: dict[str, Counter[str]] = {key: Counter() for key in ("category", "sentiment", "urgency")}
        needs_human = unparsed = 0
        for name in parts:
            with (root / name).open("r", encoding="utf-8") as handle:
                for line in handle:
                    if not line.strip():
                        continue
                    output = json.loads(line).get("output")
                    if not isinstance(output, dict):  # a failed item: its record has no output
                        unparsed += 1
                        continue
                    for key, counter in counts.items():
                        counter[str(output.get(key, "?"))] += 1
                    needs_human += bool(output.get("needs_human"))

        log.info("Flex enrichment report for %s", root)
        for line in summary_lines(manifest):  # counts, tokens, cost and saved, failures by reason
            log.info("  %s", line)
        log.info("  needs a human: %d", needs_human)
        for key, counter in counts.items():
            log.info("  %s: %s", key, ", ".join(f"{k}={v}" for k, v in sorted(counter.items())))
        saved = float(manifest["cost_usd"].get("saved", 0.0))
        return {
            "categories": dict(counts["category"]),
            "sentiments": dict(counts["sentiment"]),
            "needs_human": needs_human,
            "unparsed": unparsed,
            "saved_usd": saved,
        }

    report(enrich_tickets.output)
