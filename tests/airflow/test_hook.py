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
        "conn_type": "openai_flex",
        "password": "sk-conn-key",
        "host": "localhost",
        "port": 8089,
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


# -- test_connection never shows the key, whatever its shape -----------------------------------

CUSTOM_KEY = "mykey-1234567890abcdef"


def test_test_connection_redacts_a_custom_shaped_key_echoed_by_the_server(emu, monkeypatch) -> None:
    from flex_provider.emulator.errors import mask_key

    conn = {"conn_type": "openai_flex", "password": CUSTOM_KEY, "host": emu.base_url}
    monkeypatch.setenv("AIRFLOW_CONN_CUSTOM_KEY", json.dumps(conn))
    ok, message = FlexHook("custom_key").test_connection()  # the emulator wants another key: 401
    assert not ok
    assert emu.stats()["auth_failures"] == 1
    assert "Incorrect API key provided" in message and "401" in message  # still says what is wrong
    for fragment in (CUSTOM_KEY, mask_key(CUSTOM_KEY), "myk", "cdef", "1234567890"):
        assert fragment not in message, (fragment, message)


def test_test_connection_works_with_the_right_key(emu) -> None:
    from tests.airflow.conftest import CONN_ID

    ok, message = FlexHook(CONN_ID).test_connection()
    assert ok and message.startswith("Connection works")


@pytest.mark.parametrize(
    "text",
    [
        "Incorrect API key provided: myk***************cdef.",
        "key mykey-1234567890abcdef rejected",
        "key myk...cdef rejected",
        "key mykey-12345678 (truncated) rejected",
        "key ****cdef rejected",
        "key mykey-*** rejected",
    ],
)
def test_redact_key_removes_full_masked_and_partial_echoes(text) -> None:
    from flex_provider.hooks.flex import redact_key

    redacted = redact_key(text, CUSTOM_KEY)
    assert "***" in redacted
    assert redacted.split()[0] == text.split()[0]  # the rest of the message is kept
    for fragment in ("myk", "cdef", "12345678"):
        assert fragment not in redacted, (fragment, redacted)


def test_redact_key_leaves_unrelated_text_alone() -> None:
    from flex_provider.hooks.flex import redact_key

    text = "Error code: 404 - model gpt-5-mini not found (request req_123)"
    assert redact_key(text, CUSTOM_KEY) == text


@pytest.mark.parametrize(
    ("password", "what"),
    [
        ("sk-good-part-0123456789\n", "a line break at character 24 of 24"),
        ("sk-good part", "a space or tab at character 8"),
        ("sk-clé-0123", "not printable ASCII at character 6"),
    ],
)
def test_a_key_that_cannot_be_sent_is_refused_before_deferral_without_showing_it(monkeypatch, password, what) -> None:
    """Unattended nights #4: a key with a newline used to give "Connection error." for every item."""
    from flex_provider.engine.errors import FlexInputError

    monkeypatch.setenv("AIRFLOW_CONN_BAD_KEY", json.dumps({"conn_type": "openai_flex", "password": password}))
    with pytest.raises(FlexInputError) as caught:
        FlexHook("bad_key").get_settings()
    assert "conn_id='bad_key'" in str(caught.value) and what in str(caught.value)
    assert "good" not in str(caught.value) and "0123" not in str(caught.value)
    with pytest.raises(FlexInputError):
        asyncio.run(FlexHook("bad_key").aget_settings())  # the triggerer's path too


@pytest.mark.parametrize("host", ["ftp://127.0.0.1:9/v1", "file:///tmp/x"])
def test_a_base_url_with_another_scheme_is_refused(monkeypatch, host) -> None:
    from flex_provider.engine.errors import FlexInputError

    conn = {"conn_type": "openai_flex", "password": "sk-fine", "host": host}
    monkeypatch.setenv("AIRFLOW_CONN_BAD_URL", json.dumps(conn))
    with pytest.raises(FlexInputError, match=r"conn_id='bad_url': base URL '.*' must start with http:// or https://"):
        FlexHook("bad_url").get_settings()
