"""How many requests may be in flight: a limit that backs off when OpenAI says we are too fast.

``max_concurrency`` is an upper bound. On 429 rate_limit_exceeded the limit halves (at most once
per second, so one burst of 429s does not collapse it to 1) and every new request waits for the
server's reset time; each run of successes as long as the limit raises it by one again (AIMD).
429 resource_unavailable does *not* lower it: flex capacity is not our rate limit.
"""

from __future__ import annotations

import asyncio
import collections
import time


class AdaptiveLimiter:
    def __init__(self, maximum: int, max_pause_s: float = 900.0) -> None:
        self.maximum = maximum
        self.max_pause_s = max_pause_s  # a server-sent wait never pauses the whole run longer than this
        self.limit = maximum
        self.in_flight = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._resume_at = 0.0
        self._last_decrease = 0.0
        self._streak = 0

    async def acquire(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            pause = self._resume_at - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
                continue
            if self.in_flight < self.limit:
                self.in_flight += 1
                return
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                else:
                    self._wake()  # we were woken but will not take the slot: pass it on
                raise

    def release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        free = self.limit - self.in_flight
        while free > 0 and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                free -= 1

    async def __aenter__(self) -> AdaptiveLimiter:
        await self.acquire()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()

    def on_rate_limited(self, wait_s: float | None) -> None:
        now = time.monotonic()
        if now - self._last_decrease >= 1.0:
            self.limit = max(1, self.limit // 2)
            self._last_decrease = now
        self._streak = 0
        if wait_s and wait_s > 0:
            self._resume_at = max(self._resume_at, now + min(wait_s, self.max_pause_s))

    def on_success(self) -> None:
        if self.limit >= self.maximum:
            return
        self._streak += 1
        if self._streak >= self.limit:
            self.limit += 1
            self._streak = 0
            self._wake()
