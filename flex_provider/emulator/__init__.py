"""OpenAI-compatible Flex emulator for offline DAG development and integration tests.

``create_app(config)`` builds the FastAPI app; ``serve_in_thread(config)`` runs it on a free port
for tests; ``python -m flex_provider.emulator --port N`` runs it as a server. See ``config.py``
for the knobs (per-tier latency, flex capacity, injected 429/5xx/hangs, quota, request and token
limits per window, prices, ...). ``GET /emulator/stats`` counts what happened and what it billed.
"""

from __future__ import annotations

from .app import create_app
from .config import EmulatorConfig
from .server import EmulatorServer, serve_in_thread

__all__ = ["EmulatorConfig", "EmulatorServer", "create_app", "serve_in_thread"]
