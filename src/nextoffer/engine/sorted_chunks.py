"""A sorted, immutable sequence kept in chunks, changed by making a new one that shares
every chunk it does not touch.

A pool's members and the tag index list every offer of a collection or tag in
(-priority, ``@id``) order: 10,000 entries at Adobe's guardrail. When one offer changes, a
plain tuple or list is copied whole (and the new copy is traversed by the young
collection that follows a refresh); here :meth:`SortedChunks.insert` and
:meth:`SortedChunks.remove` copy one chunk of at most ``2 * CHUNK`` entries and the short
tuples of chunks and of their last keys, and share the rest. Reading is iteration (the
chunks chained in C) and ``len``: what builds and traces do with these lists; the
decision path's per-placement candidate lists stay flat tuples (indexed by position).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from itertools import chain
from typing import Any, Generic, TypeVar

T = TypeVar("T")

#: Entries per chunk when built; a chunk splits in two once it holds twice as many.
CHUNK = 128


class SortedChunks(Generic[T]):
    """Entries ordered by ``key`` (keys unique), in chunks shared between versions."""

    __slots__ = ("_chunks", "_key", "_lasts", "_len")

    def __init__(
        self,
        key: Callable[[T], Any],
        chunks: tuple[tuple[T, ...], ...] = (),
        lasts: tuple[Any, ...] | None = None,
        length: int | None = None,
    ) -> None:
        self._key = key
        self._chunks = chunks
        #: The key of each chunk's last entry (the chunk an entry belongs to: bisection).
        self._lasts = lasts if lasts is not None else tuple(key(c[-1]) for c in chunks)
        self._len = length if length is not None else sum(len(c) for c in chunks)

    @classmethod
    def of(cls, key: Callable[[T], Any], ordered: Iterable[T]) -> SortedChunks[T]:
        """``ordered`` (already in ``key`` order) as a new sequence."""
        flat = tuple(ordered)
        chunks = tuple(flat[at : at + CHUNK] for at in range(0, len(flat), CHUNK))
        return cls(key, chunks, None, len(flat))

    def __iter__(self) -> Iterator[T]:
        return chain.from_iterable(self._chunks)

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len > 0

    def __contains__(self, item: object) -> bool:
        try:
            self._find(item)  # type: ignore[arg-type]
        except ValueError:
            return False
        return True

    def __repr__(self) -> str:
        return f"SortedChunks({list(self)!r})"

    def _find(self, item: T) -> tuple[int, int]:
        """(chunk, position) of ``item`` itself; ``ValueError`` when it is not there."""
        key = self._key(item)
        at = bisect_left(self._lasts, key)
        if at < len(self._chunks):
            chunk = self._chunks[at]
            where = bisect_left(chunk, key, key=self._key)
            if where < len(chunk) and chunk[where] is item:
                return at, where
        raise ValueError("not in the sequence (or not where its key puts it)")

    def insert(self, item: T) -> SortedChunks[T]:
        """A new sequence with ``item`` in its place (its key must not be there yet)."""
        key = self._key(item)
        chunks, lasts = self._chunks, self._lasts
        if not chunks:
            return SortedChunks(self._key, ((item,),), (key,), 1)
        at = min(bisect_left(lasts, key), len(chunks) - 1)
        chunk = chunks[at]
        where = bisect_left(chunk, key, key=self._key)
        grown = (*chunk[:where], item, *chunk[where:])
        if len(grown) >= 2 * CHUNK:
            half = len(grown) // 2
            pieces: tuple[tuple[T, ...], ...] = (grown[:half], grown[half:])
        else:
            pieces = (grown,)
        return SortedChunks(
            self._key,
            (*chunks[:at], *pieces, *chunks[at + 1 :]),
            (*lasts[:at], *(self._key(p[-1]) for p in pieces), *lasts[at + 1 :]),
            self._len + 1,
        )

    def remove(self, item: T) -> SortedChunks[T]:
        """A new sequence without ``item`` (``ValueError`` when it is not there)."""
        at, where = self._find(item)
        chunks, lasts = self._chunks, self._lasts
        shrunk = (*chunks[at][:where], *chunks[at][where + 1 :])
        if shrunk:
            new_chunks = (*chunks[:at], shrunk, *chunks[at + 1 :])
            new_lasts = (*lasts[:at], self._key(shrunk[-1]), *lasts[at + 1 :])
        else:
            new_chunks = (*chunks[:at], *chunks[at + 1 :])
            new_lasts = (*lasts[:at], *lasts[at + 1 :])
        return SortedChunks(self._key, new_chunks, new_lasts, self._len - 1)
