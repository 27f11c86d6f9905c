from __future__ import annotations

import json

import pytest

from flex_provider.engine.config import (
    RequestSpec,
    RetryPolicy,
    RunOptions,
    request_spec_from_dict,
    run_options_from_dict,
    to_dict,
)
from flex_provider.engine.errors import FlexInputError

# -- RequestSpec ------------------------------------------------------------------------------


def test_request_spec_defaults():
    spec = RequestSpec(model="gpt-5-mini")
    assert spec.api == "responses"
    assert spec.service_tier == "flex"
    assert spec.timeout == 900.0
    assert spec.request_options == {}
    assert spec.schema_name == "result"


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"model": ""}, r"^model: expected a non-empty model name, got ''"),
        ({"model": "   "}, r"^model: "),
        ({"model": None}, r"^model: "),
        ({"model": "m", "instructions": 5}, r"^instructions: expected a string, got int"),
        ({"model": "m", "api": "batch"}, r"^api: expected one of 'responses', 'chat', got 'batch'"),
        ({"model": "m", "service_tier": "cheap"}, r"^service_tier: expected one of .*'flex'.*got 'cheap'"),
        ({"model": "m", "timeout": 0}, r"^timeout: expected a positive number, got 0"),
        ({"model": "m", "timeout": -5}, r"^timeout: expected a positive number, got -5"),
        ({"model": "m", "timeout": "60"}, r"^timeout: expected a number, got '60'"),
        ({"model": "m", "timeout": True}, r"^timeout: expected a number, got True"),
        ({"model": "m", "request_options": []}, r"^request_options: expected a dict, got list"),
        ({"model": "m", "response_schema": "not a schema"}, r"^response_format: "),
    ],
)
def test_request_spec_errors_name_the_field(kwargs, pattern):
    with pytest.raises(FlexInputError, match=pattern):
        RequestSpec(**kwargs)


def test_invalid_json_schema_rejected_up_front():
    with pytest.raises(FlexInputError, match=r"^response_format: "):
        RequestSpec(model="m", response_schema={"type": "objekt"})


def test_request_options_clash_with_model():
    with pytest.raises(FlexInputError, match=r"^request_options: \['model'\] are set by the operator"):
        RequestSpec(model="m", request_options={"model": "other", "temperature": 0})


def test_request_options_clash_lists_every_reserved_key():
    with pytest.raises(FlexInputError) as info:
        RequestSpec(model="m", request_options={"stream": True, "input": "x", "service_tier": "flex", "top_p": 1})
    assert "['input', 'service_tier', 'stream']" in str(info.value)


def test_request_options_allowed_keys():
    spec = RequestSpec(model="m", request_options={"temperature": 0.2, "max_output_tokens": 100})
    assert spec.request_options == {"temperature": 0.2, "max_output_tokens": 100}


def test_request_spec_round_trip_through_json():
    spec = RequestSpec(
        model="o3",
        instructions="Be brief.",
        api="chat",
        response_schema={"type": "object"},
        schema_name="label",
        request_options={"temperature": 0},
        service_tier="default",
        timeout=30,
    )
    assert request_spec_from_dict(json.loads(json.dumps(to_dict(spec)))) == spec


# -- RetryPolicy ------------------------------------------------------------------------------


def test_retry_policy_from_value():
    assert RetryPolicy.from_value(None) == RetryPolicy()
    policy = RetryPolicy(max_attempts=3)
    assert RetryPolicy.from_value(policy) is policy
    assert RetryPolicy.from_value({"max_attempts": 4, "jitter_s": 0}) == RetryPolicy(max_attempts=4, jitter_s=0)


def test_retry_policy_unknown_key_names_it_and_the_known_ones():
    with pytest.raises(FlexInputError) as info:
        RetryPolicy.from_value({"max_tries": 3, "max_attempts": 2})
    message = str(info.value)
    assert message.startswith("retry: unknown option(s) ['max_tries']")
    assert "'max_attempts'" in message
    assert "'max_retry_after_s'" in message


def test_retry_policy_from_value_rejects_other_types():
    with pytest.raises(FlexInputError, match=r"^retry: expected a dict or RetryPolicy, got int"):
        RetryPolicy.from_value(3)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"max_attempts": 0}, r"^retry\.max_attempts: expected an integer >= 1, got 0"),
        ({"max_attempts": 2.5}, r"^retry\.max_attempts: "),
        ({"max_attempts": True}, r"^retry\.max_attempts: "),
        ({"max_elapsed_s": 0}, r"^retry\.max_elapsed_s: expected a positive number"),
        ({"initial_wait_s": -1}, r"^retry\.initial_wait_s: expected a non-negative number"),
        ({"max_wait_s": "x"}, r"^retry\.max_wait_s: expected a number"),
        ({"jitter_s": -0.1}, r"^retry\.jitter_s: "),
        ({"max_retry_after_s": -1}, r"^retry\.max_retry_after_s: "),
    ],
)
def test_retry_policy_errors_name_the_field(kwargs, pattern):
    with pytest.raises(FlexInputError, match=pattern):
        RetryPolicy(**kwargs)


def test_retry_policy_zero_waits_allowed():
    policy = RetryPolicy(initial_wait_s=0, max_wait_s=0, jitter_s=0, max_retry_after_s=0)
    assert (policy.initial_wait_s, policy.max_wait_s, policy.jitter_s) == (0, 0, 0)


# -- RunOptions -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"max_concurrency": 0}, r"^max_concurrency: expected an integer >= 1, got 0"),
        ({"max_concurrency": True}, r"^max_concurrency: expected an integer >= 1, got True"),
        ({"max_concurrency": "8"}, r"^max_concurrency: "),
        ({"max_concurrency": 4.0}, r"^max_concurrency: "),
        ({"on_unavailable": "wait"}, r"^on_unavailable: expected one of 'retry', 'fallback', 'fail', got 'wait'"),
        ({"fallback_tier": "standard"}, r"^fallback_tier: "),
        ({"submit_mode": "batch"}, r"^submit_mode: expected one of 'inline', 'background'"),
        ({"poll_interval_s": 0}, r"^poll_interval_s: "),
        ({"flush_interval_s": -1}, r"^flush_interval_s: "),
        ({"progress_interval_s": None}, r"^progress_interval_s: expected a number"),
        ({"flush_every": 0}, r"^flush_every: expected an integer >= 1"),
        ({"redo_failed": "failed"}, r"^redo_failed: expected 'retryable' .* or 'all' .*, got 'failed'"),
        ({"redo_failed": None}, r"^redo_failed: "),
    ],
)
def test_run_options_errors_name_the_field(kwargs, pattern):
    with pytest.raises(FlexInputError, match=pattern):
        RunOptions(**kwargs)


def test_run_options_round_trip_rebuilds_retry_policy():
    options = RunOptions(
        max_concurrency=7,
        on_unavailable="fallback",
        retry=RetryPolicy(max_attempts=3, jitter_s=0),
        submit_mode="background",
        redo_failed="all",
        prices={"my-model": {"input": 1.0, "cached_input": 0.5, "output": 2.0}},
    )
    data = json.loads(json.dumps(to_dict(options)))
    assert data["retry"] == {
        "max_attempts": 3,
        "max_elapsed_s": 3600.0,
        "initial_wait_s": 2.0,
        "max_wait_s": 300.0,
        "jitter_s": 0,
        "max_retry_after_s": 900.0,
    }
    rebuilt = run_options_from_dict(data)
    assert isinstance(rebuilt.retry, RetryPolicy)
    assert rebuilt == options


def test_run_options_from_dict_without_retry_uses_defaults():
    assert run_options_from_dict({"max_concurrency": 2}).retry == RetryPolicy()


def test_run_options_from_a_payload_without_redo_failed_redo_only_retryable_failures():
    """A trigger payload written before redo_failed existed."""
    assert RunOptions().redo_failed == "retryable"
    assert run_options_from_dict({"max_concurrency": 2}).redo_failed == "retryable"
    assert run_options_from_dict({"redo_failed": "all"}).redo_failed == "all"


def test_run_options_from_dict_validates_retry_values_but_tolerates_unknown_keys():
    """Payloads cross releases (a trigger in flight during an upgrade): unknown keys are ignored,
    missing ones take defaults, but values are still validated."""
    rebuilt = run_options_from_dict({"retry": {"max_attempts": 3, "from_a_newer_release": 1}, "new_knob": True})
    assert rebuilt.retry == RetryPolicy(max_attempts=3)
    with pytest.raises(FlexInputError, match=r"^retry.max_attempts"):
        run_options_from_dict({"retry": {"max_attempts": 0}})
    with pytest.raises(FlexInputError, match=r"^retry: unknown option"):
        RetryPolicy.from_value({"attempts": 2})  # what a user writes in a DAG is still checked strictly


def test_request_spec_from_dict_tolerates_unknown_keys_and_fingerprint_is_stable():
    spec = request_spec_from_dict({"model": "m", "instructions": "i", "prompt_template": "{{ item.x }}", "future": 1})
    assert spec == RequestSpec(model="m", instructions="i", prompt_template="{{ item.x }}")
    # The digest of release 0.1 (which hashed these fields, tier and timeout left out): frozen.
    assert (
        spec.fingerprint()
        == RequestSpec(
            model="m", instructions="i", prompt_template="{{ item.x }}", service_tier="default", timeout=5
        ).fingerprint()
    )
    assert spec.fingerprint() != RequestSpec(model="m", instructions="i").fingerprint()


def test_run_options_validates_prices():
    with pytest.raises(FlexInputError, match=r"^prices"):
        RunOptions(prices={"my-model": {"input": 1.0, "output": 2.0}})  # cached_input missing


# -- non-finite numbers ---------------------------------------------------------------------

_NAN, _INF = float("nan"), float("inf")


@pytest.mark.parametrize("bad", [_NAN, _INF, -_INF])
@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda v: RequestSpec(model="m", timeout=v), "timeout"),
        (lambda v: RunOptions(poll_interval_s=v), "poll_interval_s"),
        (lambda v: RunOptions(flush_interval_s=v), "flush_interval_s"),
        (lambda v: RunOptions(progress_interval_s=v), "progress_interval_s"),
        (lambda v: RetryPolicy(max_elapsed_s=v), r"retry\.max_elapsed_s"),
        (lambda v: RetryPolicy(initial_wait_s=v), r"retry\.initial_wait_s"),
        (lambda v: RetryPolicy(max_wait_s=v), r"retry\.max_wait_s"),
        (lambda v: RetryPolicy(jitter_s=v), r"retry\.jitter_s"),
        (lambda v: RetryPolicy(max_retry_after_s=v), r"retry\.max_retry_after_s"),
        (lambda v: RunOptions(prices={"m": {"input": v, "cached_input": 0, "output": 1}}), r"prices\['m'\]\.input"),
    ],
)
def test_non_finite_numbers_are_rejected_naming_the_field(build, field, bad):
    with pytest.raises(FlexInputError, match=rf"^{field}: expected a finite"):
        build(bad)


def test_max_result_bytes_defaults_to_none_and_round_trips():
    assert RunOptions().max_result_bytes is None
    options = RunOptions(max_result_bytes=1024)
    assert run_options_from_dict(json.loads(json.dumps(to_dict(options)))) == options


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "10", _NAN, _INF])
def test_max_result_bytes_must_be_a_positive_int(bad):
    with pytest.raises(FlexInputError, match=r"^max_result_bytes: expected a positive integer or None"):
        RunOptions(max_result_bytes=bad)


# -- request_options escape hatches ---------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        ({"extra_body": {"model": "gpt-4o"}}, r"request_options\.extra_body\.model"),
        ({"extra_body": {"service_tier": "default", "top_p": 1}}, r"request_options\.extra_body\.service_tier"),
        (
            {"extra_body": {"input": "x", "stream": True}},
            r"request_options\.extra_body\.input, request_options\.extra_body\.stream",
        ),
        ({"extra_query": {"model": "x"}}, r"request_options\.extra_query\.model"),
        ({"extra_headers": {"Authorization": "Bearer x"}}, r"request_options\.extra_headers\.Authorization"),
        ({"extra_headers": {"authorization": "Bearer x"}}, r"request_options\.extra_headers\.authorization"),
        ({"extra_headers": {"openai-organization": "org"}}, r"request_options\.extra_headers\.openai-organization"),
        ({"extra_headers": {"OpenAI-Project": "p"}}, r"request_options\.extra_headers\.OpenAI-Project"),
        ({"extra_body": ["not", "a", "dict"]}, r"request_options\.extra_body: expected a dict, got list"),
        ({"extra_headers": "x"}, r"request_options\.extra_headers: expected a dict, got str"),
    ],
)
def test_request_options_escape_hatches_are_refused(options, pattern):
    with pytest.raises(FlexInputError, match=rf"^{pattern}"):
        RequestSpec(model="m", request_options=options)


def test_request_options_harmless_extras_allowed():
    options = {"extra_body": {"metadata": {"a": "b"}}, "extra_headers": {"X-Trace": "1"}, "extra_query": {"q": 1}}
    assert RequestSpec(model="m", request_options=options).request_options == options


@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        ({"text": {"format": {"type": "text"}}}, r"request_options\.text\.format"),
        ({"response_format": {"type": "json_object"}}, r"request_options\.response_format"),
        ({"extra_body": {"text": {"format": {"type": "text"}}}}, r"request_options\.extra_body\.text\.format"),
        ({"extra_body": {"response_format": {"type": "text"}}}, r"request_options\.extra_body\.response_format"),
    ],
)
def test_output_format_options_clash_with_response_format(options, pattern):
    schema = {"type": "object"}
    with pytest.raises(FlexInputError, match=rf"^{pattern}.*response_format"):
        RequestSpec(model="m", response_schema=schema, request_options=options)
    RequestSpec(model="m", request_options=options)  # without response_format they are the user's choice


def test_text_options_other_than_format_allowed_with_response_format():
    RequestSpec(model="m", response_schema={"type": "object"}, request_options={"text": {"verbosity": "low"}})


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        (
            {"instructions": "Be brief \ud83d."},
            r"^instructions: holds an unpaired surrogate \(\\ud83d at character 9\)",
        ),
        ({"model": "gpt\udc00"}, r"^model: holds an unpaired surrogate"),
        ({"request_options": {"metadata": {"k": "v\ud800"}}}, r"^request_options: holds an unpaired surrogate"),
        ({"request_options": {"temperature": object()}}, r"^request_options: not JSON-serialisable"),
    ],
)
def test_request_strings_must_be_sendable(kwargs, pattern):
    with pytest.raises(FlexInputError, match=pattern):
        RequestSpec(**{"model": "m", **kwargs})
