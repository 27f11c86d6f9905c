"""FlexHook: an Airflow connection turned into an ``AsyncOpenAI`` client that never retries by itself.

Connection fields: password = API key, host = base URL (empty for api.openai.com), extras
``organization``, ``project`` and ``transport`` (``"aiohttp"``, the default, or ``"httpx"``: see
:data:`TRANSPORTS`). When the connection does not exist, ``OPENAI_API_KEY`` and
``OPENAI_BASE_URL`` (and ``OPENAI_ORG_ID``/``OPENAI_PROJECT_ID``) from the environment are used, as
the openai SDK itself would.

The HTTP transport is aiohttp by default (:mod:`flex_provider.hooks.aiohttp_transport`): through the same
SDK it costs about half the CPU per request of the SDK's default httpx2 transport (httpcore2's pool
scans every idle connection on each request start and end), so a CPU-bound triggerer sends up to
~1.8x as many requests per second (benchmarks/throughput.py, docs/notes/transport.md).
``transport: "httpx"`` in the connection's extras goes back to httpx2.

The SDK's own retries are switched off (``max_retries=0``): with flex timeouts of 900 s its default
two retries could hold one call for 45 minutes, and tenacity in the engine owns the retry loop.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx2
from airflow.providers.common.compat.connection import get_async_connection
from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowException, AirflowNotFoundException
from openai import AsyncOpenAI, DefaultAsyncHttpx2Client

MISSING_KEY_HELP = (
    "No OpenAI API key found for conn_id={conn_id!r}. Set the key as the password of that Airflow "
    "connection, e.g. `airflow connections add {conn_id} --conn-type openai_flex --conn-password sk-...` "
    "(add --conn-host http://host:port/v1 for an OpenAI-compatible server), or export the env var "
    'AIRFLOW_CONN_{env_id}=\'{{"conn_type": "openai_flex", "password": "sk-..."}}\', or set OPENAI_API_KEY '
    "in the environment of the workers and triggerers."
)


def _extra(extras: dict[str, Any], name: str) -> str | None:
    """Extras as typed in JSON, or as saved by the connection form (``extra__openai_flex__<name>``)."""
    return extras.get(name) or extras.get(f"extra__{FlexHook.conn_type}__{name}")


# A masked echo of a key, as servers show it in 401 messages: visible ends around a run of mask
# characters ("sk-****abcd", "myk...cdef", "mykey-***").
_MASKED = re.compile(r"(?P<head>[A-Za-z0-9_\-]*)(?:\*{2,}|\.{3}|\u2026|\u2022{2,})(?P<tail>[A-Za-z0-9_\-]*)")
_MIN_FRAGMENT = 8  # shorter unmasked pieces of a key are not treated as echoes of it


def redact_key(text: str, key: str | None) -> str:
    """Remove ``key`` from ``text`` whatever its shape: in full, as a masked echo whose visible ends
    are the key's (first 3 + last 4 characters, as OpenAI shows them), or as an unmasked piece of
    8+ characters. Keys shaped like OpenAI's (sk-, sess-, rk-) are redacted even when unknown."""
    from flex_provider.engine.errors import redact  # the engine package is not needed to load the hook

    if key:
        text = redact(text, secrets=(key,))

        def masked(match: re.Match[str]) -> str:
            head, tail = match["head"], match["tail"]
            if (head and key.startswith(head)) or (tail and key.endswith(tail)):
                return "***"
            return str(match.group(0))

        text = _MASKED.sub(masked, text)
        for length in range(len(key) - 1, _MIN_FRAGMENT - 1, -1):
            for start in range(len(key) - length + 1):
                fragment = key[start : start + length]
                if fragment in text:
                    text = text.replace(fragment, "***")
    return redact(text)


# The HTTP transports a client can send with (connection extra ``transport``); the first is the default.
TRANSPORTS = ("aiohttp", "httpx")
DEFAULT_TRANSPORT = TRANSPORTS[0]
_TRANSPORT_ALIASES = {"httpx2": "httpx"}


@dataclass(frozen=True)
class ClientSettings:
    """What it takes to build a client. ``repr`` hides the key so it cannot leak into a log line."""

    api_key: str
    base_url: str | None = None
    organization: str | None = None
    project: str | None = None
    transport: str = DEFAULT_TRANSPORT

    def __repr__(self) -> str:
        return (
            f"ClientSettings(base_url={self.base_url!r}, organization={self.organization!r}, "
            f"project={self.project!r}, transport={self.transport!r})"
        )


def parse_transport(conn_id: str, value: Any) -> str:
    """The connection extra ``transport`` as one of :data:`TRANSPORTS` (empty: the default)."""
    from flex_provider.engine.errors import FlexInputError  # the engine package is not needed to load the hook

    if value is None or (isinstance(value, str) and not value.strip()):
        return DEFAULT_TRANSPORT
    name = value.strip().lower() if isinstance(value, str) else None
    name = _TRANSPORT_ALIASES.get(name, name) if name else None
    if name not in TRANSPORTS:
        raise FlexInputError(
            f"conn_id={conn_id!r}: extra 'transport' must be one of {', '.join(map(repr, TRANSPORTS))} "
            f"(got {value!r}); leave it out for the default, {DEFAULT_TRANSPORT!r}"
        )
    return name


def _key_problem(api_key: str) -> tuple[int, str] | None:
    """Where and what makes a key unusable in an HTTP header (without ever showing the key)."""
    for position, char in enumerate(api_key):
        if char in "\r\n":
            return position, "a line break"
        if char in " \t":
            return position, "a space or tab"
        if not "\x21" <= char <= "\x7e":
            return position, "a character that is not printable ASCII"
    return None


def check_settings(conn_id: str, settings: ClientSettings) -> None:
    """Refuse, before anything is sent, settings that no request could be made with: every item
    would otherwise fail with an opaque "Connection error." (and, without this, retry for hours)."""
    from flex_provider.engine.errors import FlexInputError  # the engine package is not needed to load the hook

    problem = _key_problem(settings.api_key)
    if problem is not None:
        position, what = problem
        raise FlexInputError(
            f"conn_id={conn_id!r}: the API key holds {what} at character {position + 1} of "
            f"{len(settings.api_key)}, which cannot be sent in an HTTP header (pasted with the key?); "
            "store the key again without it"
        )
    if settings.base_url is not None:
        scheme = urlsplit(settings.base_url).scheme.lower()
        if scheme not in ("http", "https"):
            raise FlexInputError(
                f"conn_id={conn_id!r}: base URL {settings.base_url!r} must start with http:// or https:// "
                f"(got {scheme + '://' if scheme else 'no scheme'})"
            )


class FlexHook(BaseHook):
    conn_name_attr = "conn_id"
    default_conn_name = "openai_default"
    conn_type = "openai_flex"
    hook_name = "OpenAI (Flex)"

    def __init__(self, conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": ["schema", "port", "login"],
            "relabeling": {"password": "API key", "host": "Base URL"},
            "placeholders": {"host": "https://api.openai.com/v1 (leave empty for OpenAI)", "password": "sk-..."},
        }

    # -- settings ----------------------------------------------------------------------------
    def _settings_from(self, conn: Any | None) -> ClientSettings:
        extras = (conn.extra_dejson if conn is not None else {}) or {}
        api_key = (conn.password if conn is not None else None) or os.environ.get("OPENAI_API_KEY")
        if not api_key:
            env_id = self.conn_id.upper()
            raise AirflowException(MISSING_KEY_HELP.format(conn_id=self.conn_id, env_id=env_id))
        host = (conn.host if conn is not None else None) or None
        if host and conn is not None and conn.port and f":{conn.port}" not in host:
            host = f"{host}:{conn.port}"
        if host and "://" not in host:
            host = f"https://{host}"
        settings = ClientSettings(
            api_key=api_key,
            base_url=host or os.environ.get("OPENAI_BASE_URL") or None,
            organization=_extra(extras, "organization") or os.environ.get("OPENAI_ORG_ID") or None,
            project=_extra(extras, "project") or os.environ.get("OPENAI_PROJECT_ID") or None,
            transport=parse_transport(self.conn_id, _extra(extras, "transport")),
        )
        check_settings(self.conn_id, settings)
        return settings

    def get_settings(self) -> ClientSettings:
        try:
            conn = self.get_connection(self.conn_id)
        except AirflowNotFoundException:
            conn = None
        return self._settings_from(conn)

    async def aget_settings(self) -> ClientSettings:
        try:
            conn = await get_async_connection(self.conn_id, self)
        except AirflowNotFoundException:
            conn = None
        return self._settings_from(conn)

    # -- clients -----------------------------------------------------------------------------
    @staticmethod
    def quiet_http_logs() -> None:
        """httpx logs every request at INFO: thousands of lines per task in the trigger log. Raise it
        to WARNING unless someone configured that logger on purpose."""
        for name in ("httpx2", "httpx"):
            logger = logging.getLogger(name)
            if logger.level == logging.NOTSET:
                logger.setLevel(logging.WARNING)

    @staticmethod
    def build_client(settings: ClientSettings, *, max_connections: int = 100, timeout: float = 900.0) -> AsyncOpenAI:
        """An AsyncOpenAI client sized for ``max_connections`` requests in flight, without SDK retries,
        on ``settings.transport``. Close it (``async with client`` or ``await client.close()``)."""
        FlexHook.quiet_http_logs()
        limits = httpx2.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        http_client: httpx2.AsyncClient
        if settings.transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {TRANSPORTS}, not {settings.transport!r}")
        if settings.transport == "httpx":
            http_client = DefaultAsyncHttpx2Client(limits=limits)
        else:
            from flex_provider.hooks.aiohttp_transport import AiohttpClient  # aiohttp loads only when used

            # The SDK's defaults for its own clients (DefaultAioHttpClient): redirects followed.
            http_client = AiohttpClient(limits=limits, follow_redirects=True)
        return AsyncOpenAI(
            api_key=settings.api_key,
            base_url=settings.base_url,
            organization=settings.organization,
            project=settings.project,
            max_retries=0,
            timeout=httpx2.Timeout(timeout, connect=10.0),
            http_client=http_client,
        )

    @staticmethod
    def ready_client(settings: ClientSettings, *, max_connections: int = 100, timeout: float = 900.0) -> AsyncOpenAI:
        """A client whose lazily loaded parts (API resources) are loaded now: call it in a thread
        so that the first request does not stall a shared event loop with imports."""
        client = FlexHook.build_client(settings, max_connections=max_connections, timeout=timeout)
        _ = client.responses, client.chat.completions
        return client

    def get_conn(self) -> AsyncOpenAI:
        return self.build_client(self.get_settings())

    def test_connection(self) -> tuple[bool, str]:
        key = ""
        try:
            import asyncio

            settings = self.get_settings()
            key = settings.api_key

            async def probe() -> int:
                async with self.build_client(settings, max_connections=2, timeout=60.0) as client:
                    page = await client.models.list()
                    return len(page.data)

            count = asyncio.run(probe())
            return True, f"Connection works: {count} model(s) visible"
        except Exception as exc:
            return False, redact_key(str(exc), key)
