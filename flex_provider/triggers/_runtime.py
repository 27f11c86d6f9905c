"""What FlexTrigger does, kept apart so the trigger module itself imports fast (see its docstring)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from flex_provider.engine.background import cancel_responses
from flex_provider.hooks.flex import FlexHook
from flex_provider.utils.job import FlexJob, execute_job, job_client


def client_factory(job: FlexJob) -> Callable[[], Any]:
    async def build() -> tuple[Any, tuple[str, ...]]:
        settings = await FlexHook(conn_id=job.conn_id).aget_settings()
        # Building the client is blocking work: keep it off the triggerer's event loop.
        client = await asyncio.to_thread(job_client, job, settings)
        return client, (settings.api_key,)

    return build


async def run_job(job_dict: dict[str, Any], logger: logging.Logger | logging.LoggerAdapter) -> dict[str, Any]:
    job = FlexJob.from_dict(job_dict)
    return await execute_job(job, client_factory(job), logger)


async def cancel_outstanding(job_dict: dict[str, Any]) -> tuple[int, int]:
    """Cancel the background responses of a job that have no result yet; returns (cancelled, outstanding)."""
    job = FlexJob.from_dict(job_dict)
    if job.options.get("submit_mode") != "background":
        return 0, 0
    state = await asyncio.to_thread(lambda: job.store().load())
    ids = [entry["response_id"] for entry in state.pending.values()]
    if not ids:
        return 0, 0
    client, _ = await client_factory(job)()
    async with client:
        return await cancel_responses(client, ids), len(ids)
