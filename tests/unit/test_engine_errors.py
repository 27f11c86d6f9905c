from __future__ import annotations

import httpx2
import openai
import pytest

from flex_provider.engine.errors import (
    FlexRunAborted,
    OutputValidationError,
    Verdict,
    classify,
    error_info,
    redact,
)

from .helpers import URL, make_api_error


def test_factory_matches_sdk_construction():
    """The helper builds errors exactly as the SDK does from a real HTTP response."""
    client = openai.OpenAI(api_key="sk-unit-test", base_url="http://emulator.invalid/v1")
    error = {"message": "Flex is busy", "type": "rate_limit_error", "param": None, "code": "resource_unavailable"}
    response = httpx2.Response(
        429, request=httpx2.Request("POST", URL), headers={"retry-after": "3"}, json={"error": error}
    )
    sdk_exc = client._make_status_error_from_response(response)
    ours = make_api_error(429, code="resource_unavailable", type_="rate_limit_error", message="Flex is busy")

    assert type(sdk_exc) is type(ours) is openai.RateLimitError
    assert sdk_exc.body == ours.body == error
    assert sdk_exc.code == ours.code == "resource_unavailable"
    assert classify(sdk_exc) is classify(ours) is Verdict.UNAVAILABLE


@pytest.mark.parametrize(
    ("status", "code", "type_", "expected"),
    [
        (429, "resource_unavailable", "rate_limit_error", Verdict.UNAVAILABLE),
        (429, "rate_limit_exceeded", "requests", Verdict.RATE_LIMITED),
        (429, "rate_limit_exceeded", "tokens", Verdict.RATE_LIMITED),
        (429, None, None, Verdict.RATE_LIMITED),
        (429, "insufficient_quota", "insufficient_quota", Verdict.FATAL),
        (429, None, "insufficient_quota", Verdict.FATAL),  # code missing: the type is used
        (401, "invalid_api_key", "invalid_request_error", Verdict.FATAL),
        (403, "unsupported_country_region_territory", "request_forbidden", Verdict.FATAL),
        (400, "invalid_value", "invalid_request_error", Verdict.ITEM_FAILED),
        (404, "model_not_found", "invalid_request_error", Verdict.ITEM_FAILED),
        (422, None, None, Verdict.ITEM_FAILED),
        (408, None, None, Verdict.TRANSIENT),
        (409, None, None, Verdict.TRANSIENT),
        (500, "server_error", "server_error", Verdict.TRANSIENT),
        (502, None, None, Verdict.TRANSIENT),
        (503, None, None, Verdict.TRANSIENT),
        (418, None, None, Verdict.ITEM_FAILED),  # other 4xx: this item, not the run
    ],
)
def test_classify_status_errors(status, code, type_, expected):
    assert classify(make_api_error(status, code=code, type_=type_)) is expected


def test_classify_connection_and_timeout(connection_error, timeout_error):
    timeout = timeout_error()
    assert isinstance(timeout, openai.APIConnectionError)
    assert classify(connection_error()) is Verdict.TRANSIENT
    assert classify(timeout) is Verdict.TRANSIENT


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (TimeoutError("slow"), Verdict.TRANSIENT),
        (ConnectionResetError("reset"), Verdict.TRANSIENT),
        (OutputValidationError("bad json"), Verdict.ITEM_FAILED),
        (ValueError("x"), Verdict.ITEM_FAILED),
    ],
)
def test_classify_other_exceptions(exc, expected):
    assert classify(exc) is expected


def test_classify_body_without_code_attribute_reads_nested_error():
    """A status error whose body was left wrapped (``{"error": {...}}``) still finds the code."""
    response = httpx2.Response(429, request=httpx2.Request("POST", URL))
    exc = openai.RateLimitError(
        "x", response=response, body={"error": {"code": "resource_unavailable", "message": "busy"}}
    )
    assert exc.code is None
    assert classify(exc) is Verdict.UNAVAILABLE


def test_verdict_values_are_strings():
    assert Verdict.UNAVAILABLE == "unavailable"
    assert Verdict.ITEM_FAILED.value == "item_failed"


# -- redact ---------------------------------------------------------------------------------


def test_redact_full_project_key():
    text = "Incorrect API key provided: sk-proj-abc123DEF456_ghi-789. You can find your key at ..."
    out = redact(text)
    assert "abc123" not in out
    assert "sk-***" in out
    assert out.startswith("Incorrect API key provided: ")
    assert out.endswith(". You can find your key at ...")


@pytest.mark.parametrize("masked", ["sk-****abcd", "sk-proj-****************abcd", "sk-abc1*****wxyz"])
def test_redact_masked_key_forms(masked):
    out = redact(f"Incorrect API key provided: {masked}.")
    assert out == "Incorrect API key provided: sk-***."


def test_redact_other_key_prefixes():
    assert (
        redact("session sess-AbCdEf123456 and restricted rk-live_9999zzzz") == "session sess-*** and restricted rk-***"
    )


def test_redact_known_secret_without_key_shape():
    assert redact("token=hunter2-secret-value in message", secrets=("hunter2-secret-value",)) == "token=*** in message"


def test_redact_ignores_empty_secret_and_ordinary_words():
    text = "task-1234 and risk-assessment are fine"
    assert redact(text, secrets=("",)) == text


# -- error_info -----------------------------------------------------------------------------


def test_error_info_status_error_redacts_and_carries_request_id():
    exc = make_api_error(
        401,
        code="invalid_api_key",
        type_="invalid_request_error",
        message="Incorrect API key provided: sk-proj-****wxyz. See docs.",
        request_id="req_123",
    )
    info = error_info(exc)
    assert info == {
        "type": "AuthenticationError",
        "status_code": 401,
        "code": "invalid_api_key",
        "message": "Incorrect API key provided: sk-***. See docs.",
        "request_id": "req_123",
    }


def test_error_info_without_request_id_omits_it():
    info = error_info(make_api_error(400, code="invalid_value", message="Bad 'input'."))
    assert "request_id" not in info
    assert info["message"] == "Bad 'input'."
    assert info["status_code"] == 400


def test_error_info_redacts_known_secret():
    info = error_info(make_api_error(400, message="echo: my-custom-secret"), secrets=("my-custom-secret",))
    assert info["message"] == "echo: ***"


def test_error_info_plain_exception():
    assert error_info(TimeoutError()) == {"type": "TimeoutError", "message": "TimeoutError"}
    assert error_info(OutputValidationError("bad sk-abcdef123")) == {
        "type": "OutputValidationError",
        "message": "bad sk-***",
    }


def test_error_info_connection_error(connection_error):
    assert error_info(connection_error()) == {"type": "APIConnectionError", "message": "Connection error."}


def test_flex_run_aborted_info_defaults_to_empty_dict():
    assert FlexRunAborted("stop").info == {}
    assert FlexRunAborted("stop", {"code": "x"}).info == {"code": "x"}
    assert str(FlexRunAborted("stop")) == "stop"
