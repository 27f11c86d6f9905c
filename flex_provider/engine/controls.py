"""The run's controls around every request: the rate pacer, the budget and the deadline.

The building blocks each do one job (:mod:`~flex_provider.engine.ratelimit`,
:mod:`~flex_provider.engine.budget`, :mod:`~flex_provider.engine.deadline`,
:mod:`~flex_provider.engine.estimate`); this module is the one place that says when the runner calls
them, so that the runner's retry loop reads as "admit, send, account" and every outcome of a
request releases exactly what it held:

* per item (:meth:`RunControls.begin`/:meth:`RunControls.end`): its tokens are estimated once; the
  deadline planner picks its tier;
* per request (:meth:`RunControls.admit`, then one of :meth:`answered`, :meth:`refused`,
  :meth:`invalid_answer`, :meth:`no_answer`, and always :meth:`release` in a ``finally``): the budget
  reserves its worst case first (it may wait for answers in flight, or refuse: :class:`OverBudget`),
  then the pacer admits it by the account's request and token buckets.

**The pacer and the adaptive limiter.** :class:`~flex_provider.engine.concurrency.AdaptiveLimiter`
keeps its job of bounding the requests in flight (``max_concurrency``). Rate limits are the pacer's:
once it knows a limit (from the answers' ``x-ratelimit-*`` headers or a user cap), a 429
``rate_limit_exceeded`` drains and pauses the pacer's bucket of that kind, and the limiter neither
halves the concurrency nor pauses the run. Halving would fight the pacer: the bucket ran dry, not the
concurrency, and on slow flex answers throughput is concurrency over latency, so a halved limit
halves the run while the bucket refills at the same rate anyway. Only against a server that
announces no limits (the pacer is blind) does the limiter's AIMD stay the way to back off.

**Money and tokens follow what the server did.** A request refused with a 429 rate_limit_exceeded
was not admitted: its tokens are refunded and it cost nothing. Any other error answer was admitted
(it keeps its tokens) and is not billed. An answer is billed at the price of the model and tier it
reports; an answer we could not read (malformed, or timed out: it may have been answered) counts its
worst case as spent, since the cap must hold whatever the server did.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import openai

from flex_provider.engine.attempt import ItemAttempt
from flex_provider.engine.budget import Budget, BudgetReservation
from flex_provider.engine.calls import Created, Reply
from flex_provider.engine.config import RequestSpec, RunOptions
from flex_provider.engine.deadline import DeadlinePlanner
from flex_provider.engine.estimate import TokenEstimate, TokenEstimator
from flex_provider.engine.logs import RunLog
from flex_provider.engine.pricing import PriceTable
from flex_provider.engine.progress import RunCounters
from flex_provider.engine.ratelimit import RateLimits, RatePacer, Reservation
from flex_provider.engine.retry import server_wait_hint
from flex_provider.engine.usage import Usage

DEADLINE = "deadline"


@dataclass(slots=True, eq=False)
class Ticket:
    """What one request holds while it is out."""

    paced: Reservation
    held: BudgetReservation | None
    sent: bool = False  # it left (it may have been answered and billed even if we never hear of it)


def _limits_of(exc: BaseException) -> RateLimits:
    if isinstance(exc, openai.APIStatusError):
        return RateLimits.from_headers(exc.response.headers)
    limits = getattr(exc, "limits", None)
    return limits if isinstance(limits, RateLimits) else RateLimits()


def _input_tokens(usage: Usage | None) -> int | None:
    return usage.input if usage is not None and usage.input > 0 else None


class RunControls:
    """Budget, pacing and deadline of one engine session (see the module docstring).

    ``request_options``: the options as sent (``CallBuilder.request_options``: an output bound the
    engine adds for the budget included), so token estimates and worst cases use the true bound.
    Everything runs on the event loop's thread; every call is O(1)."""

    def __init__(
        self,
        spec: RequestSpec,
        options: RunOptions,
        prices: PriceTable,
        counters: RunCounters,
        *,
        request_options: Mapping[str, Any] | None = None,
        logger: RunLog | None = None,
    ) -> None:
        self.spec = spec
        self.options = options
        self.counters = counters
        self.log = logger or logging.getLogger("flex_provider.engine")
        self.estimator = TokenEstimator.for_spec(spec, request_options=request_options)
        self.pacer = RatePacer(
            max_requests_per_minute=options.max_requests_per_minute,
            max_tokens_per_minute=options.max_tokens_per_minute,
            window_s=options.rate_limit_window_s,
            max_pause_s=options.retry.max_retry_after_s,
        )
        # Built now, so that a model nobody prices fails the run before anything is sent.
        self.budget = (
            Budget(options.max_cost_usd, prices, model=spec.model) if options.max_cost_usd is not None else None
        )
        self.deadline: datetime | None = options.deadline
        self.planner: DeadlinePlanner | None = None
        self._count_items = False  # the number of items is unknown: the planner learns them as they are fed

    # -- the session ---------------------------------------------------------------------------
    def start(self, *, total: int | None, spent_before: float) -> None:
        """The session starts working: earlier sessions' spending counts against the cap, and the
        deadline planner learns how many items there are (``total``: all of the input; items found
        done on storage are taken off as the feeder meets them)."""
        if self.budget is not None:
            self.budget.count_earlier(spent_before)
        if self.deadline is None:
            return
        self.planner = DeadlinePlanner.from_wall_clock(
            self.deadline, concurrency=self.options.max_concurrency, items=total or 0
        )
        self._count_items = total is None
        left = (self.deadline - datetime.now(UTC)).total_seconds()
        if left <= 0:
            self.log.warning(
                "flex deadline %s passed %.0f s before the run started: every item goes to the faster tier "
                "and the run is reported late",
                self.deadline.isoformat(),
                -left,
            )

    def queued(self) -> None:
        """The feeder handed one item to the workers."""
        if self.planner is not None and self._count_items:
            self.planner.expect(1)

    def not_sent(self) -> None:
        """The feeder dropped one item of the input (done on storage, or a duplicate)."""
        if self.planner is not None and not self._count_items:
            self.planner.skip(1)

    # -- one item --------------------------------------------------------------------------------
    def begin(self, attempt: ItemAttempt) -> None:
        """Before the item's first request: estimate its tokens; let the planner pick its tier."""
        attempt.estimate = self.estimator.estimate(attempt.item.prompt)
        if self.planner is None:
            return
        decision = attempt.decision = self.planner.decide()
        if decision.fallback and attempt.requested_tier != self.options.fallback_tier:
            attempt.fall_back(self.options.fallback_tier, DEADLINE)
            self.counters.fell_back(DEADLINE)

    def fell_back(self, attempt: ItemAttempt) -> None:
        """The item moved to the fallback tier for another reason (flex unavailable)."""
        if self.planner is not None and attempt.decision is not None:
            self.planner.fell_back(attempt.decision)

    def end(self, attempt: ItemAttempt, reply: Reply | None, failure: BaseException | None = None) -> None:
        """The item is done (``reply`` None: it failed, with ``failure``, or was skipped).
        Background mode: the budget held since its response was created is settled now, at what the
        answer cost (a response that ended incomplete was billed too: its failure says for what)."""
        if self.planner is not None and attempt.decision is not None:
            self.planner.done(attempt.decision, ok=reply is not None)
        budget = self.budget
        if budget is None or self.options.submit_mode != "background":
            return  # inline: every request settled what it held when its answer came
        held, attempt.held = attempt.held, None
        billed = getattr(failure, "usage", None)
        if reply is not None:
            cost: float | None = self._cost(reply)
        elif isinstance(billed, Usage):
            cost = budget.actual_cost(getattr(failure, "model", None), getattr(failure, "service_tier", None), billed)
        else:
            cost = None  # no answer read (failed, cancelled): its worst case counts
        if held is not None:
            budget.settle(held, cost)
        elif cost is not None:
            # An answer to a response an earlier session created (re-attached): its money was
            # committed before this session started, so it is counted, not reserved.
            budget.charge(cost, self._worst_case(attempt))

    def replaced(self, attempt: ItemAttempt) -> None:
        """Background mode: the item's response is being created anew (the previous one failed or
        vanished). What the previous one held is settled at its worst case: it may have been billed."""
        if self.budget is not None and attempt.held is not None:
            held, attempt.held = attempt.held, None
            self.budget.settle(held, None)

    # -- one request -----------------------------------------------------------------------------
    async def admit(self, attempt: ItemAttempt) -> Ticket:
        """Hold the request's worst case in the budget (may wait; raises OverBudget when it can
        never fit), then wait for the pacer's admission."""
        estimate = self._estimate(attempt)
        held = None
        if self.budget is not None:
            worst = self._worst_case(attempt)
            held = await self.budget.reserve(worst)
            if held is None:
                raise self.budget.refusal(worst)
        try:
            paced = await self.pacer.acquire(estimate.total)
        except BaseException:
            if held is not None and self.budget is not None:
                self.budget.settle(held, 0.0)  # never sent
            raise
        if self.planner is not None and attempt.decision is not None:
            self.planner.sent(attempt.decision)  # the tier's latency starts with its first request
        return Ticket(paced, held)

    def answered(self, ticket: Ticket, attempt: ItemAttempt, result: Reply | Created) -> None:
        """A 200: the tokens the server charged, the money it billed; background mode keeps the
        budget held until the response is answered."""
        estimate = self._estimate(attempt)
        if isinstance(result, Created):
            self.pacer.settle(ticket.paced, None, result.limits)  # charged on admission; usage comes later
            attempt.held, ticket.held = ticket.held, None
            return
        measured = _input_tokens(result.usage)
        self.pacer.settle(ticket.paced, estimate.charged(measured), result.limits)
        self.estimator.observe(estimate, measured)
        if ticket.held is not None and self.budget is not None:
            self.budget.settle(ticket.held, self._cost(result))

    def invalid_answer(self, ticket: Ticket, attempt: ItemAttempt, exc: BaseException) -> None:
        """An answer that fails the item (output not matching the schema, a refusal) was billed all
        the same: the exception carries its usage, model and tier. A malformed body may have been."""
        usage = getattr(exc, "usage", None)
        measured = _input_tokens(usage) if isinstance(usage, Usage) else None
        estimate = self._estimate(attempt)
        self.pacer.settle(ticket.paced, estimate.charged(measured) if measured else None, _limits_of(exc))
        if ticket.held is not None and self.budget is not None:
            cost = (
                self.budget.actual_cost(getattr(exc, "model", None), getattr(exc, "service_tier", None), usage)
                if isinstance(usage, Usage)
                else None
            )
            self.budget.settle(ticket.held, cost)

    def refused(self, ticket: Ticket, exc: openai.APIStatusError, *, rate_limited: bool, pause: bool) -> bool:
        """An error answer (not billed). A 429 rate_limit_exceeded was not admitted: its tokens come
        back, and with ``pause`` the pacer drains and pauses that bucket for the server's wait.
        Returns whether the pacer knows a limit (else the adaptive limiter must back off instead)."""
        limits = _limits_of(exc)
        if rate_limited:
            # A wait longer than an item may wait is a daily limit (RPD/TPD): its headers describe the
            # day's bucket, not the per-minute one the pacer keeps. Learnt as a per-window bucket
            # they stalled every worker for seconds at each such 429 (the item ends at once instead).
            self.pacer.refund(ticket.paced, limits if pause else None)
            if pause:
                kind = getattr(exc, "type", None)
                self.pacer.on_rate_limited(kind if isinstance(kind, str) else None, server_wait_hint(exc))
        else:
            self.pacer.settle(ticket.paced, None, limits)
        if ticket.held is not None and self.budget is not None:
            self.budget.settle(ticket.held, 0.0)
        return self.paces

    def no_answer(self, ticket: Ticket) -> None:
        """A timeout or a broken connection: the request may have been admitted and billed."""
        self.pacer.settle(ticket.paced)
        if ticket.held is not None and self.budget is not None:
            self.budget.settle(ticket.held, None)

    def release(self, ticket: Ticket) -> None:
        """The safety net in a ``finally`` (cancelled, or a path above did not settle): a request
        that never left is given back whole; one that left keeps its estimate and worst case."""
        if ticket.sent:
            self.pacer.settle(ticket.paced)
        else:
            self.pacer.refund(ticket.paced)
        if ticket.held is not None and self.budget is not None:
            self.budget.settle(ticket.held, None if ticket.sent else 0.0)

    # -- reading ---------------------------------------------------------------------------------
    @property
    def paces(self) -> bool:
        """Whether the pacer knows a request or token limit (announced by the server, or a user cap)."""
        return self.pacer.limit("requests") is not None or self.pacer.limit("tokens") is not None

    def budget_summary(self) -> dict[str, Any] | None:
        return self.budget.as_dict() if self.budget is not None else None

    def deadline_summary(self) -> dict[str, Any] | None:
        """Where the run stands against its deadline (None without one)."""
        if self.deadline is None:
            return None
        now = datetime.now(UTC)
        status = self.planner.status().as_dict() if self.planner is not None else {}
        missed = bool(status.get("missed")) or now > self.deadline
        return {
            "at": self.deadline.isoformat(),
            "met": not missed,
            "finished_late": status.get("finished_late", 0),
            "predicted_miss": bool(status.get("predicted_miss")),
            "sent_flex": status.get("sent_flex", 0),
            "sent_fallback": status.get("sent_fallback", 0),
            "flex_latency_s": status.get("flex_latency_s"),
            "fallback_latency_s": status.get("fallback_latency_s"),
        }

    def rate_limit_summary(self) -> dict[str, Any]:
        return self.pacer.stats()

    def live(self) -> dict[str, Any]:
        """What the progress file carries about the controls (small, JSON-native)."""
        out: dict[str, Any] = {}
        if self.budget is not None:
            out["budget"] = {
                "max_cost_usd": self.budget.max_cost_usd,
                "spent": round(self.budget.spent, 6),
                "reserved": round(self.budget.reserved, 6),
                "exhausted": self.budget.exhausted,
            }
        if self.deadline is not None:
            status = self.planner.status() if self.planner is not None else None
            out["deadline"] = {
                "at": self.deadline.isoformat(),
                "predicted_miss": bool(status and status.predicted_miss),
                "missed": bool(status and status.missed) or datetime.now(UTC) > self.deadline,
                "needed_on_fallback": status.needed_on_fallback if status else 0,
            }
        return out

    # -- inside ----------------------------------------------------------------------------------
    def _estimate(self, attempt: ItemAttempt) -> TokenEstimate:
        if attempt.estimate is None:
            attempt.estimate = self.estimator.estimate(attempt.item.prompt)
        return attempt.estimate

    def _worst_case(self, attempt: ItemAttempt) -> float:
        assert self.budget is not None
        return self.budget.worst_case(self._estimate(attempt), attempt.requested_tier)

    def _cost(self, reply: Reply) -> float | None:
        assert self.budget is not None
        return self.budget.actual_cost(reply.model, reply.service_tier, reply.usage)
