"""The decision path on PostgreSQL: driver reads on the caller's thread, records written in
batches by one writer thread (*group commit*).

A write transaction per decision through an ORM session cost every decision a pool
checkout, a ``BEGIN``, a statement per table and a commit of its own. Here reads use plain
psycopg connections (one per thread, autocommit: a read is one round trip; psycopg
prepares a statement once it has run a few times), and records are written in batches by
the writer thread, one transaction each: every record queued while the last batch
committed. A caller's future resolves only after its batch committed (nothing
acknowledged is lost), and a failed batch fails every record of it (nothing of it was
written).

The batch's reservations are decided in Python (``group_commit.plan_batch``, as on
SQLite) with the batch's counters locked: one ``INSERT … ON CONFLICT DO UPDATE …
RETURNING`` creates the missing ones and locks them all in key order, so writers of other
processes (other nodes) that need the same counters queue behind this transaction
instead of deadlocking with it, and every count read stays as read until the commit.
That keeps caps exact across nodes.

A batch writes reservations and decision events; the offers report is folded from the
events by the writer between its batches (``report_fold.py``), the batch holding the
fold's advisory lock shared so that a fold never passes over an event not yet committed.

On an event loop (``PgPath.on_loop``, :class:`PgOnLoop`) the same is done without a
thread, on asyncpg (its protocol runs in compiled code on the loop: a read costs about a
third of the CPU of psycopg's asynchronous one, docs/benchmarks.md): reads are coroutines
on a few connections per loop, opened as needed (asyncpg prepares and caches every
statement), and records are group-committed by a task of that loop on a connection of its
own — every record queued while the last batch committed, written by
``_write_batch_on_loop`` (``_write_batch``'s statements, each table's rows in one
statement). A writer thread waiting for the interpreter lock behind a busy loop would
wait a switch interval per round trip. psycopg stays the driver of every caller off a
loop (the CLI, batch jobs, ``NextOffer.decide``) and of the repository.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from contextlib import suppress
from typing import Any, TypeVar

import asyncpg
import orjson
import psycopg
from sqlalchemy.engine import URL

from nextoffer.errors import Conflict, NextOfferError, Unavailable
from nextoffer.logs import Throttled
from nextoffer.repository.records import InstanceRecord
from nextoffer.storage.counters import (
    COUNTS_SQL,
    CounterKey,
    counts_from,
    counts_statement,
    read_counts,
)
from nextoffer.storage.decision_path import DecisionRecord, OnLoop
from nextoffer.storage.errors import translated
from nextoffer.storage.group_commit import (
    MAX_BATCH,
    BatchPlan,
    BatchWriter,
    Outcome,
    already_recorded,
    counter_owners,
    plan_batch,
    refused_alone,
)
from nextoffer.storage.path_sql import (
    DAILY_IN,
    EVENTS,
    EVENTS_IN,
    INSTANCE,
    INSTANCE_BY_AT_ID,
    PROFILE,
    SET_COUNTS,
    VERSION,
    InstanceRow,
    on_postgres,
)
from nextoffer.storage.report_fold import (
    FOLD_EVENTS,
    FOLD_SECONDS,
    PG_LOCK,
    fold_postgres,
    fold_postgres_on_loop,
)
from nextoffer.storage.rows import instance_from_row
from nextoffer.storage.store import Store

log = logging.getLogger("nextoffer.storage")
#: One line every ten seconds while batches fail, not one per batch.
_NOT_WRITTEN = Throttled(log)

#: Seconds to wait for a connection to the server (the store's engine waits as long).
CONNECT_TIMEOUT = 5
#: Asynchronous connections per event loop for the reads of decisions on that loop: one
#: read at a time each, so this many round trips are in flight at once.
LOOP_CONNECTIONS = 4

_PROFILE = on_postgres(PROFILE)
_VERSION = on_postgres(VERSION)
_INSTANCE = on_postgres(INSTANCE)
_INSTANCE_BY_AT_ID = on_postgres(INSTANCE_BY_AT_ID)
_EVENTS = on_postgres(EVENTS)
_SET_COUNTS = on_postgres(SET_COUNTS)
_EVENTS_IN = on_postgres(EVENTS_IN)
_DAILY_IN = on_postgres(DAILY_IN)
#: The batch's ids already stored, under the fold's advisory lock (shared; held to the
#: commit, so every event this batch inserts is committed before a fold can see past it).
_DUPLICATES = (
    f"SELECT pg_advisory_xact_lock_shared({PG_LOCK}),"
    " array(SELECT proposition_id FROM decision_events WHERE proposition_id = ANY(%s))"
)
#: Creates the batch's missing counters at 0 and locks every one of them, in key order
#: (byte order: ``COLLATE "C"``, as Python sorts them), and returns their counts.
LOCK_COUNTERS = (
    "INSERT INTO cap_counters (counter_key, container_id, count)"
    ' SELECT k, c, 0 FROM unnest(%s::text[], %s::text[]) AS v(k, c) ORDER BY k COLLATE "C"'
    " ON CONFLICT (counter_key) DO UPDATE SET count = cap_counters.count"
    " RETURNING counter_key, count"
)


def _unnested(sql: str, types: str) -> str:
    """``sql``'s one-row ``VALUES (…)`` as a ``SELECT`` from ``unnest`` of one array per
    placeholder (``types``: their element types, in order): all of a batch's rows of one
    table in one statement, where ``executemany`` sends a statement per row."""
    head, rest = sql.split(" VALUES (", 1)
    values, tail = rest.split(")", 1)
    kinds = iter(types.split())
    columns, arrays, names = [], [], []
    for i, value in enumerate(v.strip() for v in values.split(",")):
        if value == "?":
            columns.append(f"v{i}")
            names.append(f"v{i}")
            arrays.append(f"%s::{next(kinds)}[]")
        else:
            columns.append(value)
    return (
        f"{head} SELECT {', '.join(columns)}"
        f" FROM unnest({', '.join(arrays)}) AS r({', '.join(names)}){tail}"
    )


_SET_COUNTS_ALL = _unnested(SET_COUNTS, "text text int8")
_EVENTS_ALL = _unnested(EVENTS_IN, "text text text int8 text text text")
_DAILY_ALL = _unnested(DAILY_IN, "text text text int8")
#: A batch of events alone (no counter of PostgreSQL's reserved, no report row: always so
#: with Redis counters) as one statement, where the full form takes three (the stored ids,
#: the insert, then the commit's round trip; on asyncpg ``BEGIN`` as well). The batches'
#: shared advisory lock comes first — the insert's rows are joined to its one row, so none
#: is made, nor numbered, before it is held (``report_fold.py``) — a proposition id stored
#: already is skipped, and the ids inserted come back (:func:`_events_only_outcomes`).
_EVENTS_ONLY = (
    f"WITH held AS (SELECT pg_advisory_xact_lock_shared({PG_LOCK})),"
    f" added AS ({_EVENTS_ALL}, held"
    " ON CONFLICT (proposition_id) DO NOTHING RETURNING proposition_id)"
    " SELECT array(SELECT proposition_id FROM added)"
)


def conninfo(url: URL) -> str:
    """The store's URL as a libpq connection URL both drivers read alike.

    A server's Unix socket is named libpq's way, its folder as the ``host`` parameter
    (``postgresql://user@:5432/db?host=/run/postgresql``: docs/deploy.md). psycopg reads
    the port from either place; asyncpg ignores that ``host`` when the authority names a
    port and looks the empty host name up instead, so the port goes beside it."""
    if "host" in url.query and url.port is not None:
        query = {**url.query, "port": str(url.port)}
        url = URL.create(
            url.drivername, url.username, url.password, url.host, None, url.database, query
        )
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def connect(info: str, *, autocommit: bool) -> psycopg.Connection[Any]:
    """A psycopg connection as the decision path's are (``storage/batch.py``'s ledger
    writes through one too); a refusal or an outage raised as ours."""
    try:
        return psycopg.connect(info, autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT)
    except psycopg.Error as exc:
        raise translated(exc) or exc from exc


def _numbered(sql: str) -> str:
    """psycopg's ``%s`` placeholders as asyncpg's ``$1, $2, …``."""
    parts = sql.split("%s")
    return parts[0] + "".join(f"${i}{part}" for i, part in enumerate(parts[1:], 1))


#: The statements of :class:`PgOnLoop` (asyncpg's placeholders).
_A_PROFILE = _numbered(_PROFILE)
_A_EVENTS = _numbered(_EVENTS)
_A_DUPLICATES = _numbered(_DUPLICATES)
_A_LOCK_COUNTERS = _numbered(LOCK_COUNTERS)
_A_SET_COUNTS_ALL = _numbered(_SET_COUNTS_ALL)
_A_EVENTS_ALL = _numbered(_EVENTS_ALL)
_A_DAILY_ALL = _numbered(_DAILY_ALL)
_A_EVENTS_ONLY = _numbered(_EVENTS_ONLY)
_A_COUNTS = _numbered(COUNTS_SQL["postgresql"])


def _columns(rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """Rows as one list per column (the arrays of an ``_unnested`` statement)."""
    return [list(column) for column in zip(*rows, strict=True)]


def _events_only(records: Sequence[DecisionRecord], owners: dict[str, str]) -> bool:
    """Whether a batch is written by :data:`_EVENTS_ONLY`: nothing to reserve here, and
    every record has an event (no report row to add)."""
    return not owners and all(r.body is not None for r in records)


def _events_only_outcomes(
    records: Sequence[DecisionRecord], plan: BatchPlan, added: set[str]
) -> list[Outcome]:
    """The outcomes of a batch :data:`_EVENTS_ONLY` wrote, planned as if nothing were
    stored (a duplicate within the batch is found by the plan): a record whose id the
    insert skipped was stored already."""
    return [
        already_recorded(r.proposition_id)
        if outcome == [] and r.proposition_id not in added
        else outcome
        for r, outcome in zip(records, plan.outcomes, strict=True)
    ]


T = TypeVar("T")


class PgPath:
    """Driver connections for reads (one per thread); records group-committed by a writer
    thread. A caller on an event loop uses :attr:`on_loop` instead (:class:`PgOnLoop`)."""

    #: Every read is a round trip to the server: calls off a loop belong in a worker thread.
    inline = False

    def __init__(self, store: Store) -> None:
        if store.dialect != "postgresql":
            raise ValueError("PgPath needs a PostgreSQL store")
        self._conninfo = conninfo(store.engine.url)
        self._local = threading.local()
        self._readers: list[psycopg.Connection[Any]] = []
        self._readers_lock = threading.Lock()
        self._writer = BatchWriter(
            self._connect_writer,
            self._write_batch,
            psycopg.Connection.close,
            lambda conn, limit: fold_postgres(conn, limit=limit),
        )
        self._closed = False
        self._on_loop = PgOnLoop(self, self._conninfo)
        #: Reads and records on the caller's event loop, without a thread.
        self.on_loop: OnLoop | None = self._on_loop

    # -- reads -----------------------------------------------------------------------

    def profile(
        self, org: str, sandbox: str, namespace: str, identity: str
    ) -> tuple[str, dict[str, Any]] | None:
        row = self._read(lambda c: c.execute(_PROFILE, (org, sandbox, namespace, identity)))
        found = row.fetchone()
        return (found[0], orjson.loads(found[1])) if found is not None else None

    def events(self, profile_id: str, *, limit: int) -> list[dict[str, Any]]:
        rows = self._read(lambda c: c.execute(_EVENTS, (profile_id, limit))).fetchall()
        return [orjson.loads(row[0]) for row in reversed(rows)]

    def library_version(self, container_id: str) -> int:
        row = self._read(lambda c: c.execute(_VERSION, (container_id,))).fetchone()
        return int(row[0] or 0) if row is not None else 0

    def counts(self, keys: Sequence[CounterKey]) -> dict[CounterKey, int]:
        by_code = {key.encode(): key for key in keys}
        found = self._read(
            lambda c: read_counts(lambda sql, p: c.execute(sql, p), "postgresql", list(by_code))
        )
        return {by_code[code]: count for code, count in found.items()}

    def instance(
        self, org: str, sandbox: str, container_id: str, instance_id: str, *, by_at_id: bool = False
    ) -> tuple[bool, InstanceRecord | None]:
        params = (instance_id, container_id, org, sandbox)
        sql = _INSTANCE_BY_AT_ID if by_at_id else _INSTANCE
        row = self._read(lambda c: c.execute(sql, params)).fetchone()
        if row is None:
            return False, None
        return True, instance_from_row(InstanceRow._make(row)) if row[0] is not None else None

    def _read(self, run: Callable[[psycopg.Connection[Any]], T]) -> T:
        conn = self._thread_conn()
        try:
            return run(conn)
        except psycopg.Error as exc:
            if conn.broken or conn.closed:  # the server went away: reconnect next time
                self._drop(conn)
            raise translated(exc) or exc from exc

    def _thread_conn(self) -> psycopg.Connection[Any]:
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            if self._closed:
                raise Unavailable("the store is closed")
            conn = self._local.conn = self._connect(autocommit=True)
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def _drop(self, conn: psycopg.Connection[Any]) -> None:
        self._local.conn = None
        with self._readers_lock:
            if conn in self._readers:
                self._readers.remove(conn)
        conn.close()

    def _connect(self, *, autocommit: bool) -> psycopg.Connection[Any]:
        return connect(self._conninfo, autocommit=autocommit)

    # -- writes ----------------------------------------------------------------------

    def record(self, record: DecisionRecord) -> Future[list[CounterKey]]:
        """Queue the record for the writer's next batch."""
        return self._writer.put(record)

    def _connect_writer(self) -> psycopg.Connection[Any]:
        return self._connect(autocommit=False)

    @staticmethod
    def _write_batch(conn: psycopg.Connection[Any], records: list[DecisionRecord]) -> list[Outcome]:
        """The batch in one transaction (``group_commit.plan_batch``): its counters locked
        in key order while the reservations are decided, one ``executemany`` per table
        (psycopg pipelines them), then the commit; a batch of events alone in one
        statement (:data:`_EVENTS_ONLY`). Any error rolls all of it back."""
        try:
            owners = counter_owners(records)
            if _events_only(records, owners):
                plan = plan_batch(records, set(), {}, owners)
                found = conn.execute(_EVENTS_ONLY, _columns(plan.events)).fetchone()
                conn.commit()
                return _events_only_outcomes(records, plan, set(found[0] if found else ()))
            ids = [r.proposition_id for r in records]
            found = conn.execute(_DUPLICATES, (ids,)).fetchone()
            stored = set(found[1]) if found is not None else set()
            counts: dict[str, int] = {}
            if owners:
                locked = conn.execute(LOCK_COUNTERS, (list(owners), list(owners.values())))
                counts = {code: int(count) for code, count in locked}
            plan = plan_batch(records, stored, counts, owners)
            with conn.cursor() as cursor:
                if plan.counters:
                    cursor.executemany(_SET_COUNTS, plan.counters)
                if plan.events:
                    cursor.executemany(_EVENTS_IN, plan.events)
                if plan.daily:
                    cursor.executemany(_DAILY_IN, plan.daily)
            conn.commit()
        except BaseException:
            with suppress(psycopg.Error):  # a broken connection is closed by the writer
                conn.rollback()
            raise
        return plan.outcomes

    def fold(self) -> None:
        """Fold every event recorded so far into the offers report (``report_fold.py``),
        on the caller's thread's connection (a report read does first)."""
        self._read(lambda c: fold_postgres(c, limit=None))

    @staticmethod
    async def _write_batch_on_loop(
        conn: asyncpg.Connection, records: list[DecisionRecord]
    ) -> list[Outcome]:
        """:meth:`_write_batch` on an asyncpg connection: the same statements in the same
        order (keep them in step), each table's rows written by one statement
        (``_unnested``). Any error rolls all of it back."""
        owners = counter_owners(records)
        if _events_only(records, owners):
            plan = plan_batch(records, set(), {}, owners)
            added = await conn.fetchval(_A_EVENTS_ONLY, *_columns(plan.events))
            return _events_only_outcomes(records, plan, set(added))
        ids = [r.proposition_id for r in records]
        async with conn.transaction():
            found = await conn.fetchrow(_A_DUPLICATES, ids)
            stored = set(found[1]) if found is not None else set()
            counts: dict[str, int] = {}
            if owners:
                locked = await conn.fetch(_A_LOCK_COUNTERS, list(owners), list(owners.values()))
                counts = {code: int(count) for code, count in locked}
            plan = plan_batch(records, stored, counts, owners)
            for sql, rows in (
                (_A_SET_COUNTS_ALL, plan.counters),
                (_A_EVENTS_ALL, plan.events),
                (_A_DAILY_ALL, plan.daily),
            ):
                if rows:
                    await conn.execute(sql, *_columns(rows))
        return plan.outcomes

    def record_many(self, items: Sequence[tuple[DecisionRecord, Future[list[CounterKey]]]]) -> None:
        """Queue records with the caller's futures for the writer thread, in one hand-off."""
        self._writer.put_many(items)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True
        # The loops' connections first: a transaction of a loop's writer (a batch, a fold)
        # ends with them, instead of holding locks the writer thread's last fold needs.
        self._on_loop.close()
        self._writer.close()
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()


class _LoopConnections:
    """One event loop's asyncpg connections: at most ``LOOP_CONNECTIONS`` for reads,
    opened when a read finds none idle, and the loop's writer."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.idle: list[asyncpg.Connection] = []
        self.opened: list[asyncpg.Connection] = []
        self.slots = asyncio.Semaphore(LOOP_CONNECTIONS)
        #: Records waiting for the loop's next batch, and the task writing batches.
        self.queued: list[tuple[DecisionRecord, asyncio.Future[list[CounterKey]]]] = []
        self.writing: asyncio.Task[None] | None = None
        self.writer: asyncpg.Connection | None = None
        #: Whether events may wait for a fold, when the writer last folded, and the timer
        #: that starts the writer to fold when no record came for ``FOLD_SECONDS``.
        self.unfolded = False
        self.folded_at = loop.time()
        self.fold_due: asyncio.TimerHandle | None = None

    def connections(self) -> list[asyncpg.Connection]:
        return [*self.opened, *([self.writer] if self.writer is not None else [])]


class PgOnLoop:
    """:class:`PgPath` as coroutines of the running loop (``DecisionPath.on_loop``): reads
    on asyncpg connections, records group-committed by a task of the loop on a connection
    of its own, the offers report folded by that task between its batches."""

    def __init__(self, path: PgPath, conninfo: str) -> None:
        self._path = path
        self._conninfo = conninfo
        self._loops: dict[asyncio.AbstractEventLoop, _LoopConnections] = {}

    async def profile(
        self, org: str, sandbox: str, namespace: str, identity: str
    ) -> tuple[str, dict[str, Any]] | None:
        rows = await self._read(_A_PROFILE, (org, sandbox, namespace, identity))
        return (rows[0][0], orjson.loads(rows[0][1])) if rows else None

    async def events(self, profile_id: str, *, limit: int) -> list[dict[str, Any]]:
        rows = await self._read(_A_EVENTS, (profile_id, limit))
        return [orjson.loads(row[0]) for row in reversed(rows)]

    async def counts(self, keys: Sequence[CounterKey]) -> dict[CounterKey, int]:
        by_code = {key.encode(): key for key in keys}
        if not by_code:
            return {}
        _, params = counts_statement("postgresql", list(by_code))
        found = counts_from(await self._read(_A_COUNTS, params))
        return {by_code[code]: count for code, count in found.items()}

    async def record(self, record: DecisionRecord) -> list[CounterKey]:
        """Queue the record for this loop's next batch and await its commit (a cancelled
        wait drops the record if its batch has not taken it yet)."""
        here = self._here()
        future: asyncio.Future[list[CounterKey]] = here.loop.create_future()
        here.queued.append((record, future))
        if here.writing is None:
            # Started for the next pass of the loop: records queued in this one join it.
            here.writing = here.loop.create_task(self._write(here))
        return await future

    async def _write(self, here: _LoopConnections) -> None:
        """Commit batches while records are queued: each takes every record queued while
        the last one committed (up to ``MAX_BATCH``). Between batches, fold the offers
        report when the last fold is ``FOLD_SECONDS`` old (``report_fold.py``); when the
        queue runs dry with events unfolded, come back for them that much later."""
        try:
            while True:
                if here.unfolded and here.loop.time() - here.folded_at >= FOLD_SECONDS:
                    await self._fold(here)
                if not here.queued:
                    break
                batch, here.queued = here.queued[:MAX_BATCH], here.queued[MAX_BATCH:]
                batch = [item for item in batch if not item[1].done()]  # not given up
                if batch:
                    await self._commit(here, batch)
        finally:
            here.writing = None
            if here.unfolded and here.fold_due is None and not self._path.closed:
                wait = max(0.0, here.folded_at + FOLD_SECONDS - here.loop.time())
                here.fold_due = here.loop.call_later(wait, self._wake, here)

    def _wake(self, here: _LoopConnections) -> None:
        here.fold_due = None
        if here.writing is None and not self._path.closed:
            here.writing = here.loop.create_task(self._write(here))

    async def _fold(self, here: _LoopConnections) -> None:
        """One fold on the writer's connection. A failure loses nothing: the events stay
        past the watermark for the next fold."""
        here.folded_at = here.loop.time()
        try:
            if here.writer is None or here.writer.is_closed():
                here.writer = await self._open()
            here.unfolded = await fold_postgres_on_loop(here.writer, limit=FOLD_EVENTS)
        except Exception as exc:
            log.error("offers report not folded (the events wait for the next fold): %s", exc)
            if here.writer is not None and here.writer.is_closed():
                here.writer = None

    async def _commit(
        self,
        here: _LoopConnections,
        batch: list[tuple[DecisionRecord, asyncio.Future[list[CounterKey]]]],
    ) -> None:
        try:
            if here.writer is None or here.writer.is_closed():
                here.writer = await self._open()
            outcomes = await self._path._write_batch_on_loop(here.writer, [r for r, _ in batch])
        except Exception as exc:  # every waiting caller hears of it; nothing was written
            error = _translated(exc, "decision records not written")
            if refused_alone(error, len(batch)):
                for item in batch:
                    if not item[1].done():
                        await self._commit(here, [item])
                return
            _NOT_WRITTEN.error("decision records not written (%d): %s", len(batch), error)
            if here.writer is not None and here.writer.is_closed():
                here.writer = None  # the next batch opens another
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():  # given up while its batch was written: it is written
                continue
            if isinstance(outcome, Conflict):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
        here.unfolded = True

    async def _read(self, sql: str, params: Sequence[Any]) -> list[Any]:
        here = self._here()
        async with here.slots:
            conn = here.idle.pop() if here.idle else await self._connect(here)
            try:
                rows: list[Any] = await conn.fetch(sql, *params)
            except Exception as exc:
                if conn.is_closed():  # the server went away: reconnect next time
                    here.opened.remove(conn)
                else:
                    here.idle.append(conn)
                raise _translated(exc, "PostgreSQL read failed") from exc
            here.idle.append(conn)
            return rows

    def _here(self) -> _LoopConnections:
        loop = asyncio.get_running_loop()
        found = self._loops.get(loop)
        if found is None:
            if self._path.closed:
                raise Unavailable("the store is closed")
            for gone in [other for other in self._loops if other.is_closed()]:
                self._close(self._loops.pop(gone))
            found = self._loops[loop] = _LoopConnections(loop)
        return found

    async def _connect(self, here: _LoopConnections) -> asyncpg.Connection:
        conn = await self._open()
        here.opened.append(conn)
        return conn

    async def _open(self) -> asyncpg.Connection:
        try:
            return await asyncpg.connect(self._conninfo, timeout=CONNECT_TIMEOUT)
        except Exception as exc:
            raise _translated(exc, "PostgreSQL unavailable") from exc

    async def aclose(self) -> None:
        """Write what this loop queued, fold, then close its connections."""
        here = self._loops.pop(asyncio.get_running_loop(), None)
        if here is None:
            return
        if here.writing is not None:
            await here.writing
        if here.fold_due is not None:
            here.fold_due.cancel()
            here.fold_due = None
        for conn in here.connections():
            await conn.close()

    def close(self) -> None:
        """Close every loop's connections, from any thread: on a running loop by that loop
        (at once on its own thread), on a closed one by shutting its sockets down."""
        loops, self._loops = self._loops, {}
        for here in loops.values():
            self._close(here)

    @staticmethod
    def _close(here: _LoopConnections) -> None:
        if here.fold_due is not None and not here.loop.is_closed():
            here.fold_due.cancel()
        for conn in here.connections():
            _terminate(here.loop, conn)
        here.opened.clear()
        here.idle.clear()
        here.writer = None


def _terminate(loop: asyncio.AbstractEventLoop, conn: asyncpg.Connection) -> None:
    """Close ``conn`` without waiting, from any thread.

    From another thread, the loop closes it. On the loop's own thread (the app's lifespan
    closing the root) or after the loop ended, nothing will run the transport's callbacks
    before the caller goes on — and the caller may next wait, in this thread, for a lock
    that conn's open transaction holds (the writer thread's final fold) — so the socket is
    shut down at once: the server ends the session and rolls its transaction back."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is not loop and not loop.is_closed():
        loop.call_soon_threadsafe(conn.terminate)
        return
    transport: Any = getattr(conn, "_transport", None)  # not in its public interface
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None:  # through a duplicate: uvloop's transport socket refuses shutdown()
        # A connection the server broke may have no descriptor left to duplicate.
        with suppress(OSError), socket.socket(fileno=os.dup(sock.fileno())) as dup:
            dup.shutdown(socket.SHUT_RDWR)
    if loop.is_closed():
        raw = getattr(transport, "_sock", None)  # asyncio's (uvloop's closes with its loop)
        if raw is not None:
            raw.close()
            transport._sock = None
    with suppress(RuntimeError):  # on a closed loop: marked aborted, then fails to schedule
        conn.terminate()


def _translated(exc: BaseException, what: str) -> NextOfferError:
    """An asyncpg or connection error as the project's (``storage/errors.py``): a value
    the database refuses is :class:`BadRequest`, a lost or refused connection
    :class:`Unavailable`, as psycopg's are."""
    return translated(exc) or Unavailable(what, internal=str(exc))
