"""Whether Redis still holds the cap counters it was given (``serve --redis``).

Redis restarted without its data (no append-only file, a new instance, ``FLUSHALL``)
answers every counter as absent: zero. Caps would start again from zero and offers be
served past them, with nothing said. So Redis keeps a *marker* beside each container's
counters, ``nextoffer:cap:{<container>}:marker`` (the counters' hash tag: a script reads
it with them), and the database lists every container marked (``redis_counter_markers``).
Every read, reservation, release and add of ``redis_counters.py`` checks the markers of
its containers in the same round trip:

* a marker there: the counters are Redis's as they were;
* a marker missing for a container the database does not list: its first count (or the
  first since this check was deployed: the counters Redis holds then are adopted). The
  marker is placed, then the row written, and the operation made again;
* a marker missing for a listed container: Redis lost its counters.
  :class:`~nextoffer.errors.CountersLost` says so (a 503), and capped offers count as capped (caps
  fail closed) until an operator restores Redis from its backup, or accepts the loss
  (``nextoffer admin counters --accept-loss``: the markers placed again, caps counting from
  what Redis holds now).

Placing the marker before the row keeps a concurrent operation of another process from
reading the row and not yet the marker. A loss of part of Redis's data (the last second of
an ``appendfsync everysec`` file) keeps the marker and is not seen: ``serve`` warns of that
configuration at start.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime

import redis
from redis.exceptions import RedisError
from sqlalchemy import bindparam, select

from nextoffer.errors import CountersLost, Unavailable
from nextoffer.ids import format_datetime, utcnow
from nextoffer.storage import tables as t
from nextoffer.storage.session import Session, upsert
from nextoffer.storage.store import Store

PREFIX = "nextoffer:cap:"

_LISTED = select(t.redis_counter_markers.c.container_id).where(
    t.redis_counter_markers.c.container_id.in_(bindparam("ids", expanding=True))
)
_ALL = select(t.redis_counter_markers.c.container_id).order_by(
    t.redis_counter_markers.c.container_id
)


def marker_key(container_id: str) -> str:
    """A container's marker: in its counters' hash slot; without a ``|``, which every
    counter's name has (``CounterKey.encode``), so it is no counter's."""
    return f"{PREFIX}{{{container_id}}}:marker"


class CounterMarkers:
    """The database's side of the markers; thread-safe."""

    def __init__(
        self, store: Store, client: redis.Redis, *, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self._store = store
        self._client = client
        self._clock = clock
        self._lock = threading.Lock()
        #: Containers the database lists: listed once, listed for ever.
        self._listed: set[str] = set()

    def missing(self, containers: Iterable[str]) -> None:
        """Called when Redis lacks a marker of ``containers``: raises :class:`CountersLost`
        for those the database lists whose marker is gone; marks the others (their first
        count), so the operation can be made again."""
        absent = self._absent(sorted(set(containers)))
        if not absent:
            return  # placed meanwhile by another process
        with self._lock:
            unknown = [c for c in absent if c not in self._listed]
        if unknown:
            with self._store.session() as session:
                found = {row[0] for row in session.conn.execute(_LISTED, {"ids": unknown})}
            with self._lock:
                self._listed |= found
        with self._lock:
            listed = [c for c in absent if c in self._listed]
        # A first count places the marker before it lists the container: a listed one
        # whose marker is still gone when asked again, after reading the list, is lost.
        # (One placed between the two reads, by another thread or process, is not.)
        lost = self._absent(listed)
        if lost:
            raise CountersLost(lost)
        self._place([c for c in absent if c not in listed])

    def _absent(self, containers: Sequence[str]) -> list[str]:
        """Those of ``containers`` whose marker Redis does not hold."""
        try:
            return [
                c for c, there in zip(containers, self._exist(containers), strict=True) if not there
            ]
        except RedisError as exc:
            raise Unavailable(f"the cap counter store (Redis) is unavailable: {exc}") from exc

    def lost(self) -> list[str]:
        """Every listed container whose marker Redis no longer holds."""
        with self._store.session() as session:
            listed = [row[0] for row in session.conn.execute(_ALL)]
        return self._absent(listed)

    def accept_loss(self, containers: Sequence[str] | None = None) -> list[str]:
        """Place again the markers of lost containers (all, or those of ``containers``
        among them): their caps count from what Redis holds now. The containers marked."""
        lost = self.lost()
        chosen = lost if containers is None else [c for c in lost if c in set(containers)]
        self._place(chosen)
        return chosen

    def _exist(self, containers: Sequence[str]) -> list[bool]:
        pipe = self._client.pipeline(transaction=False)
        for container in containers:
            pipe.exists(marker_key(container))
        return [bool(n) for n in pipe.execute()] if containers else []

    def _place(self, containers: Sequence[str]) -> None:
        if not containers:
            return
        try:
            pipe = self._client.pipeline(transaction=False)
            for container in containers:
                pipe.set(marker_key(container), "1")
            pipe.execute()
        except RedisError as exc:
            raise Unavailable(f"the cap counter store (Redis) is unavailable: {exc}") from exc
        placed = format_datetime(self._clock())

        def write(session: Session) -> None:
            session.conn.execute(
                upsert(session.conn, t.redis_counter_markers).on_conflict_do_nothing(),
                [{"container_id": c, "placed": placed} for c in containers],
            )

        try:
            self._store.write(write)
        except BaseException:
            self._unplace(containers)
            raise
        with self._lock:
            self._listed.update(containers)

    def _unplace(self, containers: Sequence[str]) -> None:
        """Take back markers the database could not list (it is away): left in Redis, a
        marker would pass the operations with no row behind it, and a later loss of Redis
        be taken for a first count (the caps starting again from zero, silently). Taken
        back, the next operation is a first count again (the counters kept). Should another
        process have listed one of them meanwhile, it is seen lost: caps fail closed, and
        ``admin counters`` says so."""
        with contextlib.suppress(RedisError):  # Redis away too: the marker stays
            self._client.delete(*(marker_key(c) for c in containers))
