from __future__ import annotations

import time

import openai
import pytest
from tenacity import AsyncRetrying, RetryCallState, wait_fixed

from flex_provider.engine.config import RetryPolicy
from flex_provider.engine.errors import Verdict
from flex_provider.engine.retry import (
    backoff,
    item_retrying,
    parse_duration,
    rate_limit_too_long,
    retry_if_verdict,
    server_wait_hint,
    wait_server_hint,
)

from .helpers import make_api_error, make_connection_error, make_timeout_error

FAST = RetryPolicy(initial_wait_s=0, max_wait_s=0.01, jitter_s=0, max_retry_after_s=0.01, max_attempts=10)


def unavailable(**kw):
    return make_api_error(429, code="resource_unavailable", type_="rate_limit_error", **kw)


def rate_limited(**kw):
    return make_api_error(429, code="rate_limit_exceeded", type_="requests", **kw)


def state_for(exc: BaseException | None, attempt: int = 1) -> RetryCallState:
    state = RetryCallState(retry_object=AsyncRetrying(), fn=None, args=(), kwargs={})
    state.attempt_number = attempt
    if exc is None:
        state.set_result("ok")
    else:
        state.set_exception((type(exc), exc, None))
    return state


# -- parse_duration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("17ms", 0.017),
        ("8.64s", 8.64),
        ("1h2m3.5s", 3723.5),
        ("1m30s", 90.0),
        ("2h", 7200.0),
        ("3", 3.0),
        ("0.25", 0.25),
        ("  6m0s \n", 360.0),
    ],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "6m0sx", "1d", "m", "s1", "6m 0s", "1.s"])
def test_parse_duration_rejects_garbage(text):
    assert parse_duration(text) is None


# -- server_wait_hint -----------------------------------------------------------------------


def test_hint_retry_after_seconds():
    assert server_wait_hint(unavailable(headers={"retry-after": "3"})) == 3.0
    assert server_wait_hint(unavailable(headers={"retry-after": "1.5"})) == 1.5


def test_hint_retry_after_ms_wins_over_retry_after():
    exc = unavailable(headers={"retry-after": "3", "retry-after-ms": "2500"})
    assert server_wait_hint(exc) == 2.5


def test_hint_bad_retry_after_ms_falls_back_to_retry_after():
    assert server_wait_hint(unavailable(headers={"retry-after-ms": "soon", "retry-after": "4"})) == 4.0


def test_hint_http_date_retry_after_is_ignored():
    exc = rate_limited(headers={"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})
    assert server_wait_hint(exc) is None


def test_hint_rate_limit_reset_headers_take_the_later():
    exc = rate_limited(headers={"x-ratelimit-reset-requests": "6m0s", "x-ratelimit-reset-tokens": "1s"})
    assert server_wait_hint(exc) == 360.0
    exc = rate_limited(headers={"x-ratelimit-reset-tokens": "20ms"})
    assert server_wait_hint(exc) == pytest.approx(0.02)


def test_hint_unparseable_reset_header_is_ignored():
    exc = rate_limited(headers={"x-ratelimit-reset-requests": "later", "x-ratelimit-reset-tokens": "2s"})
    assert server_wait_hint(exc) == 2.0
    assert server_wait_hint(rate_limited(headers={"x-ratelimit-reset-requests": "later"})) is None


def test_hint_none_without_headers_or_for_other_exceptions():
    assert server_wait_hint(rate_limited()) is None
    assert server_wait_hint(make_connection_error()) is None
    assert server_wait_hint(TimeoutError()) is None
    assert server_wait_hint(None) is None


def test_hint_reset_headers_only_for_rate_limits():
    """The docstring: "...or, *for rate limits*, the later of the x-ratelimit-reset-* headers".
    OpenAI sends these headers on other answers too; a 503 must fall back to exponential backoff
    instead of sleeping until the request bucket is full again (6 minutes here)."""
    exc = make_api_error(503, headers={"x-ratelimit-reset-requests": "6m0s"})
    assert server_wait_hint(exc) is None


# -- retry_if_verdict / wait_server_hint / backoff -------------------------------------------


def test_retry_if_verdict_predicate():
    predicate = retry_if_verdict(Verdict.TRANSIENT, Verdict.RATE_LIMITED)
    assert predicate(state_for(make_api_error(503))) is True
    assert predicate(state_for(rate_limited())) is True
    assert predicate(state_for(unavailable())) is False
    assert predicate(state_for(make_api_error(400))) is False
    assert predicate(state_for(None)) is False  # success: nothing to retry


def test_wait_server_hint_caps_and_adds_jitter():
    strategy = wait_server_hint(wait_fixed(7), cap=2.0, jitter=wait_fixed(0.25))
    assert strategy(state_for(unavailable(headers={"retry-after": "30"}))) == 2.25
    assert strategy(state_for(unavailable(headers={"retry-after": "1"}))) == 1.25
    assert strategy(state_for(make_api_error(503))) == 7  # no hint: the fallback alone


def test_backoff_exponential_without_hint():
    policy = RetryPolicy(initial_wait_s=2, max_wait_s=10, jitter_s=0)
    waits = [backoff(policy)(state_for(make_api_error(500), attempt=n)) for n in range(1, 6)]
    assert waits == [2, 4, 8, 10, 10]


def test_backoff_uses_hint_capped_by_max_retry_after():
    policy = RetryPolicy(initial_wait_s=2, max_wait_s=10, jitter_s=0, max_retry_after_s=60)
    assert backoff(policy)(state_for(unavailable(headers={"retry-after": "30"}), attempt=4)) == 30
    assert backoff(policy)(state_for(unavailable(headers={"retry-after": "3600"}))) == 60


def test_backoff_jitter_stays_in_range():
    policy = RetryPolicy(initial_wait_s=2, max_wait_s=10, jitter_s=0.5)
    waits = {backoff(policy)(state_for(make_api_error(500))) for _ in range(50)}
    assert all(2 <= w <= 2.5 for w in waits)
    assert len(waits) > 1  # really random


# -- a real AsyncRetrying loop ----------------------------------------------------------------


class Flaky:
    """A coroutine function raising the given errors in order, then returning "done"."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


async def test_retries_transient_and_rate_limited_until_success():
    fn = Flaky(rate_limited(), make_api_error(503), make_connection_error(), make_timeout_error(), make_api_error(409))
    result = await item_retrying(FAST, retry_unavailable=True)(fn)
    assert result == "done"
    assert fn.calls == 6


async def test_retries_unavailable_when_allowed():
    fn = Flaky(unavailable(), unavailable())
    assert await item_retrying(FAST, retry_unavailable=True)(fn) == "done"
    assert fn.calls == 3


async def test_unavailable_not_retried_when_on_unavailable_fail():
    fn = Flaky(unavailable(), unavailable())
    with pytest.raises(openai.RateLimitError) as info:
        await item_retrying(FAST, retry_unavailable=False)(fn)
    assert info.value.code == "resource_unavailable"
    assert fn.calls == 1


async def test_rate_limited_still_retried_when_on_unavailable_fail():
    fn = Flaky(rate_limited())
    assert await item_retrying(FAST, retry_unavailable=False)(fn) == "done"
    assert fn.calls == 2


@pytest.mark.parametrize("status", [400, 404, 422])
async def test_item_failed_never_retried(status):
    fn = Flaky(make_api_error(status))
    with pytest.raises(openai.APIStatusError) as info:
        await item_retrying(FAST, retry_unavailable=True)(fn)
    assert info.value.status_code == status
    assert fn.calls == 1


@pytest.mark.parametrize("exc", [make_api_error(401), make_api_error(429, code="insufficient_quota")])
async def test_fatal_never_retried(exc):
    fn = Flaky(exc)
    with pytest.raises(type(exc)):
        await item_retrying(FAST, retry_unavailable=True)(fn)
    assert fn.calls == 1


async def test_attempt_budget_ends_the_loop_with_last_error():
    policy = RetryPolicy(initial_wait_s=0, max_wait_s=0.01, jitter_s=0, max_attempts=3)
    errors = [make_api_error(503, message=f"attempt {i}") for i in range(1, 6)]
    fn = Flaky(*errors)
    with pytest.raises(openai.InternalServerError) as info:
        await item_retrying(policy, retry_unavailable=True)(fn)
    assert fn.calls == 3
    assert info.value is errors[2]  # reraise: the real error, not tenacity's RetryError


async def test_elapsed_budget_ends_the_loop():
    policy = RetryPolicy(initial_wait_s=0.01, max_wait_s=0.01, jitter_s=0, max_attempts=1000, max_elapsed_s=0.05)
    fn = Flaky(*[make_api_error(500) for _ in range(1000)])
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError):
        await item_retrying(policy, retry_unavailable=True)(fn)
    assert 2 <= fn.calls < 100
    assert time.monotonic() - started < 1.0


async def test_before_sleep_sees_server_hint_and_fallback_waits():
    sleeps: list[float] = []
    attempts: list[int] = []

    async def before_sleep(state: RetryCallState) -> None:
        sleeps.append(state.upcoming_sleep)
        attempts.append(state.attempt_number)

    policy = RetryPolicy(initial_wait_s=0, max_wait_s=0.01, jitter_s=0, max_retry_after_s=0.02)
    fn = Flaky(
        unavailable(headers={"retry-after-ms": "5"}),  # 5 ms, under the cap
        rate_limited(headers={"retry-after": "30"}),  # capped to 0.02
        make_api_error(502),  # no hint: exponential from 0
    )
    assert await item_retrying(policy, retry_unavailable=True, before_sleep=before_sleep)(fn) == "done"
    assert sleeps == [pytest.approx(0.005), pytest.approx(0.02), 0]
    assert attempts == [1, 2, 3]


@pytest.mark.parametrize("value", ["nan", "inf", "-5", "-inf"])
def test_hint_ignores_non_finite_or_negative_waits(value):
    assert server_wait_hint(rate_limited(headers={"retry-after": value})) is None
    assert server_wait_hint(rate_limited(headers={"retry-after-ms": value})) is None


@pytest.mark.parametrize(
    "headers",
    [
        {"retry-after": "86400"},
        {"x-ratelimit-reset-requests": "24h0m0s", "x-ratelimit-limit-requests": "10000"},
        {"x-ratelimit-reset-tokens": "2h", "x-ratelimit-limit-tokens": "2000000"},
    ],
)
def test_a_daily_limit_stops_the_run_with_the_limit_and_reset_named(headers):
    """Unattended nights #1: a wait longer than we may honour is not slept: the message says which
    limit, how long and until when, so a later task retry picks up."""
    exc = rate_limited(headers=headers, message="Rate limit reached for gpt-5-mini on requests per day (RPD)")
    reason = rate_limit_too_long(exc, RetryPolicy())
    assert reason is not None
    assert "requests per day" in reason and "until about 20" in reason and "retry the task" in reason.lower()
    for name in ("x-ratelimit-limit-requests", "x-ratelimit-limit-tokens"):
        if name in headers:
            assert f"{name.rsplit('-', 1)[1]} limit {headers[name]}" in reason


def test_a_short_rate_limit_wait_or_another_verdict_is_waited_out():
    assert rate_limit_too_long(rate_limited(headers={"retry-after": "20"}), RetryPolicy()) is None
    assert rate_limit_too_long(rate_limited(), RetryPolicy()) is None
    assert rate_limit_too_long(unavailable(headers={"retry-after": "86400"}), RetryPolicy()) is None
    # the item's elapsed budget bounds it too
    policy = RetryPolicy(max_elapsed_s=60, max_retry_after_s=900)
    assert rate_limit_too_long(rate_limited(headers={"retry-after": "120"}), policy) is not None
