"""SortedChunks: a persistent sorted sequence; every version reads as the sorted list of
what was put in and not taken out, and older versions stay as they were."""

from __future__ import annotations

import random

import pytest

from nextoffer.engine import sorted_chunks
from nextoffer.engine.sorted_chunks import SortedChunks


class Item:
    """An entry compared by identity, ordered by its key (as offers are)."""

    def __init__(self, key: int) -> None:
        self.key = key


def key(item: Item) -> int:
    return item.key


@pytest.mark.parametrize("chunk", [1, 2, 3, 128])
@pytest.mark.parametrize("seed", range(6))
def test_every_version_reads_as_the_sorted_list(
    seed: int, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sorted_chunks, "CHUNK", chunk)
    rng = random.Random(seed)
    start = [Item(k) for k in sorted(rng.sample(range(1000), 40))]
    versions = [(SortedChunks.of(key, start), list(start))]
    for _ in range(300):
        current, expected = versions[-1]
        if expected and rng.random() < 0.5:
            gone = rng.choice(expected)
            current = current.remove(gone)
            expected = [i for i in expected if i is not gone]
            assert gone not in current
        else:
            free = sorted(set(range(1000)) - {i.key for i in expected})
            came = Item(rng.choice(free))
            current = current.insert(came)
            expected = sorted([*expected, came], key=key)
            assert came in current
        assert list(current) == expected
        assert len(current) == len(expected)
        assert bool(current) == bool(expected)
        versions.append((current, expected))
    for version, expected in versions:  # none changed by the later ones
        assert list(version) == expected


def test_removing_what_is_not_there_is_refused() -> None:
    one, other = Item(1), Item(1)  # same key, another object
    found = SortedChunks.of(key, [one])
    with pytest.raises(ValueError):
        found.remove(other)
    with pytest.raises(ValueError):
        SortedChunks(key).remove(one)
    assert other not in found
    assert one in found


def test_an_unchanged_chunk_is_shared() -> None:
    items = [Item(k) for k in range(0, 1000, 2)]
    first = SortedChunks.of(key, items)
    second = first.insert(Item(501))
    shared = [a for a in first._chunks if any(a is b for b in second._chunks)]
    assert len(shared) == len(first._chunks) - 1
