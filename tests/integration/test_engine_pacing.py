"""Pacing by the account's rate limits, against the emulator's request and token buckets.

The emulator limits each model like OpenAI does (a bucket per limit, full at the start, refilled
continuously, a request charged its prompt plus its output bound when admitted) and announces the
buckets in ``x-ratelimit-*`` headers. The engine must use the limit, not collide with it: at most 1 %
of the requests answered 429 rate_limit_exceeded, at least 90 % of the limit used. Windows are a few
seconds instead of a minute so that the tests stay quick; the arithmetic is the same.

How much of the limit was used is measured on the emulator's side (``stats["admitted"]``: what its
limiter charged) over the steady state: the bucket is full when the first request arrives, so by
the time the last one is admitted at most ``limit + limit / window * span`` can have been admitted;
the first window's full bucket is left out of both sides. Run with ``-s`` to see the figures (the
README's table quotes them).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import API_KEY, FAST_RETRY
from tests.integration.helpers import make_engine, make_items, records

pytestmark = pytest.mark.integration

OUTPUT_BOUND = 300  # max_output_tokens of every request: what the limiter charges besides the prompt


def span_s(root: Path) -> float:
    """From the first answer to the last (each answer comes a fixed latency after its admission)."""
    times = [datetime.fromisoformat(r["finished_at"]).timestamp() for r in records(root)]
    return max(times) - min(times)


def steady_use(admitted: float, limit: float, window_s: float, span: float) -> float:
    """Share of the refill used once the initial full bucket is left out."""
    return (admitted - limit) / (limit / window_s * span)


async def run_paced(emu: Any, root: Path, items: int, **options: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    engine = make_engine(
        emu,
        root,
        API_KEY,
        # No reasoning tokens: every answer fits the bound (an answer cut short at it is a failed item).
        spec={"request_options": {"max_output_tokens": OUTPUT_BOUND, "reasoning": {"effort": "minimal"}}},
        retry=FAST_RETRY,
        max_concurrency=200,
        **options,
    )
    summary = await engine.run(make_items(items), total=items)
    assert summary["succeeded"] == items
    assert engine.limiter.limit == 200  # rate limits are the pacer's: concurrency never halved
    return summary, emu.stats()


async def test_200_in_flight_against_40000_tokens_per_window_use_the_limit_without_429s(emu, tmp_path: Path) -> None:
    window, limit = 6.0, 40_000
    emu.update(tpm_limit=limit, rate_window_s=window)
    summary, stats = await run_paced(emu, tmp_path, 500, rate_limit_window_s=window)

    refused = stats["rate_limited"]["tokens"] + stats["rate_limited"]["requests"]
    share_429 = refused / stats["requests"]
    span = span_s(tmp_path)
    use = steady_use(stats["admitted"]["tokens"], limit, window, span)
    print(
        f"\n[pacing tpm] 200 in flight, tpm_limit {limit:,}/{window:g}s: {stats['requests']} requests, "
        f"{refused} x 429 rate_limit_exceeded ({share_429:.2%}), admitted {stats['admitted']['tokens']:,} tokens "
        f"in {span:.1f}s: {use:.1%} of the limit used in steady state"
    )
    assert share_429 < 0.01
    assert use >= 0.90
    assert summary["rate_limited"] == refused
    assert summary["rate_limits"]["tokens"]["server_limit"] == limit


async def test_200_in_flight_against_a_request_limit(emu, tmp_path: Path) -> None:
    window, limit = 3.0, 60
    emu.update(rpm_limit=limit, rate_window_s=window)
    summary, stats = await run_paced(emu, tmp_path, 240, rate_limit_window_s=window)

    refused = stats["rate_limited"]["requests"] + stats["rate_limited"]["tokens"]
    share_429 = refused / stats["requests"]
    span = span_s(tmp_path)
    use = steady_use(stats["admitted"]["requests"], limit, window, span)
    print(
        f"\n[pacing rpm] 200 in flight, rpm_limit {limit}/{window:g}s: {stats['requests']} requests, "
        f"{refused} x 429 ({share_429:.2%}), {use:.1%} of the limit used in steady state over {span:.1f}s"
    )
    assert share_429 < 0.01
    assert use >= 0.90
    assert summary["rate_limits"]["requests"]["server_limit"] == limit


async def test_a_user_cap_below_the_account_limit_holds_the_run_to_the_cap(emu, tmp_path: Path) -> None:
    """Two tasks sharing an account: this one may take half of it."""
    window, account, cap = 3.0, 40_000, 20_000
    emu.update(tpm_limit=account, rate_window_s=window)
    summary, stats = await run_paced(emu, tmp_path, 260, rate_limit_window_s=window, max_tokens_per_minute=cap)

    span = span_s(tmp_path)
    admitted = stats["admitted"]["tokens"]
    use = steady_use(admitted, cap, window, span)
    ceiling = cap + cap / window * span  # the most the cap lets through by the last admission
    print(
        f"\n[pacing cap] tpm_limit {account:,}/{window:g}s, max_tokens_per_minute {cap:,}: admitted {admitted:,} "
        f"tokens in {span:.1f}s (the cap allows {ceiling:,.0f}): {use:.1%} of the cap, "
        f"{stats['rate_limited']['tokens']} x 429"
    )
    assert stats["rate_limited"]["tokens"] == stats["rate_limited"]["requests"] == 0
    assert admitted <= ceiling * 1.02  # estimates settle to what the server charged: at most a request over
    assert use >= 0.90
    assert summary["rate_limits"]["tokens"]["limit"] == cap
