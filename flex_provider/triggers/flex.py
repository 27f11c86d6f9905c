"""FlexTrigger: runs a flex job in the triggerer, where waiting on slow flex costs no worker slot.

Serialises only the job description (conn_id, options, URIs, small inline item lists): never the
API key and never large inputs. All blocking work (storage, Jinja) happens in threads inside the
engine, so the triggerer's shared event loop stays responsive. Progress lines (counts, tokens,
cost; never prompts or outputs) go to the trigger log, shown in the task's log in the UI.

Delivery is at-least-once: if the triggerer restarts, ``run()`` starts again and the engine skips
every item whose result is already on storage.

This module imports nothing heavy at the top: the triggerer imports trigger classes *on its event
loop*, and importing the openai SDK takes about half a second, which would stall every other
trigger. The engine, the SDK and the hook are loaded in a thread when ``run()`` starts.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterator
from types import ModuleType
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


def _load_job_module() -> ModuleType:
    """Import ``flex_provider.job``: the engine, the hook and the openai SDK (blocking: call it in a thread)."""
    return importlib.import_module("flex_provider.job")


class FlexTrigger(BaseTrigger):
    """``job`` is a :meth:`FlexJob.to_payload` dict, of this release or an earlier one (the triggerer
    rebuilds triggers from stored kwargs, also after the provider was upgraded)."""

    def __init__(self, job: dict[str, Any]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # BaseTrigger.__init__ is unannotated
        self.job = job

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("flex_provider.triggers.flex.FlexTrigger", {"job": self.job})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        jobs = await asyncio.to_thread(_load_job_module)
        event = await jobs.run_job(jobs.FlexJob.from_payload(self.job), self.log)
        yield TriggerEvent(event.to_payload())

    async def on_kill(self) -> None:
        """The user marked or cleared the task: cancel background responses still running on
        OpenAI so nobody pays for answers no one will read. (``cleanup()`` deliberately does not:
        it also runs when the trigger merely moves to another triggerer.) By the time this runs,
        ``run()`` has been cancelled; every response id was checkpointed before being waited on,
        so storage knows all of them."""
        jobs = await asyncio.to_thread(_load_job_module)
        cancelled, outstanding = await jobs.cancel_outstanding(jobs.FlexJob.from_payload(self.job))
        if outstanding:
            self.log.info("flex on_kill: cancelled %d of %d outstanding background response(s)", cancelled, outstanding)
