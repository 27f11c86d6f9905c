from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from flex_provider.engine import store as store_module
from flex_provider.engine.errors import FlexInputError
from flex_provider.engine.store import (
    JOB_NAME,
    MANIFEST_NAME,
    PENDING_DIR,
    CorruptCheckpointError,
    ResultStore,
    is_final,
    new_session_id,
)


def ok(rid: str, at: str, output: str = "out") -> dict:
    return {"id": rid, "status": "succeeded", "output": output, "error": None, "finished_at": at}


def failed(rid: str, at: str, retryable: bool) -> dict:
    return {
        "id": rid,
        "status": "failed",
        "output": None,
        "error": {"type": "X", "message": "m", "retryable": retryable},
        "finished_at": at,
    }


def S(n: int) -> str:
    """A session id of the shape new_session_id() makes; sorts by n."""
    return f"20250601T1200{n:02d}-{n:06x}"


def T(second: int) -> str:
    return f"2025-06-01T12:00:{second:02d}.000000+00:00"


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def result_lines(folder: Path) -> list[dict]:
    """Every line of every part file in the folder, in name order (what a downstream reader sees)."""
    return [r for p in sorted(folder.glob("part-*.jsonl")) for r in read_lines(p)]


def test_new_session_id_shape_and_uniqueness():
    ids = {new_session_id() for _ in range(20)}
    assert len(ids) == 20
    assert all(re.fullmatch(r"\d{8}T\d{6}-[0-9a-f]{6}", s) for s in ids)


def test_is_final():
    assert is_final(ok("a", T(1)))
    assert is_final(failed("a", T(1), retryable=False))
    assert not is_final(failed("a", T(1), retryable=True))
    assert is_final({"id": "a", "status": "failed", "error": None})


def test_write_part_names_and_contents(tmp_path):
    store = ResultStore(tmp_path, session=S(1))
    first = store.write_part([ok("a", T(1)), failed("b", T(2), retryable=False)])
    second = store.write_part([ok("c", T(3), output="é ü")])
    assert (first, second) == (f"part-{S(1)}-00001.jsonl", f"part-{S(1)}-00002.jsonl")
    assert read_lines(tmp_path / first) == [ok("a", T(1)), failed("b", T(2), retryable=False)]
    assert "é ü" in (tmp_path / second).read_text(encoding="utf-8")  # ensure_ascii=False
    assert [p.name for p in store.part_files()] == [first, second]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("_tmp-")]


def test_load_empty_or_missing_root(tmp_path):
    state = ResultStore(tmp_path / "does-not-exist", session=S(1)).load()
    assert (state.final_ids, state.retryable_ids, state.pending) == (set(), set(), {})


def test_load_final_and_retryable_ids(tmp_path):
    store = ResultStore(tmp_path, session=S(1))
    store.write_part([ok("a", T(1)), failed("b", T(2), retryable=False), failed("c", T(3), retryable=True)])
    store.write_part([failed("d", T(4), retryable=True), ok("d", T(5)), {"status": "succeeded"}])
    state = store.load()
    assert state.final_ids == {"a", "b", "d"}
    assert state.retryable_ids == {"c"}


def test_retryable_failure_after_final_does_not_make_it_retryable(tmp_path):
    ResultStore(tmp_path, session=S(1)).write_part([ok("a", T(1))])
    ResultStore(tmp_path, session=S(2)).write_part([failed("a", T(2), retryable=True)])
    state = ResultStore(tmp_path, session=S(3)).load()
    assert state.final_ids == {"a"}
    assert state.retryable_ids == set()


def test_torn_last_line_is_ignored(tmp_path):
    store = ResultStore(tmp_path, session=S(1))
    name = store.write_part([ok("a", T(1)), ok("b", T(2))])
    with (tmp_path / name).open("a", encoding="utf-8") as handle:
        handle.write('{"id": "c", "status": "succ')  # torn write
    state = store.load()
    assert state.final_ids == {"a", "b"}
    assert [r["id"] for r in store.iter_records()] == ["a", "b"]


def test_non_part_files_are_ignored(tmp_path):
    store = ResultStore(tmp_path, session=S(1))
    store.write_part([ok("a", T(1))])
    (tmp_path / f"_tmp-part-{S(1)}-00002.jsonl").write_text(json.dumps(ok("z", T(9))) + "\n")
    (tmp_path / "part-notes.txt").write_text(json.dumps(ok("y", T(9))) + "\n")
    (tmp_path / "readme.jsonl").write_text(json.dumps(ok("x", T(9))) + "\n")
    assert store.load().final_ids == {"a"}


def test_pending_entries_loaded_unless_final(tmp_path):
    store = ResultStore(tmp_path, session=S(1))
    store.write_pending([{"id": "a", "response_id": "resp_a", "tier": "flex"}])
    store.write_pending([{"id": "b", "response_id": "resp_b", "tier": "flex"}])
    store.write_part([ok("a", T(1))])
    assert sorted(p.name for p in (tmp_path / PENDING_DIR).iterdir()) == [f"{S(1)}-00001.jsonl", f"{S(1)}-00002.jsonl"]
    state = store.load()
    assert state.pending == {"b": {"id": "b", "response_id": "resp_b", "tier": "flex"}}


def test_pending_entry_survives_retryable_failure(tmp_path):
    store = ResultStore(tmp_path, session=S(1))
    store.write_pending([{"id": "a", "response_id": "resp_a", "tier": "flex"}])
    store.write_part([failed("a", T(1), retryable=True)])
    assert set(store.load().pending) == {"a"}


def test_progress_written_per_session_and_read_back(tmp_path):
    ResultStore(tmp_path, session=S(1)).write_progress({"requests": 3})
    s2 = ResultStore(tmp_path, session=S(2))
    s2.write_progress({"requests": 1})
    s2.write_progress({"requests": 5})  # overwrites its own session file
    (tmp_path / "_progress" / f"{S(3)}.json").write_text("{broken")
    assert s2.load_progress() == [{"requests": 3}, {"requests": 5}]


def test_iter_records_yields_each_id_once_with_the_winner(tmp_path):
    ResultStore(tmp_path, session=S(1)).write_part(
        [
            failed("a", T(1), retryable=True),
            ok("b", T(2), output="old b"),
            failed("c", T(3), retryable=False),
            ok("e", T(3)),
        ]
    )
    ResultStore(tmp_path, session=S(2)).write_part(
        [ok("a", T(4)), ok("b", T(5), output="new b"), failed("c", T(6), retryable=True), ok("d", T(7))]
    )
    records = list(ResultStore(tmp_path, session=S(3)).iter_records())
    assert [r["id"] for r in records] == ["e", "a", "b", "c", "d"]  # part order
    by_id = {r["id"]: r for r in records}
    assert by_id["a"]["status"] == "succeeded"  # success beats failure
    assert by_id["b"]["output"] == "new b"  # newer beats older
    assert by_id["c"]["finished_at"] == T(6)  # newer failure beats older failure


def test_success_beats_newer_failure(tmp_path):
    ResultStore(tmp_path, session=S(1)).write_part([ok("a", T(1))])
    ResultStore(tmp_path, session=S(2)).write_part([failed("a", T(9), retryable=False)])
    records = list(ResultStore(tmp_path, session=S(3)).iter_records())
    assert records == [ok("a", T(1))]


def test_identical_record_in_two_parts_counted_once(tmp_path):
    record = ok("a", T(1))
    ResultStore(tmp_path, session=S(1)).write_part([record])
    ResultStore(tmp_path, session=S(2)).write_part([record])  # two overlapping triggers
    store = ResultStore(tmp_path, session=S(3))
    assert list(store.iter_records()) == [record]
    manifest = store.finalize({})
    assert manifest["parts"] == [f"part-{S(3)}-00001.jsonl"]  # both merged into one by the finalizing session
    assert result_lines(tmp_path) == [record]


def test_finalize_compacts_duplicates_across_parts(tmp_path):
    ResultStore(tmp_path, session=S(1)).write_part(
        [failed("a", T(1), retryable=True), ok("b", T(2), output="old b"), ok("keep", T(3))]
    )
    ResultStore(tmp_path, session=S(2)).write_part([ok("a", T(4)), ok("b", T(5), output="new b")])
    ResultStore(tmp_path, session=S(3)).write_part([failed("a", T(8), retryable=False)])  # loses to the success
    store = ResultStore(tmp_path, session=S(4))
    manifest = store.finalize({"status": "success", "total": 3})

    assert manifest == {"status": "success", "total": 3, "parts": [f"part-{S(4)}-00001.jsonl"]}
    assert result_lines(tmp_path) == [ok("keep", T(3)), ok("a", T(4)), ok("b", T(5), output="new b")]
    all_ids = [r["id"] for p in store.part_files() for r in read_lines(p)]
    assert sorted(all_ids) == ["a", "b", "keep"]  # each id exactly once on disk
    assert json.loads((tmp_path / MANIFEST_NAME).read_text()) == manifest
    assert store.read_manifest() == manifest


def test_finalize_leaves_parts_without_duplicates_untouched(tmp_path):
    store = ResultStore(tmp_path, session=S(1))
    name = store.write_part([ok("a", T(1)), ok("b", T(2))])
    before = (tmp_path / name).stat().st_mtime_ns, (tmp_path / name).read_bytes()
    store.finalize({})
    assert ((tmp_path / name).stat().st_mtime_ns, (tmp_path / name).read_bytes()) == before


def test_finalize_clears_pending_and_tmp_files(tmp_path):
    store = ResultStore(tmp_path, session=S(1))
    store.write_pending([{"id": "a", "response_id": "resp_a", "tier": "flex"}])
    store.write_part([failed("a", T(1), retryable=True)])
    (tmp_path / f"_tmp-part-{S(0)}-00009.jsonl").write_text("half")
    assert store.load().pending
    store.finalize({})
    assert list((tmp_path / PENDING_DIR).iterdir()) == []
    assert store.load().pending == {}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("_tmp-")]


def test_manifest_is_written_last(tmp_path, monkeypatch):
    store = ResultStore(tmp_path, session=S(2))
    ResultStore(tmp_path, session=S(1)).write_part([ok("a", T(1))])
    store.write_part([ok("a", T(2)), ok("b", T(3))])
    store.write_pending([{"id": "c", "response_id": "resp_c", "tier": "flex"}])

    events: list[str] = []
    original_write = ResultStore._write_whole
    original_unlink = Path.unlink

    def spy_write(self, folder, name, text):
        events.append(f"write {name}")
        if name == MANIFEST_NAME:  # at this moment everything else must already be in place
            assert list((tmp_path / PENDING_DIR).iterdir()) == []
            assert sorted(p.name for p in tmp_path.glob("part-*")) == [f"part-{S(2)}-00002.jsonl"]
        return original_write(self, folder, name, text)

    def spy_unlink(self, missing_ok=False):
        events.append(f"unlink {self.name}")
        return original_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(store_module.ResultStore, "_write_whole", spy_write)
    monkeypatch.setattr(Path, "unlink", spy_unlink)
    manifest = store.finalize({"status": "success"})

    assert events[-1] == f"write {MANIFEST_NAME}"
    assert f"unlink part-{S(1)}-00001.jsonl" in events
    assert f"unlink {S(2)}-00001.jsonl" in events
    assert manifest["parts"] == [f"part-{S(2)}-00002.jsonl"]  # the two parts merged into one


def test_no_manifest_before_finalize(tmp_path):
    store = ResultStore(tmp_path, session=S(1))
    store.write_part([ok("a", T(1))])
    assert store.read_manifest() is None
    assert not (tmp_path / MANIFEST_NAME).exists()


@pytest.mark.parametrize("records", [[], [ok("a", T(1))]])
def test_finalize_manifest_is_json_with_default_str(tmp_path, records):
    store = ResultStore(tmp_path, session=S(1))
    if records:
        store.write_part(records)
    manifest = store.finalize({"path": tmp_path})
    assert manifest["path"] == tmp_path  # returned as given...
    assert json.loads((tmp_path / MANIFEST_NAME).read_text())["path"] == str(tmp_path)  # ...stored as text


def test_finalize_summarizes_final_records_in_the_compaction_pass(tmp_path, monkeypatch):
    # Regression (benchmark finding): the end of a run read every part four times; for 100k items
    # that cost seconds and tens of MiB. Now: once to rank, once to compact and summarize, and once
    # more only the parts holding an id with several records (here both: "b" is in each).
    store = store_module.ResultStore(tmp_path, session=S(1))
    store.write_part([ok("a", T(1)), failed("b", T(1), retryable=True)])
    store.write_part([ok("b", T(2)), ok("c", T(2))])
    reads: list[str] = []
    original = store_module.ResultStore._read_lines
    monkeypatch.setattr(
        store_module.ResultStore, "_read_lines", staticmethod(lambda p: (reads.append(p.name), original(p))[1])
    )
    seen: list[str] = []

    def summarize(records):
        seen.extend(r["id"] for r in records)
        return {"total": len(seen)}

    manifest = store.finalize({"status": "success"}, summarize)
    assert sorted(seen) == ["a", "b", "c"] and manifest["total"] == 3 and manifest["status"] == "success"
    assert sorted(reads) == sorted(3 * [f"part-{S(1)}-00001.jsonl", f"part-{S(1)}-00002.jsonl"])
    assert manifest["parts"] == [f"part-{S(1)}-00003.jsonl"]
    assert json.loads((tmp_path / store_module.MANIFEST_NAME).read_text())["total"] == 3


def test_finalize_keeps_a_record_repeated_within_one_part_once(tmp_path):
    # finalize used its own copy of the winner filter, which kept both copies of a record repeated
    # verbatim inside one part; iter_records kept one. Both now share one filter.
    store = store_module.ResultStore(tmp_path, session=S(1))
    store.write_part([ok("a", T(1)), ok("a", T(1)), ok("b", T(1))])
    manifest = store.finalize({"status": "success"})
    (part,) = manifest["parts"]
    assert [r["id"] for r in read_lines(tmp_path / part)] == ["a", "b"]


# -- 1. no item content can make a write fail ---------------------------------------------------


def test_lone_surrogates_in_id_output_and_error_round_trip(tmp_path):
    # A lone surrogate (half an emoji, e.g. from a model output cut mid-character) cannot be
    # encoded as UTF-8: the whole part (results already paid for) used to be lost.
    store = ResultStore(tmp_path)
    bad_error = failed("e\ud83d", T(2), retryable=False)
    bad_error["error"]["message"] = "broken \udfff message"
    records = [
        ok("plain", T(1), output="é ü"),
        ok("id-\ud83d", T(1), output="half an emoji: \ud83d"),
        ok("nested", T(1), output={"k\udc00": ["\ud800", 1]}),
        bad_error,
    ]
    name = store.write_part(records)
    store.write_pending([{"id": "p\ud83d", "response_id": "resp_\udfff", "tier": "flex"}])
    assert read_lines(tmp_path / name) == records
    assert "é ü" in (tmp_path / name).read_text(encoding="utf-8")  # the clean record stays readable
    assert list(store.iter_records()) == records
    state = store.load()
    assert set(state.final_ids) == {r["id"] for r in records}
    assert set(state.pending) == {"p\ud83d"}
    manifest = store.finalize({"note": "\ud83d"})
    assert store.read_manifest() == manifest


def test_unserializable_output_does_not_lose_the_part(tmp_path):
    # JSON cannot hold a dict with tuple keys or a cyclic list; ``default=str`` does not cover
    # those. The other records of the part, and the item's id and status, must still be stored.
    cyclic: list = [1]
    cyclic.append(cyclic)
    store = ResultStore(tmp_path)
    name = store.write_part(
        [ok("a", T(1)), ok("b", T(1), output={(1, 2): "x"}), ok("c", T(1), output=cyclic), ok("d", T(1), output=object)]
    )
    by_id = {r["id"]: r for r in read_lines(tmp_path / name)}
    assert by_id["a"] == ok("a", T(1))
    assert by_id["b"]["status"] == by_id["c"]["status"] == "succeeded"
    assert by_id["b"]["output"] == repr({(1, 2): "x"})  # stored as text rather than lost
    assert isinstance(by_id["c"]["output"], str)
    assert by_id["d"]["output"] == str(object)  # default=str, as before
    assert set(store.load().final_ids) == {"a", "b", "c", "d"}


# -- 2. corrupted checkpoints -------------------------------------------------------------------


def test_finalize_drops_a_torn_last_line(tmp_path):
    store = ResultStore(tmp_path, session=S(1))
    name = store.write_part([ok("a", T(1)), ok("b", T(2))])
    with (tmp_path / name).open("a", encoding="utf-8") as handle:
        handle.write('{"id": "c", "status": "succ')  # torn write
    manifest = store.finalize({})
    assert manifest["parts"] == [f"part-{S(1)}-00002.jsonl"]  # rewritten under a new name
    assert (tmp_path / manifest["parts"][0]).read_text(encoding="utf-8").splitlines() == [
        json.dumps(ok("a", T(1)), ensure_ascii=False),
        json.dumps(ok("b", T(2)), ensure_ascii=False),
    ]


def test_part_truncated_inside_a_multibyte_character(tmp_path):
    # A truncated file can end in the middle of a UTF-8 sequence: reading the part as text used to
    # raise UnicodeDecodeError for the whole file, losing every result in it.
    store = ResultStore(tmp_path, session=S(1))
    name = store.write_part([ok("a", T(1)), ok("b", T(2), output="日本語")])
    data = (tmp_path / name).read_bytes()
    (tmp_path / name).write_bytes(data[: data.index("本".encode()) + 1])
    assert set(store.load().final_ids) == {"a"}
    assert [r["id"] for r in store.iter_records()] == ["a"]
    store.finalize({})
    assert result_lines(tmp_path) == [ok("a", T(1))]


@pytest.mark.parametrize(
    "line",
    [
        "[1, 2]",
        '"x"',
        "3",
        "null",
        "true",
        '{"status": "succeeded"}',
        '{"id": 5, "status": "succeeded"}',
        '{"id": null, "status": "succeeded"}',
        '{"id": "z", "status": "weird"}',
        '{"id": "z"}',
        '{"id": "z", "status": "succeeded", "prompt_hash": 12}',
        "\udcff not json",
    ],
)
def test_lines_that_are_not_records_are_skipped(tmp_path, line):
    store = ResultStore(tmp_path, session=S(1))
    name = store.write_part([ok("a", T(1))])
    with (tmp_path / name).open("a", encoding="utf-8", errors="surrogateescape") as handle:
        handle.write(line + "\n")
    with (tmp_path / name).open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(ok("b", T(2))) + "\n")
    state = store.load()
    assert set(state.final_ids) == {"a", "b"} and state.retryable_ids == set()
    assert [r["id"] for r in store.iter_records()] == ["a", "b"]
    store.finalize({})
    assert result_lines(tmp_path) == [ok("a", T(1)), ok("b", T(2))]  # the stray line is gone


def test_failed_record_with_a_non_object_error_is_final(tmp_path):
    record = {"id": "a", "status": "failed", "output": None, "error": "boom", "finished_at": T(1)}
    assert is_final(record)
    store = ResultStore(tmp_path, session=S(1))
    store.write_part([record])
    assert set(store.load().final_ids) == {"a"}


@pytest.mark.parametrize("content", [b"{broken", b"[1, 2]", b'"text"', b"\xff\xfe"])
def test_corrupt_manifest_is_ignored_by_load_and_named_by_read_manifest(tmp_path, content):
    store = ResultStore(tmp_path, session=S(1))
    store.write_part([ok("a", T(1))])
    (tmp_path / MANIFEST_NAME).write_bytes(content)
    state = store.load()
    assert set(state.final_ids) == {"a"}
    with pytest.raises(CorruptCheckpointError, match=re.escape(str(tmp_path / MANIFEST_NAME))) as info:
        store.read_manifest()
    assert "delete" in str(info.value).lower()
    assert store.finalize({"status": "success"})["status"] == "success"  # a run rewrites it
    assert store.read_manifest()["status"] == "success"


@pytest.mark.parametrize("content", [b"{broken", b"[1, 2]", b"null", b"\xff\xfe"])
def test_corrupt_job_file_raises_input_error_naming_the_file(tmp_path, content):
    (tmp_path / JOB_NAME).write_bytes(content)
    store = ResultStore(tmp_path, session=S(1))
    with pytest.raises(FlexInputError) as info:
        store.claim("fp", {"model": "m"})
    message = str(info.value)
    assert str(tmp_path / JOB_NAME) in message
    assert "delete" in message.lower() and "output_path" in message


def test_claim_accepts_same_and_refuses_other_fingerprint(tmp_path):
    ResultStore(tmp_path, session=S(1)).claim("fp", {"model": "m"})
    ResultStore(tmp_path, session=S(2)).claim("fp", {"model": "m"})
    with pytest.raises(FlexInputError, match="different request"):
        ResultStore(tmp_path, session=S(3)).claim("other", {"model": "n"})


def test_corrupt_progress_and_pending_are_skipped(tmp_path):
    store = ResultStore(tmp_path, session=S(1))
    store.write_progress({"requests": 3})
    progress = tmp_path / "_progress"
    (progress / f"{S(2)}.json").write_text("[1, 2]")
    (progress / f"{S(3)}.json").write_bytes(b"\xff\xfe")
    (progress / f"{S(4)}.json").write_text("null")
    assert store.load_progress() == [{"requests": 3}]

    store.write_pending([{"id": "a", "response_id": "resp_a", "tier": "flex"}])
    with (tmp_path / PENDING_DIR / f"{S(1)}-00001.jsonl").open("ab") as handle:
        handle.write(
            b'[1]\n"x"\nnull\n{"response_id": "r"}\n{"id": "b"}\n{"id": 3, "response_id": "r"}\n\xff\n{"id": "c", "re'
        )
    assert store.load().pending == {"a": {"id": "a", "response_id": "resp_a", "tier": "flex"}}


def test_only_part_files_the_store_writes_are_results(tmp_path):
    # A user's input file called part-0001.jsonl inside the output folder used to be read as results.
    foreign = tmp_path / "part-0001.jsonl"
    foreign.write_text(json.dumps(ok("x", T(9))) + "\n" + json.dumps(ok("x", T(8))) + "\n")
    (tmp_path / "part-S1-00001.jsonl").write_text(json.dumps(ok("y", T(9))) + "\n")
    (tmp_path / "part-20250601T120000-ABCDEF-00001.jsonl").write_text(json.dumps(ok("w", T(9))) + "\n")
    (tmp_path / f"part-{S(1)}-00001.jsonl.bak").write_text(json.dumps(ok("v", T(9))) + "\n")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    store = ResultStore(tmp_path)
    name = store.write_part([ok("a", T(1))])
    assert [p.name for p in store.part_files()] == [name]
    assert set(store.load().final_ids) == {"a"}
    assert [r["id"] for r in store.iter_records()] == ["a"]
    assert store.finalize({})["parts"] == [name]
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name in before} == before


def test_part_sequence_numbers_beyond_five_digits_stay_readable(tmp_path):
    store = ResultStore(tmp_path)
    store._seq = 99999
    names = [store.write_part([ok("a", T(1))]), store.write_part([ok("b", T(2))])]
    assert names[1].endswith("-100001.jsonl")
    assert set(store.load().final_ids) == {"a", "b"}


@pytest.mark.parametrize("session", ["S1", "", "20250601T120000-ABCDEF", "../x", "20250601T120000-abcdef/x"])
def test_session_must_look_like_new_session_id(tmp_path, session):
    # Parts are named after the session and only names of that shape are read back, so a store
    # with another session would write results it can never read.
    with pytest.raises(ValueError, match="session"):
        ResultStore(tmp_path, session=session)


# -- 3. stale answers: prompt hashes ------------------------------------------------------------


def hashed(record: dict, prompt_hash: str | None) -> dict:
    return {**record, "prompt_hash": prompt_hash}


def line_bytes(record: dict) -> int:
    return len((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))


def test_newer_answer_for_a_changed_prompt_beats_a_stale_success(tmp_path):
    ResultStore(tmp_path, session=S(1)).write_part([hashed(ok("a", T(1), output="stale"), "h1")])
    newer = hashed(failed("a", T(2), retryable=False), "h2")
    ResultStore(tmp_path, session=S(2)).write_part([newer])
    store = ResultStore(tmp_path, session=S(3))
    assert list(store.iter_records()) == [newer]
    state = store.load()
    assert state.final_prompts == {"a": "h2"}
    assert state.retryable_ids == set()
    store.finalize({})
    assert [r for p in store.part_files() for r in read_lines(p)] == [newer]  # the stale one is gone


def test_stale_final_record_superseded_by_a_retryable_one_is_not_final(tmp_path):
    ResultStore(tmp_path, session=S(1)).write_part([hashed(ok("a", T(1)), "h1"), hashed(ok("b", T(1)), "h1")])
    retry = hashed(failed("a", T(2), retryable=True), "h2")
    ResultStore(tmp_path, session=S(2)).write_part([retry])
    store = ResultStore(tmp_path, session=S(3))
    state = store.load()
    assert state.final_prompts == {"b": "h1"}
    assert "a" not in state.final_ids and state.retryable_ids == {"a"}
    assert {r["id"]: r for r in store.iter_records()}["a"] == retry


def test_within_one_prompt_hash_success_beats_newer_failure(tmp_path):
    success = hashed(ok("a", T(1)), "h2")
    ResultStore(tmp_path, session=S(1)).write_part([hashed(ok("a", T(0), output="older prompt"), "h1")])
    ResultStore(tmp_path, session=S(2)).write_part([success, hashed(failed("a", T(3), retryable=True), "h2")])
    ResultStore(tmp_path, session=S(3)).write_part([hashed(failed("a", T(5), retryable=False), "h2")])
    store = ResultStore(tmp_path, session=S(4))
    assert list(store.iter_records()) == [success]
    assert store.load().final_prompts == {"a": "h2"}


def test_records_with_an_older_prompt_hash_never_win_even_if_newest_of_their_kind(tmp_path):
    # The prompt went h1 -> h2 -> back to h1: the newest record says h1 is current again.
    ResultStore(tmp_path, session=S(1)).write_part([hashed(ok("a", T(1), output="h1 answer"), "h1")])
    ResultStore(tmp_path, session=S(2)).write_part([hashed(ok("a", T(2), output="h2 answer"), "h2")])
    ResultStore(tmp_path, session=S(3)).write_part([hashed(failed("a", T(3), retryable=True), "h1")])
    store = ResultStore(tmp_path, session=S(4))
    assert [r["output"] for r in store.iter_records()] == ["h1 answer"]
    assert store.load().final_prompts == {"a": "h1"}


def test_records_without_prompt_hash_match_any_hash(tmp_path):
    # Records written before prompt hashes existed: no hash, so they neither go stale nor make others stale.
    old = ok("a", T(1))
    ResultStore(tmp_path, session=S(1)).write_part([old, ok("b", T(1)), hashed(ok("c", T(1)), "h1")])
    ResultStore(tmp_path, session=S(2)).write_part(
        [hashed(failed("a", T(2), retryable=True), "h2"), failed("c", T(2), retryable=True)]
    )
    store = ResultStore(tmp_path, session=S(3))
    by_id = {r["id"]: r for r in store.iter_records()}
    assert by_id["a"] == old and by_id["c"] == hashed(ok("c", T(1)), "h1")
    state = store.load()
    assert state.final_prompts == {"a": None, "b": None, "c": "h1"}
    assert state.retryable_ids == set()


def test_final_ids_still_behaves_as_a_set(tmp_path):
    ResultStore(tmp_path, session=S(1)).write_part([hashed(ok("a", T(1)), "h1"), ok("b", T(1))])
    state = ResultStore(tmp_path, session=S(2)).load()
    assert "a" in state.final_ids and "b" in state.final_ids and "c" not in state.final_ids
    assert len(state.final_ids) == 2
    assert state.final_ids == {"a", "b"}
    assert set(state.final_ids) == {"a", "b"}


def test_final_bytes_counts_the_winning_final_lines(tmp_path):
    a_old, a_new = hashed(ok("a", T(1), output="x" * 50), "h1"), hashed(ok("a", T(2), output="é" * 10), "h2")
    b = hashed(failed("b", T(1), retryable=False), "h1")
    ResultStore(tmp_path, session=S(1)).write_part([a_old, b, hashed(failed("c", T(1), retryable=True), "h1")])
    ResultStore(tmp_path, session=S(2)).write_part([a_new, ok("d", T(1), output="日本")])
    state = ResultStore(tmp_path, session=S(3)).load()
    assert state.final_bytes == line_bytes(a_new) + line_bytes(b) + line_bytes(ok("d", T(1), output="日本"))
    assert ResultStore(tmp_path / "empty", session=S(3)).load().final_bytes == 0


def test_a_record_without_a_usable_finished_at_counts_as_oldest(tmp_path):
    # str(None) == "None" sorts after every ISO timestamp: such a record would have named the
    # current prompt and beaten every newer record.
    odd = {**hashed(ok("a", T(1), output="odd"), "h1"), "finished_at": None}
    newer = hashed(failed("a", T(2), retryable=False), "h2")
    ResultStore(tmp_path, session=S(1)).write_part([newer, odd])
    store = ResultStore(tmp_path, session=S(2))
    assert list(store.iter_records()) == [newer]
    assert store.load().final_prompts == {"a": "h2"}


def test_redo_failed_all_sends_final_failures_again_and_keeps_successes(tmp_path):
    first = [ok("a", T(1)), failed("b", T(1), retryable=False), failed("c", T(1), retryable=True)]
    ResultStore(tmp_path, session=S(1)).write_part(first)
    line = line_bytes(ok("a", T(1)))

    default = ResultStore(tmp_path, session=S(2)).load()
    assert (set(default.final_ids), default.retryable_ids, default.redo_ids) == ({"a", "b"}, {"c"}, set())

    redo = ResultStore(tmp_path, session=S(2)).load(redo_failed="all")
    assert (set(redo.final_ids), redo.retryable_ids, redo.redo_ids) == ({"a"}, {"c"}, {"b"})
    assert redo.final_bytes == line  # the failure's line will be replaced: it does not count


def test_a_newer_failure_beats_an_older_failure_and_a_success_beats_both(tmp_path):
    old = failed("a", T(1), retryable=False)
    newer = {**failed("a", T(2), retryable=False), "error": {"type": "Y", "message": "new", "retryable": False}}
    ResultStore(tmp_path, session=S(1)).write_part([old, failed("b", T(1), retryable=False)])
    ResultStore(tmp_path, session=S(2)).write_part([newer, ok("b", T(2))])
    ResultStore(tmp_path, session=S(3)).write_part([failed("b", T(3), retryable=False)])
    store = ResultStore(tmp_path, session=S(4))
    assert {r["id"]: r for r in store.iter_records()} == {"a": newer, "b": ok("b", T(2))}
    store.finalize({})
    assert sorted((r["id"], r["finished_at"]) for p in store.part_files() for r in read_lines(p)) == [
        ("a", T(2)),
        ("b", T(2)),
    ]


def test_a_newer_retryable_failure_after_a_final_one_is_retried_as_the_output_shows(tmp_path):
    """A redone item (redo_failed="all") that now fails transiently: the output holds the newer,
    retryable failure, so a plain retry sends it again too."""
    ResultStore(tmp_path, session=S(1)).write_part([failed("a", T(1), retryable=False)])
    ResultStore(tmp_path, session=S(2)).write_part([failed("a", T(2), retryable=True)])
    store = ResultStore(tmp_path, session=S(3))
    assert [r["finished_at"] for r in store.iter_records()] == [T(2)]
    state = store.load()
    assert set(state.final_ids) == set() and state.retryable_ids == {"a"}
