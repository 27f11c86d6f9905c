"""The Flex plugin's API on a real api-server (one cluster for every check): the live numbers of a
deferred run while a triggerer works it, the final ones after the end, the history, the auth
refusals, and no secret, prompt or model output in any answer.

Users: ``admin`` (Admin) and ``outsider`` (Viewer), through ``restricted_auth.RestrictedAuthManager``
(Airflow's SimpleAuthManager, except that ``outsider`` may not read ``flex_ui_live``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import AirflowCluster

from flex_provider.emulator import EmulatorConfig, EmulatorServer, serve_in_thread

pytestmark = pytest.mark.e2e

API_KEY = "sk-e2e-ui-SECRET-9d2c4e6f8a0b1c3d"
HERE = Path(__file__).resolve().parent
LIVE_DAG, OPEN_DAG = "flex_ui_live", "flex_ui_open"
LIVE_ITEMS, OPEN_ITEMS = 48, 3
PROMPT_WORD = "ui-confidential"  # in every prompt; must never come back

DAGS = f'''
import json, os
from pathlib import Path
from airflow.sdk import DAG
from flex_provider.operators.flex import FlexLLMOperator

DATA = Path(os.environ["FLEX_UI_DATA"])
OUT = os.environ["FLEX_UI_OUT"]

def corpus(name, n):
    path = DATA / f"{{name}}.jsonl"
    if not path.exists():
        DATA.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps({{"id": f"{{name}}-{{i}}", "text": f"{PROMPT_WORD} {{name}} memo {{i}}"}}) + "\\n"
                               for i in range(n)))
        tmp.rename(path)
    return path.as_uri()

COMMON = dict(conn_id="openai_default", model="gpt-5-mini", instructions="Summarise.", deferrable=True,
              progress_interval=0.5)

with DAG("{LIVE_DAG}", schedule=None, catchup=False):
    FlexLLMOperator(task_id="enrich", input_path=corpus("live", {LIVE_ITEMS}), output_path=OUT + "/live/{{{{ run_id }}}}",
                    max_concurrency=4, **COMMON)

with DAG("{OPEN_DAG}", schedule=None, catchup=False):
    FlexLLMOperator(task_id="enrich", items=["{PROMPT_WORD} open a", "{PROMPT_WORD} open b", "{PROMPT_WORD} open c"],
                    output_path=OUT + "/open/{{{{ run_id }}}}", **COMMON)
'''


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorServer]:
    # 48 items, 4 in flight, ~1.2 s each: about 15 s of deferred work to watch.
    with serve_in_thread(EmulatorConfig(api_key=API_KEY, latency_s=1.2, latency_jitter=0.2)) as server:
        yield server


@pytest.fixture(scope="module")
def af(emu: EmulatorServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowCluster]:
    base = tmp_path_factory.mktemp("flex-ui-api")
    dags = base / "dags"
    dags.mkdir()
    (dags / "flex_ui_dags.py").write_text(DAGS)
    conn = {"conn_type": "openai_flex", "password": API_KEY, "host": emu.base_url}
    env = {
        "AIRFLOW_CONN_OPENAI_DEFAULT": json.dumps(conn),
        "FLEX_UI_DATA": str(base / "data"),
        "FLEX_UI_OUT": (base / "out").as_uri(),
        # the api-server imports the auth manager from this folder (not a package)
        "PYTHONPATH": os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p),
        "AIRFLOW__CORE__AUTH_MANAGER": "restricted_auth.RestrictedAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,outsider:viewer",
        "FLEX_TEST_DENIED_DAGS": f"outsider:{LIVE_DAG}",
    }
    cluster = AirflowCluster(home=base / "home", dags_folder=dags, env=env)
    cluster.out = base / "out"  # type: ignore[attr-defined]
    try:
        cluster.start(wait_for_dags=[LIVE_DAG, OPEN_DAG])
        yield cluster
    finally:
        cluster.stop()


def login(af: AirflowCluster, username: str) -> str:
    """A JWT for ``username`` (the api-server generated and saved the other users' passwords)."""
    password = json.loads(af.password_file.read_text())[username]
    response = af.http.post("/auth/token", json={"username": username, "password": password})
    assert response.status_code in (200, 201), response.text
    return str(response.json()["access_token"])


def call(af: AirflowCluster, path: str, token: str | None, **params: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return af.http.get(path, headers=headers, params=params)


def test_flex_ui_api_on_a_real_api_server(af: AirflowCluster, emu: EmulatorServer) -> None:
    admin, outsider = login(af, "admin"), login(af, "outsider")
    answers: list[httpx.Response] = []

    # The UI finds the tab and the page.
    plugins = af.api("GET", "/plugins").json()["plugins"]
    (flex,) = [p for p in plugins if p["name"] == "flex"]
    assert {v["url_route"]: v["destination"] for v in flex["external_views"]} == {
        "flex": "task_instance",
        "flex-savings": "nav",
    }
    assert af.api("GET", "/plugins/importErrors").json()["total_entries"] == 0

    live_run = af.trigger_dag(LIVE_DAG)
    open_run = af.trigger_dag(OPEN_DAG)
    live_path = f"/flex/api/runs/{LIVE_DAG}/{live_run}/enrich"

    # While deferred: the numbers move, some items are in flight, an ETA is known.
    af.wait_for_task_state(LIVE_DAG, live_run, "enrich", "deferred", timeout=90)
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        response = call(af, live_path, admin)
        assert response.status_code == 200, response.text
        answers.append(response)
        state = response.json()
        seen.append(state)
        if (
            state["state"] == "deferred"
            and state["status"] == "running"
            and 0 < state["done"] < state["total"]
            and state["in_flight"] > 0
            and state["eta_s"]
        ):
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"never saw the run mid-way: {[(s['status'], s.get('done')) for s in seen]}")
    assert state["total"] == LIVE_ITEMS and state["eta_at"] and state["throughput_per_min"] > 0
    assert state["try_number"] == 1 and state["operator"] == "FlexLLMOperator"
    assert len(state["series"]) >= 1 and state["finished"] is False

    # The outsider may not read that DAG: refused on both endpoints, absent from the list.
    assert call(af, live_path, outsider).status_code == 403
    assert call(af, "/flex/api/runs", outsider, dag_id=LIVE_DAG).status_code == 403
    # No token, or a bad one: refused.
    for path in (live_path, "/flex/api/runs"):
        assert call(af, path, None).status_code in (401, 403)
        assert call(af, path, "not-a-jwt").status_code in (401, 403)
        assert call(af, path, admin[:-4] + "AAAA").status_code in (401, 403)  # a forged signature

    # After the end: the numbers are the manifest's and the emulator's.
    assert af.wait_for_run(LIVE_DAG, live_run, timeout=120) == "success"
    assert af.wait_for_run(OPEN_DAG, open_run, timeout=60) == "success"
    manifest = json.loads((af.out / "live" / live_run / "_manifest.json").read_text())  # type: ignore[attr-defined]
    final = call(af, live_path, admin)
    answers.append(final)
    done = final.json()
    assert done["status"] == "finished" and done["state"] == "success" and done["in_flight"] == 0
    assert done["total"] == done["done"] == done["succeeded"] == manifest["succeeded"] == LIVE_ITEMS
    assert done["requests"] == manifest["requests"] == emu.stats()["requests"] - OPEN_ITEMS
    assert done["cost"]["actual"] == pytest.approx(manifest["cost_usd"]["actual"])
    assert done["cost"]["standard_equivalent"] == pytest.approx(manifest["cost_usd"]["standard_equivalent"])
    assert done["tiers"] == manifest["tiers"] == {"flex": LIVE_ITEMS} and done["eta_s"] is None

    listed = call(af, "/flex/api/runs", admin)
    answers.append(listed)
    rows = {(r["dag_id"], r["run_id"]): r for r in listed.json()["runs"]}
    row = rows[(LIVE_DAG, live_run)]
    assert row["items"] == row["succeeded"] == LIVE_ITEMS and row["failed"] == 0 and row["task_id"] == "enrich"
    assert row["cost"]["actual"] == pytest.approx(manifest["cost_usd"]["actual"], abs=1e-6)
    assert row["tiers"] == {"flex": LIVE_ITEMS} and row["model"] == "gpt-5-mini" and row["date"]
    assert (OPEN_DAG, open_run) in rows

    outsider_list = call(af, "/flex/api/runs", outsider)
    answers.append(outsider_list)
    assert outsider_list.status_code == 200
    assert {r["dag_id"] for r in outsider_list.json()["runs"]} == {OPEN_DAG}
    assert call(af, f"/flex/api/runs/{OPEN_DAG}/{open_run}/enrich", outsider).json()["succeeded"] == OPEN_ITEMS

    # The pages and their scripts, as the browser loads them (no auth: they hold no data).
    for path in ("/flex/ui/task", "/flex/ui/savings", "/flex/static/common.js", "/flex/static/task.js"):
        page = af.http.get(path)
        assert page.status_code == 200, path
        answers.append(page)

    # Nothing private anywhere: no key, no prompt, no model output.
    outputs = [
        json.loads(line)["output"]
        for part in sorted((af.out / "live" / live_run).glob("part-*.jsonl"))  # type: ignore[attr-defined]
        for line in part.read_text().splitlines()
    ]
    assert len(outputs) == LIVE_ITEMS and all(isinstance(o, str) and len(o) > 20 for o in outputs)
    for response in answers:
        text = response.text
        assert API_KEY not in text and PROMPT_WORD not in text
        assert not any(output[:40] in text for output in outputs)
