"""Browser tests of the Flex UI: a real Airflow (tests/e2e/harness.py), the emulator, headless Chromium.

They need Debian's ``chromium`` and ``chromedriver`` (``make browser`` installs them) and take a few
minutes, so they run through ``make test-ui`` only: it sets ``FLEX_UI_TESTS=1``; without it every
``ui`` test is skipped (``make test`` also deselects the marker). With ``FLEX_UI_TESTS=1`` a missing
browser is an error, not a skip: CI must not pass by testing nothing.

Artifacts (screenshots, the page's HTML on failure) go to ``.artifacts/ui/`` or ``$FLEX_UI_ARTIFACTS``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# The e2e folder is deliberately not a package (see tests/e2e/conftest.py): import its harness by path.
_E2E = str(Path(__file__).resolve().parent.parent / "e2e")
if _E2E not in sys.path:
    sys.path.insert(0, _E2E)

from harness import AirflowCluster  # noqa: E402
from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402

from flex_provider.emulator import EmulatorConfig, EmulatorServer, serve_in_thread  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ENABLE_VAR = "FLEX_UI_TESTS"
CHROMIUM = Path(os.environ.get("FLEX_UI_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("FLEX_UI_CHROMEDRIVER", "/usr/bin/chromedriver"))
ARTIFACTS = Path(os.environ.get("FLEX_UI_ARTIFACTS") or ROOT / ".artifacts" / "ui")
API_KEY = "sk-ui-SECRET-7c1e5a9b3d2f4e6a8b"
PASSWORD = "ui-test-Pw-41c9"
DAG_ID = "flex_nightly_enrichment"  # the example DAG, copied unchanged into the cluster's dags folder
WINDOW = (1440, 1000)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip browser tests unless ``make test-ui`` asked for them (``FLEX_UI_TESTS=1``)."""
    if os.environ.get(ENABLE_VAR) == "1":
        return
    skip = pytest.mark.skip(reason=f"browser test: run `make test-ui` (sets {ENABLE_VAR}=1)")
    for item in items:
        if item.get_closest_marker("ui") is not None:
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    """Remember each phase's report on the item, and on a failure save what the browser showed."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
    if report.failed and report.when == "call" and _ACTIVE_DRIVERS:
        save_failure_artifacts(_ACTIVE_DRIVERS[-1], item.name)


_ACTIVE_DRIVERS: list[WebDriver] = []


def save_failure_artifacts(driver: WebDriver, name: str) -> None:
    """Screenshot and HTML of the top page and of the frame the test was in (best effort)."""
    folder = ARTIFACTS / "failures"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        (folder / f"{name}.frame.html").write_text(driver.page_source)
        driver.switch_to.default_content()
        driver.save_screenshot(str(folder / f"{name}.png"))
        (folder / f"{name}.html").write_text(driver.page_source)
        sys.stderr.write(f"\nbrowser artifacts of the failure: {folder}/{name}.*\n")
    except WebDriverException as exc:
        sys.stderr.write(f"\ncould not save browser artifacts: {exc!r}\n")


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """The artifacts folder, emptied once per session."""
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    return ARTIFACTS


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorServer]:
    """The emulator, slow and with some 429 resource_unavailable (tests change its knobs as they go)."""
    config = EmulatorConfig(api_key=API_KEY, latency_s=0.05, unavailable_rate=0.15, retry_after_s=0.5, seed=11)
    with serve_in_thread(config) as server:
        yield server


@pytest.fixture(scope="module")
def af(
    emu: EmulatorServer, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[AirflowCluster]:
    """A real Airflow (api-server, scheduler, dag-processor, triggerer; SQLite) running the example
    nightly DAG unchanged, its ``openai_default`` connection pointed at the emulator."""
    base = tmp_path_factory.mktemp("flex-ui")
    dags = base / "dags"
    dags.mkdir()
    shutil.copy(ROOT / "dags" / "flex_nightly_enrichment.py", dags)
    conn = {"conn_type": "openai_flex", "password": API_KEY, "host": emu.base_url}
    env = {
        "AIRFLOW_CONN_OPENAI_DEFAULT": json.dumps(conn),
        "FLEX_DEMO_INPUT": (ROOT / "dags" / "data" / "support_tickets.jsonl").as_uri(),
        "FLEX_DEMO_OUTPUT_ROOT": (base / "results").as_uri(),
        "FLEX_PROVIDER_CHECKPOINT_ROOT": (base / "checkpoints").as_uri(),
        # Only the runs the tests create: no scheduled run of the @daily DAG beside them.
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
    }
    cluster = AirflowCluster(home=base / "home", dags_folder=dags, env=env, password=PASSWORD)
    cluster.results = base / "results"  # type: ignore[attr-defined]
    try:
        cluster.start(wait_for_dags=[DAG_ID])
        yield cluster
    finally:
        failed = any(
            getattr(getattr(item, f"rep_{when}", None), "failed", False)
            for item in request.session.items
            if item.module is request.module
            for when in ("setup", "call")
        )
        if failed:
            sys.stderr.write(f"\n===== Airflow diagnostics =====\n{cluster.diagnostics()}\n")
        cluster.stop()


@pytest.fixture(scope="module")
def browser(artifacts: Path) -> Iterator[WebDriver]:
    """Headless Chromium driven through chromedriver (Debian's packages; nothing is downloaded)."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: `make browser` installs Debian's chromium and chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",  # the tests run as root in a container
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--lang=en-US",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(60)
    _ACTIVE_DRIVERS.append(driver)
    try:
        yield driver
    finally:
        _ACTIVE_DRIVERS.remove(driver)
        driver.quit()
