"""FlexTrigger: runs a flex job in the triggerer, where waiting on slow flex costs no worker slot.

Serialises only the job description (conn_id, options, URIs, small inline item lists): never the
API key and never large inputs. All blocking work (storage, Jinja) happens in threads inside the
engine, so the triggerer's shared event loop stays responsive. Progress lines (counts, tokens,
cost; never prompts or outputs) go to the trigger log, shown in the task's log in the UI.

Delivery is at-least-once: if the triggerer restarts, ``run()`` starts again and the engine skips
every item whose result is already on storage.

**A good neighbour.** One triggerer runs every deferred task of a deployment on one event loop; a
flex run at full speed is CPU work between awaits (hundreds of answers parsed per second), which
made every other trigger late (the triggerer's watchdog: "async thread was blocked"). So the run
does not happen on the triggerer's loop: it runs on an event loop of its own in a thread of the
triggerer process (:mod:`flex_provider.engine.loop_thread`, one thread for all flex runs of the
process), from loading the SDK to the last checkpoint, and ``run()`` awaits it there. The two
threads share the GIL, which CPython hands over every 5 ms, so other triggers wait milliseconds,
not hundreds of them. Log lines still land in the task's trigger log (the trigger's context,
where Airflow binds the ``trigger_id``, travels with the run), and cancelling ``run()`` cancels
the run in its loop and waits for it to save its checkpoints. ``FLEX_PROVIDER_ENGINE_THREAD=off``
(in the triggerer's environment) runs it on the triggerer's loop as before: a way back, and the
"before" of ``benchmarks/triggerer_canary.py``.

This module imports nothing heavy at the top: the triggerer imports trigger classes *on its event
loop*, and importing the openai SDK takes about half a second, which would stall every other
trigger. The engine, the SDK and the hook are loaded in the engine's thread when ``run()`` starts.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from types import ModuleType
from typing import Any, TypeVar

from airflow.triggers.base import BaseTrigger, TriggerEvent

from flex_provider.engine.loop_thread import run_on_loop_thread
from flex_provider.utils.switches import ENGINE_THREAD_ENV, GC_FREEZE_ENV, switched_on

T = TypeVar("T")


def _load_job_module() -> ModuleType:
    """Import ``flex_provider.job``: the engine, the hook and the openai SDK (blocking: call it in a
    thread); the first time, the heap is frozen before and after (:func:`freeze_heap`)."""
    first = "flex_provider.job" not in sys.modules
    if first:
        freeze_heap()  # the import's collections then walk the new objects only, not all of Airflow's
    module = importlib.import_module("flex_provider.job")
    if first:
        freeze_heap()
    return module


def freeze_heap() -> None:
    """``gc.freeze()``, unless ``FLEX_PROVIDER_GC_FREEZE=off``; called around the first load of the SDK.

    A full garbage collection walks every object of the process (Airflow, the SDK, every trigger)
    while holding the GIL: a few hundred milliseconds in a triggerer, during which no thread runs,
    the triggerer's loop included. A flex run allocates fast enough to cause one every few seconds,
    whichever thread it runs in. Frozen objects (everything alive now: modules, classes, the
    triggerer's state) are left out of every later collection, so these stay short. The price:
    cyclic garbage among the objects frozen now is never reclaimed (freed by reference counting
    only), a bounded, one-time amount."""
    if switched_on(GC_FREEZE_ENV):
        gc.freeze()


def engine_thread_enabled() -> bool:
    """Whether flex runs get a loop of their own (default) or share the triggerer's (``off``)."""
    return switched_on(ENGINE_THREAD_ENV)


async def _off_the_triggerer_loop(work: Callable[[ModuleType], Awaitable[T]]) -> T:
    """``work(flex_provider.job)`` on the flex loop thread (the module loaded there), or, with the
    engine thread switched off, here (the module loaded in a worker thread)."""
    if not engine_thread_enabled():
        return await work(await asyncio.to_thread(_load_job_module))

    async def there() -> T:
        return await work(_load_job_module())  # blocks the flex loop only, and only the first time

    return await run_on_loop_thread(there)


class FlexTrigger(BaseTrigger):
    """``job`` is a :meth:`FlexJob.to_payload` dict, of this release or an earlier one (the triggerer
    rebuilds triggers from stored kwargs, also after the provider was upgraded)."""

    def __init__(self, job: dict[str, Any]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # BaseTrigger.__init__ is unannotated
        self.job = job

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("flex_provider.triggers.flex.FlexTrigger", {"job": self.job})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        async def run_job(jobs: ModuleType) -> dict[str, Any]:
            event = await jobs.run_job(jobs.FlexJob.from_payload(self.job), self.log)
            return event.to_payload()  # type: ignore[no-any-return]

        yield TriggerEvent(await _off_the_triggerer_loop(run_job))

    async def on_kill(self) -> None:
        """The user marked or cleared the task: cancel background responses still running on
        OpenAI so nobody pays for answers no one will read. (``cleanup()`` deliberately does not:
        it also runs when the trigger merely moves to another triggerer.) By the time this runs,
        ``run()`` has been cancelled; every response id was checkpointed before being waited on,
        so storage knows all of them."""

        async def cancel(jobs: ModuleType) -> tuple[int, int]:
            return await jobs.cancel_outstanding(jobs.FlexJob.from_payload(self.job))  # type: ignore[no-any-return]

        cancelled, outstanding = await _off_the_triggerer_loop(cancel)
        if outstanding:
            self.log.info("flex on_kill: cancelled %d of %d outstanding background response(s)", cancelled, outstanding)
