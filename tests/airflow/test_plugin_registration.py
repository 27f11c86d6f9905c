"""The Flex UI plugin is found by Airflow exactly once, however providers are discovered, and loading
it costs the processes that do not serve it (scheduler, triggerer, every task run) nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points

import pytest

from flex_provider import get_provider_info
from flex_provider.plugins import FlexPlugin
from flex_provider.plugins.lazy_app import LazyApp
from flex_provider.plugins.views import base_path, external_views

_LOAD_BOTH_WAYS = """
import json
from airflow import plugins_manager as core
from airflow.sdk import plugins_manager as sdk
out = {}
for name, manager in (("core", core), ("sdk", sdk)):
    plugins, errors = manager._get_plugins()
    out[name] = {"flex": [type(p).__name__ if not isinstance(p, type) else p.__name__ for p in plugins if p.name == "flex"],
                 "errors": {k: v for k, v in errors.items() if "flex" in (k + v).lower()}}
print(json.dumps(out))
"""


def _ours() -> list[object]:
    return [ep for ep in entry_points(group="airflow.plugins") if ep.value.startswith("flex_provider.")]


def test_entry_point_gives_the_plugin_unless_provider_info_plugins_are_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow import settings

    (ep,) = _ours()
    assert ep.name == "flex"  # type: ignore[attr-defined]
    monkeypatch.setattr(settings, "LAZY_LOAD_PROVIDERS", True)
    assert ep.load() is FlexPlugin  # type: ignore[attr-defined]
    monkeypatch.setattr(settings, "LAZY_LOAD_PROVIDERS", False)
    assert ep.load() is None  # type: ignore[attr-defined]  # provider info registers it instead


def test_provider_info_names_a_valid_plugin_class() -> None:
    from airflow._shared.module_loading import import_string
    from airflow.plugins_manager import is_valid_plugin

    (entry,) = get_provider_info()["plugins"]
    assert entry == {"name": "flex", "plugin-class": "flex_provider.plugins.FlexPlugin"}
    assert import_string(entry["plugin-class"]) is FlexPlugin
    assert is_valid_plugin(FlexPlugin) and FlexPlugin.name == entry["name"]


@pytest.mark.parametrize("lazy", ["True", "False"])
def test_airflow_registers_it_once_without_errors(lazy: str, tmp_path) -> None:
    """Both of Airflow's plugin managers (the api-server's and the task runner's), with provider
    discovery lazy (the default: entry point only) and eager (entry point and provider info).
    Run outside the checkout: with the repository root on ``sys.path`` (``python -c`` there, or
    pytest's rootdir), its in-tree ``*.egg-info`` makes every entry point of the package appear twice."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")}
    env.update(AIRFLOW_HOME=str(tmp_path), AIRFLOW__CORE__LAZY_DISCOVER_PROVIDERS=lazy)
    env["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    done = subprocess.run(
        [sys.executable, "-c", _LOAD_BOTH_WAYS],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    for manager in ("core", "sdk"):
        assert len(found[manager]["flex"]) == 1, (manager, found)
        assert found[manager]["errors"] == {}, (manager, found)


def test_importing_the_plugin_does_not_build_its_app() -> None:
    """Every Airflow process imports entry-point plugins: the FastAPI app, Airflow's API security
    module and the engine stay unimported until the api-server serves a request."""
    code = (
        "import sys, flex_provider.plugins as p; "
        "p.FlexPlugin.fastapi_apps[0]['app']; "
        "heavy = [m for m in ('flex_provider.plugins.app', 'flex_provider.plugins.api', "
        "'airflow.api_fastapi.core_api.security', 'flex_provider.engine.runner', 'openai') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]


def test_building_the_app_imports_neither_the_engine_nor_openai() -> None:
    """The api-server builds the app on its first request to /flex: quick, so it stays quick. The
    engine's store and the openai SDK are imported by the first live-state read, in its thread."""
    code = (
        "import sys; from flex_provider.plugins.app import create_app; create_app(); "
        "heavy = [m for m in ('openai', 'flex_provider.engine.store', 'flex_provider.utils.storage') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]


def test_fastapi_app_and_views() -> None:
    (app,) = FlexPlugin.fastapi_apps
    assert app["url_prefix"] == "/flex" and app["name"] == "flex" and isinstance(app["app"], LazyApp)
    tab, page = FlexPlugin.external_views
    assert tab == {
        "name": "Flex",
        "href": "/flex/ui/task?dag_id={DAG_ID}&run_id={RUN_ID}&task_id={TASK_ID}&map_index={MAP_INDEX}",
        "destination": "task_instance",
        "url_route": "flex",
    }
    assert page["name"] == "Flex" and page["destination"] == "nav" and page["url_route"] == "flex-savings"
    assert page["href"] == "/flex/ui/savings" and page["icon"] == "/flex/static/icon.svg"


def test_views_follow_airflows_base_path() -> None:
    """The UI puts the href as it is into the iframe: behind https://host/airflow it must carry /airflow."""
    assert base_path("") == base_path("http://127.0.0.1:8080") == base_path("http://h:8080/") == ""
    assert base_path("https://example.com/airflow/") == "/airflow"
    tab, page = external_views("https://example.com/team/airflow")
    assert tab["href"].startswith("/team/airflow/flex/ui/task?dag_id={DAG_ID}&")
    assert page["href"] == "/team/airflow/flex/ui/savings"


def test_lazy_app_builds_once() -> None:
    calls: list[int] = []

    async def fake_app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        calls.append(1)

    import types

    module = types.ModuleType("flex_test_lazy_factory")
    built: list[int] = []

    def factory():  # type: ignore[no-untyped-def]
        built.append(1)
        return fake_app

    module.factory = factory  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    try:
        lazy = LazyApp("flex_test_lazy_factory:factory")
        assert built == []
        import asyncio

        for _ in range(3):
            asyncio.run(lazy({"type": "http"}, None, None))  # type: ignore[arg-type]
        assert built == [1] and calls == [1, 1, 1]
    finally:
        del sys.modules[module.__name__]
    with pytest.raises(ValueError):
        LazyApp("no_colon_here")
