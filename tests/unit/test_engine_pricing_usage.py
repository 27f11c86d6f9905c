from __future__ import annotations

import pytest
from openai.types import CompletionUsage
from openai.types.responses import ResponseUsage

from flex_provider.engine.pricing import DEFAULT_PRICES, CostTally, Price, PriceTable, cost_text
from flex_provider.engine.usage import Usage

# -- Usage ----------------------------------------------------------------------------------


def test_usage_from_responses_api_object():
    usage = ResponseUsage.model_validate(
        {
            "input_tokens": 1200,
            "input_tokens_details": {"cached_tokens": 1024, "cache_write_tokens": 0},
            "output_tokens": 300,
            "output_tokens_details": {"reasoning_tokens": 256},
            "total_tokens": 1500,
        }
    )
    assert Usage.from_api(usage) == Usage(input=1200, cached=1024, output=300, reasoning=256)


def test_usage_from_chat_api_object():
    usage = CompletionUsage.model_validate(
        {
            "prompt_tokens": 50,
            "completion_tokens": 20,
            "total_tokens": 70,
            "prompt_tokens_details": {"cached_tokens": 10},
            "completion_tokens_details": {"reasoning_tokens": 5},
        }
    )
    assert Usage.from_api(usage) == Usage(input=50, cached=10, output=20, reasoning=5)


def test_usage_from_chat_api_object_without_details():
    usage = CompletionUsage(prompt_tokens=7, completion_tokens=3, total_tokens=10)
    assert Usage.from_api(usage) == Usage(input=7, cached=0, output=3, reasoning=0)


def test_usage_from_responses_with_zero_input_is_still_responses():
    usage = ResponseUsage.model_construct(input_tokens=0, output_tokens=4, input_tokens_details=None)
    assert Usage.from_api(usage) == Usage(input=0, cached=0, output=4, reasoning=0)


def test_usage_from_none():
    assert Usage.from_api(None) == Usage()


def test_usage_add_and_dict_round_trip():
    total = Usage(1, 2, 3, 4)
    total.add(Usage(10, 20, 30, 40))
    assert total.as_dict() == {"input": 11, "cached": 22, "output": 33, "reasoning": 44}
    assert Usage.from_dict(total.as_dict()) == total
    assert Usage.from_dict(None) == Usage()
    assert Usage.from_dict({"input": "5", "output": None}) == Usage(input=5)


# -- PriceTable -------------------------------------------------------------------------------


def test_lookup_exact_and_dated_snapshot():
    table = PriceTable()
    assert table.lookup("o3") == Price(2.00, 0.50, 8.00)
    assert table.lookup("o3-2025-04-16") == table.lookup("o3")
    assert table.lookup("gpt-5-mini-2025-08-07") == DEFAULT_PRICES["gpt-5-mini"]


def test_lookup_prefers_the_longest_prefix():
    table = PriceTable()
    assert table.lookup("gpt-4.1-mini-2025-04-14") == DEFAULT_PRICES["gpt-4.1-mini"]
    assert table.lookup("gpt-4.1-2025-04-14") == DEFAULT_PRICES["gpt-4.1"]


@pytest.mark.parametrize("model", ["o3x", "llama-3", "", "gpt-5-mini-foo", "my-model"])
def test_lookup_unknown_models(model):
    assert PriceTable().lookup(model) is None


@pytest.mark.parametrize(
    ("model", "price"),
    [
        ("o3-pro", Price(20.0, 20.0, 80.0)),  # its own price, not o3's
        ("o3-mini", Price(1.1, 0.55, 4.4)),
        ("gpt-4.1-nano", Price(0.1, 0.025, 0.4)),
        ("gpt-5.1", Price(1.25, 0.125, 10.0)),
        ("gpt-4o", Price(2.5, 1.25, 10.0)),
        ("gpt-4o-mini-2024-07-18", Price(0.15, 0.075, 0.6)),
    ],
)
def test_lookup_prices_every_model_the_library_knows(model, price):
    """The maintained table (genai-prices) covers far more than the eight models of the old hand-kept
    table, each at its own price: a variant is never priced as its base model."""
    found = PriceTable().lookup(model)
    assert found is not None
    assert found == price


def test_unknown_model_warns_once_per_table(caplog):
    table = PriceTable()
    with caplog.at_level("WARNING", logger="flex_provider.engine.pricing"):
        for _ in range(3):
            assert table.standard_cost("house-model-7", Usage(input=10, output=10)) is None
    warnings = [r for r in caplog.records if "house-model-7" in r.getMessage()]
    assert len(warnings) == 1
    assert "prices=" in warnings[0].getMessage()


def test_overrides_add_and_replace():
    table = PriceTable({"my-model": {"input": 1.0, "cached_input": 0.1, "output": 3.0}, "o3": Price(9, 9, 9)})
    assert table.lookup("my-model") == Price(1.0, 0.1, 3.0)
    assert table.lookup("my-model-2026-01-01") == Price(1.0, 0.1, 3.0)
    assert table.lookup("o3-2025-04-16") == Price(9, 9, 9)
    assert PriceTable().lookup("o3") == Price(2.00, 0.50, 8.00)  # defaults not mutated


def test_standard_cost_prices_cached_tokens_at_cached_rate():
    usage = Usage(input=1_000_000, cached=200_000, output=500_000)
    # o3: 800k uncached x $2 + 200k cached x $0.50 + 500k out x $8
    assert PriceTable().standard_cost("o3", usage) == pytest.approx(1.6 + 0.1 + 4.0)


def test_standard_cost_never_negative_for_odd_usage():
    assert PriceTable().standard_cost("o3", Usage(input=10, cached=20, output=0)) == pytest.approx(20 * 0.5 / 1e6)


def test_standard_cost_unknown_model_is_none():
    assert PriceTable().standard_cost("mystery", Usage(input=5, output=5)) is None


# -- CostTally ----------------------------------------------------------------------------------


def test_flex_costs_half_of_standard():
    usage = Usage(input=2_000_000, cached=0, output=1_000_000)  # gpt-5: $2.50 + $10.00
    flex, default = CostTally(), CostTally()
    flex.add(PriceTable(), "gpt-5", "flex", usage)
    default.add(PriceTable(), "gpt-5", "default", usage)
    assert default.actual == pytest.approx(12.5)
    assert flex.actual == pytest.approx(6.25)
    assert flex.standard_equivalent == pytest.approx(12.5)
    assert flex.as_dict() == {"actual": 6.25, "standard_equivalent": 12.5, "saved": 6.25, "cache_saved": 0.0}
    assert default.as_dict() == {"actual": 12.5, "standard_equivalent": 12.5, "saved": 0.0, "cache_saved": 0.0}


def test_cache_saved_is_the_cached_discount_on_the_served_tier():
    # gpt-5: input $1.25, cached $0.125 per 1M; 800k of 1M input tokens came from the cache
    usage = Usage(input=1_000_000, cached=800_000, output=0)
    flex, default = CostTally(), CostTally()
    flex.add(PriceTable(), "gpt-5", "flex", usage)
    default.add(PriceTable(), "gpt-5", "default", usage)
    assert default.cache_saved == pytest.approx(0.8 * (1.25 - 0.125))
    assert flex.cache_saved == pytest.approx(0.8 * (1.25 - 0.125) / 2)
    assert default.actual == pytest.approx(0.2 * 1.25 + 0.8 * 0.125)  # what was paid already has it


@pytest.mark.parametrize(("tier", "factor"), [(None, 1.0), ("auto", 1.0), ("priority", 2.0), ("unknown", 1.0)])
def test_other_tiers(tier, factor):
    tally = CostTally()
    tally.add(PriceTable(), "o4-mini", tier, Usage(input=1_000_000))
    assert tally.actual == pytest.approx(1.10 * factor)


def test_unknown_model_counts_unpriced_tokens():
    tally = CostTally()
    tally.add(PriceTable(), "mystery-model", "flex", Usage(input=100, cached=50, output=20, reasoning=10))
    tally.add(PriceTable(), "o3", "flex", Usage(input=1_000_000))
    assert tally.unpriced_tokens == 120
    assert tally.actual == pytest.approx(1.0)
    # one unknown model makes every total unknown, never a partial sum passed off as the cost
    assert tally.as_dict() == {
        "actual": None,
        "standard_equivalent": None,
        "saved": None,
        "cache_saved": None,
        "unpriced_tokens": 120,
    }


def test_cost_tally_accumulates_and_rounds():
    tally = CostTally()
    for _ in range(3):
        tally.add(PriceTable(), "gpt-5-nano", "flex", Usage(input=1, output=1))
    # 3 x (0.05 + 0.40) / 1e6 / 2
    assert tally.actual == pytest.approx(3 * 0.45e-6 / 2)
    assert tally.as_dict()["actual"] == round(3 * 0.45e-6 / 2, 6)
    assert "unpriced_tokens" not in tally.as_dict()


def test_cost_text_names_both_savings_or_why_the_cost_is_unknown():
    assert cost_text({"actual": 1.0, "standard_equivalent": 2.5, "saved": 1.5, "cache_saved": 0.25}) == (
        "cost $1.0000 vs $2.5000 standard, saved $1.5000 by flex, $0.2500 by the prompt cache"
    )
    assert cost_text({"actual": 1.0, "standard_equivalent": 2.0, "saved": 1.0, "cache_saved": 0.0}) == (
        "cost $1.0000 vs $2.0000 standard, saved $1.0000 by flex"
    )
    tally = CostTally()
    tally.add(PriceTable(), "house-model", "flex", Usage(input=1_000, output=234))
    assert cost_text(tally.as_dict()) == "cost unknown (1,234 tokens of models without a price: pass prices=)"
