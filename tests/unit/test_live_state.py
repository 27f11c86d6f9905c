"""The live state: what each engine session checkpoints (progress.LiveProgress) and how
flex_provider.live merges the sessions' files and the manifest into what the Flex tab shows."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from flex_provider.engine.progress import (
    FAILURES_SHOWN,
    SERIES_POINTS,
    LiveProgress,
    ProgressSeries,
    RunCounters,
    SeriesPoint,
)
from flex_provider.engine.records import run_header
from flex_provider.engine.store import ResultStore
from flex_provider.engine.usage import Usage
from flex_provider.live import SERIES_POINTS_SHOWN, LiveState, merge_live_state, read_live_state

T0 = 1_780_000_000.0  # epoch seconds: 2026-05-28
CONTRACT_KEYS = [
    "format",
    "finished",
    "total",
    "done",
    "succeeded",
    "failed",
    "skipped",
    "in_flight",
    "requests",
    "unavailable",
    "rate_limited",
    "transient_errors",
    "malformed",
    "fallbacks",
    "fallbacks_by_reason",
    "tokens",
    "cost",
    "tiers",
    "throughput_per_min",
    "eta_s",
    "eta_at",
    "started_at",
    "updated_at",
    "duration_s",
    "model",
    "service_tier",
    "output_path",
    "sessions",
    "failures",
    "failure_groups",
    "series",
    "budget_skipped",  # added later, last: readers of older states find them missing
    "budget",
    "deadline",
]


def S(n: int) -> str:
    """A session id of the shape new_session_id() makes; sorts by n."""
    return f"20260528T0000{n:02d}-{n:06x}"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def failed(rid: str, retryable: bool = False, message: str = "The model 'gpt-x' does not exist") -> dict:
    error = {"type": "NotFoundError", "status_code": 404, "code": "model_not_found", "message": message}
    if retryable:
        error = {"type": "RateLimitError", "status_code": 429, "code": "rate_limit_exceeded", "message": "slow down"}
    return {"id": rid, "status": "failed", "error": {**error, "retryable": retryable}}


class Session:
    """One engine session's live progress on a fake clock, driven like the runner drives it."""

    def __init__(self, n: int, start: float, total: int | None = 100, resumed: int = 0, resumed_failed: int = 0):
        self.name = S(n)
        self.clock = Clock(start)
        self.counters = RunCounters(resumed=resumed, resumed_failed=resumed_failed)
        self.progress = LiveProgress(
            self.name, model="gpt-5-mini", service_tier="flex", output_path="s3://b/run/", clock=self.clock
        )
        self.progress.start(total)

    def finish(self, n: int, *, tier: str = "flex", cost: float = 0.01, tokens: int = 10) -> None:
        for _ in range(n):
            self.counters.succeeded += 1
            self.counters.requests += 1
            self.counters.served(tier)
            self.counters.usage.add(Usage(input=tokens, output=tokens))
            self.counters.cost.actual += cost
            self.counters.cost.standard_equivalent += 2 * cost

    def fail(self, record: dict) -> None:
        self.counters.failed += 1
        self.counters.requests += 1
        self.progress.on_record(record)

    def checkpoint(self, at: float) -> tuple[str, dict]:
        self.clock.now = at
        return self.name, json.loads(json.dumps(self.progress.snapshot(self.counters)))  # as read back


# -- what a session checkpoints ------------------------------------------------------------------


def test_a_progress_file_keeps_the_request_counters_older_readers_sum_and_adds_the_live_state():
    session = Session(1, T0, total=50, resumed=7, resumed_failed=2)
    session.finish(3, tier="flex")
    session.finish(1, tier="default")
    session.counters.unavailable, session.counters.in_flight = 4, 6
    session.counters.fell_back("unavailable")
    session.counters.cost.unpriced_tokens = 12
    session.fail(failed("bad-1"))
    _, doc = session.checkpoint(T0 + 30)

    assert {k: doc[k] for k in RunCounters.PERSISTED} == session.counters.persisted()
    header = run_header([doc], RunCounters(), model="m", service_tier="flex", output_path=None, duration_s=1.0)
    assert (header["requests"], header["unavailable"], header["fallbacks"]) == (5, 4, 1)
    assert doc["format"] == 1 and doc["session"] == S(1) and doc["total"] == 50
    assert (doc["succeeded"], doc["failed"], doc["resumed"], doc["resumed_failed"], doc["in_flight"]) == (4, 1, 7, 2, 6)
    assert doc["tokens"] == {"input": 40, "cached": 0, "output": 40, "reasoning": 0}
    assert doc["cost"] == {"actual": 0.04, "standard_equivalent": 0.08, "cache_saved": 0.0, "unpriced_tokens": 12}
    assert doc["tiers"] == {"flex": 3, "default": 1}
    assert doc["fallbacks_by_reason"] == {"unavailable": 1}
    assert datetime.fromisoformat(doc["started_at"]).timestamp() == T0
    assert datetime.fromisoformat(doc["updated_at"]).timestamp() == T0 + 30
    assert (doc["model"], doc["service_tier"], doc["output_path"]) == ("gpt-5-mini", "flex", "s3://b/run/")
    assert doc["failures"] == [
        {
            "id": "bad-1",
            "type": "NotFoundError",
            "code": "model_not_found",
            "status_code": 404,
            "retryable": False,
            "message": "The model 'gpt-x' does not exist",
        }
    ]
    assert [(g["type"], g["count"]) for g in doc["failure_groups"]] == [("NotFoundError", 1)]
    assert doc["series"] == [
        {
            "ts": T0 + 30,
            "done": 12,  # resumed included
            "processed": 5,
            "unavailable": 4,
            "rate_limited": 0,
            "cost": 0.04,
            "standard_cost": 0.08,
            "tiers": {"flex": 3, "default": 1},
        }
    ]


def test_a_session_names_its_first_twenty_failures_with_short_messages_and_groups_them_all():
    session = Session(1, T0)
    for n in range(50):
        session.fail(failed(f"bad-{n}", retryable=n % 2 == 1, message="x" * 1000))
    _, doc = session.checkpoint(T0 + 1)

    assert [f["id"] for f in doc["failures"]] == [f"bad-{n}" for n in range(FAILURES_SHOWN)]
    assert all(len(f["message"]) <= 300 for f in doc["failures"])
    assert doc["failures"][0]["message"].endswith("...")
    assert sorted((g["type"], g["count"], g["retryable"]) for g in doc["failure_groups"]) == [
        ("NotFoundError", 25, False),
        ("RateLimitError", 25, True),
    ]


def test_the_checkpoint_does_not_change_under_the_writer_while_the_engine_keeps_counting():
    session = Session(1, T0)
    session.finish(1)
    session.fail(failed("a"))
    _, before = session.checkpoint(T0 + 1)
    snapshot = session.progress.snapshot(session.counters)
    frozen = json.dumps(snapshot)
    session.finish(5, tier="default")
    session.counters.fell_back("unavailable")
    session.fail(failed("b"))
    assert json.dumps(snapshot) == frozen  # a thread may be serialising it right now
    assert before["tiers"] == {"flex": 1}


def test_the_series_stays_bounded_covers_the_whole_run_and_keeps_the_newest_point():
    series = ProgressSeries()
    for n in range(10_000):  # a checkpoint every 2 s for 5.5 hours
        series.add(point(T0 + 2 * n, done=n))
    points = series.points
    assert SERIES_POINTS / 2 <= len(points) <= SERIES_POINTS
    assert points[-1]["done"] == 9_999  # always the latest sample
    assert points[0]["done"] == 0  # the whole run is still covered
    gaps = [points[i + 1]["ts"] - points[i]["ts"] for i in range(len(points) - 2)]  # the newest may be closer
    assert series.gap_s <= min(gaps) and max(gaps) <= 2 * series.gap_s  # about evenly spaced
    assert [p["ts"] for p in points] == sorted(p["ts"] for p in points)


def test_the_series_replaces_its_newest_point_while_checkpoints_come_faster_than_its_spacing():
    series = ProgressSeries(gap_s=1.0)
    for n in range(25):  # 10 checkpoints a second
        series.add(point(T0 + n / 10, done=n))
    assert [p["done"] for p in series.points] == [0, 10, 20, 24]


def point(ts: float, done: int) -> SeriesPoint:
    return {
        "ts": ts,
        "done": done,
        "processed": done,
        "unavailable": 0,
        "rate_limited": 0,
        "cost": 0.0,
        "standard_cost": 0.0,
        "tiers": {},
    }


# -- merging sessions ------------------------------------------------------------------------------


def test_one_session_mid_run():
    session = Session(1, T0, total=100)
    session.counters.in_flight = 8
    session.checkpoint(T0 + 10)
    session.finish(20)
    session.fail(failed("bad-1"))
    state = merge_live_state([session.checkpoint(T0 + 70)])

    assert list(state) == CONTRACT_KEYS
    assert json.loads(json.dumps(state)) == state
    assert not state["finished"]
    assert (state["total"], state["done"], state["succeeded"], state["failed"], state["skipped"]) == (100, 21, 20, 1, 0)
    assert state["in_flight"] == 8 and state["requests"] == 21 and state["sessions"] == 1
    assert state["tokens"] == {"input": 200, "cached": 0, "output": 200}
    assert state["cost"] == {
        "actual": 0.2,
        "standard_equivalent": 0.4,
        "saved": 0.2,
        "cache_saved": 0.0,
        "unpriced_tokens": 0,
    }
    assert state["tiers"] == {"flex": 20}
    assert state["throughput_per_min"] == 18.0  # 21 items in the 70 s since the session started
    assert state["eta_s"] == pytest.approx(79 / (21 / 70), abs=0.1)
    assert datetime.fromisoformat(state["eta_at"]).timestamp() == pytest.approx(T0 + 70 + state["eta_s"], abs=0.1)
    assert datetime.fromisoformat(state["started_at"]).timestamp() == T0
    assert state["duration_s"] == 70.0
    assert (state["model"], state["service_tier"], state["output_path"]) == ("gpt-5-mini", "flex", "s3://b/run/")
    assert [p["done"] for p in state["series"]] == [0, 21]
    assert set(state["series"][0]) == {"ts", "done", "unavailable", "rate_limited", "cost", "standard_cost", "tiers"}


def test_a_triggerer_restart_two_sessions_add_up_and_the_latest_tells_what_is_done():
    first = Session(1, T0, total=100)
    first.finish(30, cost=0.01)
    first.fail(failed("final-bad"))  # not retryable: stays failed, the next session skips it
    first.fail(failed("retry-me", retryable=True))  # sent again by the next session
    first.counters.unavailable, first.counters.in_flight = 5, 8
    first.counters.fell_back("unavailable")
    one = first.checkpoint(T0 + 60)  # then the triggerer dies: its in_flight is stale forever

    second = Session(2, T0 + 120, total=100, resumed=31, resumed_failed=1)
    second.counters.in_flight = 4
    second.counters.unavailable = 2
    second.finish(10, tier="default", cost=0.02)
    two = second.checkpoint(T0 + 180)
    state = merge_live_state([two, one])  # any order

    assert state["sessions"] == 2
    assert (state["done"], state["succeeded"], state["failed"], state["skipped"]) == (41, 40, 1, 31)
    assert state["in_flight"] == 4  # the live session's, not the dead one's
    assert (state["requests"], state["unavailable"], state["fallbacks"]) == (32 + 10, 7, 1)
    assert state["fallbacks_by_reason"] == {"unavailable": 1}
    assert state["cost"]["actual"] == pytest.approx(0.3 + 0.2)  # billed in both sessions
    assert state["tiers"] == {"flex": 30, "default": 10}
    assert state["tokens"]["input"] == 400
    assert [f["id"] for f in state["failures"]] == ["final-bad"]  # "retry-me" was sent again
    assert [(g["type"], g["count"]) for g in state["failure_groups"]] == [("NotFoundError", 1)]
    assert datetime.fromisoformat(state["started_at"]).timestamp() == T0
    assert datetime.fromisoformat(state["updated_at"]).timestamp() == T0 + 180
    assert state["duration_s"] == 180.0
    # The series carries what the first session did into the second's points.
    assert [(p["done"], p["cost"], p["unavailable"], p["tiers"]) for p in state["series"]] == [
        (32, pytest.approx(0.3), 5, {"flex": 30}),
        (41, pytest.approx(0.5), 7, {"flex": 30, "default": 10}),
    ]
    # Throughput is the latest session's own (10 items in its 60 s), not the 31 it found done.
    assert state["throughput_per_min"] == 10.0
    assert state["eta_s"] == pytest.approx(59 * 6.0)


def test_progress_files_of_older_versions_still_count_their_requests():
    old = (S(1), {"requests": 40, "unavailable": 6, "fallbacks": 3, "background_created": 1})
    state = merge_live_state([old])
    assert (state["requests"], state["unavailable"], state["fallbacks"]) == (40, 6, 3)
    assert state["fallbacks_by_reason"] == {"unavailable": 3}  # the only reason older versions had
    assert (state["done"], state["total"], state["started_at"], state["series"], state["eta_s"]) == (
        0,
        None,
        None,
        [],
        None,
    )

    new = Session(2, T0)
    new.finish(5)
    state = merge_live_state([old, new.checkpoint(T0 + 10)])
    assert state["requests"] == 45 and state["done"] == 5 and state["sessions"] == 2
    assert datetime.fromisoformat(state["started_at"]).timestamp() == T0


def test_damaged_fields_read_as_unknown_instead_of_failing():
    damaged = {
        "format": 1,
        "requests": "many",
        "succeeded": None,
        "total": True,
        "tokens": [1],
        "cost": "free",
        "tiers": {"flex": "3", "default": 2, "x": True},
        "failures": [{"id": 3}, "text", {"id": "a", "retryable": True, "status_code": "404"}],
        "failure_groups": [{"type": "X", "count": "2"}, {"type": "Y", "count": 2}],
        "series": [{"ts": "now"}, {"ts": T0 + 1, "done": 2}, None],
        "started_at": "yesterday",
    }
    state = merge_live_state([(S(1), damaged)])
    assert state["requests"] == 0 and state["total"] is None and state["tiers"] == {"default": 2}
    assert [f["id"] for f in state["failures"]] == ["a"] and state["failures"][0]["status_code"] is None
    assert [(g["type"], g["count"]) for g in state["failure_groups"]] == [("Y", 2)]
    assert [p["done"] for p in state["series"]] == [2]
    assert state["started_at"] is None and state["duration_s"] is None


def test_the_merged_series_is_capped_in_time_order_with_the_newest_point_last():
    files = []
    for n in range(4):  # four sessions (three restarts), each with a full series
        session = Session(n + 1, T0 + n * 10_000)
        for k in range(SERIES_POINTS):
            session.finish(1)
            last = session.checkpoint(T0 + n * 10_000 + k * 5)
        files.append(last)
    state = merge_live_state(files)
    ts = [p["ts"] for p in state["series"]]
    assert SERIES_POINTS_SHOWN / 2 <= len(ts) <= SERIES_POINTS_SHOWN and ts == sorted(ts)
    assert ts[-1] == T0 + 3 * 10_000 + (SERIES_POINTS - 1) * 5  # the newest is always kept
    assert ts[0] <= T0 + 10  # the start of the run still is there
    assert state["series"][-1]["done"] == SERIES_POINTS
    assert state["series"][-1]["tiers"] == {"flex": 4 * SERIES_POINTS}  # every session's items served


def test_eta_uses_the_recent_throughput_so_a_slow_start_does_not_skew_it():
    session = Session(1, T0, total=2_000)
    for minute in range(1, 31):  # 20 slow minutes (1 item a minute), then 10 fast ones (100 a minute)
        session.finish(1 if minute <= 20 else 100)
        last = session.checkpoint(T0 + 60 * minute)
    state = merge_live_state([last])
    assert state["throughput_per_min"] == pytest.approx(100.0)  # the last five minutes
    assert state["done"] == 1_020
    assert state["eta_s"] == pytest.approx(980 / 100 * 60)


@pytest.mark.parametrize("total", [None, 100])
def test_no_eta_without_a_total_or_while_nothing_finishes(total):
    session = Session(1, T0, total=total)
    session.finish(10)
    session.checkpoint(T0 + 60)
    state = merge_live_state([session.checkpoint(T0 + 600)])  # nothing for nine minutes
    assert state["throughput_per_min"] == 0.0
    assert (state["eta_s"], state["eta_at"]) == (None, None)


# -- the run's folder: files, manifest ------------------------------------------------------------


def write_session(root: Path, session: Session, at: float) -> None:
    name, doc = session.checkpoint(at)
    ResultStore(root, session=name).write_progress(doc)


def manifest(root: Path, finished_at: float, **fields) -> dict:
    summary = {
        "status": "success",
        "requests": 130,
        "unavailable": 9,
        "rate_limited": 1,
        "transient_errors": 2,
        "malformed_answers": 1,
        "fallbacks": 3,
        "this_run": {"requests": 30, "resumed": 90, "processed": 10},
        "model": "gpt-5-mini-2025-08-07",
        "service_tier": "flex",
        "output_path": "s3://b/run/",
        "duration_s": 42.5,
        "finished_at": datetime.fromtimestamp(finished_at).astimezone().isoformat(),
        "total": 100,
        "succeeded": 97,
        "failed": 3,
        "failed_ids": ["a", "b", "c"],
        "failures": [
            {
                "type": "NotFoundError",
                "code": None,
                "status_code": 404,
                "count": 3,
                "retryable": False,
                "sample_message": "no such model",
                "sample_ids": ["a", "b", "c"],
            }
        ],
        "usage": {"input": 1000, "cached": 10, "output": 500, "reasoning": 0},
        "cost_usd": {"actual": 1.5, "standard_equivalent": 3.0, "saved": 1.5},
        "tiers": {"flex": 95, "default": 4},
        "parts": [],
        **fields,
    }
    (root / "_manifest.json").write_text(json.dumps(summary))
    return summary


def test_no_checkpoint_yet_is_none(tmp_path):
    assert read_live_state(tmp_path / "not-yet") is None
    assert read_live_state(tmp_path) is None
    (tmp_path / "_progress").mkdir()
    assert read_live_state(tmp_path) is None


def test_a_torn_or_foreign_progress_file_is_skipped(tmp_path):
    session = Session(1, T0)
    session.finish(4)
    write_session(tmp_path, session, T0 + 5)
    progress = tmp_path / "_progress"
    (progress / f"{S(2)}.json").write_text('{"format": 1, "requests": 99, "succ')  # torn
    (progress / f"{S(3)}.json").write_text("[1, 2]")
    (progress / f"_tmp-{S(1)}.json").write_text((progress / f"{S(1)}.json").read_text())  # a write in progress
    (progress / "notes.json").write_text('{"requests": 1000}')
    state = read_live_state(tmp_path)
    assert state is not None
    assert (state["sessions"], state["requests"], state["done"]) == (1, 4, 4)


def test_a_finished_run_shows_the_manifest_totals(tmp_path):
    session = Session(1, T0, total=100, resumed=90)
    session.finish(7)
    session.counters.in_flight = 3  # the last checkpoint before the end still had items in flight
    write_session(tmp_path, session, T0 + 40)
    summary = manifest(tmp_path, T0 + 45)
    state = read_live_state(tmp_path)

    assert state is not None and state["finished"]
    assert (state["total"], state["done"], state["succeeded"], state["failed"]) == (100, 100, 97, 3)
    assert (state["skipped"], state["in_flight"], state["eta_s"], state["eta_at"]) == (90, 0, None, None)
    assert (state["requests"], state["unavailable"], state["malformed"], state["fallbacks"]) == (130, 9, 1, 3)
    assert state["tokens"] == {"input": 1000, "cached": 10, "output": 500}
    assert state["cost"] == {
        "actual": 1.5,
        "standard_equivalent": 3.0,
        "saved": 1.5,
        "cache_saved": 0.0,
        "unpriced_tokens": 0,
    }
    assert state["tiers"] == {"flex": 95, "default": 4}
    assert state["failure_groups"] == summary["failures"]
    assert state["duration_s"] == 42.5 and state["model"] == "gpt-5-mini-2025-08-07"
    assert datetime.fromisoformat(state["updated_at"]).timestamp() == pytest.approx(T0 + 45)
    assert list(state) == CONTRACT_KEYS


def test_a_manifest_written_before_tiers_existed_shows_the_sessions_tiers(tmp_path):
    session = Session(1, T0)
    session.finish(2, tier="flex")
    write_session(tmp_path, session, T0 + 1)
    summary = manifest(tmp_path, T0 + 2)
    del summary["tiers"]
    (tmp_path / "_manifest.json").write_text(json.dumps(summary))
    state = read_live_state(tmp_path)
    assert state is not None and state["finished"] and state["tiers"] == {"flex": 2}


def test_an_earlier_runs_manifest_does_not_finish_a_new_session(tmp_path):
    manifest(tmp_path, T0)  # the task was cleared after it finished: a new session works in the folder
    session = Session(1, T0 + 3600, total=100)
    session.finish(5)
    write_session(tmp_path, session, T0 + 3660)
    state = read_live_state(tmp_path)
    assert state is not None and not state["finished"] and state["done"] == 5 and state["requests"] == 5


@pytest.mark.parametrize("content", ["{half", '{"a": 1}'])
def test_a_corrupt_or_foreign_manifest_leaves_the_sessions_view(tmp_path, content):
    session = Session(1, T0)
    session.finish(5)
    write_session(tmp_path, session, T0 + 1)
    (tmp_path / "_manifest.json").write_text(content)
    state = read_live_state(tmp_path)
    assert state is not None and not state["finished"] and state["done"] == 5


def test_the_live_state_is_json_ready_and_typed():
    state: LiveState = merge_live_state([Session(1, T0).checkpoint(T0 + 1)])
    assert json.loads(json.dumps(state)) == state
    assert list(LiveState.__annotations__) == CONTRACT_KEYS


def test_cost_is_unknown_once_any_tokens_could_not_be_priced():
    """A model without a price makes the live cost null (never the partial sum of the priced ones);
    the cache saving is carried next to the flex saving."""
    priced, unpriced = Session(1, T0, total=10), Session(2, T0 + 100, total=10)
    priced.finish(2)
    priced.counters.cost.cache_saved = 0.05
    assert merge_live_state([priced.checkpoint(T0 + 10)])["cost"]["cache_saved"] == 0.05
    unpriced.counters.cost.unpriced_tokens = 40
    state = merge_live_state([priced.checkpoint(T0 + 10), unpriced.checkpoint(T0 + 110)])
    assert state["cost"] == {
        "actual": None,
        "standard_equivalent": None,
        "saved": None,
        "cache_saved": None,
        "unpriced_tokens": 40,
    }


# -- budget and deadline ------------------------------------------------------------------------------


def controlled(session: Session, *, spent: float, exhausted: bool, predicted_miss: bool, missed: bool) -> dict:
    return {
        "budget": {"max_cost_usd": 0.5, "spent": spent, "reserved": 0.02, "exhausted": exhausted},
        "deadline": {
            "at": datetime.fromtimestamp(T0 + 600, UTC).isoformat(),
            "predicted_miss": predicted_miss,
            "missed": missed,
            "needed_on_fallback": 3,
        },
    }


def test_items_over_the_budget_are_not_the_resumed_skipped_ones():
    session = Session(1, T0, total=100, resumed=10)
    session.finish(40)
    session.counters.budget_skipped = 50
    session.progress.on_record({"id": "x", "status": "skipped", "error": {"code": "budget", "retryable": True}})
    name, doc = (
        session.name,
        json.loads(
            json.dumps(
                session.progress.snapshot(
                    session.counters,
                    controlled(session, spent=0.49, exhausted=True, predicted_miss=False, missed=False),
                )
            )
        ),
    )
    assert doc["failures"] == [] and doc["failure_groups"] == []  # not a failure
    state = merge_live_state([(name, doc)])
    assert (state["skipped"], state["budget_skipped"], state["done"]) == (10, 50, 50)
    assert state["budget"] == {"max_cost_usd": 0.5, "spent": 0.49, "reserved": 0.02, "exhausted": True}


def test_the_deadline_status_while_running_and_once_finished():
    def state_with(**flags: bool) -> dict:
        session = Session(1, T0, total=100)
        session.finish(50)
        doc = session.progress.snapshot(session.counters, controlled(session, spent=0.1, exhausted=False, **flags))
        session.clock.now = T0 + 60
        return merge_live_state([(session.name, json.loads(json.dumps(doc)))])

    on_track = state_with(predicted_miss=False, missed=False)["deadline"]
    assert on_track is not None and on_track["status"] == "on_track"
    assert on_track["at"] == datetime.fromtimestamp(T0 + 600, UTC).isoformat(timespec="microseconds")
    assert state_with(predicted_miss=True, missed=False)["deadline"]["status"] == "at_risk"
    assert state_with(predicted_miss=False, missed=True)["deadline"]["status"] == "missed"

    session = Session(1, T0, total=10)
    session.finish(10)
    found = [
        (
            session.name,
            json.loads(
                json.dumps(
                    session.progress.snapshot(
                        session.counters,
                        controlled(session, spent=0.1, exhausted=False, predicted_miss=False, missed=False),
                    )
                )
            ),
        )
    ]
    manifest = {
        "finished_at": datetime.fromtimestamp(T0 + 100, UTC).isoformat(),
        "total": 10,
        "succeeded": 7,
        "failed": 0,
        "skipped": 3,
        "budget": {"max_cost_usd": 0.5, "spent": 0.5, "reserved": 0.0, "exhausted": True},
        "deadline": {"at": datetime.fromtimestamp(T0 + 600, UTC).isoformat(), "met": True, "on_fallback": 4},
    }
    final = merge_live_state(found, manifest)
    assert final["deadline"] == {
        "at": datetime.fromtimestamp(T0 + 600, UTC).isoformat(timespec="microseconds"),
        "status": "met",
        "predicted_finish": None,
        "on_fallback": 4,
    }
    assert final["budget_skipped"] == 3 and final["budget"] is not None and final["budget"]["reserved"] == 0.0


def test_a_run_without_budget_or_deadline_and_an_older_file_show_none():
    session = Session(1, T0)
    session.finish(3)
    name, doc = session.checkpoint(T0 + 5)
    for found in (doc, {k: v for k, v in doc.items() if k not in ("budget", "deadline", "budget_skipped")}):
        state = merge_live_state([(name, found)])
        assert (state["budget"], state["deadline"], state["budget_skipped"]) == (None, None, 0)
