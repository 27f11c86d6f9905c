"""run_on_loop_thread: a coroutine on the shared flex loop thread behaves as if awaited directly
(result, exception, context variables, cancellation), and CPU work there does not hold the caller's loop."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time

import pytest
import structlog

from flex_provider.engine import loop_thread
from flex_provider.engine.loop_thread import THREAD_NAME, run_on_loop_thread

REQUEST = contextvars.ContextVar("REQUEST", default="unset")


def loop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME and t.is_alive()]


def wait_no_loop_thread(timeout: float = 5.0) -> None:
    """The last run out stops the thread; it ends by itself shortly after."""
    deadline = time.monotonic() + timeout
    while loop_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not loop_threads()


async def test_result_comes_back_from_another_thread_and_loop() -> None:
    here = (threading.get_ident(), asyncio.get_running_loop())

    async def work() -> tuple[int, asyncio.AbstractEventLoop, str]:
        await asyncio.sleep(0)
        return threading.get_ident(), asyncio.get_running_loop(), threading.current_thread().name

    ident, loop, name = await run_on_loop_thread(work)
    assert (ident, loop) != here and ident != here[0] and loop is not here[1]
    assert name == THREAD_NAME
    wait_no_loop_thread()


async def test_exception_propagates_with_its_type_and_traceback() -> None:
    class Boom(Exception):
        pass

    async def work() -> None:
        await asyncio.sleep(0)
        raise Boom("bad")

    with pytest.raises(Boom, match="bad") as raised:
        await run_on_loop_thread(work)
    assert any(frame.name == "work" for frame in raised.traceback)


async def test_factory_error_propagates() -> None:
    def factory():  # raises before any coroutine exists
        raise ValueError("no coroutine")

    with pytest.raises(ValueError, match="no coroutine"):
        await run_on_loop_thread(factory)


async def test_context_variables_travel_but_do_not_leak_back() -> None:
    """Airflow binds the trigger_id with structlog's contextvars in the trigger's task: log lines
    written on the loop thread must carry it, or they miss the task's trigger log."""
    REQUEST.set("trigger-7")
    structlog.contextvars.bind_contextvars(trigger_id=7)
    try:

        async def work() -> tuple[str, dict]:
            seen = REQUEST.get(), structlog.contextvars.get_contextvars()
            REQUEST.set("changed there")
            return seen

        value, bound = await run_on_loop_thread(work)
        assert value == "trigger-7" and bound["trigger_id"] == 7
        assert REQUEST.get() == "trigger-7"
    finally:
        structlog.contextvars.unbind_contextvars("trigger_id")


async def test_cancelling_the_caller_cancels_the_coroutine_there_and_waits_for_its_cleanup() -> None:
    steps: list[str] = []
    started = threading.Event()

    async def work() -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError as exc:
            steps.append(f"cancelled there: {exc.args}")
            await asyncio.sleep(0.2)  # a checkpoint being written
            steps.append("cleaned up")
            raise

    task = asyncio.create_task(run_on_loop_thread(work))
    await asyncio.to_thread(started.wait, 5)
    task.cancel("user action")
    with pytest.raises(asyncio.CancelledError):
        await task
    assert steps == ["cancelled there: ('user action',)", "cleaned up"]  # done before the caller saw it
    wait_no_loop_thread()


async def test_a_cancel_before_the_coroutine_started_still_reaches_it() -> None:
    ran: list[str] = []

    async def work() -> None:
        ran.append("started")
        await asyncio.sleep(60)

    task = asyncio.create_task(run_on_loop_thread(work))
    await asyncio.sleep(0)  # submitted, maybe not yet started there
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
    wait_no_loop_thread()


async def test_cancel_wait_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    release = threading.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                continue  # ignores cancellation

    task = asyncio.create_task(run_on_loop_thread(stubborn, cancel_timeout=0.3))
    await asyncio.sleep(0.1)
    task.cancel()
    with caplog.at_level(logging.WARNING, logger=loop_thread.__name__), pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
    assert "did not finish within" in caplog.text
    release.set()
    wait_no_loop_thread()


async def test_runs_share_one_thread_which_stops_after_the_last() -> None:
    both_running = threading.Barrier(2, timeout=5)

    async def work() -> threading.Thread:
        await asyncio.to_thread(both_running.wait)
        return threading.current_thread()

    async def alone() -> threading.Thread:
        return threading.current_thread()

    first, second = await asyncio.gather(run_on_loop_thread(work), run_on_loop_thread(work))
    assert first is second
    wait_no_loop_thread()
    assert await run_on_loop_thread(alone) is not first  # a later run starts a new one
    wait_no_loop_thread()


async def test_cpu_work_there_does_not_hold_this_loop() -> None:
    """The point of it all: a second of CPU work without an await, on the loop thread, while this
    loop keeps its 20 ms ticks (the GIL is handed over every 5 ms). Generous bound: noisy machines."""

    async def busy() -> None:
        until = time.perf_counter() + 1.0
        x = 0
        while time.perf_counter() < until:
            x += 1

    worst = 0.0
    job = asyncio.create_task(run_on_loop_thread(busy))
    while not job.done():
        before = time.monotonic()
        await asyncio.sleep(0.02)
        worst = max(worst, time.monotonic() - before - 0.02)
    await job
    assert worst < 0.5
