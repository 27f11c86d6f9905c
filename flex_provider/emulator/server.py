"""Run the emulator in-process (tests) or as a server (CLI), always with quiet, body-free logging.

``serve_in_thread`` binds the socket itself before starting uvicorn, so port 0 works and the
real port is known at once, and runs uvicorn's event loop in a daemon thread. The helper object it
yields reads and changes the app state by hopping onto that loop (``run_coroutine_threadsafe``):
the state is single-threaded by design, and this keeps it so.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import uvicorn

from .app import create_app
from .config import EmulatorConfig
from .state import EmulatorState

T = TypeVar("T")

GRACEFUL_SHUTDOWN_S = 2


def uvicorn_config(app: Any, host: str, port: int) -> uvicorn.Config:
    """uvicorn settings shared by the CLI and the thread runner: no access log (bodies/paths stay
    private), warnings only, and a bounded graceful shutdown so hung requests can't block exit."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        timeout_keep_alive=30,
        backlog=4096,
        proxy_headers=False,  # one ASGI layer less per request; nothing sits in front of the emulator
        server_header=False,
    )


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind (and listen) a TCP socket; port 0 picks a free port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.set_inheritable(True)
    return sock


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class QuietServer(uvicorn.Server):
    """uvicorn server that, when asked to stop (signal or ``should_exit``), first releases
    in-flight emulator requests so shutdown is quick and traceback-free."""

    def __init__(self, config: uvicorn.Config, state: EmulatorState) -> None:
        super().__init__(config)
        self.emulator_state = state

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.release_inflight()
        super().handle_exit(sig, frame)

    def release_inflight(self) -> None:
        loop = self.emulator_state.loop
        if loop is not None and loop.is_running():
            loop.call_soon_threadsafe(self.emulator_state.close_inflight)


class EmulatorServer:
    """Handle yielded by ``serve_in_thread``."""

    def __init__(self, state: EmulatorState, server: QuietServer, host: str, port: int) -> None:
        self._state = state
        self._server = server
        self.host = host
        self.port = port
        self.url = f"http://{url_host(host)}:{port}"
        self.base_url = f"{self.url}/v1"

    @property
    def config(self) -> EmulatorConfig:
        """The live config (reflects ``update``)."""
        return self._state.config

    @property
    def state(self) -> EmulatorState:
        """Raw state, for white-box tests; prefer the helpers below from other threads."""
        return self._state

    def _call(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        loop = self._state.loop
        if loop is None or not loop.is_running():
            return fn()

        async def run() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), loop).result(timeout)

    def stats(self) -> dict[str, Any]:
        """Same JSON as ``GET /emulator/stats``."""
        return self._call(self._state.snapshot)

    def reset(self) -> None:
        """Clear stats, stored responses, prompt cache, RPM bucket; re-seed the RNG."""
        self._call(self._state.reset)

    def update(self, **knobs: Any) -> EmulatorConfig:
        """Change knobs at runtime, e.g. ``server.update(unavailable_rate=1.0)``; returns the new config."""
        return self._call(lambda: self._state.update_config(knobs))


@contextmanager
def serve_in_thread(
    config: EmulatorConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    startup_timeout: float = 10.0,
) -> Iterator[EmulatorServer]:
    """Start the emulator on a background thread; stop it on exit.

    >>> with serve_in_thread(EmulatorConfig(latency_s=0.01)) as emu:   # doctest: +SKIP
    ...     client = openai.AsyncOpenAI(base_url=emu.base_url, api_key="x", max_retries=0)
    """
    app = create_app(config or EmulatorConfig())
    state: EmulatorState = app.state.emulator
    sock = bind_socket(host, port)
    server = QuietServer(uvicorn_config(app, host, sock.getsockname()[1]), state)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="flex-emulator", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError("flex emulator failed to start")
        time.sleep(0.005)
    try:
        yield EmulatorServer(state, server, host, sock.getsockname()[1])
    finally:
        server.release_inflight()
        server.should_exit = True
        thread.join(timeout=GRACEFUL_SHUTDOWN_S + 5)
        sock.close()
