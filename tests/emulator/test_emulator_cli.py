"""``python -m flex_provider.emulator`` starts, announces itself and serves /v1/models."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading

import httpx
import pytest

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_starts_and_answers() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flex_provider.emulator",
            "--port",
            str(port),
            "--latency",
            "0.01",
            "--api-key",
            "cli-key",
            "--flex-capacity",
            "3",
            "--seed",
            "5",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(timeout=15)
        assert lines, "emulator did not announce itself"
        assert lines[0].strip() == f"flex emulator listening on http://127.0.0.1:{port}/v1"
        base = f"http://127.0.0.1:{port}"
        models = httpx.get(f"{base}/v1/models", headers={"authorization": "Bearer cli-key"}, timeout=5)
        assert models.status_code == 200
        assert "gpt-5" in [m["id"] for m in models.json()["data"]]
        assert httpx.get(f"{base}/v1/models", timeout=5).status_code == 401
        config = httpx.get(f"{base}/emulator/config", timeout=5).json()
        assert (config["flex_capacity"], config["seed"], config["latency_s"]) == (3, 5, 0.01)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stderr:
            proc.stderr.close()
        if proc.stdout:
            proc.stdout.close()
