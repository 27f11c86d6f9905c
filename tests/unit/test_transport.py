"""The HTTP transport: the connection extra that picks it, the clients built for each, the aiohttp error
mapping and how the run-wide breaker names an unsendable request. No network (see
tests/integration/test_transport*.py for the same faults over real sockets)."""

from __future__ import annotations

import socket
from types import SimpleNamespace
from typing import Any

import aiohttp
import httpx2
import openai
import pytest
from aiohttp.client_reqrep import ConnectionKey

from flex_provider.engine.errors import FlexInputError, FlexRunAborted
from flex_provider.engine.health import RunHealth
from flex_provider.hooks.aiohttp_transport import AiohttpClient, AiohttpTransport, aiohttp_error
from flex_provider.hooks.flex import DEFAULT_TRANSPORT, ClientSettings, FlexHook

from .helpers import URL


def settings_from(extra: dict[str, Any]) -> ClientSettings:
    conn = SimpleNamespace(
        extra_dejson=extra, password="sk-unit-key-0123456789", host="http://127.0.0.1:9/v1", port=None
    )
    return FlexHook("flex_conn")._settings_from(conn)


# -- the connection extra ---------------------------------------------------------------------
def test_aiohttp_is_the_default_transport() -> None:
    assert DEFAULT_TRANSPORT == "aiohttp"
    assert settings_from({}).transport == "aiohttp"
    assert settings_from({"transport": None}).transport == "aiohttp"
    assert settings_from({"transport": "  "}).transport == "aiohttp"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"transport": "httpx"}, "httpx"),
        ({"transport": " HTTPX2 "}, "httpx"),
        ({"transport": "aiohttp"}, "aiohttp"),
        ({"extra__openai_flex__transport": "httpx"}, "httpx"),  # as the connection form saves it
    ],
)
def test_the_transport_extra(extra, expected) -> None:
    assert settings_from(extra).transport == expected


@pytest.mark.parametrize("value", ["requests", "aio-http", 3, ["httpx"]])
def test_an_unknown_transport_is_refused_naming_the_field(value) -> None:
    with pytest.raises(FlexInputError) as caught:
        settings_from({"transport": value})
    message = str(caught.value)
    assert "conn_id='flex_conn'" in message and "extra 'transport'" in message and repr(value) in message
    assert "'aiohttp', 'httpx'" in message and "sk-unit" not in message


def test_settings_repr_names_the_transport_never_the_key() -> None:
    text = repr(settings_from({"transport": "httpx"}))
    assert "transport='httpx'" in text and "sk-unit" not in text


# -- the clients ------------------------------------------------------------------------------
def test_the_default_client_sends_over_aiohttp_sized_to_max_connections() -> None:
    client = FlexHook.build_client(ClientSettings("sk-x", "http://127.0.0.1:9/v1"), max_connections=57, timeout=33.0)
    assert client.max_retries == 0
    assert (client.timeout.connect, client.timeout.read, client.timeout.pool) == (10.0, 33.0, 33.0)
    assert isinstance(client._client, AiohttpClient)
    transport = client._client._transport
    assert isinstance(transport, AiohttpTransport) and transport.session is None  # made at the first request
    assert transport._limits.max_connections == 57
    timeout = transport._timeout({"timeout": {"connect": 10.0, "read": 33.0, "write": 33.0, "pool": 33.0}})
    assert (timeout.sock_connect, timeout.sock_read, timeout.connect, timeout.total) == (10.0, 33.0, 33.0, None)


def test_the_httpx_client_is_the_sdks_httpx2_pool() -> None:
    client = FlexHook.build_client(ClientSettings("sk-x", None, transport="httpx"), max_connections=57)
    assert client.max_retries == 0 and not isinstance(client._client, AiohttpClient)
    assert isinstance(client._client._transport, httpx2.AsyncHTTPTransport)
    assert client._client._transport._pool._max_connections == 57


def test_a_settings_object_with_an_unknown_transport_is_refused() -> None:
    with pytest.raises(ValueError, match="transport must be one of"):
        FlexHook.build_client(ClientSettings("sk-x", None, transport="curl"))


# -- aiohttp errors in httpx2 terms --------------------------------------------------------------
def _key() -> ConnectionKey:
    return ConnectionKey("127.0.0.1", 9, False, True, None, None, None)


def _request_info() -> aiohttp.RequestInfo:
    from multidict import CIMultiDict, CIMultiDictProxy
    from yarl import URL as YURL

    return aiohttp.RequestInfo(YURL(URL), "POST", CIMultiDictProxy(CIMultiDict()), YURL(URL))


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (
            lambda: aiohttp.ClientConnectorError(_key(), ConnectionRefusedError(111, "Connect call failed")),
            httpx2.ConnectError,
        ),
        (
            lambda: aiohttp.ClientConnectorDNSError(_key(), socket.gaierror(-2, "Name or service not known")),
            httpx2.ConnectError,
        ),
        (lambda: aiohttp.ClientProxyConnectionError(_key(), OSError(111, "refused")), httpx2.ProxyError),
        (lambda: aiohttp.ConnectionTimeoutError("Connection timeout to host"), httpx2.ConnectTimeout),
        (lambda: aiohttp.SocketTimeoutError("Timeout on reading data from socket"), httpx2.ReadTimeout),
        (lambda: aiohttp.ServerTimeoutError("timeout"), httpx2.ReadTimeout),
        (lambda: TimeoutError(), httpx2.ReadTimeout),
        (lambda: aiohttp.ServerDisconnectedError(), httpx2.RemoteProtocolError),
        (lambda: aiohttp.ClientPayloadError("Response payload is not completed"), httpx2.RemoteProtocolError),
        (
            lambda: aiohttp.ClientResponseError(_request_info(), (), status=400, message="Bad status line"),
            httpx2.RemoteProtocolError,
        ),
        (lambda: aiohttp.ClientConnectionResetError("Connection lost"), httpx2.ReadError),
        (lambda: aiohttp.ClientOSError(104, "Connection reset by peer"), httpx2.ReadError),
        (lambda: ConnectionResetError(104, "Connection reset by peer"), httpx2.ReadError),
        (lambda: aiohttp.InvalidUrlClientError("/127.0.0.1:9/v1"), httpx2.UnsupportedProtocol),
        (lambda: aiohttp.NonHttpUrlClientError("ftp://127.0.0.1:9/v1"), httpx2.UnsupportedProtocol),
        (
            lambda: ValueError("Newline or carriage return character detected in HTTP status/header"),
            httpx2.LocalProtocolError,
        ),
        (lambda: aiohttp.ClientError("something else"), httpx2.TransportError),
    ],
)
def test_every_aiohttp_failure_becomes_the_httpx2_error_the_sdk_wraps(exc, expected) -> None:
    mapped = aiohttp_error(exc())
    assert type(mapped) is expected
    # the SDK turns httpx2.TimeoutException into APITimeoutError, other httpx2.RequestErrors into
    # APIConnectionError; anything else would escape it raw
    assert isinstance(mapped, httpx2.RequestError)
    assert isinstance(mapped, httpx2.TimeoutException) == (expected in (httpx2.ConnectTimeout, httpx2.ReadTimeout))


def test_a_refused_connection_is_not_a_timeout() -> None:
    """The SDK's vendored transport maps it to ConnectTimeout (its table's broad ClientConnectionError
    entry wins), which the engine takes for a slow server and never feeds to the breaker."""
    mapped = aiohttp_error(aiohttp.ClientConnectorError(_key(), ConnectionRefusedError(111, "Connect call failed")))
    assert not isinstance(mapped, httpx2.TimeoutException)


@pytest.mark.parametrize("exc", [KeyError("x"), RuntimeError("a bug"), AttributeError("a bug")])
def test_a_bug_is_not_disguised_as_a_transport_error(exc) -> None:
    assert aiohttp_error(exc) is None


# -- the breaker names the unsendable cause ------------------------------------------------------
def test_an_unsendable_request_is_named_by_its_httpx2_error_not_the_aiohttp_one_below() -> None:
    try:
        try:
            try:
                raise aiohttp.NonHttpUrlClientError("ftp://127.0.0.1:9/v1/responses")
            except aiohttp.ClientError as inner:
                raise httpx2.UnsupportedProtocol("Request URL has an unsupported protocol 'ftp://'.") from inner
        except httpx2.UnsupportedProtocol as mid:
            raise openai.APIConnectionError(request=httpx2.Request("POST", URL)) from mid
    except openai.APIConnectionError as exc:
        error = exc
    with pytest.raises(FlexRunAborted) as caught:
        RunHealth("base_url=ftp://127.0.0.1:9/v1").on_connection_error(error)
    assert "cannot be sent: UnsupportedProtocol: Request URL has an unsupported protocol 'ftp://'." in str(caught.value)
