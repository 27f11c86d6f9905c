"""An emulator per module, driven through the real AsyncOpenAI client over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from flex_provider.emulator import EmulatorConfig
from flex_provider.engine import RetryPolicy
from tests.integration.helpers import OPEN_CLIENTS

API_KEY = "sk-test-integration-7f3a9c2e1b"
BASE_CONFIG = EmulatorConfig(api_key=API_KEY, latency_s=0.02, latency_jitter=0.5, standard_latency_s=0.005)
FAST_RETRY = RetryPolicy(max_attempts=30, max_elapsed_s=60, initial_wait_s=0.01, max_wait_s=0.05, jitter_s=0.01)


@pytest.fixture(scope="module")
def emulator_base_config() -> EmulatorConfig:
    return BASE_CONFIG


@pytest.fixture(autouse=True)
async def close_clients() -> AsyncIterator[None]:
    """Close the clients the test's engines were built with (see helpers.OPEN_CLIENTS)."""
    yield
    while OPEN_CLIENTS:
        await OPEN_CLIENTS.pop().close()
