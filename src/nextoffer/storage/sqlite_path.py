"""The decision path on SQLite: driver reads on the caller's thread, records written in
batches (*group commit*).

SQLite has one writer at a time, so a transaction per decision makes every request queue
for the lock and pay a commit. Here reads use plain driver connections (one per thread,
no ORM layer, statements prepared once by the driver), and records are written in
batches, one transaction each: on the event loop's own thread, every record queued during
one pass of the loop; from other threads, by one writer thread per process. A caller's
future resolves only after its batch committed: nothing is acknowledged before it is
durable, and a record's reservation is still all-or-nothing within the batch.

A record writes its reservations and its decision event; the offers report is folded from
the events (``report_fold.py``) on the writer's own turn, never in a thread of its own: on
the loop, a fold :data:`~nextoffer.storage.report_fold.FOLD_SECONDS` after a batch left
events unfolded, between batches, on the loop's connection; on the writer thread, between
its batches (``group_commit.BatchWriter``).

This strategy owns the only use of ``asyncio`` in storage: it asks whether it is called on
a running loop, to batch there (:meth:`SqlitePath.record`).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

import orjson

from nextoffer.errors import Unavailable
from nextoffer.repository.records import InstanceRecord
from nextoffer.settings import sqlite_synchronous
from nextoffer.storage.counters import CounterKey, read_counts
from nextoffer.storage.database import WAL_SIZE_LIMIT
from nextoffer.storage.decision_path import DecisionRecord, OnLoop, Pending
from nextoffer.storage.errors import translated
from nextoffer.storage.group_commit import (
    BatchWriter,
    Item,
    Outcome,
    commit_batch,
    counter_owners,
    plan_batch,
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
)
from nextoffer.storage.report_fold import FOLD_EVENTS, FOLD_SECONDS, fold_sqlite, unfolded_sqlite
from nextoffer.storage.rows import instance_from_row, json_text
from nextoffer.storage.store import Store

log = logging.getLogger("nextoffer.storage")

# A batch reads its keys with one statement whatever their number (a JSON array) and
# writes its rows with ``executemany``: one prepared statement stepped per row in the
# driver's C loop. That is cheaper than unpacking rows from a JSON array, where every
# ``->>`` parses the row again (docs/benchmarks.md, ``bench/decision_path.py``). The
# driver lets go of the interpreter lock around each step; on the loop's thread nobody is
# waiting for it (the writer thread serves only callers off the loop: the CLI and tests).
_DUPLICATES = (
    "SELECT proposition_id FROM decision_events"
    " WHERE proposition_id IN (SELECT value FROM json_each(?))"
)


def connect(path: str) -> sqlite3.Connection:
    """A driver connection to the SQLite file at ``path`` as the decision path's are
    (``storage/batch.py``'s ledger writes through one too). Autocommit (isolation_level
    None): a read is its own snapshot, a write batch begins explicitly. check_same_thread
    is off only so a closing path can close them all."""
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA synchronous={sqlite_synchronous()}")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA wal_autocheckpoint=0")  # the store's checkpointer runs them
    conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
    return conn


class SqlitePath:
    """Driver connections for reads (one per thread); records group-committed on the event
    loop's thread, or by a writer thread for callers off the loop (:meth:`record`)."""

    #: WAL readers see the last commit without waiting for the writer, and records are
    #: queued, not written: an event loop may call every method itself.
    inline = True
    #: Nothing to await: an event loop calls the methods above itself.
    on_loop: OnLoop | None = None

    def __init__(self, store: Store) -> None:
        path = store.sqlite_path
        if path is None:
            raise ValueError("SqlitePath needs a SQLite store")
        self._path = path
        self._store = store
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._loop_batches: dict[asyncio.AbstractEventLoop, list[Item]] = {}
        self._loop_folds: dict[asyncio.AbstractEventLoop, asyncio.Handle] = {}
        self._writer = BatchWriter(
            lambda: self._connect(writer=True),
            self._commit,
            sqlite3.Connection.close,
            self._fold,
        )
        self._closed = False

    # -- reads -----------------------------------------------------------------------

    def profile(
        self, org: str, sandbox: str, namespace: str, identity: str
    ) -> tuple[str, dict[str, Any]] | None:
        row = self._read(PROFILE, (org, sandbox, namespace, identity)).fetchone()
        return (row[0], orjson.loads(row[1])) if row is not None else None

    def events(self, profile_id: str, *, limit: int) -> list[dict[str, Any]]:
        rows = self._read(EVENTS, (profile_id, limit)).fetchall()
        return [orjson.loads(row[0]) for row in reversed(rows)]

    def library_version(self, container_id: str) -> int:
        row = self._read(VERSION, (container_id,)).fetchone()
        return int(row[0] or 0) if row is not None else 0

    def counts(self, keys: Sequence[CounterKey]) -> dict[CounterKey, int]:
        by_code = {key.encode(): key for key in keys}
        found = read_counts(self._read, "sqlite", list(by_code))
        return {by_code[code]: count for code, count in found.items()}

    def instance(
        self, org: str, sandbox: str, container_id: str, instance_id: str, *, by_at_id: bool = False
    ) -> tuple[bool, InstanceRecord | None]:
        sql = INSTANCE_BY_AT_ID if by_at_id else INSTANCE
        row = self._read(sql, (instance_id, container_id, org, sandbox)).fetchone()
        if row is None:
            return False, None
        return True, instance_from_row(InstanceRow._make(row)) if row[0] is not None else None

    def _read(self, sql: str, params: Sequence[Any]) -> sqlite3.Cursor:
        try:
            return self._thread_conn().execute(sql, params)
        except sqlite3.Error as exc:
            raise translated(exc) or exc from exc

    def _thread_conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def _connect(self, *, writer: bool = False) -> sqlite3.Connection:
        # The writer thread connects even after close() began: it still owes the records
        # queued before the stop mark.
        if self._closed and not writer:
            raise Unavailable("the store is closed")
        return connect(self._path)

    # -- writes ----------------------------------------------------------------------

    def record(self, record: DecisionRecord) -> Pending:
        """Queue the record for the next batch.

        Called on a running event loop (the decision route), the batch is every record
        queued while the loop ran its ready callbacks, written by the loop's own thread
        right after them. Called elsewhere (a worker thread, the CLI), the batch is written
        by this path's writer thread. The loop writes itself because a writer thread would
        have to win the interpreter lock back from a busy loop after each call into SQLite
        (each time up to the 5 ms switch interval), and it holds the database's write lock
        meanwhile, which showed in decisions' p99 with two workers (docs/benchmarks.md).
        """
        if self._closed:
            future: Future[list[CounterKey]] = Future()
            future.set_exception(Unavailable("the store is closed"))
            return future
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return self._writer.put(record)
        # The loop's own future: created, resolved (by the batch, on this thread) and
        # awaited on the loop, without the lock a thread-safe future takes at every step.
        waiting: asyncio.Future[list[CounterKey]] = loop.create_future()
        batch = self._loop_batches.get(loop)
        if batch is None:
            batch = self._loop_batches[loop] = []
            loop.call_soon(self._write_loop_batch, loop)
        batch.append((record, waiting))
        return waiting

    def _write_loop_batch(self, loop: asyncio.AbstractEventLoop) -> None:
        batch = self._loop_batches.pop(loop, [])
        committed = commit_batch(batch, lambda records: self._commit(self._thread_conn(), records))
        if committed and loop not in self._loop_folds:
            # The answers go out first (their tasks were woken before this is due).
            self._loop_folds[loop] = loop.call_later(FOLD_SECONDS, self._loop_fold, loop)

    def _loop_fold(self, loop: asyncio.AbstractEventLoop) -> None:
        """One fold on the loop's turn, on its connection; a backlog goes on at the next
        turn (a fold holds the write lock the other worker's batches wait for)."""
        del self._loop_folds[loop]
        if self._closed:
            return
        try:
            more = self._fold(self._thread_conn(), FOLD_EVENTS)
        except Exception as exc:
            log.error("offers report not folded (the events wait for the next fold): %s", exc)
            self._loop_folds[loop] = loop.call_later(FOLD_SECONDS, self._loop_fold, loop)
            return
        if more:
            self._loop_folds[loop] = loop.call_soon(self._loop_fold, loop)

    def _fold(self, conn: sqlite3.Connection, limit: int | None) -> bool:
        """Fold the report on ``conn`` (``report_fold.fold_sqlite``) if some event waits,
        in a write transaction; returns whether events remain."""
        try:
            if not unfolded_sqlite(conn):  # no write lock for nothing
                return False
            with self._store.write_lock():
                conn.execute("BEGIN IMMEDIATE")
                try:
                    more = fold_sqlite(conn, limit=limit)
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            raise translated(exc) or exc from exc
        return more

    def fold(self) -> None:
        """Fold every event recorded so far into the offers report, on the caller's
        thread (a report read does, so it counts every decision recorded before it)."""
        self._fold(self._thread_conn(), None)

    def _commit(self, conn: sqlite3.Connection, records: list[DecisionRecord]) -> list[Outcome]:
        with self._store.write_lock():
            try:
                return self._transaction(conn, records, look_up_ids=False)
            except _StoredAlready:  # a proposition id of the batch is stored: look them up
                return self._transaction(conn, records, look_up_ids=True)

    def _transaction(
        self, conn: sqlite3.Connection, records: list[DecisionRecord], *, look_up_ids: bool
    ) -> list[Outcome]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            outcomes = self._write_batch(conn, records, look_up_ids=look_up_ids)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return outcomes

    @staticmethod
    def _write_batch(
        conn: sqlite3.Connection, records: list[DecisionRecord], *, look_up_ids: bool
    ) -> list[Outcome]:
        """The batch inside its write transaction (``group_commit.plan_batch``). The
        transaction holds SQLite's single write lock, so the counters read here stay as
        read until the commit.

        A proposition id is new but for a retry of a record already written: unless
        ``look_up_ids`` (or a record writes no event, which no key would catch), the
        batch is planned as if none were stored, and the events' unique key finds one
        that is (:class:`_StoredAlready`: :meth:`_commit` rolls the transaction back and
        writes the batch again, its ids looked up). That saves the look-up's statement on
        every batch."""
        looked_up = look_up_ids or any(r.body is None for r in records)
        stored: set[str] = set()
        if looked_up:
            ids = [r.proposition_id for r in records]
            stored = {row[0] for row in conn.execute(_DUPLICATES, (json_text(ids),))}
        owners = counter_owners(records)
        counts = read_counts(conn.execute, "sqlite", list(owners))
        plan = plan_batch(records, stored, counts, owners)
        if plan.counters:
            conn.executemany(SET_COUNTS, plan.counters)
        if plan.events:
            try:
                conn.executemany(EVENTS_IN, plan.events)
            except sqlite3.IntegrityError as exc:
                if looked_up:
                    raise
                raise _StoredAlready from exc
        if plan.daily:
            conn.executemany(DAILY_IN, plan.daily)
        return plan.outcomes

    def record_many(self, items: Sequence[tuple[DecisionRecord, Future[list[CounterKey]]]]) -> None:
        """Queue records with the caller's futures for the writer thread, in one hand-off."""
        self._writer.put_many(items)

    def close(self) -> None:
        self._closed = True
        self._writer.close()
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()


class _StoredAlready(Exception):
    """A batch written without looking its proposition ids up holds one already stored."""
