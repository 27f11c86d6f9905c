"""One API call: build the keyword arguments, send them, read the reply.

This is the only module that knows the shapes of the Responses and Chat Completions APIs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import jsonschema

from flex_provider.engine.config import RequestSpec
from flex_provider.engine.errors import MalformedResponseError, OutputValidationError
from flex_provider.engine.usage import Usage


@dataclass(slots=True)
class Reply:
    output: Any  # text, or the parsed object for structured output
    service_tier: str | None  # as served, which may differ from the one asked for
    usage: Usage
    response_id: str | None
    model: str | None = None  # as the server reports it (a dated snapshot, or another model)


def _shape_error(obj: Any, missing: str) -> MalformedResponseError:
    got = "null" if obj is None else ("text" if isinstance(obj, str) else f"an object without {missing!r}")
    return MalformedResponseError(f"malformed 200 answer: expected a JSON object with {missing!r}, got {got}")


def _field(obj: Any, name: str) -> Any:
    """A field of an SDK model that may have been built from a body lacking it (``construct`` does
    not validate): missing reads as None instead of an AttributeError deep in our code."""
    return getattr(obj, name, None) if obj is not None and not isinstance(obj, str) else None


class CallBuilder:
    """Precomputes everything that is the same for every request of a run."""

    def __init__(self, spec: RequestSpec) -> None:
        self.spec = spec
        self._validator = None
        extra = dict(spec.request_options)
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

    async def send(self, client: Any, prompt: str, tier: str) -> Reply:
        """Send one request and wait for the answer (inline mode)."""
        if self.spec.api == "responses":
            response = await client.responses.create(**self.kwargs(prompt, tier))
            return self.read_response(response)
        completion = await client.chat.completions.create(**self.kwargs(prompt, tier))
        return self.read_chat(completion)

    async def create_background(self, client: Any, prompt: str, tier: str) -> str:
        """Create a background response; returns its id (a body without one is malformed)."""
        response = await client.responses.create(**self.kwargs(prompt, tier, background=True))
        response_id = _field(response, "id")
        if not isinstance(response_id, str) or not response_id:
            raise _shape_error(response, "id")
        return response_id

    def read_response(self, response: Any) -> Reply:
        output = _field(response, "output")
        if not isinstance(output, list):
            raise _shape_error(response, "output")
        return self._reply(
            response.output_text,
            _field(response, "service_tier"),
            _field(response, "usage"),
            _field(response, "id"),
            _field(response, "model"),
        )

    def read_chat(self, completion: Any) -> Reply:
        choices = _field(completion, "choices")
        if not isinstance(choices, list) or not choices or _field(choices[0], "message") is None:
            raise _shape_error(completion, "choices")
        message = choices[0].message
        model = _field(completion, "model")
        if getattr(message, "refusal", None):
            # The refusal's text is model output (it may quote the prompt): only the fact is recorded.
            refused = OutputValidationError("the model refused to answer (its refusal text is not recorded)")
            refused.usage = Usage.from_api(_field(completion, "usage"))
            refused.service_tier, refused.model = _field(completion, "service_tier"), model
            raise refused  # a refusal is billed too
        return self._reply(
            message.content or "",
            _field(completion, "service_tier"),
            _field(completion, "usage"),
            _field(completion, "id"),
            model,
        )

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
