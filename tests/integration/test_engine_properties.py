"""Property test, engine side: random items (odd text, repeats, explicit ids) and random JSON Lines
bytes go through validation and then the real engine, over HTTP to the emulator, under random
server faults. Never an internal error: a bad input is a FlexInputError naming it before anything
is sent; a valid input ends with exactly one record per input position, each a success or a failed
record with a clear error."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from flex_provider.engine import FlexInputError, RetryPolicy
from flex_provider.engine.config import RequestSpec, RunOptions
from flex_provider.job import FlexJob
from tests.integration.conftest import API_KEY
from tests.integration.helpers import make_engine, records
from tests.unit.test_input_properties import items_lists, jsonl_files, templates

pytestmark = pytest.mark.integration

ENGINE_SETTINGS = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
faults = st.fixed_dictionaries(
    {
        "malformed_rate": st.sampled_from([0.0, 0.3]),
        "error_rate": st.sampled_from([0.0, 0.2]),
        "reset_rate": st.sampled_from([0.0, 0.2]),
        "unavailable_rate": st.sampled_from([0.0, 0.3]),
        "seed": st.integers(0, 1000),
    }
)
# Mostly sendable items too (odd unicode, empty text, repeats, explicit ids that may collide), so
# that many examples reach the engine rather than stopping at validation.
plausible_items = st.lists(
    st.one_of(
        st.text(max_size=12),
        st.fixed_dictionaries(
            {"text": st.text(max_size=12)}, optional={"id": st.one_of(st.sampled_from(["a", "b"]), st.integers(0, 3))}
        ),
    ),
    max_size=10,
)
QUICK = RetryPolicy(max_attempts=4, initial_wait_s=0, max_wait_s=0.01, jitter_s=0)


def _run(emu: Any, job: FlexJob, knobs: dict) -> None:
    """Validate like the operator does, then run the engine; check the invariants."""
    try:
        total = job.validate_input()
    except FlexInputError:
        event("refused by validation")
        return  # named: the unit property tests check the naming; nothing was sent
    event("ran through the engine")
    emu.update(**knobs)
    emu.reset()
    root = Path(tempfile.mkdtemp(prefix="flex-engine-props-"))
    engine = make_engine(emu, root, API_KEY, retry=QUICK, max_concurrency=4, engine={"lease_settle_s": 0.0})
    summary = asyncio.run(engine.run(job.iter_items(), total=total))
    out = records(root)
    assert summary["total"] == total == len(out) == len({r["id"] for r in out})
    assert sorted(r["index"] for r in out) == list(range(total))  # one record per input position
    for record in out:
        assert record["status"] in ("succeeded", "failed")
        if record["status"] == "failed":
            assert record["error"]["type"] and record["error"]["message"]


@ENGINE_SETTINGS
@given(items=st.one_of(items_lists, plausible_items, plausible_items), template=templates, knobs=faults)
def test_random_items_through_the_engine_never_give_an_internal_error(emu, items, template, knobs) -> None:
    spec = RequestSpec(model="gpt-5-mini", prompt_template=template)
    job = FlexJob(conn_id="c", spec=spec, options=RunOptions(), work_uri="file:///unused", items=items)
    _run(emu, job, knobs)


@ENGINE_SETTINGS
@given(data=jsonl_files, knobs=faults)
def test_random_jsonl_bytes_through_the_engine_never_give_an_internal_error(emu, data, knobs) -> None:
    with tempfile.NamedTemporaryFile(suffix=".jsonl", delete=False) as handle:
        handle.write(data)
    try:
        job = FlexJob(
            conn_id="c",
            spec=RequestSpec(model="gpt-5-mini"),
            options=RunOptions(),
            work_uri="file:///unused",
            input_uri=f"file://{handle.name}",
            input_label="input_path",
        )
        _run(emu, job, knobs)
    finally:
        Path(handle.name).unlink()
