"""Prices, and what a run cost versus the standard tier.

Standard-tier prices come from ``genai-prices`` (the Pydantic team's maintained table, bundled with
the package: no network at run time), looked up by the model name the server reported, dated
snapshots included (``gpt-5-mini-2025-08-07`` is ``gpt-5-mini``). Flex is billed at the Batch API
rate, half of standard for input, cached input and output tokens; that discount is applied here
because the library knows no service tiers.

Users correct or extend the table: ``prices={"my-model": {"input": .., "cached_input": .., "output": ..}}``
(USD per million tokens, *standard* tier) on the operator, merged over a site-wide table (the
``flex_prices`` Airflow Variable) before the run starts; those win over the library. A model no table knows is *unpriced*: its cost is reported as
unknown (``None``) with one warning per run, never guessed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flex_provider.engine.usage import Usage

log = logging.getLogger(__name__)

PER_MILLION = 1_000_000
# The library prices a request; a per-million rate is read off a probe of this many tokens, small
# enough to stay in the base price band of models whose price rises with the prompt's length.
_PROBE_TOKENS = 1_000


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens on the standard tier."""

    input: float
    cached_input: float
    output: float


# Multiplier on the standard price by the tier that actually served the request.
TIER_MULTIPLIER: dict[str, float] = {"flex": 0.5, "default": 1.0, "auto": 1.0, "scale": 1.0, "priority": 2.0}

_SNAPSHOT = re.compile(r"(.+?)-(\d{4}-\d{2}-\d{2}|\d{4}|latest)")


def library_price(model: str) -> Price | None:
    """The standard price ``genai-prices`` knows for an OpenAI ``model``, or None."""
    if not model:
        return None
    from genai_prices import Usage as LibraryUsage
    from genai_prices import calc_price

    def rate(**tokens: int) -> float:
        calc = calc_price(LibraryUsage(**tokens), model_ref=model, provider_id="openai")
        return float(calc.total_price) * PER_MILLION / _PROBE_TOKENS

    try:
        return Price(
            input=rate(input_tokens=_PROBE_TOKENS),
            cached_input=rate(input_tokens=_PROBE_TOKENS, cache_read_tokens=_PROBE_TOKENS),
            output=rate(output_tokens=_PROBE_TOKENS),
        )
    except LookupError:
        return None


# The models the emulator serves by default (the seed article's eight), at the library's prices.
DEFAULT_PRICES: dict[str, Price] = {
    model: price
    for model in ("gpt-5", "gpt-5-mini", "gpt-5-nano", "o3", "o4-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4o-mini")
    if (price := library_price(model)) is not None
}


class PriceTable:
    """Standard prices by model: the given ``overrides`` (dated snapshots included), then the library.

    Each model is resolved once per table (a run prices every record, so lookups must be cheap);
    a model nobody prices is logged once and priced as unknown."""

    def __init__(self, overrides: Mapping[str, Any] | None = None) -> None:
        self._given = {model: p if isinstance(p, Price) else Price(**p) for model, p in (overrides or {}).items()}
        self._resolved: dict[str, Price | None] = {}

    def _from_given(self, model: str) -> Price | None:
        if model in self._given:
            return self._given[model]
        match = _SNAPSHOT.fullmatch(model)  # my-model-2026-01-01 is my-model
        return self._given.get(match.group(1)) if match else None

    def lookup(self, model: str) -> Price | None:
        if model in self._resolved:
            return self._resolved[model]
        price = self._from_given(model) or library_price(model)
        if price is None:
            log.warning(
                "No price is known for model %r: its cost is reported as unknown. "
                "Pass prices={%r: {'input': ..., 'cached_input': ..., 'output': ...}} (USD per 1M tokens, standard tier).",
                model,
                model,
            )
        self._resolved[model] = price
        return price

    def standard_cost(self, model: str, usage: Usage) -> float | None:
        price = self.lookup(model)
        if price is None:
            return None
        uncached = max(usage.input - usage.cached, 0)
        return (uncached * price.input + usage.cached * price.cached_input + usage.output * price.output) / PER_MILLION


@dataclass(slots=True)
class CostTally:
    """Running totals: what was paid (by served tier), what the standard tier would have cost, and
    what the prompt cache saved (cached input tokens billed at the cached rate, on the served tier)."""

    actual: float = 0.0
    standard_equivalent: float = 0.0
    cache_saved: float = 0.0
    unpriced_tokens: int = 0

    def add(self, table: PriceTable, model: str, tier: str | None, usage: Usage) -> None:
        price = table.lookup(model)
        standard = table.standard_cost(model, usage)
        if price is None or standard is None:
            self.unpriced_tokens += usage.input + usage.output
            return
        multiplier = TIER_MULTIPLIER.get(tier or "default", 1.0)
        self.standard_equivalent += standard
        self.actual += standard * multiplier
        self.cache_saved += usage.cached * (price.input - price.cached_input) * multiplier / PER_MILLION

    def as_dict(self) -> dict[str, Any]:
        """USD amounts rounded to the micro-dollar; all of them ``None`` once any tokens could not be
        priced (a total that silently leaves out a model would be a made-up number), with
        ``unpriced_tokens`` saying how many."""
        if self.unpriced_tokens:
            return dict.fromkeys(("actual", "standard_equivalent", "saved", "cache_saved")) | {
                "unpriced_tokens": self.unpriced_tokens
            }
        return {
            "actual": round(self.actual, 6),
            "standard_equivalent": round(self.standard_equivalent, 6),
            "saved": round(self.standard_equivalent - self.actual, 6),
            "cache_saved": round(self.cache_saved, 6),
        }


def cost_text(cost: Mapping[str, float | None]) -> str:
    """``cost $0.0123 vs $0.0246 standard, saved $0.0123 by flex, $0.0010 by the prompt cache``, or
    why the cost is unknown (a model without a price)."""
    unpriced = cost.get("unpriced_tokens")
    if cost.get("actual") is None:
        return f"cost unknown ({int(unpriced or 0):,} tokens of models without a price: pass prices=)"
    text = (
        f"cost ${cost.get('actual') or 0.0:,.4f} vs ${cost.get('standard_equivalent') or 0.0:,.4f} standard, "
        f"saved ${cost.get('saved') or 0.0:,.4f} by flex"
    )
    cache_saved = cost.get("cache_saved")
    return f"{text}, ${cache_saved:,.4f} by the prompt cache" if cache_saved else text


def _usd(value: Any) -> float | None:
    return round(float(value), 6) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def read_cost(cost: Any) -> dict[str, float | None]:
    """The amounts of a summary's ``cost_usd`` as read back from storage or XCom (so checked, not
    trusted): numbers to the micro-dollar, None where unknown, ``saved`` derived for summaries
    written before it was stored. Used by everything that republishes a run's cost."""
    found: Mapping[str, Any] = cost if isinstance(cost, Mapping) else {}
    actual, standard = _usd(found.get("actual")), _usd(found.get("standard_equivalent"))
    saved = _usd(found.get("saved"))
    if "saved" not in found and actual is not None and standard is not None:
        saved = round(standard - actual, 6)
    return {
        "actual": actual,
        "standard_equivalent": standard,
        "saved": saved,
        "cache_saved": _usd(found.get("cache_saved")),
    }
