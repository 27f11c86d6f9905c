"""Unattended nights, the input side through the engine and the emulator over HTTP: stale answers,
repeated items, two live runs in one folder, XCom-sized runs and the model the server reports."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from flex_provider.engine import FlexRunAborted, PromptBuilder, RequestSpec, RunOptions
from flex_provider.engine.runner import prompt_hash
from flex_provider.job import FlexJob
from tests.integration.conftest import API_KEY, FAST_RETRY
from tests.integration.helpers import input_key, make_engine, make_items, records

pytestmark = pytest.mark.integration


def tickets(texts: dict[str, str], template: str | None = None, context: dict | None = None) -> list:
    builder = PromptBuilder(template, context)
    return [builder.build({"id": k, "text": v}, f"items[{i}]") for i, (k, v) in enumerate(texts.items())]


async def test_10_changed_text_with_the_same_ids_is_sent_again(emu, tmp_path: Path) -> None:
    first = {f"t{i}": f"ticket {i}: printer on fire" for i in range(6)}
    await make_engine(emu, tmp_path, API_KEY, retry=FAST_RETRY).run(tickets(first), total=6)
    second = {**first, "t1": "ticket 1: the printer is fine now", "t4": "ticket 4: refund please"}
    summary = await make_engine(emu, tmp_path, API_KEY, retry=FAST_RETRY).run(tickets(second), total=6)
    assert summary["this_run"]["prompt_changed"] == 2 and summary["this_run"]["requests"] == 2
    assert summary["total"] == 6  # still one record per id
    by_id = {r["id"]: r for r in records(tmp_path)}
    assert all(by_id[k]["prompt_hash"] == prompt_hash(v) for k, v in second.items())  # no stale answer left
    stats = emu.stats()["inputs"]
    assert stats[input_key("ticket 1: the printer is fine now")]["succeeded"] == 1


async def test_10_a_prompt_that_depends_on_ds_is_sent_again_on_another_day(emu, tmp_path: Path) -> None:
    texts = {f"t{i}": f"ticket {i}" for i in range(4)}
    template = "As of {{ ds }}: {{ item.text }}"
    await make_engine(emu, tmp_path, API_KEY, retry=FAST_RETRY).run(
        tickets(texts, template, {"ds": "2026-11-28"}), total=4
    )
    same_day = await make_engine(emu, tmp_path, API_KEY, retry=FAST_RETRY).run(
        tickets(texts, template, {"ds": "2026-11-28"}), total=4
    )
    assert same_day["this_run"]["requests"] == 0 and same_day["this_run"]["resumed"] == 4
    next_day = await make_engine(emu, tmp_path, API_KEY, retry=FAST_RETRY).run(
        tickets(texts, template, {"ds": "2026-11-29"}), total=4
    )
    assert next_day["this_run"]["prompt_changed"] == 4 and next_day["this_run"]["requests"] == 4


async def test_9_identical_items_without_ids_each_get_their_record(emu, tmp_path: Path) -> None:
    job = FlexJob(
        conn_id="unused",
        spec=RequestSpec(model="gpt-5-mini"),
        options=RunOptions(),
        work_uri=tmp_path.as_uri(),
        items=["same text", "other text", "same text", "same text"],
    )
    assert job.validate_input() == 4
    summary = await make_engine(emu, tmp_path, API_KEY, retry=FAST_RETRY).run(job.iter_items(), total=4)
    assert summary["total"] == summary["succeeded"] == 4
    assert sorted(r["index"] for r in records(tmp_path)) == [0, 1, 2, 3]  # every input position


async def test_11_two_live_runs_in_one_folder_bill_each_item_once(emu, tmp_path: Path) -> None:
    emu.update(latency_s=0.05)
    items = make_items(150)
    first = make_engine(emu, tmp_path, API_KEY, retry=FAST_RETRY, max_concurrency=16)
    second = make_engine(emu, tmp_path, API_KEY, retry=FAST_RETRY, max_concurrency=16)
    one, two = await asyncio.gather(first.run(make_items(150), total=150), second.run(items, total=150))
    assert one["succeeded"] == two["succeeded"] == 150
    assert emu.stats()["requests"] == 150  # was 274-281 before the lease
    assert all(v["succeeded"] == 1 for v in emu.stats()["inputs"].values())
    assert {one["this_run"]["requests"], two["this_run"]["requests"]} == {0, 150}  # the second waited


async def test_11_a_cancelled_holder_hands_over_at_once_and_only_in_flight_items_are_resent(
    emu, tmp_path: Path
) -> None:
    emu.update(latency_s=0.1)
    holder = make_engine(emu, tmp_path, API_KEY, retry=FAST_RETRY, max_concurrency=8)
    task = asyncio.create_task(holder.run(make_items(150), total=150))
    while holder.counters.succeeded < 40:
        await asyncio.sleep(0.02)
    successor = asyncio.create_task(make_engine(emu, tmp_path, API_KEY, retry=FAST_RETRY).run(make_items(150), 150))
    await asyncio.sleep(0.3)  # the successor is waiting on the lease
    assert not successor.done()
    task.cancel()  # the triggerer moves the trigger: the old copy is cancelled
    with pytest.raises(asyncio.CancelledError):
        await task
    summary = await asyncio.wait_for(successor, 30)
    assert summary["succeeded"] == 150
    resent = sum(1 for v in emu.stats()["inputs"].values() if v["succeeded"] > 1)
    assert resent <= 8  # at most what was in flight at the cancel


async def test_8_xcom_mode_stops_sending_once_results_pass_the_limit_and_a_retry_sends_nothing(
    emu, tmp_path: Path
) -> None:
    engine = make_engine(emu, tmp_path, API_KEY, retry=FAST_RETRY, max_concurrency=2, max_result_bytes=3000)
    with pytest.raises(FlexRunAborted, match=r"over the XCom limit of 3000 bytes.*output_path"):
        await engine.run(make_items(500), total=500)
    sent = emu.stats()["requests"]
    assert sent < 20  # not 500 paid for and refused afterwards
    assert len(records(tmp_path)) == sent  # everything paid for is kept
    retry = make_engine(emu, tmp_path, API_KEY, retry=FAST_RETRY, max_result_bytes=3000)
    with pytest.raises(FlexRunAborted, match="over the XCom limit"):
        await retry.run(make_items(500), total=500)
    assert emu.stats()["requests"] == sent  # the task retry pays for nothing more


async def test_12_records_name_and_price_the_model_the_server_reports(emu, tmp_path: Path) -> None:
    emu.update(model_snapshot_suffix="-2025-08-07")
    summary = await make_engine(emu, tmp_path, API_KEY, retry=FAST_RETRY).run(make_items(3), total=3)
    assert {r["model"] for r in records(tmp_path)} == {"gpt-5-mini-2025-08-07"}
    assert summary["cost_usd"]["actual"] > 0 and "unpriced_tokens" not in summary["cost_usd"]
