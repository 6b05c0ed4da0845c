"""The offers report, folded from the decision events behind the answer.

A recorded decision writes before it answers only what a crash must not lose: the
reservations of its capped offers and one append-only decision event, which names the
offers it proposed (``decision_events.offers``) and takes the next place in commit order
(``decision_events.seq``). The report's propositions (``offer_daily``) are derived: a
*fold* adds the events after the persisted watermark (``report_folds.position``) to the
report and moves the watermark past them, in one transaction. A crash before its commit
leaves both as they were, so the next fold counts those events; after it they are
counted once. Two folders (two workers, two nodes) never count an event twice: a fold
reads and moves the watermark under a write lock (SQLite's one writer; on PostgreSQL
the watermark's row lock, ``FOR UPDATE``).

Folds only ever take events whose place is final: every event at or below the *high
mark* must be committed. On SQLite commits are serial and an event's place is the
writer's ``max(seq) + 1`` under the write lock, so the high mark is ``max(seq)`` inside
the fold's own write transaction. On PostgreSQL places come from an identity, taken
before the commit, so a transaction holding place 9 may commit after one holding 10:
each record batch takes a shared advisory lock (:data:`PG_LOCK`) before it inserts
events, and the fold takes it exclusively for a moment, reads ``max(seq)`` and lets it
go — every place at or below that mark belongs to a transaction that has finished.

Who folds, and when (``FOLD_SECONDS``, the staleness bound of ``docs/api.md``): the
decision path's writer, on its own turn between record batches (``sqlite_path.py``,
``pg_path.py``; no thread of its own to compete with the event loop), at most
:data:`FOLD_EVENTS` events per turn; every report read through the service first
(``Reports.offers``: it counts every decision recorded before it); and a closing
decision path, which folds everything.

Batch decisions write no event (their event is the job's dataset row): their records add
to the report directly, in their batch's transaction (``group_commit.plan_batch``).
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncpg
    import psycopg

#: Seconds a writer lets pass between two folds while records come: the offers report
#: trails the decision events by about this much (plus one fold) when nobody reads it.
FOLD_SECONDS = 0.25

#: Events one fold takes at most: a fold holds SQLite's write lock, which the record
#: batches wait for meanwhile, so a backlog is folded over several turns.
FOLD_EVENTS = 4096

#: The advisory lock (PostgreSQL) record batches hold shared while they insert events,
#: taken exclusively by a fold to read a high mark no open transaction can fall under.
PG_LOCK = 0x6E786F66  # "nxof"

#: The watermark's row, made at 0 where missing (a database emptied of its rows).
_SQLITE_ROW = "INSERT OR IGNORE INTO report_folds (name, position) VALUES ('offers', 0)"
_SQLITE_WHERE = "SELECT COALESCE(MAX(position), 0) FROM report_folds WHERE name = 'offers'"
_SQLITE_HIGH = "SELECT COALESCE(MAX(seq), 0) FROM decision_events"
_SQLITE_FOLD = (
    "INSERT INTO offer_daily (container_id, day, offer_id, propositions, impressions, clicks)"
    " SELECT e.container_id, substr(e.created, 1, 10), o.value, count(*), 0, 0"
    # The range of places, by the rowid: grouping by container, the planner would rather
    # walk every event in the container index's order.
    " FROM decision_events AS e NOT INDEXED, json_each(e.offers) AS o"
    " WHERE e.seq > ? AND e.seq <= ?"
    " GROUP BY e.container_id, substr(e.created, 1, 10), o.value"
    " ON CONFLICT (container_id, day, offer_id)"
    " DO UPDATE SET propositions = offer_daily.propositions + excluded.propositions"
)
_MOVE = "UPDATE report_folds SET position = ? WHERE name = 'offers'"

_PG_HIGH = "SELECT COALESCE(MAX(seq), 0) FROM decision_events"
_PG_MOVE = "UPDATE report_folds SET position = %s WHERE name = 'offers'"
_PG_ROW = "INSERT INTO report_folds (name, position) VALUES ('offers', 0) ON CONFLICT DO NOTHING"
_PG_WHERE = "SELECT position FROM report_folds WHERE name = 'offers' FOR UPDATE"
_PG_FOLD = (
    "INSERT INTO offer_daily (container_id, day, offer_id, propositions, impressions, clicks)"
    " SELECT e.container_id, substr(e.created, 1, 10), o.value, count(*), 0, 0"
    " FROM decision_events AS e, jsonb_array_elements_text(e.offers::jsonb) AS o(value)"
    " WHERE e.seq > %s AND e.seq <= %s"
    " GROUP BY e.container_id, substr(e.created, 1, 10), o.value"
    # Report rows locked in one order (the batch writers' too: byte order).
    ' ORDER BY e.container_id COLLATE "C", substr(e.created, 1, 10) COLLATE "C",'
    ' o.value COLLATE "C"'
    " ON CONFLICT (container_id, day, offer_id)"
    " DO UPDATE SET propositions = offer_daily.propositions + excluded.propositions"
)


def _next(position: int, high: int, limit: int | None) -> int:
    return high if limit is None else min(high, position + limit)


def unfolded_sqlite(conn: sqlite3.Connection) -> bool:
    """Whether some event is past the watermark (two index reads, no write lock)."""
    (position,) = conn.execute(_SQLITE_WHERE).fetchone()
    (high,) = conn.execute(_SQLITE_HIGH).fetchone()
    return bool(high > position)


def fold_sqlite(conn: sqlite3.Connection, *, limit: int | None = FOLD_EVENTS) -> bool:
    """One fold on ``conn`` inside the caller's write transaction (``BEGIN IMMEDIATE``:
    SQLite's one writer keeps every other fold and record out until the commit); at most
    ``limit`` events (all of them with ``None``). Returns whether events remain."""
    conn.execute(_SQLITE_ROW)
    (position,) = conn.execute(_SQLITE_WHERE).fetchone()
    (high,) = conn.execute(_SQLITE_HIGH).fetchone()
    if high <= position:
        return False
    upper = _next(position, high, limit)
    conn.execute(_SQLITE_FOLD, (position, upper))
    conn.execute(_MOVE, (upper,))
    return bool(upper < high)


def next_seq_sqlite(conn: sqlite3.Connection) -> int:
    """The place the next event takes (inside the writer's transaction)."""
    (high,) = conn.execute(_SQLITE_HIGH).fetchone()
    return int(high) + 1


def fold_postgres(conn: psycopg.Connection[Any], *, limit: int | None = FOLD_EVENTS) -> bool:
    """One fold on ``conn`` (no transaction open on it; autocommit or not): the high mark
    under the exclusive advisory lock, then the events above the watermark up to it (at
    most ``limit``; all with ``None``) in one transaction holding the watermark's row
    lock. Returns whether events remain. An error rolls the fold back (nothing moved)."""
    # Session-level: held past the end of the transaction that takes it, so the next
    # transaction's snapshot sees every batch that held it shared; let go right after.
    with conn.transaction():
        conn.execute("SELECT pg_advisory_lock(%s)", (PG_LOCK,))
    try:
        with conn.transaction():
            row = conn.execute(_PG_HIGH).fetchone()
    finally:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_unlock(%s)", (PG_LOCK,))
    high = int(row[0]) if row is not None else 0
    with conn.transaction():
        conn.execute(_PG_ROW)
        found = conn.execute(_PG_WHERE).fetchone()
        position = int(found[0]) if found is not None else 0
        if high <= position:
            return False
        upper = _next(position, high, limit)
        conn.execute(_PG_FOLD, (position, upper))
        conn.execute(_PG_MOVE, (upper,))
    return upper < high


def _numbered(sql: str) -> str:
    parts = sql.split("%s")
    return parts[0] + "".join(f"${i}{part}" for i, part in enumerate(parts[1:], 1))


_PG_MOVE_ASYNCPG = _numbered(_PG_MOVE)
_PG_FOLD_ASYNCPG = _numbered(_PG_FOLD)


async def fold_postgres_on_loop(
    conn: asyncpg.Connection, *, limit: int | None = FOLD_EVENTS
) -> bool:
    """:func:`fold_postgres` on an asyncpg connection (outside a transaction: each of the
    first three statements commits on its own), for the loop's writer (``pg_path.py``)."""
    await conn.execute("SELECT pg_advisory_lock($1)", PG_LOCK)
    try:
        high = int(await conn.fetchval(_PG_HIGH) or 0)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", PG_LOCK)
    async with conn.transaction():
        await conn.execute(_PG_ROW)
        found = await conn.fetchval(_PG_WHERE)
        position = int(found) if found is not None else 0
        if high <= position:
            return False
        upper = _next(position, high, limit)
        await conn.execute(_PG_FOLD_ASYNCPG, position, upper)
        await conn.execute(_PG_MOVE_ASYNCPG, upper)
    return upper < high
