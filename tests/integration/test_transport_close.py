"""The aiohttp transport leaves nothing open: closing the client (``async with``) closes its session
and sockets, after a finished run, after a cancelled one (requests in flight) and when the client was
built in a worker thread (as ``job_client`` does). aiohttp reports a session or connector that is
garbage-collected unclosed with a ResourceWarning and an ERROR log record ("Unclosed client
session", "Unclosed connector"); every test collects garbage and asserts neither came, and the first
test shows that this check catches a client that is not closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flex_provider.engine import FlexEngine, RequestSpec, ResultStore, RunOptions
from flex_provider.hooks.aiohttp_transport import AiohttpTransport
from flex_provider.hooks.flex import ClientSettings, FlexHook
from tests.integration.conftest import API_KEY, FAST_RETRY
from tests.integration.helpers import make_items

pytestmark = pytest.mark.integration


@contextlib.contextmanager
def leaks(caplog: pytest.LogCaptureFixture) -> Iterator[list[str]]:
    """What aiohttp reported as left open, by warning or log record, up to a full collection at the end."""
    found: list[str] = []
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.ERROR, logger="asyncio"):
        warnings.simplefilter("always")
        yield found
        gc.collect()
    found += [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    found += [r.getMessage() for r in caplog.records if "Unclosed" in r.getMessage()]


def aiohttp_parts(client) -> tuple[object, object]:
    transport = client._client._transport
    assert isinstance(transport, AiohttpTransport)
    return transport.session, transport.session.connector


async def test_the_check_catches_a_client_that_is_not_closed(emu, caplog) -> None:
    with leaks(caplog) as found:
        client = FlexHook.build_client(ClientSettings(API_KEY, emu.base_url), max_connections=4)
        await client.responses.create(model="gpt-5-mini", input="hi", service_tier="flex")
        del client
    # "Unclosed client session" or "Unclosed connector": the order the cycle is collected in decides
    assert any(f.startswith("Unclosed") for f in found), found


async def test_async_with_closes_the_session_and_its_sockets(emu, caplog) -> None:
    with leaks(caplog) as found:
        async with FlexHook.build_client(ClientSettings(API_KEY, emu.base_url), max_connections=8) as client:
            await asyncio.gather(
                *(client.responses.create(model="gpt-5-mini", input=f"hi {i}", service_tier="flex") for i in range(8))
            )
            session, connector = aiohttp_parts(client)
        assert session.closed and connector.closed
        del client, session, connector
    assert found == []


async def test_a_client_built_in_a_thread_works_and_closes(emu, caplog) -> None:
    with leaks(caplog) as found:
        settings = ClientSettings(API_KEY, emu.base_url)
        client = await asyncio.to_thread(FlexHook.ready_client, settings, max_connections=4)  # as job_client
        async with client:
            await client.responses.create(model="gpt-5-mini", input="hi", service_tier="flex")
            session, _ = aiohttp_parts(client)
        assert session.closed
        del client, session
    assert found == []


@pytest.mark.parametrize("cancels", [1, 3])
async def test_a_cancelled_run_closes_everything_with_requests_in_flight(emu, tmp_path: Path, caplog, cancels) -> None:
    emu.update(latency_s=5.0, latency_jitter=0.0)  # every request stays in flight until cancelled
    with leaks(caplog) as found:
        client = FlexHook.build_client(ClientSettings(API_KEY, emu.base_url), max_connections=40)
        engine = FlexEngine(
            client,
            RequestSpec(model="gpt-5-mini"),
            RunOptions(max_concurrency=8, retry=FAST_RETRY, flush_interval_s=0.2),
            ResultStore(tmp_path),
            secrets=(API_KEY,),
            lease_settle_s=0.05,
        )

        async def run(client: Any, engine: FlexEngine) -> None:
            async with client:  # as run_job holds it
                await engine.run(make_items(100), total=100)

        task = asyncio.create_task(run(client, engine))
        for _ in range(200):
            await asyncio.sleep(0.05)
            if engine.counters.requests >= 4:
                break
        await asyncio.sleep(0.2)  # on the wire
        session, connector = aiohttp_parts(client)
        assert len(connector._acquired) >= 4  # sockets waiting for answers (the emulator holds them 5 s)
        for _ in range(cancels):  # a second and third cancel must not cut the close short
            task.cancel()
            await asyncio.sleep(0)
        with pytest.raises(asyncio.CancelledError):
            await task
        assert session.closed and connector.closed
        del client, engine, task, session, connector
    assert found == []
