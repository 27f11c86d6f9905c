"""FlexTrigger: runs a flex job in the triggerer, where waiting on slow flex costs no worker slot.

Serialises only the job description (conn_id, options, URIs, small inline item lists): never the
API key and never large inputs. All blocking work (storage, Jinja) happens in threads inside the
engine, so the triggerer's shared event loop stays responsive. Progress lines (counts, tokens,
cost; never prompts or outputs) go to the trigger log, shown in the task's log in the UI.

Delivery is at-least-once: if the triggerer restarts, ``run()`` starts again and the engine skips
every item whose result is already on storage.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from flex_provider.engine.background import cancel_responses
from flex_provider.engine.runner import FlexEngine
from flex_provider.hooks.flex import FlexHook
from flex_provider.utils.job import FlexJob, execute_job


class FlexTrigger(BaseTrigger):
    def __init__(self, job: dict[str, Any]) -> None:
        super().__init__()
        self.job = job
        self._engine: FlexEngine | None = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("flex_provider.triggers.flex.FlexTrigger", {"job": self.job})

    def _set_engine(self, engine: FlexEngine | None) -> None:
        self._engine = engine

    async def _client(self) -> tuple[Any, tuple[str, ...]]:
        job = FlexJob.from_dict(self.job)
        hook = FlexHook(conn_id=job.conn_id)
        settings = await hook.aget_settings()
        max_connections = int(job.options.get("max_concurrency", 32)) + 16
        client = hook.build_client(settings, max_connections=max_connections, timeout=job.request.get("timeout", 900))
        return client, (settings.api_key,)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        job = FlexJob.from_dict(self.job)
        event = await execute_job(job, self._client, self.log, on_engine=self._set_engine)
        yield TriggerEvent(event)

    async def on_kill(self) -> None:
        """The user marked or cleared the task: cancel background responses still running on
        OpenAI so nobody pays for answers no one will read. (``cleanup()`` deliberately does not:
        it also runs when the trigger merely moves to another triggerer.)"""
        job = FlexJob.from_dict(self.job)
        if job.options.get("submit_mode") != "background":
            return
        if self._engine is not None:
            ids = self._engine.outstanding_response_ids()
        else:
            state = await asyncio.to_thread(job.store().load)
            ids = [entry["response_id"] for entry in state.pending.values()]
        if not ids:
            return
        client, _ = await self._client()
        async with client:
            cancelled = await cancel_responses(client, ids)
        self.log.info("flex on_kill: cancelled %d of %d outstanding background response(s)", cancelled, len(ids))
