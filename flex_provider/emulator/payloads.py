"""Builders for the JSON objects the real API returns (Response, ChatCompletion, Model).

Field names and nesting follow the openai SDK's generated types (``openai.types.responses.Response``,
``openai.types.chat.ChatCompletion``), so ``resp.output_text``, ``resp.usage.input_tokens_details``,
``completion.choices[0].message.content`` and friends behave as against the real service.
Plain dicts are built directly: constructing pydantic models per request would cost more CPU than
the rest of the request put together.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from .content import (
    CacheResult,
    Prompt,
    estimate_tokens,
    generate_json,
    generate_json_object,
    is_reasoning_model,
    reasoning_tokens,
    render_text,
)

MODEL_CREATED = 1_735_689_600  # 2025-01-01, a fixed "created" for /v1/models


def new_id(prefix: str) -> str:
    """Random id with OpenAI's prefixes (resp_, msg_, rs_, chatcmpl-)."""
    return prefix + os.urandom(24).hex()


@dataclass(slots=True)
class OutputFormat:
    """What the client asked the text to look like."""

    kind: str = "text"  # text | json_schema | json_object
    schema: dict[str, Any] | None = None


def format_from_responses(body: dict[str, Any]) -> OutputFormat:
    """Read ``text.format`` of a Responses request."""
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    if isinstance(fmt, dict):
        if fmt.get("type") == "json_schema":
            schema = fmt.get("schema")
            return OutputFormat("json_schema", schema if isinstance(schema, dict) else {})
        if fmt.get("type") == "json_object":
            return OutputFormat("json_object")
    return OutputFormat()


def format_from_chat(body: dict[str, Any]) -> OutputFormat:
    """Read ``response_format`` of a Chat Completions request."""
    fmt = body.get("response_format")
    if isinstance(fmt, dict):
        if fmt.get("type") == "json_schema":
            spec = fmt.get("json_schema")
            schema = spec.get("schema") if isinstance(spec, dict) else None
            return OutputFormat("json_schema", schema if isinstance(schema, dict) else {})
        if fmt.get("type") == "json_object":
            return OutputFormat("json_object")
    return OutputFormat()


@dataclass(slots=True)
class Completion:
    """Model output plus usage, independent of which API shape it is rendered into."""

    text: str
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    reasoning_tokens: int
    truncated: bool
    emit_message: bool

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def usage_counts(self) -> dict[str, int]:
        return {
            "input": self.input_tokens,
            "cached_input": self.cached_tokens,
            "output": self.output_tokens,
            "reasoning": self.reasoning_tokens,
        }


def complete(
    prompt: Prompt, fmt: OutputFormat, model: str, effort: str | None, max_tokens: Any, cache: CacheResult
) -> Completion:
    """Produce the answer and its token usage; truncates (incomplete/length) at ``max_tokens``.

    Like the real API, ``output_tokens`` includes reasoning tokens, and reasoning is spent first:
    a tight budget can leave no room for visible text at all.
    """
    if fmt.kind == "json_schema":
        text = generate_json(fmt.schema or {}, prompt)
    elif fmt.kind == "json_object":
        text = generate_json_object(prompt)
    else:
        text = render_text(prompt)
    reasoning = reasoning_tokens(model, effort, prompt)
    text_tokens = estimate_tokens(text)
    truncated = False
    emit_message = True
    if isinstance(max_tokens, int) and max_tokens > 0 and reasoning + text_tokens > max_tokens:
        truncated = True
        reasoning = min(reasoning, max_tokens)
        budget = max_tokens - reasoning
        text = text[: budget * 4]
        text_tokens = estimate_tokens(text)
        emit_message = budget > 0
    return Completion(
        text=text,
        input_tokens=prompt.input_tokens,
        cached_tokens=min(cache.cached_tokens, prompt.input_tokens),
        output_tokens=text_tokens + reasoning,
        reasoning_tokens=reasoning,
        truncated=truncated,
        emit_message=emit_message,
    )


# ------------------------------------------------------------------------------------ Responses


def _text_config(body: dict[str, Any]) -> dict[str, Any]:
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    verbosity = text.get("verbosity") if isinstance(text, dict) else None
    return {"format": fmt if isinstance(fmt, dict) else {"type": "text"}, "verbosity": verbosity or "medium"}


def _reasoning_config(body: dict[str, Any], model: str) -> dict[str, Any]:
    reasoning = body.get("reasoning")
    effort = reasoning.get("effort") if isinstance(reasoning, dict) else None
    summary = reasoning.get("summary") if isinstance(reasoning, dict) else None
    if effort is None and is_reasoning_model(model):
        effort = "medium"
    return {"effort": effort, "summary": summary}


def response_object(
    *,
    rid: str,
    body: dict[str, Any],
    model: str,
    served_tier: str,
    status: str,
    created_at: int,
    background: bool,
) -> dict[str, Any]:
    """A Response with no output yet (queued / in_progress / cancelled)."""
    temperature = body.get("temperature")
    top_p = body.get("top_p")
    metadata = body.get("metadata")
    return {
        "id": rid,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": background,
        "completed_at": None,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": body.get("max_tool_calls"),
        "model": model,
        "output": [],
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "prompt_cache_key": body.get("prompt_cache_key"),
        "reasoning": _reasoning_config(body, model),
        "safety_identifier": body.get("safety_identifier"),
        "service_tier": served_tier,
        "store": body.get("store", True),
        "temperature": 1.0 if temperature is None else temperature,
        "text": _text_config(body),
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_logprobs": body.get("top_logprobs", 0),
        "top_p": 1.0 if top_p is None else top_p,
        "truncation": body.get("truncation", "disabled"),
        "usage": None,
        "user": body.get("user"),
        "metadata": metadata if isinstance(metadata, dict) else {},
    }


def fill_completed(obj: dict[str, Any], done: Completion, model: str, cache: CacheResult) -> dict[str, Any]:
    """Turn a pending Response object into a finished one (completed or incomplete)."""
    output: list[dict[str, Any]] = []
    if is_reasoning_model(model):
        output.append({"id": new_id("rs_"), "type": "reasoning", "summary": []})
    if done.emit_message:
        output.append(
            {
                "id": new_id("msg_"),
                "type": "message",
                "status": "incomplete" if done.truncated else "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": done.text, "annotations": [], "logprobs": []}],
            }
        )
    obj["output"] = output
    obj["status"] = "incomplete" if done.truncated else "completed"
    obj["incomplete_details"] = {"reason": "max_output_tokens"} if done.truncated else None
    obj["completed_at"] = int(time.time())
    obj["usage"] = {
        "input_tokens": done.input_tokens,
        "input_tokens_details": {"cached_tokens": done.cached_tokens, "cache_write_tokens": 0},
        "output_tokens": done.output_tokens,
        "output_tokens_details": {"reasoning_tokens": done.reasoning_tokens},
        "total_tokens": done.total_tokens,
    }
    if cache.eligible:
        if cache.cached_tokens:
            obj["prompt_cache_diagnostics"] = {"type": "cache_hit"}
        elif cache.miss_reason:
            obj["prompt_cache_diagnostics"] = {
                "type": "cache_miss",
                "reason": cache.miss_reason,
                "cache_missed_tokens": done.input_tokens,
            }
    return obj


# --------------------------------------------------------------------------------------- Chat


def chat_completion_object(*, body: dict[str, Any], model: str, served_tier: str, done: Completion) -> dict[str, Any]:
    """A ``chat.completion`` object; ``n`` choices (identical, deterministic) if asked."""
    n = body.get("n")
    count = n if isinstance(n, int) and 1 <= n <= 8 else 1
    message: dict[str, Any] = {"role": "assistant", "content": done.text, "refusal": None, "annotations": []}
    choices = [
        {
            "index": i,
            "message": dict(message),
            "logprobs": None,
            "finish_reason": "length" if done.truncated else "stop",
        }
        for i in range(count)
    ]
    return {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": {
            "prompt_tokens": done.input_tokens,
            "completion_tokens": done.output_tokens,
            "total_tokens": done.total_tokens,
            "prompt_tokens_details": {"cached_tokens": done.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": done.reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": served_tier,
        "system_fingerprint": "fp_flexemu",
    }


def model_object(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": MODEL_CREATED, "owned_by": "system"}
