"""Durable results: JSON Lines part files under one folder, written whole, manifest last.

Works on any pathlib-like object: ``pathlib.Path`` in tests, Airflow's ``ObjectStoragePath``
(file://, s3://, gs://...) in the adapters. Object stores have no append and no atomic rename of
folders, so progress is a growing set of immutable part files::

    part-<session>-<seq>.jsonl     result records, one per item; written to _tmp-* then renamed
    _pending/<session>-<seq>.jsonl background response ids, written before waiting on them
    _progress/<session>.json       request counters of one engine session (429s, fallbacks...)
    _manifest.json                 summary, written last: its presence means the run completed

A restarted trigger, a task retry or a re-run reads the part files back and skips every item that
has a final record. If two copies of a trigger ever overlap, an id can land in two parts; ``finalize``
compacts those so the output holds each id exactly once (a success beats a failure, newer beats older).
All methods are blocking: the engine calls them through ``asyncio.to_thread``.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from flex_provider.engine.errors import FlexInputError

MANIFEST_NAME = "_manifest.json"
JOB_NAME = "_job.json"
PART_PREFIX = "part-"
PART_SUFFIX = ".jsonl"
TMP_PREFIX = "_tmp-"
PENDING_DIR = "_pending"
PROGRESS_DIR = "_progress"


class PathLike(Protocol):
    """What we need from pathlib.Path / ObjectStoragePath."""

    name: str

    def __truediv__(self, other: str) -> PathLike: ...
    def exists(self) -> bool: ...
    def iterdir(self) -> Iterator[PathLike]: ...
    def mkdir(self, parents: bool = ..., exist_ok: bool = ...) -> None: ...
    def open(self, mode: str = ..., **kwargs: Any) -> Any: ...
    def read_text(self, **kwargs: Any) -> str: ...
    def write_text(self, data: str, **kwargs: Any) -> Any: ...
    def rename(self, target: Any) -> Any: ...
    def unlink(self, missing_ok: bool = ...) -> None: ...


def new_session_id() -> str:
    """Sortable by start time, unique across concurrent triggers."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


def _dump_line(record: Any) -> str:
    """One JSON line for ``record`` that cannot fail: item content must never cost a part."""
    try:
        line = json.dumps(record, ensure_ascii=False, default=str)
        line.encode("utf-8")
        return line + "\n"
    except (UnicodeEncodeError, TypeError, ValueError, RecursionError):
        pass  # lone surrogates: escaped below; non-string keys, cycles: those fields as text
    try:
        return json.dumps(record, ensure_ascii=True, default=str) + "\n"
    except (TypeError, ValueError, RecursionError):
        pass
    if not isinstance(record, dict):
        return json.dumps(_as_text(record)) + "\n"
    fields: dict[str, Any] = {}
    for key, value in record.items():
        try:
            json.dumps(value, default=str)
        except (TypeError, ValueError, RecursionError):
            value = _as_text(value)
        fields[key if isinstance(key, str) else _as_text(key)] = value
    return json.dumps(fields, ensure_ascii=True, default=str) + "\n"


def _as_text(value: Any) -> str:
    try:
        return repr(value)
    except Exception:  # a broken __repr__ must not cost the part either
        return f"<unrepresentable {type(value).__name__}>"


def _rank(record: dict[str, Any]) -> tuple[int, str]:
    return (1 if record.get("status") == "succeeded" else 0, str(record.get("finished_at", "")))


def is_final(record: dict[str, Any]) -> bool:
    """A success, or a failure that a new attempt cannot fix (bad request, invalid output)."""
    if record.get("status") == "succeeded":
        return True
    return not (record.get("error") or {}).get("retryable", False)


@dataclass
class StoreState:
    """What a new engine session finds on storage."""

    final_ids: set[str] = field(default_factory=set)
    retryable_ids: set[str] = field(default_factory=set)
    pending: dict[str, dict[str, Any]] = field(default_factory=dict)  # item id -> background entry
    manifest: dict[str, Any] | None = None


class ResultStore:
    def __init__(self, root: Any, session: str | None = None) -> None:
        self.root = root
        self.session = session or new_session_id()
        self._seq = 0
        self._pending_seq = 0

    # -- reading ---------------------------------------------------------------------------
    def _children(self, folder: Any) -> list[Any]:
        try:
            return sorted(folder.iterdir(), key=lambda p: p.name) if folder.exists() else []
        except FileNotFoundError:
            return []

    def part_files(self) -> list[Any]:
        return [p for p in self._children(self.root) if p.name.startswith(PART_PREFIX) and p.name.endswith(PART_SUFFIX)]

    @staticmethod
    def _read_jsonl(path: Any) -> Iterator[dict[str, Any]]:
        with path.open("r", encoding="utf-8") as handle:
            for line in handle:
                line = line.strip()
                if not line:
                    continue
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    # Only a torn write can do this (parts are renamed into place whole); the
                    # item simply has no result yet and will be done again.
                    continue

    def iter_part_records(self) -> Iterator[tuple[Any, dict[str, Any]]]:
        for part in self.part_files():
            for record in self._read_jsonl(part):
                yield part, record

    def load(self) -> StoreState:
        state = StoreState()
        for _, record in self.iter_part_records():
            rid = record.get("id")
            if rid is None:
                continue
            if is_final(record):
                state.final_ids.add(rid)
                state.retryable_ids.discard(rid)
            elif rid not in state.final_ids:
                state.retryable_ids.add(rid)
        for entry_file in self._children(self.root / PENDING_DIR):
            for entry in self._read_jsonl(entry_file):
                if entry.get("id") not in state.final_ids:
                    state.pending[entry["id"]] = entry
        manifest = self.root / MANIFEST_NAME
        if manifest.exists():
            state.manifest = json.loads(manifest.read_text(encoding="utf-8"))
        return state

    def load_progress(self) -> list[dict[str, Any]]:
        out = []
        for path in self._children(self.root / PROGRESS_DIR):
            try:
                out.append(json.loads(path.read_text(encoding="utf-8")))
            except (json.JSONDecodeError, OSError):
                continue
        return out

    def iter_records(self) -> Iterator[dict[str, Any]]:
        """The final record of every item, each id once, in part order."""
        winners = self._winners()
        for part in self.part_files():
            yield from self._take_winners(part, self._read_jsonl(part), winners)

    @staticmethod
    def _take_winners(
        part: Any, records: Iterable[dict[str, Any]], winners: dict[str, tuple[str, Any]]
    ) -> list[dict[str, Any]]:
        """The records of ``part`` that are their id's winner; each winner is taken once, so a
        record repeated verbatim (same id and time) survives only where it is met first."""
        keep = []
        for record in records:
            rid = record.get("id")
            if winners.get(rid) == (part.name, record.get("finished_at")):
                winners.pop(rid)
                keep.append(record)
        return keep

    def _winners(self) -> dict[str, tuple[str, Any]]:
        best: dict[str, tuple[tuple[int, str], str, Any]] = {}
        for part, record in self.iter_part_records():
            rid = record.get("id")
            rank = _rank(record)
            if rid not in best or rank > best[rid][0]:
                best[rid] = (rank, part.name, record.get("finished_at"))
        return {rid: (name, finished) for rid, (_, name, finished) in best.items()}

    # -- writing ---------------------------------------------------------------------------
    def _write_whole(self, folder: Any, name: str, text: str) -> None:
        """Write to a temporary name, then rename: readers never see half a file."""
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f"{TMP_PREFIX}{name}"
        tmp.write_text(text, encoding="utf-8")
        tmp.rename(folder / name)

    @staticmethod
    def _lines(records: list[dict[str, Any]]) -> str:
        """JSON Lines that always encode as UTF-8, whatever the records hold.

        Readable UTF-8 first (``ensure_ascii=False``); the whole text is checked once, and only if
        something cannot be encoded (a lone surrogate, half an emoji) is each record redone on its
        own, falling back to ``\\uXXXX`` escapes (which ``json.loads`` reads back to the same
        string) and, for what JSON cannot hold at all, to text (see :func:`_dump_line`)."""
        try:
            text = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records)
            text.encode("utf-8")
            return text
        except (UnicodeEncodeError, TypeError, ValueError, RecursionError):
            return "".join(_dump_line(r) for r in records)

    def write_part(self, records: list[dict[str, Any]]) -> str:
        self._seq += 1
        name = f"{PART_PREFIX}{self.session}-{self._seq:05d}{PART_SUFFIX}"
        self._write_whole(self.root, name, self._lines(records))
        return name

    def write_pending(self, entries: list[dict[str, Any]]) -> None:
        self._pending_seq += 1
        self._write_whole(
            self.root / PENDING_DIR, f"{self.session}-{self._pending_seq:05d}.jsonl", self._lines(entries)
        )

    def write_progress(self, counters: dict[str, Any]) -> None:
        self._write_whole(self.root / PROGRESS_DIR, f"{self.session}.json", json.dumps(counters, default=str))

    def finalize(
        self,
        manifest: dict[str, Any],
        summarize: Callable[[Iterable[dict[str, Any]]], dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Compact duplicate ids away, drop scratch files, then write the manifest (last).

        ``summarize`` sees every final record once, during the compaction pass (one read of the
        parts, not one per purpose); what it returns is merged into the manifest."""
        winners = self._winners()

        def final_records() -> Iterator[dict[str, Any]]:
            for part in self.part_files():
                records = list(self._read_jsonl(part))
                keep = self._take_winners(part, records, winners)
                if len(keep) != len(records):
                    if keep:
                        self._write_whole(self.root, part.name, self._lines(keep))
                    else:
                        part.unlink()
                yield from keep

        records = final_records()
        summary = summarize(records) if summarize is not None else {}
        for _ in records:  # finish compacting whatever summarize did not read
            pass
        for child in self._children(self.root / PENDING_DIR):
            child.unlink(missing_ok=True)
        for child in self._children(self.root):
            if child.name.startswith(TMP_PREFIX):
                child.unlink(missing_ok=True)
        manifest = {**manifest, **summary}
        manifest["parts"] = [p.name for p in self.part_files()]
        self._write_whole(self.root, MANIFEST_NAME, json.dumps(manifest, indent=2, default=str))
        return manifest

    def claim(self, fingerprint: str, description: dict[str, Any]) -> None:
        """Refuse to mix results of different requests in one folder.

        Item ids come from the input alone, so a re-run with another model or other instructions
        would otherwise "resume" from answers to a different question. The first run writes
        ``_job.json``; later runs must match it."""
        path = self.root / JOB_NAME
        if path.exists():
            existing = json.loads(path.read_text(encoding="utf-8"))
            if existing.get("fingerprint") != fingerprint:
                raise FlexInputError(
                    f"output_path: {self.root} holds results of a different request "
                    f"(was {existing.get('request')}, now {description}); resuming would mix answers "
                    "to different prompts. Use a new output_path, or delete that folder to start over."
                )
            return
        self._write_whole(self.root, JOB_NAME, json.dumps({"fingerprint": fingerprint, "request": description}))

    def read_manifest(self) -> dict[str, Any] | None:
        path = self.root / MANIFEST_NAME
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
