"""controls.py: what each outcome of a request gives back to the budget and the rate pacer.

Real openai SDK exceptions (``helpers.make_api_error``) and real building blocks; the requests
themselves are not sent (the integration tests send them to the emulator)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from flex_provider.engine.attempt import ItemAttempt
from flex_provider.engine.budget import OverBudget
from flex_provider.engine.calls import CallBuilder, Created, Reply
from flex_provider.engine.config import RequestSpec, RunOptions
from flex_provider.engine.controls import RunControls
from flex_provider.engine.errors import OutputValidationError
from flex_provider.engine.items import WorkItem
from flex_provider.engine.pricing import PriceTable
from flex_provider.engine.progress import RunCounters
from flex_provider.engine.ratelimit import RateLimits
from flex_provider.engine.usage import Usage

SPEC = RequestSpec(model="gpt-5-mini", instructions="Classify.", request_options={"max_output_tokens": 500})
HEADERS = {"x-ratelimit-limit-tokens": "100000", "x-ratelimit-remaining-tokens": "99000"}


def controls(**options) -> RunControls:
    run = RunOptions(**options)
    calls = CallBuilder(SPEC, default_output_bound=4096 if run.max_cost_usd is not None else None)
    made = RunControls(SPEC, run, PriceTable(run.prices), RunCounters(), request_options=calls.request_options)
    made.start(total=10, spent_before=0.0)
    return made


def attempt(tier: str = "flex") -> ItemAttempt:
    return ItemAttempt(WorkItem("a", "my invoice is wrong " * 10), "h", tier)


def reply(tier: str = "flex", usage: Usage | None = None) -> Reply:
    return Reply("ok", tier, usage or Usage(input=60, output=100), "r", "gpt-5-mini", RateLimits.from_headers(HEADERS))


def test_a_budget_adds_the_default_output_bound_only_to_requests_without_one():
    bounded = CallBuilder(SPEC, default_output_bound=4096)
    assert bounded.kwargs("x", "flex")["max_output_tokens"] == 500  # the request's own bound stays
    unbounded = CallBuilder(RequestSpec(model="gpt-5-mini"), default_output_bound=4096)
    assert unbounded.kwargs("x", "flex")["max_output_tokens"] == 4096
    chat = CallBuilder(RequestSpec(model="gpt-5-mini", api="chat"), default_output_bound=4096)
    assert chat.kwargs("x", "flex")["max_completion_tokens"] == 4096
    assert "max_output_tokens" not in CallBuilder(RequestSpec(model="gpt-5-mini")).kwargs("x", "flex")
    # Not part of the question: a folder started without a budget is finished with one.
    assert unbounded.spec.fingerprint() == RequestSpec(model="gpt-5-mini").fingerprint()


async def test_an_answer_settles_the_budget_at_its_cost_and_the_pacer_at_what_the_server_charged():
    made = controls(max_cost_usd=1.0)
    assert made.budget is not None
    item = attempt()
    made.begin(item)
    ticket = await made.admit(item)
    assert made.budget.reserved > 0 and made.pacer.in_flight == 1
    ticket.sent = True
    made.answered(ticket, item, reply())
    made.release(ticket)  # the finally: a no-op now
    cost = made.budget.actual_cost("gpt-5-mini", "flex", Usage(input=60, output=100))
    assert made.budget.spent == pytest.approx(cost) and made.budget.reserved == 0
    assert made.pacer.in_flight == 0 and made.pacer.limit("tokens") == 100_000  # learnt from the answer
    assert made.estimator.samples == 1


async def test_a_429_rate_limit_gives_everything_back_and_says_whether_the_pacer_knows_the_limit(api_error):
    made = controls(max_cost_usd=1.0)
    item = attempt()
    made.begin(item)
    blind = await made.admit(item)
    blind.sent = True
    refused = api_error(429, code="rate_limit_exceeded", type_="tokens", headers={"retry-after-ms": "20"})
    assert made.refused(blind, refused, rate_limited=True, pause=True) is False  # no limit announced: back off
    assert made.budget.spent == 0 and made.budget.reserved == 0 and made.pacer.in_flight == 0

    ticket = await made.admit(item)
    ticket.sent = True
    announced = api_error(429, code="rate_limit_exceeded", type_="tokens", headers={**HEADERS, "retry-after": "1"})
    assert made.refused(ticket, announced, rate_limited=True, pause=True) is True  # the pacer's to handle
    assert made.pacer.stats()["tokens"]["rate_limited"] == 2 and made.pacer.in_flight == 0


async def test_an_invalid_answer_is_billed_and_a_timeout_counts_its_worst_case():
    made = controls(max_cost_usd=1.0)
    assert made.budget is not None
    item = attempt()
    made.begin(item)
    ticket = await made.admit(item)
    ticket.sent = True
    wrong = OutputValidationError("output does not match")
    wrong.usage, wrong.service_tier, wrong.model = Usage(input=60, output=100), "flex", "gpt-5-mini"
    made.invalid_answer(ticket, item, wrong)
    assert made.budget.spent == pytest.approx(made.budget.actual_cost("gpt-5-mini", "flex", wrong.usage))

    spent = made.budget.spent
    ticket = await made.admit(item)
    held = ticket.held
    assert held is not None
    ticket.sent = True
    made.no_answer(ticket)  # it may have been answered and billed: the worst case is counted
    assert made.budget.spent == pytest.approx(spent + held.amount) and made.budget.unknown_costs == 1


async def test_a_request_that_never_left_costs_nothing():
    made = controls(max_cost_usd=1.0)
    assert made.budget is not None
    item = attempt()
    made.begin(item)
    ticket = await made.admit(item)
    made.release(ticket)  # cancelled before it was sent
    assert made.budget.spent == 0 and made.budget.reserved == 0
    assert made.pacer.in_flight == 0 and made.pacer.stats()["acquired"] == 1


async def test_a_request_the_budget_can_never_afford_raises_over_budget():
    made = controls(max_cost_usd=0.0001)  # less than one worst case (500 output tokens at flex: $0.0005)
    item = attempt()
    made.begin(item)
    with pytest.raises(OverBudget, match=r"not sent: its worst-case cost \$0\.000\d+ does not fit"):
        await made.admit(item)
    assert made.budget is not None and made.budget.refused == 1 and made.pacer.in_flight == 0


async def test_background_keeps_the_budget_held_until_the_response_is_answered():
    made = controls(max_cost_usd=1.0, submit_mode="background")
    assert made.budget is not None
    item = attempt()
    made.begin(item)
    ticket = await made.admit(item)
    ticket.sent = True
    made.answered(ticket, item, Created("resp_1", RateLimits.from_headers(HEADERS)))
    made.release(ticket)
    assert item.held is not None and made.budget.reserved > 0  # still held: the response is running
    made.end(item, reply())
    assert made.budget.reserved == 0 and made.budget.spent > 0 and item.held is None

    # A response an earlier session created, answered now: counted, never reserved.
    adopted = attempt()
    made.begin(adopted)
    before = made.budget.spent
    made.end(adopted, reply())
    assert made.budget.spent > before


def test_a_deadline_sends_items_to_the_fallback_tier_and_counts_them():
    made = controls(deadline_at=(datetime.now(UTC) - timedelta(seconds=1)).isoformat(), max_concurrency=2)
    assert made.planner is not None
    # A deadline already passed: the plan cannot make it, so items go to whichever tier is faster
    # (here the fallback tier: 2 ms against flex's 20 ms), each recorded as a deadline fallback.
    tiers = []
    for _ in range(8):
        item = attempt()
        made.begin(item)
        time.sleep(0.002 if item.requested_tier == "default" else 0.02)
        made.end(item, reply(item.requested_tier))
        tiers.append(item.requested_tier)
        assert item.fallback_reason == ("deadline" if item.requested_tier == "default" else None)
    assert tiers[0] == "flex"  # nothing measured yet: nothing says flex does not fit
    assert tiers[-3:] == ["default"] * 3
    assert made.counters.fallbacks_by_reason == {"deadline": tiers.count("default")}
    summary = made.deadline_summary()
    assert summary is not None and summary["met"] is False and summary["predicted_miss"] is True
    assert made.live()["deadline"]["missed"] is True


def test_without_controls_nothing_is_held_and_the_summary_says_none():
    made = controls()
    assert made.budget is None and made.planner is None
    assert made.budget_summary() is None and made.deadline_summary() is None and made.live() == {}


def test_the_deadline_travels_as_an_aware_iso_time():
    with pytest.raises(ValueError, match="no timezone"):
        RunOptions(deadline_at="2026-01-01T06:00:00")
    options = RunOptions(deadline_at="2026-01-01T06:00:00+00:00")
    assert options.deadline == datetime(2026, 1, 1, 6, tzinfo=UTC)


def test_run_options_from_an_older_payload_have_no_controls():
    from flex_provider.engine.config import run_options_from_dict

    options = run_options_from_dict({"max_concurrency": 4})
    assert options.max_cost_usd is None and options.deadline_at is None
    assert options.max_tokens_per_minute is None and options.rate_limit_window_s == 60.0


def test_admit_waits_for_the_pacer_and_a_cancelled_wait_gives_the_budget_back():
    async def main() -> None:
        made = controls(max_cost_usd=1.0, max_requests_per_minute=1, rate_limit_window_s=60)
        assert made.budget is not None
        item = attempt()
        made.begin(item)
        first = await made.admit(item)  # the one request the cap allows this minute
        waiting = asyncio.ensure_future(made.admit(item))
        await asyncio.sleep(0.01)
        assert not waiting.done() and made.budget.in_flight == 2
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert made.budget.in_flight == 1  # the waiter's reservation went back
        made.release(first)

    asyncio.run(main())


# -- the operator's budget and deadline, as rendered ---------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("", None), ("None", None), (0.05, 0.05), ("0.05", 0.05), (" 2 ", 2.0), (0, 0.0)],
)
def test_budget_from_a_rendered_template(value, expected):
    from flex_provider.engine.config import budget_from

    assert budget_from(value) == expected


@pytest.mark.parametrize("value", ["five dollars", -1, float("nan"), True])
def test_a_bad_budget_names_the_field(value):
    from flex_provider.engine.config import budget_from
    from flex_provider.engine.errors import FlexInputError

    with pytest.raises(FlexInputError, match="max_cost_usd"):
        budget_from(value)


START = datetime(2026, 1, 1, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (3600, "2026-01-01T01:00:00+00:00"),
        ("3600", "2026-01-01T01:00:00+00:00"),  # a templated number
        (timedelta(hours=6), "2026-01-01T06:00:00+00:00"),
        ("2026-01-01 06:00:00+00:00", "2026-01-01T06:00:00+00:00"),  # str() of data_interval_end + 6h
        ("2026-01-01T07:00:00+01:00", "2026-01-01T06:00:00+00:00"),  # made UTC
        ("2026-01-01T06:00:00", "2026-01-01T06:00:00+00:00"),  # no timezone: UTC
        (datetime(2026, 1, 1, 6, tzinfo=UTC), "2026-01-01T06:00:00+00:00"),
    ],
)
def test_deadline_from_is_absolute_and_in_utc(value, expected):
    from flex_provider.engine.config import deadline_from

    assert deadline_from(value, START) == expected
    if expected is not None:
        assert RunOptions(deadline_at=expected).deadline == datetime.fromisoformat(expected)


@pytest.mark.parametrize("value", ["tomorrow morning", -5, 0, [1]])
def test_a_bad_deadline_names_the_field(value):
    from flex_provider.engine.config import deadline_from
    from flex_provider.engine.errors import FlexInputError

    with pytest.raises(FlexInputError, match="deadline"):
        deadline_from(value, START)
