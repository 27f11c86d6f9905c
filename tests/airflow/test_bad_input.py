"""Every bad input gets a clear error naming the field, raised before deferral (nothing is sent)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowException, TaskDeferred

from flex_provider.engine.errors import FlexInputError
from flex_provider.operators.flex import FlexLLMOperator
from tests.airflow.conftest import CONN_ID
from tests.fakes import FakeTI


def context(task_id: str = "t") -> dict[str, Any]:
    ti = FakeTI(dag_id="d", run_id="manual__2026-01-01T00:00:00+00:00", task_id=task_id, map_index=-1)
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


# -- non-finite numbers: refused where the DAG is parsed ----------------------------------------

_NAN, _INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"timeout": _NAN}, "timeout"),
        ({"timeout": _INF}, "timeout"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": "60"}, "timeout"),
        ({"poll_interval": _NAN}, "poll_interval"),
        ({"progress_interval": _INF}, "progress_interval"),
        ({"max_failed": _NAN}, "max_failed"),
        ({"max_failed": _INF}, "max_failed"),
        ({"max_failed": -_INF}, "max_failed"),
        ({"retry": {"max_wait_s": _NAN}}, r"retry\.max_wait_s"),
        ({"retry": {"max_elapsed_s": _INF}}, r"retry\.max_elapsed_s"),
        ({"prices": {"m": {"input": _NAN, "cached_input": 0, "output": 1}}}, r"prices\['m'\]\.input"),
        ({"xcom_max_bytes": _NAN}, "xcom_max_bytes"),
        ({"xcom_max_bytes": 0}, "xcom_max_bytes"),
        ({"xcom_max_bytes": 1.5}, "xcom_max_bytes"),
        ({"xcom_max_bytes": True}, "xcom_max_bytes"),
        ({"service_tier": "cheap"}, "service_tier"),
    ],
)
def test_bad_numbers_fail_at_parse_time_naming_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(FlexInputError, match=rf"^{field}"):
        op(items=["a"], **kwargs)


# -- unsendable text, duplicate ids, odd files: refused before deferral ------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"items": ["ok", "half an emoji \ud83d"]}, r"^items\[1\]: the text holds an unpaired surrogate \(\\ud83d at character 14\)"),
        ({"items": [{"id": "a", "text": "x\udc00"}]}, r"^items\[0\]: field 'text' holds an unpaired surrogate"),
        ({"items": [{"id": "a\ud83d", "text": "x"}]}, r"^items\[0\]: field 'id' holds an unpaired surrogate"),
        ({"input": "doc \ud83d"}, r"^input: the text holds an unpaired surrogate"),
        ({"items": ["a"], "instructions": "Be \ud83d brief"}, r"^instructions: holds an unpaired surrogate"),
        (
            {"items": [{"s": "x"}], "prompt_template": "{{ item.s }} {{ params.p }}"},
            r"^items\[0\]: the prompt rendered from prompt_template holds an unpaired surrogate",
        ),
        (
            {"items": [{"id": f"t{i}", "text": str(i)} for i in range(9)] + [{"id": "t2", "text": "again"}]},
            r"^items\[2\] and items\[9\] both have id 't2'",
        ),
        ({"items": ["a"], "request_options": {"extra_body": {"model": "gpt-4o"}}}, r"^request_options\.extra_body\.model"),
        ({"items": ["a"], "request_options": {"extra_headers": {"Authorization": "Bearer x"}}}, r"extra_headers\.Authorization"),
    ],
)
def test_poison_input_fails_before_deferring_naming_item_and_field(emu, kwargs: dict, message: str) -> None:
    ctx = context()
    ctx["params"] = {"p": "\ud83d"}
    with pytest.raises(FlexInputError, match=message) as info:
        op(**kwargs).execute(ctx)
    assert "which cannot be sent as UTF-8" in str(info.value) or "surrogate" not in message
    assert emu.stats()["requests"] == 0


def test_jsonl_poison_lines_are_named_by_line(emu, tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"id": "a", "text": "fine"}\n{"id": "b", "text": "x\\ud83d"}\n')
    with pytest.raises(FlexInputError, match=r"^input_path line 2: field 'text' holds an unpaired surrogate"):
        op(input_path=str(path)).execute(context())
    path.write_bytes(b'{"text": "fine"}\n\n{"text": "caf\xe9"}\n')  # latin-1, not UTF-8
    with pytest.raises(FlexInputError, match=r"^input_path line 3: not valid UTF-8 \(byte 0xe9 at position 13\)"):
        op(input_path=str(path)).execute(context())
    path.write_bytes(b'{"id": "a", "text": "1"}\n{"id": "b", "text": "2"}\n\n{"id": "a", "text": "3"}\n')
    with pytest.raises(FlexInputError, match=r"^input_path line 1 and input_path line 4 both have id 'a'"):
        op(input_path=str(path)).execute(context())
    assert emu.stats()["requests"] == 0


def test_input_path_that_is_a_directory(emu, tmp_path: Path) -> None:
    with pytest.raises(FlexInputError, match=r"^input_path: file://.* is a directory; expected a JSON Lines file"):
        op(input_path=str(tmp_path)).execute(context())


def test_output_path_that_is_a_file(emu, tmp_path: Path) -> None:
    target = tmp_path / "results.jsonl"
    target.write_text("")
    with pytest.raises(FlexInputError, match=r"^output_path: file://.*results.jsonl is a file; expected a folder"):
        op(items=["a"], output_path=str(target)).execute(context())


# -- repeated items: one record per position, same ids on every run ------------------------------


def test_repeated_items_get_distinct_ids_staged_or_not(emu) -> None:
    from flex_provider.engine.items import stable_id

    small = op(items=["same", "same", {"text": "same"}, "same"]).build_job(context("small"))
    h, d = stable_id("same"), stable_id({"text": "same"})
    assert small.total == 4
    assert [i.id for i in small.iter_items()] == [h, f"{h}-2", d, f"{h}-3"]
    big = op(items=["x" * 100] * 500).build_job(context("big"))  # staged to storage before deferral
    assert big.items is None and big.total == 500
    ids = [i.id for i in big.iter_items()]
    assert len(set(ids)) == 500 and ids[:3] == [stable_id("x" * 100), stable_id("x" * 100) + "-2", stable_id("x" * 100) + "-3"]


# -- XCom mode: refuse up front what cannot fit ------------------------------------------------


def test_xcom_mode_refuses_more_items_than_can_fit_before_sending(emu) -> None:
    from flex_provider.operators.flex import MIN_RECORD_BYTES

    n = 10_000 // MIN_RECORD_BYTES + 1
    with pytest.raises(FlexInputError, match=rf"^items: {n} item\(s\) cannot fit in XCom.*set output_path"):
        op(items=[f"doc {i}" for i in range(n)], xcom_max_bytes=10_000).execute(context())
    assert emu.stats()["requests"] == 0
    with pytest.raises(TaskDeferred):  # fits: goes ahead
        op(items=[f"doc {i}" for i in range(n - 1)], xcom_max_bytes=10_000).execute(context("fits"))


def test_xcom_mode_not_checked_with_output_path(emu, tmp_path: Path) -> None:
    with pytest.raises(TaskDeferred):
        op(items=[f"doc {i}" for i in range(100)], xcom_max_bytes=1000, output_path=str(tmp_path / "out")).execute(context())


def test_max_result_bytes_is_the_xcom_limit_in_xcom_mode_only(tmp_path: Path) -> None:
    assert op(items=["a"], xcom_max_bytes=5000).run_options.max_result_bytes == 5000
    assert op(items=["a"]).run_options.max_result_bytes == 1024 * 1024
    assert op(items=["a"], output_path=str(tmp_path)).run_options.max_result_bytes is None
    assert op(items=["a"], output_path="s3://b/{{ ds }}").run_options.max_result_bytes is None


def test_prompt_template_checked_at_parse_time() -> None:
    with pytest.raises(FlexInputError, match=r"^prompt_template: invalid Jinja syntax"):
        op(items=["a"], prompt_template="{{ item.x ")
    with pytest.raises(FlexInputError, match=r"^prompt_template: holds an unpaired surrogate"):
        op(items=["a"], prompt_template="{{ item.x }} \ud83d")


def test_response_format_that_cannot_become_a_schema_is_an_input_error() -> None:
    from pydantic import BaseModel

    class Opaque:
        pass

    class Worse(BaseModel):
        thing: Opaque  # no JSON schema for an arbitrary class
        model_config = {"arbitrary_types_allowed": True}

    with pytest.raises(FlexInputError, match=r"^response_format: "):
        op(items=["a"], response_format=Worse)


def test_deferrable_follows_operators_default_deferrable_unless_the_task_says(monkeypatch) -> None:
    """Airflow's convention for deferrable operators: ``[operators] default_deferrable``."""
    from flex_provider.operators.flex import FlexLLMOperator

    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "False")
    assert FlexLLMOperator(task_id="a", model="m", items=["x"]).deferrable is False
    assert FlexLLMOperator(task_id="b", model="m", items=["x"], deferrable=True).deferrable is True
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "True")
    assert FlexLLMOperator(task_id="c", model="m", items=["x"]).deferrable is True
    assert FlexLLMOperator(task_id="d", model="m", items=["x"], deferrable=False).deferrable is False
