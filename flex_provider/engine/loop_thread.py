"""Run coroutines on an event loop of their own, in a thread, and await them from another loop.

Why: an Airflow triggerer runs every deferred task of a deployment on ONE event loop, and whatever a
coroutine does between two ``await`` delays every other trigger. A flex run at full speed is CPU
work between awaits (the SDK parses 200 answers that arrived together: hundreds of milliseconds in
one loop iteration). On a loop of its own, in a thread, that work no longer holds the triggerer's
loop: the two threads only share the GIL, which CPython hands over every ``sys.getswitchinterval()``
(5 ms), so the triggerer's loop waits milliseconds, not hundreds of them.

One loop thread serves every flex run of the process (:class:`LoopThread`, shared through
:func:`acquire`/:func:`release`): a triggerer with fifty flex tasks gets one extra thread, not
fifty, and the flex runs compete with each other on it as they used to on the triggerer's loop
(only they are batch work; the triggerer's other triggers no longer wait behind them). The thread
starts with the first run and stops when the last one ends.

:func:`run_on_loop_thread` is the bridge, with the semantics of awaiting the coroutine directly:

* the result or the exception comes back to the caller;
* ``contextvars`` travel with it (Airflow routes a trigger's log lines to the task's trigger log
  by the ``trigger_id`` bound in the context of the trigger's task; the SDK keeps preset
  connections in a context variable too);
* cancelling the caller cancels the coroutine *in its loop* and waits until it has finished (a
  flex run saves its checkpoints when cancelled), bounded by ``cancel_timeout``.

Plain asyncio, no Airflow.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)

THREAD_NAME = "flex-engine-loop"
DEFAULT_CANCEL_TIMEOUT_S = 120.0


class LoopThread:
    """An event loop running forever in a daemon thread, until :meth:`stop`."""

    def __init__(self, name: str = THREAD_NAME) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._started = threading.Event()
        self.users = 0  # runs holding it (see acquire/release)

    def start(self) -> LoopThread:
        self.thread.start()
        self._started.wait()
        return self

    def _main(self) -> None:
        loop = self.loop
        asyncio.set_event_loop(loop)
        loop.call_soon(self._started.set)
        try:
            loop.run_forever()
        finally:
            # What asyncio.run does at the end: cancel what is left, close async generators and the
            # default executor (the threads of asyncio.to_thread), then the loop.
            try:
                tasks = asyncio.all_tasks(loop)
                for task in tasks:
                    task.cancel()
                if tasks:
                    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                asyncio.set_event_loop(None)
                loop.close()

    def stop(self) -> None:
        """Ask the loop to stop (from any thread); the thread then cleans up and ends by itself."""
        with contextlib.suppress(RuntimeError):  # already closed
            self.loop.call_soon_threadsafe(self.loop.stop)

    def submit(
        self, factory: Callable[[], Coroutine[Any, Any, T]], context: contextvars.Context
    ) -> tuple[concurrent.futures.Future[T], Callable[[Any], None]]:
        """Start ``factory()`` as a task of this loop, in ``context``. Returns a future of its
        outcome, and a thread-safe ``cancel(msg)`` of the task."""
        outcome: concurrent.futures.Future[T] = concurrent.futures.Future()
        holder: list[asyncio.Task[T]] = []
        cancelled: list[Any] = []  # a cancel that came before the task existed
        lock = threading.Lock()

        def settle(task: asyncio.Task[T]) -> None:
            if task.cancelled():
                outcome.cancel()
                outcome.set_running_or_notify_cancel()
            elif (exc := task.exception()) is not None:
                outcome.set_exception(exc)
            else:
                outcome.set_result(task.result())

        def begin() -> None:
            try:
                task = self.loop.create_task(context.run(factory), context=context)
            except BaseException as exc:  # the factory failed: that is the outcome
                outcome.set_exception(exc)
                return
            task.add_done_callback(settle)
            with lock:
                holder.append(task)
                early = list(cancelled)
            if early:
                task.cancel(early[0])

        def cancel(msg: Any = None) -> None:
            with lock:
                if not holder:
                    cancelled.append(msg)
                    return
                task = holder[0]
            with contextlib.suppress(RuntimeError):  # loop closed: the task is long done
                self.loop.call_soon_threadsafe(task.cancel, msg)

        self.loop.call_soon_threadsafe(begin)
        return outcome, cancel


_shared: LoopThread | None = None
_shared_lock = threading.Lock()


def acquire() -> LoopThread:
    """The process's flex loop thread, started if needed; give it back with :func:`release`."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = LoopThread().start()
        _shared.users += 1
        return _shared


def release(runner: LoopThread) -> None:
    """One run less on ``runner``; the last one out stops it (a later run starts a new one)."""
    global _shared
    with _shared_lock:
        runner.users -= 1
        if runner.users > 0:
            return
        if _shared is runner:
            _shared = None
    runner.stop()


async def run_on_loop_thread(
    factory: Callable[[], Coroutine[Any, Any, T]], *, cancel_timeout: float = DEFAULT_CANCEL_TIMEOUT_S
) -> T:
    """Await ``factory()`` run on the shared loop thread, as if it were awaited here.

    ``factory`` is called in that thread, so whatever the coroutine binds to its loop (locks,
    events, clients) belongs to that loop. Cancelling the caller cancels the coroutine there and
    waits for it to finish, at most ``cancel_timeout`` seconds (then it is left to finish alone,
    and a warning says so); further cancellations during that wait are absorbed, and the first
    one is re-raised at the end."""
    runner = acquire()
    try:
        outcome, cancel = runner.submit(factory, contextvars.copy_context())
        waiter = asyncio.wrap_future(outcome)
        try:
            return await asyncio.shield(waiter)
        except asyncio.CancelledError as exc:
            if waiter.done() and not waiter.cancelled():
                waiter.exception()  # retrieved (so never reported as lost): the cancellation wins
                raise  # our cancellation raced with the end: nothing left to stop
            cancel(exc.args[0] if exc.args else None)
            await _wait_out(waiter, cancel_timeout)
            raise
    finally:
        release(runner)


async def _wait_out(waiter: asyncio.Future[Any], timeout: float) -> None:
    """Wait until ``waiter`` is done, up to ``timeout`` s, through any further cancellation."""
    loop = asyncio.get_running_loop()
    until = loop.time() + timeout
    while not waiter.done():
        remaining = until - loop.time()
        if remaining <= 0:
            log.warning(
                "flex engine did not finish within %.0f s of being cancelled; leaving it to finish alone", timeout
            )
            return
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait([waiter], timeout=remaining)
    if not waiter.cancelled():
        waiter.exception()  # retrieved: its error (if any) is not the caller's news, the cancellation is
