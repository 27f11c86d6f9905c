"""Small builders shared by the integration tests."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from flex_provider.engine import FlexEngine, PromptBuilder, RequestSpec, ResultStore, RunOptions
from flex_provider.hooks.flex import ClientSettings, FlexHook

# Clients made by make_engine, closed after each test by the autouse fixture in conftest.py: an
# aiohttp session left open logs "Unclosed client session" when it is garbage-collected.
OPEN_CLIENTS: list[Any] = []


def make_items(n: int, prefix: str = "ticket") -> list:
    builder = PromptBuilder()
    return [
        builder.build({"id": f"{prefix}-{i}", "text": f"{prefix} {i}: my invoice {i} is wrong"}, f"items[{i}]")
        for i in range(n)
    ]


def input_key(text: str) -> str:
    """The emulator's per-input stats key."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def make_engine(
    emu: Any,
    root: Path,
    api_key: str,
    *,
    spec: dict | None = None,
    base_url: str | None = None,
    engine: dict | None = None,
    **options: Any,
) -> FlexEngine:
    """An engine on the emulator (or ``base_url``); ``engine`` holds FlexEngine keyword arguments."""
    client = FlexHook.build_client(ClientSettings(api_key, base_url or emu.base_url), max_connections=256)
    OPEN_CLIENTS.append(client)
    return FlexEngine(
        client,
        RequestSpec(**{"model": "gpt-5-mini", "instructions": "Classify the ticket.", **(spec or {})}),
        RunOptions(**{"max_concurrency": 8, "flush_interval_s": 0.2, "progress_interval_s": 0.5, **options}),
        ResultStore(root),
        secrets=(api_key,),
        **{"lease_settle_s": 0.05, **(engine or {})},
    )


def records(root: Path) -> list[dict]:
    return list(ResultStore(root).iter_records())
