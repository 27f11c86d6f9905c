"""Durable results: JSON Lines part files under one folder, written whole, manifest last.

Works on any pathlib-like object: ``pathlib.Path`` in tests, Airflow's ``ObjectStoragePath``
(file://, s3://, gs://...) in the adapters. Object stores have no append and no atomic rename of
folders, so progress is a growing set of immutable part files::

    part-<session>-<seq>.jsonl     result records, one per item; written to _tmp-* then renamed
    _pending/<session>-<seq>.jsonl background response ids, written before waiting on them
    _progress/<session>.json       one engine session's request counters (429s, fallbacks...) and live state
    _job.json                      which request the results answer (see ``claim``)
    _lease.json                    which engine session works in the folder now (see ``lease.py``)
    _manifest.json                 summary, written last: its presence means the run completed

Only part names of exactly that shape (``<session>`` as made by :func:`new_session_id`) are read as
results: any other file in the folder, even a user's ``part-0001.jsonl``, is neither read nor touched.

A restarted trigger, a task retry or a re-run reads the part files back and skips every item that
has a final record. If two copies of a trigger ever overlap, an id can land in two parts; ``finalize``
compacts those so the output holds each id exactly once. Which record of an id wins: the newest
record's ``prompt_hash`` (a hash of the prompt sent) names the current prompt; only records with
that hash, or with none (older versions wrote none), can win; among them a success beats a failure,
then newer beats older (a newer failure beats an older failure too). An answer to a prompt that has
since changed is stale and never wins. ``load`` counts an item as done when its winner is final (a
success, or a failure no new attempt can fix): what the output keeps is what was done. A record
``"skipped"`` (not sent: the budget could not afford it) ranks like a failure and is never final, so
the next run sends the item again; its new record (a success, or a newer skip) wins.

Damage is survived where that is safe: a line that is not a record (a torn last line after a crash,
a truncated file, anything but an object with a string ``id`` and a known ``status``) counts as no
result, so that item is done again, and ``finalize`` rewrites its part without it; unreadable
``_progress``/``_pending`` entries are skipped. A corrupt ``_job.json`` or ``_manifest.json`` raises
:class:`CorruptCheckpointError` naming the file and what to do (``load`` does not read the manifest:
the end of a run rewrites it). Writes never fail on item content: text JSON cannot encode falls back
to escapes.

All methods are blocking: the engine calls them through ``asyncio.to_thread``.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, KeysView, Mapping
from dataclasses import dataclass, field
from typing import Any

from flex_provider.engine.errors import FlexInputError

MANIFEST_NAME = "_manifest.json"
JOB_NAME = "_job.json"
PART_PREFIX = "part-"
PART_SUFFIX = ".jsonl"
TMP_PREFIX = "_tmp-"
PENDING_DIR = "_pending"
PROGRESS_DIR = "_progress"
# "skipped": not sent, the budget could not afford it; always retryable, so never final (see is_final).
RECORD_STATUSES = frozenset({"succeeded", "failed", "skipped"})
SESSION_PATTERN = r"\d{8}T\d{6}-[0-9a-f]{6}"  # what new_session_id() makes
_SESSION_RE = re.compile(SESSION_PATTERN)
_PART_RE = re.compile(rf"{re.escape(PART_PREFIX)}{SESSION_PATTERN}-\d{{5,}}{re.escape(PART_SUFFIX)}")
_UNREADABLE = object()  # a line that is not UTF-8 JSON

log = logging.getLogger(__name__)


class CorruptCheckpointError(FlexInputError):
    """A file the store keeps (``_job.json``, ``_manifest.json``) cannot be read; the message names
    the file and what to do about it."""


def is_session_id(value: str) -> bool:
    return _SESSION_RE.fullmatch(value) is not None


def is_part_name(name: str) -> bool:
    """``part-<session>-<seq>.jsonl`` exactly as :meth:`ResultStore.write_part` names them."""
    return _PART_RE.fullmatch(name) is not None


def as_record(value: Any) -> dict[str, Any] | None:
    """``value`` if it is a result record (an object with a string id, a known status and a string
    or no prompt_hash), else None: anything else is treated as no result."""
    if (
        isinstance(value, dict)
        and isinstance(value.get("id"), str)
        and value.get("status") in RECORD_STATUSES
        and isinstance(value.get("prompt_hash"), str | None)
    ):
        return value
    return None


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


def is_final(record: dict[str, Any]) -> bool:
    """A success, or a failure that a new attempt cannot fix (bad request, invalid output). An item
    skipped for the budget is not: the next run (with a higher cap) sends it."""
    status = record.get("status")
    if status == "succeeded":
        return True
    if status == "skipped":
        return False
    error = record.get("error")
    return not (isinstance(error, dict) and error.get("retryable", False))


@dataclass
class StoreState:
    """What a new engine session finds on storage."""

    # item id -> prompt_hash of its final record (None for a record without one, from an older version)
    final_prompts: dict[str, str | None] = field(default_factory=dict)
    retryable_ids: set[str] = field(default_factory=set)
    # load(redo_failed="all"): ids whose final record is a failure, to be sent again (not in final_prompts)
    redo_ids: set[str] = field(default_factory=set)
    # ids in final_prompts whose final record is a failure (a session counts them as resumed failures)
    final_failed: set[str] = field(default_factory=set)
    pending: dict[str, dict[str, Any]] = field(default_factory=dict)  # item id -> background entry
    final_bytes: int = 0  # UTF-8 size of the lines of the final records (what the output will hold)

    @property
    def final_ids(self) -> KeysView[str]:
        """Ids with a final record: a live, set-like view (``in``, ``len``, ``==`` a set)."""
        return self.final_prompts.keys()


# One record reduced to what choosing a winner needs:
# (succeeded 0/1, finished_at, prompt_hash, part name, line number, is final, line size in bytes).
_Entry = tuple[int, str, "str | None", str, int, bool, int]


def _entry(value: Any, name: str, number: int, size: int) -> _Entry | None:
    record = as_record(value)
    if record is None:
        return None
    finished_at = record.get("finished_at")
    return (
        1 if record["status"] == "succeeded" else 0,
        finished_at if isinstance(finished_at, str) else "",  # none: older than any other
        record.get("prompt_hash"),
        name,
        number,
        is_final(record),
        size,
    )


class _Tally:
    """Every record of one item that has several (most have one, kept as a bare ``_Entry``).

    The newest record's prompt_hash is the current prompt; only records with that hash, or with
    none (older versions wrote none; they match any hash), can win."""

    __slots__ = ("best", "newest")

    def __init__(self, first: _Entry) -> None:
        self.newest = first
        self.best: dict[str | None, _Entry] = {first[2]: first}  # prompt_hash -> best record

    def add(self, entry: _Entry) -> None:
        if entry[1] > self.newest[1]:  # on a tie the record met first stays
            self.newest = entry
        prompt_hash, rank = entry[2], entry[:2]
        best = self.best.get(prompt_hash)
        if best is None or rank > best[:2]:
            self.best[prompt_hash] = entry

    def _pick(self, by_hash: dict[str | None, _Entry]) -> _Entry | None:
        current = self.newest[2]
        if current is None:
            candidates = list(by_hash.values())
        else:
            candidates = [by_hash[h] for h in (current, None) if h in by_hash]
        # a success beats a failure, then newer beats older (max keeps the first of equals)
        return max(candidates, key=lambda e: e[:2]) if candidates else None

    def winner(self) -> _Entry:
        return self._pick(self.best) or self.newest


class ResultStore:
    def __init__(self, root: Any, session: str | None = None) -> None:
        if session is not None and not is_session_id(session):
            raise ValueError(
                f"session {session!r} does not look like new_session_id() (YYYYMMDDTHHMMSS-<6 hex>): "
                "its parts would be named in a way the store never reads back"
            )
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
        """The part files this store (any session) wrote; other files, even ``part-*.jsonl`` ones
        such as a user's input file placed in the folder, are never read as results."""
        return [p for p in self._children(self.root) if is_part_name(p.name)]

    @staticmethod
    def _read_lines(path: Any) -> Iterator[tuple[int, int, Any]]:
        """``(line number, size in bytes, JSON value)`` of each non-blank line; the value is
        ``_UNREADABLE`` for a line that is not UTF-8 JSON. Only a torn write makes one in a part
        (parts are renamed into place whole): that item has no result yet and is done again."""
        with path.open("rb") as handle:
            for number, raw in enumerate(handle):
                if not raw.strip():
                    continue
                try:
                    value = json.loads(raw.decode("utf-8"))
                except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError
                    value = _UNREADABLE
                yield number, len(raw), value

    @classmethod
    def _read_jsonl(cls, path: Any) -> Iterator[dict[str, Any]]:
        """The JSON objects of a JSON Lines file, skipping every other line."""
        for _, _, value in cls._read_lines(path):
            if isinstance(value, dict):
                yield value

    def _rows(self) -> Iterator[tuple[Any, int, int, dict[str, Any] | None]]:
        """``(part, line number, size, record or None)`` of every non-blank line of every part."""
        for part in self.part_files():
            for number, size, value in self._read_lines(part):
                yield part, number, size, as_record(value)

    def iter_part_records(self) -> Iterator[tuple[Any, dict[str, Any]]]:
        for part, _, _, record in self._rows():
            if record is not None:
                yield part, record

    def _tallies(self, skipped: dict[str, int] | None = None) -> dict[str, _Entry | _Tally]:
        """One pass over every part: each id's records, reduced (see :class:`_Tally`)."""
        tallies: dict[str, _Entry | _Tally] = {}
        for part in self.part_files():
            name = part.name
            for number, size, value in self._read_lines(part):
                entry = _entry(value, name, number, size)
                if entry is None:
                    if skipped is not None:
                        skipped[name] = skipped.get(name, 0) + 1
                    continue
                rid = value["id"]
                known = tallies.get(rid)
                if known is None:
                    tallies[rid] = entry
                elif isinstance(known, _Tally):
                    known.add(entry)
                else:
                    tally = tallies[rid] = _Tally(known)
                    tally.add(entry)
        return tallies

    def load(self, redo_failed: str = "retryable") -> StoreState:
        """What is done: an item is final if a final record answers its current prompt (the
        prompt_hash of its newest record); retryable if it only has retryable failures for it.

        ``redo_failed="all"``: an item whose final record is a failure is not done either
        (``redo_ids``): it is sent again, and its new record wins in ``finalize`` (a success beats a
        failure, a newer failure beats an older one)."""
        state = StoreState()
        skipped: dict[str, int] = {}
        for rid, tally in self._tallies(skipped).items():
            winner = tally.winner() if isinstance(tally, _Tally) else tally
            final = winner if winner[5] else None  # what finalize keeps is what counts as done
            if final is None:
                state.retryable_ids.add(rid)
            elif redo_failed == "all" and final[0] == 0:
                state.redo_ids.add(rid)
            else:
                state.final_prompts[rid] = final[2]
                state.final_bytes += final[6]
                if final[0] == 0:
                    state.final_failed.add(rid)
        if skipped:
            log.warning(
                "%s: ignored %d line(s) that are not result records (torn write?) in %s; those items "
                "have no result and are done again",
                self.root,
                sum(skipped.values()),
                ", ".join(sorted(skipped)),
            )
        for entry_file in self._children(self.root / PENDING_DIR):
            for entry in self._read_jsonl(entry_file):
                pending_id = entry.get("id")
                if (
                    isinstance(pending_id, str)
                    and isinstance(entry.get("response_id"), str)
                    and pending_id not in state.final_ids
                ):
                    state.pending[pending_id] = entry
        return state

    def load_progress(self) -> list[dict[str, Any]]:
        """Every session's saved progress (request counters, and the live state of newer versions)."""
        return [progress for _, progress in self.load_sessions()]

    def load_sessions(self) -> list[tuple[str, dict[str, Any]]]:
        """``(session, progress)`` of every ``_progress/<session>.json``, in session-name order
        (start time, to the second). Only names :meth:`write_progress` makes are read: a temporary
        copy left by a write in progress would count a session twice. A file that is not a JSON
        object (torn, foreign) is skipped."""
        out = []
        for path in self._children(self.root / PROGRESS_DIR):
            session = path.name.removesuffix(".json")
            if session == path.name or not is_session_id(session):
                continue
            try:
                with path.open("rb") as handle:
                    value = json.loads(handle.read().decode("utf-8"))
            except (ValueError, RecursionError, OSError):
                continue
            if isinstance(value, dict):
                out.append((session, value))
        return out

    def iter_records(self) -> Iterator[dict[str, Any]]:
        """The final record of every item, each id once, in part order."""
        winners = self._winners()
        for part in self.part_files():
            yield from self._take_winners(part, self._read_lines(part), winners)

    @staticmethod
    def _take_winners(
        part: Any, rows: Iterable[tuple[int, int, Any]], winners: dict[str, tuple[str, int]]
    ) -> list[dict[str, Any]]:
        """The records of ``part`` that are their id's winner (named by part and line number)."""
        keep = []
        name = part.name
        for number, _, value in rows:
            record = as_record(value)
            if record is not None and winners.get(record["id"]) == (name, number):
                keep.append(record)
        return keep

    def _winners(self) -> dict[str, tuple[str, int]]:
        """id -> (part name, line number) of its winning record (see :meth:`_Tally.winner`)."""
        return {
            rid: (tally.winner() if isinstance(tally, _Tally) else tally)[3:5] for rid, tally in self._tallies().items()
        }

    @staticmethod
    def _read_object(path: Any) -> dict[str, Any] | None:
        """A JSON object file: None if absent; CorruptCheckpointError if it is not a JSON object."""
        try:
            if not path.exists():
                return None
            with path.open("rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            return None
        try:
            value = json.loads(data.decode("utf-8"))
        except (ValueError, RecursionError) as exc:
            raise CorruptCheckpointError(f"{path} is not readable JSON ({type(exc).__name__})") from None
        if not isinstance(value, dict):
            raise CorruptCheckpointError(f"{path} holds a JSON {type(value).__name__}, not an object")
        return value

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

    def write_progress(self, progress: Mapping[str, Any]) -> None:
        """This session's progress (see :class:`~flex_provider.engine.progress.SessionProgress`),
        rewritten whole at each checkpoint."""
        text = json.dumps(progress, default=str, separators=(",", ":"))
        self._write_whole(self.root / PROGRESS_DIR, f"{self.session}.json", text)

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
                rows = list(self._read_lines(part))
                keep = self._take_winners(part, rows, winners)
                if len(keep) != len(rows):  # duplicates, losers or unreadable lines: rewrite
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
        try:
            existing = self._read_object(path)
        except CorruptCheckpointError as exc:
            raise CorruptCheckpointError(
                f"{exc}. It records which request the results in {self.root} answer. Delete {path} to "
                "accept the results already there as this request's (the next run rewrites it), or use "
                "a new output_path to start over."
            ) from None
        if existing is not None:
            if existing.get("fingerprint") != fingerprint:
                raise FlexInputError(
                    f"output_path: {self.root} holds results of a different request "
                    f"(was {existing.get('request')}, now {description}); resuming would mix answers "
                    "to different prompts. Use a new output_path, or delete that folder to start over."
                )
            return
        self._write_whole(
            self.root, JOB_NAME, json.dumps({"fingerprint": fingerprint, "request": description}, default=str)
        )

    def read_manifest(self) -> dict[str, Any] | None:
        """The manifest, or None before a run completed; CorruptCheckpointError names a bad one."""
        path = self.root / MANIFEST_NAME
        try:
            return self._read_object(path)
        except CorruptCheckpointError as exc:
            raise CorruptCheckpointError(
                f"{exc}. It is only a summary, rewritten at the end of every run: delete {path} and "
                "run the task again (finished results are kept and not paid for twice)."
            ) from None
