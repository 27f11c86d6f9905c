"""The site-wide price table (Airflow Variable ``flex_prices``) under each task's own ``prices=``."""

from __future__ import annotations

import json

import pytest

from flex_provider.engine.errors import FlexInputError
from flex_provider.site_prices import SITE_PRICES_VARIABLE, prices_for_run

HOUSE = {"input": 1.0, "cached_input": 0.5, "output": 2.0}


def _set_site(monkeypatch: pytest.MonkeyPatch, table: object) -> None:
    monkeypatch.setenv(f"AIRFLOW_VAR_{SITE_PRICES_VARIABLE.upper()}", json.dumps(table))


def test_no_variable_no_prices(monkeypatch):
    monkeypatch.delenv(f"AIRFLOW_VAR_{SITE_PRICES_VARIABLE.upper()}", raising=False)
    assert prices_for_run(None) is None
    assert prices_for_run({"x": HOUSE}) == {"x": HOUSE}


def test_site_table_applies_and_the_tasks_own_prices_win(monkeypatch):
    _set_site(monkeypatch, {"house": HOUSE, "o3": {"input": 9.0, "cached_input": 9.0, "output": 9.0}})
    mine = {"input": 2.0, "cached_input": 0.2, "output": 8.0}
    assert prices_for_run({"o3": mine}) == {"house": HOUSE, "o3": mine}


@pytest.mark.parametrize(
    ("table", "names"),
    [
        (["not", "a", "dict"], "Variable flex_prices: expected a dict"),
        ({"house": {"input": 1.0}}, "Variable flex_prices['house']"),
        ({"house": {"input": -1.0, "cached_input": 0.0, "output": 1.0}}, "Variable flex_prices['house'].input"),
    ],
)
def test_a_bad_site_table_is_named_as_the_variable(monkeypatch, table, names):
    _set_site(monkeypatch, table)
    with pytest.raises(FlexInputError, match=names.replace("[", r"\[").replace("]", r"\]")):
        prices_for_run(None)


# -- through the operator, against the emulator ---------------------------------------------------


async def _run(tmp_path, **kwargs):
    """execute() (which defers), the trigger run to its event, execute_complete(): the summary."""
    from airflow.sdk.exceptions import TaskDeferred

    from flex_provider.operators.flex import FlexLLMOperator
    from tests.airflow.conftest import CONN_ID
    from tests.fakes import FakeTI

    ti = FakeTI()
    context = {"ti": ti, "ds": "2026-01-01", "params": {}}
    op = FlexLLMOperator(task_id="t", conn_id=CONN_ID, output_path=f"file://{tmp_path}", model="gpt-5-mini", **kwargs)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    (event,) = [event async for event in deferred.value.trigger.run()]
    return op.execute_complete(context, event.payload)


@pytest.mark.integration
async def test_the_site_table_prices_the_run_and_the_tasks_prices_still_win(airflow_db, emu, tmp_path, monkeypatch):
    _set_site(monkeypatch, {"gpt-5-mini": {"input": 100.0, "cached_input": 100.0, "output": 100.0}})
    site = await _run(tmp_path / "site", items=["a", "b"], max_concurrency=2)
    usage = site["usage"]
    # flex: half of the site's $100 per 1M tokens, for every token in and out
    assert site["cost_usd"]["actual"] == pytest.approx((usage["input"] + usage["output"]) * 100 / 1e6 / 2, abs=2e-6)
    mine = {"input": 1.0, "cached_input": 1.0, "output": 1.0}
    own = await _run(tmp_path / "own", items=["a", "b"], prices={"gpt-5-mini": mine})
    assert own["cost_usd"]["actual"] == pytest.approx(
        (own["usage"]["input"] + own["usage"]["output"]) * 1 / 1e6 / 2, abs=2e-6
    )


@pytest.mark.integration
async def test_prompt_cache_saving_is_measured_and_reported(airflow_db, emu, tmp_path):
    """Shared instructions long enough to be cached (the emulator's rule: a prefix of 256+ tokens,
    served again on the same tier) are billed at the cached rate after the first answers; the
    summary reports the cached tokens and what they saved next to what flex saved."""
    instructions = "You classify support tickets. " + "Follow the house style guide closely. " * 60
    summary = await _run(
        tmp_path, instructions=instructions, items=[f"ticket {i}" for i in range(12)], max_concurrency=1
    )
    assert summary["usage"]["cached"] > 0
    cost = summary["cost_usd"]
    # gpt-5-mini: $0.25 input vs $0.025 cached per 1M; flex halves both
    assert cost["cache_saved"] == pytest.approx(summary["usage"]["cached"] * (0.25 - 0.025) / 1e6 / 2, abs=2e-6)
    assert cost["saved"] > 0
