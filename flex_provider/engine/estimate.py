"""How many tokens a request will count for, before it is sent.

Pacing by tokens per minute (:mod:`flex_provider.engine.ratelimit`) and a budget cap
(:mod:`flex_provider.engine.budget`) both have to decide *before* a request leaves. OpenAI's own
rate limiter does the same: it charges a request its prompt, estimated from the characters, plus
its output bound (``max_output_tokens``, or ``max_completion_tokens``/``max_tokens`` times ``n`` on
Chat Completions) when the request is admitted. So does this module, without a tokenizer: counting
characters is O(1) per prompt (``len`` of a ``str``), needs no model-specific vocabulary, and the
error it makes is learnt away.

:class:`TokenEstimator` starts at about 4 characters per token (English prose) plus a fixed overhead
per message, and moves its ratio towards what the answers measure (``usage.input_tokens``) with a
bounded exponential average: a running mean over the first answers, so that a run of code or of
Chinese text (2-3 or 1-2 characters per token) is estimated right after a handful of answers; a
slow average after that; each step clamped, so that one odd answer (a huge cached prefix, an image)
cannot throw the estimate off.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flex_provider.engine.config import RequestSpec

DEFAULT_CHARS_PER_TOKEN = 4.0
# Tokens around each message (role, separators), as OpenAI's cookbook counts them for chat formats.
MESSAGE_OVERHEAD_TOKENS = 4
# The output bound assumed for a request that sets none. It is what the emulator charges such a
# request too; the real server's assumption is not documented (it may count the model's maximum),
# so set max_output_tokens when pacing or a budget matters: it makes both exact.
DEFAULT_MAX_OUTPUT_TOKENS = 4096

# Where each API takes its output bound, first match wins (Chat: the newer name first).
_OUTPUT_BOUND_KEYS = {
    "responses": ("max_output_tokens",),
    "chat": ("max_completion_tokens", "max_tokens"),
}


def _positive_int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return None
    return value


def output_bound(api: str, request_options: Mapping[str, Any] | None) -> int | None:
    """The request's own bound on output tokens (all choices of a Chat request together), or None
    when it sets none. ``extra_body`` is read too: the SDK merges it into the request last."""
    options = dict(request_options or {})
    extra = options.get("extra_body")
    if isinstance(extra, Mapping):
        options.update(extra)
    bound = None
    for key in _OUTPUT_BOUND_KEYS.get(api, ()):
        bound = _positive_int(options.get(key))
        if bound is not None:
            break
    if bound is None:
        return None
    if api == "chat":
        bound *= _positive_int(options.get("n")) or 1
    return bound


@dataclass(frozen=True, slots=True)
class TokenEstimate:
    """One request's tokens as estimated before sending."""

    prompt_chars: int  # the characters the ratio applies to (instructions, schema and input)
    prompt_tokens: int  # overhead included
    max_output_tokens: int
    bounded: bool  # False: max_output_tokens is the stated default, not a bound the request carries

    @property
    def total(self) -> int:
        """What a rate limiter charges on admission: prompt plus output bound."""
        return self.prompt_tokens + self.max_output_tokens

    def charged(self, input_tokens: int | None) -> int:
        """What the rate limiter charged, now that the answer reported ``input_tokens``: the
        measured prompt plus the output bound (charged on admission whatever the answer's length).
        Without a measurement, the estimate stands."""
        if input_tokens is None or input_tokens < 0:
            return self.total
        return int(input_tokens) + self.max_output_tokens


class TokenEstimator:
    """Estimates requests of one run; learns the characters-per-token ratio from the answers.

    ``fixed_chars`` are the characters every request repeats (instructions, the JSON schema of
    structured output, tool definitions), ``messages`` how many messages a request holds. Both
    :meth:`estimate` and :meth:`observe` are O(1)."""

    def __init__(
        self,
        *,
        fixed_chars: int = 0,
        messages: int = 1,
        max_output_tokens: int | None = None,
        default_max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS,
        chars_per_token: float = DEFAULT_CHARS_PER_TOKEN,
        min_chars_per_token: float = 0.5,
        max_chars_per_token: float = 12.0,
        smoothing: float = 0.1,
        max_step: float = 1.5,
        min_sample_chars: int = 64,
    ) -> None:
        if not (0 < min_chars_per_token <= chars_per_token <= max_chars_per_token):
            raise ValueError(
                f"chars_per_token: expected {min_chars_per_token} <= {chars_per_token} <= {max_chars_per_token}"
            )
        if not 0 < smoothing <= 1:
            raise ValueError(f"smoothing: expected a weight in (0, 1], got {smoothing!r}")
        if max_step <= 1:
            raise ValueError(f"max_step: expected a factor > 1, got {max_step!r}")
        if fixed_chars < 0 or messages < 1 or default_max_output_tokens < 0:
            raise ValueError("fixed_chars and default_max_output_tokens must be >= 0, messages >= 1")
        self.fixed_chars = fixed_chars
        self.overhead_tokens = messages * MESSAGE_OVERHEAD_TOKENS
        self.bounded = max_output_tokens is not None
        self.max_output_tokens = max_output_tokens if max_output_tokens is not None else default_max_output_tokens
        self.min_ratio = min_chars_per_token
        self.max_ratio = max_chars_per_token
        self.smoothing = smoothing
        self.max_step = max_step
        self.min_sample_chars = min_sample_chars
        self._ratio = chars_per_token
        self.samples = 0

    @classmethod
    def for_spec(
        cls,
        spec: RequestSpec,
        *,
        default_max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS,
        request_options: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> TokenEstimator:
        """An estimator for every request of a run of ``spec`` (what calls.CallBuilder sends).
        ``request_options``: the options as sent, when they differ from the spec's (an output bound
        the engine added: see ``CallBuilder.request_options``)."""
        sent = spec.request_options if request_options is None else request_options
        fixed = len(spec.instructions or "")
        if spec.response_schema is not None:
            fixed += len(json.dumps(spec.response_schema, ensure_ascii=False))
        tools = spec.request_options.get("tools")
        if tools:
            fixed += len(json.dumps(tools, ensure_ascii=False, default=str))
        return cls(
            fixed_chars=fixed,
            messages=2 if spec.instructions else 1,
            max_output_tokens=output_bound(spec.api, sent),
            default_max_output_tokens=default_max_output_tokens,
            **options,
        )

    @property
    def chars_per_token(self) -> float:
        return self._ratio

    def estimate(self, prompt: str) -> TokenEstimate:
        chars = self.fixed_chars + len(prompt)
        return TokenEstimate(
            prompt_chars=chars,
            prompt_tokens=math.ceil(chars / self._ratio) + self.overhead_tokens,
            max_output_tokens=self.max_output_tokens,
            bounded=self.bounded,
        )

    def observe(self, estimate: TokenEstimate, input_tokens: int | None) -> None:
        """Move the ratio towards what one answer measured (``usage.input_tokens``, cached included).

        Answers that tell little are skipped: no usage, a prompt so short that the overhead is most
        of it, or a count no larger than the overhead."""
        if input_tokens is None or estimate.prompt_chars < self.min_sample_chars:
            return
        text_tokens = input_tokens - self.overhead_tokens
        if text_tokens <= 0:
            return
        sample = estimate.prompt_chars / text_tokens
        sample = min(
            max(sample, self.min_ratio, self._ratio / self.max_step), self.max_ratio, self._ratio * self.max_step
        )
        weight = max(self.smoothing, 1.0 / (self.samples + 1))
        self._ratio += weight * (sample - self._ratio)
        self.samples += 1
