"""Helpers for the engine unit tests: real openai SDK exceptions, built the way the SDK does.

``openai._client.OpenAI._make_status_error`` picks the exception class from the status code and
passes the *inner* ``error`` object of the JSON body as ``body`` (``exc.code``/``exc.type`` come
from it); ``test_engine_errors.py`` checks that these factories match the SDK's own construction.
"""

from __future__ import annotations

from typing import Any

import httpx2
import openai

URL = "http://emulator.invalid/v1/responses"

_CLASS_BY_STATUS: dict[int, type[openai.APIStatusError]] = {
    400: openai.BadRequestError,
    401: openai.AuthenticationError,
    403: openai.PermissionDeniedError,
    404: openai.NotFoundError,
    409: openai.ConflictError,
    422: openai.UnprocessableEntityError,
    429: openai.RateLimitError,
}


def make_api_error(
    status: int,
    *,
    code: str | None = None,
    type_: str | None = None,
    message: str = "something went wrong",
    headers: dict[str, str] | None = None,
    request_id: str | None = None,
) -> openai.APIStatusError:
    error: dict[str, Any] = {"message": message, "type": type_, "param": None, "code": code}
    all_headers = dict(headers or {})
    if request_id is not None:
        all_headers["x-request-id"] = request_id
    request = httpx2.Request("POST", URL)
    response = httpx2.Response(status, request=request, headers=all_headers, json={"error": error})
    if status in _CLASS_BY_STATUS:
        cls = _CLASS_BY_STATUS[status]
    elif status >= 500:
        cls = openai.InternalServerError
    else:
        cls = openai.APIStatusError
    return cls(f"Error code: {status} - {message}", response=response, body=error)


def make_connection_error() -> openai.APIConnectionError:
    return openai.APIConnectionError(request=httpx2.Request("POST", URL))


def make_timeout_error() -> openai.APITimeoutError:
    return openai.APITimeoutError(request=httpx2.Request("POST", URL))
