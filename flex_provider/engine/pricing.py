"""Prices, in one table users can override, and what a run cost versus the standard tier.

Flex is billed at the Batch API rate: half of standard for input, cached input and output tokens.
Prices move; pass ``prices={"my-model": {"input": .., "cached_input": .., "output": ..}}`` (USD per
million tokens, *standard* tier) to the operator to correct or extend this table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from flex_provider.engine.usage import Usage

PER_MILLION = 1_000_000


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens on the standard tier."""

    input: float
    cached_input: float
    output: float


# Standard-tier list prices (USD / 1M tokens). Checked against OpenAI's pricing page in 2025-2026.
DEFAULT_PRICES: dict[str, Price] = {
    "gpt-5": Price(1.25, 0.125, 10.00),
    "gpt-5-mini": Price(0.25, 0.025, 2.00),
    "gpt-5-nano": Price(0.05, 0.005, 0.40),
    "o3": Price(2.00, 0.50, 8.00),
    "o4-mini": Price(1.10, 0.275, 4.40),
    "gpt-4.1": Price(2.00, 0.50, 8.00),
    "gpt-4.1-mini": Price(0.40, 0.10, 1.60),
    "gpt-4o-mini": Price(0.15, 0.075, 0.60),
}

# Multiplier on the standard price by the tier that actually served the request.
TIER_MULTIPLIER: dict[str, float] = {"flex": 0.5, "default": 1.0, "auto": 1.0, "scale": 1.0, "priority": 2.0}


_SNAPSHOT = re.compile(r"(.+?)-(\d{4}-\d{2}-\d{2}|\d{4}|latest)")


class PriceTable:
    """Looks models up by exact name, then as a dated snapshot of a known model (``o3-2025-04-16``
    is priced as ``o3``). Other variants (``o3-pro``) are unpriced rather than priced wrong."""

    def __init__(self, overrides: dict[str, Any] | None = None) -> None:
        self._prices = dict(DEFAULT_PRICES)
        for model, price in (overrides or {}).items():
            self._prices[model] = price if isinstance(price, Price) else Price(**price)

    def lookup(self, model: str) -> Price | None:
        if model in self._prices:
            return self._prices[model]
        match = _SNAPSHOT.fullmatch(model)  # o3-2025-04-16 is o3; o3-pro or o3-mini are not
        if match:
            return self._prices.get(match.group(1))
        return None

    def standard_cost(self, model: str, usage: Usage) -> float | None:
        price = self.lookup(model)
        if price is None:
            return None
        uncached = max(usage.input - usage.cached, 0)
        return (uncached * price.input + usage.cached * price.cached_input + usage.output * price.output) / PER_MILLION


@dataclass(slots=True)
class CostTally:
    """Running totals: what was paid (by served tier) and what the standard tier would have cost."""

    actual: float = 0.0
    standard_equivalent: float = 0.0
    unpriced_tokens: int = 0

    def add(self, table: PriceTable, model: str, tier: str | None, usage: Usage) -> None:
        standard = table.standard_cost(model, usage)
        if standard is None:
            self.unpriced_tokens += usage.input + usage.output
            return
        self.standard_equivalent += standard
        self.actual += standard * TIER_MULTIPLIER.get(tier or "default", 1.0)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "actual": round(self.actual, 6),
            "standard_equivalent": round(self.standard_equivalent, 6),
            "saved": round(self.standard_equivalent - self.actual, 6),
        }
        if self.unpriced_tokens:
            out["unpriced_tokens"] = self.unpriced_tokens
        return out
