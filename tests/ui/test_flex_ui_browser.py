"""The Flex UI in a real browser, used as a person would: headless Chromium logs in through Airflow's
own login page, opens the task-instance page of the example nightly DAG's deferred flex task, clicks
the "Flex" tab and reads it while a real triggerer works the run against the emulator; then checks the
finished page against the emulator's own statistics and the run's manifest, and opens the "Flex"
savings page from the navigation.

Timeline (one Airflow, one emulator, one browser for the whole module; ~2-3 minutes):
two earlier nights run fast (history for the savings page), then tonight's run with slow answers
(5 s each, 15% 429 resource_unavailable) is watched while deferred; once the page has shown progress,
the emulator answers fast again and the run ends.

The tests run in file order and share the run: each one is a stage of the same visit.
Screenshots: ``.artifacts/ui/flex-tab-running.png``, ``flex-tab-finished.png``, ``flex-savings.png``
(``make screenshots`` copies them to docs/img for the README).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import pytest
from harness import AirflowCluster
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from flex_provider.emulator import EmulatorServer

pytestmark = pytest.mark.ui

ROOT = Path(__file__).resolve().parents[2]
DAG_ID = "flex_nightly_enrichment"  # the example DAG, unchanged (conftest.py starts Airflow with it)
TASK_ID = "enrich_tickets"
CORPUS = ROOT / "dags" / "data" / "support_tickets.jsonl"
ITEMS = 262  # tickets in the corpus: tonight's run
HISTORY_SIZES = (120, 200)  # tickets of the two nights before
SLOW = {"latency_s": 5.0, "latency_jitter": 0.3, "unavailable_rate": 0.15, "retry_after_s": 1.0}
FAST = {"latency_s": 0.05, "latency_jitter": 0.5}

# One atomic read of every hook of the tab (a render never interleaves with a script call).
TAB_SNAPSHOT_JS = """
const q = (s) => document.querySelector(s);
const bar = q('#flex-progress'), eta = q('#flex-eta');
const counters = {};
document.querySelectorAll('[data-counter]').forEach((n) => { counters[n.dataset.counter] = Number(n.dataset.value); });
const cost = {};
for (const k of ['actual', 'standard', 'saved']) cost[k] = Number(q('#flex-cost-' + k).dataset.value);
const charts = {};
for (const id of ['flex-chart-progress', 'flex-chart-429', 'flex-chart-tiers'])
  charts[id] = document.querySelectorAll('svg#' + id + ' .series').length;
const err = q('#flex-error');
return {
  loaded: document.body.dataset.loaded === '1',
  run_status: document.body.dataset.status || null,
  state: q('#flex-status').dataset.state || null,
  done: bar.dataset.done === '' ? null : Number(bar.dataset.done),
  total: bar.dataset.total === '' ? null : Number(bar.dataset.total),
  eta_text: eta.textContent.trim(),
  eta_s: eta.dataset.etaS === '' ? null : Number(eta.dataset.etaS),
  counters, cost, charts,
  failure_rows: document.querySelectorAll('table#flex-failures tr[data-failure-id]').length,
  error: err.hidden ? '' : err.textContent.trim(),
  updated: q('#flex-updated').dataset.at || '',
};
"""

SAVINGS_SNAPSHOT_JS = """
const q = (s) => document.querySelector(s);
const err = q('#flex-error');
return {
  loaded: document.body.dataset.loaded === '1',
  bars: [...document.querySelectorAll('svg#flex-chart-savings rect.bar')].map((b) => ({
    night: b.dataset.night, dag_id: b.dataset.dagId, saved: Number(b.dataset.saved),
    spent: Number(b.dataset.spent), height: Number(b.getAttribute('height')) })),
  saved: Number(q('#flex-total-saved').dataset.value),
  spent: Number(q('#flex-total-spent').dataset.value),
  saved_text: q('#flex-total-saved').textContent.trim(),
  spent_text: q('#flex-total-spent').textContent.trim(),
  run_ids: [...document.querySelectorAll('table#flex-runs tr[data-run-id]')].map((r) => r.dataset.runId),
  error: err.hidden ? '' : err.textContent.trim(),
};
"""


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------
T = TypeVar("T")


def wait_until(what: str, probe: Callable[[], T | None], timeout: float, interval: float = 0.5) -> T:
    """Poll until ``probe`` returns something truthy; fail with ``what`` (and the last value) at timeout."""
    deadline = time.monotonic() + timeout
    value: T | None = None
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last value: {value!r})")
        time.sleep(interval)


def follow_nav_link(browser: WebDriver, selector: str, path: str, attempts: int = 3) -> None:
    """Click the navigation's link and wait for the route. The nav bar is re-rendered while the
    previous page still refreshes, so a click can land on an element that is being replaced (it
    then does nothing): find the link again and click again, the last time through the DOM."""
    for attempt in range(1, attempts + 1):
        nav = visible(browser, (By.CSS_SELECTOR, selector))
        try:
            if attempt < attempts:
                nav.click()
            else:
                browser.execute_script("arguments[0].click()", nav)
            wait_until(f"the route {path}", lambda: urlsplit(browser.current_url).path == path, 10)
            return
        except (AssertionError, WebDriverException):
            if attempt == attempts:
                raise


def ti_url(af: AirflowCluster, run_id: str) -> str:
    """The task-instance page of Airflow 3.3's UI: /dags/{dag_id}/runs/{run_id}/tasks/{task_id}."""
    return f"{af.base_url}/dags/{DAG_ID}/runs/{quote(run_id, safe='')}/tasks/{TASK_ID}"


def manifest(af: AirflowCluster, run_id: str) -> dict[str, Any]:
    """The run's ``_manifest.json``, found where the task's summary XCom says its results are."""
    output = af.xcom(DAG_ID, run_id, TASK_ID)["output_path"]
    return json.loads((Path(urlsplit(output).path) / "_manifest.json").read_text())


def trigger(af: AirflowCluster, logical_date: datetime | None) -> str:
    body = {"logical_date": logical_date.isoformat() if logical_date else None, "conf": {}}
    return str(af.api("POST", f"/dags/{DAG_ID}/dagRuns", json_body=body).json()["dag_run_id"])


def visible(driver: WebDriver, locator: tuple[str, str], timeout: float = 60) -> WebElement:
    element: WebElement = WebDriverWait(driver, timeout).until(ec.visibility_of_element_located(locator))
    return element


def enter_plugin_frame(driver: WebDriver, src_part: str) -> None:
    """Switch into the iframe Airflow renders an external view in (its src is the plugin's href)."""
    frame = visible(driver, (By.CSS_SELECTOR, f"iframe[src*='{src_part}']"))
    driver.switch_to.frame(frame)
    WebDriverWait(driver, 60).until(lambda d: d.execute_script("return document.body.dataset.loaded === '1'"))


def screenshot(driver: WebDriver, artifacts: Path, name: str, height: int | None = None) -> Path:
    """A screenshot of the whole window (Airflow's UI around the plugin's frame), taller if asked."""
    driver.switch_to.default_content()
    size = driver.get_window_size()
    if height:
        driver.set_window_size(size["width"], height)
        time.sleep(1)  # let the UI and the frame lay out again
    path = artifacts / f"{name}.png"
    assert driver.save_screenshot(str(path)), path
    driver.set_window_size(size["width"], size["height"])
    return path


def close(a: float, b: float, tol: float = 1e-6) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=tol)


# --------------------------------------------------------------------------------------------------
# the scenario's shared state
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def history(af: AirflowCluster, emu: EmulatorServer, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Earlier nights with fewer tickets, run fast, so that the savings page has a history to chart.

    Each night reads its own slice of the corpus through the DAG's ``flex_demo_input`` Variable
    (removed again before tonight's run, which reads the whole bundled file)."""
    emu.update(**FAST)
    af.unpause(DAG_ID)
    tickets = CORPUS.read_text().splitlines(keepends=True)
    folder = tmp_path_factory.mktemp("history-input")
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    run_ids = []
    for nights_ago, size in zip(range(len(HISTORY_SIZES), 0, -1), HISTORY_SIZES, strict=True):
        path = folder / f"{size}.jsonl"
        path.write_text("".join(tickets[:size]))
        af.api("POST", "/variables", json_body={"key": "flex_demo_input", "value": path.as_uri()}, expect=201)
        run_id = trigger(af, today - timedelta(days=nights_ago))
        assert af.wait_for_run(DAG_ID, run_id, timeout=150) == "success"  # the Variable is read at task start
        af.api("DELETE", "/variables/flex_demo_input", expect=204)
        assert af.xcom(DAG_ID, run_id, TASK_ID)["total"] == size
        run_ids.append(run_id)
    return run_ids


@pytest.fixture(scope="module")
def tonight(af: AirflowCluster, emu: EmulatorServer, history: list[str]) -> str:
    """Tonight's run, slow, with its flex task deferred to the triggerer (emulator stats start at 0)."""
    emu.update(**SLOW)
    emu.reset()
    run_id = trigger(af, None)
    af.wait_for_task_state(DAG_ID, run_id, TASK_ID, "deferred", timeout=120)
    return run_id


# --------------------------------------------------------------------------------------------------
# the visit
# --------------------------------------------------------------------------------------------------
def test_login_through_airflow_login_page_lands_on_the_deferred_task(
    af: AirflowCluster, tonight: str, browser: WebDriver
) -> None:
    browser.get(ti_url(af, tonight))
    wait_until("the redirect to the login page", lambda: urlsplit(browser.current_url).path == "/auth/login", 60)
    visible(browser, (By.NAME, "username")).send_keys(af.username)
    browser.find_element(By.NAME, "password").send_keys(af.password)
    browser.find_element(By.CSS_SELECTOR, "button[type='submit']").click()
    wait_until("the task-instance page after login", lambda: browser.current_url.rstrip("/") == ti_url(af, tonight), 60)
    assert browser.get_cookie("_token"), "no session cookie after logging in"
    # Airflow's own header of the task instance: its name and the Deferred badge.
    visible(browser, (By.XPATH, f"//*[normalize-space()='{TASK_ID}']"))
    visible(browser, (By.XPATH, "//*[normalize-space()='Deferred']"))


def test_flex_tab_fills_in_while_the_task_is_deferred(
    af: AirflowCluster, emu: EmulatorServer, tonight: str, browser: WebDriver, artifacts: Path
) -> None:
    tab = visible(browser, (By.CSS_SELECTOR, f"a[href$='/tasks/{TASK_ID}/plugin/flex']"))
    assert tab.text.strip() == "Flex"
    tab.click()
    wait_until("the Flex tab's route", lambda: browser.current_url.endswith(f"/tasks/{TASK_ID}/plugin/flex"), 30)
    enter_plugin_frame(browser, "/flex/ui/task")

    def progressing() -> dict[str, Any] | None:
        snap: dict[str, Any] = browser.execute_script(TAB_SNAPSHOT_JS)
        ok = (
            snap["state"] == "deferred"
            and snap["total"] == ITEMS
            and snap["done"] is not None
            and 0 < snap["done"] < ITEMS
            and snap["counters"]["in_flight"] > 0
            and snap["eta_s"] is not None
            and snap["eta_text"].startswith("ETA ")
            and snap["charts"]["flex-chart-progress"] >= 1
        )
        return snap if ok else None

    snap = wait_until("the tab to show a run in progress with an ETA", progressing, 90, interval=1.0)
    assert snap["error"] == ""
    assert snap["run_status"] == "running"
    # The page never counts more than the server saw (it reads checkpoints, which lag behind); the
    # server counts a request when it answers it, so add what it is still working on.
    stats = emu.stats()
    assert snap["counters"]["requests"] <= stats["requests"] + stats["in_flight"]
    assert snap["counters"]["unavailable"] <= stats["by_error_code"].get("resource_unavailable", 0)
    assert snap["counters"]["succeeded"] + snap["counters"]["failed"] == snap["done"]
    assert af.task_instance(DAG_ID, tonight, TASK_ID)["state"] == "deferred"
    # It keeps refreshing by itself: later renders show more done (the screenshot at about a quarter).
    first_done = snap["done"]
    later = wait_until(
        "refreshes showing more items done",
        lambda: (
            s if (s := browser.execute_script(TAB_SNAPSHOT_JS))["done"] >= max(first_done + 1, ITEMS // 4) else None
        ),
        60,
    )
    assert later["state"] == "deferred" and later["done"] < ITEMS
    screenshot(browser, artifacts, "flex-tab-running", height=1500)


def test_flex_tab_after_the_run_matches_the_emulator_and_the_manifest(
    af: AirflowCluster, emu: EmulatorServer, tonight: str, browser: WebDriver, artifacts: Path
) -> None:
    emu.update(**FAST)  # the page has shown the run in progress: let it finish
    assert af.wait_for_run(DAG_ID, tonight, timeout=150) == "success"
    enter_plugin_frame(browser, "/flex/ui/task")

    def finished() -> dict[str, Any] | None:
        snap: dict[str, Any] = browser.execute_script(TAB_SNAPSHOT_JS)
        return snap if snap["state"] == "success" and snap["run_status"] == "finished" else None

    snap = wait_until("the tab to show the finished run", finished, 60, interval=1.0)
    stats = emu.stats()
    man = manifest(af, tonight)
    counters = snap["counters"]
    fallback_requests = sum(n for tier, n in stats["by_tier"].items() if tier != "flex")
    seen = {
        "requests": counters["requests"],
        "unavailable": counters["unavailable"],
        "rate_limited": counters["rate_limited"],
        "fallback tier requests": counters["fallbacks"],
        "done": snap["done"],
        "succeeded": counters["succeeded"],
        "failed": counters["failed"],
        "in_flight": counters["in_flight"],
    }
    expected = {
        "requests": stats["requests"],
        "unavailable": stats["by_error_code"].get("resource_unavailable", 0),
        "rate_limited": stats["by_error_code"].get("rate_limit_exceeded", 0),
        "fallback tier requests": fallback_requests,
        "done": ITEMS,
        "succeeded": man["succeeded"],
        "failed": man["failed"],
        "in_flight": 0,
    }
    assert seen == expected
    assert expected["unavailable"] > 0  # the 429 counter was really exercised
    assert snap["total"] == man["total"] == ITEMS
    assert snap["eta_text"] == "Finished"
    cost = man["cost_usd"]
    assert close(snap["cost"]["actual"], cost["actual"]), (snap["cost"], cost)
    assert close(snap["cost"]["standard"], cost["standard_equivalent"]), (snap["cost"], cost)
    assert close(snap["cost"]["saved"], cost["saved"]), (snap["cost"], cost)
    assert 0 < snap["cost"]["actual"] < snap["cost"]["standard"]
    assert all(n >= 1 for n in snap["charts"].values()), snap["charts"]
    if man["failed"]:
        assert 0 < snap["failure_rows"] <= man["failed"]
    else:
        assert snap["failure_rows"] == 0
    assert snap["error"] == ""
    # What the browser got holds no key and no ticket text.
    page = browser.page_source
    first_ticket = json.loads(CORPUS.read_text().splitlines()[0])
    assert emu.config.api_key not in page
    assert first_ticket["subject"] not in page and first_ticket["text"][:40] not in page
    screenshot(browser, artifacts, "flex-tab-finished", height=1500)
    print(  # figures for the record (pytest -rP shows them)
        f"finished tab: requests {counters['requests']}, 429 unavailable {counters['unavailable']}, "
        f"fallbacks {counters['fallbacks']}, succeeded {counters['succeeded']}, failed {counters['failed']}, "
        f"cost ${snap['cost']['actual']:.4f} vs ${snap['cost']['standard']:.4f} standard"
    )


def test_savings_page_from_the_navigation(
    af: AirflowCluster, history: list[str], tonight: str, browser: WebDriver, artifacts: Path
) -> None:
    browser.switch_to.default_content()
    follow_nav_link(browser, "a[href$='/plugin/flex-savings']", "/plugin/flex-savings")
    enter_plugin_frame(browser, "/flex/ui/savings")
    runs = [*history, tonight]
    manifests = [manifest(af, run_id) for run_id in runs]

    def listed() -> dict[str, Any] | None:
        snap: dict[str, Any] = browser.execute_script(SAVINGS_SNAPSHOT_JS)
        return snap if len(snap["run_ids"]) >= len(runs) else None

    snap = wait_until("every run in the savings table", listed, 30)
    assert snap["error"] == ""
    assert sorted(snap["run_ids"]) == sorted(runs)
    assert len(snap["bars"]) == len({b["night"] for b in snap["bars"]}) == len(runs)  # a bar per night (one DAG)
    assert all(b["height"] > 0 and b["dag_id"] == DAG_ID for b in snap["bars"])
    # Taller bars for bigger nights: the chart is drawn from the runs' own costs.
    by_night = sorted(snap["bars"], key=lambda b: b["night"])
    assert all(close(b["saved"], m["cost_usd"]["saved"]) for b, m in zip(by_night, manifests, strict=True)), by_night
    assert by_night[0]["height"] < by_night[1]["height"] < by_night[2]["height"]
    assert close(snap["saved"], sum(m["cost_usd"]["saved"] for m in manifests))
    assert close(snap["spent"], sum(m["cost_usd"]["actual"] for m in manifests))
    assert snap["saved"] > 0 and snap["saved_text"].startswith("$")
    screenshot(browser, artifacts, "flex-savings", height=1100)
    print(f"savings page: {len(snap['bars'])} bars, spent ${snap['spent']:.4f}, saved ${snap['saved']:.4f}")
