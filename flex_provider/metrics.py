"""A flex run's counters as Airflow metrics (StatsD, Datadog or OpenTelemetry, as ``[metrics]`` says).

:class:`RunMetrics` turns the engine's live :class:`~flex_provider.engine.progress.RunCounters` into
counter *increments*: each call sends what grew since the previous call, so :func:`flex_provider.job.run_job`
samples it every ``progress_interval`` seconds and once at the end, in the triggerer and in the worker
alike, and no count is ever sent twice. Names (Airflow adds its ``statsd_prefix``/``otel_prefix``,
``airflow.`` by default), every one a counter tagged ``dag_id``, ``task_id``, ``model``:

==============================  ===============================================================
``flex.requests``               HTTP requests sent (every attempt, every tier)
``flex.unavailable``            429 ``resource_unavailable`` answers (flex had no capacity)
``flex.rate_limited``           429 ``rate_limit_exceeded`` answers
``flex.transient_errors``       408/409/5xx, connection errors, timeouts, malformed answers
``flex.fallbacks``              items moved to ``fallback_tier``, for any reason
``flex.fallbacks.unavailable``  of which because flex had no capacity (429 ``resource_unavailable``)
``flex.fallbacks.deadline``     of which because the deadline needed them on the faster tier
``flex.items.succeeded``        items finished with an answer
``flex.items.failed``           items finished as failed
``flex.items.skipped``          items not sent: over the budget (``max_cost_usd``)
``flex.tokens.input``           input tokens billed (cached ones included)
``flex.tokens.cached``          of which cached
``flex.tokens.output``          output tokens billed (reasoning ones included)
``flex.cost.actual_microusd``   cost at the served tier, in millionths of a dollar
``flex.cost.standard_microusd`` what the standard tier would have cost, same unit
==============================  ===============================================================

Fallbacks by reason are names of their own rather than a ``reason`` tag: plain StatsD has no tags,
and every metric here carries the same three.

Counts are per engine session: items a retried or restarted run finds already done on storage are
not counted again (they were counted when they were done).

Sending must never hurt the run: every error is swallowed (logged once), and sending happens in a
thread (the first send creates Airflow's Stats client, which resolves the StatsD host: a DNS lookup
must not block a shared event loop). No Airflow import at module level: the Stats module is looked
up on the first send.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flex_provider.engine.logs import RunLog
    from flex_provider.engine.progress import RunCounters

_log = logging.getLogger(__name__)

# name -> how to read its running total from the counters (an int that only grows)
COUNTERS: dict[str, Callable[[RunCounters], int]] = {
    "flex.requests": lambda c: c.requests,
    "flex.unavailable": lambda c: c.unavailable,
    "flex.rate_limited": lambda c: c.rate_limited,
    "flex.transient_errors": lambda c: c.transient_errors,
    "flex.fallbacks": lambda c: c.fallbacks,
    "flex.fallbacks.unavailable": lambda c: c.fallbacks_by_reason.get("unavailable", 0),
    "flex.fallbacks.deadline": lambda c: c.fallbacks_by_reason.get("deadline", 0),
    "flex.items.succeeded": lambda c: c.succeeded,
    "flex.items.failed": lambda c: c.failed,
    "flex.items.skipped": lambda c: c.budget_skipped,
    "flex.tokens.input": lambda c: c.usage.input,
    "flex.tokens.cached": lambda c: c.usage.cached,
    "flex.tokens.output": lambda c: c.usage.output,
    "flex.cost.actual_microusd": lambda c: round(c.cost.actual * 1_000_000),
    "flex.cost.standard_microusd": lambda c: round(c.cost.standard_equivalent * 1_000_000),
}
METRIC_NAMES: tuple[str, ...] = tuple(COUNTERS)
TAG_KEYS = ("dag_id", "task_id", "model")

# Airflow 3.3 ships two copies of its Stats singleton: airflow-core's (initialised by the triggerer,
# scheduler, dag processor...) and the task SDK's (initialised by the task runner in the worker).
# Whichever this process configured is the one to use; both read the same [metrics] settings.
_STATS_MODULES = (
    "airflow.sdk._shared.observability.metrics.stats",  # = airflow.sdk.observability.stats
    "airflow._shared.observability.metrics.stats",  # = airflow.observability.stats (airflow-core)
)


def resolve_stats() -> Any:
    """The Stats module this process initialised (an object with ``incr(stat, count, *, tags)``),
    else the task SDK's (which then sends nothing). Blocking on first use (imports): call it in a
    thread. Tests replace this function with one returning a fake."""
    found: list[Any] = []
    for name in _STATS_MODULES:
        try:
            found.append(importlib.import_module(name))
        except ImportError:  # a worker with the task SDK only, or another Airflow layout
            continue
    for module in found:
        if getattr(module, "_factory", None) is not None:  # set by stats.initialize(...)
            return module
    if found:
        return found[0]
    from airflow.sdk.observability.stats import Stats  # the public path, if the layout changed

    return Stats


def tags_for(template_context: Mapping[str, Any], model: str) -> dict[str, str]:
    """``dag_id``/``task_id`` from a job's template context (absent ones left out), and the model."""
    tags = {key: str(template_context[key]) for key in ("dag_id", "task_id") if template_context.get(key)}
    if model:
        tags["model"] = model
    return tags


class RunMetrics:
    """Sends the increments of a run's counters since the previous send.

    :meth:`take` (on the event loop: plain arithmetic on the counters) computes the increments and
    marks them as sent; :meth:`send` (in a thread) hands them to Stats. A failed send is not
    retried: a count may be lost, never counted twice."""

    def __init__(self, tags: Mapping[str, str], logger: RunLog | None = None) -> None:
        self.tags = dict(tags)
        self.logger = logger
        self._sent = dict.fromkeys(COUNTERS, 0)
        self._stats: Any = None
        self._warned = False

    def take(self, counters: RunCounters) -> dict[str, int]:
        """Increments since the previous call (only the names that grew), now counted as sent."""
        deltas: dict[str, int] = {}
        for name, read in COUNTERS.items():
            try:
                value = int(read(counters))
            except Exception:  # a counter this release does not know: leave it out
                continue
            if value > self._sent[name]:
                deltas[name] = value - self._sent[name]
                self._sent[name] = value
        return deltas

    def send(self, deltas: Mapping[str, int]) -> None:
        """Hand increments to Airflow's Stats; never raises. Blocking on first use: call in a thread."""
        if not deltas:
            return
        try:
            if self._stats is None:
                self._stats = resolve_stats()
            for name, count in deltas.items():
                self._stats.incr(name, count, tags=self.tags)
        except Exception as exc:
            if not self._warned:
                self._warned = True
                (self.logger or _log).warning(
                    "flex metrics: sending to Airflow's Stats failed (%s: %s); the run goes on",
                    type(exc).__name__,
                    exc,
                )

    def emit(self, counters: RunCounters) -> dict[str, int]:
        """:meth:`take` then :meth:`send`, in the caller's thread (for synchronous callers)."""
        deltas = self.take(counters)
        self.send(deltas)
        return deltas

    @contextlib.asynccontextmanager
    async def watching(self, counters: RunCounters, interval_s: float) -> AsyncIterator[None]:
        """Send increments every ``interval_s`` while the body runs, and the rest when it ends
        (also when it fails or is cancelled)."""
        sampler = asyncio.create_task(self._sample(counters, max(interval_s, 0.05)), name="flex-metrics")
        try:
            yield
        except Exception:
            sampler.cancel()
            await self._send_in_thread(self.take(counters))
            raise
        except BaseException:  # cancelled: do not wait; the last increments go out from a thread
            sampler.cancel()
            deltas = self.take(counters)
            if deltas:
                with contextlib.suppress(Exception):
                    asyncio.get_running_loop().run_in_executor(None, self.send, deltas)
            raise
        sampler.cancel()
        await self._send_in_thread(self.take(counters))

    async def _sample(self, counters: RunCounters, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            await self._send_in_thread(self.take(counters))

    async def _send_in_thread(self, deltas: dict[str, int]) -> None:
        if not deltas:
            return
        try:
            await asyncio.to_thread(self.send, deltas)
        except asyncio.CancelledError:
            raise
        except Exception:  # the executor is shutting down: the metrics are not worth failing for
            pass
