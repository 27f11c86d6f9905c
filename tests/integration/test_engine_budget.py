"""A spending cap, held against the emulator's own bill.

The emulator bills every answered request (``stats["billing"]``) at the same list prices as the
engine (``DEFAULT_PRICES``: genai-prices' table), flex at half. A run with a budget of a few cents
must stop under it, bill for bill, leave the rest ``skipped`` (retryable), and a later run with a
higher cap must finish exactly those, paying nothing twice. Run with ``-s`` for the figures.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from flex_provider.engine.budget import BudgetError
from flex_provider.engine.pricing import DEFAULT_PRICES
from flex_provider.live import read_live_state
from tests.integration.conftest import API_KEY, FAST_RETRY
from tests.integration.helpers import input_key, make_engine, make_items, records

pytestmark = pytest.mark.integration

ITEMS = 300
OUTPUT_BOUND = 400  # max_output_tokens: with the prompt, what bounds a request's worst case
# Low reasoning effort (32-256 reasoning tokens): answers fit the bound, so none is cut short (a failed item).
REQUEST_OPTIONS = {"max_output_tokens": OUTPUT_BOUND, "reasoning": {"effort": "low"}}


def run_with_budget(emu, root: Path, cap: float, **options):
    return make_engine(
        emu,
        root,
        API_KEY,
        spec={"request_options": REQUEST_OPTIONS},
        retry=FAST_RETRY,
        max_concurrency=32,
        max_cost_usd=cap,
        **options,
    )


async def test_a_budget_of_a_few_cents_stops_the_run_under_it_and_a_higher_one_finishes_the_rest(
    emu, tmp_path: Path
) -> None:
    cap = 0.03
    items = make_items(ITEMS)
    summary = await run_with_budget(emu, tmp_path, cap).run(items, total=ITEMS)
    bill = emu.stats()["billing"]

    # Under the cap, bill for bill: the engine's figures are the emulator's.
    assert bill["cost_usd"] <= cap
    assert summary["cost_usd"]["actual"] == pytest.approx(bill["cost_usd"], rel=1e-4)
    budget = summary["budget"]
    assert budget is not None and budget["exhausted"] and budget["spent"] == pytest.approx(bill["cost_usd"], rel=1e-4)
    # ...and used: it stops only when the next request's worst case no longer fits.
    price = DEFAULT_PRICES["gpt-5-mini"]
    worst = (60 * 1.25 * price.input + OUTPUT_BOUND * price.output) / 1e6 * 0.5  # flex: half
    assert bill["cost_usd"] > cap - 2 * worst

    sent = summary["succeeded"]
    assert 0 < sent < ITEMS and summary["skipped"] == ITEMS - sent and summary["failed"] == 0
    assert summary["total"] == ITEMS and emu.stats()["requests"] == sent  # nothing refused was sent
    skipped = [r for r in records(tmp_path) if r["status"] == "skipped"]
    assert len(skipped) == ITEMS - sent
    assert all(r["error"]["code"] == "budget" and r["error"]["retryable"] for r in skipped)
    assert all(r["usage"] == {"input": 0, "cached": 0, "output": 0, "reasoning": 0} for r in skipped)
    live = read_live_state(tmp_path)  # what the Flex tab shows
    assert live is not None and live["budget_skipped"] == ITEMS - sent and live["skipped"] == 0
    assert live["budget"] == {"max_cost_usd": cap, "spent": budget["spent"], "reserved": 0.0, "exhausted": True}
    print(
        f"\n[budget] max_cost_usd ${cap}: {sent}/{ITEMS} items sent, {ITEMS - sent} skipped; engine spent "
        f"${budget['spent']:.6f}, emulator billed ${bill['cost_usd']:.6f} ({bill['cost_usd'] / cap:.1%} of the cap, "
        f"worst case of one request ${worst:.6f})"
    )

    # A later run with a higher cap: earlier spending counts, only the skipped items are sent.
    again = await run_with_budget(emu, tmp_path, 1.0).run(items, total=ITEMS)
    assert again["total"] == again["succeeded"] == ITEMS and again["skipped"] == 0
    assert again["this_run"]["resumed"] == sent and again["this_run"]["requests"] == ITEMS - sent
    assert again["budget"] is not None and again["budget"]["spent_before"] == pytest.approx(budget["spent"], rel=1e-4)
    inputs = emu.stats()["inputs"]
    assert all(inputs[input_key(i.prompt)]["requests"] == 1 for i in items)  # nothing paid twice
    total_bill = emu.stats()["billing"]["cost_usd"]
    assert again["cost_usd"]["actual"] == pytest.approx(total_bill, rel=1e-4)
    assert again["budget"]["spent"] == pytest.approx(total_bill, rel=1e-4)
    print(
        f"[budget] second run, max_cost_usd $1: {ITEMS - sent} sent, all {ITEMS} done, billed ${total_bill:.6f} in all"
    )


async def test_without_an_output_bound_the_budget_sends_the_default_one(emu, tmp_path: Path) -> None:
    """No max_output_tokens in the request: a worst case needs one, so the engine sends 4,096. The
    emulator's limiter charges a request its output bound: admitted tokens show what was sent."""
    engine = make_engine(emu, tmp_path, API_KEY, retry=FAST_RETRY, max_cost_usd=1.0)
    emu.update(tpm_limit=10_000_000)  # a limit far away, only so that the limiter counts admitted tokens
    summary = await engine.run(make_items(3), total=3)
    stats = emu.stats()
    assert summary["succeeded"] == 3
    assert stats["admitted"]["tokens"] == summary["usage"]["input"] + 3 * 4096


def test_a_budget_for_a_model_without_a_price_is_refused_before_anything_is_sent(emu, tmp_path: Path) -> None:
    with pytest.raises(BudgetError, match=r"no price is known for model 'my-finetune'"):
        make_engine(emu, tmp_path, API_KEY, spec={"model": "my-finetune"}, max_cost_usd=1.0)
    assert emu.stats()["requests"] == 0


async def test_the_budget_counts_cached_input_at_the_cached_rate(emu, tmp_path: Path) -> None:
    """Long shared instructions are served from the prompt cache after the first answers (the
    emulator's rule: a prefix of 256+ tokens): billed at the cached rate, and spent from the budget
    at that rate too, so a cap goes further."""
    instructions = "You classify support tickets. " + "Follow the house style guide closely. " * 60
    engine = make_engine(
        emu,
        tmp_path,
        API_KEY,
        spec={"instructions": instructions, "request_options": REQUEST_OPTIONS},
        retry=FAST_RETRY,
        max_concurrency=4,
        max_cost_usd=1.0,
    )
    summary = await engine.run(make_items(40), total=40)
    bill = emu.stats()["billing"]
    cost, usage = summary["cost_usd"], summary["usage"]
    assert usage["cached"] > 0 and bill["cached_tokens"] == usage["cached"]
    assert summary["budget"] is not None
    assert summary["budget"]["spent"] == pytest.approx(bill["cost_usd"], rel=1e-4) == cost["actual"]
    without_cache = cost["actual"] + cost["cache_saved"]
    print(
        f"\n[prompt cache] 40 items, {usage['input']:,} input tokens of which {usage['cached']:,} cached: cost "
        f"${cost['actual']:.6f} instead of ${without_cache:.6f} ({cost['cache_saved'] / without_cache:.0%} less), "
        f"on top of flex's ${cost['saved']:.6f}"
    )
    assert cost["cache_saved"] > 0


async def test_background_mode_holds_the_budget_until_each_response_is_answered(emu, tmp_path: Path) -> None:
    """Background responses are billed when they complete, long after their create answered: the
    budget keeps each one's worst case held until then, so the cap holds here too (and the create
    requests are paced by the token limit like inline ones)."""
    cap = 0.01
    emu.update(latency_s=0.05, tpm_limit=40_000, rate_window_s=3)
    engine = run_with_budget(emu, tmp_path, cap, submit_mode="background", poll_interval_s=0.05, rate_limit_window_s=3)
    summary = await engine.run(make_items(120), total=120)
    stats = emu.stats()
    bill = stats["billing"]
    assert bill["cost_usd"] <= cap and summary["skipped"] > 0
    assert summary["budget"] is not None and summary["budget"]["spent"] == pytest.approx(bill["cost_usd"], rel=1e-4)
    # Responses that hit max_output_tokens end 'incomplete' (failed items) but were generated, so
    # billed: their records and the budget count what they cost, like the emulator's bill.
    assert stats["background"]["created"] == summary["succeeded"] + summary["failed"] == bill["requests"]
    assert summary["cost_usd"]["actual"] == pytest.approx(bill["cost_usd"], rel=1e-4)
    assert stats["rate_limited"]["tokens"] <= 1
    print(
        f"\n[budget] background mode, max_cost_usd ${cap}: {bill['requests']}/120 sent, billed "
        f"${bill['cost_usd']:.6f} ({bill['cost_usd'] / cap:.1%} of the cap)"
    )
