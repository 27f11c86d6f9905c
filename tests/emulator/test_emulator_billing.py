"""The emulator's own bill (``stats["billing"]``) against the usage its answers reported.

A budget test compares the engine's reported cost with this bill, so the bill must be exactly the
sum of the usage the client saw, priced by served tier (flex half of standard) and model, cached
input at the cached rate, with nothing billed for requests that got no answer.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import openai
import pytest

from flex_provider.emulator import EmulatorConfig, EmulatorServer
from flex_provider.emulator.__main__ import build_parser
from flex_provider.engine.pricing import DEFAULT_PRICES

pytestmark = pytest.mark.integration

# Made-up round prices (USD per 1M tokens, standard tier), pinned through the ``prices`` knob so
# the expected figures don't move when the real price table does.
PRICES = {
    "gpt-5": {"input": 2.0, "cached_input": 0.2, "output": 16.0},
    "gpt-5-mini": {"input": 0.5, "cached_input": 0.05, "output": 4.0},
}
FACTOR = {"flex": 0.5, "default": 1.0, "priority": 2.0}
INSTRUCTIONS = "You label shipping notices. Reply with the port, the vessel and the delay in hours. " * 16
DOCS = [
    "The Aurora left Rotterdam six hours late because of fog in the estuary.",
    "Container ship Meridian waits off Valencia; the berth frees up tomorrow morning.",
    "Tanker Solveig reached Gdansk on time after an uneventful crossing.",
]


def usage_of(answer: Any) -> dict[str, int]:
    """Usage of a Responses or Chat answer, in one shape."""
    u = answer.usage
    if hasattr(u, "input_tokens"):
        return {
            "input": u.input_tokens,
            "cached": u.input_tokens_details.cached_tokens,
            "output": u.output_tokens,
            "reasoning": u.output_tokens_details.reasoning_tokens,
        }
    return {
        "input": u.prompt_tokens,
        "cached": u.prompt_tokens_details.cached_tokens,
        "output": u.completion_tokens,
        "reasoning": u.completion_tokens_details.reasoning_tokens,
    }


def priced(model: str, tier: str, usage: dict[str, int], prices: dict[str, dict[str, float]]) -> float:
    p = prices[model]
    uncached = usage["input"] - usage["cached"]
    standard = (uncached * p["input"] + usage["cached"] * p["cached_input"] + usage["output"] * p["output"]) / 1e6
    return standard * FACTOR[tier]


class Ledger:
    """What the client saw: every answer's model, served tier and usage."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, dict[str, int]]] = []

    def add(self, model: str, answer: Any) -> None:
        self.rows.append((model, answer.service_tier, usage_of(answer)))

    def line(self, keep: Any = lambda model, tier: True) -> dict[str, Any]:
        rows = [r for r in self.rows if keep(r[0], r[1])]
        return {
            "requests": len(rows),
            "input_tokens": sum(u["input"] for _, _, u in rows),
            "cached_tokens": sum(u["cached"] for _, _, u in rows),
            "output_tokens": sum(u["output"] for _, _, u in rows),
            "reasoning_tokens": sum(u["reasoning"] for _, _, u in rows),
            "cost_usd": pytest.approx(sum(priced(m, t, u, PRICES) for m, t, u in rows), rel=1e-12),
            "standard_cost_usd": pytest.approx(sum(priced(m, "default", u, PRICES) for m, t, u in rows), rel=1e-12),
            "unpriced_requests": 0,
        }


async def test_bill_is_the_sum_of_the_usage_returned(emu: EmulatorServer, client: openai.AsyncOpenAI) -> None:
    """A mix of APIs, tiers, models, cache hits and a background response, with failures that must
    not be billed: the bill per tier, per model, per (model, tier) and in total equals the usage
    the client was given, priced by hand."""
    emu.update(prices=PRICES)
    ledger = Ledger()
    for doc in DOCS:  # same instructions on the same tier: the 2nd and 3rd hit the prompt cache
        answer = await client.responses.create(
            model="gpt-5-mini", instructions=INSTRUCTIONS, input=doc, service_tier="flex", max_output_tokens=400
        )
        ledger.add("gpt-5-mini", answer)
    for doc in DOCS[:2]:
        answer = await client.chat.completions.create(
            model="gpt-5",
            messages=[{"role": "system", "content": INSTRUCTIONS}, {"role": "user", "content": doc}],
            service_tier="default",
        )
        ledger.add("gpt-5", answer)
    answer = await client.responses.create(model="gpt-5", input=DOCS[2], service_tier="priority")
    ledger.add("gpt-5", answer)
    created = await client.responses.create(model="gpt-5", input=DOCS[0], service_tier="flex", background=True)
    while (answer := await client.responses.retrieve(created.id)).status in ("queued", "in_progress"):
        await asyncio.sleep(0.01)
    ledger.add("gpt-5", answer)

    # Answers that must cost nothing: flex capacity, quota, rate limit, 5xx, broken body, cancelled.
    emu.update(flex_capacity=0)
    with pytest.raises(openai.RateLimitError):
        await client.responses.create(model="gpt-5", input=DOCS[0], service_tier="flex")
    emu.update(flex_capacity=None, insufficient_quota=True)
    with pytest.raises(openai.RateLimitError):
        await client.responses.create(model="gpt-5", input=DOCS[0])
    emu.update(insufficient_quota=False, rpm_limit=1, rate_window_s=60)
    await client.responses.create(model="gpt-5-nano", input=DOCS[0], service_tier="flex")  # priced by default
    with pytest.raises(openai.RateLimitError):
        await client.responses.create(model="gpt-5-nano", input=DOCS[1], service_tier="flex")
    emu.update(rpm_limit=None, error_rate=1.0)
    with pytest.raises(openai.InternalServerError):
        await client.responses.create(model="gpt-5", input=DOCS[0])
    emu.update(error_rate=0.0, malformed_rate=1.0, malformed_kinds=["no_output"])
    async with httpx.AsyncClient(base_url=emu.base_url, headers={"authorization": f"Bearer {client.api_key}"}) as http:
        broken = await http.post("/responses", json={"model": "gpt-5", "input": DOCS[0]})
    assert broken.status_code == 200 and "output" not in broken.json()
    emu.update(malformed_rate=0.0, latency_s=30.0)
    slow = await client.responses.create(model="gpt-5", input=DOCS[1], service_tier="flex", background=True)
    assert (await client.responses.cancel(slow.id)).status == "cancelled"

    assert any(u["cached"] > 0 for _, _, u in ledger.rows), "the cache-hit path was not exercised"
    bill = emu.stats()["billing"]
    nano = DEFAULT_PRICES["gpt-5-nano"]
    nano_line = bill["by_model"].pop("gpt-5-nano")
    assert nano_line["requests"] == 1
    assert nano_line["cost_usd"] == pytest.approx(
        0.5 * (nano_line["input_tokens"] * nano.input + nano_line["output_tokens"] * nano.output) / 1e6, rel=1e-12
    )
    assert set(bill["by_model_tier"].pop("gpt-5-nano")) == {"flex"}
    # Leave gpt-5-nano out of the totals and the flex line, then compare everything with the ledger.
    for key in ("requests", "input_tokens", "output_tokens", "reasoning_tokens", "cost_usd", "standard_cost_usd"):
        bill[key] -= nano_line[key]
        bill["by_tier"]["flex"][key] -= nano_line[key]
    bill["by_tier"]["flex"]["cached_tokens"] -= nano_line["cached_tokens"]
    bill["cached_tokens"] -= nano_line["cached_tokens"]
    by_tier, by_model, by_model_tier = bill.pop("by_tier"), bill.pop("by_model"), bill.pop("by_model_tier")
    assert bill == ledger.line()
    assert by_tier == {tier: ledger.line(lambda m, t, tier=tier: t == tier) for tier in ("flex", "default", "priority")}
    assert by_model == {model: ledger.line(lambda m, t, model=model: m == model) for model in PRICES}
    assert by_model_tier == {
        "gpt-5-mini": {"flex": ledger.line(lambda m, t: (m, t) == ("gpt-5-mini", "flex"))},
        "gpt-5": {tier: ledger.line(lambda m, t, tier=tier: (m, t) == ("gpt-5", tier)) for tier in FACTOR},
    }
    # Flex is half of standard, priority twice: the saving is visible per tier.
    assert by_tier["flex"]["standard_cost_usd"] == pytest.approx(2 * by_tier["flex"]["cost_usd"])
    assert by_tier["priority"]["standard_cost_usd"] == pytest.approx(by_tier["priority"]["cost_usd"] / 2)
    stats = emu.stats()
    assert stats["unavailable"] == 1 and stats["rate_limited"]["requests"] == 1
    assert stats["background"]["cancelled"] == 1


async def test_cached_input_is_billed_at_the_cached_rate(emu: EmulatorServer, client: openai.AsyncOpenAI) -> None:
    emu.update(prices=PRICES)
    first = await client.responses.create(model="gpt-5", instructions=INSTRUCTIONS, input=DOCS[0])
    billed_first = emu.stats()["billing"]["cost_usd"]
    second = await client.responses.create(model="gpt-5", instructions=INSTRUCTIONS, input=DOCS[0])
    billed_second = emu.stats()["billing"]["cost_usd"] - billed_first
    cached = second.usage.input_tokens_details.cached_tokens
    assert first.usage.input_tokens_details.cached_tokens == 0 and cached >= 128
    assert billed_first - billed_second == pytest.approx(cached * (2.0 - 0.2) / 1e6)


async def test_default_prices_and_unpriced_models(emu: EmulatorServer, client: openai.AsyncOpenAI) -> None:
    """Without the knob the engine's default table prices the bill; a model nobody prices is
    counted but costs nothing rather than a made-up number."""
    emu.update(models=[*emu.config.models, "house-model"])
    answer = await client.chat.completions.create(
        model="gpt-5-mini", messages=[{"role": "user", "content": DOCS[0]}], service_tier="flex"
    )
    await client.responses.create(model="house-model", input=DOCS[1])
    bill = emu.stats()["billing"]
    price, usage = DEFAULT_PRICES["gpt-5-mini"], answer.usage
    expected = 0.5 * (usage.prompt_tokens * price.input + usage.completion_tokens * price.output) / 1e6
    assert bill["by_model"]["gpt-5-mini"]["cost_usd"] == pytest.approx(expected, rel=1e-12)
    house = bill["by_model"]["house-model"]
    assert house["requests"] == 1 and house["unpriced_requests"] == 1 and house["input_tokens"] > 0
    assert house["cost_usd"] == 0.0 and house["standard_cost_usd"] == 0.0
    assert (bill["requests"], bill["unpriced_requests"]) == (2, 1)
    assert bill["cost_usd"] == pytest.approx(expected, rel=1e-12)
    emu.reset()
    cleared = emu.stats()["billing"]
    assert (cleared["requests"], cleared["cost_usd"], cleared["by_tier"]) == (0, 0.0, {})


async def test_prices_knob_at_runtime_env_and_cli(emu: EmulatorServer) -> None:
    async with httpx.AsyncClient(base_url=emu.url) as http:
        ok = await http.post("/emulator/config", json={"prices": PRICES})
        assert ok.status_code == 200 and ok.json()["prices"] == PRICES
        for bad in ({"prices": {"gpt-5": {"input": 1.0}}}, {"prices": {"gpt-5": {**PRICES["gpt-5"], "input": -1}}}):
            assert (await http.post("/emulator/config", json=bad)).status_code == 400, bad
    env = {"FLEX_EMULATOR_PRICES": '{"gpt-5": {"input": 2, "cached_input": 0.2, "output": 16}}'}
    assert EmulatorConfig.from_env(env).prices["gpt-5"].output == 16.0
    args = build_parser().parse_args(["--prices", '{"gpt-5-mini": {"input": 0.5, "cached_input": 0.05, "output": 4}}'])
    assert EmulatorConfig.from_env({}, prices=args.prices).prices["gpt-5-mini"].input == 0.5
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--prices", "not json"])
