from __future__ import annotations

import asyncio
import time

import pytest

from flex_provider.engine import concurrency
from flex_provider.engine.concurrency import AdaptiveLimiter


class FakeClock:
    """Stands in for the ``time`` module inside concurrency.py only (asyncio keeps the real clock)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(concurrency, "time", fake)
    return fake


def test_rate_limit_halves_at_most_once_per_second(clock):
    limiter = AdaptiveLimiter(16)
    limiter.on_rate_limited(None)
    assert limiter.limit == 8
    clock.now += 0.5
    limiter.on_rate_limited(None)  # same burst of 429s
    assert limiter.limit == 8
    clock.now += 0.6
    limiter.on_rate_limited(None)
    assert limiter.limit == 4
    for _ in range(5):
        clock.now += 1.0
        limiter.on_rate_limited(None)
    assert limiter.limit == 1  # never below one


def test_successes_raise_the_limit_back_to_the_maximum(clock):
    limiter = AdaptiveLimiter(8)
    limiter.on_rate_limited(None)
    assert limiter.limit == 4
    for _ in range(3):
        limiter.on_success()
    assert limiter.limit == 4  # a run as long as the limit is needed
    limiter.on_success()
    assert limiter.limit == 5
    for _ in range(5 + 6 + 7):
        limiter.on_success()
    assert limiter.limit == 8
    for _ in range(100):
        limiter.on_success()
    assert limiter.limit == 8  # never above the maximum


def test_rate_limit_resets_the_success_streak(clock):
    limiter = AdaptiveLimiter(8)
    limiter.on_rate_limited(None)  # 4
    for _ in range(3):
        limiter.on_success()
    clock.now += 0.1  # within the second: limit stays, streak restarts
    limiter.on_rate_limited(None)
    assert limiter.limit == 4
    for _ in range(3):
        limiter.on_success()
    assert limiter.limit == 4
    limiter.on_success()
    assert limiter.limit == 5


def test_rate_limit_sets_pause_only_with_wait(clock):
    limiter = AdaptiveLimiter(4)
    limiter.on_rate_limited(None)
    assert limiter._resume_at == 0.0
    limiter.on_rate_limited(5.0)
    assert limiter._resume_at == 1005.0
    limiter.on_rate_limited(1.0)  # a shorter hint does not shorten the pause
    assert limiter._resume_at == 1005.0


async def test_acquire_honours_pause():
    limiter = AdaptiveLimiter(4)
    limiter.on_rate_limited(0.08)
    started = time.monotonic()
    async with limiter:
        waited = time.monotonic() - started
        assert limiter.in_flight == 1
    assert waited >= 0.07
    assert limiter.in_flight == 0


async def test_acquire_without_pause_is_immediate():
    limiter = AdaptiveLimiter(2)
    await asyncio.wait_for(limiter.acquire(), timeout=0.5)
    await asyncio.wait_for(limiter.acquire(), timeout=0.5)
    assert limiter.in_flight == 2
    third = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0.01)
    assert not third.done()  # full
    limiter.release()
    await asyncio.wait_for(third, timeout=0.5)
    assert limiter.in_flight == 2


async def test_never_exceeds_limit_with_50_concurrent_acquirers():
    limiter = AdaptiveLimiter(5)
    peak = 0
    over_limit: list[tuple[int, int]] = []
    done = 0

    async def worker(i: int) -> None:
        nonlocal peak, done
        async with limiter:
            peak = max(peak, limiter.in_flight)
            if limiter.in_flight > limiter.limit:
                over_limit.append((limiter.in_flight, limiter.limit))
            for _ in range(i % 3 + 1):
                await asyncio.sleep(0)
            if i == 10:
                limiter.on_rate_limited(None)  # limit drops to 2 while others hold slots
            else:
                limiter.on_success()
        done += 1

    await asyncio.wait_for(asyncio.gather(*(worker(i) for i in range(50))), timeout=5)
    assert done == 50
    assert peak == 5
    assert over_limit == []  # no slot handed out above the (possibly lowered) limit
    assert limiter.in_flight == 0


async def test_cancelled_waiter_passes_its_wakeup_on():
    limiter = AdaptiveLimiter(1)
    await limiter.acquire()
    second = asyncio.create_task(limiter.acquire())
    third = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0.01)
    limiter.release()  # wakes `second`...
    second.cancel()  # ...which is cancelled before it takes the slot
    await asyncio.wait_for(third, timeout=0.5)  # the slot went on to `third`
    assert second.cancelled()
    assert limiter.in_flight == 1


async def test_cancelled_queued_waiter_leaves_the_queue():
    limiter = AdaptiveLimiter(1)
    await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0.01)
    assert len(limiter._waiters) == 1
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert len(limiter._waiters) == 0
    limiter.release()
    assert limiter.in_flight == 0


async def test_limit_increase_wakes_waiters(monkeypatch):
    monkeypatch.setattr(concurrency, "time", FakeClock())
    limiter = AdaptiveLimiter(2)
    limiter.on_rate_limited(None)  # limit 1
    await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    limiter.on_success()  # streak 1 >= limit 1: limit 2, and the waiter gets the new slot
    await asyncio.wait_for(waiter, timeout=0.5)
    assert limiter.limit == 2
    assert limiter.in_flight == 2


def test_a_server_sent_pause_is_capped(clock):
    """Unattended nights #1: ``retry-after: 86400`` must not pause the whole run for a day."""
    limiter = AdaptiveLimiter(4, max_pause_s=900.0)
    limiter.on_rate_limited(86400.0)
    assert limiter._resume_at == 1000.0 + 900.0
    limiter.on_rate_limited(float("nan"))  # garbage is no pause at all
    assert limiter._resume_at == 1900.0
