"""An upgrade with a run in flight loses nothing.

``tests/fixtures/upgrade_v1`` was written by release 0.1 (job format 1): the trigger kwargs as the
triggerer stored them, and the output folder of a run interrupted after 5 of 12 items (one part
file and ``_job.json``). The triggerer rebuilds triggers from stored kwargs with the code installed
*now*, so this code must load that payload, recognise the folder as its own (same request
fingerprint) and finish only the 7 missing items.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from flex_provider.engine.store import ResultStore
from flex_provider.job import JOB_FORMAT, FlexJob
from flex_provider.triggers.flex import FlexTrigger
from tests.airflow.conftest import CONN_ID

pytestmark = pytest.mark.integration

FROZEN = Path(__file__).resolve().parents[1] / "fixtures" / "upgrade_v1"


def frozen_trigger(tmp_path: Path) -> tuple[str, dict]:
    stored = json.loads((FROZEN / "trigger.json").read_text())
    folder = tmp_path / "output"
    shutil.copytree(FROZEN / "output", folder)
    job = stored["kwargs"]["job"]
    job["work_uri"] = job["output_uri"] = folder.as_uri()  # where the copy lives
    job["conn_id"] = CONN_ID  # the test's emulator connection
    return stored["classpath"], stored["kwargs"]


async def test_a_format_1_trigger_payload_is_finished_by_this_release(airflow_db, emu, tmp_path: Path) -> None:
    classpath, kwargs = frozen_trigger(tmp_path)
    assert "format" not in kwargs["job"] and "prompt_template" in kwargs["job"]  # really the old shape
    module, _, name = classpath.rpartition(".")
    trigger = getattr(__import__(module, fromlist=[name]), name)(**kwargs)
    assert isinstance(trigger, FlexTrigger)

    events = [event async for event in trigger.run()]
    payload = events[0].payload
    assert payload["status"] == "success", payload
    assert payload["total"] == payload["succeeded"] == 12
    assert emu.stats()["requests"] == 7  # only what the interrupted run had not finished
    records = list(ResultStore(tmp_path / "output").iter_records())
    assert sorted(r["id"] for r in records) == sorted(f"doc-{i}" for i in range(12))


def test_format_1_loads_into_the_typed_job_and_reserialises_as_the_current_format(tmp_path: Path) -> None:
    _, kwargs = frozen_trigger(tmp_path)
    job = FlexJob.from_payload(kwargs["job"])
    assert job.spec.prompt_template == "{{ item.subject }}: {{ item.body }} ({{ ds }})"
    assert job.spec.model == "gpt-5-mini" and job.options.max_concurrency == 4
    again = job.to_payload()
    assert again["format"] == JOB_FORMAT
    assert FlexJob.from_payload(json.loads(json.dumps(again))) == job


def test_unknown_keys_are_ignored_and_missing_ones_take_defaults(tmp_path: Path) -> None:
    """A payload from a newer release (a downgrade, or a trigger moved to an older triggerer)."""
    payload = {
        "format": JOB_FORMAT + 1,
        "conn_id": "c",
        "spec": {"model": "gpt-5-mini", "a_future_field": 1},
        "options": {"max_concurrency": 3, "a_future_option": True, "retry": {"max_attempts": 2, "future": 0}},
        "work_uri": tmp_path.as_uri(),
        "something_new": [1, 2],
    }
    job = FlexJob.from_payload(payload)
    assert job.options.max_concurrency == 3 and job.options.retry.max_attempts == 2
    assert job.items is None and job.total is None and job.input_label == "items"
