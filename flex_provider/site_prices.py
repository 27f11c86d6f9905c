"""A site-wide price table: the ``flex_prices`` Airflow Variable, under each task's own ``prices=``.

A platform team that negotiated prices, or runs a model the maintained table does not know yet,
sets them once for every DAG instead of in each task. The table is read when the task runs (never
at DAG parse time, where reading a Variable costs every parse a metadata round trip) and travels
to the triggerer inside the job, so the trigger itself never reads a Variable.
"""

from __future__ import annotations

from typing import Any

from flex_provider.engine.config import check_prices

SITE_PRICES_VARIABLE = "flex_prices"


def site_prices() -> dict[str, Any]:
    """The Variable's table (JSON: ``{model: {"input", "cached_input", "output"}}``, USD per 1M
    tokens, standard tier), checked; empty when the Variable is not set."""
    from airflow.sdk import Variable

    table = Variable.get(SITE_PRICES_VARIABLE, default=None, deserialize_json=True)
    if table is None:
        return {}
    check_prices(table, f"Variable {SITE_PRICES_VARIABLE}")
    return dict(table)


def prices_for_run(task_prices: dict[str, Any] | None) -> dict[str, Any] | None:
    """The table a run uses: the site's, with the task's own prices winning model by model."""
    merged = {**site_prices(), **(task_prices or {})}
    return merged or None
