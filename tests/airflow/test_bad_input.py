"""Every bad input gets a clear error naming the field, raised before deferral (nothing is sent)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowException, TaskDeferred

from flex_provider.engine.errors import FlexInputError
from flex_provider.operators.flex import FlexLLMOperator
from tests.airflow.conftest import CONN_ID


def context(task_id: str = "t") -> dict[str, Any]:
    ti = SimpleNamespace(dag_id="d", run_id="manual__2026-01-01T00:00:00+00:00", task_id=task_id, map_index=-1)
    return {"ti": ti, "ds": "2026-01-01", "run_id": ti.run_id, "params": {}}


def op(**kwargs: Any) -> FlexLLMOperator:
    kwargs.setdefault("model", "gpt-5-mini")
    kwargs.setdefault("conn_id", CONN_ID)
    return FlexLLMOperator(task_id="t", **kwargs)


@pytest.mark.parametrize(
    "sources",
    [{}, {"input": "x", "items": ["y"]}, {"items": ["y"], "input_path": "/tmp/x.jsonl"}],
)
def test_exactly_one_input_source(sources: dict) -> None:
    with pytest.raises(FlexInputError, match=r"exactly one of input .*items .*input_path"):
        op(**sources)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"api": "completions"}, "api"),
        ({"on_unavailable": "ignore"}, "on_unavailable"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"max_failed": -1}, "max_failed"),
        ({"max_failed": 1.5}, "max_failed"),
        ({"submit_mode": "batch"}, "submit_mode"),
        ({"retry": {"attempts": 3}}, "retry"),
        ({"response_format": 42}, "response_format"),
        ({"fallback_tier": "cheap"}, "fallback_tier"),
    ],
)
def test_bad_options_fail_at_parse_time_naming_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(FlexInputError, match=rf"^{field}"):
        op(items=["a"], **kwargs)


def test_no_api_key_anywhere_fails_before_deferring(emu, monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(AirflowException, match=r"No OpenAI API key found for conn_id='nowhere'.*airflow connections add"):
        op(items=["a"], conn_id="nowhere").execute(context())
    assert emu.stats()["requests"] == 0


def test_env_fallback_when_connection_missing(emu, monkeypatch) -> None:
    from tests.airflow.conftest import API_KEY

    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", emu.base_url)
    with pytest.raises(TaskDeferred):  # credentials found: it gets as far as deferring
        op(items=["a"], conn_id="not_defined_anywhere").execute(context())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"items": ["ok", 7]}, r"items\[1\]: expected a string or a dict, got int"),
        ({"items": "one prompt"}, r"items: expected a list .*for one prompt use input="),
        ({"items": [{"id": 1, "body": "no text"}]}, r"items\[0\]: dict item has no 'text' field"),
        (
            {"items": [{"subject": "s"}], "prompt_template": "{{ item.subject }} {{ item.body }}"},
            r"items\[0\]: prompt_template refers to a missing field: 'dict object' has no attribute 'body'",
        ),
        ({"items": ["a"], "prompt_template": "{{ item.x "}, r"prompt_template: invalid Jinja syntax"),
        ({"input": ""}, r"input: expected a non-empty string"),
        ({"items": ["a"], "request_options": {"model": "x"}}, r"request_options: \['model'\]"),
        ({"items": ["a"], "service_tier": "cheap"}, r"service_tier: expected one of"),
        ({"items": ["a"], "model": ""}, r"model: expected a non-empty model name"),
    ],
)
def test_bad_input_fails_in_execute_before_deferring(emu, kwargs: dict, message: str) -> None:
    with pytest.raises(FlexInputError, match=message):
        op(**kwargs).execute(context())
    assert emu.stats()["requests"] == 0


def test_jsonl_line_that_is_not_json_names_the_line(emu, tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({"text": "fine"}) + "\n\n" + "{not json}\n")
    with pytest.raises(FlexInputError, match=r"input_path line 3: not valid JSON"):
        op(input_path=str(path)).execute(context())


def test_missing_input_file(emu, tmp_path: Path) -> None:
    with pytest.raises(FlexInputError, match=r"input_path: file://.*missing.jsonl does not exist"):
        op(input_path=f"file://{tmp_path}/missing.jsonl").execute(context())


def test_large_item_lists_are_staged_not_serialised_into_the_trigger(emu) -> None:
    items = [{"id": f"d{i}", "text": "x" * 200} for i in range(500)]
    with pytest.raises(TaskDeferred) as deferred:
        op(items=items).execute(context("staged"))
    classpath, kwargs = deferred.value.trigger.serialize()
    assert classpath == "flex_provider.triggers.flex.FlexTrigger"
    blob = json.dumps(kwargs)
    assert len(blob) < 4000 and kwargs["job"]["items"] is None
    assert kwargs["job"]["input_uri"].endswith("_input/items.jsonl")
    assert "sk-" not in blob  # conn_id only, never the key
