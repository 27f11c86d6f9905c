"""Sharded flex runs (flex_provider.shards, flex_sharded): the factory's mapped tasks, which items each
shard sends, the merge of real shard folders written by the engine against the emulator, bad
``shards`` values, and a dag.test() of a 3-shard DAG giving one merged manifest."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import DAG, task

from flex_provider.engine.config import RequestSpec, RunOptions
from flex_provider.engine.errors import FlexInputError
from flex_provider.engine.store import MANIFEST_NAME, ResultStore
from flex_provider.hooks.flex import ClientSettings
from flex_provider.job import JOB_FORMAT, FlexJob, run_job
from flex_provider.operators.flex import FlexLLMOperator
from flex_provider.operators.sharded import FlexShardMergeOperator, FlexShards, flex_sharded
from flex_provider.shards import check_layout, iter_records, merge_manifests, merge_shards, shard_uri
from tests.airflow.conftest import API_KEY, CONN_ID, task_states, write_dag, xcom

log = logging.getLogger(__name__)
COMMON = {"conn_id": CONN_ID, "model": "gpt-5-mini", "instructions": "Classify."}


def dag() -> DAG:
    return DAG("t_shards", schedule=None)


# -- the factory ---------------------------------------------------------------------------------
def test_factory_builds_one_mapped_shard_task_and_a_merge_in_a_group(tmp_path: Path) -> None:
    with dag() as d:

        @task
        def extract() -> list[str]:
            return ["a", "b"]

        @task
        def report(summary: dict) -> None:
            pass

        up = extract()
        enrich = flex_sharded(task_id="enrich", shards=3, items=up, output_path=tmp_path.as_uri(), **COMMON)
        up >> enrich
        report(enrich.output)

    assert isinstance(enrich, FlexShards)
    assert set(d.task_ids) == {"extract", "enrich.shard", "enrich.merge", "report"}
    shard = d.get_task("enrich.shard")
    assert shard.operator_class is FlexLLMOperator or shard.operator_class.__name__ == "FlexLLMOperator"
    assert shard.expand_input.value == {"shard": [0, 1, 2]}
    assert shard.partial_kwargs["shards"] == 3
    merge = d.get_task("enrich.merge")
    assert isinstance(merge, FlexShardMergeOperator) and merge.shards == 3
    assert shard.upstream_task_ids == {"extract"} and merge.upstream_task_ids == {"enrich.shard"}
    assert d.get_task("report").upstream_task_ids == {"enrich.merge"}  # .output is the merged summary
    assert enrich.output.operator is merge


@pytest.mark.parametrize("shards", [0, -1, 1.5, "2", True, None, [2]])
def test_bad_shards_fail_at_parse_naming_the_field(tmp_path: Path, shards: Any) -> None:
    with dag(), pytest.raises(FlexInputError, match=r"^shards: expected the number of shards, an integer >= 1"):
        flex_sharded(task_id="enrich", shards=shards, items=["a"], output_path=tmp_path.as_uri(), **COMMON)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"items": ["a"]}, r"^output_path: flex_sharded needs an output folder"),
        ({"input": "one", "output_path": "/tmp/x"}, r"^input: one prompt cannot be sharded"),
        ({"items": ["a"], "output_path": "/tmp/x", "api": "completions"}, r"^api"),  # checked at parse, unmapped
        ({"items": ["a"], "output_path": "/tmp/x", "timeout": 0}, r"^timeout"),
        ({"items": ["a"], "output_path": "/tmp/x", "shard": 1}, r"^shard: set by flex_sharded"),
    ],
)
def test_bad_arguments_fail_at_parse(kwargs: dict, message: str) -> None:
    with dag() as d, pytest.raises(FlexInputError, match=message):
        flex_sharded(task_id="enrich", shards=2, **COMMON, **kwargs)
    assert not d.task_ids  # nothing half-built


@pytest.mark.parametrize(
    ("shard", "shards", "message"),
    [(2, 2, r"^shard: .* from 0 to 1"), (-1, 2, r"^shard"), (None, 2, r"^shard"), (0, 0, r"^shards")],
)
def test_the_operator_checks_its_shard(shard: Any, shards: Any, message: str) -> None:
    with pytest.raises(FlexInputError, match=message):
        FlexLLMOperator(task_id="t", items=["a"], output_path="/tmp/x", shard=shard, shards=shards, **COMMON)
    with pytest.raises(FlexInputError, match=r"^shards: a sharded run needs output_path"):
        FlexLLMOperator(task_id="t", items=["a"], shard=0, shards=2, **COMMON)


def test_the_whole_run_caps_are_split_between_shards() -> None:
    op = FlexLLMOperator(
        task_id="t", items=["a"], output_path="/tmp/x", shard=1, shards=4, max_requests_per_minute=400, **COMMON
    )
    assert op.run_options.max_requests_per_minute == 100


# -- which items a shard sends -------------------------------------------------------------------
def job(items: Any = None, input_uri: str | None = None, shard: tuple[int, int] | None = None) -> FlexJob:
    return FlexJob(
        conn_id=CONN_ID,
        spec=RequestSpec(model="gpt-5-mini"),
        options=RunOptions(),
        work_uri="file:///unused",
        items=items,
        input_uri=input_uri,
        input_label="items" if input_uri is None else "input_path",
        shard=shard,
    )


ITEMS = ["same", "same", {"id": "x", "text": "t"}, "other", "same", {"text": "d"}, {"text": "d"}] + [
    f"doc {i}" for i in range(10)
]


@pytest.mark.parametrize("n", [1, 2, 3, 5, 17, 20])
def test_each_item_goes_to_exactly_one_shard_with_the_ids_of_the_whole_input(n: int, tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(i) + "\n\n" for i in ITEMS))  # blank lines are no positions
    for inputs in ({"items": ITEMS}, {"input_uri": source.as_uri()}):
        whole = [item.id for item in job(**inputs).iter_items()]
        assert len(set(whole)) == len(ITEMS)  # repeats got -2, -3: one id per position
        shares = []
        for k in range(n):
            sharded = job(**inputs, shard=(k, n))
            assert sharded.validate_input() == len(range(k, len(ITEMS), n)) and sharded.input_total == len(ITEMS)
            shares.append([item.id for item in sharded.iter_items()])
            assert shares[-1] == whole[k::n]  # input positions p with p % n == k, in order
        assert sorted(i for share in shares for i in share) == sorted(whole)


def test_an_id_repeated_in_another_shards_items_fails_every_shard() -> None:
    items = [{"id": "a", "text": "1"}, {"id": "b", "text": "2"}, {"id": "a", "text": "3"}]
    for k in range(2):  # positions 0 and 2 are shard 0's; shard 1 still reads them and refuses
        with pytest.raises(FlexInputError, match=r"items\[0\] and items\[2\] both have id 'a'"):
            job(items, shard=(k, 2)).validate_input()


def test_shard_travels_in_payload_format_3_and_older_payloads_have_none() -> None:
    payload = job(["a"], shard=(1, 3)).to_payload()
    assert payload["format"] == JOB_FORMAT == 3 and payload["shard"] == [1, 3]
    assert FlexJob.from_payload(json.loads(json.dumps(payload))).shard == (1, 3)
    older = {**payload, "format": 2}
    del older["shard"]
    assert FlexJob.from_payload(older).shard is None
    with pytest.raises(FlexInputError, match=r"^shard: expected \[k, n\]"):
        FlexJob.from_payload({**payload, "shard": [3, 3]})


# -- merging real shard folders ------------------------------------------------------------------
def run_shards(emu: Any, root: Path, items: list[Any], n: int) -> None:
    settings = ClientSettings(api_key=API_KEY, base_url=emu.base_url)

    async def all_shards() -> None:
        jobs = []
        for k in range(n):
            sharded = job(items, shard=(k, n))
            sharded.work_uri = sharded.output_uri = shard_uri(root.as_uri(), k, n)
            sharded.total = sharded.validate_input()
            jobs.append(run_job(sharded, log, settings=settings, metrics=False))
        events = await asyncio.gather(*jobs)
        assert all(e.status == "success" for e in events), events

    asyncio.run(all_shards())


def test_merge_of_engine_written_shards_counts_every_item_once(emu, tmp_path: Path) -> None:
    emu.update(unavailable_rate=0.2, retry_after_s=0.01)
    items = [{"id": f"d{i}", "text": f"shard document {i}"} for i in range(23)]
    run_shards(emu, tmp_path, items, 3)
    summary = merge_shards(tmp_path, 3, tmp_path.as_uri())
    assert json.loads((tmp_path / MANIFEST_NAME).read_text()) == json.loads(json.dumps(summary))
    stats = emu.stats()
    assert summary["total"] == summary["succeeded"] == 23 and summary["failed"] == 0
    assert summary["requests"] == stats["requests"] and summary["unavailable"] > 0
    assert summary["tiers"] == {"flex": 23} and summary["cost_usd"]["saved"] > 0
    assert [s["total"] for s in summary["shards"]] == [8, 8, 7]
    # parts are relative to the run's folder: a reader of manifest["parts"] reads each record once
    ids = [json.loads(line)["id"] for name in summary["parts"] for line in (tmp_path / name).read_text().splitlines()]
    assert sorted(ids) == sorted(i["id"] for i in items)
    records = list(iter_records(tmp_path))
    assert sorted((r["index"], r["id"]) for r in records) == [(i, f"d{i}") for i in range(23)]  # input positions

    # a cleared shard runs again: nothing sent, nothing counted twice
    requests = stats["requests"]
    run_shards(emu, tmp_path, items, 3)
    again = merge_shards(tmp_path, 3, tmp_path.as_uri())
    assert emu.stats()["requests"] == requests
    assert {k: again[k] for k in ("total", "succeeded", "requests", "usage", "cost_usd")} == {
        k: summary[k] for k in ("total", "succeeded", "requests", "usage", "cost_usd")
    }


def test_merge_refuses_an_incomplete_run_and_mixed_layouts(emu, tmp_path: Path) -> None:
    run_shards(emu, tmp_path, ["a", "b", "c"], 2)
    (tmp_path / "shards" / "1-of-2" / MANIFEST_NAME).unlink()
    with pytest.raises(FlexInputError, match=r"shard\(s\) 1-of-2 have no _manifest.json: they have not completed"):
        merge_shards(tmp_path, 2, tmp_path.as_uri())
    check_layout(tmp_path, 2, "here")  # the same count: fine
    with pytest.raises(FlexInputError, match=r"^output_path: here holds the results of a run with shards=2; shards=3"):
        check_layout(tmp_path, 3, "here")
    with pytest.raises(FlexInputError, match=r"holds the results of a sharded run"):
        check_layout(tmp_path, None, "here")
    ResultStore(tmp_path / "plain").claim("fp", {})
    with pytest.raises(FlexInputError, match=r"holds the results of an unsharded run"):
        check_layout(tmp_path / "plain", 2, "here")


def manifest(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "status": "success",
        "requests": 5,
        "unavailable": 1,
        "rate_limited": 0,
        "transient_errors": 0,
        "malformed_answers": 0,
        "fallbacks": 1,
        "this_run": {"requests": 5, "resumed": 0, "processed": 4},
        "model": "gpt-5-mini",
        "service_tier": "flex",
        "output_path": "x",
        "duration_s": 10.0,
        "finished_at": "2026-11-29T10:00:10+00:00",
        "fallbacks_by_reason": {"unavailable": 1},
        "budget": None,
        "deadline": None,
        "rate_limits": None,
        "total": 4,
        "succeeded": 3,
        "failed": 1,
        "failed_ids": ["f"],
        "failures": [
            {
                "type": "NotFoundError",
                "code": "model_not_found",
                "status_code": 404,
                "count": 1,
                "retryable": False,
                "sample_message": "no such model",
                "sample_ids": ["f"],
            }
        ],
        "usage": {"input": 100, "cached": 0, "output": 50, "reasoning": 0},
        "cost_usd": {"actual": 0.5, "standard_equivalent": 1.0, "saved": 0.5, "cache_saved": 0.0},
        "tiers": {"flex": 3, "default": 1},
        "skipped": 0,
        "parts": ["part-a.jsonl"],
    }
    return {**base, **overrides}


def test_merge_sums_counts_regroups_failures_and_spans_the_durations() -> None:
    second = manifest(
        finished_at="2026-11-29T10:00:30+00:00",
        duration_s=25.0,
        failed_ids=["g"],
        failures=[{**manifest()["failures"][0], "sample_ids": ["g"]}],
        budget={
            "max_cost_usd": 1.0,
            "spent": 0.5,
            "spent_before": 0,
            "spent_this_run": 0.5,
            "reserved": 0,
            "refused": 2,
            "exhausted": True,
            "unknown_costs": 0,
            "overruns": 0,
        },
        skipped=2,
    )
    merged = merge_manifests([(1, second), (0, manifest())], 2, "file:///out")
    assert merged["total"] == 8 and merged["succeeded"] == 6 and merged["failed"] == 2 and merged["skipped"] == 2
    assert merged["requests"] == 10 and merged["this_run"] == {"requests": 10, "resumed": 0, "processed": 8}
    assert merged["failures"] == [{**manifest()["failures"][0], "count": 2, "sample_ids": ["f", "g"]}]
    assert merged["failed_ids"] == ["f", "g"]
    assert merged["cost_usd"] == {"actual": 1.0, "standard_equivalent": 2.0, "saved": 1.0, "cache_saved": 0.0}
    assert merged["tiers"] == {"flex": 6, "default": 2} and merged["usage"]["input"] == 200
    assert merged["duration_s"] == 30.0  # 10:00:00 (the first start) to 10:00:30 (the last end)
    assert merged["budget"]["refused"] == 2 and merged["budget"]["exhausted"] is True
    assert merged["parts"] == ["shards/0-of-2/part-a.jsonl", "shards/1-of-2/part-a.jsonl"]
    assert [s["path"] for s in merged["shards"]] == ["shards/0-of-2", "shards/1-of-2"]
    unknown = merge_manifests([(0, manifest()), (1, manifest(cost_usd={"actual": None, "unpriced_tokens": 7}))], 2, "x")
    assert unknown["cost_usd"]["actual"] is None and unknown["cost_usd"]["unpriced_tokens"] == 7


# -- a sharded DAG in Airflow ----------------------------------------------------------------------
def test_dag_test_of_three_shards_gives_one_merged_manifest(airflow_db, emu, tmp_path: Path) -> None:
    emu.update(unavailable_rate=0.15, retry_after_s=0.01)
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": f"t{i}", "text": f"dag shard doc {i}"}) + "\n" for i in range(31)))
    out = tmp_path / "out"
    body = """
        from flex_provider.operators.sharded import flex_sharded
        flex_sharded(task_id="enrich", shards=3, conn_id=CONN_ID, model="gpt-5-mini", input_path={src!r},
                     output_path={out!r} + "/{{{{ ds }}}}", max_concurrency=4, progress_interval=0.2)
        """
    d = write_dag(body, src=source.as_uri(), out=out.as_uri())
    run = d.test()
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert states == {"enrich.shard": "success", "enrich.merge": "success"}
    assert sorted(ti.map_index for ti in run.get_task_instances() if ti.task_id == "enrich.shard") == [0, 1, 2]
    summary = xcom(run, "enrich.merge")
    folder = next(out.iterdir())  # rendered by each shard and by the merge alike
    manifest_ = json.loads((folder / MANIFEST_NAME).read_text())
    requests = emu.stats()["requests"]
    assert summary["total"] == manifest_["total"] == manifest_["succeeded"] == 31
    assert manifest_["requests"] == requests and requests >= 31 and manifest_["unavailable"] > 0
    assert summary["output_path"] == folder.as_uri() and "parts" not in summary
    assert sorted(r["id"] for r in iter_records(folder)) == sorted(f"t{i}" for i in range(31))

    # the same run again (a clear of the group): every shard resumes, nothing is sent or counted twice
    rerun = write_dag(body, src=source.as_uri(), out=out.as_uri()).test()
    assert set(task_states(rerun).values()) == {"success"}
    assert emu.stats()["requests"] == requests
    again = json.loads((folder / MANIFEST_NAME).read_text())
    assert again["succeeded"] == 31 and again["requests"] == requests


# -- verdicts: max_failed over the whole run -------------------------------------------------------
def write_shard(root: Path, k: int, n: int, **overrides: Any) -> str:
    folder = root / "shards" / f"{k}-of-{n}"
    folder.mkdir(parents=True)
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest(**overrides)))
    return folder.as_uri()


def ctx(task_id: str = "t") -> dict[str, Any]:
    from tests.fakes import FakeTI

    return {"ti": FakeTI(task_id=task_id), "outlet_events": {}}


@pytest.mark.parametrize(
    ("max_failed", "shard_fails", "merge_fails"),
    [(3, False, True), (1, True, True), (4, False, False), (0.5, False, False), (0.3, False, True)],
)
def test_a_shard_fails_only_over_the_whole_allowance_and_the_merge_judges_the_sum(
    tmp_path: Path, max_failed: Any, shard_fails: bool, merge_fails: bool
) -> None:
    """Two shards of 4 items each, 2 failed in each: 4 of 8 failed in all."""
    from airflow.sdk.exceptions import AirflowException

    failures = [{**manifest()["failures"][0], "count": 2}]
    uris = [write_shard(tmp_path, k, 2, total=4, succeeded=2, failed=2, failures=failures) for k in range(2)]
    shard = FlexLLMOperator(
        task_id="s", items=["x"], output_path=tmp_path.as_uri(), shard=0, shards=2, max_failed=max_failed, **COMMON
    )
    event = {"status": "success", "work_uri": uris[0]}
    context = ctx()
    if shard_fails:
        with pytest.raises(
            AirflowException,
            match=r"2 of 4 item\(s\) failed, more than max_failed=1 of the whole run, in shard 0 of 2 alone",
        ):
            shard.execute_complete(context, event, input_total=8)
    else:
        assert shard.execute_complete(context, event, input_total=8)["failed"] == 2
    assert "flex_run_summary" not in context["ti"].pushed  # the merge pushes the whole run's

    merge = FlexShardMergeOperator(task_id="m", output_path=tmp_path.as_uri(), shards=2, max_failed=max_failed)
    context = ctx()
    if merge_fails:
        with pytest.raises(AirflowException, match=r"4 of 8 item\(s\) failed over 2 shards, more than max_failed"):
            merge.execute(context)
    else:
        assert merge.execute(context)["failed"] == 4
    assert context["ti"].pushed["flex_run_summary"]["failed"] == 4  # pushed before the verdict: it was paid
    assert context["ti"].pushed["flex_results_uri"] == tmp_path.as_uri()


def test_the_operator_refuses_a_folder_of_another_layout_before_sending(emu, tmp_path: Path) -> None:
    write_shard(tmp_path, 0, 2)
    context = {**ctx(), "ds": "2026-01-01", "run_id": "r1", "params": {}}
    unsharded = FlexLLMOperator(task_id="t", items=["a"], output_path=tmp_path.as_uri(), **COMMON)
    with pytest.raises(FlexInputError, match=r"holds the results of a sharded run \(shards=\[2\]\)"):
        unsharded.build_job(context)
    other_count = FlexLLMOperator(task_id="t", items=["a"], output_path=tmp_path.as_uri(), shard=0, shards=3, **COMMON)
    with pytest.raises(FlexInputError, match=r"shards=2; shards=3 would not read them"):
        other_count.build_job(context)
    same = FlexLLMOperator(
        task_id="t", items=["a", "b", "c"], output_path=tmp_path.as_uri(), shard=1, shards=2, **COMMON
    )
    built = same.build_job(context)
    assert built.work_uri == f"{tmp_path.as_uri()}/shards/1-of-2" and built.shard == (1, 2)
    assert built.total == 1 and built.input_total == 3
    assert emu.stats()["requests"] == 0


def test_the_whole_run_budget_is_split_between_shards(tmp_path: Path) -> None:
    context = {**ctx(), "ds": "2026-01-01", "run_id": "r1", "params": {}}
    op = FlexLLMOperator(
        task_id="t", items=["a"], output_path=tmp_path.as_uri(), shard=0, shards=4, max_cost_usd="2.0", **COMMON
    )
    assert op.build_job(context).options.max_cost_usd == 0.5
