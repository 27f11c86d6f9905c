"""``flex_sharded``: one flex run split into shards that Airflow spreads over its triggerers.

Airflow's triggerers are the distributed engine: a deferred task's trigger runs on whichever
triggerer of the deployment picks it up, and a dead triggerer's triggers move to a live one. One
flex task is one trigger, so one triggerer; a run too big or too slow for one is split here into
``shards`` mapped task instances (``FlexLLMOperator.partial(...).expand(shard=[0..n-1])``), each
its own trigger, plus a merge task downstream that writes one ``_manifest.json`` for the whole input
(see :mod:`flex_provider.shards` for the folder layout and what the merge sums)::

    from flex_provider.operators.sharded import flex_sharded

    enrich = flex_sharded(task_id="enrich", shards=4, model="gpt-5-mini", input_path=..., output_path=...)
    extract >> enrich >> report(enrich.output)      # enrich.output: the merged summary

The DAG author writes one call; the task group ``enrich`` holds ``enrich.shard`` (mapped, one
instance per shard) and ``enrich.merge``. Exactly once holds per shard (each shard is an ordinary
flex run in its own folder) and so for the whole: every input position belongs to exactly one shard.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
from airflow.sdk import DAG, Asset, BaseOperator, Context
from airflow.sdk.definitions.taskgroup import TaskGroup
from airflow.sdk.exceptions import AirflowException

from flex_provider.assets import asset_extra
from flex_provider.engine.errors import FlexInputError
from flex_provider.engine.records import RunSummary, controls_lines, failure_text, summary_lines
from flex_provider.links import RESULTS_XCOM_KEY
from flex_provider.operators.flex import FlexLLMOperator, _check_max_failed, allowed_failures
from flex_provider.plugins.run_summary import RUN_SUMMARY_XCOM_KEY, build_run_summary
from flex_provider.shards import check_shards, merge_shards
from flex_provider.utils.storage import checked_path, to_uri

SHARD_TASK = "shard"
MERGE_TASK = "merge"


class FlexShardMergeOperator(BaseOperator):
    """Merge the shards of a sharded flex run into one ``_manifest.json`` and return its summary.

    Runs in the worker, after every shard (it is their downstream): it reads only the shards'
    manifests, never their records, so it takes a second whatever the input size. It judges
    ``max_failed`` and ``on_budget_exhausted`` over the whole run, pushes the run summary the Flex
    savings page lists (the shards do not), and updates ``outlets``.

    :param output_path: the run's folder, the shards' parent (templated, as the shards render it).
    :param shards: how many shards the run has.
    """

    template_fields: Sequence[str] = ("output_path",)
    ui_color = "#d9f2e6"

    def __init__(
        self,
        *,
        output_path: Any,
        shards: int,
        max_failed: int | float = 0,
        on_budget_exhausted: str = "fail",
        redo_failed: str = "retryable",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.output_path = output_path
        self.shards = check_shards(shards)
        _check_max_failed(max_failed)
        self.max_failed = max_failed
        self.on_budget_exhausted = on_budget_exhausted
        self.redo_failed = redo_failed

    def execute(self, context: Context) -> dict[str, Any]:
        root_uri = to_uri(self.output_path, "output_path").rstrip("/")
        context["ti"].xcom_push(key=RESULTS_XCOM_KEY, value=root_uri)
        summary = merge_shards(checked_path(root_uri, "output_path"), self.shards, root_uri)
        lines = summary_lines(summary)
        controls = controls_lines(summary)
        self.log.info("flex summary (%d shards): %s; results at %s", self.shards, lines[0], root_uri)
        self.log.info("flex summary: %s", lines[1])
        for line, warn in controls:
            (self.log.warning if warn else self.log.info)("flex summary: %s", line)
        for line in lines[2 + len(controls) :]:
            self.log.warning("flex summary: %s", line)
        context["ti"].xcom_push(key=RUN_SUMMARY_XCOM_KEY, value=build_run_summary(summary))
        for outlet in self.outlets:
            if isinstance(outlet, Asset):
                context["outlet_events"][outlet].extra.update(asset_extra(summary))
        if summary["skipped"] and self.on_budget_exhausted == "fail":
            raise AirflowException(
                f"flex run stopped at its budget: {summary['skipped']} of {summary['total']} item(s) not sent "
                f"(records with status 'skipped'), over {self.shards} shards. The {summary['succeeded']} answered "
                f"item(s) are kept at {root_uri}. Raise max_cost_usd and clear the task group "
                f"(only the skipped items are sent), or set on_budget_exhausted='succeed'."
            )
        if summary["failed"] > allowed_failures(self.max_failed, summary["total"]):
            raise AirflowException(self._too_many_failures(summary, root_uri))
        return {key: value for key, value in summary.items() if key != "parts"}

    def _too_many_failures(self, summary: RunSummary, root_uri: str) -> str:
        reasons = "; ".join(failure_text(group) for group in summary["failures"]) or f"ids {summary['failed_ids']}"
        final = sum(group["count"] for group in summary["failures"] if not group["retryable"])
        kept = (
            f' The {final} not retryable failure(s) are sent again only with redo_failed="all".'
            if final and self.redo_failed != "all"
            else ""
        )
        group = self.task_group.group_id if self.task_group is not None and self.task_group.group_id else "the"
        return (
            f"{summary['failed']} of {summary['total']} item(s) failed over {self.shards} shards, more than "
            f"max_failed={self.max_failed}. Failures by reason: {reasons}. Fix the cause, then clear the task group "
            f"{group} (its shards send the failed items again; successes are kept and not paid for twice).{kept} "
            f"All results, failures included, are at {root_uri}."
        )


@attrs.define(repr=False)
class FlexShards(TaskGroup):
    """The task group :func:`flex_sharded` returns: ``>>``/``<<`` set dependencies on all of it (the
    shards upstream, the merge downstream) and ``.output`` is the merged summary (the merge task's
    XCom), as with one FlexLLMOperator."""

    @property
    def merge(self) -> FlexShardMergeOperator:
        return self.children[self.child_id(MERGE_TASK)]  # type: ignore[no-untyped-call,return-value]

    @property
    def output(self) -> Any:
        return self.merge.output


def _check_now(kwargs: dict[str, Any], shards: int) -> None:
    """Build one unmapped shard operator now, in a throwaway DAG, so that what an unmapped
    FlexLLMOperator refuses at DAG parse time (a bad api, timeout, retry, response_format...) is
    refused at parse time here too (mapped tasks are built only when they run). XComArg values
    (``items=upstream.output``) are not known yet: a placeholder stands in for them."""
    from airflow.sdk.definitions.xcom_arg import XComArg

    checked: dict[str, Any] = {
        k: ("xcom" if isinstance(v, XComArg) else v) for k, v in kwargs.items() if k not in ("dag", "task_group")
    }
    with DAG("_flex_sharded_check", schedule=None, auto_register=False):
        FlexLLMOperator(task_id="check", shard=0, shards=shards, **checked)


def flex_sharded(*, task_id: str, shards: int, outlets: Any = None, **kwargs: Any) -> FlexShards:
    """One flex run over ``shards`` mapped tasks (each its own trigger, so the triggerers share the
    load) and a merge task, in a task group named ``task_id``.

    :param shards: how many shards (an int >= 1). Shard k sends the items at input positions p with
        ``p % shards == k`` into ``<output_path>/shards/<k>-of-<shards>/``; the merge writes
        ``<output_path>/_manifest.json``. Keep it for the life of an output folder: a folder holds
        one shard count (another is refused, not silently paid for again).
    :param outlets: assets the merge task updates (with the whole run's counts).
    :param kwargs: :class:`FlexLLMOperator`'s (``output_path`` and ``items`` or ``input_path`` are
        required), and task arguments such as ``retries`` or ``pool`` for the shard tasks.
        ``max_cost_usd``, ``max_requests_per_minute`` and ``max_tokens_per_minute`` are the whole
        run's, split evenly between shards; ``max_concurrency`` is per shard; ``max_failed`` is
        judged over the whole run by the merge (a shard fails early only when its own failures
        already exceed it).
    """
    n = check_shards(shards)
    if kwargs.get("output_path") is None:
        raise FlexInputError("output_path: flex_sharded needs an output folder (the shards' results are merged there)")
    if kwargs.get("input") is not None:
        raise FlexInputError("input: one prompt cannot be sharded; use FlexLLMOperator, or items/input_path")
    for reserved in ("shard", "shards"):
        if reserved in kwargs:
            raise FlexInputError(f"{reserved}: set by flex_sharded itself")
    _check_now(kwargs, n)
    group = FlexShards(group_id=task_id)
    with group:
        shard_tasks = FlexLLMOperator.partial(task_id=SHARD_TASK, shards=n, **kwargs).expand(shard=list(range(n)))
        merge = FlexShardMergeOperator(
            task_id=MERGE_TASK,
            output_path=kwargs["output_path"],
            shards=n,
            max_failed=kwargs.get("max_failed", 0),
            on_budget_exhausted=kwargs.get("on_budget_exhausted", "fail"),
            redo_failed=kwargs.get("redo_failed", "retryable"),
            outlets=outlets or [],
        )
        shard_tasks >> merge
    return group
