"""A spending cap: no request leaves unless its worst case still fits under ``max_cost_usd``.

A request's cost is known only once it is answered, so the cap works with *reservations*: before a
request is sent, its worst-case cost (the estimated prompt, with a margin, at the input price; the
output bound at the output price; both at the price of the tier it is sent on, flex being half of
standard) is reserved; when the answer arrives, the reservation is released and the actual cost
counted instead. A request is sent only if what was spent (in earlier sessions of the same folder
too) plus what is reserved plus its worst case stays under the cap, so the cap holds even with
hundreds of requests in flight.

Worst cases are pessimistic (an answer rarely uses its whole output bound), so a request that does
not fit *beside* the ones in flight often fits once they are answered: :meth:`Budget.reserve` waits
for that, in arrival order, and refuses only when the request cannot fit even with nothing in flight
(then the budget is *exhausted* for requests of that size). Refusing at once instead would stop a
run with 200 requests in flight at a fraction of its budget.

A budget cannot be enforced without a price. The run's model must be priced when the budget is
built (:class:`BudgetError` at construction, so the operator fails before sending anything); a
request of another model that turns out unpriced fails at first use. A served model the table does
not know (a new dated snapshot) has an unknown actual cost: its reservation is kept as spent rather
than guessed lower.
"""

from __future__ import annotations

import asyncio
import collections
import math
from dataclasses import dataclass
from typing import Any

from flex_provider.engine.errors import FlexInputError
from flex_provider.engine.estimate import TokenEstimate
from flex_provider.engine.pricing import PER_MILLION, TIER_MULTIPLIER, PriceTable
from flex_provider.engine.usage import Usage

# Relative slack on float sums of dollars: a request worth exactly the rest of the budget fits.
_SLACK = 1e-9


class BudgetError(FlexInputError):
    """The budget cannot be enforced (no price for the model) or was set to something unusable."""


class OverBudget(Exception):
    """A request was not sent: its worst case cannot fit under the cap even with nothing in flight.

    Not an API error: the item ends ``skipped`` (retryable), so a later run with a higher cap sends it."""

    def __init__(self, worst_case: float, spent: float, max_cost_usd: float) -> None:
        super().__init__(
            f"not sent: its worst-case cost ${worst_case:,.6f} does not fit the budget (spent ${spent:,.6f} of "
            f"max_cost_usd=${max_cost_usd:,.6f}); a run with a higher max_cost_usd sends it"
        )
        self.worst_case = worst_case


@dataclass(slots=True, eq=False)
class BudgetReservation:
    """Money held for one request in flight; released by :meth:`Budget.settle`."""

    amount: float
    settled: bool = False


def tier_multiplier(tier: str | None) -> float:
    """What the tier costs relative to standard (flex: half); an unknown tier counts as standard."""
    return TIER_MULTIPLIER.get(tier or "default", 1.0)


class Budget:
    """Spending cap of one run; see the module docstring. All methods run on the event loop's thread."""

    def __init__(
        self,
        max_cost_usd: float,
        prices: PriceTable,
        *,
        model: str,
        spent_before: float = 0.0,
        input_margin: float = 1.25,
    ) -> None:
        for name, value in (("max_cost_usd", max_cost_usd), ("spent_before", spent_before)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise BudgetError(f"{name}: expected a non-negative number of US dollars, got {value!r}")
        if not (math.isfinite(input_margin) and input_margin >= 1.0):
            raise BudgetError(f"input_margin: expected a factor >= 1, got {input_margin!r}")
        self.max_cost_usd = float(max_cost_usd)
        self.prices = prices
        self.model = model
        self.input_margin = input_margin  # the prompt estimate may be low until the estimator has learnt
        self.spent_before = float(spent_before)
        self.spent = float(spent_before)  # this session's actual costs plus earlier sessions'
        self.reserved = 0.0
        self.in_flight = 0
        self.refused = 0  # requests refused for good (the summary counts them as skipped items)
        self.unknown_costs = 0  # answers whose cost nobody could price: counted at their worst case
        self.overruns = 0  # answers that cost more than their worst case (a tier served dearer than asked)
        self.exhausted = False
        self._waiters: collections.deque[tuple[float, asyncio.Future[BudgetReservation | None]]] = collections.deque()
        self._require_price(model)

    # -- pricing -------------------------------------------------------------------------------
    def _require_price(self, model: str) -> None:
        if self.prices.lookup(model) is None:
            raise BudgetError(
                f"max_cost_usd is set but no price is known for model {model!r}: a budget cannot be enforced "
                f"without one. Pass prices={{{model!r}: {{'input': ..., 'cached_input': ..., 'output': ...}}}} "
                "(USD per 1M tokens, standard tier)."
            )

    def worst_case(self, estimate: TokenEstimate, tier: str, model: str | None = None) -> float:
        """The most the request can cost when sent on ``tier``: the prompt estimate (times
        ``input_margin``, no cache discount) at the input price plus the output bound at the output
        price, at the tier's multiplier. Raises BudgetError for a model without a price."""
        model = model or self.model
        price = self.prices.lookup(model)
        if price is None:
            self._require_price(model)
            raise AssertionError("unreachable")  # _require_price raised
        standard = (
            estimate.prompt_tokens * self.input_margin * price.input + estimate.max_output_tokens * price.output
        ) / PER_MILLION
        return standard * tier_multiplier(tier)

    def actual_cost(self, model: str | None, tier: str | None, usage: Usage) -> float | None:
        """What an answer cost, priced by the model and tier the server reports; None if unpriced."""
        standard = self.prices.standard_cost(model or self.model, usage)
        return None if standard is None else standard * tier_multiplier(tier)

    # -- reserving -----------------------------------------------------------------------------
    @property
    def remaining(self) -> float:
        """What is left for new requests beside the ones in flight."""
        return max(0.0, self.max_cost_usd - self.spent - self.reserved)

    def _fits_now(self, worst_case: float) -> bool:
        return self.spent + self.reserved + worst_case <= self.max_cost_usd * (1 + _SLACK)

    def could_fit(self, worst_case: float) -> bool:
        """Whether the request would fit with nothing in flight: False means it never will."""
        return self.spent + worst_case <= self.max_cost_usd * (1 + _SLACK)

    def try_reserve(self, worst_case: float) -> BudgetReservation | None:
        """Reserve ``worst_case`` dollars now, or None: it does not fit beside the requests in flight
        (or never will: see :meth:`could_fit`; that refusal is counted and marks the budget exhausted).
        Never jumps the queue of :meth:`reserve` waiters."""
        worst_case = self._checked(worst_case)
        if not self.could_fit(worst_case):
            self._refuse()
            return None
        if self._waiters or not self._fits_now(worst_case):
            return None
        return self._take(worst_case)

    async def reserve(self, worst_case: float) -> BudgetReservation | None:
        """Reserve ``worst_case`` dollars, waiting (first come, first served) while it could fit once
        requests in flight are settled; None when it cannot fit even then (refused, counted).
        Cancellation-safe: a reservation handed over as the waiter is cancelled is released."""
        reservation = self.try_reserve(worst_case)
        if reservation is not None or not self.could_fit(worst_case):
            return reservation
        future: asyncio.Future[BudgetReservation | None] = asyncio.get_running_loop().create_future()
        self._waiters.append((worst_case, future))
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled() and (taken := future.result()) is not None:
                self.settle(taken, 0.0)  # handed over in the very moment we were cancelled: not sent
            else:
                self._serve()
            raise

    def settle(self, reservation: BudgetReservation, actual_cost: float | None) -> None:
        """Release the reservation; count ``actual_cost`` as spent (0.0 for a request that was not
        billed: refused by the server, never sent). None means the cost is unknown (an unpriced
        served model, a timeout that may have been answered): the worst case is counted. Calling it
        again for the same reservation does nothing, so it can sit in a ``finally``."""
        if reservation.settled:
            return
        reservation.settled = True
        self.in_flight -= 1
        self.reserved = self.reserved - reservation.amount if self.in_flight else 0.0  # no float dust
        if actual_cost is None or not math.isfinite(actual_cost) or actual_cost < 0:
            self.unknown_costs += 1
            actual_cost = reservation.amount
        elif actual_cost > reservation.amount * (1 + _SLACK):
            self.overruns += 1
        self.spent += actual_cost
        self._serve()

    def count_earlier(self, spent: float) -> None:
        """What earlier sessions in the same folder spent (read when this session starts): it counts
        against the cap like this session's spending."""
        if isinstance(spent, bool) or not isinstance(spent, (int, float)) or not math.isfinite(spent) or spent < 0:
            return
        self.spent_before += float(spent)
        self.spent += float(spent)
        self._serve()

    def charge(self, actual_cost: float | None, worst_case: float = 0.0) -> None:
        """Count a cost nobody reserved for: a background response an earlier session created and
        this one picked up (its money was committed before this session started). Unknown: the
        ``worst_case``."""
        if actual_cost is None or not math.isfinite(actual_cost) or actual_cost < 0:
            self.unknown_costs += 1
            actual_cost = worst_case
        self.spent += actual_cost

    def refusal(self, worst_case: float) -> OverBudget:
        """The error for a request :meth:`reserve` refused."""
        return OverBudget(worst_case, self.spent, self.max_cost_usd)

    # -- reading it ----------------------------------------------------------------------------
    def as_dict(self) -> dict[str, Any]:
        """JSON-safe figures for the run summary."""
        return {
            "max_cost_usd": self.max_cost_usd,
            "spent": round(self.spent, 6),
            "spent_before": round(self.spent_before, 6),
            "spent_this_run": round(self.spent - self.spent_before, 6),
            "reserved": round(self.reserved, 6),
            "refused": self.refused,
            "exhausted": self.exhausted,
            "unknown_costs": self.unknown_costs,
            "overruns": self.overruns,
        }

    # -- inside --------------------------------------------------------------------------------
    @staticmethod
    def _checked(worst_case: float) -> float:
        if isinstance(worst_case, bool) or not isinstance(worst_case, (int, float)) or not math.isfinite(worst_case):
            raise ValueError(f"worst_case: expected a finite number of US dollars, got {worst_case!r}")
        return max(0.0, float(worst_case))

    def _take(self, worst_case: float) -> BudgetReservation:
        self.reserved += worst_case
        self.in_flight += 1
        return BudgetReservation(worst_case)

    def _refuse(self) -> None:
        self.refused += 1
        self.exhausted = True

    def _serve(self) -> None:
        """Hand freed money to the waiters in arrival order; refuse those that can never fit."""
        while self._waiters:
            worst_case, future = self._waiters[0]
            if future.done():  # cancelled while waiting
                self._waiters.popleft()
                continue
            if not self.could_fit(worst_case):
                self._waiters.popleft()
                self._refuse()
                future.set_result(None)
                continue
            if not self._fits_now(worst_case):
                return
            self._waiters.popleft()
            future.set_result(self._take(worst_case))
