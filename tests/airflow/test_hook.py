"""FlexHook and provider registration: connections -> client settings, the key never in repr."""

from __future__ import annotations

import asyncio
import json

import pytest
from airflow.sdk.exceptions import AirflowException

from flex_provider.hooks.flex import FlexHook


def test_provider_registers_connection_type_with_ui_fields() -> None:
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    assert "airflow-provider-openai-flex" in manager.providers
    assert manager.hooks["openai_flex"].hook_class_name == "flex_provider.hooks.flex.FlexHook"
    behaviour = manager.field_behaviours["openai_flex"]
    assert behaviour["relabeling"] == {"password": "API key", "host": "Base URL"}
    assert {"extra__openai_flex__organization", "extra__openai_flex__project"} <= set(manager.connection_form_widgets)


def test_settings_from_connection_with_extras(monkeypatch) -> None:
    conn = {
        "conn_type": "openai_flex", "password": "sk-conn-key", "host": "localhost", "port": 8089,
        "extra": {"organization": "org-1", "extra__openai_flex__project": "proj-2"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_MY_FLEX", json.dumps(conn))
    settings = FlexHook("my_flex").get_settings()
    assert settings.api_key == "sk-conn-key"
    assert settings.base_url == "https://localhost:8089"
    assert (settings.organization, settings.project) == ("org-1", "proj-2")
    assert "sk-conn-key" not in repr(settings)
    assert asyncio.run(FlexHook("my_flex").aget_settings()) == settings


def test_environment_fallback_and_missing_key(monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/v1")
    settings = FlexHook("absent_conn").get_settings()
    assert (settings.api_key, settings.base_url) == ("sk-env", "http://127.0.0.1:1/v1")
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(AirflowException, match="AIRFLOW_CONN_ABSENT_CONN"):
        FlexHook("absent_conn").get_settings()


def test_client_never_retries_by_itself() -> None:
    from flex_provider.hooks.flex import ClientSettings

    client = FlexHook.build_client(ClientSettings("sk-x", "http://127.0.0.1:1/v1"), timeout=900)
    assert client.max_retries == 0 and client.timeout.read == 900
