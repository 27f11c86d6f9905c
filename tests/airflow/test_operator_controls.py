"""FlexLLMOperator's budget, deadline and rate caps inside Airflow: dag.test() defers the task, runs
FlexTrigger against the emulator through a real connection, resumes the task."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from flex_provider.engine.errors import FlexInputError
from flex_provider.engine.store import MANIFEST_NAME
from tests.airflow.conftest import task_states, write_dag, xcom

pytestmark = [pytest.mark.integration]

ITEMS = [f"ticket {i}: my invoice {i} is wrong" for i in range(120)]


def test_a_budget_stops_the_run_and_fails_the_task_after_checkpointing_then_a_higher_one_finishes(
    airflow_db, emu, tmp_path: Path, capfd
) -> None:
    out = tmp_path / "out"
    body = """
        FlexLLMOperator(task_id="enrich", conn_id=CONN_ID, model="gpt-5-mini", items={items!r},
                        output_path={out!r}, request_options={{"max_output_tokens": 300, "reasoning": {{"effort": "minimal"}}}},
                        max_cost_usd="{{{{ params.budget }}}}", params={{"budget": {budget}}}{extra})
        """
    run = write_dag(body, items=ITEMS, out=f"file://{out}", budget=0.002, extra="").test()
    assert task_states(run) == {"enrich": "failed"}
    printed = capfd.readouterr()
    text = printed.out + printed.err
    manifest = json.loads((out / MANIFEST_NAME).read_text())  # checkpointed before the task failed
    skipped, sent = manifest["skipped"], manifest["succeeded"]
    assert skipped > 0 and sent > 0 and skipped + sent == len(ITEMS)
    assert manifest["budget"]["max_cost_usd"] == 0.002 and manifest["budget"]["spent"] <= 0.002
    assert emu.stats()["billing"]["cost_usd"] <= 0.002
    assert f"flex run stopped at its budget: {skipped} of {len(ITEMS)} item(s) not sent" in text
    assert "Raise max_cost_usd and clear the task" in text
    assert f"exhausted: {skipped} item(s) not sent" in text  # the summary line, as a warning

    # Partial results accepted: the same budget, now spent, succeeds with nothing sent.
    run = write_dag(
        body, items=ITEMS, out=f"file://{out}", budget=0.002, extra=', on_budget_exhausted="succeed"'
    ).test()
    assert task_states(run) == {"enrich": "success"}
    assert xcom(run, "enrich")["skipped"] == skipped
    assert emu.stats()["requests"] == sent  # the cap was spent already: nothing more was sent

    run = write_dag(body, items=ITEMS, out=f"file://{out}", budget=1, extra="").test()
    assert task_states(run) == {"enrich": "success"}
    summary = xcom(run, "enrich")
    assert summary["succeeded"] == len(ITEMS) and summary["skipped"] == 0
    assert summary["this_run"]["requests"] == skipped  # only the skipped ones were sent
    assert emu.stats()["requests"] == len(ITEMS)


def test_a_deadline_given_as_a_duration_is_made_absolute_before_deferral(airflow_db, emu, tmp_path: Path) -> None:
    out = tmp_path / "out"
    before = datetime.now(UTC)
    run = write_dag(
        """
        FlexLLMOperator(task_id="enrich", conn_id=CONN_ID, model="gpt-5-mini", items=["a", "b", "c"],
                        output_path={out!r}, deadline="{{{{ params.within }}}}", params={{"within": 3600}})
        """,
        out=f"file://{out}",
    ).test()
    assert task_states(run) == {"enrich": "success"}
    deadline = xcom(run, "enrich")["deadline"]
    at = datetime.fromisoformat(deadline["at"])
    assert before + timedelta(seconds=3590) < at < datetime.now(UTC) + timedelta(seconds=3600)
    assert deadline["met"] is True and deadline["on_fallback"] == 0 and deadline["extra_cost_usd"] == 0


def test_rate_caps_reach_the_pacer(airflow_db, emu, tmp_path: Path) -> None:
    run = write_dag(
        """
        FlexLLMOperator(task_id="enrich", conn_id=CONN_ID, model="gpt-5-mini", items=["a", "b"],
                        output_path={out!r}, max_tokens_per_minute=1_000_000, max_requests_per_minute=600)
        """,
        out=f"file://{tmp_path / 'out'}",
    ).test()
    assert task_states(run) == {"enrich": "success"}
    limits = xcom(run, "enrich")["rate_limits"]
    assert limits["tokens"]["limit"] == 1_000_000 and limits["requests"]["limit"] == 600


def test_bad_controls_fail_at_parse_time_or_before_deferral(airflow_db, emu, tmp_path: Path, capfd) -> None:
    from flex_provider.operators.flex import FlexLLMOperator

    with pytest.raises(FlexInputError, match="on_budget_exhausted"):
        FlexLLMOperator(task_id="t", model="gpt-5-mini", items=["a"], on_budget_exhausted="ignore")
    with pytest.raises(FlexInputError, match="max_tokens_per_minute"):
        FlexLLMOperator(task_id="t", model="gpt-5-mini", items=["a"], max_tokens_per_minute=-5)
    # Templated ones are checked once rendered, before anything is sent: an unknown price, a bad deadline.
    cases = {
        'model="my-finetune", max_cost_usd="{{ 1 }}"': "no price is known for model 'my-finetune'",
        'model="gpt-5-mini", deadline="tomorrow morning"': "deadline: expected a date-time (ISO 8601",
    }
    for n, (extra, message) in enumerate(cases.items()):
        run = write_dag(
            'FlexLLMOperator(task_id="enrich", conn_id=CONN_ID, items=["a"], output_path={out!r}, {extra})',
            out=f"file://{tmp_path / str(n)}",
            extra=extra,
        ).test()
        assert task_states(run) == {"enrich": "failed"}
        printed = capfd.readouterr()
        assert message in printed.out + printed.err
    assert emu.stats()["requests"] == 0
