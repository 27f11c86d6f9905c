"""The FastAPI app: OpenAI-compatible routes plus ``/emulator/*`` control routes.

Routes are registered as plain Starlette endpoints taking the raw ``Request`` and reading JSON by
hand: FastAPI's body validation and dependency injection would dominate the per-request CPU, and
the whole point of the emulator is to cost nothing next to the client under test.

Order of checks for a generation request (first match answers):
auth (401) -> JSON body (400) -> model known (404) -> service_tier valid / flex allowed for the
model (400) -> stream unsupported (400) -> input present (400) -> insufficient_quota (429) ->
request and token limits per window, per model, all tiers (``rpm_limit``/``tpm_limit``: 429
rate_limit_exceeded, type ``requests`` or ``tokens``; see ``ratelimit.py``) -> ``long_wait_rate``
(429 rate_limit_exceeded on requests per day, ``retry-after: long_wait_s``) -> injected 5xx (``error_rate``) -> flex capacity then
``unavailable_rate`` (429 resource_unavailable, flex only) -> hang (``hang_rate``) -> latency ->
``reset_rate`` (200 headers and a few bytes, then the connection is closed) -> ``malformed_rate``
(200 with a broken body, one of ``malformed_kinds``) -> answer, sent one byte every
``trickle_interval_s`` if ``trickle_rate`` picked it. Quota, rate-limit and capacity failures come
before any latency, like the real service. Every answer past the rate limiter carries its
``x-ratelimit-*`` headers (when a limit is set), errors included.

Latency is per tier: ``latency_s`` for ``service_tier="flex"``, ``standard_latency_s`` for every
other tier, on both APIs and for background responses (whose queued + in_progress time is that
latency), so deadline logic can count on standard being fast and flex slow.

Answered requests are billed (``stats["billing"]``, see ``billing.py``) when their answer is
computed: inline 200s and background responses that finish; failures are not billed.

The fault knobs (``long_wait_rate``, ``reset_rate``, ``malformed_rate``, ``trickle_rate``) apply to
inline requests only, never to ``background=true`` creates; each is drawn from the seeded RNG only
when its rate is above 0, so with them at 0 the RNG sequence (and the hot path) is unchanged. At
most one of reset/malformed/trickle hits a request (drawn in that order). Every fault is counted in
``stats["faults"]``. Per input, a malformed answer is recorded as status 200 but not succeeded, a
dropped connection as status 0, a trickled answer as 200 and succeeded once its last byte is sent
(499 and not succeeded if the client leaves first).

The emulator never logs request bodies (they may hold private documents); uvicorn's access log
is off in both the CLI and ``serve_in_thread``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .billing import standard_price
from .config import EmulatorConfig
from .content import Prompt, prompt_from_chat, prompt_from_responses
from .errors import (
    QUOTA_MESSAGE,
    RESOURCE_UNAVAILABLE_MESSAGE,
    SERVER_ERRORS,
    ApiError,
    format_duration,
    invalid_api_key,
    json_response,
    model_not_found,
    retry_after_headers,
)
from .payloads import (
    OutputFormat,
    chat_completion_object,
    complete,
    fill_completed,
    format_from_chat,
    format_from_responses,
    model_object,
    new_id,
    response_object,
)
from .ratelimit import requested_tokens
from .state import EmulatorState, StoredResponse

VALID_TIERS = frozenset(("auto", "default", "flex", "priority", "scale", "fast", "ultrafast"))
SERVED_TIER = {"auto": "default", "default": "default"}
HANG_POLL_S = 0.2
CLIENT_CLOSED_REQUEST = 499  # nginx's code; only ever seen in stats, the client is gone
CONNECTION_DROPPED = 0  # stats status of a reset_rate answer: no complete HTTP answer was sent
LONG_WAIT_RPD_LIMIT = 10_000  # the daily request limit a long_wait_rate 429 claims was reached
RESET_DECLARED_LENGTH = 4096  # Content-Length announced by a dropped answer (more than is sent)

Handler = Callable[[Request], Awaitable[Response]]


class RequestIdMiddleware:
    """Pure-ASGI middleware adding ``x-request-id`` to every response (errors and 404s included).

    Pure ASGI rather than ``@app.middleware("http")``: the latter wraps each request in extra tasks
    and streams, a measurable cost at thousands of requests per second.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ("req_" + os.urandom(16).hex()).encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id)]
            await send(message)

        await self.app(scope, receive, send_with_id)


def _state(request: Request) -> EmulatorState:
    state: EmulatorState = request.app.state.emulator
    return state


def _check_auth(request: Request, state: EmulatorState) -> None:
    """Raise 401 unless ``config.api_key`` is None or the bearer token matches it."""
    expected = state.config.api_key
    if expected is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or token != expected:
        state.stats.auth_failures += 1
        raise invalid_api_key(token or None)


async def _read_json(request: Request) -> dict[str, Any] | None:
    raw = await request.body()
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


BAD_JSON = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your "
    "HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)"
)


def _latency(state: EmulatorState, flex: bool) -> float:
    cfg = state.config
    mean = cfg.latency_s if flex else cfg.standard_latency_s
    if mean <= 0:
        return 0.0
    jitter = cfg.latency_jitter
    return max(0.0, state.rng.uniform(mean * (1 - jitter), mean * (1 + jitter)))


async def _hang(request: Request, seconds: float) -> bool:
    """Sleep ``seconds`` unless the client goes away first; True when it disconnected.

    Polling for the disconnect lets a timed-out client free its flex slot, instead of the hung
    request holding it for an hour.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (remaining := deadline - loop.time()) > 0:
        await asyncio.sleep(min(HANG_POLL_S, remaining))
        if await request.is_disconnected():
            return True
    return False


class _Gen:
    """Per-request facts of a generation request, gathered before the checks run."""

    __slots__ = ("body", "chat", "fmt", "headers", "model", "prompt", "tier")

    def __init__(self, chat: bool) -> None:
        self.chat = chat
        self.body: dict[str, Any] = {}
        self.tier = "unknown"
        self.model = ""
        self.prompt: Prompt | None = None
        self.fmt = OutputFormat()
        self.headers: dict[str, str] = {}


def _admission(state: EmulatorState, gen: _Gen) -> None:
    """Validation and injected failures that answer before any latency (raises ApiError)."""
    cfg = state.config
    body = gen.body
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "Missing required parameter: 'model'.", code="missing_required_parameter", param="model")
    if model not in cfg.models:
        raise model_not_found(model)
    tier = gen.tier
    if tier not in VALID_TIERS:
        raise ApiError(
            400,
            f"Invalid value: '{tier}'. Supported values are: 'auto', 'default', 'flex', 'scale' and 'priority'.",
            code="invalid_value",
            param="service_tier",
        )
    if tier == "flex" and model not in cfg.flex_models:
        raise ApiError(
            400,
            f"Flex processing (service_tier='flex') is not available for model `{model}`. "
            f"Use one of: {', '.join(cfg.flex_models)}, or service_tier='default'.",
            code="unsupported_value",
            param="service_tier",
        )
    if body.get("stream"):
        raise ApiError(
            400, "Streaming is not supported by the flex emulator.", code="unsupported_value", param="stream"
        )
    prompt = gen.prompt
    if prompt is None or not prompt.valid:
        message = prompt.error if prompt is not None and prompt.error else "Invalid request."
        raise ApiError(400, message, code="missing_required_parameter", param=prompt.error_param if prompt else None)
    if cfg.insufficient_quota:
        raise ApiError(429, QUOTA_MESSAGE, "insufficient_quota", "insufficient_quota")
    tokens = requested_tokens(body, prompt.input_tokens, chat=gen.chat, default_output=cfg.tpm_default_output_tokens)
    if cfg.rpm_limit is not None or cfg.tpm_limit is not None:
        admission = state.limiter.admit(model, tokens, time.monotonic())
        gen.headers = admission.headers
        if admission.error is not None:
            state.stats.rate_limited[admission.limit or "requests"] += 1
            raise admission.error
    state.stats.admitted["requests"] += 1
    state.stats.admitted["tokens"] += tokens
    if cfg.long_wait_rate > 0 and (gen.chat or not body.get("background")) and state.rng.random() < cfg.long_wait_rate:
        state.stats.faults["long_wait"] += 1
        state.stats.rate_limited["requests_per_day"] += 1
        raise _long_wait_error(model, cfg.long_wait_s)
    retry_headers = retry_after_headers(cfg.retry_after_s) if cfg.retry_after_s is not None else {}
    if cfg.error_rate > 0 and state.rng.random() < cfg.error_rate:
        status = state.rng.choice((500, 502, 503))
        raise ApiError(status, SERVER_ERRORS[status], "server_error", headers=retry_headers if status == 503 else None)
    if tier == "flex":
        capacity = cfg.flex_capacity
        if (capacity is not None and state.flex_in_flight >= capacity) or (
            cfg.unavailable_rate > 0 and state.rng.random() < cfg.unavailable_rate
        ):
            state.stats.unavailable += 1
            raise ApiError(
                429, RESOURCE_UNAVAILABLE_MESSAGE, "rate_limit_error", "resource_unavailable", headers=retry_headers
            )


async def _generation(request: Request, endpoint: str, chat: bool) -> Response:
    """Shared flow of ``POST /v1/responses`` and ``POST /v1/chat/completions``."""
    state = _state(request)
    stats = state.stats
    stats.by_endpoint[endpoint] += 1
    gen = _Gen(chat)
    body = await _read_json(request)
    if body is not None:
        gen.body = body
        tier = body.get("service_tier")
        gen.tier = tier if isinstance(tier, str) else "auto"
        gen.prompt = prompt_from_chat(body) if chat else prompt_from_responses(body)
    key = gen.prompt.key if gen.prompt is not None and gen.prompt.valid else None
    try:
        _check_auth(request, state)
        if body is None:
            raise ApiError(400, BAD_JSON)
        _admission(state, gen)
    except ApiError as exc:
        stats.record(gen.tier, exc.status, key, succeeded=False, code=exc.code)
        # Rate-limit headers go on every answer past the limiter; an error's own (a daily limit's) win.
        exc.headers = {**gen.headers, **exc.headers}
        return exc.response()

    cfg = state.config
    flex = gen.tier == "flex"
    served = SERVED_TIER.get(gen.tier, gen.tier)
    gen.model = body["model"]
    gen.fmt = format_from_chat(body) if chat else format_from_responses(body)
    headers = gen.headers
    hang = cfg.hang_rate > 0 and state.rng.random() < cfg.hang_rate
    latency = _latency(state, flex)
    fault = None
    if cfg.reset_rate > 0 or cfg.malformed_rate > 0 or cfg.trickle_rate > 0:
        fault = _draw_fault(state, gen)

    if flex:
        state.acquire_flex()
    state.in_flight_all += 1
    slot_transferred = False
    handed_over = False  # a trickled answer does the cleanup below once its body is sent
    task = asyncio.current_task()
    if task is not None:
        state.handlers.add(task)
    try:
        if hang:
            stats.hangs += 1
            if await _hang(request, cfg.hang_s):
                stats.disconnects += 1
                stats.record(gen.tier, CLIENT_CLOSED_REQUEST, key, succeeded=False, code=None)
                return Response(status_code=CLIENT_CLOSED_REQUEST)
        if not chat and body.get("background"):
            slot_transferred = flex
            return _start_background(state, gen, served, latency, key, headers)
        started = time.perf_counter()
        await asyncio.sleep(latency)
        if fault is not None and fault != "trickle":
            return _broken_answer(state, gen, fault, key)
        obj = _finish(state, gen, served, chat)
        headers["openai-processing-ms"] = str(int((time.perf_counter() - started) * 1000))
        if not chat and body.get("store", True) is not False:
            state.remember(StoredResponse(id=obj["id"], data=obj, background=False, input_key=key), finished=True)
        if fault == "trickle":
            stats.faults["trickle"] += 1
            handed_over = True
            return TrickleResponse(obj, headers, state, gen.tier, key, flex, task)
        stats.record(gen.tier, 200, key, succeeded=True, code=None)
        return json_response(obj, 200, headers)
    except asyncio.CancelledError:
        if not state.closing:
            raise
        # Cancelled by ``EmulatorState.close_inflight`` (server stopping): answer instead of
        # leaving the client hanging and uvicorn logging a traceback per request.
        stats.record(gen.tier, 503, key, succeeded=False, code=None)
        return ApiError(503, "The emulator is shutting down.", "server_error").response()
    finally:
        if not handed_over:
            _release(state, task, flex and not slot_transferred)


def _release(state: EmulatorState, task: asyncio.Task[Any] | None, flex_slot: bool) -> None:
    """End of a generation request's in-flight accounting."""
    if task is not None:
        state.handlers.discard(task)
    state.in_flight_all -= 1
    if flex_slot:
        state.release_flex()


def _finish(state: EmulatorState, gen: _Gen, served: str, chat: bool) -> dict[str, Any]:
    """Compute the answer (prompt cache included) and render it in the right API shape."""
    body, model, prompt = gen.body, gen.model, gen.prompt
    assert prompt is not None
    cfg = state.config
    cache = state.cache.lookup(model, prompt, served, cfg.cache_min_tokens)
    if chat:
        effort = body.get("reasoning_effort")
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    else:
        reasoning = body.get("reasoning")
        effort = reasoning.get("effort") if isinstance(reasoning, dict) else None
        max_tokens = body.get("max_output_tokens")
    done = complete(prompt, gen.fmt, model, effort, max_tokens, cache)
    state.cache.store(model, prompt, served, cfg.cache_min_tokens)
    usage = done.usage_counts()
    state.stats.add_tokens(served, usage)
    state.stats.billing.add(model, served, usage, standard_price(model, cfg.prices))
    named = model + cfg.model_snapshot_suffix if cfg.model_snapshot_suffix else model  # as the answer names it
    if chat:
        return chat_completion_object(body=body, model=named, served_tier=served, done=done)
    obj = response_object(
        rid=new_id("resp_"),
        body=body,
        model=named,
        served_tier=served,
        status="in_progress",
        created_at=int(time.time()),
        background=bool(body.get("background")),
    )
    return fill_completed(obj, done, model, cache)


# ------------------------------------------------------------------------------------ faults


class ConnectionDropped(Exception):
    """Raised after a partial answer so that uvicorn closes the socket (``reset_rate``).

    ASGI has no "abort connection" message; an exception after ``http.response.start`` is what makes
    uvicorn close the transport. Its error log line for this exception is filtered out (see
    ``_QuietDrops``): a drop is the intended behaviour, not a bug.
    """


class _QuietDrops(logging.Filter):
    """Drop uvicorn's "Exception in ASGI application" record when the exception is a deliberate drop."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ConnectionDropped))


def _install_log_filter() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _QuietDrops) for f in logger.filters):
        logger.addFilter(_QuietDrops())


def _long_wait_error(model: str, wait_s: float) -> ApiError:
    """429 rate_limit_exceeded on a daily request limit: the reset is hours away."""
    limit = LONG_WAIT_RPD_LIMIT
    headers = {
        "x-ratelimit-limit-requests": str(limit),
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": format_duration(wait_s),
        **retry_after_headers(wait_s),
    }
    return ApiError(
        429,
        f"Rate limit reached for {model} in organization org-emulator on requests per day (RPD): "
        f"Limit {limit}, Used {limit}, Requested 1. Please try again in {format_duration(wait_s)}. "
        "Visit https://platform.openai.com/account/rate-limits to learn more.",
        "requests",
        "rate_limit_exceeded",
        headers=headers,
    )


def _draw_fault(state: EmulatorState, gen: _Gen) -> str | None:
    """Pick at most one of reset / malformed / trickle for an inline request (seeded RNG)."""
    if not gen.chat and gen.body.get("background"):
        return None
    cfg, rng = state.config, state.rng
    if cfg.reset_rate > 0 and rng.random() < cfg.reset_rate:
        return "reset"
    if cfg.malformed_rate > 0 and rng.random() < cfg.malformed_rate:
        return "malformed:" + rng.choice(cfg.malformed_kinds)
    if cfg.trickle_rate > 0 and rng.random() < cfg.trickle_rate:
        return "trickle"
    return None


MALFORMED_HTML = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)


def _malformed_body(kind: str, gen: _Gen) -> tuple[bytes, str]:
    """(body, media type) of a broken 200 answer."""
    if kind == "html":
        return MALFORMED_HTML, "text/html"
    if kind == "empty":
        return b"", "application/json"
    if kind == "null":
        return b"null", "application/json"
    rid = new_id("chatcmpl-") if gen.chat else new_id("resp_")
    kind_name = "chat.completion" if gen.chat else "response"
    if kind == "invalid_json":
        field = "choices" if gen.chat else "output"
        return f'{{"id": "{rid}", "object": "{kind_name}", "model": "{gen.model}", "{field}": ['.encode(), (
            "application/json"
        )
    # no_output: a well-formed object of the right kind, minus output / choices
    obj: dict[str, Any] = {"id": rid, "object": kind_name, "model": gen.model}
    obj["created" if gen.chat else "created_at"] = int(time.time())
    return json.dumps(obj).encode(), "application/json"


def _broken_answer(state: EmulatorState, gen: _Gen, fault: str, key: str | None) -> Response:
    """A malformed 200 answer or a dropped connection; neither counts as a success."""
    stats = state.stats
    if fault == "reset":
        stats.faults["reset"] += 1
        stats.record(gen.tier, CONNECTION_DROPPED, key, succeeded=False, code=None)
        return DroppedResponse(gen)
    kind = fault.partition(":")[2]
    stats.faults["malformed"] += 1
    stats.malformed_kinds[kind] += 1
    stats.record(gen.tier, 200, key, succeeded=False, code=None)
    body, media_type = _malformed_body(kind, gen)
    return Response(content=body, status_code=200, headers=gen.headers, media_type=media_type)


class DroppedResponse(Response):
    """200 headers announcing ``RESET_DECLARED_LENGTH`` bytes, the start of a body, then a drop."""

    def __init__(self, gen: _Gen) -> None:
        super().__init__(status_code=200, headers=gen.headers, media_type="application/json")
        rid = new_id("chatcmpl-") if gen.chat else new_id("resp_")
        self.prefix = f'{{"id":"{rid}","object":"{"chat.completion" if gen.chat else "response"}",'.encode()
        self.raw_headers = [
            *(h for h in self.raw_headers if h[0] != b"content-length"),
            (b"content-length", str(RESET_DECLARED_LENGTH).encode()),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.prefix, "more_body": True})
        raise ConnectionDropped("reset_rate: connection dropped on purpose")


async def _wait_disconnect(receive: Receive) -> None:
    """Return once the client has gone (the request body was already read)."""
    while (await receive())["type"] != "http.disconnect":
        pass


class TrickleResponse(Response):
    """A valid 200 answer whose body goes out one byte every ``trickle_interval_s``.

    Headers (with the true Content-Length) go first. The request stays in flight (flex slot,
    ``in_flight_all``, shutdown handling) until the last byte is sent; it is recorded as succeeded
    only then. If the client disconnects, trickling stops at once and the request counts as 499.
    """

    def __init__(
        self,
        obj: dict[str, Any],
        headers: dict[str, str],
        state: EmulatorState,
        tier: str,
        key: str | None,
        flex: bool,
        task: asyncio.Task[Any] | None,
    ) -> None:
        super().__init__(
            content=json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8"),
            status_code=200,
            headers=headers,
            media_type="application/json",
        )
        self.state, self.tier, self.key, self.flex, self.task = state, tier, key, flex, task
        self.interval = state.config.trickle_interval_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = self.state
        status = CONNECTION_DROPPED
        watcher: asyncio.Task[None] | None = None
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            watcher = asyncio.ensure_future(_wait_disconnect(receive))
            body = self.body
            last = len(body) - 1
            for i in range(len(body)):
                await send({"type": "http.response.body", "body": body[i : i + 1], "more_body": i < last})
                if i < last:
                    done, _ = await asyncio.wait((watcher,), timeout=self.interval)
                    if done:
                        status = CLIENT_CLOSED_REQUEST
                        state.stats.disconnects += 1
                        return
            status = 200
        except asyncio.CancelledError:
            if not state.closing:
                raise
            # Server stopping (``close_inflight``): the headers are out, so the only way to end is a drop.
            raise ConnectionDropped("shutdown while trickling") from None
        finally:
            if watcher is not None:
                watcher.cancel()
            state.stats.record(self.tier, status, self.key, succeeded=status == 200, code=None)
            _release(state, self.task, self.flex)


# ------------------------------------------------------------------------------- background mode


def _start_background(
    state: EmulatorState, gen: _Gen, served: str, latency: float, key: str | None, headers: dict[str, str]
) -> Response:
    """Store a queued response and let a task move it to in_progress and completed.

    A flex request's capacity slot (taken by the handler) is handed over to the record and held
    until the background work finishes or is cancelled: queued/in_progress flex work counts as
    in flight, like a synchronous request would.
    """
    obj = response_object(
        rid=new_id("resp_"),
        body=gen.body,
        model=gen.model,
        served_tier=served,
        status="queued",
        created_at=int(time.time()),
        background=True,
    )
    rec = StoredResponse(id=obj["id"], data=obj, background=True, input_key=key, holds_flex_slot=gen.tier == "flex")
    state.remember(rec, finished=False)
    rec.task = asyncio.get_running_loop().create_task(_run_background(state, rec, gen, served, latency))
    state.stats.background["created"] += 1
    state.stats.record(gen.tier, 200, key, succeeded=False, code=None)
    return json_response(dict(obj), 200, headers)


async def _run_background(state: EmulatorState, rec: StoredResponse, gen: _Gen, served: str, latency: float) -> None:
    """queued (10% of latency) -> in_progress (90%) -> completed/incomplete."""
    try:
        await asyncio.sleep(latency * 0.1)
        rec.data = {**rec.data, "status": "in_progress"}
        await asyncio.sleep(latency * 0.9)
        finished = _finish(state, gen, served, chat=False)
        finished["id"] = rec.id
        finished["created_at"] = rec.data["created_at"]
        finished["background"] = True
        rec.data = finished
        state.store.finish(rec, time.monotonic())
        state.stats.background["completed"] += 1
        state.stats.mark_succeeded(rec.input_key)
    finally:
        state.release_record(rec)


async def retrieve_response(request: Request) -> Response:
    state = _state(request)
    state.stats.by_endpoint["responses.retrieve"] += 1
    try:
        _check_auth(request, state)
        rec = _get_stored(state, request.path_params["response_id"])
    except ApiError as exc:
        return exc.response()
    if rec.background:
        state.stats.background["polled"] += 1
    return json_response(rec.data)


async def cancel_response(request: Request) -> Response:
    """Cancel a queued/in_progress background response.

    Semantics chosen (matching the documented API): only background responses can be cancelled
    (400 otherwise); cancelling one that already finished (completed, incomplete or cancelled)
    returns it unchanged with 200, so cancel is idempotent.
    """
    state = _state(request)
    state.stats.by_endpoint["responses.cancel"] += 1
    try:
        _check_auth(request, state)
        rec = _get_stored(state, request.path_params["response_id"])
        if not rec.background:
            raise ApiError(400, "Only responses created with background=true can be cancelled.", param="response_id")
    except ApiError as exc:
        return exc.response()
    if rec.task is not None:
        rec.task.cancel()
        state.release_record(rec)
        rec.data = {**rec.data, "status": "cancelled", "output": [], "usage": None}
        state.store.finish(rec, time.monotonic())
        state.stats.background["cancelled"] += 1
    return json_response(rec.data)


def _get_stored(state: EmulatorState, rid: str) -> StoredResponse:
    rec = state.lookup(rid)
    if rec is None:
        raise ApiError(404, f"Response with id '{rid}' not found.", param="response_id")
    return rec


# ------------------------------------------------------------------------------------ endpoints


async def create_response(request: Request) -> Response:
    return await _generation(request, "responses.create", chat=False)


async def create_chat_completion(request: Request) -> Response:
    return await _generation(request, "chat.completions.create", chat=True)


async def list_models(request: Request) -> Response:
    state = _state(request)
    state.stats.by_endpoint["models.list"] += 1
    try:
        _check_auth(request, state)
    except ApiError as exc:
        return exc.response()
    return json_response({"object": "list", "data": [model_object(m) for m in state.config.models]})


async def get_model(request: Request) -> Response:
    state = _state(request)
    state.stats.by_endpoint["models.retrieve"] += 1
    model = request.path_params["model_id"]
    try:
        _check_auth(request, state)
        if model not in state.config.models:
            raise model_not_found(model)
    except ApiError as exc:
        return exc.response()
    return json_response(model_object(model))


async def emulator_stats(request: Request) -> Response:
    return json_response(_state(request).snapshot())


async def emulator_reset(request: Request) -> Response:
    _state(request).reset()
    return json_response({"ok": True})


async def emulator_get_config(request: Request) -> Response:
    return json_response(_state(request).config.public_dict())


async def emulator_set_config(request: Request) -> Response:
    """Partial update of knobs, e.g. ``{"unavailable_rate": 0.5}``; 400 on unknown/invalid knobs."""
    state = _state(request)
    body = await _read_json(request)
    if body is None:
        return ApiError(400, BAD_JSON).response()
    try:
        config = state.update_config(body)
    except ValueError as exc:  # pydantic.ValidationError is a ValueError
        return ApiError(400, f"Invalid emulator config: {exc}").response()
    return json_response(config.public_dict())


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unknown routes and wrong methods answer in OpenAI's error shape too."""
    status = exc.status_code if isinstance(exc, StarletteHTTPException) else 500
    message = f"Invalid URL ({request.method} {request.url.path})" if status in (404, 405) else str(exc)
    return ApiError(status, message).response()


def create_app(config: EmulatorConfig | None = None) -> FastAPI:
    """Build an emulator app; its state lives at ``app.state.emulator`` (an ``EmulatorState``)."""
    state = EmulatorState(config or EmulatorConfig())
    _install_log_filter()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Remember the serving loop so helpers in other threads can run code on it.
        state.loop = asyncio.get_running_loop()
        yield
        state.cancel_background()  # stats stay readable after the server stops

    app = FastAPI(title="OpenAI flex emulator", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.emulator = state
    routes: list[tuple[str, Handler, list[str]]] = [
        ("/v1/responses", create_response, ["POST"]),
        ("/v1/responses/{response_id}", retrieve_response, ["GET"]),
        ("/v1/responses/{response_id}/cancel", cancel_response, ["POST"]),
        ("/v1/chat/completions", create_chat_completion, ["POST"]),
        ("/v1/models", list_models, ["GET"]),
        ("/v1/models/{model_id:path}", get_model, ["GET"]),
        ("/emulator/stats", emulator_stats, ["GET"]),
        ("/emulator/reset", emulator_reset, ["POST"]),
        ("/emulator/config", emulator_get_config, ["GET"]),
        ("/emulator/config", emulator_set_config, ["POST"]),
    ]
    for path, handler, methods in routes:
        app.add_route(path, handler, methods=methods, include_in_schema=False)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_middleware(RequestIdMiddleware)
    return app
