"""IdIndex: the compact id set/map behind duplicate detection, the feeder and the store's winners."""

from __future__ import annotations

import random

import pytest

from flex_provider.engine.idindex import IdIndex, id_key


def test_id_key_is_stable_odd_and_128_bits():
    assert id_key("a") == id_key("a") != id_key("b")
    assert id_key("a") & 1 and 0 < id_key("a") < 2**128
    assert id_key("p\ud83d") != id_key("p")  # lone surrogates (ids read back from storage) hash too
    assert id_key("") != id_key(" ")


def test_set_membership_and_growth_against_a_python_set():
    rng = random.Random(1)
    index, model = IdIndex(), set()
    for _ in range(5000):  # several doublings from the 64-slot start
        item = f"id-{rng.randrange(3000)}"
        assert (id_key(item) in index) == (item in model)
        index.add(id_key(item))
        model.add(item)
        assert len(index) == len(model)
    assert all(id_key(i) in index for i in model)
    assert id_key("never added") not in index
    assert "not a key" not in index  # only int keys are members


def test_values_survive_growth_and_existing_keys_keep_theirs():
    index = IdIndex("QQI")
    for n in range(2000):
        index.add(id_key(str(n)), n, 2**64 - 1 - n, 7)
    assert index.add(id_key("5"), 1, 1, 1) == index.find(id_key("5"))  # not overwritten
    for n in range(2000):
        slot = index.find(id_key(str(n)))
        assert (index.value(slot), index.value(slot, 1), index.value(slot, 2)) == (n, 2**64 - 1 - n, 7)
    slot = index.find(id_key("5"))
    index.set_value(slot, 2, 99)
    assert index.value(index.find(id_key("5")), 2) == 99
    assert index.find(id_key("missing")) == -1


def test_value_columns_have_their_own_width():
    index = IdIndex("IQ")
    slot = index.add(id_key("a"), 2**32 - 1, 2**64 - 1)
    assert (index.value(slot), index.value(slot, 1)) == (2**32 - 1, 2**64 - 1)
    with pytest.raises((OverflowError, ValueError)):  # too big for its 32-bit column
        index.add(id_key("b"), 2**32)
    assert id_key("b") not in index and len(index) == 1  # not half added
    with pytest.raises(ValueError, match="typecodes"):
        IdIndex("q")


def test_slots_and_keys_list_every_entry_once():
    index = IdIndex("Q")
    keys = {id_key(f"x{n}") for n in range(300)}
    for key in keys:
        index.add(key, 1)
    assert {index.key(slot) for slot in index.slots()} == keys
    assert sum(1 for _ in index.slots()) == 300


@pytest.mark.parametrize("capacity", [0, 1, 64, 100, 1000])
def test_presized_index_holds_its_capacity_without_growing(capacity):
    index = IdIndex(capacity=capacity)
    size = len(index._lo)
    for n in range(capacity):
        index.add(id_key(str(n)))
    assert len(index._lo) == size and len(index) == capacity


def test_memory_per_id_is_tens_of_bytes():
    # The point of the class: a set of 20k ids in well under 100 bytes per id (a set of strings: ~150)
    index = IdIndex("Q")
    for n in range(20_000):
        index.add(id_key(f"ticket-{n:07d}"), n)
    total = sum(a.itemsize * len(a) for a in (index._lo, index._hi, *index._columns))
    assert total / 20_000 < 100
