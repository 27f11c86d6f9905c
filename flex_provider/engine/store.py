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
    _compaction.json               only while finalize commits a compaction (see ``finalize``)

Only part names of exactly that shape (``<session>`` as made by :func:`new_session_id`) are read as
results: any other file in the folder, even a user's ``part-0001.jsonl``, is neither read nor touched.
(The one exception: while ``_compaction.json`` is being committed, the new parts it names are read
under their ``_tmp-`` names until renamed; see ``finalize``.)

A restarted trigger, a task retry or a re-run reads the part files back and skips every item that
has a final record. If two copies of a trigger ever overlap, an id can land in two parts; ``finalize``
compacts those so the output holds each id exactly once, and merges the small parts of the run's
flushes (one every ``flush_interval_s``) into parts of up to ``COMPACT_PART_BYTES`` (64 MiB), so
that downstream readers find a few files of sensible size rather than thousands of tiny ones. Which record of an id wins: the newest
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

Memory stays small in the number of items: reading the parts keeps each id as a 128-bit digest
with its winner's location and status packed in flat arrays (~100 bytes per id, see
:class:`_Winners`), never the records or the id strings; records are streamed.

All methods are blocking: the engine calls them through ``asyncio.to_thread``.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, KeysView, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

from flex_provider.engine.errors import FlexInputError
from flex_provider.engine.idindex import IdIndex, id_key

MANIFEST_NAME = "_manifest.json"
JOB_NAME = "_job.json"
PART_PREFIX = "part-"
PART_SUFFIX = ".jsonl"
TMP_PREFIX = "_tmp-"
COMPACTION_NAME = "_compaction.json"
# finalize merges small parts into parts of up to this many bytes (ResultStore(part_bytes=...))
COMPACT_PART_BYTES = 64 * 2**20
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
    """What a new engine session finds on storage.

    The id collections are compact views over the winners found by :meth:`ResultStore.load`
    (128-bit digests, not strings: see :class:`_Winners`): ``in``, ``len`` and lookups are answered
    from memory; iterating one (tests, tools; the engine never does) reads the parts again, as
    they were at ``load``."""

    # item id -> prompt_hash of its final record (None for a record without one, from an older version)
    final_prompts: Mapping[str, str | None] = field(default_factory=dict)
    retryable_ids: AbstractSet[str] = frozenset()
    # load(redo_failed="all"): ids whose final record is a failure, to be sent again (not in final_prompts)
    redo_ids: AbstractSet[str] = frozenset()
    # ids in final_prompts whose final record is a failure (a session counts them as resumed failures)
    final_failed: AbstractSet[str] = frozenset()
    pending: dict[str, dict[str, Any]] = field(default_factory=dict)  # item id -> background entry
    final_bytes: int = 0  # UTF-8 size of the lines of the final records (what the output will hold)

    @property
    def final_ids(self) -> KeysView[str]:
        """Ids with a final record: a live, set-like view (``in``, ``len``, ``==`` a set)."""
        return self.final_prompts.keys()


# One record reduced to what choosing a winner needs:
# (succeeded 0/1, finished_at, prompt_hash, part index, line number, is final, line size in bytes).
_Entry = tuple[int, str, "str | None", int, int, bool, int]


def _entry(value: Any, part: int, number: int, size: int) -> _Entry | None:
    record = as_record(value)
    if record is None:
        return None
    finished_at = record.get("finished_at")
    return (
        1 if record["status"] == "succeeded" else 0,
        finished_at if isinstance(finished_at, str) else "",  # none: older than any other
        record.get("prompt_hash"),
        part,
        number,
        is_final(record),
        size,
    )


class _Tally:
    """Every record of one item that has several (most have one: see :class:`_Winners`).

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


# Column 1 of a _Winners slot: part index << 40 | line number << 5 | these flags.
_SUCCEEDED, _FINAL, _HASH_HEX, _HASH_OTHER, _SEVERAL = 1, 2, 4, 8, 16
_LINE_MASK = (1 << 35) - 1
_MAX_SIZE = 2**32 - 1  # line sizes are kept in 32 bits (a 4 GiB line counts as that)
_HEX16 = re.compile(r"[0-9a-f]{16}")  # what attempt.prompt_hash() makes: kept as a 64-bit number

# What load() makes of an id, from its winning record.
_DONE, _DONE_FAILED, _RETRY, _REDO = 0, 1, 2, 3
_FINAL_KINDS = frozenset({_DONE, _DONE_FAILED})

_Lines = Callable[[Any], Iterable[tuple[int, bytes, Any]]]


def _kind(winner: _Entry, redo_all: bool) -> int:
    if not winner[5]:
        return _RETRY
    if winner[0]:
        return _DONE
    return _REDO if redo_all else _DONE_FAILED


class _Winners:
    """Each id's winning record (see :class:`_Tally`), as the parts were when read.

    Compact, for millions of ids: an :class:`IdIndex` from the id's digest to its record's part
    index, line number, status flags, prompt_hash (a 64-bit number when it has the 16 hex
    characters ``prompt_hash()`` makes) and line size, ~100 bytes per id where dicts of tuples took
    ~400. The first pass over the parts keeps the first record of each id; an id met again is only
    marked. Ids with several records (overlapping sessions, retried failures) are then tallied in
    full by a second pass over just the parts that hold them, in the same order, so that the
    "record met first" tie rules are those of a single pass."""

    def __init__(self, parts: list[Any], read: _Lines, expected_ids: int = 0) -> None:
        self.parts = parts
        self._read = read
        # id digest -> (prompt hash number, part << 40 | line << 5 | flags, line size): 36 bytes a
        # slot; sized for ``expected_ids`` at once, else growing costs the old table beside the new
        self.index = IdIndex("QQI", capacity=expected_ids)
        self.several: dict[int, _Tally] = {}  # id digest -> all its records, for ids with several
        self.other_hashes: dict[int, str] = {}  # prompt hashes not of prompt_hash()'s shape (older, foreign)
        self.lines = [0] * len(parts)  # non-blank lines per part
        self.sizes = [0] * len(parts)  # and their bytes
        self.skipped: dict[str, int] = {}  # part name -> lines that are not records
        self._tally()

    def _tally(self) -> None:
        index = self.index
        several_parts: set[int] = set()
        for p, part in enumerate(self.parts):
            lines = size_sum = 0
            for number, raw, value in self._read(part):
                lines += 1
                size_sum += len(raw)
                record = as_record(value)
                if record is None:
                    self.skipped[part.name] = self.skipped.get(part.name, 0) + 1
                    continue
                key = id_key(record["id"])
                slot = index.find(key)
                if slot >= 0:  # met again: tallied in full below
                    packed = index.value(slot, 1)
                    if not packed & _SEVERAL:
                        index.set_value(slot, 1, packed | _SEVERAL)
                        several_parts.add(packed >> 40)
                    several_parts.add(p)
                    continue
                prompt, code, flags = record.get("prompt_hash"), 0, 0
                if prompt is not None:
                    if len(prompt) == 16 and _HEX16.fullmatch(prompt):
                        code, flags = int(prompt, 16), _HASH_HEX
                    else:
                        flags = _HASH_OTHER
                        self.other_hashes[key] = prompt
                if record["status"] == "succeeded":
                    flags |= _SUCCEEDED
                if is_final(record):
                    flags |= _FINAL
                index.add(key, code, p << 40 | number << 5 | flags, min(len(raw), _MAX_SIZE))
            self.lines[p], self.sizes[p] = lines, size_sum
        for p in sorted(several_parts):  # in part order, as the first pass met them
            for number, raw, value in self._read(self.parts[p]):
                entry = _entry(value, p, number, len(raw))
                if entry is None:
                    continue
                key = id_key(value["id"])
                slot = index.find(key)
                if slot < 0 or not index.value(slot, 1) & _SEVERAL:
                    continue
                tally = self.several.get(key)
                if tally is None:
                    self.several[key] = _Tally(entry)
                else:
                    tally.add(entry)

    def winner(self, key: int) -> _Entry | None:
        """The winning record of the id with digest ``key`` (its finished_at is not kept: "")."""
        index = self.index
        slot = index.find(key)
        if slot < 0:
            return None
        packed = index.value(slot, 1)
        if packed & _SEVERAL:
            tally = self.several.get(key)
            if tally is not None:  # else its part vanished between the passes: the first record stands
                return tally.winner()
        prompt: str | None = None
        if packed & _HASH_HEX:
            prompt = format(index.value(slot, 0), "016x")
        elif packed & _HASH_OTHER:
            prompt = self.other_hashes[key]
        part, number = packed >> 40, (packed >> 5) & _LINE_MASK
        return (packed & _SUCCEEDED, "", prompt, part, number, bool(packed & _FINAL), index.value(slot, 2))

    def wins(self, record_id: str, part: int, number: int) -> bool:
        """Is line ``number`` of part ``part`` its id's winner?"""
        winner = self.winner(id_key(record_id))
        return winner is not None and winner[3] == part and winner[4] == number

    def winners_per_part(self) -> list[int]:
        counts = [0] * len(self.parts)
        index = self.index
        for slot in index.slots():
            packed = index.value(slot, 1)
            if not packed & _SEVERAL or index.key(slot) not in self.several:
                counts[packed >> 40] += 1
        for tally in self.several.values():
            counts[tally.winner()[3]] += 1
        return counts

    def kinds(self, redo_all: bool) -> tuple[list[int], int]:
        """How many ids are of each kind (``_DONE``...), and the bytes of the final ones' lines."""
        counts = [0, 0, 0, 0]
        final_bytes = 0
        index = self.index
        for slot in index.slots():
            packed = index.value(slot, 1)
            if packed & _SEVERAL and index.key(slot) in self.several:
                continue
            if not packed & _FINAL:
                kind = _RETRY
            elif packed & _SUCCEEDED:
                kind = _DONE
            else:
                kind = _REDO if redo_all else _DONE_FAILED
            counts[kind] += 1
            if kind in _FINAL_KINDS:
                final_bytes += index.value(slot, 2)
        for tally in self.several.values():
            winner = tally.winner()
            kind = _kind(winner, redo_all)
            counts[kind] += 1
            if kind in _FINAL_KINDS:
                final_bytes += winner[6]
        return counts, final_bytes

    def kind_of(self, record_id: object, redo_all: bool) -> int | None:
        if not isinstance(record_id, str):
            return None
        winner = self.winner(id_key(record_id))
        return None if winner is None else _kind(winner, redo_all)

    def ids(self, kinds: AbstractSet[int], redo_all: bool) -> Iterator[str]:
        """The ids of those kinds, read back from the parts (the index keeps digests only)."""
        for p, part in enumerate(self.parts):
            for number, _, value in self._read(part):
                record = as_record(value)
                if record is None:
                    continue
                winner = self.winner(id_key(record["id"]))
                if winner is not None and winner[3] == p and winner[4] == number and _kind(winner, redo_all) in kinds:
                    yield record["id"]


class _IdSet(AbstractSet[str]):
    """The ids of some kinds, as a read-only set (see :class:`StoreState`)."""

    def __init__(self, winners: _Winners, kinds: frozenset[int], redo_all: bool, size: int) -> None:
        self._winners, self._kinds, self._redo_all, self._size = winners, kinds, redo_all, size

    def __contains__(self, item: object) -> bool:
        return self._winners.kind_of(item, self._redo_all) in self._kinds

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[str]:
        return self._winners.ids(self._kinds, self._redo_all)

    def __repr__(self) -> str:
        return f"<{len(self)} id(s)>"


class _FinalPrompts(Mapping[str, "str | None"]):
    """Id -> prompt_hash of its final record, read-only (see :class:`StoreState`)."""

    def __init__(self, winners: _Winners, redo_all: bool, size: int) -> None:
        self._winners, self._redo_all, self._size = winners, redo_all, size

    def __getitem__(self, item_id: str) -> str | None:
        winner = self._winners.winner(id_key(item_id)) if isinstance(item_id, str) else None
        if winner is None or _kind(winner, self._redo_all) not in _FINAL_KINDS:
            raise KeyError(item_id)
        return winner[2]

    def __contains__(self, item: object) -> bool:
        return self._winners.kind_of(item, self._redo_all) in _FINAL_KINDS

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[str]:
        return self._winners.ids(_FINAL_KINDS, self._redo_all)

    def __repr__(self) -> str:
        return f"<{len(self)} final id(s)>"


class _PartWriter:
    """Streams record lines into parts of up to ``limit`` bytes, each under a ``_tmp-`` name until
    the compaction is committed (see :meth:`ResultStore.finalize`); memory stays one line."""

    def __init__(self, root: Any, session: str, seq: int, limit: int) -> None:
        self.root, self.session, self.seq, self.limit = root, session, seq, limit
        self.names: list[str] = []
        self._handle: Any = None
        self._size = 0

    def write(self, raw: bytes) -> None:
        if not raw.endswith(b"\n"):
            raw += b"\n"
        if self._handle is None or (self._size and self._size + len(raw) > self.limit):
            self.close()
            self.seq += 1
            name = f"{PART_PREFIX}{self.session}-{self.seq:05d}{PART_SUFFIX}"
            self.root.mkdir(parents=True, exist_ok=True)
            self._handle = (self.root / f"{TMP_PREFIX}{name}").open("wb")
            self.names.append(name)
            self._size = 0
        self._handle.write(raw)
        self._size += len(raw)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class ResultStore:
    def __init__(self, root: Any, session: str | None = None, *, part_bytes: int = COMPACT_PART_BYTES) -> None:
        if session is not None and not is_session_id(session):
            raise ValueError(
                f"session {session!r} does not look like new_session_id() (YYYYMMDDTHHMMSS-<6 hex>): "
                "its parts would be named in a way the store never reads back"
            )
        if part_bytes < 1:
            raise ValueError(f"part_bytes must be at least 1, got {part_bytes!r}")
        self.root = root
        self.session = session or new_session_id()
        self.part_bytes = part_bytes  # finalize compacts parts into files of up to this size
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
        such as a user's input file placed in the folder, are never read as results.

        While a compaction is being committed (``_compaction.json`` present, see :meth:`finalize`)
        the parts it replaces are left out and its new parts read in, under their ``_tmp-`` name
        until they are renamed."""
        children = self._children(self.root)
        parts = [p for p in children if is_part_name(p.name)]
        if any(child.name == COMPACTION_NAME for child in children):
            return self._after_compaction(parts, {child.name: child for child in children})
        return parts

    def _compaction(self) -> tuple[list[str], list[str]] | None:
        """``(new parts, parts they replace)`` of a compaction being committed, or None (none, or
        an unreadable marker: then every part is read, old and new, which is still exact)."""
        try:
            value = self._read_object(self.root / COMPACTION_NAME)
        except (CorruptCheckpointError, OSError):
            return None
        if value is None:
            return None
        compacted, superseded = value.get("parts"), value.get("superseded")
        names = [*(compacted or []), *(superseded or [])] if isinstance(compacted, list) else None
        if (
            not isinstance(superseded, list)
            or names is None
            or not all(isinstance(n, str) and is_part_name(n) for n in names)
        ):
            return None
        return compacted, superseded  # type: ignore[return-value]  # checked just above

    def _after_compaction(self, parts: list[Any], children: dict[str, Any]) -> list[Any]:
        marker = self._compaction()
        if marker is None:
            return parts
        compacted, superseded = marker
        found = []
        for name in compacted:
            path = children.get(name) or children.get(f"{TMP_PREFIX}{name}")
            if path is None:  # not written by this store: read every part (a superset, still exact)
                return parts
            found.append((name, path))
        hidden = {*compacted, *superseded}
        kept = [(p.name, p) for p in parts if p.name not in hidden]
        return [path for _, path in sorted(kept + found, key=lambda pair: pair[0])]

    @staticmethod
    def _read_lines(path: Any) -> Iterator[tuple[int, bytes, Any]]:
        """``(line number, raw bytes, JSON value)`` of each non-blank line; the value is
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
                yield number, raw, value

    @classmethod
    def _read_jsonl(cls, path: Any) -> Iterator[dict[str, Any]]:
        """The JSON objects of a JSON Lines file, skipping every other line."""
        for _, _, value in cls._read_lines(path):
            if isinstance(value, dict):
                yield value

    def iter_part_records(self) -> Iterator[tuple[Any, dict[str, Any]]]:
        """Every record of every part (duplicates and losers too), with its part."""
        for part in self.part_files():
            for _, _, value in self._read_lines(part):
                record = as_record(value)
                if record is not None:
                    yield part, record

    def _winners(self, parts: list[Any] | None = None, expected_ids: int = 0) -> _Winners:
        """Each id's winning record (see :class:`_Winners`)."""
        return _Winners(self.part_files() if parts is None else parts, self._read_lines, expected_ids)

    def load(self, redo_failed: str = "retryable") -> StoreState:
        """What is done: an item is final if a final record answers its current prompt (the
        prompt_hash of its newest record); retryable if it only has retryable failures for it.

        ``redo_failed="all"``: an item whose final record is a failure is not done either
        (``redo_ids``): it is sent again, and its new record wins in ``finalize`` (a success beats a
        failure, a newer failure beats an older one)."""
        winners = self._winners()
        redo_all = redo_failed == "all"
        counts, final_bytes = winners.kinds(redo_all)
        state = StoreState(
            final_prompts=_FinalPrompts(winners, redo_all, counts[_DONE] + counts[_DONE_FAILED]),
            retryable_ids=_IdSet(winners, frozenset({_RETRY}), redo_all, counts[_RETRY]),
            redo_ids=_IdSet(winners, frozenset({_REDO}), redo_all, counts[_REDO]),
            final_failed=_IdSet(winners, frozenset({_DONE_FAILED}), redo_all, counts[_DONE_FAILED]),
            final_bytes=final_bytes,  # what finalize keeps is what counts as done
        )
        if winners.skipped:
            log.warning(
                "%s: ignored %d line(s) that are not result records (torn write?) in %s; those items "
                "have no result and are done again",
                self.root,
                sum(winners.skipped.values()),
                ", ".join(sorted(winners.skipped)),
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
        parts = self.part_files()
        winners = self._winners(parts)
        for p, part in enumerate(parts):
            for _, record in self._take_winners(p, part, winners):
                yield record

    def _take_winners(self, p: int, part: Any, winners: _Winners) -> Iterator[tuple[bytes, dict[str, Any]]]:
        """``(raw line, record)`` of the records of ``part`` (index ``p``) that are their id's winner."""
        for number, raw, value in self._read_lines(part):
            record = as_record(value)
            if record is not None and winners.wins(record["id"], p, number):
                yield raw, record

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
        *,
        expected_ids: int = 0,
    ) -> dict[str, Any]:
        """Compact the parts, drop scratch files, then write the manifest (last).

        Compaction: each id's winning record is kept once, and small parts (one per flush) are
        merged into parts of up to ``part_bytes`` (:data:`COMPACT_PART_BYTES`, 64 MiB), so a long
        run ends with few files of sensible size. A part already clean (every line its id's
        winner) and at least half that size is left as it is. Safe to stop at any point:

        1. the winners of the parts to merge are streamed into new parts under ``_tmp-`` names
           (readers ignore those);
        2. ``_compaction.json`` names the new parts and the parts they replace: from then on
           readers (:meth:`part_files`) read the new parts instead of the old ones;
        3. the new parts are renamed into place, the old ones deleted, the marker deleted.

        Before 2 readers see the old parts, after it the new ones: each id once either way. The
        next ``finalize`` first completes a marker it finds (3); one it cannot read is ignored,
        and the old and new parts are then read together, which is still exact (the copies are
        identical: each id's winner does not change).

        ``summarize`` sees every final record once, during the compaction pass (one read of the
        parts, not one per purpose); what it returns is merged into the manifest. ``expected_ids``
        (optional, a guess is fine): how many ids the folder holds, to size the id index once."""
        self._finish_compaction()
        parts = self.part_files()
        winners = self._winners(parts, expected_ids)
        merge = self._to_merge(winners)
        writer = _PartWriter(self.root, self.session, self._last_seq(), self.part_bytes) if merge else None

        def final_records() -> Iterator[dict[str, Any]]:
            for p, part in enumerate(parts):
                into = writer if p in merge else None
                for raw, record in self._take_winners(p, part, winners):
                    if into is not None:
                        into.write(raw)
                    yield record

        try:
            records = final_records()
            summary = summarize(records) if summarize is not None else {}
            for _ in records:  # finish compacting whatever summarize did not read
                pass
        finally:
            if writer is not None:
                writer.close()  # on an error its _tmp- files are left: no marker names them
        if writer is not None:
            self._seq = writer.seq
            self._write_whole(
                self.root,
                COMPACTION_NAME,
                json.dumps({"parts": writer.names, "superseded": [parts[p].name for p in sorted(merge)]}),
            )
            self._finish_compaction()
        for child in self._children(self.root / PENDING_DIR):
            child.unlink(missing_ok=True)
        for child in self._children(self.root):
            if child.name.startswith(TMP_PREFIX):
                child.unlink(missing_ok=True)
        manifest = {**manifest, **summary}
        manifest["parts"] = [p.name for p in self.part_files()]
        self._write_whole(self.root, MANIFEST_NAME, json.dumps(manifest, indent=2, default=str))
        return manifest

    def _to_merge(self, winners: _Winners) -> set[int]:
        """Indexes of the parts to merge: those holding anything but winners (duplicates, losers,
        torn lines) and those under half ``part_bytes``; none when that would only copy one clean part."""
        per_part = winners.winners_per_part()
        dirty = {p for p, count in enumerate(per_part) if count != winners.lines[p]}
        small = {p for p, size in enumerate(winners.sizes) if size < self.part_bytes / 2}
        merge = dirty | small
        return merge if dirty or len(merge) > 1 else set()

    def _last_seq(self) -> int:
        """The highest sequence number of this session's parts (written, or left as _tmp-)."""
        prefix = f"{PART_PREFIX}{self.session}-"
        seq = self._seq
        for child in self._children(self.root):
            name = child.name.removeprefix(TMP_PREFIX)
            if is_part_name(name) and name.startswith(prefix):
                seq = max(seq, int(name[len(prefix) : -len(PART_SUFFIX)]))
        return seq

    def _finish_compaction(self) -> None:
        """Complete a committed compaction (step 3 of :meth:`finalize`): rename its new parts into
        place, delete the parts they replace, then the marker. A marker that cannot be followed
        (unreadable, or a new part missing) is only deleted: readers ignore it already."""
        marker_path = self.root / COMPACTION_NAME
        if not marker_path.exists():
            return
        marker = self._compaction()
        if marker is not None:
            compacted, superseded = marker
            names = {child.name for child in self._children(self.root)}
            if all(name in names or f"{TMP_PREFIX}{name}" in names for name in compacted):
                for name in compacted:
                    if f"{TMP_PREFIX}{name}" in names:
                        tmp = self.root / f"{TMP_PREFIX}{name}"
                        if name in names:  # renamed by copying, then stopped: the copy is whole
                            tmp.unlink(missing_ok=True)
                        else:
                            tmp.rename(self.root / name)
                for name in superseded:
                    if name not in compacted:
                        (self.root / name).unlink(missing_ok=True)
        marker_path.unlink(missing_ok=True)

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
