"""An httpx2 transport that sends over aiohttp: the openai SDK on aiohttp, with every error an httpx2 error.

Why not the SDK's own ``DefaultAioHttpClient`` (its vendored ``httpx_aiohttp`` transport)? It is as
fast, but it maps exceptions by walking a table where the *broad* ``aiohttp.ClientConnectionError``
(mapped to ``ConnectTimeout``) wins over its subclasses: a refused connection, a DNS failure and a
reset all reach the SDK as ``httpx2.ConnectTimeout`` and hence as ``openai.APITimeoutError``, which
the engine treats as a slow server (no run-wide circuit breaker: a wrong port would retry each item
for its whole budget). Exceptions outside its table (``ValueError`` for an unsendable header,
``aiohttp.ClientResponseError`` for an unparseable answer) are re-raised as is, and the SDK wraps only
httpx2 errors: they would escape the SDK raw. Here every failure of a request becomes the httpx2 error
that httpcore2 would raise for the same fault, raised *from* the aiohttp exception (the cause chain
keeps "Connect call failed", "Name or service not known" for the error message).

The ``aiohttp.ClientSession`` is created at the first request, inside the event loop that uses it
(the client itself may be built in a worker thread), and closed by ``aclose`` (``async with client``
or ``await client.close()``): aiohttp's connector marks itself closed and closes its sockets before
its first ``await``, so a cancellation during the close cannot leave an "Unclosed client session".
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from typing import Any, NoReturn

import aiohttp
import httpx2

__all__ = ["AiohttpClient", "AiohttpTransport", "aiohttp_error"]

_CHUNK = 64 * 1024


def aiohttp_error(exc: BaseException) -> httpx2.TransportError | None:
    """The httpx2 error (what httpcore2 raises for the same fault) for an exception raised while a
    request was sent or its answer read; None for anything that is not a transport fault (a bug)."""
    if isinstance(exc, (aiohttp.ClientProxyConnectionError, aiohttp.ClientHttpProxyError)):
        return httpx2.ProxyError(str(exc))
    if isinstance(exc, aiohttp.ConnectionTimeoutError):  # the connect (or pool) timeout
        return httpx2.ConnectTimeout(str(exc) or "connect timeout")
    if isinstance(exc, (aiohttp.ServerTimeoutError, TimeoutError)):  # the read timeout
        return httpx2.ReadTimeout(str(exc) or "read timeout")
    if isinstance(exc, aiohttp.ClientConnectorError):  # refused, DNS, TLS handshake/certificate
        return httpx2.ConnectError(str(exc))
    if isinstance(exc, (aiohttp.NonHttpUrlClientError, aiohttp.InvalidURL)):
        return httpx2.UnsupportedProtocol(f"Request URL cannot be sent: {exc}")
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientResponseError)):
        return httpx2.RemoteProtocolError(str(exc) or type(exc).__name__)  # dropped or unparseable answer
    if isinstance(exc, (aiohttp.ClientConnectionError, OSError)):  # reset, broken pipe
        return httpx2.ReadError(str(exc) or type(exc).__name__)
    if isinstance(exc, aiohttp.ClientError):
        return httpx2.TransportError(str(exc) or type(exc).__name__)
    if isinstance(exc, ValueError):  # aiohttp refused to write the request (a header with a line break)
        return httpx2.LocalProtocolError(str(exc))
    return None


def _reraise(exc: Exception) -> NoReturn:
    """Raise ``exc`` as its httpx2 error (from it), or as is when it is no transport fault."""
    mapped = aiohttp_error(exc)
    if mapped is None:
        raise exc
    raise mapped from exc


class _Body(httpx2.AsyncByteStream):
    """The answer's body, read from aiohttp as it arrives; closing it gives the connection back."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_chunked(_CHUNK):
                yield chunk
        except Exception as exc:
            _reraise(exc)

    async def aclose(self) -> None:
        self._response.release()


class AiohttpTransport(httpx2.AsyncBaseTransport):
    """One ``aiohttp.ClientSession`` (a ``TCPConnector`` of ``limits.max_connections`` sockets)."""

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext,
        limits: httpx2.Limits,
        proxy: httpx2.Proxy | None = None,
    ) -> None:
        self._ssl = ssl_context
        self._limits = limits
        self._proxy = str(proxy.url) if proxy is not None else None
        self._proxy_auth = aiohttp.BasicAuth(*proxy.auth) if proxy is not None and proxy.auth else None
        self._proxy_headers = dict(proxy.headers) if proxy is not None else None
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self._timeouts: dict[tuple[Any, ...], aiohttp.ClientTimeout] = {}

    @property
    def session(self) -> aiohttp.ClientSession | None:
        """The session, once a request made one (for tests and diagnostics)."""
        return self._session

    def _new_session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._limits.max_connections or 0,  # 0: no limit, as max_connections=None in httpx2
            keepalive_timeout=self._limits.keepalive_expiry,
            ssl=self._ssl,
        )
        # No session-wide timeout: aiohttp's default (300 s in total) would cut flex answers short;
        # each request carries the client's own timeouts (see ``_timeout``).
        return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(), auto_decompress=False)

    def _timeout(self, extensions: dict[str, Any]) -> aiohttp.ClientTimeout:
        """httpx2's per-phase timeouts in aiohttp's terms: connect -> sock_connect, read -> sock_read
        (between two reads, as in httpx2), pool -> connect (waiting for a free connection + connecting)."""
        timeout = extensions.get("timeout", {})
        key = (timeout.get("connect"), timeout.get("read"), timeout.get("pool"))
        cached = self._timeouts.get(key)
        if cached is None:
            cached = self._timeouts[key] = aiohttp.ClientTimeout(sock_connect=key[0], sock_read=key[1], connect=key[2])
        return cached

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        scheme = request.url.scheme
        if scheme not in ("http", "https"):  # httpcore2's check and words (aiohttp's: the bare URL)
            raise httpx2.UnsupportedProtocol(
                f"Request URL has an unsupported protocol '{scheme}://'."
                if scheme
                else "Request URL is missing an 'http://' or 'https://' protocol."
            )
        if self._session is None:
            if self._closed:
                raise RuntimeError("the HTTP client is closed")  # as httpx2 does for a closed client
            self._session = self._new_session()
        try:
            data: Any = request.content or None
        except httpx2.RequestNotRead:
            data = request.stream  # a streamed upload (the engine sends none)
            request.headers.pop("transfer-encoding", None)  # aiohttp writes its own
        try:  # (a try block, not a context manager: this runs for every request)
            response = await self._session.request(
                request.method,
                str(request.url),
                headers=request.headers,
                data=data,
                allow_redirects=False,  # httpx2 follows them
                compress=None,
                timeout=self._timeout(request.extensions),
                server_hostname=request.extensions.get("sni_hostname"),
                proxy=self._proxy,
                proxy_auth=self._proxy_auth,
                proxy_headers=self._proxy_headers,
            )
        except Exception as exc:
            _reraise(exc)
        extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode("latin-1", "replace")
        return httpx2.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_Body(response),
            request=request,
            extensions=extensions,
        )

    async def aclose(self) -> None:
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()


class AiohttpClient(httpx2.AsyncClient):
    """An ``httpx2.AsyncClient`` whose transports (direct, and per proxy from the environment) are
    :class:`AiohttpTransport`: the openai SDK keeps its httpx2 API, the sockets are aiohttp's."""

    def _init_transport(
        self,
        verify: ssl.SSLContext | str | bool = True,
        cert: Any = None,
        trust_env: bool = True,
        http1: bool = True,
        http2: bool = False,
        limits: httpx2.Limits = httpx2.Limits(),  # noqa: B008  (httpx2's own signature)
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> httpx2.AsyncBaseTransport:
        if transport is not None:
            return transport
        context = httpx2.create_ssl_context(verify=verify, cert=cert, trust_env=trust_env)
        return AiohttpTransport(ssl_context=context, limits=limits)

    def _init_proxy_transport(
        self,
        proxy: httpx2.Proxy,
        verify: ssl.SSLContext | str | bool = True,
        cert: Any = None,
        trust_env: bool = True,
        http1: bool = True,
        http2: bool = False,
        limits: httpx2.Limits = httpx2.Limits(),  # noqa: B008
    ) -> httpx2.AsyncBaseTransport:
        context = httpx2.create_ssl_context(verify=verify, cert=cert, trust_env=trust_env)
        return AiohttpTransport(ssl_context=context, limits=limits, proxy=proxy)
