"""``benchmarks/airflow_path.py`` at a tiny size: the operator through ``dag.test()`` against the emulator,
so the script keeps working as Airflow and the job path change (~15-25 s on 2 cores: a fresh
process imports Airflow). The engine-alone phase is the simple one and is left out to save time;
the phase with a real triggerer (a whole Airflow cluster, ~20-35 s just to start) too.

The copy of the session's migrated Airflow DB saves the script its own ``airflow db migrate``.
"""

from __future__ import annotations

import pytest

from tests.airflow.conftest import airflow_db  # noqa: F401  (fixture: a migrated SQLite metadata DB)
from tests.benchmarks.test_benchmarks_smoke import readme_rows, run_script

pytestmark = pytest.mark.bench


def test_airflow_path_dag_test(airflow_db) -> None:  # noqa: F811
    out = run_script(
        "airflow_path.py",
        *("--n", "40", "--c", "10", "--latency", "0.1", "--poll", "0.05", "--phase-timeout", "90"),
        *("--phases", "dagtest", "--airflow-db", str(airflow_db / "airflow.db")),
    )
    assert "ideal rate C/L = 100 items/s" in out
    rows = readme_rows(out, "README rows:")
    assert [row.split(" | ")[4] for row in rows] == ["dagtest"], rows
    assert all(row.split(" | ")[1:4] == ["40", "10", "0.1"] for row in rows), rows
    assert "GC in window" in out and "in flight mean" in out
