"""A deleted profile's erasure in SQL: its decision events and its cap counters, queued
by :meth:`Erasures.request` in the deletion's transaction and walked by the servers'
retention passes (``service/retention.py``). Used through ``Session.erasures``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from sqlalchemy import Connection, delete, exists, func, or_, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite

from nextoffer.storage import tables as t
from nextoffer.storage.runtime import folded_seq, newest_seq

#: Keys a step of the erasures walks with at most (of the events; of the counters, keys a
#: walk of them takes at most).
ERASED_BATCH = 500


class _Erasure(NamedTuple):
    """A queued erasure of a step: its (key, org, sandbox), its end, and whether it still
    follows the newest event."""

    key: tuple[str, str, str]
    until: int
    settling: bool


def _due(settled: str) -> Any:
    """An erasure of counters a walk may do now (:meth:`Erasures.due_counters`)."""
    q = t.counter_erasures.c
    return or_(q.requested <= settled, q.scope.startswith("identity"))


def _redis_held() -> Any:
    """The erasure's tenant has a container whose counters Redis holds."""
    q, c, m = t.counter_erasures.c, t.containers.c, t.redis_counter_markers.c
    return exists(
        select(m.container_id)
        .join(t.containers, c.container_id == m.container_id)
        .where(c.org_id == q.org_id, c.sandbox == q.sandbox)
    )


def _queued(keys: list[tuple[str, str, str]]) -> Any:
    q = t.profile_erasures.c
    return tuple_(q.profile_key, q.org_id, q.sandbox).in_(keys)


class Erasures:
    """The erasure queues' reads and writes on one connection (one transaction)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._dialect = postgresql if conn.dialect.name == "postgresql" else sqlite

    def request(self, org: str, sandbox: str, profile_keys: Iterable[str], *, now: str) -> None:
        """Queue the deletion of every decision event recorded so far in the containers
        of ``org`` and ``sandbox`` under ``profile_keys`` (a deleted profile's), and of
        the cap counters counting under them; :meth:`erase_decision_events` does the
        first, ``CapCounterStore.erase`` the second. A key queued again is erased up to
        the newest event now, from where it had got."""
        until = self.conn.execute(
            select(func.coalesce(func.max(t.decision_events.c.seq), 0))
        ).scalar_one()
        rows = [
            {
                "profile_key": key,
                "org_id": org,
                "sandbox": sandbox,
                "until_seq": until,
                "cursor_seq": 0,
                "requested": now,
            }
            for key in dict.fromkeys(profile_keys)
        ]
        if rows:
            queue = self._dialect.insert(t.profile_erasures)
            self.conn.execute(
                queue.on_conflict_do_update(
                    index_elements=["profile_key", "org_id", "sandbox"],
                    set_={"until_seq": queue.excluded.until_seq},
                ),
                rows,
            )
            counters = self._dialect.insert(t.counter_erasures)
            self.conn.execute(
                counters.on_conflict_do_update(
                    index_elements=["scope", "org_id", "sandbox"],
                    set_={"requested": counters.excluded.requested},
                ),
                [
                    {
                        "scope": row["profile_key"],
                        "org_id": org,
                        "sandbox": sandbox,
                        "requested": now,
                    }
                    for row in rows
                ],
            )

    def due_counters(
        self, *, settled: str, redis_held: bool = True
    ) -> list[tuple[str, str, str, str]]:
        """The queued erasures of cap counters (:meth:`request`) a walk may do now,
        at most :data:`ERASED_BATCH`, as (scope, org, sandbox, requested): an identity's
        at once, a profile id's once requested before ``settled`` (as the events' erasure
        settles: decisions from other processes' caches still count under it until then).
        Without ``redis_held``, none of a tenant that has a container whose counters Redis
        holds (:meth:`waiting_for_redis`)."""
        q = t.counter_erasures.c
        query = select(q.scope, q.org_id, q.sandbox, q.requested).where(_due(settled))
        if not redis_held:
            query = query.where(~_redis_held())
        rows = self.conn.execute(query.order_by(q.requested).limit(ERASED_BATCH)).all()
        return [(scope, org, sandbox, requested) for scope, org, sandbox, requested in rows]

    def waiting_for_redis(self, *, settled: str) -> int:
        """How many erasures of counters are due in tenants with a container whose counters
        Redis holds: a process without Redis leaves them to one with it."""
        return int(
            self.conn.execute(
                select(func.count())
                .select_from(t.counter_erasures)
                .where(_due(settled), _redis_held())
            ).scalar_one()
        )

    def forget_counters(self, done: Sequence[tuple[str, str, str, str]]) -> None:
        """Unqueue the erasures a walk did: those not queued again since it read them
        (their ``requested`` unchanged)."""
        if done:
            q = t.counter_erasures.c
            self.conn.execute(
                delete(t.counter_erasures).where(
                    tuple_(q.scope, q.org_id, q.sandbox, q.requested).in_(list(done))
                )
            )

    def tenant_containers(self, tenants: Iterable[tuple[str, str]]) -> list[tuple[str, str, str]]:
        """(container, org, sandbox) of every container of the (org, sandbox) ``tenants``."""
        c = t.containers.c
        wanted = sorted(set(tenants))
        if not wanted:
            return []
        return [
            (container, org, sandbox)
            for container, org, sandbox in self.conn.execute(
                select(c.container_id, c.org_id, c.sandbox).where(
                    tuple_(c.org_id, c.sandbox).in_(wanted)
                )
            )
        ]

    def erase_decision_events(self, *, places: int, settled: str) -> int | None:
        """One step of the queued erasures: of the decision events after the least cursor
        of the queue, at most ``places`` places on, delete those of the erasures at that
        cursor; how many. ``None`` when no step can be made now: the queue is empty, or
        the events left are not counted by the offers report yet (nor is the newest event
        deleted: both as :meth:`prune_decision_events`).

        Erasures at one cursor walk together (one queued later catches up, then joins
        them), so the events are read once for all of them: a range of the events' own
        key, with no index on ``profile_key`` (a b-tree more on the hottest insert).

        A profile id's events can still arrive for a while after its deletion: a decision
        another process made from its profile cache, a group commit under way. Until its
        erasure was requested before ``settled``, its end follows the newest event and it
        stays queued. An identity's key does not: an event under it after the deletion is
        a visitor's without a profile."""
        q, e = t.profile_erasures.c, t.decision_events.c
        least = self.conn.execute(select(func.min(q.cursor_seq))).scalar_one()
        if least is None:
            return None
        folded, newest = self.conn.execute(select(folded_seq(), newest_seq())).one()
        group = self._erasures_at(least, settled, newest)
        first = self.conn.execute(select(func.min(e.seq)).where(e.seq > least)).scalar_one()
        # Erasures with no event left before their end are done (past any gap in places).
        walking = [row for row in group if first is not None and row.until >= first]
        done = [row.key for row in group if row not in walking and not row.settling]
        if done:
            self.conn.execute(delete(t.profile_erasures).where(_queued(done)))
        if not walking:
            return 0 if done else None
        end = min(first - 1 + places, *(row.until for row in walking), folded, newest - 1)
        if end < first:  # what is left waits for the fold (or for a newer event)
            return 0 if done else None
        deleted = self._erase_range(walking, least, end)
        named = [row.key for row in walking]
        self.conn.execute(
            update(t.profile_erasures)
            .where(q.cursor_seq == least, _queued(named))
            .values(cursor_seq=end)
        )
        finished = [row.key for row in walking if not row.settling and row.until <= end]
        if finished:
            self.conn.execute(delete(t.profile_erasures).where(_queued(finished)))
        return deleted

    def _erasures_at(self, cursor: int, settled: str, newest: int | None) -> list[_Erasure]:
        """The queued erasures at ``cursor`` (at most :data:`ERASED_BATCH`); those still
        settling have their end moved to the newest event."""
        q = t.profile_erasures.c
        rows = self.conn.execute(
            select(q.profile_key, q.org_id, q.sandbox, q.until_seq, q.requested)
            .where(q.cursor_seq == cursor)
            .limit(ERASED_BATCH)
        ).all()
        group, moved = [], []
        for key, org, sandbox, until, requested in rows:
            settling = requested > settled and not key.startswith("identity")
            if settling and newest is not None and until < newest:
                until = newest
                moved.append((key, org, sandbox))
            group.append(_Erasure((key, org, sandbox), until, settling))
        if moved:
            self.conn.execute(
                update(t.profile_erasures).where(_queued(moved)).values(until_seq=newest)
            )
        return group

    def _erase_range(self, walking: list[_Erasure], after: int, end: int) -> int:
        """Delete the events in places ``after`` < seq <= ``end`` of ``walking``'s keys, each
        in its own org and sandbox's containers; how many this transaction deleted.

        The range is read by the events' own key and the keys' events matched to their
        containers here: a plan both databases keep (an EXISTS per event took PostgreSQL
        ~100 ms for 2,000 places; an OR of INs per container led SQLite to walk the
        container's index instead of the range)."""
        e = t.decision_events.c
        owned = self.tenant_containers((row.key[1], row.key[2]) for row in walking)
        wanted = {
            (container, row.key[0])
            for container, org, sandbox in owned
            for row in walking
            if (row.key[1], row.key[2]) == (org, sandbox)
        }
        ranged = self.conn.execute(
            select(e.seq, e.container_id, e.profile_key).where(
                e.seq > after, e.seq <= end, e.profile_key.in_({key for _, key in wanted})
            )
        )
        doomed = [seq for seq, container, key in ranged if (container, key) in wanted]
        if not doomed:
            return 0
        return int(self.conn.execute(delete(t.decision_events).where(e.seq.in_(doomed))).rowcount)
