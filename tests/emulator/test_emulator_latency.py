"""Per-tier latency: flex slow, every other tier fast, on both APIs and for background responses.

Deadline tests rely on this split: switching items to the standard tier must actually make them
finish sooner. Flex latency is 0.6 s here and standard 0, so the thresholds leave a wide margin.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import openai
import pytest

from flex_provider.emulator import EmulatorServer

pytestmark = pytest.mark.integration

FLEX_S = 0.6
FAST_S = 0.3  # a standard answer must come well before this


async def timed(make: Any) -> tuple[float, Any]:
    started = time.monotonic()
    result = await make()
    return time.monotonic() - started, result


async def background_done(client: openai.AsyncOpenAI, tier: str, text: str) -> str:
    """Create a background response and poll until it leaves queued/in_progress."""
    created = await client.responses.create(model="gpt-5", input=text, background=True, service_tier=tier)
    while True:
        got = await client.responses.retrieve(created.id)
        if got.status not in ("queued", "in_progress"):
            return got.status
        await asyncio.sleep(0.02)


async def test_standard_is_fast_and_flex_is_slow(emu: EmulatorServer, client: openai.AsyncOpenAI) -> None:
    emu.update(latency_s=FLEX_S, latency_jitter=0.0, standard_latency_s=0.0)

    def calls(tier: str) -> list[Any]:
        text = f"A note about the {tier} tier and the harbour crane that broke on Tuesday."
        return [
            lambda: client.responses.create(model="gpt-5", input=text, service_tier=tier),
            lambda: client.chat.completions.create(
                model="gpt-5", messages=[{"role": "user", "content": text}], service_tier=tier
            ),
            lambda: background_done(client, tier, text),
        ]

    tiers = ("flex", "default", "auto", "priority")
    timings = await asyncio.gather(*(timed(make) for tier in tiers for make in calls(tier)))
    by_tier = {tier: timings[i * 3 : i * 3 + 3] for i, tier in enumerate(tiers)}
    for kind, (elapsed, result) in zip(("responses", "chat", "background"), by_tier["flex"], strict=True):
        assert elapsed >= FLEX_S, (kind, elapsed)
        if kind == "background":
            assert result == "completed"
        else:
            assert result.service_tier == "flex"
    for tier in tiers[1:]:
        for kind, (elapsed, _) in zip(("responses", "chat", "background"), by_tier[tier], strict=True):
            assert elapsed < FAST_S, (tier, kind, elapsed)
    assert emu.stats()["billing"]["by_tier"]["flex"]["requests"] == 3
