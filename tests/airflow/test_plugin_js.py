"""The pages' shared JavaScript helpers, run by Node (the browser tests see them only through the
pages): the task a tab is for, axis scales, money and duration formats, and that every script parses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from flex_provider.plugins.pages import STATIC_DIR

NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed")

PROBE = """
const fs = require("fs");
const Flex = new Function(fs.readFileSync(process.argv[1], "utf8") + "; return Flex;")();
const out = {
  task: Flex.taskFromQuery("?dag_id=d%201&run_id=manual__2026-01-01T00%3A00%3A00%2B00%3A00&task_id=t&map_index={MAP_INDEX}"),
  mapped: Flex.taskFromQuery("?dag_id=d&run_id=r&task_id=t&map_index=3").path,
  missing: Flex.taskFromQuery("?dag_id=d&task_id=t"),
  scales: [0, 1, 4, 5, 7, 48, 80, 1234].map((v) => Flex.niceScale(v, true)),
  money: [0.03, 0.0444].map((v) => Flex.niceScale(v, false)),
  usd: [0, 0.001234, 0.0222, 12.5, -3].map(Flex.fmtUsd),
  durations: [0.2, 7, 75, 3725].map(Flex.fmtDuration),
  pct: [Flex.fmtPct(1, 3), Flex.fmtPct(3, 3), Flex.fmtPct(1, 0)],
};
console.log(JSON.stringify(out));
"""


def test_every_script_parses() -> None:
    for script in sorted(STATIC_DIR.glob("*.js")):
        done = subprocess.run([NODE, "--check", str(script)], capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, (script.name, done.stderr)


def test_helpers() -> None:
    done = subprocess.run(
        [NODE, "-e", PROBE, str(STATIC_DIR / "common.js")],
        env={**os.environ, "LC_ALL": "C", "LANG": "C"},  # number formats in the default (en-US) locale
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    task = out["task"]
    assert (task["dag_id"], task["task_id"], task["map_index"]) == ("d 1", "t", "-1")  # {MAP_INDEX} left by the UI
    assert task["path"] == "../api/runs/d%201/manual__2026-01-01T00%3A00%3A00%2B00%3A00/t?map_index=-1"
    assert out["mapped"] == "../api/runs/d/r/t?map_index=3"
    assert out["missing"] is None
    for scale, raw in zip(out["scales"], [0, 1, 4, 5, 7, 48, 80, 1234], strict=True):
        assert scale["step"] >= 1 and scale["step"] == int(scale["step"])  # whole ticks for counts
        assert scale["max"] >= raw and scale["max"] % scale["step"] == 0 and scale["max"] / scale["step"] <= 5
    assert out["scales"][6] == {"max": 80, "step": 20}
    assert all(s["max"] >= v for s, v in zip(out["money"], [0.03, 0.0444], strict=True))
    assert out["usd"][0] == "$0.00" and out["usd"][1] == "$0.00123" and out["usd"][2] == "$0.0222"
    assert out["usd"][3] == "$12.50" and out["usd"][4] == "-$3.00"
    assert out["durations"] == ["< 1 s", "7 s", "1 min 15 s", "1 h 02 min"]
    assert out["pct"] == ["33.3%", "100%", ""]
