"""Unattended nights: single faults of the server, through the real SDK over HTTP to the emulator.

Each test names the point of the issue it covers; each failed before its fix.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest

from flex_provider.engine import FlexRunAborted, RetryPolicy
from tests.integration.conftest import API_KEY, FAST_RETRY
from tests.integration.helpers import input_key, make_engine, make_items, records

pytestmark = pytest.mark.integration


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once the socket is closed


async def test_1_a_day_long_rate_limit_is_not_slept_and_item_after_item_stops_the_run(emu, tmp_path: Path) -> None:
    await make_engine(emu, tmp_path, API_KEY, retry=FAST_RETRY).run(make_items(5), total=5)
    emu.update(long_wait_rate=1.0, long_wait_s=86400)
    started = time.monotonic()
    engine = make_engine(emu, tmp_path, API_KEY, retry=RetryPolicy(max_retry_after_s=900), max_concurrency=2)
    with pytest.raises(FlexRunAborted) as caught:
        await engine.run(make_items(200), total=200)
    assert time.monotonic() - started < 10  # not a day, not even max_retry_after_s
    message = str(caught.value)
    assert "requests limit" in message and "86400 s" in message and "until about" in message
    assert "retry the task" in message.lower()
    assert emu.stats()["requests"] <= 5 + 4  # a few items, not 200
    assert len(records(tmp_path)) >= 5  # what finished before is kept


async def test_1_a_sporadic_long_reset_ends_only_that_item_as_retryable(emu, tmp_path: Path) -> None:
    emu.update(long_wait_rate=0.1, seed=11)
    engine = make_engine(emu, tmp_path, API_KEY, retry=FAST_RETRY, max_concurrency=4)
    summary = await engine.run(make_items(60), total=60)
    assert summary["total"] == 60 and 0 < summary["failed"] < 60
    # The daily bucket those 429s describe is not the per-minute one the pacer keeps: learnt as
    # one (10,000 requests, none left, reset in hours), it stalled every worker for seconds at each.
    assert engine.controls.pacer.limit("requests") is None
    assert summary["rate_limits"]["waited"] == 0  # no request waited for the pacer
    failed = [r for r in records(tmp_path) if r["status"] == "failed"]
    assert all(r["error"]["retryable"] and "until about" in r["error"]["message"] for r in failed)
    emu.update(long_wait_rate=0.0)  # after the reset, a re-run finishes them
    again = await make_engine(emu, tmp_path, API_KEY, retry=FAST_RETRY).run(make_items(60), total=60)
    assert again["succeeded"] == 60 and again["this_run"]["processed"] == len(failed)


@pytest.mark.parametrize("kind", ["invalid_json", "html", "empty", "null", "no_output"])
@pytest.mark.parametrize("api", ["responses", "chat"])
async def test_2_malformed_200s_are_retried_per_item_never_abort_the_run(emu, tmp_path: Path, kind, api) -> None:
    emu.update(malformed_rate=0.4, malformed_kinds=[kind], seed=5)
    items = make_items(30)
    engine = make_engine(emu, tmp_path, API_KEY, spec={"api": api}, retry=FAST_RETRY)
    summary = await engine.run(items, total=30)
    assert summary["succeeded"] == 30 and summary["malformed_answers"] > 0
    stats = emu.stats()["inputs"]
    assert all(stats[input_key(i.prompt)]["succeeded"] == 1 for i in items)


async def test_2_an_item_that_only_gets_garbage_fails_alone_with_a_clear_error(emu, tmp_path: Path) -> None:
    emu.update(malformed_rate=1.0, malformed_kinds=["html"])
    summary = await make_engine(emu, tmp_path, API_KEY, retry=RetryPolicy(max_attempts=3, initial_wait_s=0)).run(
        make_items(4), total=4
    )
    assert summary["failed"] == 4 and summary["requests"] == 12  # each retried within its budget
    error = records(tmp_path)[0]["error"]
    assert error["type"] == "MalformedResponseError" and "malformed 200 answer" in error["message"]
    assert error["retryable"]


async def test_3_timeout_bounds_the_whole_request_body_included(emu, tmp_path: Path) -> None:
    emu.update(trickle_rate=1.0, trickle_interval_s=0.3)  # one byte every 0.3 s: each read is quick
    started = time.monotonic()
    engine = make_engine(
        emu, tmp_path, API_KEY, spec={"timeout": 1.0}, retry=RetryPolicy(max_attempts=2, initial_wait_s=0)
    )
    summary = await engine.run(make_items(2), total=2)
    assert time.monotonic() - started < 6  # 2 attempts of 1 s each, not minutes of trickling
    assert summary["failed"] == 2
    assert records(tmp_path)[0]["error"]["type"] in ("TimeoutError", "APITimeoutError")


async def test_3_a_slow_but_timely_body_still_succeeds(emu, tmp_path: Path) -> None:
    emu.update(trickle_rate=0.3, trickle_interval_s=0.0005, seed=2)
    summary = await make_engine(emu, tmp_path, API_KEY, spec={"timeout": 30.0}, retry=FAST_RETRY).run(
        make_items(10), total=10
    )
    assert summary["succeeded"] == 10


async def test_4_a_closed_port_stops_the_run_within_the_grace_period_naming_the_cause(emu, tmp_path: Path) -> None:
    base_url = f"http://127.0.0.1:{closed_port()}/v1"
    engine = make_engine(
        emu,
        tmp_path,
        API_KEY,
        base_url=base_url,
        retry=FAST_RETRY,
        engine={"endpoint": f"conn_id='openai_default', base_url={base_url}", "connect_grace_s": 1.5},
    )
    started = time.monotonic()
    with pytest.raises(FlexRunAborted) as caught:
        await engine.run(make_items(1000), total=1000)
    assert time.monotonic() - started < 10
    message = str(caught.value)
    assert base_url in message and "conn_id='openai_default'" in message and "Connect call failed" in message
    assert API_KEY not in message


@pytest.mark.parametrize("base_url", ["ftp://127.0.0.1:9/v1", "127.0.0.1:9/v1"])
async def test_4_an_unknown_scheme_stops_at_once(emu, tmp_path: Path, base_url) -> None:
    engine = make_engine(emu, tmp_path, API_KEY, base_url=base_url, retry=FAST_RETRY, engine={"endpoint": base_url})
    started = time.monotonic()
    with pytest.raises(FlexRunAborted, match=r"cannot be sent: UnsupportedProtocol"):
        await engine.run(make_items(100), total=100)
    assert time.monotonic() - started < 5


async def test_4_a_key_with_a_newline_stops_at_once_and_is_never_shown(emu, tmp_path: Path) -> None:
    key = API_KEY + "\n"
    engine = make_engine(emu, tmp_path, key, retry=FAST_RETRY)
    with pytest.raises(FlexRunAborted) as caught:
        await engine.run(make_items(100), total=100)
    assert "LocalProtocolError" in str(caught.value) and API_KEY not in str(caught.value)
    assert API_KEY[6:] not in str(caught.value)


async def test_4_connection_resets_in_a_healthy_run_are_retried(emu, tmp_path: Path) -> None:
    emu.update(reset_rate=0.3, seed=4)
    items = make_items(40)
    summary = await make_engine(emu, tmp_path, API_KEY, retry=FAST_RETRY, engine={"connect_grace_s": 0.5}).run(
        items, total=40
    )
    assert summary["succeeded"] == 40 and summary["transient_errors"] > 0


async def test_results_received_before_a_run_wide_stop_are_written(emu, tmp_path: Path) -> None:
    """Only run-wide causes stop a run, and what was received first is on storage."""
    engine = make_engine(emu, tmp_path, API_KEY, retry=FAST_RETRY, max_concurrency=4, flush_every=10_000)

    async def flip_quota() -> None:
        while engine.counters.succeeded < 20:
            await asyncio.sleep(0.01)
        emu.update(insufficient_quota=True)

    flipper = asyncio.create_task(flip_quota())
    with pytest.raises(FlexRunAborted, match="insufficient_quota"):
        await engine.run(make_items(500), total=500)
    await flipper
    assert len(records(tmp_path)) == engine.counters.succeeded >= 20
