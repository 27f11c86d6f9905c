"""The operator leaves a compact ``flex_run_summary`` XCom when its run ends, for the Flex savings page:
counts, cost, tiers, usage, duration, where the results are; failures only as counts per kind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowException, TaskDeferred

from flex_provider.engine.store import ResultStore
from flex_provider.operators.flex import FlexLLMOperator
from flex_provider.plugins.run_summary import RUN_SUMMARY_XCOM_KEY, build_run_summary, read_run_summary
from tests.airflow.conftest import API_KEY, CONN_ID
from tests.fakes import FakeTI

pytestmark = pytest.mark.integration

CONTEXT = {"ds": "2026-01-01", "params": {}}


async def run_operator(tmp_path: Path, ti: FakeTI, **kwargs) -> tuple[FlexLLMOperator, dict]:
    """execute() (which defers), the trigger run to its event, as the triggerer would."""
    op = FlexLLMOperator(task_id="t", conn_id=CONN_ID, output_path=f"file://{tmp_path}", **kwargs)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute({"ti": ti, **CONTEXT})
    events = [event async for event in deferred.value.trigger.run()]
    return op, events[0].payload


async def test_summary_pushed_at_the_end(airflow_db, emu, tmp_path: Path) -> None:
    ti = FakeTI()
    prompts = [f"confidential note number {i}" for i in range(6)]
    op, event = await run_operator(tmp_path, ti, model="gpt-5-mini", items=prompts)
    assert RUN_SUMMARY_XCOM_KEY not in ti.pushed  # only once the run is over
    op.execute_complete({"ti": ti, **CONTEXT}, event)

    pushed = ti.pushed[RUN_SUMMARY_XCOM_KEY]
    manifest = ResultStore(tmp_path).read_manifest()
    assert pushed == build_run_summary(manifest)
    assert pushed["total"] == pushed["succeeded"] == 6 and pushed["failed"] == 0
    assert pushed["tiers"] == {"flex": 6} and pushed["requests"] == 6
    assert pushed["cost"]["actual"] == round(manifest["cost_usd"]["actual"], 6) > 0
    assert pushed["cost"]["saved"] == pytest.approx(
        pushed["cost"]["standard_equivalent"] - pushed["cost"]["actual"], abs=2e-6
    )
    assert pushed["output_path"] == f"file://{tmp_path}" and pushed["model"] == "gpt-5-mini"
    assert pushed["usage"]["output"] > 0 and pushed["duration_s"] >= 0 and pushed["finished_at"]
    text = json.dumps(pushed)
    assert json.loads(text) == pushed  # JSON-native
    assert "confidential" not in text and API_KEY not in text
    assert read_run_summary(json.loads(text)) == pushed


async def test_summary_pushed_even_when_too_many_items_failed(airflow_db, emu, tmp_path: Path) -> None:
    """A run that failed the task still cost money: it is in the history, failures as counts by kind."""
    ti = FakeTI()
    op, event = await run_operator(tmp_path, ti, model="no-such-model", items=["private a", "private b"])
    with pytest.raises(AirflowException, match="failed"):
        op.execute_complete({"ti": ti, **CONTEXT}, event)
    pushed = ti.pushed[RUN_SUMMARY_XCOM_KEY]
    assert pushed["failed"] == 2 and pushed["succeeded"] == 0
    (group,) = pushed["failures"]
    assert group["count"] == 2 and group["type"] == "NotFoundError" and group["retryable"] is False
    assert set(group) == {"type", "code", "status_code", "retryable", "count"}  # no message, no ids
    assert "private" not in json.dumps(pushed)


def test_read_run_summary_is_lenient() -> None:
    assert read_run_summary(None) is None
    assert read_run_summary({"format": 1}) is None  # no cost: not a summary
    assert read_run_summary("text") is None
    row = read_run_summary({"format": 7, "cost": {"actual": 1, "standard_equivalent": 3}, "total": 4, "extra": 1})
    assert row is not None and row["total"] == 4 and row["cost"]["saved"] == 2.0 and "extra" not in row


def test_an_unknown_cost_stays_unknown_in_the_history_row():
    """A run on a model without a price: the savings page's row says the cost is unknown (null), not $0."""
    unknown = {"actual": None, "standard_equivalent": None, "saved": None, "cache_saved": None, "unpriced_tokens": 7}
    assert build_run_summary({"total": 1, "cost_usd": unknown})["cost"] == dict.fromkeys(
        ("actual", "standard_equivalent", "saved", "cache_saved")
    )
    known = {"actual": 1.0, "standard_equivalent": 2.0, "saved": 1.0, "cache_saved": 0.25}
    assert build_run_summary({"total": 1, "cost_usd": known})["cost"] == known
