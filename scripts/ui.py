"""`make ui`: watch a slow flex run fill in the Airflow UI's "Flex" tab, with one command.

What it starts, all local and all stopped by Ctrl-C:

- the flex emulator (``python -m flex_provider.emulator``) with slow answers (several seconds each)
  and some 429 ``resource_unavailable``, so the nightly run lasts a few minutes instead of seconds;
- ``airflow standalone`` (api-server, scheduler, dag-processor, triggerer; LocalExecutor, SQLite) in
  a private ``AIRFLOW_HOME`` under ``.ui/``, with a fixed login (``admin`` / ``admin``), the
  ``openai_default`` connection pointed at the emulator and this repository's ``dags/`` folder;

then it triggers ``flex_nightly_enrichment`` and prints the URLs of the task's Flex tab and of the
Flex savings page. Every ``make ui`` starts from a clean ``.ui/`` (a re-used results folder would make
the run resume and finish at once).

Why the process handling below: the task supervisor and the triggerer's runner call ``setpgid``, so
signalling process groups leaves orphans. Every process started here inherits a marker environment
variable, and the shutdown sweeps whatever still carries it (or runs inside ``.ui/``) after
``airflow standalone`` has had its chance to stop its components.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
UI = ROOT / ".ui"
DAG_ID = "flex_nightly_enrichment"
TASK_ID = "enrich_tickets"
USERNAME = "admin"
PASSWORD = "admin"  # local demo on 127.0.0.1 only; written to the simple auth manager's passwords file
API_KEY = "sk-ui-local"
MARKER = "FLEX_UI_SESSION"

T = TypeVar("T")


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait(what: str, probe: Callable[[], T | None], timeout: float, alive: Callable[[], None]) -> T:
    """Poll ``probe`` until it returns something; ``alive`` raises if a component died meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        alive()
        with contextlib.suppress(httpx.HTTPError):
            value = probe()
            if value is not None:
                return value
        if time.monotonic() > deadline:
            raise SystemExit(f"Timed out after {timeout:.0f}s waiting for {what}; see the logs in {UI}")
        time.sleep(0.5)


class Session:
    """The processes of one ``make ui`` and how to reach and stop them."""

    def __init__(self, port: int, latency: float, unavailable_rate: float) -> None:
        self.port = port
        self.latency = latency
        self.unavailable_rate = unavailable_rate
        self.marker = uuid.uuid4().hex
        self.home = UI / "airflow"
        self.base_url = f"http://127.0.0.1:{port}"
        self.emulator_port = free_port()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.http = httpx.Client(base_url=self.base_url, timeout=30)
        self.token: str | None = None

    # ------------------------------------------------------------------ start
    def env(self) -> dict[str, str]:
        """The shell's environment minus its AIRFLOW* settings (a developer's own Airflow must not
        leak in), plus this session's."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW") and k != "OPENAI_API_KEY"}
        conn = {"conn_type": "openai_flex", "password": API_KEY, "host": f"http://127.0.0.1:{self.emulator_port}/v1"}
        env.update(
            {
                MARKER: self.marker,
                # `airflow standalone` starts its components as plain `airflow ...`: use this venv's.
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
                "PYTHONUNBUFFERED": "1",
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                # Only the run triggered below: no scheduled run of the @daily DAG beside it.
                "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USERNAME}:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.password_file),
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__API__BASE_URL": self.base_url,
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_STORAGE_PATH": str(self.home / "bundles"),
                "AIRFLOW_CONN_OPENAI_DEFAULT": json.dumps(conn),
                "FLEX_DEMO_OUTPUT_ROOT": (UI / "results").as_uri(),
                "FLEX_PROVIDER_CHECKPOINT_ROOT": (UI / "checkpoints").as_uri(),
            }
        )
        return env

    @property
    def password_file(self) -> Path:
        return self.home / "simple_auth_manager_passwords.json.generated"

    def spawn(self, name: str, args: list[str]) -> None:
        log = UI / f"{name}.log"
        with log.open("ab") as out:
            self.procs[name] = subprocess.Popen(
                args,
                env=self.env(),
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                # Own session: Ctrl-C reaches this script only, which then stops everything in order.
                start_new_session=True,
            )

    def alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise SystemExit(f"{name} exited with code {proc.returncode}; see {UI / (name + '.log')}")

    def start(self) -> None:
        shutil.rmtree(UI, ignore_errors=True)
        self.home.mkdir(parents=True)
        self.password_file.write_text(json.dumps({USERNAME: PASSWORD}) + "\n")
        self.password_file.chmod(0o600)
        self.spawn(
            "emulator",
            [
                sys.executable,
                "-m",
                "flex_provider.emulator",
                "--port",
                str(self.emulator_port),
                "--api-key",
                API_KEY,
                "--latency",
                str(self.latency),
                "--latency-jitter",
                "0.5",
                "--unavailable-rate",
                str(self.unavailable_rate),
                "--retry-after",
                "3",
                "--seed",
                "1",
            ],
        )
        self.spawn("standalone", [sys.executable, "-m", "airflow", "standalone"])

    # ------------------------------------------------------------------ REST API
    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        if self.token is None:
            r = self.http.post("/auth/token", json={"username": USERNAME, "password": PASSWORD})
            r.raise_for_status()
            self.token = r.json()["access_token"]
        r = self.http.request(method, f"/api/v2{path}", headers={"Authorization": f"Bearer {self.token}"}, **kwargs)
        r.raise_for_status()
        return r

    def emulator_stats(self) -> dict[str, Any]:
        return httpx.get(f"http://127.0.0.1:{self.emulator_port}/emulator/stats", timeout=10).json()

    def healthy(self) -> bool | None:
        health = self.http.get("/api/v2/monitor/health").json()
        parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
        return True if all(health.get(p, {}).get("status") == "healthy" for p in parts) else None

    def trigger(self) -> str:
        wait(f"{DAG_ID} to be parsed", lambda: self.api("GET", f"/dags/{DAG_ID}").json(), 180, self.alive)
        self.api("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False})
        run = self.api("POST", f"/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": {}}).json()
        return str(run["dag_run_id"])

    def ti_state(self, run_id: str) -> str | None:
        ti = self.api("GET", f"/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}/taskInstances/{TASK_ID}").json()
        return ti.get("state")

    def run_state(self, run_id: str) -> str:
        return str(self.api("GET", f"/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}").json()["state"])

    # ------------------------------------------------------------------ stop
    def members(self) -> list[psutil.Process]:
        """Every live process of this session: it carries the marker variable, or (``setproctitle``
        blanks ``/proc/<pid>/environ`` of the api-server and its workers) it is an Airflow process
        running inside ``.ui/`` (never, say, a shell someone opened there)."""
        found = []
        me = os.getpid()
        for proc in psutil.process_iter():
            if proc.pid == me:
                continue
            with contextlib.suppress(psutil.Error):
                if proc.environ().get(MARKER) == self.marker:
                    found.append(proc)
                    continue
            with contextlib.suppress(psutil.Error):
                if Path(proc.cwd()).is_relative_to(UI) and "airflow" in " ".join(proc.cmdline()):
                    found.append(proc)
        return found

    def stop(self) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the shutdown short
        standalone = self.procs.get("standalone")
        if standalone is not None and standalone.poll() is None:
            standalone.send_signal(signal.SIGINT)  # what it expects: it stops its components itself
            with contextlib.suppress(subprocess.TimeoutExpired):
                standalone.wait(timeout=20)
        for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            procs = self.members()
            if not procs:
                break
            for proc in procs:
                with contextlib.suppress(psutil.Error):
                    proc.send_signal(sig)
            psutil.wait_procs(procs, timeout=grace)
        for proc in self.procs.values():
            with contextlib.suppress(Exception):
                proc.wait(timeout=1)
        left = self.members()
        print("Stopped." if not left else f"Could not stop: {[p.pid for p in left]}")


def interrupted(signum: int, frame: object) -> None:
    """SIGTERM/SIGHUP (a closed terminal, a CI timeout) stop everything just like Ctrl-C."""
    raise KeyboardInterrupt


def main() -> int:
    # Ctrl-C works even when started with SIGINT ignored (a background job of a script), and the
    # components started below get SIGINT's default back instead of inheriting the "ignore".
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupted)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("UI_PORT", "8080")),
        help="api-server port (default 8080, or $UI_PORT; a free one if taken)",
    )
    parser.add_argument("--latency", type=float, default=8.0, help="mean seconds per flex answer (default 8)")
    parser.add_argument(
        "--unavailable-rate",
        type=float,
        default=0.15,
        help="share of flex requests answered 429 resource_unavailable (default 0.15)",
    )
    parser.add_argument(
        "--exit-when-done", action="store_true", help="stop everything once the run has finished (for scripted checks)"
    )
    args = parser.parse_args()

    port = args.port if port_free(args.port) else free_port()
    session = Session(port, args.latency, args.unavailable_rate)
    started = time.monotonic()
    try:
        print(
            f"Starting the flex emulator ({args.latency:g} s per answer, {args.unavailable_rate:.0%} of flex "
            f"requests get 429) and `airflow standalone` in {session.home} (logs: {UI}/*.log) ...",
            flush=True,
        )
        session.start()
        wait("the emulator", lambda: session.emulator_stats(), 30, session.alive)
        wait("Airflow to be healthy", session.healthy, 240, session.alive)
        print(
            f"Airflow is up after {time.monotonic() - started:.0f}s: {session.base_url}  "
            f"(login: {USERNAME} / {PASSWORD})",
            flush=True,
        )
        run_id = session.trigger()
        run_path = f"{session.base_url}/dags/{DAG_ID}/runs/{quote(run_id, safe=':+')}"
        print(f"Triggered {DAG_ID} (run {run_id}); waiting for {TASK_ID} to defer ...", flush=True)
        state = wait(
            f"{TASK_ID} to defer",
            lambda: s if (s := session.ti_state(run_id)) in ("deferred", "success", "failed") else None,
            240,
            session.alive,
        )
        print()
        print(f"  {TASK_ID} is {state}. Open, and log in as {USERNAME} / {PASSWORD}:")
        print(f"  Flex tab of the task:   {run_path}/tasks/{TASK_ID}/plugin/flex")
        print(f"  Flex savings page:      {session.base_url}/plugin/flex-savings")
        print(f"  The run in the grid:    {run_path}")
        print()
        print("The run takes a few minutes (262 tickets, 16 in flight). Ctrl-C stops everything.", flush=True)
        final = wait(
            "the run to finish",
            lambda: s if (s := session.run_state(run_id)) in ("success", "failed") else None,
            3600,
            session.alive,
        )
        stats = session.emulator_stats()
        unavailable = stats["by_error_code"].get("resource_unavailable", 0)
        print(
            f"The run finished ({final}) after {time.monotonic() - started:.0f}s: the emulator answered "
            f"{stats['requests']} requests, {unavailable} of them 429 resource_unavailable.",
            flush=True,
        )
        if args.exit_when_done:
            return 0 if final == "success" else 1
        print("Airflow keeps running: browse the pages above. Ctrl-C stops everything.", flush=True)
        while True:
            session.alive()
            time.sleep(1)
    except KeyboardInterrupt:
        print("\nStopping ...", flush=True)
        return 0
    finally:
        session.stop()


if __name__ == "__main__":
    sys.exit(main())
