"""The compact winner index (digests, packed fields, full tallies only for ids with several records)
against a plain reference of the documented winner rules, on random folders."""

from __future__ import annotations

import json
import random

import pytest

from flex_provider.engine.store import ResultStore, is_final

HASHES = [None, "0123456789abcdef", "fedcba9876543210", "h1", "ABCDEF0123456789"]


def S(n: int) -> str:
    return f"20250601T1200{n:02d}-{n:06x}"


def random_record(rng: random.Random) -> dict:
    rid = f"id-{rng.randrange(12)}"
    status = rng.choice(["succeeded", "failed", "failed", "skipped"])
    record: dict = {"id": rid, "status": status, "finished_at": f"2025-06-01T12:00:{rng.randrange(6):02d}"}
    if rng.random() < 0.8:
        record["prompt_hash"] = rng.choice(HASHES)
    if status == "failed":
        record["error"] = {"type": "X", "retryable": rng.random() < 0.5}
    if rng.random() < 0.1:
        del record["finished_at"]
    return record


def reference(records: list[tuple[dict, int]]) -> dict[str, tuple[dict, int]]:
    """id -> (winning record, its line size), by the rules of store.py's docstring, records in the order met."""
    by_id: dict[str, list[tuple[dict, int]]] = {}
    for record, size in records:
        by_id.setdefault(record["id"], []).append((record, size))

    def rank(pair):
        r = pair[0]
        return (1 if r["status"] == "succeeded" else 0, r.get("finished_at") or "")

    out = {}
    for rid, pairs in by_id.items():
        newest = pairs[0]
        for pair in pairs[1:]:
            if rank(pair)[1] > rank(newest)[1]:
                newest = pair
        best: dict = {}
        for pair in pairs:
            h = pair[0].get("prompt_hash")
            if h not in best or rank(pair) > rank(best[h]):
                best[h] = pair
        current = newest[0].get("prompt_hash")
        candidates = list(best.values()) if current is None else [best[h] for h in (current, None) if h in best]
        winner = newest
        if candidates:
            winner = candidates[0]
            for pair in candidates[1:]:
                if rank(pair) > rank(winner):
                    winner = pair
        out[rid] = winner
    return out


@pytest.mark.parametrize("seed", range(40))
def test_load_and_iter_records_match_the_reference_rules(tmp_path, seed):
    rng = random.Random(seed)
    met: list[tuple[dict, int]] = []
    for session in range(1, rng.randrange(2, 5)):
        store = ResultStore(tmp_path, session=S(session))
        for _ in range(rng.randrange(1, 4)):
            records = [random_record(rng) for _ in range(rng.randrange(1, 6))]
            store.write_part(records)
            met += [(r, len((json.dumps(r, ensure_ascii=False) + "\n").encode())) for r in records]
    winners = reference(met)
    store = ResultStore(tmp_path, session=S(9))

    for redo in ("retryable", "all"):
        state = store.load(redo)
        final = {rid: w for rid, (w, _) in winners.items() if is_final(w) and not (redo == "all" and w["status"] != "succeeded")}
        assert dict(state.final_prompts) == {rid: w.get("prompt_hash") for rid, w in final.items()}
        assert len(state.final_prompts) == len(final)
        assert set(state.retryable_ids) == {rid for rid, (w, _) in winners.items() if not is_final(w)}
        redo_ids = {rid for rid, (w, _) in winners.items() if is_final(w) and w["status"] != "succeeded"}
        assert set(state.redo_ids) == (redo_ids if redo == "all" else set())
        assert set(state.final_failed) == (set() if redo == "all" else redo_ids)
        assert len(state.retryable_ids) + len(state.redo_ids) + len(state.final_ids) == len(winners)
        assert state.final_bytes == sum(winners[rid][1] for rid in final)
        for rid in winners:
            assert (rid in state.final_ids) == (rid in final)
            assert state.final_prompts.get(rid, "absent") == (final[rid].get("prompt_hash") if rid in final else "absent")

    records = list(store.iter_records())
    assert sorted(r["id"] for r in records) == sorted(winners)
    assert all(winners[r["id"]][0] == r for r in records)
    store.finalize({})
    assert sorted(json.dumps(r, sort_keys=True) for r in store.iter_records()) == sorted(
        json.dumps(w, sort_keys=True) for w, _ in winners.values()
    )
