"""What the emulator billed: tokens and USD per served tier and per model, as ``stats["billing"]``.

It exists so a test can hold the engine's reported cost, and a budget cap, against an independent
bill. The rules, chosen to match OpenAI's as documented:

- Only answered requests are billed: an inline 200 with a usage block, a background response that
  reached ``completed``/``incomplete``. Nothing is billed for 429s (rate limit, flex capacity,
  quota), 5xx, hangs the client gave up on, dropped connections, broken bodies or background work
  cancelled before it finished. A trickled answer is billed when generated, even if the client then
  leaves: the tokens were produced.
- Priced by the tier that *served* the request (what the answer's ``service_tier`` says) and the
  model that was asked for: standard list price times ``TIER_FACTOR`` (flex is billed at Batch API
  rates, half of standard; priority at twice). Uncached input at the input rate, cached input
  (``cached_tokens`` of the usage) at the cached rate, output (reasoning included, as the usage
  counts it) at the output rate.
- Standard prices come from the ``prices`` knob, else the engine's ``DEFAULT_PRICES``. A model or
  tier with no price is counted (tokens, ``unpriced_requests``) but adds no cost: never a guess.

Each entry also carries ``standard_cost_usd``, the same tokens at the standard tier, so what flex
saved is ``standard_cost_usd - cost_usd``. Costs are unrounded floats (compare with ``approx``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from flex_provider.engine.pricing import DEFAULT_PRICES

PER_MILLION = 1_000_000
# Multiplier on the standard price by served tier; a tier missing here is unpriced ("fast", ...).
TIER_FACTOR: dict[str, float] = {"default": 1.0, "scale": 1.0, "flex": 0.5, "priority": 2.0}


class Rates(Protocol):
    """A standard price, USD per million tokens (``engine.pricing.Price`` and ``config.ModelPrice``)."""

    @property
    def input(self) -> float: ...

    @property
    def cached_input(self) -> float: ...

    @property
    def output(self) -> float: ...


def standard_price(model: str, overrides: Mapping[str, Rates]) -> Rates | None:
    """The ``prices`` knob's entry for ``model``, else the engine's default table's, else None."""
    price = overrides.get(model)
    if price is not None:
        return price
    default: Rates | None = DEFAULT_PRICES.get(model)
    return default


@dataclass(slots=True)
class Line:
    """Billed totals of one tier, one model, or one (model, tier) pair."""

    requests: int = 0
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float = 0.0
    standard_cost_usd: float = 0.0
    unpriced_requests: int = 0

    def add(self, usage: Mapping[str, int], cost: float | None, standard: float | None) -> None:
        self.requests += 1
        self.input_tokens += usage["input"]
        self.cached_tokens += usage["cached_input"]
        self.output_tokens += usage["output"]
        self.reasoning_tokens += usage["reasoning"]
        if cost is None or standard is None:
            self.unpriced_requests += 1
        else:
            self.cost_usd += cost
            self.standard_cost_usd += standard

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "input_tokens": self.input_tokens,
            "cached_tokens": self.cached_tokens,
            "output_tokens": self.output_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "cost_usd": self.cost_usd,
            "standard_cost_usd": self.standard_cost_usd,
            "unpriced_requests": self.unpriced_requests,
        }


def standard_cost(price: Rates, usage: Mapping[str, int]) -> float:
    """USD of one answer's usage at the standard tier."""
    cached = min(usage["cached_input"], usage["input"])
    return (
        (usage["input"] - cached) * price.input + cached * price.cached_input + usage["output"] * price.output
    ) / PER_MILLION


@dataclass
class Billing:
    """Running bill; ``add`` is O(1) per answered request."""

    total: Line = field(default_factory=Line)
    by_tier: dict[str, Line] = field(default_factory=dict)
    by_model: dict[str, Line] = field(default_factory=dict)
    by_model_tier: dict[tuple[str, str], Line] = field(default_factory=dict)

    def add(self, model: str, tier: str, usage: Mapping[str, int], price: Rates | None) -> None:
        """Bill one answer of ``model`` served on ``tier`` (usage keys: input, cached_input, output, reasoning)."""
        factor = TIER_FACTOR.get(tier)
        standard = standard_cost(price, usage) if price is not None else None
        cost = standard * factor if standard is not None and factor is not None else None
        for line in (
            self.total,
            _line(self.by_tier, tier),
            _line(self.by_model, model),
            _line(self.by_model_tier, (model, tier)),
        ):
            line.add(usage, cost, standard if cost is not None else None)

    def snapshot(self) -> dict[str, Any]:
        by_model_tier: dict[str, dict[str, Any]] = {}
        for (model, tier), line in self.by_model_tier.items():
            by_model_tier.setdefault(model, {})[tier] = line.as_dict()
        return {
            **self.total.as_dict(),
            "by_tier": {tier: line.as_dict() for tier, line in self.by_tier.items()},
            "by_model": {model: line.as_dict() for model, line in self.by_model.items()},
            "by_model_tier": by_model_tier,
        }


def _line(lines: dict[Any, Line], key: Any) -> Line:
    line = lines.get(key)
    if line is None:
        line = lines[key] = Line()
    return line
