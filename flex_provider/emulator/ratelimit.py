"""Request and token rate limits shaped like OpenAI's, with the headers and 429 bodies it sends.

The model chosen, and why:

- **One pair of buckets per model, shared by every service tier.** OpenAI sets limits per model for
  the organisation; flex, default and priority requests for the same model draw on the same limit,
  which is what makes "fall back to standard when flex is slow" cost rate-limit room too.
- **Continuous refill.** Each bucket holds at most ``limit`` units and refills at
  ``limit / window`` units per second (OpenAI's documented behaviour: a limit of 60 RPM lets one
  request through per second rather than 60 at the top of each minute). A fresh bucket is full, so
  a burst of ``limit`` passes at once. ``x-ratelimit-reset-*`` is the time until the bucket is full
  again, which is how OpenAI's "1s" after one request at 60 RPM comes about.
- **Tokens are charged at admission**, as OpenAI does: the request's estimated prompt tokens (the
  same count the answer's usage reports as input tokens) plus its max output tokens
  (``max_output_tokens`` / ``max_completion_tokens`` / ``max_tokens``, times ``n`` on Chat, or
  ``tpm_default_output_tokens`` when absent). Nothing is refunded when the answer turns out shorter.
- **All or nothing.** A request is admitted only when both buckets hold enough; a refused request
  takes nothing. Its ``retry-after`` is the time until *both* would hold enough, rounded up to the
  millisecond, so a client that waits exactly that long and is alone on the model gets through.
- **Too large is never retryable.** A request charging more tokens than the whole limit gets
  OpenAI's "Request too large" 429 (type ``tokens``) without ``retry-after``: waiting cannot help.
- Requests answered with a later failure (5xx, 429 resource_unavailable, ``long_wait_rate``) were
  admitted and keep their charge: the limiter runs before them, like the real service's.

Headers appear only for the limits that are set (none by default), on every generation answer that
reached the limiter, successes and 429s alike: ``x-ratelimit-limit-*``, ``x-ratelimit-remaining-*``
(whole units left, rounded down) and ``x-ratelimit-reset-*`` (Go-style durations: ``20ms``,
``1.5s``, ``6m0s``); a 429 adds ``retry-after`` (seconds) and ``retry-after-ms``.

State is touched only from the server's event loop (see ``state.py``): no locks; O(1) per request.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .errors import ApiError, format_duration, retry_after_headers

REQUESTS = "requests"
TOKENS = "tokens"
_SHORT = {REQUESTS: "RPM", TOKENS: "TPM"}
_EPSILON = 1e-6  # float slack: a client waiting exactly retry-after must find the units there
RATE_LIMITS_URL = "Visit https://platform.openai.com/account/rate-limits to learn more."


def requested_tokens(body: dict[str, Any], prompt_tokens: int, *, chat: bool, default_output: int) -> int:
    """What a request is charged against the token limit: prompt tokens plus max output tokens."""
    if chat:
        cap = body.get("max_completion_tokens", body.get("max_tokens"))
        n = body.get("n")
        choices = n if isinstance(n, int) and n >= 1 else 1
    else:
        cap = body.get("max_output_tokens")
        choices = 1
    output = cap if isinstance(cap, int) and not isinstance(cap, bool) and cap > 0 else default_output
    return prompt_tokens + output * choices


@dataclass(slots=True)
class Bucket:
    """``limit`` units per ``window_s``, refilled continuously; starts full."""

    limit: int
    window_s: float
    level: float
    updated: float

    @property
    def rate(self) -> float:
        return self.limit / self.window_s

    def refill(self, now: float) -> None:
        self.level = min(float(self.limit), self.level + max(0.0, now - self.updated) * self.rate)
        self.updated = now

    def wait_for(self, amount: int) -> float:
        """Seconds until ``amount`` units are there (0 if they are now)."""
        missing = amount - self.level
        return 0.0 if missing <= _EPSILON else missing / self.rate

    def reset_s(self) -> float:
        """Seconds until the bucket is full again (OpenAI's ``x-ratelimit-reset-*``)."""
        return max(0.0, self.limit - self.level) / self.rate

    def used(self) -> int:
        return math.ceil(self.limit - self.level - _EPSILON)

    def headers(self, kind: str) -> dict[str, str]:
        return {
            f"x-ratelimit-limit-{kind}": str(self.limit),
            f"x-ratelimit-remaining-{kind}": str(max(0, math.floor(self.level + _EPSILON))),
            f"x-ratelimit-reset-{kind}": format_duration(self.reset_s()),
        }


@dataclass(slots=True)
class Admission:
    """Outcome of one admission check: the headers to send, or the 429 to answer with."""

    headers: dict[str, str]
    error: ApiError | None = None
    limit: str | None = None  # which limit refused it: "requests" or "tokens"


@dataclass
class RateLimiter:
    """Per-model request and token buckets; reconfigured (and refilled) when the limits change."""

    buckets: dict[tuple[str, str], Bucket] = field(default_factory=dict)
    settings: tuple[int | None, int | None, float] | None = None

    def configure(self, rpm: int | None, tpm: int | None, window_s: float) -> None:
        """Apply the current limits; any change starts every bucket full again."""
        if self.settings != (rpm, tpm, window_s):
            self.settings = (rpm, tpm, window_s)
            self.buckets.clear()

    def reset(self) -> None:
        self.buckets.clear()

    def _bucket(self, model: str, kind: str, limit: int, window_s: float, now: float) -> Bucket:
        bucket = self.buckets.get((model, kind))
        if bucket is None:
            bucket = self.buckets[(model, kind)] = Bucket(limit, window_s, float(limit), now)
        else:
            bucket.refill(now)
        return bucket

    def admit(self, model: str, tokens: int, now: float) -> Admission:
        """Charge one request of ``tokens`` tokens, or explain (as a 429) why not."""
        if self.settings is None:
            return Admission({})
        rpm, tpm, window_s = self.settings
        wanted: list[tuple[str, Bucket, int]] = []
        if rpm is not None:
            wanted.append((REQUESTS, self._bucket(model, REQUESTS, rpm, window_s, now), 1))
        if tpm is not None:
            wanted.append((TOKENS, self._bucket(model, TOKENS, tpm, window_s, now), tokens))
        if not wanted:
            return Admission({})
        for kind, bucket, amount in wanted:
            if amount > bucket.limit:
                headers = _headers(wanted)
                return Admission(headers, _too_large(model, kind, bucket, amount, window_s, headers), kind)
        waits = [(bucket.wait_for(amount), kind, bucket, amount) for kind, bucket, amount in wanted]
        wait_s, kind, bucket, amount = max(waits, key=lambda w: w[0])
        if wait_s > 0:
            # Rounded up to the millisecond the headers carry: waiting that long is always enough.
            wait_s = math.ceil(wait_s * 1000) / 1000
            headers = {**_headers(wanted), **retry_after_headers(wait_s)}
            return Admission(headers, _exceeded(model, kind, bucket, amount, window_s, wait_s, headers), kind)
        for _, bucket, amount in wanted:
            bucket.level -= amount
        return Admission(_headers(wanted))


def _headers(wanted: list[tuple[str, Bucket, int]]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for kind, bucket, _ in wanted:
        headers.update(bucket.headers(kind))
    return headers


def _per(kind: str, window_s: float) -> str:
    """ "requests per min (RPM)"; a shortened test window says its length instead of "min"."""
    span = "min" if window_s == 60 else format_duration(window_s)
    return f"{kind} per {span} ({_SHORT[kind]})"


def _exceeded(
    model: str, kind: str, bucket: Bucket, amount: int, window_s: float, wait_s: float, headers: dict[str, str]
) -> ApiError:
    return ApiError(
        429,
        f"Rate limit reached for {model} in organization org-emulator on {_per(kind, window_s)}: "
        f"Limit {bucket.limit}, Used {bucket.used()}, Requested {amount}. "
        f"Please try again in {format_duration(wait_s)}. {RATE_LIMITS_URL}",
        kind,
        "rate_limit_exceeded",
        headers=headers,
    )


def _too_large(
    model: str, kind: str, bucket: Bucket, amount: int, window_s: float, headers: dict[str, str]
) -> ApiError:
    return ApiError(
        429,
        f"Request too large for {model} in organization org-emulator on {_per(kind, window_s)}: "
        f"Limit {bucket.limit}, Requested {amount}. The input or output tokens must be reduced in order "
        f"to run successfully. {RATE_LIMITS_URL}",
        kind,
        "rate_limit_exceeded",
        headers=headers,
    )
