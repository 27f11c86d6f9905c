"""A flex job's whole life: what it is, how it travels, how it runs and how it is cancelled.

The operator builds a :class:`FlexJob` (validating input and staging large item lists first); the
trigger carries it as a versioned JSON payload (:meth:`FlexJob.to_payload`); :func:`run_job` runs it
with the engine, in the triggerer (``deferrable=True``) or in the worker (``deferrable=False``), and
returns a :class:`FlexEvent`; :func:`cancel_outstanding` cancels its background responses. Both
paths build their client with :func:`job_client`. No secret is ever part of a job: only the
``conn_id``; the key is read from the connection where the job runs.

**Payloads cross releases.** The triggerer rebuilds a trigger from its stored kwargs, so a job
serialised by one release of the provider may be run by the next (a deployment upgraded with runs
in flight). Payloads carry ``format``; loading accepts every earlier format, ignores keys it does
not know and fills missing ones with defaults. ``tests/fixtures/upgrade_v1`` is a frozen format-1
payload with a half-done output folder that the tests finish with the current code.

This module imports the engine and the openai SDK: the trigger loads it in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from flex_provider.engine.background import cancel_responses
from flex_provider.engine.config import RequestSpec, RunOptions, request_spec_from_dict, run_options_from_dict, to_dict
from flex_provider.engine.errors import FlexInputError, FlexRunAborted, redact
from flex_provider.engine.items import PromptBuilder, WorkItem, enumerate_jsonl, iter_work_items
from flex_provider.engine.logs import RunLog
from flex_provider.engine.runner import FlexEngine
from flex_provider.engine.store import ResultStore
from flex_provider.hooks.flex import ClientSettings, FlexHook
from flex_provider.metrics import RunMetrics, tags_for
from flex_provider.utils.storage import storage_path
from flex_provider.utils.switches import GC_FREEZE_ENV, switched_on

# 1: release 0.1 (request + prompt_template side by side); 2: spec holds the template;
# 3: ``shard`` ([k, n]: this job sends the items at input positions p with p % n == k)
JOB_FORMAT = 3
INLINE_ITEMS_MAX_BYTES = 32 * 1024  # larger item lists are staged to storage before deferring
STAGED_INPUT_NAME = "_input/items.jsonl"


def json_size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, default=str).encode("utf-8"))


@dataclass
class FlexJob:
    conn_id: str
    spec: RequestSpec
    options: RunOptions
    work_uri: str  # where results and checkpoints live (output_path, or the task's checkpoint folder)
    output_uri: str | None = None  # set when the user asked for output_path
    items: list[Any] | None = None  # small inline item lists
    input_uri: str | None = None  # JSON Lines (the user's input_path, or staged items)
    input_label: str = "items"  # how errors name the input ("items", "input_path", "input")
    template_context: dict[str, Any] = field(default_factory=dict)  # ds, params... for prompt_template
    total: int | None = None
    # [k, n]: one shard of n (see flex_provider.shards); None: every item. The whole input is still read
    # (ids, and the ``-2`` suffixes of repeated content, depend on every earlier item), 1 in n is sent.
    shard: tuple[int, int] | None = None
    # The whole input's item count (all shards'), known after validate_input; not carried by the payload.
    input_total: int | None = field(default=None, compare=False, repr=False)

    # -- travelling -------------------------------------------------------------------------
    def to_payload(self) -> dict[str, Any]:
        """JSON-native, for the trigger's kwargs (never a secret: the key stays in the connection)."""
        return {
            "format": JOB_FORMAT,
            "conn_id": self.conn_id,
            "spec": to_dict(self.spec),
            "options": to_dict(self.options),
            "work_uri": self.work_uri,
            "output_uri": self.output_uri,
            "items": self.items,
            "input_uri": self.input_uri,
            "input_label": self.input_label,
            "template_context": self.template_context,
            "total": self.total,
            "shard": list(self.shard) if self.shard is not None else None,
        }

    @classmethod
    def from_payload(cls, data: dict[str, Any]) -> FlexJob:
        """Any format up to this release's (and a newer one's known keys)."""
        if "spec" in data:
            spec = dict(data["spec"])
        else:  # format 1: the request and the prompt template travelled side by side
            spec = {**data.get("request", {}), "prompt_template": data.get("prompt_template")}
        return cls(
            conn_id=data.get("conn_id") or FlexHook.default_conn_name,
            spec=request_spec_from_dict(spec),
            options=run_options_from_dict(data.get("options") or {}),
            work_uri=data["work_uri"],
            output_uri=data.get("output_uri"),
            items=data.get("items"),
            input_uri=data.get("input_uri"),
            input_label=data.get("input_label") or "items",
            template_context=dict(data.get("template_context") or {}),
            total=data.get("total"),
            shard=shard_from(data.get("shard")),  # formats 1 and 2 have none: every item
        )

    # -- input --------------------------------------------------------------------------------
    def store(self, session: str | None = None) -> ResultStore:
        return ResultStore(storage_path(self.work_uri), session=session)

    def iter_items(self) -> Iterator[WorkItem]:
        """Items as the engine wants them, each with an id of its own (see ``engine.items``): all of
        them, or a shard's (input position p with p % n == k). Blocking (storage reads): the engine
        pulls in a thread. ``validate_input`` runs the very same iteration before deferral, so both
        see the same ids and the same errors."""
        if self.shard is None:
            yield from self._iter_all()
            return
        k, n = self.shard
        for position, item in enumerate(self._iter_all()):
            if position % n == k:
                yield item

    def _iter_all(self) -> Iterator[WorkItem]:
        builder = PromptBuilder(self.spec.prompt_template, self.template_context)
        if self.items is not None:
            yield from iter_work_items(enumerate(self.items), builder, self._label_list())
            return
        if self.input_uri is None:
            return
        label = self._label_lines()
        with storage_path(self.input_uri).open("rb") as handle:  # bytes: each line decoded on its own
            yield from iter_work_items(enumerate_jsonl(handle, label), builder, label)

    def _label_list(self) -> Callable[[int], str]:
        if self.input_label == "input":  # the operator's single ``input``
            return lambda _: "input"
        source = self.input_label
        return lambda index: f"{source}[{index}]"

    def _label_lines(self) -> Callable[[int], str]:
        if self.input_label == "items":  # items staged to storage: one line per item, no blank lines
            return lambda lineno: f"items[{lineno - 1}]"
        source = self.input_label
        return lambda lineno: f"{source} line {lineno}"

    def validate_input(self) -> int:
        """Read every item once before deferring: bad JSON, bad item types, unsendable text,
        duplicate ids and template errors fail the task now, with the line or index, not hours
        later in the triggerer. A shard validates the whole input too (an id repeated across shards is
        an error like any other). Returns the count of this job's items (a shard's share); the whole
        input's is left in ``input_total``."""
        seen = mine = 0
        k, n = self.shard or (0, 1)
        for _ in self._iter_all():
            mine += seen % n == k
            seen += 1
        self.input_total = seen
        return mine

    def stage_items(self) -> str | None:
        """Write a large inline item list to storage so the trigger carries a URI, not the items
        (trigger kwargs live in the metadata database). Returns where, or None when small enough."""
        if self.items is None or json_size(self.items) <= INLINE_ITEMS_MAX_BYTES:
            return None
        staged = storage_path(self.work_uri) / STAGED_INPUT_NAME
        staged.parent.mkdir(parents=True, exist_ok=True)
        with staged.open("w", encoding="utf-8") as handle:
            for raw in self.items:
                handle.write(json.dumps(raw, ensure_ascii=False, default=str) + "\n")
        self.items, self.input_uri = None, str(staged)
        return self.input_uri


def shard_from(value: Any) -> tuple[int, int] | None:
    """A payload's ``shard`` ([k, n]) checked: a job that sent the wrong items would be paid twice."""
    if value is None:
        return None
    if (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        and 0 <= value[0] < value[1]
    ):
        return int(value[0]), int(value[1])
    raise FlexInputError(f"shard: expected [k, n] with 0 <= k < n, got {value!r}")


@dataclass(frozen=True)
class FlexEvent:
    """What a run reports back to the task (the trigger event's payload): small and JSON-native,
    counts and a storage URI, never results or secrets (the triggerer logs it whole)."""

    status: Literal["success", "error"]
    work_uri: str
    kind: str | None = None  # error: "aborted" (run-wide cause), "input", "internal" (a bug of ours)
    message: str | None = None
    output_path: str | None = None
    total: int | None = None
    succeeded: int | None = None
    failed: int | None = None
    skipped: int | None = None  # not sent: over the budget (max_cost_usd)

    def to_payload(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def from_payload(cls, data: dict[str, Any]) -> FlexEvent:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        known.setdefault("status", "error")
        known.setdefault("work_uri", "")
        return cls(**known)


# -- clients ------------------------------------------------------------------------------------
def job_client(job: FlexJob, settings: ClientSettings) -> Any:
    """The client a job runs with: a connection per request in flight, plus headroom for polls and
    cancels. Blocking (SSL context, SDK resources): on a shared event loop call it in a thread."""
    return FlexHook.ready_client(
        settings, max_connections=job.options.max_concurrency + 16, timeout=float(job.spec.timeout)
    )


async def _client(job: FlexJob, settings: ClientSettings | None) -> tuple[Any, ClientSettings]:
    """The one way both paths get their client: the worker passes the settings it already read
    (before deferral, so a missing key fails at once); the triggerer reads the connection here."""
    if settings is None:
        settings = await FlexHook(conn_id=job.conn_id).aget_settings()
    client = await asyncio.to_thread(job_client, job, settings)  # keep a shared event loop free
    return client, settings


# -- the process's heap ---------------------------------------------------------------------------
_heap_frozen = False


def freeze_startup_heap(logger: RunLog | None = None) -> bool:
    """Once per process, before its first run: collect, then ``gc.freeze()`` what the process holds.

    Why: the engine allocates quickly (a few hundred objects per request, 200 requests in flight
    surviving young collections), so CPython runs a full collection every ~1,000 requests, and a
    full collection walks *every* tracked object: in an Airflow process that is Airflow, SQLAlchemy,
    FastAPI/Cadwyn (``dag.test``'s in-process API), pydantic and the SDK, 0.25-0.75 million
    objects: 0.2-1 s per pass on a busy 2-core machine, the event loop stopped and every request in
    flight waiting. Frozen objects (the imports, the application state: long-lived by nature) are
    skipped by all later collections; what the runs allocate afterwards is collected as usual.

    The cost: a one-off full collection here (so no garbage is frozen), and objects alive now that
    become garbage later are not reclaimed (module-level state; bounded, not growing: later runs do
    not freeze again), and ``gc.get_objects()``/``gc.get_referrers()`` no longer see them.
    ``FLEX_PROVIDER_GC_FREEZE=0`` turns it off. Returns True when it froze now."""
    global _heap_frozen
    if _heap_frozen or not switched_on(GC_FREEZE_ENV):
        return False
    _heap_frozen = True
    started = time.perf_counter()
    gc.collect()
    gc.freeze()
    if logger is not None:
        logger.info(
            "flex: %d long-lived objects frozen out of garbage collection in %.2f s (once per process; "
            "%s=0 to disable)",
            gc.get_freeze_count(),
            time.perf_counter() - started,
            GC_FREEZE_ENV,
        )
    return True


# -- running ------------------------------------------------------------------------------------
def job_metrics(job: FlexJob, logger: RunLog | None = None) -> RunMetrics:
    """The metrics of a job's run, tagged with its dag_id, task_id and model."""
    return RunMetrics(tags_for(job.template_context, job.spec.model), logger)


async def run_job(
    job: FlexJob,
    logger: RunLog,
    *,
    settings: ClientSettings | None = None,
    on_engine: Callable[[FlexEngine], None] | None = None,
    metrics: RunMetrics | bool = True,
) -> FlexEvent:
    """Run a job to the end; every outcome, errors included, is a :class:`FlexEvent`.

    ``on_engine`` (optional) is handed the live engine, for a caller that watches its counters
    (the benchmarks). ``metrics``: the run's counters go to Airflow's Stats as they grow (every
    ``progress_interval`` seconds and at the end; see :mod:`flex_provider.metrics`), tagged with the
    job's dag_id, task_id and model; pass a :class:`RunMetrics` of your own, or False for none."""
    secrets: tuple[str, ...] = ()

    def error(kind: str, message: str) -> FlexEvent:
        return FlexEvent("error", job.work_uri, kind=kind, message=redact(message, secrets))

    freeze_startup_heap(logger)
    try:
        client, client_settings = await _client(job, settings)
        secrets = (client_settings.api_key,)
        store = await asyncio.to_thread(job.store)  # object-storage filesystems may do I/O on creation
        async with client:
            engine = FlexEngine(
                client,
                job.spec,
                job.options,
                store,
                secrets=secrets,
                logger=logger,
                output_uri=job.output_uri,
                endpoint=f"conn_id={job.conn_id!r}, base_url={getattr(client, 'base_url', None) or 'default'}",
            )
            if on_engine is not None:
                on_engine(engine)
            meter = metrics if isinstance(metrics, RunMetrics) else job_metrics(job, logger) if metrics else None
            watching = (
                meter.watching(engine.counters, job.options.progress_interval_s) if meter else contextlib.nullcontext()
            )
            async with watching:
                summary = await engine.run(job.iter_items(), total=job.total)
    except FlexRunAborted as exc:
        return error("aborted", str(exc))
    except FlexInputError as exc:
        return error("input", str(exc))
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        logger.exception("flex run failed")
        return error("internal", f"{type(exc).__name__}: {exc}")
    return FlexEvent(
        "success",
        job.work_uri,
        output_path=job.output_uri,
        total=summary["total"],
        succeeded=summary["succeeded"],
        failed=summary["failed"],
        skipped=summary["skipped"] or None,  # only when the budget left items unsent
    )


async def cancel_outstanding(job: FlexJob, *, settings: ClientSettings | None = None) -> tuple[int, int]:
    """Cancel the background responses of a job that have no result yet; returns (cancelled,
    outstanding). Storage knows every one of them: ids are checkpointed before they are waited on."""
    if job.options.submit_mode != "background":
        return 0, 0
    state = await asyncio.to_thread(lambda: job.store().load())
    ids = [entry["response_id"] for entry in state.pending.values()]
    if not ids:
        return 0, 0
    client, _ = await _client(job, settings)
    async with client:
        return await cancel_responses(client, ids), len(ids)


def cancel_outstanding_blocking(job: FlexJob, settings: ClientSettings, timeout: float = 60.0) -> tuple[int, int]:
    """:func:`cancel_outstanding` from synchronous code that may be inside a running event loop's
    thread (``on_kill`` of the worker path is called while ``asyncio.run`` runs the job): in a thread
    of its own, with its own loop."""
    result: list[tuple[int, int]] = []
    thread = threading.Thread(
        target=lambda: result.append(asyncio.run(cancel_outstanding(job, settings=settings))),
        name="flex-on-kill",
        daemon=True,
    )
    thread.start()
    thread.join(timeout)
    return result[0] if result else (0, 0)
