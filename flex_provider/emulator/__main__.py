"""``python -m flex_provider.emulator --port 8089 [--flex-capacity 4 --unavailable-rate 0.2 ...]``.

Every ``EmulatorConfig`` field is a flag (``latency_s`` -> ``--latency-s``, plus short aliases such
as ``--latency``, ``--retry-after``, ``--trickle-interval``, ``--long-wait``, ``--rpm``, ``--tpm`` and
``--rate-window``; list knobs such as ``--malformed-kinds html,null`` take commas, ``--prices`` takes
JSON); unset flags fall back to ``FLEX_EMULATOR_<FIELD>`` env vars, then to the defaults. Prints
exactly one line, ``flex emulator listening on http://HOST:PORT/v1``, once the socket accepts
connections, so scripts can wait for it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import types
import typing
from collections.abc import Sequence
from typing import Any

import uvicorn

from .app import create_app
from .config import ENV_PREFIX, EmulatorConfig
from .server import QuietServer, bind_socket, url_host, uvicorn_config

ALIASES: dict[str, list[str]] = {
    "latency_s": ["--latency"],
    "standard_latency_s": ["--standard-latency"],
    "retry_after_s": ["--retry-after"],
    "hang_s": ["--hang"],
    "background_expiry_s": ["--background-expiry"],
    "rpm_limit": ["--rpm", "--rate-limit-rpm"],
    "tpm_limit": ["--tpm"],
    "rate_window_s": ["--rate-window"],
    "trickle_interval_s": ["--trickle-interval"],
    "long_wait_s": ["--long-wait"],
}


def _none_or(cast: type) -> Any:
    def parse(text: str) -> Any:
        return None if text.lower() in ("none", "null", "") else cast(text)

    parse.__name__ = cast.__name__
    return parse


def _comma_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _json_object(text: str) -> Any:
    """A dict knob (``--prices '{"gpt-5": {"input": 1.25, "cached_input": 0.125, "output": 10}}'``)."""
    try:
        return json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None


def _arg_type(annotation: Any) -> Any:
    """argparse converter for a config field annotation (int, float, str, X | None, list[str])."""
    if annotation == list[str]:
        return _comma_list
    if typing.get_origin(annotation) is dict:
        return _json_object
    args = typing.get_args(annotation)
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        inner = next(a for a in args if a is not type(None))
        return _none_or(inner)
    return annotation


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m flex_provider.emulator",
        description="OpenAI-compatible flex emulator (Responses, Chat Completions, Models).",
    )
    parser.add_argument("--host", default=os.environ.get(ENV_PREFIX + "HOST", "127.0.0.1"), help="(default: 127.0.0.1)")
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get(ENV_PREFIX + "PORT", "8089")),
        help="0 picks a free port (default: 8089)",
    )
    for name, field in EmulatorConfig.model_fields.items():
        flags = ["--" + name.replace("_", "-"), *ALIASES.get(name, [])]
        help_text = f"{field.description or name} (default: {field.get_default(call_default_factory=True)})"
        if field.annotation is bool:
            parser.add_argument(*flags, dest=name, action="store_true", default=None, help=help_text)
        else:
            parser.add_argument(*flags, dest=name, type=_arg_type(field.annotation), default=None, help=help_text)
    return parser


async def _serve(server: uvicorn.Server, sockets: list[Any], url: str) -> None:
    """Run uvicorn and announce readiness once it has started accepting."""
    task = asyncio.create_task(server.serve(sockets=sockets))
    while not server.started and not task.done():
        await asyncio.sleep(0.01)
    if server.started:
        print(f"flex emulator listening on {url}", flush=True)
    await task


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Flags left unset (None) fall back to FLEX_EMULATOR_* env vars, then to the defaults.
    knobs = {name: getattr(args, name) for name in EmulatorConfig.model_fields}
    config = EmulatorConfig.from_env(**{k: v for k, v in knobs.items() if v is not None})
    app = create_app(config)
    sock = bind_socket(args.host, args.port)
    port = sock.getsockname()[1]
    server = QuietServer(uvicorn_config(app, args.host, port), app.state.emulator)
    url = f"http://{url_host(args.host)}:{port}/v1"
    loop_factory = server.config.get_loop_factory()
    loop = loop_factory() if loop_factory is not None else asyncio.new_event_loop()
    try:
        loop.run_until_complete(_serve(server, [sock], url))
    except KeyboardInterrupt:
        pass
    finally:
        loop.close()
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
