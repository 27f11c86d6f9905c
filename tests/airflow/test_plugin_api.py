"""The plugin's JSON API inside Airflow's own API app (in this process, no api-server), against runs made
with dag.test() and the emulator: what it answers, and whom it refuses.

Users come from ``tests/e2e/restricted_auth.py``: Airflow's SimpleAuthManager, except that the users
named in ``FLEX_TEST_DENIED_DAGS`` may not read the DAGs named there.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from flex_provider.engine.store import MANIFEST_NAME, ResultStore
from flex_provider.live import LiveState
from tests.airflow.conftest import API_KEY, task_states, write_dag

pytestmark = pytest.mark.integration

E2E_DIR = str(Path(__file__).resolve().parents[1] / "e2e")
LIVE_KEYS = set(LiveState.__annotations__)


@pytest.fixture(scope="module")
def api(airflow_db: Path) -> Iterator[TestClient]:
    """Airflow's API app as the api-server builds it (plugins mounted), with the restricted users."""
    patch = pytest.MonkeyPatch()
    patch.syspath_prepend(E2E_DIR)
    patch.setenv("AIRFLOW__CORE__AUTH_MANAGER", "restricted_auth.RestrictedAuthManager")
    patch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "admin:admin,reader:viewer,outsider:viewer")
    # What an api-server's config holds (this process read its config before `airflow db migrate`
    # wrote one with generated secrets).
    patch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", secrets.token_urlsafe(64))
    patch.setenv("AIRFLOW__API__SECRET_KEY", secrets.token_urlsafe(32))
    from airflow.api_fastapi.app import create_app, purge_cached_app

    try:
        with TestClient(create_app()) as client:
            yield client
    finally:
        purge_cached_app()  # the next module gets the default auth manager again
        patch.undo()


def bearer(username: str, role: str = "viewer") -> dict[str, str]:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    token = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username=username, role=role))
    return {"Authorization": f"Bearer {token}"}


def get(api: TestClient, path: str, user: str | None = "admin", **params: Any) -> Any:
    headers = bearer(user, "admin" if user == "admin" else "viewer") if user else {}
    return api.get(path, headers=headers, params=params)


def with_cookie(api: TestClient, path: str, token: str) -> Any:
    """What the pages do: no header, the UI's ``_token`` cookie."""
    api.cookies.set("_token", token)
    try:
        return api.get(path)
    finally:
        api.cookies.clear()


def live_path(run: Any, task_id: str) -> str:
    return f"/flex/api/runs/{run.dag_id}/{run.run_id}/{task_id}"


def assert_nothing_private(*responses: Any, private: tuple[str, ...] = ()) -> None:
    for response in responses:
        text = response.text
        assert API_KEY not in text
        for word in private:
            assert word not in text, word


def test_plugins_api_lists_the_tab_and_the_page(api: TestClient) -> None:
    plugins = get(api, "/api/v2/plugins").json()["plugins"]
    (flex,) = [p for p in plugins if p["name"] == "flex"]
    views = {v["destination"]: v for v in flex["external_views"]}
    assert views["task_instance"]["href"].startswith("/flex/ui/task?dag_id={DAG_ID}&run_id={RUN_ID}")
    assert views["task_instance"]["url_route"] == "flex"
    assert views["nav"]["href"] == "/flex/ui/savings" and views["nav"]["url_route"] == "flex-savings"
    assert flex["fastapi_apps"][0]["url_prefix"] == "/flex"
    assert api.get("/flex/ui/task").status_code == 200  # the mount answers


def test_no_token_or_a_bad_one_is_refused(api: TestClient) -> None:
    for path in ("/flex/api/runs", "/flex/api/runs/d/r/t"):
        assert api.get(path).status_code == 401
        assert api.get(path, headers={"Authorization": "Bearer not-a-jwt"}).status_code in (401, 403)
        assert with_cookie(api, path, "not-a-jwt").status_code in (401, 403)
    token = bearer("admin", "admin")["Authorization"].split()[1]
    assert with_cookie(api, "/flex/api/runs", token).status_code == 200


def test_finished_run_live_state_history_and_permissions(
    api: TestClient, airflow_db, emu, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    prompts = [f"classified memo {i}" for i in range(4)]
    dag = write_dag(
        "FlexLLMOperator(task_id='enrich', conn_id=CONN_ID, model='gpt-5-mini', items={items!r}, output_path={out!r})",
        items=prompts,
        out=f"file://{out}",
    )
    run = dag.test()
    assert task_states(run) == {"enrich": "success"}
    manifest = ResultStore(out).read_manifest()

    live = get(api, live_path(run, "enrich"))
    assert live.status_code == 200 and live.headers["cache-control"] == "no-store"
    state = live.json()
    assert set(state) >= LIVE_KEYS
    assert (state["dag_id"], state["run_id"], state["task_id"], state["map_index"]) == (
        run.dag_id,
        run.run_id,
        "enrich",
        -1,
    )
    assert state["state"] == "success" and state["try_number"] >= 1 and state["operator"] == "FlexLLMOperator"
    assert state["status"] == "finished" and state["finished"] is True and state["in_flight"] == 0
    assert state["total"] == state["done"] == state["succeeded"] == manifest["succeeded"] == 4
    assert state["cost"]["actual"] == pytest.approx(manifest["cost_usd"]["actual"])
    assert state["tiers"] == {"flex": 4} and state["failures"] == [] and state["eta_s"] is None
    assert state["output_path"] == f"file://{out}"

    listed = get(api, "/flex/api/runs")
    (row,) = [r for r in listed.json()["runs"] if r["dag_id"] == run.dag_id]
    assert (row["run_id"], row["task_id"], row["map_index"]) == (run.run_id, "enrich", -1)
    assert row["items"] == row["succeeded"] == 4 and row["failed"] == 0 and row["tiers"] == {"flex": 4}
    assert row["cost"]["actual"] == pytest.approx(manifest["cost_usd"]["actual"], abs=1e-6)
    assert row["cost"]["standard_equivalent"] > row["cost"]["actual"] > 0 and row["model"] == "gpt-5-mini"
    assert row["date"] and row["finished_at"] and row["duration_s"] >= 0
    assert get(api, "/flex/api/runs", dag_id="~").json() == listed.json()
    only = get(api, "/flex/api/runs", dag_id=run.dag_id).json()
    assert only["total_entries"] == 1 and only["runs"] == [row]
    assert get(api, "/flex/api/runs", limit=0).status_code == 422

    # A viewer may read it; the outsider may not read this DAG: refused, and absent from the list.
    monkeypatch.setenv("FLEX_TEST_DENIED_DAGS", f"outsider:{run.dag_id}")
    assert get(api, live_path(run, "enrich"), user="reader").json()["succeeded"] == 4
    assert get(api, live_path(run, "enrich"), user="outsider").status_code == 403
    assert get(api, "/flex/api/runs", user="outsider", dag_id=run.dag_id).status_code == 403
    outsider_list = get(api, "/flex/api/runs", user="outsider")
    assert outsider_list.status_code == 200
    assert all(r["dag_id"] != run.dag_id for r in outsider_list.json()["runs"])
    assert_nothing_private(live, listed, outsider_list, private=tuple(prompts))


def test_failed_items_then_a_stopped_run(api: TestClient, airflow_db, emu, tmp_path: Path) -> None:
    out = tmp_path / "out"
    dag = write_dag(
        "FlexLLMOperator(task_id='enrich', conn_id=CONN_ID, model='no-such-model', items={items!r}, output_path={out!r})",
        items=["sensitive draft one", "sensitive draft two"],
        out=f"file://{out}",
    )
    run = dag.test()
    assert task_states(run) == {"enrich": "failed"}  # every item failed, over max_failed=0

    live = get(api, live_path(run, "enrich"))
    state = live.json()
    assert state["status"] == "finished" and state["state"] == "failed" and state["failed"] == 2
    assert {f["id"] for f in state["failures"]} == {"0", "1"} or len(state["failures"]) == 2
    for failure in state["failures"]:
        assert failure["type"] == "NotFoundError" and "no-such-model" in failure["message"]
    (group,) = state["failure_groups"]
    assert group["count"] == 2 and group["retryable"] is False
    (row,) = [r for r in get(api, "/flex/api/runs", dag_id=run.dag_id).json()["runs"]]
    assert row["failed"] == 2 and row["succeeded"] == 0  # a failed task's run is in the history too
    everything = get(api, "/flex/api/runs", limit=1000).json()["runs"]
    assert len(everything) >= 2 and everything[0] == row  # newest first (the run of the test above is older)
    finished = [r["finished_at"] for r in everything]
    assert finished == sorted(finished, reverse=True)
    assert get(api, "/flex/api/runs", limit=1).json()["runs"] == [row]
    assert_nothing_private(live, private=("sensitive draft",))

    # The task ended without a manifest (killed, say): the last checkpoint's numbers, "stopped".
    (out / MANIFEST_NAME).unlink()
    stopped = get(api, live_path(run, "enrich")).json()
    assert stopped["status"] == "stopped" and stopped["finished"] is False
    assert "did not finish" in stopped["message"] and stopped["failed"] == 2


def test_not_started_and_unknown_task_instances(api: TestClient, airflow_db) -> None:
    dag = write_dag(
        """
        from airflow.providers.standard.operators.empty import EmptyOperator
        EmptyOperator(task_id="noop")
        """
    )
    run = dag.test()
    assert task_states(run) == {"noop": "success"}
    state = get(api, live_path(run, "noop")).json()
    assert state["status"] == "not_started" and "not a FlexLLMOperator task" in state["message"]
    assert state["state"] == "success" and not LIVE_KEYS & (set(state) - {"format"})
    assert get(api, live_path(run, "missing")).status_code == 404
    assert get(api, live_path(run, "noop"), map_index=3).status_code == 404
    assert get(api, live_path(run, "noop"), map_index=-2).status_code == 422
    assert get(api, f"/flex/api/runs/{run.dag_id}/no-such-run/noop").status_code == 404
