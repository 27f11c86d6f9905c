"""The engine against the emulator over HTTP, through the real openai SDK: flex semantics end to end."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pydantic import BaseModel

from flex_provider.engine import FlexInputError, FlexRunAborted, ResultStore
from flex_provider.operators.flex import schema_from_response_format
from tests.integration.conftest import API_KEY, FAST_RETRY
from tests.integration.helpers import input_key, make_engine, make_items, records

pytestmark = pytest.mark.integration


async def test_30_percent_unavailable_every_item_succeeds_exactly_once(emu, tmp_path: Path) -> None:
    emu.update(unavailable_rate=0.3, retry_after_s=0.01, seed=7)
    items = make_items(120)
    engine = make_engine(emu, tmp_path, API_KEY, retry=FAST_RETRY, max_concurrency=16)
    summary = await engine.run(items, total=len(items))

    assert summary["total"] == summary["succeeded"] == 120
    assert summary["unavailable"] > 10  # the 429s really happened...
    assert summary["requests"] == 120 + summary["unavailable"]  # ...and each was retried, nothing else
    out = records(tmp_path)
    assert sorted(r["id"] for r in out) == sorted(i.id for i in items)  # exactly once in the output
    assert all(r["service_tier"] == "flex" and r["status"] == "succeeded" for r in out)
    assert max(r["attempts"] for r in out) > 1
    stats = emu.stats()["inputs"]
    assert all(stats[input_key(i.prompt)]["succeeded"] == 1 for i in items)  # answered exactly once
    assert summary["cost_usd"]["saved"] == pytest.approx(summary["cost_usd"]["actual"], rel=1e-6)


async def test_fallback_sends_item_with_standard_tier_and_records_it(emu, tmp_path: Path) -> None:
    emu.update(unavailable_rate=1.0)
    engine = make_engine(
        emu,
        tmp_path,
        API_KEY,
        on_unavailable="fallback",
        retry={"max_attempts": 3, "initial_wait_s": 0.0, "max_wait_s": 0.01, "jitter_s": 0.0},
    )
    summary = await engine.run(make_items(10), total=10)

    assert summary["succeeded"] == 10 and summary["fallbacks"] == 10
    out = records(tmp_path)
    assert {r["service_tier"] for r in out} == {"default"}
    assert all(r["fallback"] and r["requested_tier"] == "default" and r["attempts"] == 4 for r in out)
    by_tier = emu.stats()["by_tier_status"]
    assert by_tier["flex:429"] == 30 and by_tier["default:200"] == 10
    # Fallen-back items are paid at the standard price: nothing saved on them.
    assert summary["cost_usd"]["saved"] == 0


async def test_fail_mode_gives_up_on_first_unavailable(emu, tmp_path: Path) -> None:
    emu.update(unavailable_rate=1.0)
    engine = make_engine(emu, tmp_path, API_KEY, on_unavailable="fail", retry=FAST_RETRY)
    summary = await engine.run(make_items(5), total=5)
    assert summary["failed"] == 5 and summary["requests"] == 5
    out = records(tmp_path)
    assert {r["error"]["code"] for r in out} == {"resource_unavailable"}
    assert all(r["error"]["retryable"] for r in out)


async def test_retry_budget_exhausted_item_fails_and_is_retried_by_next_run(emu, tmp_path: Path) -> None:
    emu.update(unavailable_rate=1.0)
    policy = {"max_attempts": 2, "initial_wait_s": 0.0, "max_wait_s": 0.0, "jitter_s": 0.0}
    summary = await make_engine(emu, tmp_path, API_KEY, retry=policy).run(make_items(4), total=4)
    assert summary["failed"] == 4 and summary["requests"] == 8

    emu.update(unavailable_rate=0.0)
    summary = await make_engine(emu, tmp_path, API_KEY, retry=policy).run(make_items(4), total=4)
    assert summary["succeeded"] == 4 and summary["failed"] == 0 and summary["this_run"]["requests"] == 4
    assert len(records(tmp_path)) == 4  # compacted: the old failures are gone


async def test_unknown_model_stops_the_run_after_a_few_items_not_one_request_per_item(emu, tmp_path: Path) -> None:
    """Unattended nights #5: 404 for every item is the configuration, not the items."""
    engine = make_engine(emu, tmp_path, API_KEY, spec={"model": "gpt-nonexistent"}, retry=FAST_RETRY, max_concurrency=2)
    with pytest.raises(FlexRunAborted) as caught:
        await engine.run(make_items(200), total=200)
    message = str(caught.value)
    assert "404" in message and "model_not_found" in message and "gpt-nonexistent" in message
    assert emu.stats()["requests"] <= 5  # a few items, not 200 doomed requests (no retry on 404 either)


async def test_a_404_among_successes_fails_only_that_item(emu, tmp_path: Path) -> None:
    """One item-level 404 (or two in a row) is not a run-wide verdict: the run goes on."""
    engine = make_engine(emu, tmp_path, API_KEY, spec={"model": "gpt-nonexistent"}, retry=FAST_RETRY, max_concurrency=1)
    summary = await engine.run(make_items(2), total=2)
    assert summary["failed"] == 2 and summary["requests"] == 2  # no retry on 404
    error = records(tmp_path)[0]["error"]
    assert error["status_code"] == 404 and error["code"] == "model_not_found"
    assert "gpt-nonexistent" in error["message"] and not error["retryable"]


async def test_wrong_key_stops_the_whole_run_at_once(emu, tmp_path: Path) -> None:
    engine = make_engine(emu, tmp_path, "sk-wrong-key-0000000000000", retry=FAST_RETRY, max_concurrency=4)
    with pytest.raises(FlexRunAborted) as caught:
        await engine.run(make_items(200), total=200)
    assert "401" in str(caught.value) and "sk-wrong-key" not in str(caught.value)
    assert emu.stats()["requests"] <= 8  # not 200 doomed requests


async def test_insufficient_quota_aborts_but_keeps_finished_results(emu, tmp_path: Path) -> None:
    engine = make_engine(emu, tmp_path, API_KEY, retry=FAST_RETRY)
    await engine.run(make_items(5), total=5)
    emu.update(insufficient_quota=True)
    with pytest.raises(FlexRunAborted, match="insufficient_quota"):
        await make_engine(emu, tmp_path, API_KEY, retry=FAST_RETRY).run(make_items(50), total=50)
    assert len(records(tmp_path)) == 5


async def test_server_errors_and_rate_limits_are_retried(emu, tmp_path: Path) -> None:
    emu.update(error_rate=0.3, seed=3)
    summary = await make_engine(emu, tmp_path, API_KEY, retry=FAST_RETRY).run(make_items(40), total=40)
    assert summary["succeeded"] == 40 and summary["transient_errors"] > 0

    emu.reset()
    emu.update(error_rate=0.0, rate_limit_rpm=30, rate_window_s=3)
    engine = make_engine(emu, tmp_path / "rl", API_KEY, retry=FAST_RETRY, max_concurrency=16, rate_limit_window_s=3)
    summary = await engine.run(make_items(60, "rl"), total=60)
    assert summary["succeeded"] == 60
    # Paced by the limit the answers announce: the bucket, not the concurrency, is what runs out, so
    # the limiter keeps its 16 and (next to) no request is refused.
    assert summary["rate_limited"] <= 1 and emu.stats()["rate_limited"]["requests"] <= 1
    assert engine.limiter.limit == 16
    assert summary["rate_limits"]["requests"]["server_limit"] == 30


async def test_hanging_request_times_out_and_is_retried(emu, tmp_path: Path) -> None:
    emu.update(hang_rate=0.5, hang_s=30, seed=11)
    engine = make_engine(emu, tmp_path, API_KEY, spec={"timeout": 0.5}, retry=FAST_RETRY)
    summary = await engine.run(make_items(6), total=6)
    assert summary["succeeded"] == 6 and summary["transient_errors"] > 0


class Ticket(BaseModel):
    category: str
    sentiment: str
    urgency: int


@pytest.mark.parametrize("api", ["responses", "chat"])
async def test_structured_output_is_parsed_and_validated(emu, tmp_path: Path, api: str) -> None:
    schema, name = schema_from_response_format(Ticket)
    engine = make_engine(emu, tmp_path, API_KEY, spec={"api": api, "response_schema": schema, "schema_name": name})
    summary = await engine.run(make_items(5), total=5)
    assert summary["succeeded"] == 5
    for record in records(tmp_path):
        Ticket.model_validate(record["output"])
        assert record["usage"]["input"] > 0 and record["usage"]["output"] > 0


async def test_cancelled_run_resumes_without_resending_finished_items(emu, tmp_path: Path) -> None:
    emu.update(latency_s=0.05)
    items = make_items(80)
    engine = make_engine(emu, tmp_path, API_KEY, max_concurrency=4, flush_every=5)
    task = asyncio.create_task(engine.run(items, total=80))
    while engine.counters.succeeded < 20:
        await asyncio.sleep(0.02)
    task.cancel()  # what a triggerer restart does to run()
    with pytest.raises(asyncio.CancelledError):
        await task
    saved = {r["id"] for r in records(tmp_path)}
    assert len(saved) >= 20  # the cancellation flushed what had finished

    summary = await make_engine(emu, tmp_path, API_KEY, max_concurrency=4).run(items, total=80)
    assert summary["succeeded"] == 80 and summary["this_run"]["resumed"] == len(saved)
    stats = emu.stats()["inputs"]
    resent = {i.id for i in items if stats[input_key(i.prompt)]["succeeded"] > 1}
    assert not resent & saved  # no item with a saved result was paid for twice...
    assert len(resent) <= 4  # ...only those in flight at the cancellation (max_concurrency=4)
    assert len(records(tmp_path)) == 80


async def test_background_mode_polls_and_reattaches_after_restart(emu, tmp_path: Path) -> None:
    emu.update(latency_s=0.3)
    items = make_items(12)
    engine = make_engine(emu, tmp_path, API_KEY, submit_mode="background", poll_interval_s=0.1, max_concurrency=12)
    task = asyncio.create_task(engine.run(items, total=12))
    while engine.counters.background_created < 12:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    task.cancel()  # crash while every response is still queued/in progress on the server
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(ResultStore(tmp_path).load().pending) == 12

    engine = make_engine(emu, tmp_path, API_KEY, submit_mode="background", poll_interval_s=0.1, max_concurrency=12)
    summary = await engine.run(items, total=12)
    assert summary["succeeded"] == 12
    assert summary["this_run"]["background_reattached"] == 12
    assert emu.stats()["background"]["created"] == 12  # zero re-sent
    assert not (tmp_path / "_pending").exists() or not list((tmp_path / "_pending").iterdir())


async def test_background_expired_response_is_created_again(emu, tmp_path: Path) -> None:
    emu.update(latency_s=0.05, background_expiry_s=0.01)
    engine = make_engine(emu, tmp_path, API_KEY, submit_mode="background", poll_interval_s=0.2, retry=FAST_RETRY)
    summary = await engine.run(make_items(3), total=3)
    assert summary["succeeded"] + summary["failed"] == 3
    assert emu.stats()["background"]["created"] >= 3


class SlowStore(ResultStore):
    """Storage whose writes take a while, like an object store under load."""

    def write_part(self, records: list[dict]) -> str:
        import time

        time.sleep(0.3)
        return super().write_part(records)


async def test_slow_checkpoint_write_is_not_overtaken_by_the_manifest(emu, tmp_path: Path) -> None:
    # Regression: the timer flush was cancelled mid-write at the end of a run; its thread kept
    # writing while finalize() listed the parts, so the summary said total=0 for 3 finished items.
    engine = make_engine(emu, tmp_path, API_KEY, flush_interval_s=0.05)
    engine.store = SlowStore(tmp_path)
    summary = await engine.run(make_items(3), total=3)
    assert summary["total"] == summary["succeeded"] == 3
    assert len(records(tmp_path)) == 3


async def test_resuming_with_a_different_request_is_refused(emu, tmp_path: Path) -> None:
    await make_engine(emu, tmp_path, API_KEY).run(make_items(3), total=3)
    with pytest.raises(FlexInputError, match="holds results of a different request"):
        await make_engine(emu, tmp_path, API_KEY, spec={"instructions": "Now translate."}).run(make_items(3), total=3)
    assert emu.stats()["requests"] == 3
    # retry settings and timeouts are not part of the request: resuming with them changed is fine
    summary = await make_engine(emu, tmp_path, API_KEY, spec={"timeout": 30}, max_concurrency=2).run(make_items(3))
    assert summary["this_run"]["resumed"] == 3


async def test_redo_failed_all_sends_only_the_failed_items_again_once_the_cause_is_fixed(emu, tmp_path: Path) -> None:
    """The server refused the model (404, not retryable) for two items; after the fix a plain
    retry sends nothing (those failures are final), redo_failed="all" sends exactly those two."""
    from flex_provider.emulator.config import DEFAULT_MODELS

    items = make_items(5)
    summary = await make_engine(emu, tmp_path, API_KEY).run(items[:3], total=3)
    assert summary["succeeded"] == 3

    emu.update(models=[m for m in DEFAULT_MODELS if m != "gpt-5-mini"])  # the server refuses the model
    # one at a time, two items: below the three-in-a-row that stops a run, so they fail per item
    summary = await make_engine(emu, tmp_path, API_KEY, max_concurrency=1).run(items, total=5)
    assert (summary["succeeded"], summary["failed"], summary["this_run"]["requests"]) == (3, 2, 2)
    [group] = summary["failures"]
    assert (group["type"], group["status_code"], group["code"], group["count"]) == (
        "NotFoundError",
        404,
        "model_not_found",
        2,
    )
    assert group["retryable"] is False and group["sample_ids"] == ["ticket-3", "ticket-4"]
    assert "gpt-5-mini" in group["sample_message"]

    emu.update(models=list(DEFAULT_MODELS))  # the cause is fixed
    summary = await make_engine(emu, tmp_path, API_KEY).run(items, total=5)
    assert summary["this_run"]["requests"] == 0 and summary["failed"] == 2  # default: final failures stay

    emu.reset()
    summary = await make_engine(emu, tmp_path, API_KEY, redo_failed="all").run(items, total=5)
    assert summary["this_run"]["requests"] == 2 and summary["this_run"]["resumed"] == 3
    assert (summary["succeeded"], summary["failed"], summary["failures"]) == (5, 0, [])
    assert emu.stats()["requests"] == 2  # only the two failed items reached the server
    out = records(tmp_path)
    assert sorted(r["id"] for r in out) == [f"ticket-{i}" for i in range(5)]  # each once: the failures replaced
    assert all(r["status"] == "succeeded" for r in out)
