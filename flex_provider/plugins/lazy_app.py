"""An ASGI app that builds the real one on its first request.

Airflow imports every ``airflow.plugins`` entry point in every process: the scheduler, the
triggerer and each task run (the task runner loads plugins for their macros). Only the api-server
serves the plugin's app, and building it imports FastAPI and Airflow's API security module (about
a second of CPU). :class:`LazyApp` keeps that out of every other process: the plugin class holds
this small object, and the api-server, which mounts it like any ASGI app, builds it on the first
request to ``/flex``, in a thread: the api-server's event loop never waits on the imports.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class LazyApp:
    """``LazyApp("package.module:factory")``: calls ``factory()`` once, then hands every call to it."""

    def __init__(self, factory: str) -> None:
        module, _, name = factory.partition(":")
        if not module or not name:
            raise ValueError(f"expected 'module:factory', got {factory!r}")
        self.factory = factory
        self._app: ASGIApp | None = None
        self._lock = threading.Lock()

    @property
    def app(self) -> ASGIApp:
        """The real app (built on first use; thread-safe)."""
        if self._app is None:
            with self._lock:
                if self._app is None:
                    module, _, name = self.factory.partition(":")
                    self._app = getattr(importlib.import_module(module), name)()
        return self._app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self._app
        if app is None:
            import anyio.to_thread

            app = await anyio.to_thread.run_sync(lambda: self.app)
        await app(scope, receive, send)

    def __repr__(self) -> str:
        return f"LazyApp({self.factory!r})"
