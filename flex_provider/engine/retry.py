"""Tenacity strategies that understand flex.

Composed, not hand-rolled: ``retry_if_verdict`` decides *whether* (from :func:`classify`),
``wait_server_hint`` decides *how long* (the server's Retry-After / rate-limit reset headers when
present, else exponential backoff with jitter), and stop conditions bound the per-item budget.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import openai
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
    wait_random,
)
from tenacity.retry import retry_base
from tenacity.wait import wait_base

from flex_provider.engine.config import RetryPolicy
from flex_provider.engine.errors import Verdict, classify, error_info

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def _seconds(value: float) -> float | None:
    """A usable wait: finite and not negative (``nan``, ``inf`` and ``-1`` parse as floats)."""
    return value if math.isfinite(value) and value >= 0 else None


def parse_duration(text: str) -> float | None:
    """OpenAI's reset headers are Go-style durations: ``1s``, ``6m0s``, ``20ms``, ``1h2m3.5s``."""
    text = text.strip()
    if text[-1:].isdigit():  # plain seconds ("1.5"); units ("1.5s") skip the failing float() below
        try:
            return _seconds(float(text))
        except ValueError:
            pass
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)


def server_wait_hint(exc: BaseException | None) -> float | None:
    """Seconds the server asked us to wait, from ``retry-after-ms``, ``retry-after`` or, for rate
    limits, the later of the ``x-ratelimit-reset-*`` headers. None when the server gave no hint."""
    if not isinstance(exc, openai.APIStatusError):
        return None
    headers = exc.response.headers
    if (value := headers.get("retry-after-ms")) is not None:
        try:
            if (seconds := _seconds(float(value) / 1000.0)) is not None:
                return seconds
        except ValueError:
            pass
    if (value := headers.get("retry-after")) is not None:
        try:
            if (seconds := _seconds(float(value))) is not None:
                return seconds
        except ValueError:
            pass  # HTTP-date form: not used by OpenAI; fall through
    if classify(exc) is not Verdict.RATE_LIMITED:
        return None
    parsed = (
        parse_duration(headers[h]) for h in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens") if h in headers
    )
    resets = [r for r in parsed if r is not None]
    return max(resets) if resets else None


def rate_limit_too_long(exc: BaseException, policy: RetryPolicy) -> str | None:
    """Why a 429 rate_limit_exceeded must not be waited out, or None.

    A daily limit answers with a reset hours away. Sleeping that long would freeze the whole run
    (the limiter pauses every item), and retrying would burn the item's budget. When the wait is
    longer than we may honour (``max_retry_after_s``) or than an item may keep trying
    (``max_elapsed_s``), the item ends at once as retryable with this message, which names the limit
    and when it resets, so that a task retry after the reset picks up."""
    if classify(exc) is not Verdict.RATE_LIMITED:
        return None
    wait = server_wait_hint(exc)
    allowed = min(policy.max_retry_after_s, policy.max_elapsed_s)
    if wait is None or wait <= allowed:
        return None
    headers = exc.response.headers if isinstance(exc, openai.APIStatusError) else {}
    limits = [
        f"{kind} limit {headers[f'x-ratelimit-limit-{kind}']}"
        for kind in ("requests", "tokens")
        if f"x-ratelimit-limit-{kind}" in headers
    ]
    resets_at = (datetime.now(UTC) + timedelta(seconds=wait)).isoformat(timespec="seconds")
    message = error_info(exc).get("message", "")
    return (
        f"rate limit reached ({', '.join(limits) or 'limit not stated'}): {message} "
        f"The server asks to wait {wait:.0f} s (until about {resets_at}), longer than retry.max_retry_after_s="
        f"{policy.max_retry_after_s:g} s allows: not waited. Retry the task after the reset (or raise "
        "retry.max_retry_after_s to wait it out); it resumes where this run stopped."
    )


class retry_if_verdict(retry_base):
    """Retry when the attempt failed with an exception of one of the given verdicts."""

    def __init__(self, *verdicts: Verdict) -> None:
        self.verdicts = frozenset(verdicts)

    def __call__(self, retry_state: RetryCallState) -> bool:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None and outcome.failed else None
        return exc is not None and classify(exc) in self.verdicts


class wait_server_hint(wait_base):
    """Wait as long as the server said (capped, plus a little jitter so a crowd of items does not
    return in the same millisecond); without a hint defer to the ``fallback`` strategy."""

    def __init__(self, fallback: wait_base, cap: float, jitter: wait_base) -> None:
        self.fallback = fallback
        self.cap = cap
        self.jitter = jitter

    def __call__(self, retry_state: RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        hint = server_wait_hint(exc)
        if hint is None:
            return self.fallback(retry_state)
        return min(hint, self.cap) + self.jitter(retry_state)


def backoff(policy: RetryPolicy) -> wait_base:
    jitter = wait_random(0, policy.jitter_s)
    exponential = wait_exponential(multiplier=policy.initial_wait_s, min=policy.initial_wait_s, max=policy.max_wait_s)
    return wait_server_hint(exponential + jitter, cap=policy.max_retry_after_s, jitter=jitter)


def item_retrying(
    policy: RetryPolicy,
    *,
    retry_unavailable: bool,
    before_sleep: Callable[[RetryCallState], Awaitable[None] | None] | None = None,
) -> AsyncRetrying:
    """The retry loop around one item's requests on one tier. ``retry_unavailable`` is False when
    the user chose ``on_unavailable="fail"``: a 429 resource_unavailable then ends the item at once."""
    verdicts = [Verdict.RATE_LIMITED, Verdict.TRANSIENT]
    if retry_unavailable:
        verdicts.append(Verdict.UNAVAILABLE)
    kwargs: dict[str, Any] = {}
    if before_sleep is not None:
        kwargs["before_sleep"] = before_sleep
    return AsyncRetrying(
        stop=stop_after_attempt(policy.max_attempts) | stop_after_delay(policy.max_elapsed_s),
        wait=backoff(policy),
        retry=retry_if_verdict(*verdicts),
        reraise=True,
        **kwargs,
    )
