"""`make demo`: run the nightly enrichment DAG once, end to end, and show what it produced and cost.

Without OPENAI_API_KEY it starts the local flex emulator (with some 429 "resource unavailable" so
the retries show) and points the ``openai_default`` connection at it. With OPENAI_API_KEY set, it
talks to the real OpenAI API (this costs money: about 262 small gpt-5-mini flex requests).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from flex_provider.engine.pricing import cost_text
from flex_provider.engine.records import as_summary

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / ".demo"
DAG_ID = "flex_nightly_enrichment"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def main() -> int:
    home = DEMO / "airflow"
    results = DEMO / "results"
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        FLEX_DEMO_OUTPUT_ROOT=results.as_uri(),
    )
    emulator = None
    if os.environ.get("OPENAI_API_KEY"):
        print("OPENAI_API_KEY is set: the demo talks to the real OpenAI API (flex tier, billed).")
    else:
        port = free_port()
        emulator = subprocess.Popen(
            [sys.executable, "-m", "flex_provider.emulator", "--port", str(port), "--api-key", "sk-demo-local",
             "--latency", "0.4", "--unavailable-rate", "0.1", "--retry-after", "1", "--seed", "1"],
            stdout=subprocess.DEVNULL,
            env=env,
        )
    try:
        if emulator is not None:
            wait_for(f"http://127.0.0.1:{port}/emulator/stats")
            conn = {"conn_type": "openai_flex", "password": "sk-demo-local", "host": f"http://127.0.0.1:{port}/v1"}
            env["AIRFLOW_CONN_OPENAI_DEFAULT"] = json.dumps(conn)
            print(f"No OPENAI_API_KEY: using the local flex emulator on port {port} (10% of flex requests get 429).")
        print("Preparing the Airflow metadata database (SQLite) in", home)
        subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        log = DEMO / "dags_test.log"
        print(f"Running `airflow dags test {DAG_ID}` (log: {log}) ...")
        started = time.monotonic()
        with log.open("w") as handle:
            done = subprocess.run([sys.executable, "-m", "airflow", "dags", "test", DAG_ID], env=env,
                                  stdout=handle, stderr=subprocess.STDOUT)
        print(f"... finished in {time.monotonic() - started:.0f}s with exit code {done.returncode}")
        manifests = sorted(results.glob("nightly/*/_manifest.json"), key=lambda p: p.stat().st_mtime)
        if done.returncode != 0 or not manifests:
            print("The DAG run failed; last lines of the log:")
            print("".join(log.read_text().splitlines(keepends=True)[-30:]))
            return 1
        summary = as_summary(json.loads(manifests[-1].read_text()), str(manifests[-1]))
        cost = summary["cost_usd"]
        print()
        print(f"Results: {manifests[-1].parent}  ({len(summary['parts'])} part file(s) + _manifest.json)")
        print(f"Items:   {summary['total']} total, {summary['succeeded']} succeeded, {summary['failed']} failed")
        print(f"Requests: {summary['requests']} ({summary['unavailable']} answered 429 resource_unavailable, "
              f"{summary['fallbacks']} fell back to the standard tier)")
        usage = summary["usage"]
        print(f"Tokens:  {usage['input']} in ({usage['cached']} cached), {usage['output']} out "
              f"({usage['reasoning']} reasoning)")
        print(f"Cost:    {cost_text(cost)}")
        return 0
    finally:
        if emulator is not None:
            emulator.terminate()
            emulator.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
