"""A compact set/map of item ids: 128-bit digests in flat arrays, a few bytes per id.

A million-item run keeps several id indexes (duplicate detection while reading the input, the ids
already fed, each id's winning record at the end). As Python dicts of strings they cost ~200 bytes
per id each, which is what broke the memory target near a million items. Here an id is reduced to
a 128-bit BLAKE2b digest (two 64-bit words) in an open-addressing table made of ``array``
columns, with optional unsigned values per id (each column 4 or 8 bytes: ``"I"`` or ``"Q"``):
~16 bytes per slot plus the values, at a load between 3/8 and 3/4, so ~20-45 bytes per id for a
set and ~50-100 for three values.

Collisions: two different ids share a digest with probability ~n²/2¹²⁹ (~10⁻²⁷ at a million ids):
negligible next to a disk error. The ids themselves are not kept: whoever needs them back (an error
message, a listing) reads them from where they came from.
"""

from __future__ import annotations

import hashlib
import mmap
from array import array
from collections.abc import Iterator

_M64 = (1 << 64) - 1
_MIN_CAPACITY = 64


def id_key(item_id: str) -> int:
    """The 128-bit digest of ``item_id`` (never 0: 0 marks an empty slot). Any ``str`` works,
    lone surrogates included (ids read back from storage are not trusted to be UTF-8)."""
    digest = hashlib.blake2b(item_id.encode("utf-8", "surrogatepass"), digest_size=16).digest()
    return int.from_bytes(digest, "little") | 1


def _zeros(count: int, typecode: str = "Q") -> memoryview:
    """``count`` zeroed unsigned integers in anonymous memory of their own (``mmap``), not on the
    heap: pages cost RSS only once written, and all of it goes back to the system when the index
    is dropped or grows. On the heap, the freed arrays of each doubling (tens of MB at a million
    ids) stay in the process: glibc does not give back what it did not map on its own."""
    itemsize = array(typecode).itemsize
    view = memoryview(mmap.mmap(-1, max(count * itemsize, 1)))
    return view.cast(typecode)  # type: ignore[call-overload,no-any-return]  # typecode: "I" or "Q"


class IdIndex:
    """Open-addressing hash table (linear probing) from id keys (:func:`id_key`) to one unsigned
    value per letter of ``values`` (its array typecode: ``"I"`` 32 bits, ``"Q"`` 64 bits); no
    values makes it a set. ``capacity``: how many ids to make room for at once (any number: the
    table is not a power of two, so a known count costs 4/3 slots per id, not up to 8/3). Grows by
    doubling past 3/4 full; never shrinks (an index only grows during a run). Not thread-safe:
    one owner at a time."""

    __slots__ = ("_columns", "_hi", "_len", "_lo", "_size", "typecodes")

    def __init__(self, values: str = "", capacity: int = _MIN_CAPACITY) -> None:
        if any(code not in "IQ" for code in values):
            raise ValueError(f"values: typecodes 'I' or 'Q' only, got {values!r}")
        self.typecodes = values
        self._alloc(max(_MIN_CAPACITY, -(-capacity * 4 // 3)))
        self._len = 0

    def _alloc(self, size: int) -> None:
        self._size = size
        self._lo = _zeros(size)  # low 64 bits of the key; 0: empty (keys are odd)
        self._hi = _zeros(size)
        self._columns = [_zeros(size, code) for code in self.typecodes]

    def __len__(self) -> int:
        return self._len

    def __contains__(self, key: object) -> bool:
        return isinstance(key, int) and self.find(key) >= 0

    def _slot(self, key: int) -> int:
        """The slot holding ``key``, or the empty slot where it would go."""
        lo, hi = key & _M64, key >> 64
        los, his, size = self._lo, self._hi, self._size
        i = hi % size
        while True:
            found = los[i]
            if found == 0 or (found == lo and his[i] == hi):
                return i
            i += 1
            if i == size:
                i = 0

    def find(self, key: int) -> int:
        """The slot of ``key`` (for :meth:`value`/:meth:`set_value`), or -1 if absent."""
        i = self._slot(key)
        return i if self._lo[i] else -1

    def add(self, key: int, *values: int) -> int:
        """Insert ``key`` with ``values`` (all 0 if none given); returns its slot. An existing key
        keeps its values: check :meth:`find` first where that matters."""
        i = self._slot(key)
        if self._lo[i]:
            return i
        if (self._len + 1) * 4 > self._size * 3:
            self._grow()
            i = self._slot(key)
        for column, value in zip(self._columns, values, strict=False):  # first: a value too big raises here
            column[i] = value
        self._lo[i], self._hi[i] = key & _M64, key >> 64
        self._len += 1
        return i

    def value(self, slot: int, column: int = 0) -> int:
        return self._columns[column][slot]

    def set_value(self, slot: int, column: int, value: int) -> None:
        self._columns[column][slot] = value

    def key(self, slot: int) -> int:
        """The key held in an occupied ``slot``."""
        return self._hi[slot] << 64 | self._lo[slot]

    def slots(self) -> Iterator[int]:
        """Every occupied slot (values are read with :meth:`value`)."""
        los = self._lo
        return (i for i in range(self._size) if los[i])

    def _grow(self) -> None:
        old_lo, old_hi, old_columns = self._lo, self._hi, self._columns
        self._alloc(self._size * 2)
        los, his, columns, size = self._lo, self._hi, self._columns, self._size
        pairs = list(zip(columns, old_columns, strict=True))
        for j, lo in enumerate(old_lo):
            if not lo:
                continue
            hi = old_hi[j]
            i = hi % size
            while los[i]:
                i = i + 1 if i + 1 < size else 0
            los[i], his[i] = lo, hi
            for new, old in pairs:
                new[i] = old[j]
