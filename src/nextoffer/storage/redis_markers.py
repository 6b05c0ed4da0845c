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

A deployment that counted its caps in the database (no Redis) and then added Redis still
holds them in ``cap_counters``. A container's first count in Redis would take Redis's
zeros for the truth and serve its capped offers past their caps; so a first count asks
the database first (one read, a first count's only: the steady path never reaches it) and,
when it holds the container's counters, raises :class:`~nextoffer.errors.CountersNotMoved`
(caps fail closed, as for a loss) until ``nextoffer admin counters --into-redis`` has
moved them into Redis (``counter_moves.py``, which also moves them back for a deployment
that stops using Redis).

Placing the marker before the row keeps a concurrent operation of another process from
reading the row and not yet the marker. A loss of part of Redis's data (the last second of
an ``appendfsync everysec`` file) keeps the marker and is not seen: ``serve`` warns of that
configuration at start.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime

import redis
from redis.exceptions import RedisError
from sqlalchemy import bindparam, select

from nextoffer.errors import CountersLost, CountersNotMoved
from nextoffer.ids import format_datetime, utcnow
from nextoffer.storage import tables as t
from nextoffer.storage.errors import redis_unavailable
from nextoffer.storage.session import Session, upsert
from nextoffer.storage.store import Store

PREFIX = "nextoffer:cap:"

_LISTED = select(t.redis_counter_markers.c.container_id).where(
    t.redis_counter_markers.c.container_id.in_(bindparam("ids", expanding=True))
)
_ALL = select(t.redis_counter_markers.c.container_id).order_by(
    t.redis_counter_markers.c.container_id
)
_K = t.cap_counters.c
#: Whether the database holds a counter of a container (the first it meets: a first
#: count's one extra read).
_HELD = select(_K.counter_key).where(_K.container_id == bindparam("c")).limit(1)
#: How long a process takes a container whose counters the database held for one that
#: still does, without asking again: while they are not moved, every decision of the
#: container is a first count, and would read the database.
UNMOVED_RECHECK = 5.0


def marker_key(container_id: str) -> str:
    """A container's marker: in its counters' hash slot; without a ``|``, which every
    counter's name has (``CounterKey.encode``), so it is no counter's."""
    return f"{PREFIX}{{{container_id}}}:marker"


class CounterMarkers:
    """The database's side of the markers; thread-safe."""

    def __init__(
        self, store: Store, client: redis.Redis, *, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self._store = self.store = store
        self._client = self.client = client
        self._clock = clock
        self._lock = threading.Lock()
        #: Containers the database lists: listed once, listed for ever.
        self._listed: set[str] = set()
        #: Containers whose counters the database held, until when not to ask again.
        self._unmoved: dict[str, float] = {}

    def missing(self, containers: Iterable[str]) -> None:
        """Called when Redis lacks a marker of ``containers``: raises :class:`CountersLost`
        for those the database lists whose marker is gone, and :class:`CountersNotMoved`
        for those whose counters the database still holds; marks the others (their first
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
        first = [c for c in absent if c not in listed]
        unmoved = self._unmoved_among(first)
        self.place([c for c in first if c not in unmoved])
        if unmoved:
            raise CountersNotMoved(unmoved)

    def _unmoved_among(self, containers: Sequence[str]) -> list[str]:
        """Those of ``containers`` whose counters the database holds (counted before the
        deployment added Redis); one read of the database per container, remembered for
        :data:`UNMOVED_RECHECK` seconds."""
        now = time.monotonic()
        with self._lock:
            recent = [c for c in containers if self._unmoved.get(c, 0.0) > now]
        ask = [c for c in containers if c not in recent]
        if not ask:
            return recent
        with self._store.session() as session:
            held = [c for c in ask if session.conn.execute(_HELD, {"c": c}).first() is not None]
        with self._lock:
            for container in held:
                self._unmoved[container] = now + UNMOVED_RECHECK
        return sorted(recent + held)

    def _absent(self, containers: Sequence[str]) -> list[str]:
        """Those of ``containers`` whose marker Redis does not hold."""
        try:
            return [
                c for c, there in zip(containers, self._exist(containers), strict=True) if not there
            ]
        except RedisError as exc:
            raise redis_unavailable(exc) from exc

    def lost(self) -> list[str]:
        """Every listed container whose marker Redis no longer holds. Redis is asked even
        when none is listed: an unreachable one (a mistyped URL) raises, instead of being
        taken for one that holds every container's counters."""
        with self._store.session() as session:
            listed = [row[0] for row in session.conn.execute(_ALL)]
        if not listed:
            try:
                self._client.ping()
            except RedisError as exc:
                raise redis_unavailable(exc) from exc
        return self._absent(listed)

    def accept_loss(self, containers: Sequence[str] | None = None) -> list[str]:
        """Place again the markers of lost containers (all, or those of ``containers``
        among them): their caps count from what Redis holds now. The containers marked."""
        lost = self.lost()
        chosen = lost if containers is None else [c for c in lost if c in set(containers)]
        self.place(chosen)
        return chosen

    def marked(self, containers: Sequence[str]) -> list[str]:
        """Those of ``containers`` whose marker Redis holds."""
        absent = set(self._absent(containers))
        return [c for c in containers if c not in absent]

    def _exist(self, containers: Sequence[str]) -> list[bool]:
        pipe = self._client.pipeline(transaction=False)
        for container in containers:
            pipe.exists(marker_key(container))
        return [bool(n) for n in pipe.execute()] if containers else []

    def forget(self, container: str) -> None:
        """Read ``container``'s listing and counters again at its next first count (a move
        changed them)."""
        with self._lock:
            self._listed.discard(container)
            self._unmoved.pop(container, None)

    def place(self, containers: Sequence[str]) -> None:
        """Mark and list ``containers``: their counters are Redis's from now on."""
        if not containers:
            return
        try:
            pipe = self._client.pipeline(transaction=False)
            for container in containers:
                pipe.set(marker_key(container), "1")
            pipe.execute()
        except RedisError as exc:
            raise redis_unavailable(exc) from exc
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
