"""Shared fixtures: one emulator per test module, reset to a known config before every test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import openai
import pytest

from flex_provider.emulator import EmulatorConfig, EmulatorServer

API_KEY = "sk-test-emulator-key"
BASE_CONFIG = EmulatorConfig(api_key=API_KEY, latency_s=0.02, latency_jitter=0.5, standard_latency_s=0.005)


@pytest.fixture(scope="module")
def emulator_base_config() -> EmulatorConfig:
    return BASE_CONFIG


@pytest.fixture
async def client(emu: EmulatorServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=emu.base_url, api_key=API_KEY, max_retries=0) as c:
        yield c
