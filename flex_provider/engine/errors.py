"""What went wrong, and what the engine should do about it.

Every exception raised while talking to the API is sorted into one :class:`Verdict`. The retry
strategies, the concurrency limiter and the runner all act on the verdict, never on message text
(``exc.code`` and ``exc.status_code`` are what the openai SDK parses from the response for us).
"""

from __future__ import annotations

import enum
import json
import re
from typing import Any

import openai

__all__ = [
    "MALFORMED_ERRORS",
    "FlexInputError",
    "FlexRunAborted",
    "MalformedResponseError",
    "OutputValidationError",
    "Verdict",
    "WaitTooLong",
    "classify",
    "describe",
    "error_info",
    "redact",
]


class Verdict(enum.StrEnum):
    UNAVAILABLE = "unavailable"  # 429 resource_unavailable: flex has no capacity right now
    RATE_LIMITED = "rate_limited"  # 429 rate_limit_exceeded: our RPM/TPM limits
    TRANSIENT = "transient"  # 408, 409, 5xx, connection errors, timeouts
    ITEM_FAILED = "item_failed"  # 400, 404, 422, invalid output: this item will never succeed
    FATAL = "fatal"  # 401, 403, 429 insufficient_quota: no item can succeed, stop the run


class FlexInputError(ValueError):
    """Bad user input, named by field (``items[3]``, ``input_path line 12``, ``prompt_template``)."""


class FlexRunAborted(RuntimeError):
    """A run-wide error (bad key, no quota, no permission): retrying N items would only fail N times."""

    def __init__(self, message: str, info: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.info = info or {}


class OutputValidationError(ValueError):
    """The model answered, but not with JSON matching the requested schema (the item fails).

    Carries the usage and served tier of the answer, since it was billed all the same."""

    usage: Any = None
    service_tier: str | None = None
    model: str | None = None
    limits: Any = None  # the answer's rate-limit headers (a ratelimit.RateLimits)


class MalformedResponseError(RuntimeError):
    """The server answered 200 but not with a response we can read (invalid JSON, HTML, an empty or
    ``null`` body, no ``output``/``choices``). A proxy or an overloaded server does this now and then:
    the item is retried within its budget, it never stops the run."""

    limits: Any = None  # the answer's rate-limit headers (a ratelimit.RateLimits), when it had any


class WaitTooLong(RuntimeError):
    """A 429 rate_limit_exceeded whose reset is further away than this item may wait (a daily
    limit). The item ends at once as a *retryable* failure instead of sleeping for hours; when item
    after item gets it, :class:`~flex_provider.engine.health.RunHealth` stops the run."""


# A 200 that cannot be read: ours (a body without the fields we need), or what the SDK raises itself
# (``response.json()`` fails with a JSONDecodeError; strict validation, APIResponseValidationError).
MALFORMED_ERRORS = (MalformedResponseError, json.JSONDecodeError, openai.APIResponseValidationError)

_FATAL_STATUS = {401, 403}
_ITEM_STATUS = {400, 404, 422}
_TRANSIENT_STATUS = {408, 409}


def classify(exc: BaseException) -> Verdict:
    """Sort an exception raised by a create/retrieve call into a :class:`Verdict`."""
    if isinstance(exc, OutputValidationError):
        return Verdict.ITEM_FAILED
    if isinstance(exc, MALFORMED_ERRORS):
        return Verdict.TRANSIENT
    if isinstance(exc, openai.APIConnectionError):  # includes APITimeoutError
        return Verdict.TRANSIENT
    if isinstance(exc, openai.APIStatusError):
        status, code = exc.status_code, _error_code(exc)
        if status == 429:
            if code == "insufficient_quota":
                return Verdict.FATAL
            if code == "resource_unavailable":
                return Verdict.UNAVAILABLE
            return Verdict.RATE_LIMITED
        if status in _FATAL_STATUS:
            return Verdict.FATAL
        if status in _ITEM_STATUS:
            return Verdict.ITEM_FAILED
        if status in _TRANSIENT_STATUS or status >= 500:
            return Verdict.TRANSIENT
        return Verdict.ITEM_FAILED
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return Verdict.TRANSIENT
    return Verdict.ITEM_FAILED


def _error_code(exc: openai.APIStatusError) -> str | None:
    code = getattr(exc, "code", None)
    if code:
        return str(code)
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error", body) if isinstance(body, dict) else {}
    if isinstance(error, dict):
        return error.get("code") or error.get("type")
    return None


# OpenAI echoes a masked key in 401 messages ("Incorrect API key provided: sk-proj-****abcd").
# Even masked, a key fragment does not belong in logs, XCom or result files.
_KEY_PATTERN = re.compile(r"\b(sk|sess|rk)-[A-Za-z0-9_\-*]{4,}")


def _secret_forms(secret: str) -> list[str]:
    """A key as it may appear in a message: as is, escaped by ``repr`` (an HTTP library complaining
    about ``b'Bearer sk-...\\n'``), and each line of it (a key with a newline pasted in)."""
    forms = {secret, repr(secret)[1:-1], repr(secret.encode("utf-8", "backslashreplace"))[2:-1]}
    forms.update(part for part in secret.splitlines() if len(part.strip()) >= 4)
    return sorted((f for f in forms if f), key=len, reverse=True)


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Remove API keys (known ones, in any escaped form, and anything shaped like one) from a message."""
    for secret in secrets:
        if secret:
            for form in _secret_forms(secret):
                text = text.replace(form, "***")
    return _KEY_PATTERN.sub(r"\1-***", text)


def cause_chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it was raised from, outermost first (each once: chains can loop)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def describe(exc: BaseException, secrets: tuple[str, ...] = ()) -> str:
    """``Type: message`` of one exception, secrets removed (just ``Type`` when it has no message)."""
    message = str(exc).strip()
    return redact(f"{type(exc).__name__}: {message}", secrets) if message else type(exc).__name__


def root_cause(exc: BaseException, secrets: tuple[str, ...] = ()) -> str:
    """``Type: message`` of the most specific cause under an SDK error. The SDK says only
    "Connection error."; the cause (refused, unknown host, unsupported scheme) is what a person needs.
    Under httpx2 that is an OS error (``ConnectionRefusedError: [Errno 111] Connect call failed``);
    under aiohttp, the same OS error below aiohttp's ``ClientConnectorError``."""
    for candidate in reversed(cause_chain(exc)):
        if str(candidate).strip():
            return describe(candidate, secrets)
    return type(exc).__name__


def error_info(exc: BaseException, secrets: tuple[str, ...] = ()) -> dict[str, Any]:
    """The JSON-safe ``error`` field of a failed record: type, message and, for API errors, status/code."""
    info: dict[str, Any] = {"type": type(exc).__name__}
    if isinstance(exc, openai.APIStatusError):
        info["status_code"] = exc.status_code
        info["code"] = _error_code(exc)
        body = exc.body if isinstance(exc.body, dict) else None
        message = body.get("message") if body else None
        if message is None and body and isinstance(body.get("error"), dict):
            message = body["error"].get("message")
        info["message"] = redact(str(message or exc.message), secrets)
        if exc.request_id:
            info["request_id"] = exc.request_id
    else:
        info["message"] = redact(str(exc) or type(exc).__name__, secrets)
    return info
