"""OpenAI-shaped error bodies and the JSON response helper.

The openai SDK picks the exception class from the HTTP status and copies ``error.code`` /
``error.type`` / ``error.param`` from the body, so those fields must be exactly where the SDK
looks: ``{"error": {"message", "type", "param", "code"}}``. Messages mirror the real API's
wording where it is known, so log lines and assertions look the same against both.
"""

from __future__ import annotations

import json
import math
from typing import Any

from starlette.responses import Response

RESOURCE_UNAVAILABLE_MESSAGE = (
    "Resource Unavailable: flex capacity is exhausted, please retry later or use service_tier=default"
)
QUOTA_MESSAGE = (
    "You exceeded your current quota, please check your plan and billing details. For more information "
    "on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors."
)
SERVER_ERRORS: dict[int, str] = {
    500: "The server had an error while processing your request. Sorry about that!",
    502: "Bad gateway.",
    503: "The server is overloaded or not ready yet.",
}

_SEPARATORS = (",", ":")


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """Serialise with the std-lib encoder straight to bytes (no pydantic, no re-validation)."""
    body = json.dumps(obj, separators=_SEPARATORS, ensure_ascii=False).encode("utf-8")
    return Response(content=body, status_code=status, headers=headers, media_type="application/json")


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class ApiError(Exception):
    """Raised inside a handler to answer with an OpenAI error; carries status, body and headers."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param
        self.headers = headers or {}

    def response(self) -> Response:
        return json_response(error_body(self.message, self.type, self.code, self.param), self.status, self.headers)


def format_duration(seconds: float) -> str:
    """Go-style duration as OpenAI prints in ``x-ratelimit-reset-*``: "17ms", "1s", "8.64s", "6m0s"."""
    millis = max(0, math.ceil(seconds * 1000 - 1e-6))  # rounded up: a reset or a wait is never understated
    if millis < 1000:
        return f"{millis}ms"
    if millis < 60_000:
        text = f"{millis / 1000:.3f}".rstrip("0").rstrip(".")
        return f"{text}s"
    minutes, secs = divmod(math.ceil(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes}m{secs}s" if hours else f"{minutes}m{secs}s"


def retry_after_headers(seconds: float) -> dict[str, str]:
    """``retry-after`` (seconds, integer when whole) plus ``retry-after-ms``; the SDK reads both."""
    whole = float(seconds).is_integer()
    return {
        "retry-after": str(int(seconds)) if whole else f"{seconds:.3f}".rstrip("0"),
        "retry-after-ms": str(math.ceil(seconds * 1000 - 1e-6)),
    }


def mask_key(key: str) -> str:
    """Show a key the way OpenAI does in 401 messages: never the whole secret."""
    if len(key) <= 8:
        return "*" * len(key)
    return f"{key[:3]}{'*' * min(20, len(key) - 7)}{key[-4:]}"


def invalid_api_key(provided: str | None) -> ApiError:
    if not provided:
        message = (
            "You didn't provide an API key. You need to provide your API key in an Authorization header "
            "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
        )
    else:
        message = f"Incorrect API key provided: {mask_key(provided)}."
    return ApiError(401, message, "invalid_request_error", "invalid_api_key")


def model_not_found(model: str) -> ApiError:
    return ApiError(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        "invalid_request_error",
        "model_not_found",
    )
