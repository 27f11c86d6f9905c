"""finalize's compaction: many small parts end as few parts of up to ``part_bytes``, each id once,
and a crash at any step leaves a folder that readers and the next run read exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flex_provider.engine import store as store_module
from flex_provider.engine.store import COMPACTION_NAME, TMP_PREFIX, ResultStore, is_part_name


def S(n: int) -> str:
    return f"20250601T1200{n:02d}-{n:06x}"


def T(second: int) -> str:
    return f"2025-06-01T12:{second // 60:02d}:{second % 60:02d}.000000+00:00"


def ok(rid: str, at: int, prompt_hash: str | None = "0123456789abcdef") -> dict:
    return {"id": rid, "status": "succeeded", "output": f"answer {rid}", "finished_at": T(at), "prompt_hash": prompt_hash}


def retryable(rid: str, at: int, prompt_hash: str | None = "0123456789abcdef") -> dict:
    error = {"type": "X", "message": "m", "retryable": True}
    return {"id": rid, "status": "failed", "error": error, "finished_at": T(at), "prompt_hash": prompt_hash}


def part_lines(folder: Path) -> list[dict]:
    """Every line of every part file, as a downstream reader globbing part-*.jsonl sees them."""
    lines = []
    for path in sorted(folder.glob("part-*.jsonl")):
        lines += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return lines


def canonical(records) -> list[str]:
    return sorted(json.dumps(r, sort_keys=True) for r in records)


def build(folder: Path) -> None:
    """Two sessions of small parts: failures retried, an overlap, a torn line, a legacy record."""
    first = ResultStore(folder, session=S(1))
    for n in range(12):
        first.write_part([(retryable if i % 5 == 0 else ok)(f"id-{i}", i) for i in range(3 * n, 3 * n + 3)])
    first.write_part([ok("legacy", 50, prompt_hash=None)])  # an older version wrote no prompt_hash
    second = ResultStore(folder, session=S(2))
    for n in range(0, 36, 5):
        second.write_part([ok(f"id-{n}", 100 + n)])  # the retried failures succeed
    second.write_part([ok("id-1", 1), retryable("legacy", 200, prompt_hash="fedcba9876543210")])
    with (folder / second.write_part([ok("id-99", 300)])).open("a", encoding="utf-8") as handle:
        handle.write('{"id": "id-100", "status": "succ')  # torn


def readers_see(folder: Path) -> tuple[list[str], set[str], set[str]]:
    store = ResultStore(folder, session=S(20))
    state = store.load()
    return canonical(store.iter_records()), set(state.final_ids), set(state.retryable_ids)


def test_many_small_parts_end_as_few_parts_with_the_same_records(tmp_path):
    store = ResultStore(tmp_path, session=S(1), part_bytes=4096)
    for n in range(50):
        store.write_part([ok(f"id-{4 * n + i}", n) for i in range(4)])
    before = canonical(store.iter_records())
    total = sum(p.stat().st_size for p in tmp_path.glob("part-*.jsonl"))

    manifest = store.finalize({})

    parts = sorted(tmp_path.glob("part-*.jsonl"))
    assert [p.name for p in parts] == manifest["parts"] and all(is_part_name(p.name) for p in parts)
    assert 1 < len(parts) <= total // 2048 + 1  # from 50
    assert all(p.stat().st_size <= 4096 for p in parts)
    assert canonical(part_lines(tmp_path)) == before  # each id once, nothing lost
    assert not list(tmp_path.glob(f"{TMP_PREFIX}*")) and not (tmp_path / COMPACTION_NAME).exists()

    # Finalizing again changes nothing: full parts are kept, one small clean part is not copied.
    snapshot = {p.name: p.read_bytes() for p in parts}
    assert ResultStore(tmp_path, session=S(2), part_bytes=4096).finalize({})["parts"] == manifest["parts"]
    assert {p.name: p.read_bytes() for p in sorted(tmp_path.glob("part-*.jsonl"))} == snapshot


def test_a_later_run_merges_its_small_parts_and_keeps_the_full_ones(tmp_path):
    first = ResultStore(tmp_path, session=S(1), part_bytes=4096)
    for n in range(50):
        first.write_part([ok(f"id-{4 * n + i}", n) for i in range(4)])
    first.finalize({})
    full = {p.name: p.read_bytes() for p in tmp_path.glob("part-*.jsonl") if p.stat().st_size >= 2048}
    second = ResultStore(tmp_path, session=S(2), part_bytes=4096)
    for n in range(5):
        second.write_part([ok(f"new-{n}", 100 + n), ok(f"id-{n}", 100 + n)])  # new ids, and newer answers
    expected = canonical(second.iter_records())

    second.finalize({})

    assert canonical(part_lines(tmp_path)) == expected
    kept = {p.name: p.read_bytes() for p in tmp_path.glob("part-*.jsonl") if p.name in full}
    assert len(kept) == len(full) - 1  # the full part that held id-0..4's old answers was merged
    assert all(kept[name] == full[name] for name in kept)


def test_the_size_bound_is_a_store_option():
    with pytest.raises(ValueError, match="part_bytes"):
        ResultStore(Path("/nonexistent"), part_bytes=0)
    assert ResultStore(Path("/nonexistent")).part_bytes == store_module.COMPACT_PART_BYTES == 64 * 2**20


class Crash(Exception):
    pass


def test_a_crash_at_any_step_of_the_compaction_leaves_the_folder_exact(tmp_path, monkeypatch):
    """Stop finalize at its k-th change to storage (a write, a rename, a delete), for every k: the
    readers (load, iter_records) see exactly what they saw before, and the next finalize ends with
    each id once on disk and no scratch file."""
    reference = tmp_path / "reference"
    build(reference)
    expected = readers_see(reference)
    assert len(expected[0]) == 38 and "id-100" not in expected[1] and "legacy" in expected[1]

    real = {"open": Path.open, "rename": Path.rename, "unlink": Path.unlink, "write_text": Path.write_text}
    calls = {"n": 0, "crash_at": 0}

    def step() -> None:
        calls["n"] += 1
        if calls["n"] == calls["crash_at"]:
            raise Crash(f"stopped at step {calls['n']}")

    def fake_open(self, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax"):
            step()
        return real["open"](self, mode, *args, **kwargs)

    def fake_rename(self, target):
        step()
        return real["rename"](self, target)

    def fake_unlink(self, missing_ok=False):
        step()
        return real["unlink"](self, missing_ok=missing_ok)

    def fake_write_text(self, *args, **kwargs):
        step()
        return real["write_text"](self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", fake_open)
    monkeypatch.setattr(Path, "rename", fake_rename)
    monkeypatch.setattr(Path, "unlink", fake_unlink)
    monkeypatch.setattr(Path, "write_text", fake_write_text)

    k = committed_not_renamed = 0
    while True:
        k += 1
        folder = tmp_path / f"crash-{k}"
        build(folder)
        calls.update(n=0, crash_at=k)
        try:
            ResultStore(folder, session=S(9), part_bytes=700).finalize({})
            crashed = False
        except Crash:
            crashed = True
        calls["crash_at"] = 0
        if (folder / COMPACTION_NAME).exists() and list(folder.glob(f"{TMP_PREFIX}part-*")):
            committed_not_renamed += 1  # readers take the new parts under their _tmp- names, not the old
            read = [p.name for p in ResultStore(folder).part_files()]
            superseded = json.loads((folder / COMPACTION_NAME).read_text())["superseded"]
            assert any(name.startswith(TMP_PREFIX) for name in read) and not set(superseded) & set(read)
        assert readers_see(folder) == expected, f"readers after a crash at step {k}"
        ResultStore(folder, session=S(10), part_bytes=700).finalize({})  # the next run's end
        assert readers_see(folder) == expected
        on_disk = part_lines(folder)
        assert canonical(on_disk) == expected[0], f"parts after a crash at step {k} and a rerun"
        assert not list(folder.glob(f"{TMP_PREFIX}*")) and not (folder / COMPACTION_NAME).exists()
        if not crashed:
            break
    assert k > 10 and committed_not_renamed > 0  # every step was tried, the last run completed


def test_a_marker_naming_a_missing_part_is_ignored(tmp_path):
    build(tmp_path)
    expected = readers_see(tmp_path)
    old = sorted(p.name for p in tmp_path.glob("part-*.jsonl"))
    missing = f"part-{S(9)}-00001.jsonl"
    (tmp_path / COMPACTION_NAME).write_text(json.dumps({"parts": [missing], "superseded": old}))
    assert readers_see(tmp_path) == expected  # not "nothing": the old parts are read
    ResultStore(tmp_path, session=S(9), part_bytes=700).finalize({})
    assert canonical(part_lines(tmp_path)) == expected[0]
    assert not (tmp_path / COMPACTION_NAME).exists()


@pytest.mark.parametrize("content", [b"{torn", b"[]", b'{"parts": "x", "superseded": []}', b'{"parts": ["../x"]}'])
def test_an_unreadable_marker_is_ignored(tmp_path, content):
    build(tmp_path)
    expected = readers_see(tmp_path)
    (tmp_path / COMPACTION_NAME).write_bytes(content)
    assert readers_see(tmp_path) == expected
    ResultStore(tmp_path, session=S(9), part_bytes=700).finalize({})
    assert canonical(part_lines(tmp_path)) == expected[0]
    assert not (tmp_path / COMPACTION_NAME).exists()
