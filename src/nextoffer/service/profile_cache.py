"""Profiles served from the process's memory, following the profiles' change sequence.

A decision reads the profile its identity names: on PostgreSQL a round trip per decision
(an awaited read on the event loop, with its future, task wake-up and reader), on SQLite
an index read whose pages the other workers' commits keep evicting. This cache
keeps the answers of those reads — identity to (profile id, attributes) — in a bounded LRU
map, and the database stays the durable record:

* A profile written or deleted through this process is dropped at once after its commit
  (``Profiles`` calls :meth:`ProfileCache.invalidate`): read-your-writes in one process.
* Every transaction that changes or deletes profiles, in any process or node, numbers
  itself in the profiles' change sequence and logs the profiles it changed
  (``Runtime.flush``, migration ``0011_profile_seq``). One thread per process (the
  default on PostgreSQL) reads the log past the number it knows every ``bound / 2``
  seconds and drops those profiles. A write committed elsewhere is therefore served
  stale for at most ``bound`` seconds.
  Or, without a thread (``inline``: the default on SQLite, whose decisions run on the
  worker's event loop and read the log in place), the first :meth:`get` after
  ``bound / 2`` reads it before answering — one caller at a time, the others answering
  from what is kept meanwhile — and the log's trim goes to the root's pool: the same
  bound, no thread kept per worker.
* Nothing is served from memory unless a read of the log succeeded within the last
  ``bound`` seconds (a database that cannot be read makes every decision read it too).
* A read that was in flight while profiles were dropped is not kept (the drop counter:
  ``ticket``/``put``): it may have read the profile before the write that dropped it.
* An identity that names no profile is not kept: a profile created for it later would
  need the log to name identities too. Inserts are not logged for the same reason.

Kept out of the cyclic garbage collector's sight: an entry is the profile id and the
attributes' JSON (``bytes``) in a tuple, decoded by ``orjson`` on every hit, and the index
by profile holds tuples of keys — objects the collector untracks at its first pass, since
they hold nothing it could find in a cycle. Parsed attributes (dicts, lists) and a set
per profile stayed tracked, so every full collection of a worker walked the whole cache
(docs/benchmarks.md, "The collector and the profile cache"); each hit now gets its own
dict, which nothing shares.

Bounded in bytes (``max_bytes``): each entry is counted as its attributes' JSON size plus
a fixed cost (:data:`ENTRY_OVERHEAD`), in cachetools' ``LRUCache`` with a ``getsizeof``:
least recently used first out. One entry may take at most a hundredth of the bound.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, Future
from typing import Any

import orjson
from cachetools import LRUCache

from nextoffer.errors import NextOfferError
from nextoffer.storage.store import Store

log = logging.getLogger("nextoffer.profiles")

#: (org, sandbox, namespace, identity)
ProfileKey = tuple[str, str, str, str]
#: What the decision path's profile read answers: (profile id, attributes).
Found = tuple[str, dict[str, Any]]

#: What an entry is counted as beyond its attributes' JSON, to approximate the memory it
#: holds (measured with tracemalloc; ``tests/service/test_profile_cache.py`` holds it to
#: its bound): the key and its identity, the profile id, the entry's tuple and ``bytes``
#: header, the map's, LRU order's and index's slots with their spare room.
ENTRY_OVERHEAD = 600
#: The cache's size unless set (``Settings.profile_cache_mb``), in MB.
DEFAULT_PROFILE_CACHE_MB = 64.0
#: How long the change log keeps its rows; a process that fell further behind (stopped,
#: cut off) finds a gap in the numbers and empties its cache instead.
KEEP_CHANGES_SECONDS = 600.0
#: How often a process trims the log (any process may: deleting is idempotent).
TRIM_SECONDS = 60.0


def _trim_failed(done: Future[None]) -> None:
    """Log a trim that failed in the pool (the next one deletes the rows)."""
    error = done.exception()
    if error is not None:
        log.warning("profile change log not trimmed: %s", error)


#: What the map keeps: (profile id, the attributes' JSON). Holding no container, such a
#: tuple is untracked by the collector's first pass over it.
_Entry = tuple[str, bytes]


class _Lru(LRUCache[ProfileKey, _Entry]):
    """An LRU map that tells its owner which key each eviction took (cachetools calls
    ``popitem`` to make room)."""

    def __init__(self, maxsize: int, on_evict: Callable[[ProfileKey, _Entry], None]) -> None:
        super().__init__(maxsize, getsizeof=_size)
        self._on_evict = on_evict

    def popitem(self) -> tuple[ProfileKey, _Entry]:
        key, entry = super().popitem()
        self._on_evict(key, entry)
        return key, entry


def _size(entry: _Entry) -> int:
    return len(entry[1]) + ENTRY_OVERHEAD


class ProfileCache:
    """Identity → (profile id, attributes), bounded, dropped by the change sequence."""

    def __init__(
        self,
        store: Store,
        *,
        max_bytes: int,
        bound: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        start: bool = True,
        inline: bool = False,
        executor: Executor | None = None,
    ) -> None:
        if max_bytes <= 0 or bound <= 0:
            raise ValueError("a profile cache needs max_bytes > 0 and bound > 0")
        self._store = store
        self.max_bytes = max_bytes
        #: Larger profiles are read from the database every time (one entry may not take
        #: more than a hundredth of the cache).
        self._max_entry = max(1, max_bytes // 100)
        self.bound = bound
        self._clock = clock
        self._lock = threading.Lock()
        self._map = _Lru(max_bytes, self._evicted)
        #: profile id → the keys that name it in the map (to drop them by profile): a
        #: tuple, not a set (a set stays tracked by the collector; most profiles have one).
        self._keys: dict[str, tuple[ProfileKey, ...]] = {}
        #: Bumped by every drop: a read begun before a drop is not kept.
        self._drops = 0
        #: The change number this process has applied (``None`` before the first read).
        self._known: int | None = None
        #: Serve from memory until then (a successful read of the log + ``bound``).
        self._fresh_until = float("-inf")
        self._trimmed_at = float("-inf")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: Following inline: :meth:`get` reads the log from this moment on.
        self._inline = inline
        self._due = float("-inf") if inline else float("inf")
        #: Held by the one caller reading the log inline.
        self._following = threading.Lock()
        #: Where an inline follower trims the log (``None``: in the caller).
        self._executor = executor
        if start and not inline:
            self._thread = threading.Thread(
                target=self._follow, name="nextoffer-profiles", daemon=True
            )
            self._thread.start()

    # -- the decision path -------------------------------------------------------------

    def get(self, key: ProfileKey) -> Found | None:
        """The kept answer for ``key``; ``None`` when not kept or not fresh. Following
        inline, reads the change log first when it is due."""
        now = self._clock()
        if now > self._due:
            self._follow_inline()
            now = self._clock()
        if now > self._fresh_until:
            return None
        with self._lock:
            entry = self._map.get(key)
        return (entry[0], orjson.loads(entry[1])) if entry is not None else None

    def ticket(self) -> int:
        """Take before reading the database: :meth:`put` keeps the read only if nothing
        was dropped in between."""
        return self._drops

    def put(self, key: ProfileKey, ticket: int, found: Found) -> None:
        """Keep what a read begun at ``ticket`` found (not if a drop came in between)."""
        if self._clock() > self._fresh_until:
            return
        # A copy: ``orjson.dumps`` answers in a buffer of at least 4 KB, which a kept
        # short profile would hold on to (tracemalloc).
        profile_id, text = found[0], bytes(memoryview(orjson.dumps(found[1])))
        if len(text) + ENTRY_OVERHEAD > self._max_entry:
            return
        with self._lock:
            if ticket != self._drops:
                return
            self._map[key] = (profile_id, text)
            keys = self._keys.get(profile_id, ())
            if key not in keys:
                self._keys[profile_id] = (*keys, key)

    def invalidate(self, profile_ids: Iterable[str]) -> None:
        """Drop what is kept of these profiles (a write through this process committed)."""
        with self._lock:
            self._drops += 1
            for profile_id in profile_ids:
                for key in self._keys.pop(profile_id, ()):
                    self._map.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._drops += 1
            self._map.clear()
            self._keys.clear()

    @property
    def size(self) -> tuple[int, int]:
        """(entries, bytes counted) kept now."""
        with self._lock:
            return len(self._map), int(self._map.currsize)

    def _evicted(self, key: ProfileKey, entry: _Entry) -> None:  # under self._lock
        keys = tuple(k for k in self._keys.get(entry[0], ()) if k != key)
        if keys:
            self._keys[entry[0]] = keys
        else:
            self._keys.pop(entry[0], None)

    # -- following the change sequence ------------------------------------------------

    def follow_once(self) -> None:
        """Read the change log past the known number and drop what it names; then the
        kept answers may be served for ``bound`` seconds from this read's start."""
        started = self._clock()
        known = self._known
        # The first read takes only the current number (nothing is kept yet to drop).
        since = known if known is not None else 2**62
        with self._store.session() as session:
            current, changes = session.runtime.profile_changes(since)
        if known is None:
            # A read begun before this one may have seen a profile a write has changed
            # since, under a number this process will never read: keep none of those.
            self.clear()
        elif current > known:
            if not changes or changes[0][0] != known + 1:
                # Trimmed past what this process knew: it cannot tell what changed.
                log.warning("profile change log trimmed past %d; profile cache emptied", known)
                self.clear()
            else:
                self.invalidate({profile_id for _, profile_id in changes})
        elif current < known:  # the database was replaced
            self.clear()
        self._known = current
        self._fresh_until = started + self.bound
        if self._inline:
            self._due = started + self.bound / 2
        if started - self._trimmed_at >= TRIM_SECONDS:
            self._trimmed_at = started
            if self._inline and self._executor is not None:
                self._executor.submit(self._trim).add_done_callback(_trim_failed)
            else:
                self._trim()

    def _trim(self) -> None:
        """Delete the log's rows older than ``KEEP_CHANGES_SECONDS`` (a write)."""
        before_us = (time.time() - KEEP_CHANGES_SECONDS) * 1e6
        with self._store.session(write=True) as session:
            session.runtime.trim_profile_changes(int(before_us))

    def _follow_inline(self) -> None:
        """Read the log in this caller, unless another one is reading it (then answer
        from what is kept, while it is fresh)."""
        if not self._following.acquire(blocking=False):
            return
        try:
            if self._clock() > self._due:  # not read meanwhile by the last holder
                self.follow_once()
        except Exception as exc:  # a decision never fails for it: it reads its profile
            log.error("profile change log not read (decisions read profiles): %s", exc)
            # Not again before bound / 2: decisions read their profiles meanwhile.
            self._due = self._clock() + self.bound / 2
        finally:
            self._following.release()

    def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                self.follow_once()
            except NextOfferError as exc:
                log.error("profile change log not read (decisions read profiles): %s", exc)
            except Exception:
                log.exception("profile change log not read (decisions read profiles)")
            self._stop.wait(self.bound / 2)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
