from __future__ import annotations

import asyncio
import random

import pytest

from flex_provider.engine.budget import Budget, BudgetError, BudgetReservation, tier_multiplier
from flex_provider.engine.errors import FlexInputError
from flex_provider.engine.estimate import TokenEstimate
from flex_provider.engine.pricing import PriceTable
from flex_provider.engine.usage import Usage

# USD per million tokens, standard tier: round numbers so that costs can be checked by hand.
PRICES = PriceTable({"m": {"input": 1.0, "cached_input": 0.1, "output": 4.0}})
UNKNOWN = "no-such-model-for-budget-tests"


def estimate(prompt_tokens: int = 1000, max_output_tokens: int = 500) -> TokenEstimate:
    return TokenEstimate(
        prompt_chars=prompt_tokens * 4, prompt_tokens=prompt_tokens, max_output_tokens=max_output_tokens, bounded=True
    )


def budget(cap: float = 1.0, **kwargs) -> Budget:
    return Budget(cap, PRICES, model="m", **kwargs)


# -- construction and pricing -------------------------------------------------------------------------


def test_unpriced_model_is_refused_at_construction():
    with pytest.raises(BudgetError, match=f"no price is known for model '{UNKNOWN}'") as info:
        Budget(1.0, PRICES, model=UNKNOWN)
    assert "prices=" in str(info.value)
    assert isinstance(info.value, FlexInputError)  # the operator reports it like any bad input


def test_dated_snapshot_of_a_priced_model_is_accepted():
    assert Budget(1.0, PRICES, model="m-2026-01-01").model == "m-2026-01-01"


@pytest.mark.parametrize("cap", [-1.0, float("nan"), float("inf"), "5", True])
def test_unusable_cap_is_refused(cap):
    with pytest.raises(BudgetError, match="max_cost_usd"):
        Budget(cap, PRICES, model="m")


@pytest.mark.parametrize("before", [-0.01, float("nan")])
def test_unusable_spend_before_is_refused(before):
    with pytest.raises(BudgetError, match="spent_before"):
        budget(spent_before=before)


def test_input_margin_below_one_is_refused():
    with pytest.raises(BudgetError, match="input_margin"):
        budget(input_margin=0.9)


def test_worst_case_prices_prompt_and_output_bound_at_the_tier():
    plain = budget(input_margin=1.0)
    standard = (1000 * 1.0 + 500 * 4.0) / 1_000_000
    assert plain.worst_case(estimate(), "default") == pytest.approx(standard)
    assert plain.worst_case(estimate(), "flex") == pytest.approx(standard / 2)  # flex is half price
    assert plain.worst_case(estimate(), "priority") == pytest.approx(standard * 2)
    assert plain.worst_case(estimate(), "auto") == pytest.approx(standard)
    assert plain.worst_case(estimate(), "some-new-tier") == pytest.approx(standard)  # unknown: as standard
    padded = budget(input_margin=1.25)  # the prompt estimate may be low until the estimator has learnt
    assert padded.worst_case(estimate(), "default") == pytest.approx((1250 * 1.0 + 500 * 4.0) / 1_000_000)


def test_worst_case_of_another_unpriced_model_fails_at_first_use():
    with pytest.raises(BudgetError, match=UNKNOWN):
        budget().worst_case(estimate(), "flex", model=UNKNOWN)


def test_actual_cost_is_priced_by_served_model_and_tier():
    spending = budget()
    usage = Usage(input=1000, cached=400, output=100)
    standard = (600 * 1.0 + 400 * 0.1 + 100 * 4.0) / 1_000_000
    assert spending.actual_cost("m-2026-01-01", "flex", usage) == pytest.approx(standard / 2)
    assert spending.actual_cost(None, "default", usage) == pytest.approx(standard)  # None: the run's model
    assert spending.actual_cost(UNKNOWN, "flex", usage) is None  # unpriced: unknown, never guessed


def test_tier_multiplier_defaults_to_standard():
    assert tier_multiplier("flex") == 0.5
    assert tier_multiplier(None) == 1.0
    assert tier_multiplier("unheard-of") == 1.0


# -- reserving and settling -------------------------------------------------------------------------


def test_reservations_count_against_the_cap_until_settled():
    spending = budget(cap=1.0)
    first = spending.try_reserve(0.6)
    assert isinstance(first, BudgetReservation)
    assert spending.reserved == pytest.approx(0.6)
    assert spending.remaining == pytest.approx(0.4)
    assert spending.try_reserve(0.5) is None  # would pass the cap beside the one in flight
    assert spending.refused == 0 and not spending.exhausted  # not for good: it fits once the first is settled
    spending.settle(first, 0.1)  # the answer cost much less than its worst case
    assert spending.spent == pytest.approx(0.1)
    assert spending.reserved == 0.0
    second = spending.try_reserve(0.5)
    assert second is not None
    assert spending.spent + spending.reserved == pytest.approx(0.6)


def test_a_request_that_can_never_fit_is_refused_for_good():
    spending = budget(cap=1.0, spent_before=0.7)  # spend of earlier sessions of the folder counts
    assert spending.try_reserve(0.4) is None
    assert spending.refused == 1
    assert spending.exhausted
    assert spending.try_reserve(0.3) is not None  # a smaller one still fits exactly


def test_exactly_the_rest_of_the_budget_fits():
    spending = budget(cap=0.3)
    reservations = [spending.try_reserve(0.1) for _ in range(3)]  # 0.1 * 3 is 0.30000000000000004
    assert all(r is not None for r in reservations)
    assert spending.try_reserve(1e-6) is None


def test_settle_is_idempotent_and_leaves_no_float_dust():
    spending = budget(cap=10.0)
    held = [spending.try_reserve(0.1) for _ in range(10)]
    for reservation in held:
        assert reservation is not None
        spending.settle(reservation, 0.07)
        spending.settle(reservation, 5.0)  # a second call (a finally after an except) changes nothing
    assert spending.reserved == 0.0
    assert spending.in_flight == 0
    assert spending.spent == pytest.approx(0.7)


def test_unknown_actual_cost_counts_the_worst_case():
    spending = budget()
    reservation = spending.try_reserve(0.25)
    assert reservation is not None
    spending.settle(reservation, None)  # e.g. an unpriced dated snapshot answered, or a timeout
    assert spending.spent == pytest.approx(0.25)
    assert spending.unknown_costs == 1


def test_an_answer_dearer_than_its_worst_case_is_counted_as_spent_and_as_an_overrun():
    spending = budget()
    reservation = spending.try_reserve(0.1)
    assert reservation is not None
    spending.settle(reservation, 0.2)  # served on a dearer tier than asked
    assert spending.spent == pytest.approx(0.2)
    assert spending.overruns == 1


def test_a_request_that_was_not_billed_is_settled_at_zero():
    spending = budget()
    reservation = spending.try_reserve(0.5)
    assert reservation is not None
    spending.settle(reservation, 0.0)  # 429: refused by the server, not billed
    assert spending.spent == 0.0 and spending.reserved == 0.0


@pytest.mark.parametrize("worst", [float("nan"), float("inf"), "0.1", None])
def test_a_worst_case_that_is_not_a_number_is_a_bug(worst):
    with pytest.raises(ValueError):
        budget().try_reserve(worst)


def test_spend_plus_reservations_never_pass_the_cap():
    """Many requests in flight, answers in any order at any cost up to their worst case."""
    rng = random.Random(5)
    cap = 2.0
    spending = budget(cap=cap, spent_before=0.3)
    in_flight: list[BudgetReservation] = []
    for _ in range(5000):
        if in_flight and rng.random() < 0.5:
            reservation = in_flight.pop(rng.randrange(len(in_flight)))
            spending.settle(reservation, rng.uniform(0, reservation.amount))
        else:
            reservation = spending.try_reserve(rng.uniform(0.001, 0.05))
            if reservation is not None:
                in_flight.append(reservation)
        assert spending.spent + spending.reserved <= cap * (1 + 1e-9)
    assert spending.spent > cap * 0.9  # and the budget gets used
    assert spending.exhausted


def test_as_dict_for_the_summary():
    spending = budget(cap=1.0, spent_before=0.25)
    reservation = spending.try_reserve(0.5)
    assert reservation is not None
    spending.settle(reservation, 0.125)
    spending.try_reserve(0.7)  # never fits
    assert spending.as_dict() == {
        "max_cost_usd": 1.0,
        "spent": 0.375,
        "spent_before": 0.25,
        "spent_this_run": 0.125,
        "reserved": 0.0,
        "refused": 1,
        "exhausted": True,
        "unknown_costs": 0,
        "overruns": 0,
    }


# -- waiting for room ---------------------------------------------------------------------------------


async def test_reserve_waits_for_answers_in_flight_then_goes():
    spending = budget(cap=1.0)
    first = await spending.reserve(0.8)
    assert first is not None
    waiting = asyncio.create_task(spending.reserve(0.5))
    await asyncio.sleep(0)
    assert not waiting.done()  # it fits only once the answer in flight turns out cheaper
    spending.settle(first, 0.2)
    second = await asyncio.wait_for(waiting, 1)
    assert second is not None and second.amount == 0.5
    assert spending.refused == 0


async def test_reserve_refuses_once_it_can_never_fit():
    spending = budget(cap=1.0)
    first = await spending.reserve(0.8)
    assert first is not None
    waiting = asyncio.create_task(spending.reserve(0.5))
    await asyncio.sleep(0)
    spending.settle(first, 0.7)  # the answer was dear: 0.3 left, 0.5 will never fit
    assert await asyncio.wait_for(waiting, 1) is None
    assert spending.refused == 1 and spending.exhausted


async def test_reserve_refuses_at_once_what_cannot_fit_even_with_nothing_in_flight():
    spending = budget(cap=0.1)
    assert await spending.reserve(0.2) is None
    assert spending.refused == 1


async def test_waiters_are_served_in_arrival_order():
    spending = budget(cap=1.0)
    first = await spending.reserve(0.9)
    assert first is not None
    served: list[str] = []

    async def take(name: str, amount: float) -> None:
        reservation = await spending.reserve(amount)
        assert reservation is not None
        served.append(name)

    big = asyncio.create_task(take("big", 0.6))
    await asyncio.sleep(0)
    small = asyncio.create_task(take("small", 0.05))  # would fit beside the first, but comes later
    await asyncio.sleep(0)
    assert served == []
    assert spending.try_reserve(0.01) is None  # nobody jumps the queue
    spending.settle(first, 0.3)
    await asyncio.wait_for(asyncio.gather(big, small), 1)
    assert served == ["big", "small"]


async def test_a_cancelled_waiter_takes_nothing_and_lets_the_next_one_go():
    spending = budget(cap=1.0)
    first = await spending.reserve(0.9)
    assert first is not None
    cancelled = asyncio.create_task(spending.reserve(0.5))
    await asyncio.sleep(0)
    following = asyncio.create_task(spending.reserve(0.4))
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    spending.settle(first, 0.5)
    reservation = await asyncio.wait_for(following, 1)
    assert reservation is not None
    assert spending.reserved == pytest.approx(0.4)


async def test_a_waiter_cancelled_as_it_is_served_gives_the_money_back():
    spending = budget(cap=1.0)
    first = await spending.reserve(0.9)
    assert first is not None
    waiting = asyncio.create_task(spending.reserve(0.5))
    await asyncio.sleep(0)
    spending.settle(first, 0.1)  # hands 0.5 to the waiter...
    waiting.cancel()  # ...which is cancelled before it could run again
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert spending.reserved == 0.0
    assert spending.in_flight == 0
    assert spending.spent == pytest.approx(0.1)
