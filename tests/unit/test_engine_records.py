"""records.py: the record and summary shapes (a contract read by the operator, DAGs, demo and README)."""

from __future__ import annotations

import json
import re

import pytest

from flex_provider.engine.attempt import ItemAttempt
from flex_provider.engine.background import BackgroundFailed
from flex_provider.engine.calls import Reply
from flex_provider.engine.errors import OutputValidationError, Verdict, WaitTooLong
from flex_provider.engine.items import WorkItem
from flex_provider.engine.pricing import PriceTable
from flex_provider.engine.progress import RunCounters
from flex_provider.engine.records import (
    ErrorInfo,
    Recorder,
    RecordTotals,
    ResultBytes,
    ResultRecord,
    RunHeader,
    RunSummary,
    ThisRun,
    build_record,
    failure_info,
    run_header,
    summarize_records,
)
from flex_provider.engine.usage import Usage

# The order the README shows and every earlier version wrote: part files stay byte-for-byte the same.
RECORD_KEYS = [
    "id",
    "index",
    "status",
    "output",
    "service_tier",
    "requested_tier",
    "fallback",
    "model",
    "usage",
    "attempts",
    "error",
    "response_id",
    "prompt_hash",
    "finished_at",
    "fallback_reason",  # added later: last, so the keys above stay where earlier versions wrote them
]
HEADER_KEYS = [
    "status",
    "requests",
    "unavailable",
    "rate_limited",
    "transient_errors",
    "malformed_answers",
    "fallbacks",
    "this_run",
    "model",
    "service_tier",
    "output_path",
    "duration_s",
    "finished_at",
    "fallbacks_by_reason",  # added later, last
    "budget",
    "deadline",
    "rate_limits",
]
THIS_RUN_KEYS = ["requests", "resumed", "processed", "duplicates_in_input", "prompt_changed", "background_reattached"]
TOTALS_KEYS = ["total", "succeeded", "failed", "failed_ids", "failures", "usage", "cost_usd", "tiers", "skipped"]
KEY = "sk-test-records-0123456789abcdef"


def attempt(tier: str = "flex", attempts: int = 1) -> ItemAttempt:
    a = ItemAttempt(WorkItem("t-1", "the prompt", index=4), "3f9a0c1b2d4e5f60", tier)
    a.attempts = attempts
    return a


def recorder() -> Recorder:
    return Recorder(RunCounters(), PriceTable(), "gpt-5-mini", secrets=(KEY,))


def test_typed_dicts_name_exactly_the_keys_the_builders_write():
    assert list(ResultRecord.__annotations__) == RECORD_KEYS
    assert list(RunHeader.__annotations__) == HEADER_KEYS
    assert list(ThisRun.__annotations__) == THIS_RUN_KEYS
    assert list(RecordTotals.__annotations__) == TOTALS_KEYS
    assert set(RunSummary.__annotations__) == {*HEADER_KEYS, *TOTALS_KEYS, "parts"}
    assert ErrorInfo.__required_keys__ == {"type", "message", "retryable"}
    assert ErrorInfo.__optional_keys__ == {"status_code", "code", "request_id"}


def test_success_and_failure_come_from_the_one_builder_status_follows_error():
    ok = build_record(attempt(), output="x", service_tier="flex", model="m", usage=Usage(), error=None, response_id="r")
    error: ErrorInfo = {"type": "TimeoutError", "message": "TimeoutError", "retryable": True}
    bad = build_record(
        attempt(), output=None, service_tier=None, model="m", usage=Usage(), error=error, response_id=None
    )
    assert list(ok) == list(bad) == RECORD_KEYS
    assert (ok["status"], bad["status"]) == ("succeeded", "failed")
    assert bad["error"] is error


def test_a_success_record_has_every_key_in_order_and_the_served_model_and_tier():
    reply = Reply({"category": "billing"}, "flex", Usage(412, 0, 151, 64), "resp_1", "gpt-5-mini-2025-08-07")
    record = recorder().success(attempt(attempts=2), reply)

    assert list(record) == RECORD_KEYS
    assert {k: v for k, v in record.items() if k != "finished_at"} == {
        "id": "t-1",
        "index": 4,
        "status": "succeeded",
        "output": {"category": "billing"},
        "service_tier": "flex",
        "requested_tier": "flex",
        "fallback": False,
        "model": "gpt-5-mini-2025-08-07",
        "usage": {"input": 412, "cached": 0, "output": 151, "reasoning": 64},
        "attempts": 2,
        "error": None,
        "response_id": "resp_1",
        "prompt_hash": "3f9a0c1b2d4e5f60",
        "fallback_reason": None,
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00", record["finished_at"])


def test_a_success_without_a_model_in_the_answer_is_recorded_as_the_spec_model():
    record = recorder().success(attempt(), Reply("text", None, Usage(), None))
    assert record["model"] == "gpt-5-mini" and record["service_tier"] is None and record["response_id"] is None


def test_a_fallen_back_record_names_the_fallback_tier_it_asked_for():
    a = attempt(attempts=3)
    a.fall_back("default", Verdict.UNAVAILABLE)
    a.attempts += 1
    record = recorder().success(a, Reply("text", "default", Usage(), "resp_2", "m"))
    assert (record["requested_tier"], record["fallback"], record["attempts"]) == ("default", True, 4)
    assert record["fallback_reason"] == "unavailable"


def test_an_item_the_budget_cannot_afford_is_recorded_skipped_retryable_and_counted_apart():
    from flex_provider.engine.budget import OverBudget

    rec = recorder()
    record = rec.skipped(attempt(attempts=0), OverBudget(0.004, 0.0195, 0.02))
    assert list(record) == RECORD_KEYS
    assert record["status"] == "skipped" and record["output"] is None and record["service_tier"] is None
    assert record["error"] == {
        "type": "OverBudget",
        "code": "budget",
        "message": "not sent: its worst-case cost $0.004000 does not fit the budget (spent $0.019500 of "
        "max_cost_usd=$0.020000); a run with a higher max_cost_usd sends it",
        "retryable": True,
    }
    assert (rec.counters.budget_skipped, rec.counters.failed, rec.counters.succeeded) == (1, 0, 0)
    assert rec.counters.usage == Usage() and rec.counters.cost.actual == 0


def test_summarize_records_counts_skipped_items_apart_from_failures_and_prices_the_deadline():
    from flex_provider.engine.records import DeadlineTally

    prices = PriceTable()
    usage = {"input": 1000, "output": 1000}
    records = [
        {"id": "a", "status": "succeeded", "usage": usage, "service_tier": "flex", "fallback_reason": None},
        {"id": "b", "status": "succeeded", "usage": usage, "service_tier": "default", "fallback_reason": "deadline"},
        {"id": "c", "status": "succeeded", "usage": usage, "service_tier": "default", "fallback_reason": "unavailable"},
        {"id": "d", "status": "skipped", "usage": None, "error": {"code": "budget", "retryable": True}},
    ]
    tally = DeadlineTally("flex")
    totals = summarize_records(records, prices, "gpt-5-mini", tally)
    assert (totals["total"], totals["succeeded"], totals["failed"], totals["skipped"]) == (4, 3, 0, 1)
    assert totals["failures"] == [] and totals["failed_ids"] == []
    standard = prices.standard_cost("gpt-5-mini", Usage(input=1000, output=1000))
    assert standard is not None
    # Only the deadline's fallback is the deadline's price: standard minus its flex price, i.e. half.
    assert tally.items == 1 and tally.extra_cost() == pytest.approx(standard / 2, abs=1e-6)


def test_a_failure_record_has_the_same_keys_and_a_redacted_error(api_error):
    exc = api_error(400, code="invalid_prompt", message=f"bad input near {KEY}", request_id="req_9")
    record = recorder().failure(attempt(), exc)

    assert list(record) == RECORD_KEYS
    assert {k: v for k, v in record.items() if k != "finished_at"} == {
        "id": "t-1",
        "index": 4,
        "status": "failed",
        "output": None,
        "service_tier": None,
        "requested_tier": "flex",
        "fallback": False,
        "model": "gpt-5-mini",
        "usage": {"input": 0, "cached": 0, "output": 0, "reasoning": 0},
        "attempts": 1,
        "error": {
            "type": "BadRequestError",
            "status_code": 400,
            "code": "invalid_prompt",
            "message": "bad input near ***",
            "request_id": "req_9",
            "retryable": False,
        },
        "response_id": None,
        "prompt_hash": "3f9a0c1b2d4e5f60",
        "fallback_reason": None,
    }
    assert list(record["error"] or {}) == ["type", "status_code", "code", "message", "request_id", "retryable"]


def test_a_billed_failure_records_and_counts_what_the_answer_cost():
    exc = OutputValidationError("output is not valid JSON")
    exc.usage, exc.service_tier, exc.model = Usage(input=10, output=5), "flex", "gpt-5-mini-2025-08-07"
    rec = recorder()
    record = rec.failure(attempt(), exc)

    assert record["usage"] == {"input": 10, "cached": 0, "output": 5, "reasoning": 0}
    assert (record["service_tier"], record["model"]) == ("flex", "gpt-5-mini-2025-08-07")
    assert record["error"] == {
        "type": "OutputValidationError",
        "message": "output is not valid JSON",
        "retryable": False,
    }
    assert rec.counters.failed == 1 and rec.counters.usage == Usage(input=10, output=5)
    assert rec.counters.cost.actual > 0


def test_the_recorder_counts_each_outcome_once():
    rec = recorder()
    rec.success(attempt(), Reply("a", "flex", Usage(input=100, output=10), "r1", "gpt-5-mini"))
    rec.success(attempt(), Reply("b", "flex", Usage(input=100, output=10), "r2", "gpt-5-mini"))
    rec.failure(attempt(), TimeoutError())
    assert (rec.counters.succeeded, rec.counters.failed) == (2, 1)
    assert rec.counters.usage == Usage(input=200, output=20)


@pytest.mark.parametrize(
    ("make", "retryable"),
    [
        (lambda e: e(429, code="resource_unavailable"), True),
        (lambda e: e(429, code="rate_limit_exceeded"), True),
        (lambda e: e(503), True),
        (lambda e: TimeoutError(), True),
        (lambda e: WaitTooLong("resets in 24h"), True),
        (lambda e: BackgroundFailed("failed", "budget", retryable=True), True),
        (lambda e: BackgroundFailed("incomplete", "max_output_tokens", retryable=False), False),
        (lambda e: e(400), False),
        (lambda e: e(404), False),
        (lambda e: OutputValidationError("no"), False),
    ],
)
def test_failure_info_says_whether_a_later_run_may_succeed(api_error, make, retryable):
    info = failure_info(make(api_error))
    assert info["retryable"] is retryable
    assert list(info)[-1] == "retryable"


def test_run_header_sums_every_sessions_progress_and_reports_this_run():
    counters = RunCounters(requests=7, succeeded=4, failed=1, resumed=3, duplicates=2, prompt_changed=1)
    counters.background_reattached = 5
    sessions = [
        {"requests": 10, "unavailable": 2, "malformed": 1, "fallbacks": 1},
        {"requests": "7", "rate_limited": 3, "transient_errors": 4, "background_created": 9},
    ]
    header = run_header(
        sessions, counters, model="gpt-5-mini", service_tier="flex", output_path="s3://b/run/", duration_s=1.5
    )

    assert list(header) == HEADER_KEYS and list(header["this_run"]) == THIS_RUN_KEYS
    assert {k: v for k, v in header.items() if k != "finished_at"} == {
        "status": "success",
        "requests": 17,
        "unavailable": 2,
        "rate_limited": 3,
        "transient_errors": 4,
        "malformed_answers": 1,
        "fallbacks": 1,
        "this_run": {
            "requests": 7,
            "resumed": 3,
            "processed": 5,
            "duplicates_in_input": 2,
            "prompt_changed": 1,
            "background_reattached": 5,
        },
        "model": "gpt-5-mini",
        "service_tier": "flex",
        "output_path": "s3://b/run/",
        "duration_s": 1.5,
        "fallbacks_by_reason": {"unavailable": 1},  # a file that does not say why: flex capacity, as before
        "budget": None,
        "deadline": None,
        "rate_limits": None,
    }


def test_summarize_records_totals_usage_cost_and_names_the_first_failures():
    prices = PriceTable()
    records = [
        {"id": "ok", "status": "succeeded", "usage": {"input": 1000, "output": 100}, "service_tier": "flex"},
        *({"id": f"bad-{n}", "status": "failed", "usage": None, "model": None} for n in range(25)),
    ]
    totals = summarize_records(records, prices, "gpt-5-mini")

    assert list(totals) == TOTALS_KEYS
    assert (totals["total"], totals["succeeded"], totals["failed"]) == (26, 1, 25)
    assert totals["failed_ids"] == [f"bad-{n}" for n in range(20)]
    assert totals["usage"] == {"input": 1000, "cached": 0, "output": 100, "reasoning": 0}
    assert totals["cost_usd"]["saved"] == pytest.approx(totals["cost_usd"]["actual"])  # flex: half price
    assert totals["cost_usd"]["actual"] > 0
    assert totals["tiers"] == {"flex": 1}  # the failures were never answered: no tier


def test_summarize_records_counts_final_records_by_the_tier_that_served_them():
    records = [
        {"id": "a", "status": "succeeded", "usage": None, "service_tier": "flex"},
        {"id": "b", "status": "succeeded", "usage": None, "service_tier": "default"},
        {"id": "c", "status": "succeeded", "usage": None, "service_tier": "flex"},
        {"id": "d", "status": "failed", "usage": None, "service_tier": "flex"},  # refused, billed on flex
        {"id": "e", "status": "failed", "usage": None, "service_tier": None},
        {"id": "f", "status": "succeeded", "usage": None, "service_tier": 3},  # damaged: not a tier
    ]
    assert summarize_records(records, PriceTable(), "gpt-5-mini")["tiers"] == {"flex": 3, "default": 1}


def test_the_recorder_counts_answers_by_served_tier_as_the_summary_does():
    rec = recorder()
    rec.success(attempt(), Reply("x", "flex", Usage(), "r", "m"))
    rec.success(attempt("default"), Reply("x", "default", Usage(), "r", "m"))
    rec.success(attempt(), Reply("x", None, Usage(), "r", "m"))  # the server did not say
    billed = OutputValidationError("output is not valid JSON")
    billed.service_tier = "flex"
    rec.failure(attempt(), billed)
    rec.failure(attempt(), TimeoutError())
    assert rec.counters.tiers == {"flex": 2, "default": 1}


def _failed(
    rid: str,
    kind: str = "NotFoundError",
    code: str | None = "model_not_found",
    status: int | None = 404,
    retryable: bool = False,
    message: str = "The model 'gpt-x' does not exist",
) -> dict:
    error = {"type": kind, "status_code": status, "code": code, "message": message, "retryable": retryable}
    return {"id": rid, "status": "failed", "output": None, "usage": None, "error": error}


def test_summarize_records_groups_failures_by_kind_biggest_first_with_samples():
    records = [
        {"id": "ok", "status": "succeeded", "usage": None, "output": "secret answer"},
        _failed("t-1", "OutputValidationError", None, None, message="output does not match response_format"),
        *(_failed(f"m-{n}", message=f"The model 'gpt-x' does not exist ({n})" + "x" * 400) for n in range(7)),
        _failed("r-1", "RateLimitError", "rate_limit_exceeded", 429, retryable=True, message="Rate limit reached"),
        _failed("r-2", "RateLimitError", "rate_limit_exceeded", 429, retryable=True, message="Rate limit again"),
        {"id": "odd", "status": "failed", "error": "not a dict"},
    ]
    failures = summarize_records(records, PriceTable(), "gpt-5-mini")["failures"]

    assert [(g["type"], g["code"], g["status_code"], g["count"], g["retryable"]) for g in failures] == [
        ("NotFoundError", "model_not_found", 404, 7, False),
        ("RateLimitError", "rate_limit_exceeded", 429, 2, True),
        ("OutputValidationError", None, None, 1, False),  # ties: first met first
        ("unknown", None, None, 1, False),
    ]
    top = failures[0]
    assert list(top) == ["type", "code", "status_code", "count", "retryable", "sample_message", "sample_ids"]
    assert top["sample_ids"] == ["m-0", "m-1", "m-2", "m-3", "m-4"]
    assert top["sample_message"].startswith("The model 'gpt-x' does not exist (0)")  # the first one
    assert len(top["sample_message"]) == 300 and top["sample_message"].endswith("...")
    assert failures[1]["sample_message"] == "Rate limit reached"
    assert "secret answer" not in json.dumps(failures)
    assert sum(g["count"] for g in failures) == 11


def test_failures_show_at_most_twenty_groups_and_fold_the_rest_so_counts_add_up():
    records = [_failed(f"{k}-{n}", f"Error{k}", retryable=k == 30) for k in range(300) for n in range(1 + (k < 3))]
    totals = summarize_records(records, PriceTable(), "gpt-5-mini")
    failures = totals["failures"]
    assert len(failures) == 20
    assert [g["type"] for g in failures[:3]] == ["Error0", "Error1", "Error2"]  # two each: the biggest
    other = failures[-1]
    assert other["type"] == "other" and other["code"] is None and other["retryable"] is True  # Error30 is in it
    assert sum(g["count"] for g in failures) == totals["failed"] == 303
    assert len(other["sample_ids"]) == 5


def test_records_are_json_native():
    record = recorder().success(attempt(), Reply({"a": [1, 2]}, "flex", Usage(1, 0, 1, 0), "r", "m"))
    assert json.loads(json.dumps(record)) == record


def test_result_bytes_counts_nothing_without_a_limit():
    budget = ResultBytes(None)
    assert budget.add(recorder().success(attempt(), Reply("x" * 10_000, "flex", Usage(), "r", "m"))) is False
    assert budget.used == 0 and not budget.over


def test_result_bytes_stops_once_the_records_are_over_the_limit():
    record = recorder().success(attempt(), Reply("x" * 100, "flex", Usage(), "r", "m"))
    size = len(json.dumps(record, ensure_ascii=False, default=str).encode("utf-8"))
    budget = ResultBytes(limit=2 * size, used=size)  # one record already on storage
    assert budget.add(record) is False and budget.used == 2 * size and not budget.over
    assert budget.add(record) is True and budget.over
    error = budget.stopped_error()
    assert error.info == {"type": "ResultsTooLarge", "result_bytes": 3 * size}
    assert f"already take {3 * size} bytes, over the XCom limit of {2 * size} bytes (xcom_max_bytes)" in str(error)


def test_as_summary_accepts_a_manifest_and_names_what_is_missing():
    from flex_provider.engine.records import RunSummary, as_summary

    full = {key: 0 for key in RunSummary.__required_keys__}
    assert as_summary(full) is full
    older = {key: 0 for key in RunSummary.__required_keys__ if key != "failures"}  # written before failures
    assert as_summary(older)["failures"] == []
    before_tiers = {key: 0 for key in RunSummary.__required_keys__ if key not in ("failures", "tiers")}
    summary = as_summary(before_tiers)
    assert (summary["tiers"], summary["failures"]) == ({}, [])
    with pytest.raises(
        ValueError, match=r"^out/_manifest.json: not a run summary of this provider, missing \['total'\]"
    ):
        as_summary({k: v for k, v in full.items() if k != "total"}, "out/_manifest.json")
    with pytest.raises(ValueError, match=r"expected a run summary \(a JSON object\), got list"):
        as_summary([1])


# -- no prompt or model output in a failure message ------------------------------------------------

PRIVATE = "Jane Roe, card 4111-1111"  # what a model may answer: private, never in an error message
STRICT_SCHEMA = {
    "type": "object",
    "properties": {
        "label": {"type": "string", "enum": ["spam", "ham"]},
        "score": {"type": "number"},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 1},
        "extra": {"type": "object", "additionalProperties": {"type": "integer"}},
    },
    "required": ["label", "score", "tags"],
    "additionalProperties": False,
}


def _chat_answer(content: str | None, refusal: str | None = None) -> object:
    from types import SimpleNamespace

    message = SimpleNamespace(content=content, refusal=refusal)
    return SimpleNamespace(
        choices=[SimpleNamespace(message=message)], usage=None, service_tier="flex", model="gpt-5-mini"
    )


@pytest.mark.parametrize(
    ("content", "refusal", "expected"),
    [
        ({"label": "ham", "score": PRIVATE, "tags": []}, None, "at score: fails the schema's 'type': 'number'"),
        ({"label": PRIVATE, "score": 1, "tags": []}, None, "at label: fails the schema's 'enum': ['spam', 'ham']"),
        ({"label": "ham", "score": 1, "tags": ["a", PRIVATE]}, None, "at tags: fails the schema's 'maxItems': 1"),
        (
            {"label": "ham", "score": 1, "tags": [{"note": PRIVATE}]},
            None,
            "at tags/0: fails the schema's 'type': 'string'",
        ),
        (
            {"label": "ham", "score": 1, "tags": [], PRIVATE: 1},
            None,
            "at <root>: holds properties the schema does not allow",
        ),
        (
            {"label": "ham", "score": 1, "tags": [], "extra": {PRIVATE: PRIVATE}},
            None,
            "at extra/*: fails the schema's 'type': 'integer'",
        ),
        ({PRIVATE: "ham", "score": 1, "tags": []}, None, "at <root>: missing required property 'label'"),
        (PRIVATE, None, "output is not valid JSON"),
        (None, f"I cannot help {PRIVATE}", "the model refused to answer"),
    ],
)
def test_no_failure_message_carries_model_output_to_records_summary_or_live_state(content, refusal, expected):
    from flex_provider.engine.calls import CallBuilder
    from flex_provider.engine.config import RequestSpec
    from flex_provider.engine.progress import LiveProgress
    from flex_provider.live import merge_live_state

    builder = CallBuilder(RequestSpec(model="gpt-5-mini", api="chat", response_schema=STRICT_SCHEMA))
    text = content if content is None or isinstance(content, str) else json.dumps(content)
    with pytest.raises(OutputValidationError) as raised:
        builder.read_chat(_chat_answer(text, refusal))
    rec = recorder()
    record = rec.failure(attempt(), raised.value)
    progress = LiveProgress("20250601T120000-000001", model="m", service_tier="flex", output_path=None)
    progress.start(total=1)
    progress.on_record(record)
    live = merge_live_state([("20250601T120000-000001", progress.snapshot(rec.counters))])
    summary = summarize_records([record], PriceTable(), "gpt-5-mini")

    assert expected in (record["error"] or {})["message"]
    for where in (str(raised.value), json.dumps(record), json.dumps(summary), json.dumps(live)):
        assert "Jane" not in where and "4111" not in where
        assert "the prompt" not in where  # the item's prompt (attempt()) was never in a message either
    assert live["failures"][0]["message"] == record["error"]["message"]
