"""Run-wide circuit breakers: faults that no amount of per-item retrying can fix.

Per-item retries are right for a blip. They are wrong when the *configuration* is broken: a wrong
base URL, a closed port or a model that does not exist fails every item, and with the default
budget each of a thousand items would retry for an hour. :class:`RunHealth` watches the stream of
outcomes and raises :class:`FlexRunAborted` (naming the connection, never the key) when the run as
a whole cannot succeed:

- connection failures while the server has *never* answered, for ``connect_grace_s`` seconds
  (a blip in the middle of a healthy run is still retried per item);
- a request that can never be sent (unsupported scheme, malformed URL, a key with a newline in it),
  at once;
- the same request-level refusal (404 for the model or the URL, 400 about ``model`` or
  ``service_tier``, or a rate limit resetting hours away) for ``same_refusal_items`` items in a row
  with no success in between.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx2
import openai

from flex_provider.engine.errors import (
    FlexRunAborted,
    WaitTooLong,
    cause_chain,
    describe,
    error_info,
    root_cause,
)

# Causes under an APIConnectionError that mean the request could not even be formed or sent:
# retrying cannot help, whatever the server's health.
_UNSENDABLE = (httpx2.UnsupportedProtocol, httpx2.LocalProtocolError, httpx2.InvalidURL)
_REQUEST_LEVEL_PARAMS = {"model", "service_tier"}


def _unsendable(exc: BaseException) -> BaseException | None:
    """The cause that makes the request unsendable, or None. Named in the message rather than the
    innermost cause: under the aiohttp transport that is aiohttp's own exception (``NonHttpUrlClientError:
    ftp://host/v1/responses``), which says less than httpx2's ("unsupported protocol 'ftp://'")."""
    return next((cause for cause in cause_chain(exc) if isinstance(cause, _UNSENDABLE)), None)


def _refusal_key(exc: BaseException) -> tuple[int, str] | None:
    """A refusal about the request as a whole (not about this item's content), or None."""
    if isinstance(exc, WaitTooLong):
        return 429, "rate_limit_too_long"
    if not isinstance(exc, openai.APIStatusError):
        return None
    body = exc.body if isinstance(exc.body, dict) else {}
    param = body.get("param") if isinstance(body, dict) else None
    if exc.status_code == 404 or (exc.status_code == 400 and param in _REQUEST_LEVEL_PARAMS):
        return exc.status_code, str(getattr(exc, "code", None) or param or "")
    return None


class RunHealth:
    def __init__(
        self,
        endpoint: str,
        *,
        secrets: tuple[str, ...] = (),
        connect_grace_s: float = 60.0,
        same_refusal_items: int = 3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.endpoint = endpoint  # "conn_id='openai_default', base_url=https://..." (never the key)
        self.secrets = secrets
        self.connect_grace_s = connect_grace_s
        self.same_refusal_items = same_refusal_items
        self.clock = clock
        self.answered = False  # any HTTP answer at all, even an error status
        self._first_connect_failure: float | None = None
        self._refusal: tuple[int, str] | None = None
        self._refusal_streak = 0

    # -- request outcomes -------------------------------------------------------------------
    def on_answer(self) -> None:
        self.answered = True

    def on_connection_error(self, exc: BaseException) -> None:
        """Called for every connection-level failure (timeouts excluded: a slow server answers)."""
        unsendable = _unsendable(exc)
        if unsendable is not None:
            raise self._abort(
                f"requests to {self.endpoint} cannot be sent: {describe(unsendable, self.secrets)}. "
                "Check the connection's Base URL (it needs http:// or https://) and that the API key "
                "has no spaces or line breaks."
            )
        if self.answered:
            return
        now = self.clock()
        if self._first_connect_failure is None:
            self._first_connect_failure = now
            return
        waited = now - self._first_connect_failure
        if waited >= self.connect_grace_s:
            raise self._abort(
                f"cannot reach the server for {self.endpoint}: {root_cause(exc, self.secrets)} "
                f"(no answer in {waited:.0f} s of trying). Check the connection's Base URL, host and port."
            )

    # -- item outcomes ------------------------------------------------------------------------
    def on_item_succeeded(self) -> None:
        self._refusal, self._refusal_streak = None, 0

    def on_item_failed(self, exc: BaseException) -> None:
        key = _refusal_key(exc)
        if key is None:
            return  # an item-specific failure says nothing about the others
        if key == self._refusal:
            self._refusal_streak += 1
        else:
            self._refusal, self._refusal_streak = key, 1
        if self._refusal_streak < self.same_refusal_items:
            return
        info = error_info(exc, self.secrets)
        if isinstance(exc, WaitTooLong):
            raise self._abort(f"{info['message']} (the last {self._refusal_streak} items all hit this limit)", info)
        raise self._abort(
            f"the server refused the last {self._refusal_streak} items the same way "
            f"({info.get('status_code')} {info.get('code') or ''}: {info['message']}) at {self.endpoint}; "
            "every other item would be refused too. Check the model name, service_tier and Base URL.",
            info,
        )

    @staticmethod
    def _abort(message: str, info: dict[str, Any] | None = None) -> FlexRunAborted:
        return FlexRunAborted(
            f"flex run stopped: {message} Finished items are kept; fix it and retry the task.", info or {}
        )
