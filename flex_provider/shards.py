"""Shards: one flex run split over several tasks (several triggers, several triggerers), one result.

A run too big or too slow for one trigger is split into ``n`` shards (see
:func:`flex_provider.operators.sharded.flex_sharded`): shard ``k`` sends the items at input
positions ``p`` with ``p % n == k``, as its own mapped task instance, so its trigger lands on
whichever triggerer of the deployment has room. Each shard is an ordinary flex run in a folder of
its own, so exactly-once per shard (lease, parts, resume, compaction) is the engine's, unchanged::

    <output_path>/
        _manifest.json               the merged summary (written by the merge step, last)
        shards/<k>-of-<n>/           shard k's folder: part-*.jsonl, _manifest.json, _lease.json...

The merge step reads only the shards' manifests (never their records) and writes one
``_manifest.json``: counts, tokens, cost, tiers and failures summed over the shards, and ``parts``
listing every shard's part files relative to ``<output_path>``, so a reader that iterates
``root / name for name in manifest["parts"]`` reads every record exactly once, nothing copied.
:func:`iter_records` does that and puts each record's ``index`` back to its position in the whole
input (the engine writes the position within the shard's items: ``k + index * n`` is the input's).

A folder holds one layout: the results of an unsharded run, or of one shard count. Mixing them
would pay again for items already answered (the other layout's results are not read), so
:func:`check_layout` refuses before anything is sent.

No Airflow import: roots are pathlib-like (``pathlib.Path`` in tests, ``ObjectStoragePath``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any, cast

from flex_provider.engine.errors import FlexInputError
from flex_provider.engine.progress import FailureTally
from flex_provider.engine.records import FAILED_IDS_SHOWN, RunSummary, as_summary
from flex_provider.engine.store import JOB_NAME, MANIFEST_NAME, ResultStore

SHARDS_DIR = "shards"
_SHARD_NAME = re.compile(r"(\d+)-of-(\d+)")
_TMP_MANIFEST = f"_tmp-{MANIFEST_NAME}"
# Header counters that add up over shards (``this_run``'s are summed key by key).
_SUMMED = ("requests", "unavailable", "rate_limited", "transient_errors", "malformed_answers", "fallbacks")
_BUDGET_SUMMED = ("max_cost_usd", "spent", "spent_before", "spent_this_run", "reserved")
_BUDGET_COUNTED = ("refused", "unknown_costs", "overruns")
_DEADLINE_COUNTED = ("finished_late", "sent_flex", "sent_fallback", "on_fallback")


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _count(value: Any) -> int:
    return int(value) if _is_count(value) else 0


def check_shards(value: Any, field: str = "shards") -> int:
    """A shard count: an int >= 1 (1 is allowed: the same layout, one shard)."""
    if not _is_count(value) or value < 1:
        raise FlexInputError(f"{field}: expected the number of shards, an integer >= 1, got {value!r}")
    return int(value)


def check_shard(shard: Any, shards: Any) -> tuple[int, int]:
    """``(k, n)`` of one shard task: ``shards`` as :func:`check_shards`, ``0 <= shard < shards``."""
    n = check_shards(shards)
    if not _is_count(shard) or not 0 <= shard < n:
        raise FlexInputError(
            f"shard: expected this task's shard, an integer from 0 to {n - 1} (shards={n}), got {shard!r}"
        )
    return int(shard), n


def shard_name(k: int, n: int) -> str:
    return f"{k}-of-{n}"


def shard_uri(root_uri: str, k: int, n: int) -> str:
    """Where shard ``k`` of ``n`` of the run at ``root_uri`` keeps its results."""
    return f"{root_uri.rstrip('/')}/{SHARDS_DIR}/{shard_name(k, n)}"


def shard_counts(root: Any) -> set[int]:
    """The shard counts whose folders are under ``root/shards`` (empty: no sharded run there)."""
    folder = root / SHARDS_DIR
    try:
        children = list(folder.iterdir()) if folder.is_dir() else []
    except FileNotFoundError:
        return set()
    return {int(m.group(2)) for child in children if (m := _SHARD_NAME.fullmatch(child.name))}


def check_layout(root: Any, shards: int | None, root_uri: str) -> None:
    """Refuse to mix layouts in one output folder (``shards=None``: an unsharded run). The other
    layout's results would not be read, so every item would be sent and paid for again."""
    counts = shard_counts(root)
    if shards is None:
        if counts:
            raise FlexInputError(
                f"output_path: {root_uri} holds the results of a sharded run (shards={sorted(counts)}); an unsharded "
                "run would not read them and would pay again for every item. Use the same shards, or a new output_path."
            )
        return
    others = sorted(counts - {shards})
    if others:
        raise FlexInputError(
            f"output_path: {root_uri} holds the results of a run with shards={others[0]}; shards={shards} would not "
            f"read them and would pay again for every item. Use shards={others[0]}, or a new output_path."
        )
    try:
        unsharded = (root / JOB_NAME).exists()
    except FileNotFoundError:
        unsharded = False
    if unsharded:
        raise FlexInputError(
            f"output_path: {root_uri} holds the results of an unsharded run ({JOB_NAME}); shards={shards} would not "
            "read them and would pay again for every item. Drop shards, or use a new output_path."
        )


# -- merging -------------------------------------------------------------------------------------
def _span(manifest: Mapping[str, Any]) -> tuple[datetime, datetime] | None:
    """(start, end) of a shard's last session, from its manifest (None: not readable)."""
    try:
        end = datetime.fromisoformat(str(manifest["finished_at"]))
        return end - timedelta(seconds=float(manifest.get("duration_s") or 0.0)), end
    except (KeyError, ValueError, TypeError):
        return None


def _add_counts(into: dict[str, int], found: Any) -> None:
    if isinstance(found, Mapping):
        for key, value in found.items():
            if _is_count(value):
                into[str(key)] = into.get(str(key), 0) + value


def _sum_cost(costs: list[Mapping[str, Any]]) -> dict[str, Any]:
    keys = ("actual", "standard_equivalent", "saved", "cache_saved")
    unpriced = sum(c.get("unpriced_tokens", 0) for c in costs if _is_count(c.get("unpriced_tokens", 0)))
    if unpriced or any(not isinstance(c.get(k), (int, float)) for c in costs for k in keys):
        return dict.fromkeys(keys) | ({"unpriced_tokens": unpriced} if unpriced else {})
    return {k: round(sum(float(c[k]) for c in costs), 6) for k in keys}


def _sum_budget(budgets: list[Any]) -> dict[str, Any] | None:
    found = [b for b in budgets if isinstance(b, Mapping)]
    if not found:
        return None
    out: dict[str, Any] = {k: round(sum(float(b.get(k) or 0.0) for b in found), 6) for k in _BUDGET_SUMMED}
    out.update({k: sum(int(b.get(k) or 0) for b in found) for k in _BUDGET_COUNTED})
    out["exhausted"] = any(bool(b.get("exhausted")) for b in found)
    order = (*_BUDGET_SUMMED, "refused", "exhausted", "unknown_costs", "overruns")  # BudgetSummary's
    return {key: out[key] for key in order}


def _sum_deadline(deadlines: list[Any]) -> dict[str, Any] | None:
    found = [d for d in deadlines if isinstance(d, Mapping)]
    if not found:
        return None
    extras = [float(e) for d in found if isinstance(e := d.get("extra_cost_usd"), (int, float))]
    latency = {
        key: max((d[key] for d in found if isinstance(d.get(key), (int, float))), default=None)
        for key in ("flex_latency_s", "fallback_latency_s")
    }
    return {
        "at": min(str(d.get("at")) for d in found),  # the same for every shard (made absolute before deferral)
        "met": all(bool(d.get("met")) for d in found),
        "finished_late": sum(int(d.get("finished_late") or 0) for d in found),
        "predicted_miss": any(bool(d.get("predicted_miss")) for d in found),
        "sent_flex": sum(int(d.get("sent_flex") or 0) for d in found),
        "sent_fallback": sum(int(d.get("sent_fallback") or 0) for d in found),
        "flex_latency_s": latency["flex_latency_s"],  # the slowest shard's
        "fallback_latency_s": latency["fallback_latency_s"],
        "on_fallback": sum(int(d.get("on_fallback") or 0) for d in found),
        "extra_cost_usd": round(sum(extras), 6) if len(extras) == len(found) else None,  # None: a model had no price
    }


def merge_manifests(manifests: Iterable[tuple[int, Mapping[str, Any]]], shards: int, output_uri: str) -> RunSummary:
    """One run summary from the shards' ``(k, manifest)``: every count summed, failures regrouped
    (:class:`FailureTally`, so groups of the same kind from several shards are one), ``duration_s``
    from the first shard's start to the last one's end, ``parts`` relative to the run's folder, and
    ``shards`` listing each shard's folder and counts (readers find every record through it)."""
    found = sorted(manifests, key=lambda km: km[0])
    summaries = [(k, as_summary(dict(m), f"{shard_name(k, shards)}/{MANIFEST_NAME}")) for k, m in found]
    header: dict[str, Any] = {"status": "success"}
    for key in _SUMMED:
        header[key] = sum(_count(cast("Mapping[str, Any]", s).get(key)) for _, s in summaries)
    this_run: dict[str, int] = {}
    for _, s in summaries:
        _add_counts(this_run, s.get("this_run"))
    header["this_run"] = this_run
    first: Mapping[str, Any] = summaries[0][1] if summaries else {}
    header["model"] = first.get("model")
    header["service_tier"] = first.get("service_tier")
    header["output_path"] = output_uri
    spans = [span for _, s in summaries if (span := _span(s)) is not None]
    header["duration_s"] = (
        round((max(e for _, e in spans) - min(b for b, _ in spans)).total_seconds(), 3) if spans else 0.0
    )
    header["finished_at"] = max((str(s["finished_at"]) for _, s in summaries), default=None)
    reasons: dict[str, int] = {}
    for _, s in summaries:
        _add_counts(reasons, s.get("fallbacks_by_reason"))
    header["fallbacks_by_reason"] = reasons
    header["budget"] = _sum_budget([s.get("budget") for _, s in summaries])
    header["deadline"] = _sum_deadline([s.get("deadline") for _, s in summaries])
    header["rate_limits"] = None  # each shard paced itself: its figures are in ``shards``

    failures = FailureTally()
    failed_ids: list[str] = []
    usage: dict[str, int] = {}
    tiers: dict[str, int] = {}
    for _, s in summaries:
        for group in s["failures"]:
            failures.add_group(group)
        failed_ids += [i for i in s.get("failed_ids") or [] if isinstance(i, str)]
        _add_counts(usage, s.get("usage"))
        _add_counts(tiers, s.get("tiers"))
    totals: dict[str, Any] = {
        "total": sum(int(s["total"]) for _, s in summaries),
        "succeeded": sum(int(s["succeeded"]) for _, s in summaries),
        "failed": sum(int(s["failed"]) for _, s in summaries),
        "failed_ids": failed_ids[:FAILED_IDS_SHOWN],
        "failures": failures.result(),
        "usage": usage,
        "cost_usd": _sum_cost([s["cost_usd"] for _, s in summaries]),
        "tiers": tiers,
        "skipped": sum(int(s.get("skipped") or 0) for _, s in summaries),
    }
    parts = [f"{SHARDS_DIR}/{shard_name(k, shards)}/{name}" for k, s in summaries for name in s.get("parts") or []]
    listing = [
        {
            "shard": k,
            "of": shards,
            "path": f"{SHARDS_DIR}/{shard_name(k, shards)}",
            **{key: s.get(key) for key in ("total", "succeeded", "failed", "skipped", "requests", "duration_s")},
            "finished_at": s.get("finished_at"),
            "rate_limits": s.get("rate_limits"),
        }
        for k, s in summaries
    ]
    return as_summary({**header, **totals, "parts": parts, "shards": listing})


def merge_shards(root: Any, shards: int, output_uri: str) -> RunSummary:
    """Read every shard's manifest under ``root`` and write the merged ``root/_manifest.json``
    (whole: temporary name, then rename). Idempotent: clearing a shard and merging again gives
    the same counts. A shard without a manifest has not completed: an error naming it."""
    manifests = []
    missing = []
    for k in range(shards):
        manifest = ResultStore(root / SHARDS_DIR / shard_name(k, shards)).read_manifest()
        if manifest is None:
            missing.append(shard_name(k, shards))
        else:
            manifests.append((k, manifest))
    if missing:
        raise FlexInputError(
            f"{output_uri}: shard(s) {', '.join(missing)} have no {MANIFEST_NAME}: they have not completed. "
            "Run (or clear) those shard tasks, then this merge again."
        )
    summary = merge_manifests(manifests, shards, output_uri)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / _TMP_MANIFEST
    tmp.write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    tmp.rename(root / MANIFEST_NAME)
    return summary


def iter_records(root: Any) -> Iterator[dict[str, Any]]:
    """Every final record of a run at ``root`` once: a sharded run's (through its merged manifest,
    each record's ``index`` put back to its position in the whole input) or an unsharded one's."""
    manifest = ResultStore(root).read_manifest()
    listing = manifest.get("shards") if isinstance(manifest, dict) else None
    if not isinstance(listing, list):
        yield from ResultStore(root).iter_records()
        return
    for entry in listing:
        k, n = int(entry["shard"]), int(entry["of"])
        for record in ResultStore(root / entry["path"]).iter_records():
            if _is_count(record.get("index")):
                record["index"] = k + record["index"] * n
            yield record
