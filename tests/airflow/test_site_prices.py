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
