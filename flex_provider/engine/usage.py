"""Token usage, normalised across the Responses and Chat Completions APIs."""

from __future__ import annotations

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
        """Read an SDK usage object of either API (missing details count as zero)."""
        if usage is None:
            return cls()
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


def _detail(usage: Any, group: str, field: str) -> int:
    return int(getattr(getattr(usage, group, None), field, 0) or 0)
