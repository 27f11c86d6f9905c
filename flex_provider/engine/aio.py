"""Small asyncio helpers shared by the engine's modules."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def finish_even_if_cancelled(work: Awaitable[T]) -> T:
    """Storage writes run in threads, which cancellation cannot stop. Wait for the write to end
    before letting a cancellation through, so that no later write (the manifest, a new lease
    holder) can overtake it; then re-raise the cancellation."""
    future = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await future
        raise
