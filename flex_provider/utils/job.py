"""A flex job: everything the trigger needs to (re)run a task's requests, as plain JSON.

The operator builds a :class:`FlexJob` (validating input and staging large item lists to storage
first); the trigger carries it through ``serialize()``; :func:`execute_job` runs it with the engine
in the triggerer, or in the worker when ``deferrable=False``. No secret is ever part of a job: only
the ``conn_id``; the key is read from the connection where the job runs.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from flex_provider.engine.config import request_spec_from_dict, run_options_from_dict
from flex_provider.engine.errors import FlexInputError, FlexRunAborted, redact
from flex_provider.engine.items import PromptBuilder, WorkItem, enumerate_jsonl, iter_work_items
from flex_provider.engine.runner import FlexEngine
from flex_provider.engine.store import ResultStore
from flex_provider.hooks.flex import ClientSettings, FlexHook
from flex_provider.utils.storage import storage_path

INLINE_ITEMS_MAX_BYTES = 32 * 1024  # larger item lists are staged to storage before deferring
STAGED_INPUT_NAME = "_input/items.jsonl"


@dataclass
class FlexJob:
    conn_id: str
    request: dict[str, Any]  # RequestSpec as a dict
    options: dict[str, Any]  # RunOptions as a dict
    work_uri: str  # where results and checkpoints live (output_path, or the task's checkpoint folder)
    output_uri: str | None = None  # set when the user asked for output_path
    items: list[Any] | None = None  # small inline item lists
    input_uri: str | None = None  # JSON Lines (the user's input_path, or staged items)
    input_label: str = "items"  # how errors name the input ("items", "input_path")
    prompt_template: str | None = None
    template_context: dict[str, Any] = field(default_factory=dict)  # ds, params... for prompt_template
    total: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FlexJob:
        return cls(**data)

    def store(self, session: str | None = None) -> ResultStore:
        return ResultStore(storage_path(self.work_uri), session=session)

    def iter_items(self) -> Iterator[WorkItem]:
        """Items as the engine wants them, each with an id of its own (see ``engine.items``).
        Blocking (storage reads): the engine pulls in a thread. ``validate_input`` runs the very
        same iteration before deferral, so both see the same ids and the same errors."""
        builder = PromptBuilder(self.prompt_template, self.template_context)
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
        later in the triggerer. Returns the count."""
        seen = 0
        for _ in self.iter_items():
            seen += 1
        return seen


ClientFactory = Callable[[], Awaitable[tuple[Any, tuple[str, ...]]]]


def job_client(job: FlexJob, settings: ClientSettings) -> Any:
    """The client a job runs with: a connection per request in flight, plus headroom for polls and
    cancels. Blocking (SSL context, SDK resources): on a shared event loop call it in a thread."""
    max_connections = int(job.options.get("max_concurrency", 32)) + 16
    timeout = float(job.request.get("timeout", 900))
    return FlexHook.ready_client(settings, max_connections=max_connections, timeout=timeout)


async def execute_job(
    job: FlexJob,
    client_factory: ClientFactory,
    logger: logging.Logger | logging.LoggerAdapter,
    on_engine: Callable[[FlexEngine], None] | None = None,
) -> dict[str, Any]:
    """Run a job to the end and return a small, JSON-native event payload (never results or secrets).

    ``client_factory`` returns the client and the secrets to redact from messages; ``on_engine``
    (optional) is handed the live engine, for a caller that watches its counters (the benchmarks)."""
    request = request_spec_from_dict(job.request)
    options = run_options_from_dict(job.options)
    secrets: tuple[str, ...] = ()
    try:
        client, secrets = await client_factory()
        store = await asyncio.to_thread(job.store)  # object-storage filesystems may do I/O on creation
        async with client:
            engine = FlexEngine(
                client,
                request,
                options,
                store,
                secrets=secrets,
                logger=logger,
                output_uri=job.output_uri,
                prompt_template=job.prompt_template,
                endpoint=f"conn_id={job.conn_id!r}, base_url={getattr(client, 'base_url', None) or 'default'}",
            )
            if on_engine is not None:
                on_engine(engine)
            summary = await engine.run(job.iter_items(), total=job.total)
    except FlexRunAborted as exc:
        return {"status": "error", "kind": "aborted", "message": redact(str(exc), secrets), "work_uri": job.work_uri}
    except FlexInputError as exc:
        return {"status": "error", "kind": "input", "message": redact(str(exc), secrets), "work_uri": job.work_uri}
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        logger.exception("flex run failed")
        message = f"{type(exc).__name__}: {redact(str(exc), secrets)}"
        return {"status": "error", "kind": "internal", "message": message, "work_uri": job.work_uri}
    return {
        "status": "success",
        "work_uri": job.work_uri,
        "output_path": job.output_uri,
        "total": summary["total"],
        "succeeded": summary["succeeded"],
        "failed": summary["failed"],
    }


def json_size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, default=str).encode("utf-8"))
