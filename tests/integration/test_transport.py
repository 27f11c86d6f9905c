"""Both HTTP transports (aiohttp, the default, and httpx2) fail the same way through the real SDK.

The engine decides on the SDK's exception (``APITimeoutError``: a slow server; ``APIConnectionError``:
feeds the run-wide circuit breaker) and on its cause chain (the error message). The SDK's own aiohttp
transport turned a refused connection into ``APITimeoutError`` and let some aiohttp errors escape
raw; these tests pin each fault of a small in-process TCP server (and a closed port, an unknown host)
to what httpx2 gives, on both transports.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx2
import openai
import pytest

from flex_provider.engine import FlexEngine, FlexRunAborted, RequestSpec, ResultStore, RunOptions
from flex_provider.engine.errors import Verdict, classify, root_cause
from flex_provider.engine.health import RunHealth
from flex_provider.hooks.aiohttp_transport import AiohttpTransport
from flex_provider.hooks.flex import TRANSPORTS, ClientSettings, FlexHook
from tests.integration.conftest import API_KEY, FAST_RETRY
from tests.integration.helpers import make_items

pytestmark = pytest.mark.integration


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once the socket is closed


async def _read_request(reader: asyncio.StreamReader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")),
        0,
    )
    await reader.readexactly(length)


@pytest.fixture
async def faulty() -> AsyncIterator[tuple[str, dict[str, str]]]:
    """A TCP server answering every request with the fault in ``mode["fault"]``."""
    mode = {"fault": "close"}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            fault = mode["fault"]
            if fault != "close":
                await _read_request(reader)
            if fault == "reset":  # RST instead of FIN
                writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            elif fault == "garbage":
                writer.write(b"THIS IS NOT HTTP\r\n\r\n")
            elif fault == "truncated":
                writer.write(b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n{"id":')
            elif fault == "silent":
                await asyncio.sleep(30)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}/v1", mode
        server.close()


async def fail(transport: str, base_url: str, *, timeout: float = 5.0, key: str = API_KEY) -> BaseException:
    """The exception one ``responses.create`` raises through the SDK on ``transport``."""
    settings = ClientSettings(key, base_url, transport=transport)
    async with FlexHook.build_client(settings, max_connections=4, timeout=timeout) as client:
        with pytest.raises(openai.OpenAIError) as caught:
            await client.responses.create(model="gpt-5-mini", input="hi", service_tier="flex")
    return caught.value


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("fault", ["close", "reset", "garbage", "truncated"])
async def test_a_dropped_or_unreadable_answer_is_a_transient_connection_error(faulty, transport, fault) -> None:
    base_url, mode = faulty
    mode["fault"] = fault
    exc = await fail(transport, base_url)
    assert type(exc) is openai.APIConnectionError, repr(exc.__cause__)  # not a timeout, not a raw aiohttp error
    assert classify(exc) is Verdict.TRANSIENT


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_silent_server_is_a_timeout(faulty, transport) -> None:
    base_url, mode = faulty
    mode["fault"] = "silent"
    started = time.monotonic()
    exc = await fail(transport, base_url, timeout=0.3)
    assert time.monotonic() - started < 3
    assert type(exc) is openai.APITimeoutError and classify(exc) is Verdict.TRANSIENT


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    ("where", "cause"),
    [("closed port", "Connect call failed"), ("unknown host", "gaierror")],
)
async def test_an_unreachable_server_is_a_connection_error_that_trips_the_breaker(transport, where, cause) -> None:
    base_url = f"http://127.0.0.1:{closed_port()}/v1" if where == "closed port" else "http://no-such-host.invalid/v1"
    exc = await fail(transport, base_url)
    # APIConnectionError, not APITimeoutError: only connection errors feed the run-wide breaker
    assert type(exc) is openai.APIConnectionError and classify(exc) is Verdict.TRANSIENT
    assert cause in root_cause(exc)
    health = RunHealth(f"conn_id='openai_default', base_url={base_url}", secrets=(API_KEY,), connect_grace_s=0)
    health.on_connection_error(exc)
    with pytest.raises(FlexRunAborted, match="cannot reach the server") as caught:
        health.on_connection_error(exc)
    assert base_url in str(caught.value) and cause in str(caught.value) and API_KEY not in str(caught.value)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    ("base_url", "expected"),
    [
        ("ftp://127.0.0.1:9/v1", "UnsupportedProtocol: Request URL has an unsupported protocol 'ftp://'."),
        ("127.0.0.1:9/v1", "UnsupportedProtocol: Request URL is missing an 'http://' or 'https://' protocol."),
    ],
)
async def test_an_unsendable_url_stops_at_once_in_httpx2_words(transport, base_url, expected) -> None:
    exc = await fail(transport, base_url)
    with pytest.raises(FlexRunAborted) as caught:
        RunHealth(base_url).on_connection_error(exc)
    assert f"cannot be sent: {expected}" in str(caught.value)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_key_with_a_line_break_is_a_local_protocol_error_never_shown(emu, transport) -> None:
    key = API_KEY + "\nx"
    exc = await fail(transport, emu.base_url, key=key)
    assert type(exc) is openai.APIConnectionError
    with pytest.raises(FlexRunAborted) as caught:
        RunHealth("emulator", secrets=(key,)).on_connection_error(exc)
    assert "cannot be sent: LocalProtocolError" in str(caught.value)
    assert API_KEY not in str(caught.value)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_the_engine_stops_on_a_closed_port_on_either_transport(emu, tmp_path: Path, transport) -> None:
    base_url = f"http://127.0.0.1:{closed_port()}/v1"
    client = FlexHook.build_client(ClientSettings(API_KEY, base_url, transport=transport), max_connections=16)
    engine = FlexEngine(
        client,
        RequestSpec(model="gpt-5-mini"),
        RunOptions(max_concurrency=8, retry=FAST_RETRY),
        ResultStore(tmp_path),
        secrets=(API_KEY,),
        endpoint=f"conn_id='openai_default', base_url={base_url}",
        connect_grace_s=1.0,
        lease_settle_s=0.05,
    )
    started = time.monotonic()
    async with client:
        with pytest.raises(FlexRunAborted, match="cannot reach the server") as caught:
            await engine.run(make_items(500), total=500)
    assert time.monotonic() - started < 8  # the grace period, not 500 items' retry budgets
    assert base_url in str(caught.value) and API_KEY not in str(caught.value)


async def test_the_aiohttp_pool_is_sized_to_max_connections_and_keeps_the_timeouts(emu) -> None:
    client = FlexHook.build_client(ClientSettings(API_KEY, emu.base_url), max_connections=37, timeout=123.0)
    assert client.max_retries == 0 and (client.timeout.connect, client.timeout.read) == (10.0, 123.0)
    async with client:
        await client.responses.create(model="gpt-5-mini", input="hi", service_tier="flex")
        transport = client._client._transport
        assert isinstance(transport, AiohttpTransport) and transport.session is not None
        assert transport.session.connector is not None and transport.session.connector.limit == 37
        assert transport.session.timeout.total is None  # aiohttp's default 300 s would cut flex answers
        (timeout,) = transport._timeouts.values()
        assert (timeout.sock_connect, timeout.sock_read, timeout.connect, timeout.total) == (10.0, 123.0, 123.0, None)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_an_http_proxy_from_the_environment_is_used(monkeypatch, transport) -> None:
    request_lines: list[bytes] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request_lines.append((await reader.readuntil(b"\r\n\r\n")).split(b"\r\n")[0])
        body = b'{"object": "list", "data": []}'
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    async with server:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        settings = ClientSettings(API_KEY, "http://api.example.invalid/v1", transport=transport)
        async with FlexHook.build_client(settings, max_connections=2) as client:
            proxied = client._client._transport_for_url(httpx2.URL("http://api.example.invalid/v1/models"))
            assert isinstance(proxied, AiohttpTransport) == (transport == "aiohttp")  # not httpcore2 behind it
            assert (await client.models.list()).data == []
    assert request_lines == [b"GET http://api.example.invalid/v1/models HTTP/1.1"]
