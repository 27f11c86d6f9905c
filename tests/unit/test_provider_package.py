from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points

import flex_provider
from flex_provider import get_provider_info


def test_provider_info():
    info = get_provider_info()
    assert info["package-name"] == "airflow-provider-openai-flex"
    assert info["name"] == "OpenAI Flex"
    assert info["versions"] == [flex_provider.__version__]
    (conn_type,) = info["connection-types"]
    assert conn_type["connection-type"] == "openai_flex"
    assert conn_type["hook-class-name"] == "flex_provider.hooks.flex.FlexHook"
    assert conn_type["ui-field-behaviour"]["relabeling"] == {"password": "API key", "host": "Base URL"}
    assert set(conn_type["conn-fields"]) == {"organization", "project"}


def test_provider_info_names_the_readme_as_documentation_and_fits_airflows_schema():
    import json
    from pathlib import Path

    import airflow
    import jsonschema

    info = get_provider_info()
    assert info["documentation-url"] == "https://github.com/flex-provider/airflow-provider-openai-flex#readme"
    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    jsonschema.validate(info, schema)


def test_providers_manager_reports_the_readme_as_documentation():
    """Admin > Providers links to the README: Airflow takes the distribution's Documentation URL
    (pyproject [project.urls]) over provider info's documentation-url."""
    from airflow.providers_manager import ProvidersManager

    provider = ProvidersManager().providers["airflow-provider-openai-flex"]
    assert provider.data["documentation-url"] == get_provider_info()["documentation-url"]


def test_entry_point_registered():
    ours = [ep for ep in entry_points(group="apache_airflow_provider") if ep.value == "flex_provider:get_provider_info"]
    assert len(ours) == 1
    assert ours[0].load() is get_provider_info


def test_engine_public_api():
    import flex_provider.engine as engine

    assert set(engine.__all__) == {
        "FlexEngine",
        "FlexInputError",
        "FlexRunAborted",
        "PromptBuilder",
        "RequestSpec",
        "ResultStore",
        "RetryPolicy",
        "RunOptions",
        "Verdict",
        "WorkItem",
        "classify",
    }
    assert all(hasattr(engine, name) for name in engine.__all__)


def test_engine_does_not_import_airflow():
    code = (
        "import flex_provider.engine, sys; "
        "bad = sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')); "
        "assert not bad, bad"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_wheel_carries_the_plugins_pages(tmp_path):
    """An editable install serves the pages from the checkout; a wheel must carry them itself, or the
    Flex tab answers 500 on every real deployment (setuptools packages only .py files by default)."""
    import zipfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(root)],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    pages = {p.name for p in (root / "flex_provider" / "plugins" / "static").iterdir()}
    assert pages >= {"task.html", "task.js", "savings.html", "savings.js"}
    assert {f"flex_provider/plugins/static/{name}" for name in pages} <= names
