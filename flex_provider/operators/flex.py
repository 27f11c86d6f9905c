"""FlexLLMOperator: many prompts through OpenAI Flex processing from one Airflow task.

The operator validates everything it can in the worker (input, options, credentials), stages large
inputs to storage, then defers: the requests run in the triggerer (:class:`FlexTrigger`) and the
worker slot is free while flex is slow. With ``deferrable=False`` the same engine runs in the worker.
When the trigger fires, the task resumes here, reads the manifest and returns the summary
(``output_path`` set), the list of records (XCom mode) or the output (single ``input``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from airflow.sdk import Asset, BaseOperator, Context
from airflow.sdk.configuration import conf
from airflow.sdk.exceptions import AirflowException

from flex_provider.assets import asset_extra
from flex_provider.engine.budget import Budget
from flex_provider.engine.config import (
    API_CHOICES,
    ON_BUDGET_EXHAUSTED_CHOICES,
    SERVICE_TIERS,
    RequestSpec,
    RetryPolicy,
    RunOptions,
    budget_from,
    deadline_from,
    require_choice,
    require_positive,
)
from flex_provider.engine.errors import FlexInputError
from flex_provider.engine.items import PromptBuilder
from flex_provider.engine.pricing import PriceTable
from flex_provider.engine.records import RunSummary, as_summary, controls_lines, failure_text, summary_lines
from flex_provider.engine.store import ResultStore
from flex_provider.hooks.flex import ClientSettings, FlexHook
from flex_provider.job import FlexEvent, FlexJob, cancel_outstanding_blocking, json_size, run_job
from flex_provider.links import RESULTS_XCOM_KEY, FlexResultsLink
from flex_provider.plugins.run_summary import RUN_SUMMARY_XCOM_KEY, build_run_summary
from flex_provider.shards import check_layout, check_shard, shard_uri
from flex_provider.site_prices import prices_for_run
from flex_provider.triggers.flex import FlexTrigger
from flex_provider.utils.storage import (
    checked_path,
    default_checkpoint_root,
    path_kind,
    storage_path,
    task_checkpoint_uri,
    to_uri,
)

DEFAULT_XCOM_MAX_BYTES = 1024 * 1024
# A lower bound of one result record's JSON size, its output left out: the smallest id ("0"), model
# ("m"), status ("failed"), null tier/error/response_id, zero usage, a microsecond timestamp and the
# key names add up to 307 bytes (measured; the prompt hash would add 35 more). In XCom mode the
# operator refuses, before sending anything, inputs whose records cannot fit in xcom_max_bytes.
MIN_RECORD_BYTES = 300
_SCHEMA_NAME = re.compile(r"[^A-Za-z0-9_-]")


def schema_from_response_format(response_format: Any) -> tuple[dict[str, Any] | None, str]:
    """A Pydantic model class or a JSON schema dict -> (strict JSON schema, schema name)."""
    if response_format is None:
        return None, "result"
    try:
        from pydantic import BaseModel
    except ImportError:  # pragma: no cover - pydantic ships with Airflow
        BaseModel = None  # type: ignore[assignment,misc]
    if BaseModel is not None and isinstance(response_format, type) and issubclass(response_format, BaseModel):
        from openai.lib._pydantic import to_strict_json_schema  # what responses.parse() itself uses

        try:
            schema = to_strict_json_schema(response_format)
        except Exception as exc:  # a field type with no JSON schema, a model pydantic cannot build...
            raise FlexInputError(
                f"response_format: no JSON schema for {response_format.__name__}: {type(exc).__name__}: {exc}"
            ) from None
        return schema, _SCHEMA_NAME.sub("_", response_format.__name__)[:64]
    if isinstance(response_format, dict):
        if "schema" in response_format and isinstance(response_format["schema"], dict):  # OpenAI's wrapper shape
            name = str(response_format.get("name") or "result")
            return response_format["schema"], _SCHEMA_NAME.sub("_", name)[:64]
        return response_format, str(response_format.get("title") or "result")[:64]
    raise FlexInputError(
        f"response_format: expected a Pydantic model class or a JSON schema dict, got {type(response_format).__name__}"
    )


def _check_max_failed(value: Any) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (isinstance(value, float) and not math.isfinite(value))
        or value < 0
    ):
        raise FlexInputError(f"max_failed: expected a count (int >= 0) or a share (float in [0, 1)), got {value!r}")
    if isinstance(value, float) and value >= 1:
        raise FlexInputError(f"max_failed: a float is a share of items and must be below 1.0, got {value!r}")


def allowed_failures(max_failed: int | float, total: int) -> int:
    return int(max_failed * total) if isinstance(max_failed, float) else int(max_failed)


def _share_of(cap: Any, shards: int) -> Any:
    """A shard's share of a whole-run rate cap (anything but a positive number is left for
    RunOptions to name as wrong, as given)."""
    if shards > 1 and isinstance(cap, (int, float)) and not isinstance(cap, bool) and cap > 0:
        return cap / shards
    return cap


class FlexLLMOperator(BaseOperator):
    """Send one prompt, a list of items or a JSON Lines file through OpenAI with ``service_tier="flex"``.

    :param model: model id, e.g. ``gpt-5-mini`` (templated).
    :param instructions: system/developer prompt shared by every request (templated).
    :param input: one prompt; the task returns its output (templated).
    :param items: list of strings or dicts, e.g. from XCom (templated).
    :param input_path: JSON Lines file, local path or ObjectStoragePath URI (templated).
    :param prompt_template: Jinja for dict items; ``item`` is the item, and ``ds``, ``run_id``,
        ``params``... are available. Default: the item's ``text`` field.
    :param api: ``"responses"`` or ``"chat"``.
    :param response_format: Pydantic model or JSON schema: outputs are parsed, validated objects.
    :param request_options: extra create() arguments (max_output_tokens, reasoning, temperature...).
    :param service_tier: ``"flex"`` (default) or another tier.
    :param timeout: per request, seconds (flex answers can take up to 15 minutes).
    :param max_concurrency: requests in flight for this task (lowered automatically on rate limits
        only when the server announces no limits; otherwise the rate pacer keeps within them).
    :param max_requests_per_minute: cap on this task's requests per minute, under the account's own
        limit (which is learnt from the answers' ``x-ratelimit-*`` headers): for sharing an account.
    :param max_tokens_per_minute: cap on this task's tokens per minute (prompt + output bound, as
        OpenAI counts them), likewise.
    :param rate_limit_window_s: what "per minute" means for the caps and the pacing, 60 (an emulator
        may use a shorter window).
    :param on_unavailable: on 429 resource_unavailable: ``"retry"`` until the budget runs out,
        ``"fallback"`` to ``fallback_tier`` after that, or ``"fail"`` the item at once.
    :param retry: per-item retry budget, a :class:`RetryPolicy` or dict of its fields.
    :param output_path: folder URI for ``*.jsonl`` part files and ``_manifest.json``; the task then
        returns the summary. Without it, records go to XCom.
    :param max_failed: failed items tolerated before the task fails: a count or a share (0.01 = 1%).
    :param redo_failed: which failed items a retry or clear of the task sends again: ``"retryable"``
        (default: only those whose failure was retryable, e.g. flex unavailable until the budget ran
        out) or ``"all"`` (every failed item, e.g. once the cause of a 400/404 was fixed). Successes
        are always kept and never paid for twice.
    :param submit_mode: ``"inline"`` (wait on each request) or ``"background"`` (Responses API
        ``background=True``; response ids are checkpointed and polled, surviving restarts).
    :param checkpoint_root: where XCom-mode runs checkpoint (default ``$AIRFLOW_HOME/flex_checkpoints``
        or ``FLEX_PROVIDER_CHECKPOINT_ROOT``).
    :param prices: prices of the standard tier, ``{model: {"input", "cached_input", "output"}}`` USD per
        1M tokens, over the site-wide ``flex_prices`` Variable, over genai-prices' maintained table.
    :param prompt_cache_key: sent with every request so requests sharing the instructions hit the same
        prompt cache: ``"auto"`` (default: one key per question, the same every night), a string, or None.
    :param max_cost_usd: spending cap in USD (templated), what earlier runs in the same folder spent
        included: no request is sent whose worst case (estimated prompt, output bound) could take the
        spend over it. Items not sent get records with status ``skipped`` (retryable: a run with a
        higher cap sends them). Requests without an output bound get ``max_output_tokens=4096``.
    :param on_budget_exhausted: ``"fail"`` (default: the task fails once the run is checkpointed,
        naming the skipped items) or ``"succeed"`` (partial results are fine).
    :param deadline: finish by (templated): a date-time (``"{{ data_interval_end +
        macros.timedelta(hours=6) }}"``, ISO text, a datetime; UTC when it has no timezone) or a
        duration from the task's start (seconds, or a timedelta). Items stay on flex while the rest
        still fits; just enough of the last ones go to ``fallback_tier`` to finish on time. Resolved
        to an absolute time before deferral.
    :param shard: this task's shard, 0 to ``shards - 1``, with ``shards``: the task sends only the
        items at input positions p with p % shards == shard, into ``<output_path>/shards/<shard>-of-<shards>/``.
        Set by :func:`~flex_provider.operators.sharded.flex_sharded` (``expand(shard=...)``), which
        also merges the shards' results; not meant to be set by hand.
    :param shards: how many shards the run is split into (see ``shard``). ``max_cost_usd``,
        ``max_requests_per_minute`` and ``max_tokens_per_minute`` are the whole run's: each shard
        gets its share; ``max_concurrency`` is per shard (per trigger).
    :param deferrable: run the requests in the triggerer (True) or in the worker (False); default:
        ``[operators] default_deferrable`` (which Airflow ships as False: set it to True, or pass
        ``deferrable=True``, to free worker slots while flex is slow).
    """

    template_fields: Sequence[str] = (
        "model",
        "instructions",
        "input",
        "items",
        "input_path",
        "output_path",
        "request_options",
        "max_cost_usd",
        "deadline",
    )
    template_fields_renderers = {"instructions": "md", "input": "md", "items": "json", "request_options": "json"}
    ui_color = "#d9f2e6"
    operator_extra_links = (FlexResultsLink(),)

    def __init__(
        self,
        *,
        model: str,
        instructions: str | None = None,
        input: str | None = None,
        items: Any = None,
        input_path: Any = None,
        prompt_template: str | None = None,
        api: str = "responses",
        response_format: Any = None,
        request_options: dict[str, Any] | None = None,
        service_tier: str = "flex",
        timeout: float = 900.0,
        max_concurrency: int = 32,
        max_requests_per_minute: float | None = None,
        max_tokens_per_minute: float | None = None,
        rate_limit_window_s: float = 60.0,
        on_unavailable: str = "retry",
        fallback_tier: str = "default",
        retry: RetryPolicy | dict[str, Any] | None = None,
        output_path: Any = None,
        max_failed: int | float = 0,
        redo_failed: str = "retryable",
        submit_mode: str = "inline",
        checkpoint_root: str | None = None,
        poll_interval: float = 5.0,
        progress_interval: float = 5.0,
        prices: dict[str, dict[str, float]] | None = None,
        prompt_cache_key: str | None = "auto",
        max_cost_usd: Any = None,
        on_budget_exhausted: str = "fail",
        deadline: Any = None,
        xcom_max_bytes: int = DEFAULT_XCOM_MAX_BYTES,
        conn_id: str = FlexHook.default_conn_name,
        deferrable: bool | None = None,
        shard: int | None = None,
        shards: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # (k, n) of a shard task; None: the whole input (see flex_provider.shards).
        self.shard: tuple[int, int] | None = (
            check_shard(shard, shards) if shard is not None or shards is not None else None
        )
        if self.shard is not None and (output_path is None or input is not None):
            raise FlexInputError(
                "shards: a sharded run needs output_path (its shards' results are merged there) and items or "
                "input_path (one input prompt cannot be split)"
            )
        share = self.shard[1] if self.shard is not None else 1  # the whole run's rate caps, split
        given = [
            name
            for name, value in (("input", input), ("items", items), ("input_path", input_path))
            if value is not None
        ]
        if len(given) != 1:
            raise FlexInputError(
                "FlexLLMOperator needs exactly one of input (one prompt), items (a list) or input_path "
                f"(a JSON Lines file); got {', '.join(given) if given else 'none'}"
            )
        if api not in API_CHOICES:
            raise FlexInputError(f"api: expected one of {', '.join(map(repr, API_CHOICES))}, got {api!r}")
        _check_max_failed(max_failed)
        PromptBuilder(prompt_template)  # not templated: a syntax error fails the DAG parse
        # Not templated, so checked now, at DAG parse time (the RequestSpec is built only in execute).
        require_positive("timeout", timeout)
        require_choice("service_tier", service_tier, SERVICE_TIERS)
        require_choice("on_budget_exhausted", on_budget_exhausted, ON_BUDGET_EXHAUSTED_CHOICES)
        if isinstance(xcom_max_bytes, bool) or not isinstance(xcom_max_bytes, int) or xcom_max_bytes < 1:
            raise FlexInputError(f"xcom_max_bytes: expected a positive integer (bytes), got {xcom_max_bytes!r}")
        self.model = model
        self.instructions = instructions
        self.input = input
        self.items = items
        self.input_path = input_path
        self.prompt_template = prompt_template
        self.api = api
        self.response_schema, self.schema_name = schema_from_response_format(response_format)
        self.request_options = request_options or {}
        self.service_tier = service_tier
        self.timeout = timeout
        self.prompt_cache_key = prompt_cache_key
        self.max_cost_usd = max_cost_usd
        self.on_budget_exhausted = on_budget_exhausted
        self.deadline = deadline
        self.output_path = output_path
        self.max_failed = max_failed
        self.checkpoint_root = checkpoint_root
        self.xcom_max_bytes = xcom_max_bytes
        self.conn_id = conn_id
        # Airflow's convention for deferrable operators: [operators] default_deferrable decides
        # unless the task says otherwise.
        self.deferrable = (
            conf.getboolean("operators", "default_deferrable", fallback=False) if deferrable is None else deferrable
        )
        # Everything that is not templated is checked now, at DAG parse time.
        self.run_options = RunOptions(
            max_concurrency=max_concurrency,
            on_unavailable=on_unavailable,  # type: ignore[arg-type]
            fallback_tier=fallback_tier,
            retry=RetryPolicy.from_value(retry),
            submit_mode=submit_mode,  # type: ignore[arg-type]
            poll_interval_s=poll_interval,
            progress_interval_s=progress_interval,
            prices=prices,
            # XCom mode: the engine stops sending once the finished records could not fit anyway.
            max_result_bytes=xcom_max_bytes if output_path is None else None,
            redo_failed=redo_failed,  # type: ignore[arg-type]
            max_requests_per_minute=_share_of(max_requests_per_minute, share),
            max_tokens_per_minute=_share_of(max_tokens_per_minute, share),
            rate_limit_window_s=rate_limit_window_s,
        )
        if submit_mode == "background" and api != "responses":
            raise FlexInputError(
                "submit_mode: 'background' needs api='responses' (Chat Completions has no background mode)"
            )

    # -- building the job ----------------------------------------------------------------------
    def _request_spec(self) -> RequestSpec:
        return RequestSpec(
            model=self.model,
            instructions=self.instructions,
            api=self.api,  # type: ignore[arg-type]
            response_schema=self.response_schema,
            schema_name=self.schema_name,
            request_options=dict(self.request_options)
            if isinstance(self.request_options, dict)
            else self.request_options,  # as rendered: RequestSpec names what is wrong
            service_tier=self.service_tier,
            timeout=self.timeout,
            prompt_template=self.prompt_template,
            prompt_cache_key=self.prompt_cache_key,
        )

    @staticmethod
    def _template_context(context: Context) -> dict[str, Any]:
        """The Airflow values a prompt_template may use beside ``item`` (JSON-safe copies)."""
        keys = ("ds", "ds_nodash", "ts", "run_id")
        out = {k: context.get(k) for k in keys if context.get(k) is not None}
        ti = context.get("ti")
        if ti is not None:
            out.update(dag_id=ti.dag_id, task_id=ti.task_id)
        if context.get("logical_date") is not None:
            out["logical_date"] = str(context["logical_date"])
        params = context.get("params")
        if params:
            out["params"] = json.loads(json.dumps(dict(params), default=str))
        return out

    @staticmethod
    def _started(context: Context) -> datetime:
        """When the task (this try) started: what a ``deadline`` given as a duration counts from."""
        started = getattr(context.get("ti"), "start_date", None)
        if isinstance(started, datetime):
            return started if started.tzinfo is not None else started.replace(tzinfo=UTC)
        return datetime.now(UTC)

    def _work_uri(self, context: Context) -> str:
        if self.output_path is not None:
            root = to_uri(self.output_path, "output_path")
            return shard_uri(root, *self.shard) if self.shard is not None else root
        ti = context["ti"]
        root = to_uri(self.checkpoint_root, "checkpoint_root") if self.checkpoint_root else default_checkpoint_root()
        return task_checkpoint_uri(root, ti.dag_id, ti.run_id, ti.task_id, getattr(ti, "map_index", None))

    def build_job(self, context: Context) -> FlexJob:
        """Validate the rendered input and options, stage big inputs; nothing here calls the API."""
        work_uri = self._work_uri(context)
        if self.output_path is not None:
            kind = path_kind(checked_path(work_uri, "output_path"), "output_path")
            if kind in ("file", "other"):
                raise FlexInputError(f"output_path: {work_uri} is a file; expected a folder")
            # One layout per folder: unsharded, or one shard count (the other's results would not be read).
            root_uri = to_uri(self.output_path, "output_path")
            check_layout(checked_path(root_uri, "output_path"), self.shard[1] if self.shard else None, root_uri)
        spec = self._request_spec()
        # The site-wide price table is read now, at run time (never at parse time), and travels in the
        # job: the trigger itself never reads a Variable. The budget and the deadline are rendered by
        # now; the deadline is made absolute (a duration counts from the task's start).
        max_cost_usd = budget_from(self.max_cost_usd)
        if max_cost_usd is not None and self.shard is not None:  # the whole run's cap: each shard its share
            max_cost_usd /= self.shard[1]
        options = dataclasses.replace(
            self.run_options,
            prices=prices_for_run(self.run_options.prices),
            max_cost_usd=max_cost_usd,
            deadline_at=deadline_from(self.deadline, self._started(context)),
        )
        if options.max_cost_usd is not None:
            Budget(options.max_cost_usd, PriceTable(options.prices), model=spec.model)  # no price: fail now
        job = FlexJob(
            conn_id=self.conn_id,
            spec=spec,
            options=options,
            work_uri=work_uri,
            output_uri=work_uri if self.output_path is not None else None,
            template_context=self._template_context(context),
            shard=self.shard,
        )
        if self.input is not None:
            if not isinstance(self.input, str) or not self.input.strip():
                raise FlexInputError(f"input: expected a non-empty string (one prompt), got {self.input!r:.80}")
            job.items, job.input_label = [self.input], "input"
        elif self.items is not None:
            items = self.items
            if isinstance(items, (str, bytes, dict)) or not isinstance(items, Sequence):
                raise FlexInputError(
                    f"items: expected a list of strings or dicts, got {type(items).__name__}"
                    + ("; for one prompt use input=" if isinstance(items, str) else "")
                )
            job.items = list(items)
        else:
            job.input_uri, job.input_label = to_uri(self.input_path, "input_path"), "input_path"
            kind = path_kind(checked_path(job.input_uri, "input_path"), "input_path")
            if kind is None:
                raise FlexInputError(f"input_path: {job.input_uri} does not exist")
            if kind == "dir":
                raise FlexInputError(f"input_path: {job.input_uri} is a directory; expected a JSON Lines file")
            if kind == "other":
                raise FlexInputError(f"input_path: {job.input_uri} is not a regular file; expected a JSON Lines file")
        job.total = job.validate_input()
        if self.output_path is None and self.input is None and job.total * MIN_RECORD_BYTES > self.xcom_max_bytes:
            raise FlexInputError(
                f"{job.input_label}: {job.total} item(s) cannot fit in XCom: each result record takes at least "
                f"{MIN_RECORD_BYTES} bytes before its output, over xcom_max_bytes={self.xcom_max_bytes} in all; "
                "set output_path='file:///...' or 's3://...' to write the results to object storage "
                "(nothing was sent)"
            )
        staged = job.stage_items()
        if staged is not None:
            self.log.info("staged %d item(s) to %s so the trigger carries only a URI", job.total, staged)
        return job

    # -- running -------------------------------------------------------------------------------
    def execute(self, context: Context) -> Any:
        settings = FlexHook(conn_id=self.conn_id).get_settings()  # no key anywhere: fail now, not deferred
        job = self.build_job(context)
        # Where the results are (output_path, or the checkpoint folder): the "Flex results" link.
        context["ti"].xcom_push(key=RESULTS_XCOM_KEY, value=job.work_uri)
        self.log.info(
            "flex task: %d item(s)%s, model=%s, tier=%s, api=%s, concurrency=%d, results at %s",
            job.total,
            f" (shard {self.shard[0]} of {self.shard[1]}: 1 in {self.shard[1]} of {job.input_total})"
            if self.shard is not None
            else "",
            self.model,
            self.service_tier,
            self.api,
            self.run_options.max_concurrency,
            job.work_uri,
        )
        # A shard judges its failures against the whole run's allowance: it needs the whole input's count.
        resume = {"input_total": job.input_total} if self.shard is not None else None
        if self.deferrable:
            self.defer(trigger=FlexTrigger(job.to_payload()), method_name="execute_complete", kwargs=resume)
        # In the worker: the very same run, and on_kill can cancel its background responses.
        self._running: tuple[FlexJob, ClientSettings] | None = (job, settings)
        try:
            event = asyncio.run(run_job(job, self.log, settings=settings))
        finally:
            self._running = None
        return self.execute_complete(context, event.to_payload(), **(resume or {}))

    def on_kill(self) -> None:
        """The task was killed while running in the worker (``deferrable=False``): cancel background
        responses still running on OpenAI, so nobody pays for answers no one will read. (Deferred,
        the trigger's own ``on_kill`` does this.)"""
        running = getattr(self, "_running", None)
        if running is None:
            return
        cancelled, outstanding = cancel_outstanding_blocking(*running)
        if outstanding:
            self.log.info("flex on_kill: cancelled %d of %d outstanding background response(s)", cancelled, outstanding)

    def _too_many_failures(self, summary: RunSummary, work_uri: str) -> str:
        """Why the task fails: the failures by reason, with counts and the server's messages, and
        what to do about them."""
        failures = summary["failures"]
        reasons = "; ".join(failure_text(group) for group in failures) or f"ids {summary['failed_ids']}"
        final = sum(group["count"] for group in failures if not group["retryable"])
        advice = "Fix the cause, then clear the task (or let it retry): "
        if final and self.run_options.redo_failed != "all":
            advice += (
                f"retryable failures are sent again, but the {final} not retryable one(s) are kept as final "
                'unless the task sets redo_failed="all", which sends every failed item again '
                "(successes are kept and not paid for twice)."
            )
        else:
            advice += "the failed items are sent again; successes are kept and not paid for twice."
        return (
            f"{summary['failed']} of {summary['total']} item(s) failed, more than max_failed={self.max_failed}"
            + (
                f" of the whole run, in shard {self.shard[0]} of {self.shard[1]} alone. "
                if self.shard is not None
                else ". "
            )
            + f"Failures by reason: {reasons}. {advice} All results, failures included, are at {work_uri}."
        )

    def _over_budget(self, summary: RunSummary, work_uri: str) -> str:
        """Why the task fails with on_budget_exhausted="fail", and how to finish the run."""
        budget = summary["budget"]
        spent = (
            f"spent ${budget['spent']:,.4f} of max_cost_usd=${budget['max_cost_usd']:,.4f} "
            f"(${budget['spent_before']:,.4f} of it by earlier runs in this folder)"
            if budget
            else "an earlier run's max_cost_usd"
        )
        return (
            f"flex run stopped at its budget: {summary['skipped']} of {summary['total']} item(s) not sent "
            f"(records with status 'skipped'); {spent}. The {summary['succeeded']} answered item(s) are kept at "
            f"{work_uri}. Raise max_cost_usd and clear the task (or let it retry): only the skipped items are "
            "sent. Or set on_budget_exhausted='succeed' to accept partial results."
        )

    def execute_complete(self, context: Context, event: dict[str, Any], input_total: int | None = None) -> Any:
        """``input_total``: a shard's whole input (every shard's items), for ``max_failed``."""
        result = FlexEvent.from_payload(event)
        work_uri = result.work_uri
        if result.status != "success":
            raise AirflowException(
                f"flex run failed ({result.kind or 'error'}): {result.message}. "
                f"Finished results are kept at {work_uri}; retrying the task resumes from there "
                "without paying again for them."
            )
        store = ResultStore(storage_path(work_uri))
        summary = as_summary(store.read_manifest(), f"{work_uri}/_manifest.json")
        lines = summary_lines(summary)
        controls = controls_lines(summary)  # lines[2:2 + len(controls)]
        self.log.info("flex summary: %s; results at %s", lines[0], work_uri)
        self.log.info("flex summary: %s", lines[1])
        for line, warn in controls:  # budget, deadline (a missed deadline is a warning, not hidden)
            (self.log.warning if warn else self.log.info)("flex summary: %s", line)
        for line in lines[2 + len(controls) :]:  # failures by reason
            self.log.warning("flex summary: %s", line)
        # The Flex savings page lists runs from this compact copy (counts, cost, tiers; no failures
        # beyond their counts by kind); pushed before any max_failed verdict: a failed run was paid too.
        # A shard's is not: the merge step pushes the whole run's (the page would count it twice).
        if self.shard is None:
            context["ti"].xcom_push(key=RUN_SUMMARY_XCOM_KEY, value=build_run_summary(summary))
        total, failed = summary["total"], summary["failed"]
        if self.shard is not None:
            # Failing here (and so retrying, which sends retryable failures again) only when this shard's
            # failures alone are over the whole run's allowance; the merge step judges the sum exactly.
            total = input_total if isinstance(input_total, int) else total
        if self.outlets:  # a downstream DAG scheduled on the asset learns where the results are
            extra = asset_extra(summary)
            for outlet in self.outlets:
                if isinstance(outlet, Asset):
                    context["outlet_events"][outlet].extra.update(extra)
        if summary["skipped"] and self.on_budget_exhausted == "fail":
            raise AirflowException(self._over_budget(summary, work_uri))
        if self.input is not None:
            record = next(store.iter_records(), None)
            if record is None or record.get("status") != "succeeded":
                error = (record or {}).get("error") or {}
                raise AirflowException(f"flex request failed: {error.get('type')}: {error.get('message')}")
            return record["output"]
        if failed > allowed_failures(self.max_failed, total):
            raise AirflowException(self._too_many_failures(summary, work_uri))
        if self.output_path is not None:
            return {key: value for key, value in summary.items() if key != "parts"}  # the RunSummary, small
        records = sorted(store.iter_records(), key=lambda r: r.get("index", 0))  # input order
        size = json_size(records)
        if size > self.xcom_max_bytes:
            raise AirflowException(
                f"results are {size} bytes, over the XCom limit of {self.xcom_max_bytes} bytes (xcom_max_bytes): "
                f"set output_path='file:///...' or 's3://...' to write them to object storage instead. "
                f"Nothing is lost: the {total} record(s) are kept at {work_uri}."
            )
        return records
