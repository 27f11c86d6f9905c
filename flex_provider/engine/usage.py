"""Token usage, normalised across the Responses and Chat Completions APIs."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(slots=True)
class Usage:
    """Tokens billed for one response (or a sum of them). ``cached`` is part of ``input``,
    ``reasoning`` part of ``output``, as in OpenAI's own usage objects."""

    input: int = 0
    cached: int = 0
    output: int = 0
    reasoning: int = 0

    def add(self, other: Usage) -> None:
        self.input += other.input
        self.cached += other.cached
        self.output += other.output
        self.reasoning += other.reasoning

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Usage:
        data = data or {}
        return cls(*(int(data.get(k) or 0) for k in ("input", "cached", "output", "reasoning")))

    @classmethod
    def from_api(cls, usage: Any) -> Usage:
        """Read a usage object of either API, an SDK model or the decoded JSON (a dict) the engine's
        requests read (missing details count as zero)."""
        if usage is None:
            return cls()
        if isinstance(usage, dict):
            return cls.from_json(usage)
        if getattr(usage, "input_tokens", None) is not None:  # Responses API
            return cls(
                input=usage.input_tokens or 0,
                cached=_detail(usage, "input_tokens_details", "cached_tokens"),
                output=usage.output_tokens or 0,
                reasoning=_detail(usage, "output_tokens_details", "reasoning_tokens"),
            )
        return cls(  # Chat Completions API
            input=getattr(usage, "prompt_tokens", 0) or 0,
            cached=_detail(usage, "prompt_tokens_details", "cached_tokens"),
            output=getattr(usage, "completion_tokens", 0) or 0,
            reasoning=_detail(usage, "completion_tokens_details", "reasoning_tokens"),
        )

    @classmethod
    def from_json(cls, usage: Any) -> Usage:
        """Read the ``usage`` of a decoded response body of either API. A body is not validated as
        the SDK's models are: anything that is not a count reads as zero, never raises."""
        if not isinstance(usage, dict):
            return cls()
        if usage.get("input_tokens") is not None:  # Responses API
            return cls(
                input=_count(usage.get("input_tokens")),
                cached=_count(_json_detail(usage, "input_tokens_details", "cached_tokens")),
                output=_count(usage.get("output_tokens")),
                reasoning=_count(_json_detail(usage, "output_tokens_details", "reasoning_tokens")),
            )
        return cls(  # Chat Completions API
            input=_count(usage.get("prompt_tokens")),
            cached=_count(_json_detail(usage, "prompt_tokens_details", "cached_tokens")),
            output=_count(usage.get("completion_tokens")),
            reasoning=_count(_json_detail(usage, "completion_tokens_details", "reasoning_tokens")),
        )


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return 0  # JSON also allows true, 1e999 and NaN
    return int(value)


def _json_detail(usage: dict[str, Any], group: str, field: str) -> Any:
    details = usage.get(group)
    return details.get(field) if isinstance(details, dict) else None


def _detail(usage: Any, group: str, field: str) -> int:
    return int(getattr(getattr(usage, group, None), field, 0) or 0)
