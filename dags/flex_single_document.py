"""One long document, one Flex request: the Airflow version of the classic OpenAI Flex example.

**What it shows.** The plain-SDK example is::

    client = OpenAI(timeout=900.0)
    response = client.with_options(timeout=900.0).responses.create(
        model="o4-mini", instructions="Analyse this document semantically.",
        input="<long text>", service_tier="flex",
    )
    print(response.output_text)

``analyse_document`` does the same with ``FlexLLMOperator``: one ``input`` (the ~1,500-word
post-mortem in ``data/long_document.md``, read when the DAG file is parsed), ``service_tier="flex"``
and a 900 s timeout. ``input`` is a templated field: the document is wrapped in ``literal()`` so that
Airflow sends it as written. Without it, a document containing ``{{ ... }}`` would be rendered as
Jinja, and ``{{ var.value.x }}`` or ``{{ conn.x.password }}`` in it would put a Variable or a
secret into the prompt. The task defers while flex is slow, retries flex's 429 "resource unavailable"
with backoff, and returns the output text as XCom. ``log_length`` only logs how long that text is.

**How to run.** Set ``OPENAI_API_KEY`` (or create the ``openai_default`` connection), then::

    airflow dags test flex_single_document

Model: env ``FLEX_DEMO_MODEL``, default ``o4-mini``. Without a key, point ``OPENAI_BASE_URL`` at the
project's emulator (``python -m flex_provider.emulator``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pendulum
from airflow.sdk import DAG, literal, task

from flex_provider.operators.flex import FlexLLMOperator

DOCUMENT = (Path(__file__).parent / "data" / "long_document.md").read_text(encoding="utf-8")
MODEL = os.environ.get("FLEX_DEMO_MODEL") or "o4-mini"

with DAG(
    dag_id="flex_single_document",
    description="Semantic analysis of one long document on OpenAI Flex processing",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    tags=["flex", "openai", "llm", "example"],
    doc_md=__doc__,
) as dag:
    analysis = FlexLLMOperator(
        task_id="analyse_document",
        conn_id="openai_default",
        model=MODEL,
        instructions=(
            "Analyse this document semantically: say what kind of document it is and its purpose, then "
            "give the main topics, the key facts and figures, the causes and effects it describes, the "
            "decisions and commitments (with owners and dates), the open risks and the overall tone. "
            "Answer in English, in short sections with headings."
        ),
        input=literal(DOCUMENT),  # the file's text as written: never rendered as Jinja
        service_tier="flex",
        timeout=900,
        deferrable=True,  # wait for flex in the triggerer, not in a worker slot
    )

    @task
    def log_length(text: str) -> int:
        """Log the size of the analysis, not its content."""
        print(f"analysis: {len(text)} characters, {len(text.split())} words")
        return len(text)

    log_length(analysis.output)
