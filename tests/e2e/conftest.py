"""Fixtures for end-to-end tests against a real, multi-process Airflow (see ``harness.py``).

``airflow_cluster_factory`` builds clusters inside the test's ``tmp_path`` and always stops them
(and drops their PostgreSQL database) at teardown, whatever happened in the test. When a test
fails, the tails of every component log are printed so CI output shows why.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

# The e2e folder is deliberately not a package: make ``import harness`` work however pytest
# was invoked (rootdir, importmode) and whatever other test folders do.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from harness import AirflowCluster, copy_dag_files, postgres_available, postgres_database  # noqa: E402
from harness import free_port as _free_port  # noqa: E402

ClusterFactory = Callable[..., AirflowCluster]


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    """Remember each phase's report on the item so fixtures can tell whether the test failed."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture
def free_port() -> Callable[[], int]:
    """A callable returning a currently free TCP port on 127.0.0.1 (call it once per port)."""
    return _free_port


@pytest.fixture
def airflow_cluster_factory(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[ClusterFactory]:
    """Factory building started :class:`AirflowCluster` objects; all are stopped at teardown.

    Call signature::

        af = airflow_cluster_factory(
            dag_files={"my_dag.py": SOURCE},   # written into a fresh dags folder (or dags_folder=)
            dags_folder=None,                  # use an existing folder instead
            backend="sqlite",                  # or "postgres": fresh DB cloned from a template
            triggerers=1,
            env=None,                          # extra AIRFLOW__... variables
            wait_for_dags=("my_dag",),         # also wait for these DAG ids (files are waited anyway)
            start=True,                        # False: return it unstarted (call .start() yourself)
            **AirflowCluster kwargs,
        )

    ``backend="postgres"`` skips the test when PostgreSQL is unreachable.
    """
    stack = ExitStack()
    clusters: list[AirflowCluster] = []
    counter = 0

    def make(
        dag_files: Mapping[str, str] | None = None,
        dags_folder: Path | None = None,
        backend: str = "sqlite",
        triggerers: int = 1,
        env: Mapping[str, str] | None = None,
        wait_for_dags: Iterable[str] = (),
        start: bool = True,
        **kwargs: Any,
    ) -> AirflowCluster:
        nonlocal counter
        counter += 1
        base = tmp_path / f"cluster{counter}"
        if dags_folder is None:
            dags_folder = base / "dags"
            dags_folder.mkdir(parents=True)
        if dag_files:
            copy_dag_files(dags_folder, dag_files)
        db_url = None
        if backend == "postgres":
            if not postgres_available():
                pytest.skip("PostgreSQL at 127.0.0.1:5432 is not reachable")
            db_url = stack.enter_context(postgres_database())
            kwargs.setdefault("migrate", False)
        elif backend != "sqlite":
            raise ValueError(f"unknown backend {backend!r}")
        cluster = AirflowCluster(
            home=base / "home", dags_folder=dags_folder, db_url=db_url, env=env, triggerers=triggerers, **kwargs
        )
        clusters.append(cluster)
        if start:
            cluster.start(wait_for_dags=wait_for_dags)
        return cluster

    try:
        yield make
    finally:
        failed = any(getattr(getattr(request.node, f"rep_{when}", None), "failed", False) for when in ("setup", "call"))
        for cluster in clusters:
            if failed:
                sys.stderr.write(f"\n===== e2e cluster diagnostics =====\n{cluster.diagnostics()}\n")
            cluster.stop()
        stack.close()  # drops PostgreSQL databases after their clusters are gone
