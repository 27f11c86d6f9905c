"""One API call: build the keyword arguments, send them, read the reply and its rate-limit headers.

This is the only module that knows the shapes of the Responses and Chat Completions APIs.

Requests skip the SDK's typed layer: ``client.post(path, body=..., cast_to=httpx2.Response)`` sends
the keyword arguments as the JSON body and hands back the HTTP response, whose ``x-ratelimit-*``
headers reach the pacer (:mod:`flex_provider.engine.ratelimit`) and whose body is read as plain dicts
by the small readers below. Converting the request params and building the pydantic ``Response`` /
``ChatCompletion`` was about a third of the engine's client CPU per request, and the engine reads six
fields of it. Everything else stays the SDK's: auth headers, timeouts, connection handling, and
non-2xx answers raising ``openai.APIStatusError`` subclasses (what :mod:`~flex_provider.engine.errors`
classifies and :mod:`~flex_provider.engine.retry` reads headers from).

The typed path is kept where it is needed: for request options ``create`` does not accept (it raises
``TypeError`` before sending, as it always did, instead of a server 400 per item), and for a client
without ``post`` (a stand-in such as a benchmark's stub; without ``with_raw_response`` either, its
answers carry no headers, which the pacer reads as "no limits announced"). The readers take SDK
objects too: background responses are still retrieved through the SDK.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from typing import Any

import httpx2
import jsonschema
from openai.resources.chat.completions import AsyncCompletions
from openai.resources.responses import AsyncResponses

from flex_provider.engine.config import RequestSpec
from flex_provider.engine.errors import MalformedResponseError, OutputValidationError
from flex_provider.engine.estimate import output_bound
from flex_provider.engine.ratelimit import RateLimits
from flex_provider.engine.usage import Usage

NO_LIMITS = RateLimits()

# Where each API takes the output bound the engine adds when it needs one (see ``default_output_bound``).
_OUTPUT_BOUND_KEY = {"responses": "max_output_tokens", "chat": "max_completion_tokens"}

# Where ``client.post`` sends each API's requests (the paths the SDK's ``create`` posts to).
_PATH = {"responses": "/responses", "chat": "/chat/completions"}
# The keyword arguments ``create`` accepts: a request whose options all are among them can skip the
# typed layer (the SDK's request transform is the identity on JSON data: these params have no aliases).
_ACCEPTED = {
    "responses": frozenset(inspect.signature(AsyncResponses.create).parameters) - {"self"},
    "chat": frozenset(inspect.signature(AsyncCompletions.create).parameters) - {"self"},
}
# ``create``'s keyword arguments that are request options, not body fields, and where
# ``make_request_options`` puts them.
_OPTION_KEYS = {"timeout": "timeout", "extra_headers": "headers", "extra_query": "params", "extra_body": "extra_json"}


@dataclass(slots=True)
class Reply:
    output: Any  # text, or the parsed object for structured output
    service_tier: str | None  # as served, which may differ from the one asked for
    usage: Usage
    response_id: str | None
    model: str | None = None  # as the server reports it (a dated snapshot, or another model)
    limits: RateLimits = NO_LIMITS  # the answer's x-ratelimit-* headers


@dataclass(slots=True)
class Created:
    """A background response was created (not answered yet)."""

    response_id: str
    limits: RateLimits = NO_LIMITS


def _shape_error(obj: Any, missing: str) -> MalformedResponseError:
    got = "null" if obj is None else ("text" if isinstance(obj, str) else f"an object without {missing!r}")
    return MalformedResponseError(f"malformed 200 answer: expected a JSON object with {missing!r}, got {got}")


def _field(obj: Any, name: str) -> Any:
    """A field of a decoded JSON body (a dict), or of an SDK model that may have been built from a
    body lacking it (``construct`` does not validate): missing reads as None instead of an
    AttributeError deep in our code."""
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None) if obj is not None and not isinstance(obj, str) else None


def output_text(response: Any) -> str:
    """What the SDK's ``Response.output_text`` gives: the ``output_text`` parts of the ``message``
    items, joined. A decoded body is read the same way, skipping what is not shaped as expected."""
    if not isinstance(response, dict):
        return str(response.output_text)
    texts = []
    for item in response.get("output") or ():
        if isinstance(item, dict) and item.get("type") == "message":
            for part in item.get("content") or ():
                if isinstance(part, dict) and part.get("type") == "output_text":
                    text = part.get("text")
                    if isinstance(text, str):
                        texts.append(text)
    return "".join(texts)


class CallBuilder:
    """Precomputes everything that is the same for every request of a run.

    ``default_output_bound``: sent as ``max_output_tokens`` (Chat: ``max_completion_tokens``) when
    the request sets no output bound of its own. A budget needs it: without a bound, no request has
    a worst-case cost. It is not part of the request's fingerprint (the answers are the same
    question's), so a folder started without a budget can be finished with one."""

    def __init__(self, spec: RequestSpec, *, default_output_bound: int | None = None) -> None:
        self.spec = spec
        self._validator = None
        extra = dict(spec.request_options)
        if default_output_bound is not None and output_bound(spec.api, extra) is None:
            extra[_OUTPUT_BOUND_KEY[spec.api]] = default_output_bound
        if spec.response_schema is not None:
            jsonschema.Draft202012Validator.check_schema(spec.response_schema)
            self._validator = jsonschema.Draft202012Validator(spec.response_schema)
            if spec.api == "responses":
                text = dict(extra.pop("text", None) or {})
                text["format"] = {
                    "type": "json_schema",
                    "name": spec.schema_name,
                    "schema": spec.response_schema,
                    "strict": True,
                }
                extra["text"] = text
            else:
                extra["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": spec.schema_name, "schema": spec.response_schema, "strict": True},
                }
        cache_key = spec.cache_key()
        if cache_key is not None:
            extra = {"prompt_cache_key": cache_key, **extra}  # a key in request_options wins
        self._extra = extra
        # Every request of the run has the same keys: whether they can skip the typed layer is known now.
        self._plain = set(self.kwargs("", "")) <= _ACCEPTED[spec.api]

    def kwargs(self, prompt: str, tier: str, *, background: bool = False) -> dict[str, Any]:
        spec = self.spec
        if spec.api == "responses":
            kw: dict[str, Any] = {"model": spec.model, "input": prompt, "service_tier": tier}
            if spec.instructions:
                kw["instructions"] = spec.instructions
            if background:
                kw["background"] = True
        else:
            messages: list[dict[str, str]] = []
            if spec.instructions:
                messages.append({"role": "developer", "content": spec.instructions})
            messages.append({"role": "user", "content": prompt})
            kw = {"model": spec.model, "messages": messages, "service_tier": tier}
        kw.update(self._extra)
        kw["timeout"] = spec.timeout
        return kw

    @property
    def request_options(self) -> dict[str, Any]:
        """What every request adds to the model, input and tier (an added output bound included)."""
        return dict(self._extra)

    async def send(self, client: Any, prompt: str, tier: str) -> Reply:
        """Send one request and wait for the answer (inline mode)."""
        responses = self.spec.api == "responses"
        kwargs = self.kwargs(prompt, tier)
        if self._plain and hasattr(client, "post"):
            body, limits = await _post(client, _PATH[self.spec.api], kwargs)
        else:
            body, limits = await _create(client.responses if responses else client.chat.completions, kwargs)
        try:
            reply = self.read_response(body) if responses else self.read_chat(body)
        except (OutputValidationError, MalformedResponseError) as exc:
            exc.limits = limits  # an answer all the same: its headers still tell where the limits stand
            raise
        reply.limits = limits
        return reply

    async def create_background(self, client: Any, prompt: str, tier: str) -> Created:
        """Create a background response; returns its id (a body without one is malformed)."""
        kwargs = self.kwargs(prompt, tier, background=True)
        if self._plain and hasattr(client, "post"):
            response, limits = await _post(client, _PATH["responses"], kwargs)
        else:
            response, limits = await _create(client.responses, kwargs)
        response_id = _field(response, "id")
        if not isinstance(response_id, str) or not response_id:
            error = _shape_error(response, "id")
            error.limits = limits
            raise error
        return Created(response_id, limits)

    def read_response(self, response: Any) -> Reply:
        output = _field(response, "output")
        if not isinstance(output, list):
            raise _shape_error(response, "output")
        if _field(response, "status") == "incomplete":
            reason = _field(_field(response, "incomplete_details"), "reason")
            raise self._cut_short(response, f"incomplete: {reason or 'no reason given'}")
        return self._reply(
            output_text(response),
            _field(response, "service_tier"),
            _field(response, "usage"),
            _field(response, "id"),
            _field(response, "model"),
        )

    def read_chat(self, completion: Any) -> Reply:
        choices = _field(completion, "choices")
        if not isinstance(choices, list) or not choices or _field(choices[0], "message") is None:
            raise _shape_error(completion, "choices")
        message = _field(choices[0], "message")
        content = _field(message, "content")
        if content is not None and not isinstance(content, str):
            raise _shape_error(completion, "choices")  # a decoded body's garbage; a model would not hold it
        model = _field(completion, "model")
        if _field(message, "refusal"):
            # The refusal's text is model output (it may quote the prompt): only the fact is recorded.
            refused = OutputValidationError("the model refused to answer (its refusal text is not recorded)")
            refused.usage = Usage.from_api(_field(completion, "usage"))
            refused.service_tier, refused.model = _field(completion, "service_tier"), model
            raise refused  # a refusal is billed too
        if _field(choices[0], "finish_reason") == "length":
            raise self._cut_short(completion, "finish_reason: length")
        return self._reply(
            content or "",
            _field(completion, "service_tier"),
            _field(completion, "usage"),
            _field(completion, "id"),
            model,
        )

    def _cut_short(self, answer: Any, why: str) -> OutputValidationError:
        """An answer that hit the output bound is a truncated text, not a result: the item fails (not
        retryable: the same bound cuts it again), billed, as background mode's ``incomplete`` does.
        The message says how to get it: a larger bound, then ``redo_failed="all"``."""
        cut = OutputValidationError(
            f"the answer was cut short ({why}): raise {_OUTPUT_BOUND_KEY[self.spec.api]} in request_options and re-run with "
            f"redo_failed='all' (the truncated text is not recorded)"
        )
        cut.usage = Usage.from_api(_field(answer, "usage"))
        cut.service_tier, cut.model = _field(answer, "service_tier"), _field(answer, "model")
        return cut

    def _reply(self, text: str, tier: str | None, api_usage: Any, response_id: str | None, model: str | None) -> Reply:
        usage = Usage.from_api(api_usage)
        try:
            output = self._parse(text)
        except OutputValidationError as exc:
            exc.usage, exc.service_tier, exc.model = usage, tier, model  # a wrong answer is still billed
            raise
        return Reply(output, tier, usage, response_id, model)

    def _parse(self, text: str) -> Any:
        if self._validator is None:
            return text
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise OutputValidationError(f"output is not valid JSON: {exc.msg} at column {exc.colno}") from exc
        error = jsonschema.exceptions.best_match(self._validator.iter_errors(value))
        if error is not None:
            raise OutputValidationError(f"output does not match response_format {schema_mismatch(error)}")
        return value


async def _post(client: Any, path: str, kwargs: dict[str, Any]) -> tuple[Any, RateLimits]:
    """``create(**kwargs)`` without the typed layer: the same request (body, options, bearer auth, as
    ``create`` builds them), the decoded JSON body (plain dicts) and the answer's rate-limit headers.
    Non-2xx answers raise from ``post`` as they do from ``create``; a 200 whose body is not JSON
    (HTML from a proxy, an empty or cut body) is a :class:`MalformedResponseError` carrying the
    headers."""
    body = dict(kwargs)
    options: dict[str, Any] = {"security": {"bearer_auth": True}}
    for key, option in _OPTION_KEYS.items():
        value = body.pop(key, None)
        if value is not None:
            options[option] = value
    raw = await client.post(path, body=body, cast_to=httpx2.Response, options=options)
    limits = RateLimits.from_headers(raw.headers)
    try:
        decoded = json.loads(raw.content)
    except ValueError:  # JSONDecodeError, and UnicodeDecodeError for bytes that are not text
        error = _shape_error("", "output" if path == _PATH["responses"] else "choices")
        error.limits = limits
        raise error from None
    return decoded, limits


async def _create(resource: Any, kwargs: dict[str, Any]) -> tuple[Any, RateLimits]:
    """``resource.create(**kwargs)`` through ``with_raw_response``: the parsed body and the answer's
    rate-limit headers. A malformed body raises from ``parse()`` as it would from ``create``."""
    raw_api = getattr(resource, "with_raw_response", None)
    if raw_api is None:  # a stand-in client: no headers to read
        return await resource.create(**kwargs), NO_LIMITS
    raw = await raw_api.create(**kwargs)
    return raw.parse(), RateLimits.from_headers(raw.headers)


def schema_mismatch(error: jsonschema.ValidationError) -> str:
    """Where and why an output fails its schema, in the schema's words only.

    jsonschema's own message quotes the output (``'Jane Roe' is not of type 'number'``, the names of
    unexpected properties); a failure message reaches records, the summary, logs and the UI, where
    model output must never be. The path keeps array indexes and the property names the schema
    itself declares; any other key (one the model made up) shows as ``*``."""
    declared = {str(part) for part in error.absolute_schema_path}
    path = "/".join(str(part) if isinstance(part, int) or part in declared else "*" for part in error.absolute_path)
    keyword, expected = error.validator, error.validator_value
    if keyword == "required" and isinstance(error.instance, dict) and isinstance(expected, list):
        missing = [name for name in expected if name not in error.instance]  # names from the schema
        why = "missing required property " + ", ".join(repr(name) for name in missing)
    elif keyword in ("additionalProperties", "unevaluatedProperties", "propertyNames"):
        why = "holds properties the schema does not allow"
    elif isinstance(keyword, str):
        shown = repr(expected)
        why = f"fails the schema's {keyword!r}: {shown if len(shown) <= 100 else shown[:97] + '...'}"
    else:  # a ``false`` schema
        why = "is not allowed by the schema"
    return f"at {path or '<root>'}: {why}"
