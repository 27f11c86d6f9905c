"""Run-wide circuit breakers (Unattended nights #4 and #5), with real SDK exceptions."""

from __future__ import annotations

import httpx2
import openai
import pytest

from flex_provider.engine.errors import FlexRunAborted, redact
from flex_provider.engine.health import RunHealth

from .helpers import URL, make_api_error

ENDPOINT = "conn_id='openai_default', base_url=http://10.0.0.1:9/v1"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def connection_error(cause: BaseException) -> openai.APIConnectionError:
    """As the SDK raises it: "Connection error." with the transport error as the cause."""
    try:
        try:
            raise cause
        except Exception as inner:
            raise openai.APIConnectionError(request=httpx2.Request("POST", URL)) from inner
    except openai.APIConnectionError as exc:
        return exc


def refused() -> openai.APIConnectionError:
    return connection_error(httpx2.ConnectError("[Errno 111] Connect call failed ('10.0.0.1', 9)"))


def test_connection_failures_before_any_answer_stop_after_the_grace_period():
    clock = Clock()
    health = RunHealth(ENDPOINT, connect_grace_s=60, clock=clock)
    health.on_connection_error(refused())
    clock.now += 59
    health.on_connection_error(refused())  # still within the grace period
    clock.now += 2
    with pytest.raises(FlexRunAborted) as caught:
        health.on_connection_error(refused())
    message = str(caught.value)
    assert ENDPOINT in message and "Connect call failed" in message and "ConnectError" in message
    assert "no answer in 61 s" in message


def test_a_blip_in_a_healthy_run_is_left_to_the_item_retries():
    clock = Clock()
    health = RunHealth(ENDPOINT, connect_grace_s=60, clock=clock)
    health.on_answer()
    for _ in range(100):
        clock.now += 10
        health.on_connection_error(refused())  # never aborts: the server has answered before


@pytest.mark.parametrize(
    "cause",
    [
        httpx2.UnsupportedProtocol("Request URL has an unsupported protocol 'ftp://'."),
        httpx2.UnsupportedProtocol("Request URL is missing an 'http://' or 'https://' protocol."),
        httpx2.LocalProtocolError("Illegal header value b'Bearer sk-secret-key-0000\\n'"),
    ],
)
def test_unsendable_requests_stop_at_once_even_mid_run_and_never_show_the_key(cause):
    health = RunHealth(ENDPOINT, secrets=("sk-secret-key-0000\n",))
    health.on_answer()
    with pytest.raises(FlexRunAborted) as caught:
        health.on_connection_error(connection_error(cause))
    message = str(caught.value)
    assert ENDPOINT in message and type(cause).__name__ in message
    assert "secret-key" not in message


def test_the_same_404_for_item_after_item_stops_the_run():
    health = RunHealth(ENDPOINT, same_refusal_items=3)
    not_found = make_api_error(404, code="model_not_found", message="The model `gpt-x` does not exist")
    health.on_item_failed(not_found)
    health.on_item_failed(not_found)
    with pytest.raises(FlexRunAborted, match=r"refused the last 3 items .*404 model_not_found.*gpt-x"):
        health.on_item_failed(not_found)


def test_a_success_in_between_or_an_item_specific_error_resets_the_streak():
    health = RunHealth(ENDPOINT, same_refusal_items=3)
    not_found = make_api_error(404, code="model_not_found")
    bad_item = make_api_error(400, code="context_length_exceeded")  # about this item's content
    for _ in range(10):
        health.on_item_failed(not_found)
        health.on_item_failed(not_found)
        health.on_item_succeeded()
        health.on_item_failed(bad_item)
        health.on_item_failed(bad_item)
        health.on_item_failed(bad_item)


def test_redact_handles_escaped_and_multiline_keys():
    key = "my-custom\nkey-abcdef"
    text = f"Illegal header value b'Bearer {key!r}' and {key}"
    cleaned = redact(text, (key,))
    assert "custom" not in cleaned and "abcdef" not in cleaned


def test_a_rate_limit_resetting_hours_away_for_item_after_item_stops_the_run():
    from flex_provider.engine.errors import WaitTooLong

    health = RunHealth(ENDPOINT, same_refusal_items=3)
    daily = WaitTooLong("rate limit reached (requests limit 10000): ... until about 2026-11-30T05:00:00+00:00")
    health.on_item_failed(daily)
    health.on_item_succeeded()  # one sporadic long reset among successes is an item matter
    health.on_item_failed(daily)
    health.on_item_failed(daily)
    with pytest.raises(FlexRunAborted, match=r"requests limit 10000.*the last 3 items all hit this limit"):
        health.on_item_failed(daily)
