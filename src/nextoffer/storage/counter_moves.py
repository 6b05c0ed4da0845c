"""Cap counters moved between the database and Redis (``nextoffer admin counters
--into-redis`` / ``--out-of-redis``).

A deployment that counted its caps in the database (no Redis) and then added Redis still
holds them in ``cap_counters``; until they are moved, a container's first count in Redis
fails closed (``redis_markers.py``, :class:`~nextoffer.errors.CountersNotMoved`).
:meth:`CounterMoves.move_in` adds each count to what Redis holds (counts made there
meanwhile stay), then marks and lists the container and deletes its rows;
:meth:`CounterMoves.move_out` takes them back into the database for a deployment that
stops using Redis. Both can be stopped at any point and run again without a count added
twice: the move in records in a hash beside the counters what each received
(:data:`_MOVE`), and the move out records each count it took beside the database's count
(:data:`_TAKE`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy import Delete, bindparam, delete, func, select, tuple_

from nextoffer.errors import Unavailable
from nextoffer.storage import tables as t
from nextoffer.storage.errors import redis_unavailable
from nextoffer.storage.redis_markers import PREFIX, CounterMarkers, marker_key
from nextoffer.storage.session import Session, upsert

_K = t.cap_counters.c
_LISTED = select(t.redis_counter_markers.c.container_id).order_by(
    t.redis_counter_markers.c.container_id
)
_HELD = select(_K.counter_key).where(_K.container_id == bindparam("c")).limit(1)
#: A batch of a container's counters to move, in key order after the last one moved.
_BATCH = (
    select(_K.counter_key, _K.count)
    .where(_K.container_id == bindparam("c"), _K.counter_key > bindparam("after"))
    .order_by(_K.counter_key)
    .limit(bindparam("n"))
)

#: Counters one move script takes: Redis serves nothing else while it runs, so a script
#: holds it about as long as a step of the erasures' walk does (docs/benchmarks.md,
#: "Moving cap counters between the database and Redis").
MOVE_BATCH = 200
#: Walks of a container's counters a move makes while servers without Redis still change
#: them, before it gives up.
MOVE_PASSES = 3

#: KEYS[1]: the container's moving hash (:func:`moving_key`), then the counters; ARGV:
#: each counter's count in the database. Adds to each counter what its count grew by
#: since the hash last took it (the whole count the first time), and records the count:
#: run twice with the same counts, the second adds nothing. Returns how many it changed.
_MOVE = """
local changed = 0
for i = 2, #KEYS do
  local count = tonumber(ARGV[i - 1])
  local before = tonumber(redis.call('HGET', KEYS[1], KEYS[i]) or '0')
  if count ~= before then
    redis.call('INCRBY', KEYS[i], count - before)
    redis.call('HSET', KEYS[1], KEYS[i], count)
    changed = changed + 1
  end
end
return changed
"""


#: KEYS[1]: the container's leaving hash (:func:`leaving_key`), KEYS[2]: its marker.
#: Starts a move out of Redis: the hash made (its ``""`` field says a move is under way),
#: then the marker deleted, so servers still counting in Redis fail closed (a loss).
_LEAVE = """
redis.call('HSET', KEYS[1], '', '1')
redis.call('DEL', KEYS[2])
return 0
"""

#: KEYS[1]: the leaving hash, then the counters; ARGV: each counter's code, then each
#: one's count in the database (its base). Takes each counter out of Redis into the hash
#: (``<count>:<base>``, by code), unless the hash holds its code already. Returns 0.
_TAKE = """
local n = #KEYS - 1
for i = 2, #KEYS do
  local v = redis.call('GET', KEYS[i])
  if v and redis.call('HEXISTS', KEYS[1], ARGV[i - 1]) == 0 then
    redis.call('HSET', KEYS[1], ARGV[i - 1], v .. ':' .. ARGV[n + i - 1])
    redis.call('DEL', KEYS[i])
  end
end
return 0
"""


def moving_key(container_id: str) -> str:
    """What a move of a container's counters into Redis has added so far, by counter (a
    hash, deleted when the move is done): in its counters' slot, with no ``|`` (no
    counter's name) and not the marker's."""
    return f"{PREFIX}{{{container_id}}}:moving"


def leaving_key(container_id: str) -> str:
    """What a move of a container's counters out of Redis has taken from Redis and not
    yet seen added to the database, by counter code (a hash, deleted when it is done)."""
    return f"{PREFIX}{{{container_id}}}:leaving"


def counter_name(container_id: str, code: str) -> str:
    """The Redis name of the counter of ``code`` (``CounterKey.encode``): what
    ``redis_counters.redis_key`` names it."""
    return f"{PREFIX}{{{container_id}}}:{code}"


@dataclass
class Moved:
    """What :meth:`CounterMarkers.move_in` did: counters moved by container, and the
    containers it left (Redis lost their other counters: restore or accept that first)."""

    moved: dict[str, int] = field(default_factory=dict)
    lost: list[str] = field(default_factory=list)


class CounterMoves:
    """Moves of cap counters between the database and Redis (``nextoffer admin counters
    --into-redis`` / ``--out-of-redis``); one at a time, servers stopped."""

    def __init__(self, markers: CounterMarkers) -> None:
        self._store = markers.store
        self._client = client = markers.client
        self._markers = markers
        self._move = client.register_script(_MOVE)
        self._leave = client.register_script(_LEAVE)
        self._take = client.register_script(_TAKE)

    def unmoved(self, containers: Sequence[str] | None = None) -> dict[str, int]:
        """How many cap counters the database still holds, by container (all, or those of
        ``containers``): counted before the deployment added Redis, and not moved."""
        query = select(_K.container_id, func.count()).group_by(_K.container_id)
        if containers is not None:
            query = query.where(_K.container_id.in_(sorted(set(containers))))
        with self._store.session() as session:
            return {c: int(n) for c, n in session.conn.execute(query)}

    def move_in(
        self,
        containers: Sequence[str] | None = None,
        *,
        batch: int = MOVE_BATCH,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> Moved:
        """Move the database's cap counters (of every container, or of ``containers``)
        into Redis: each count added to what Redis holds (counts made there meanwhile
        stay), the container marked and listed, its rows deleted. Safe to stop at any
        point and run again: a count is never added twice (:data:`_MOVE`). A container
        whose counters Redis lost is left (:attr:`Moved.lost`): moved now, its counts
        would be overwritten by a restore of Redis's backup. ``on_progress(done, total)``
        is told of every batch."""
        planned = self.unmoved(containers)
        every_lost = set(self._markers.lost())
        lost = every_lost & set(planned)
        total = sum(n for c, n in planned.items() if c not in lost)
        done = 0

        def step(n: int) -> None:
            nonlocal done
            done += n
            if on_progress is not None:
                on_progress(done, total)

        step(0)
        result = Moved(lost=sorted(lost))
        for container in sorted(set(planned) - lost):
            result.moved[container] = self._move_container(container, batch, step)
        # A move stopped after a container's last rows were deleted, before it was marked.
        for container in self._moves_left(containers):
            if container not in planned and container not in every_lost:
                self._finish(container)
        return result

    def _move_container(self, container: str, batch: int, step: Callable[[int], None]) -> int:
        """One container's counters into Redis, ``batch`` a script, in key order (read
        outside write transactions); how many rows it deleted. A row is deleted only
        while it holds the count moved: one a server without Redis changed meanwhile is
        moved again, its difference added, on the next walk."""
        moving = moving_key(container)
        moved = 0
        for _ in range(MOVE_PASSES):
            after = ""
            while True:
                with self._store.session() as session:
                    rows = session.conn.execute(
                        _BATCH, {"c": container, "after": after, "n": batch}
                    ).all()
                if not rows:
                    break
                names = [counter_name(container, code) for code, _ in rows]
                self._redis(self._move, keys=[moving, *names], args=[n for _, n in rows])
                moved += self._store.write(partial(_delete_moved, rows=rows))
                step(len(rows))
                if len(rows) < batch:
                    break
                after = rows[-1][0]
            if not self._holds(container):
                break
        else:
            raise Unavailable(
                f"the cap counters of container {container} keep changing in the database: "
                "stop the servers that run without Redis, then move them again",
                retry_after=60,
            )
        self._finish(container)
        return moved

    def _finish(self, container: str) -> None:
        """A container whose counters are all in Redis: marked, listed, its move's hash
        deleted (the last: run again, a move finds it and finishes)."""
        self._markers.place([container])
        self._redis(self._client.delete, moving_key(container))
        self._markers.forget(container)

    def _moves_left(self, containers: Sequence[str] | None) -> list[str]:
        """The containers (of this database, or of ``containers``) whose move's hash
        Redis holds: one ``SCAN`` of every name when all (a move is rare; another
        deployment sharing the Redis keeps its own), one look each when named."""
        try:
            if containers is not None:
                chosen = sorted(set(containers))
                pipe = self._client.pipeline(transaction=False)
                for container in chosen:
                    pipe.exists(moving_key(container))
                return [c for c, n in zip(chosen, pipe.execute(), strict=True) if n]
            found: set[str] = set()
            for raw in self._client.scan_iter(match=f"{PREFIX}*:moving", count=1_000):
                name = raw.decode("utf-8", "surrogateescape")
                container = name[len(PREFIX) + 1 :].partition("}:")[0]
                if name == moving_key(container):  # not a counter whose scope ends so
                    found.add(container)
        except RedisError as exc:
            raise redis_unavailable(exc) from exc
        if not found:
            return []
        ours = select(t.containers.c.container_id).where(
            t.containers.c.container_id.in_(sorted(found))
        )
        with self._store.session() as session:
            return sorted(session.conn.execute(ours).scalars())

    def _holds(self, container: str) -> bool:
        """Whether the database still holds a counter of ``container``."""
        with self._store.session() as session:
            return session.conn.execute(_HELD, {"c": container}).first() is not None

    @staticmethod
    def _redis(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RedisError as exc:
            raise redis_unavailable(exc) from exc

    def move_out(
        self,
        containers: Sequence[str] | None = None,
        *,
        batch: int = MOVE_BATCH,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> Moved:
        """Move the cap counters Redis holds (of every container the database lists, or
        of ``containers``) into the database, for a deployment that stops using Redis:
        each count added to the database's, the container's marker deleted first (a
        server still counting in Redis then fails closed) and its listing last. Safe to
        stop at any point and run again: a count is never added twice (each taken from
        Redis into the container's leaving hash with the database's count beside it, and
        added only while the database still holds that count). A container whose
        counters Redis lost is left (:attr:`Moved.lost`). ``on_progress(done, 0)`` is
        told of every batch."""
        with self._store.session() as session:
            listed = [row[0] for row in session.conn.execute(_LISTED)]
        chosen = listed if containers is None else sorted(set(containers) & set(listed))
        leaving = self._exist_all(leaving_key, chosen)
        marked = self._exist_all(marker_key, chosen)
        result = Moved()
        going: list[str] = []
        for container, left, there in zip(chosen, leaving, marked, strict=True):
            (going if left or there else result.lost).append(container)
        for container in going:
            self._redis(self._leave, keys=[leaving_key(container), marker_key(container)])
            result.moved[container] = 0
        done = 0

        def step(container: str, n: int) -> None:
            nonlocal done
            result.moved[container] += n
            done += n
            if on_progress is not None:
                on_progress(done, 0)

        for container in going:  # what a run stopped half-way took and did not add
            self._drain(container, batch, step)
        if going:
            wanted = set(going)
            names: dict[str, list[str]] = {}
            for raw in self._scan(f"{PREFIX}*"):
                name = raw.decode("utf-8", "surrogateescape")
                container, _, code = name[len(PREFIX) + 1 :].partition("}:")
                if container in wanted and "|" in code and name == counter_name(container, code):
                    names.setdefault(container, []).append(code)
                    if len(names[container]) >= batch:
                        self._take_out(container, names.pop(container), step)
            for container, codes in names.items():
                self._take_out(container, codes, step)
        for container in going:
            self._drain(container, batch, step)
            self._store.write(partial(_unlist, container=container))
            self._markers.forget(container)
            self._redis(self._client.delete, leaving_key(container))
        return result

    def _take_out(self, container: str, codes: list[str], step: Callable[[str, int], None]) -> None:
        """Some of a container's counters out of Redis, into the database."""
        with self._store.session() as session:
            bases = _read_counts(session, codes)
        names = [counter_name(container, code) for code in codes]
        args = [*codes, *(bases.get(code, 0) for code in codes)]
        self._redis(self._take, keys=[leaving_key(container), *names], args=args)
        self._apply(container, codes, step, fresh=True)

    def _drain(self, container: str, batch: int, step: Callable[[str, int], None]) -> None:
        """Add to the database what the leaving hash holds (``batch`` at a time)."""
        cursor = 0
        while True:
            cursor, found = self._redis(
                self._client.hscan, leaving_key(container), cursor, count=batch
            )
            codes = [_text(code) for code in found if code]  # not the "" field
            if codes:
                self._apply(container, codes, step, fresh=False)
            if cursor == 0:
                return

    def _apply(
        self, container: str, codes: list[str], step: Callable[[str, int], None], *, fresh: bool
    ) -> None:
        """The leaving hash's ``codes`` added to the database, then taken out of the hash.
        ``fresh``: just taken from Redis, so not added yet: added whatever the rows hold.
        Else (left by a run stopped half-way, maybe added): each added only while its row
        still holds the base the hash records."""
        held = self._redis(self._client.hmget, leaving_key(container), codes)
        entries = {
            code: tuple(int(part) for part in _text(value).split(":"))
            for code, value in zip(codes, held, strict=True)
            if value is not None
        }
        if not entries:
            return
        changed = self._store.write(
            partial(_add_taken, container=container, entries=entries, fresh=fresh)
        )
        if changed:
            raise Unavailable(
                f"the cap counters of container {container} changed in the database while "
                f"they moved out of Redis ({len(changed)} of them, e.g. {changed[0]}): stop "
                "every server, then move them again",
                retry_after=60,
            )
        self._redis(self._client.hdel, leaving_key(container), *entries)
        step(container, len(entries))

    def _exist_all(self, name: Callable[[str], str], containers: Sequence[str]) -> list[bool]:
        if not containers:
            return []
        try:
            pipe = self._client.pipeline(transaction=False)
            for container in containers:
                pipe.exists(name(container))
            return [bool(n) for n in pipe.execute()]
        except RedisError as exc:
            raise redis_unavailable(exc) from exc

    def _scan(self, match: str) -> Iterable[bytes]:
        try:
            yield from self._client.scan_iter(match=match, count=1_000)
        except RedisError as exc:
            raise redis_unavailable(exc) from exc


def _delete_moved(session: Session, rows: Sequence[tuple[str, int]]) -> int:
    """Delete the counters moved, each only while it holds the count moved."""
    return int(session.conn.execute(moved_rows(rows)).rowcount)


def moved_rows(rows: Sequence[tuple[str, int]]) -> Delete:
    """The statement deleting ``rows`` (key, count) still at those counts. The keys are
    listed alone as well: SQLite finds rows by a list of (key, count) pairs only by reading
    the whole table, which made a move quadratic in the counters."""
    pairs = [(code, n) for code, n in rows]
    return delete(t.cap_counters).where(
        _K.counter_key.in_([code for code, _ in pairs]),
        tuple_(_K.counter_key, _K.count).in_(pairs),
    )


def _read_counts(session: Session, codes: Sequence[str]) -> dict[str, int]:
    query = select(_K.counter_key, _K.count).where(_K.counter_key.in_(codes))
    return {code: int(n) for code, n in session.conn.execute(query)}


def _add_taken(
    session: Session, *, container: str, entries: dict[str, tuple[int, ...]], fresh: bool
) -> list[str]:
    """Each entry's count (taken from Redis) added to its row: ``fresh``, whatever the row
    holds; else when the row holds the base recorded beside it (none: 0), and a row at
    base plus count has it already (a run stopped after this commit). The codes of rows
    at neither: changed by someone else meanwhile, added or not, nobody can tell."""
    if fresh:  # one atomic add a row: a writer meanwhile (there should be none) is kept
        rows = [
            {"counter_key": code, "container_id": container, "count": count}
            for code, (count, _) in sorted(entries.items())
            if count != 0
        ]
        if rows:
            insert = upsert(session.conn, t.cap_counters)
            session.conn.execute(
                insert.on_conflict_do_update(
                    index_elements=[_K.counter_key],
                    set_={"count": _K.count + insert.excluded["count"]},
                ),
                rows,
            )
        return []
    current = _read_counts(session, list(entries))
    changed: list[str] = []
    for code, (count, base) in entries.items():
        now = current.get(code)
        if count == 0 or now == base + count:
            continue
        elif (now or 0) != base:
            changed.append(code)
            continue
        if now is None:
            session.conn.execute(
                upsert(session.conn, t.cap_counters).on_conflict_do_nothing(),
                {"counter_key": code, "container_id": container, "count": base + count},
            )
        else:
            session.conn.execute(
                t.cap_counters.update()
                .where(_K.counter_key == code, _K.count == base)
                .values(count=base + count)
            )
    return changed


def _unlist(session: Session, *, container: str) -> None:
    session.conn.execute(
        delete(t.redis_counter_markers).where(t.redis_counter_markers.c.container_id == container)
    )


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
