"""The decision path on SQLite: driver reads on the caller's thread, records written in
batches (*group commit*).

SQLite has one writer at a time, so a transaction per decision makes every request queue
for the lock and pay a commit. Here reads use plain driver connections (one per thread,
no ORM layer, statements prepared once by the driver), and records are written in
batches, one transaction each: on the event loop's own thread, every record queued during
one pass of the loop; from other threads, by one writer thread per process. A caller's
future resolves only after its batch committed: nothing is acknowledged before it is
durable, and a record's reservation is still all-or-nothing within the batch.

This strategy owns the only use of ``asyncio`` in storage: it asks whether it is called on
a running loop, to batch there (:meth:`SqlitePath.record`).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from collections import namedtuple
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

import orjson

from nextoffer.errors import Conflict, Unavailable
from nextoffer.repository.records import InstanceRecord
from nextoffer.storage import tables
from nextoffer.storage.counters import CounterKey, counter_needs, read_counts
from nextoffer.storage.database import SQLITE_SYNCHRONOUS, WAL_SIZE_LIMIT
from nextoffer.storage.decision_path import DecisionRecord
from nextoffer.storage.errors import translated
from nextoffer.storage.rows import instance_from_row
from nextoffer.storage.store import Store

log = logging.getLogger("nextoffer.storage")

#: Records committed together at most (a batch is whatever queued while the last committed).
MAX_BATCH = 256

_PROFILE = (
    "SELECT p.profile_id, p.attributes FROM profile_identities AS i"
    " JOIN profiles AS p ON p.profile_id = i.profile_id"
    " WHERE i.org_id = ? AND i.sandbox = ? AND i.namespace = ? AND i.identity = ?"
)
_VERSION = "SELECT library_version FROM containers WHERE container_id = ?"
_INSTANCE_COLUMNS: list[str] = [column.name for column in tables.instances.c]
_InstanceRow = namedtuple("_InstanceRow", _INSTANCE_COLUMNS)  # type: ignore[misc]
#: The container's row always (is it this tenant's?), the instance's columns when found.
_INSTANCE = (
    f"SELECT {', '.join('i.' + name for name in _INSTANCE_COLUMNS)} FROM containers AS c"
    " LEFT JOIN instances AS i ON i.container_id = c.container_id AND i.instance_id = ?"
    " WHERE c.container_id = ? AND c.org_id = ? AND c.sandbox = ?"
)
_EVENTS = (
    "SELECT body FROM experience_events WHERE profile_id = ?"
    " ORDER BY timestamp_us DESC, seq DESC LIMIT ?"
)
# A batch reads its keys with one statement whatever their number (a JSON array, as
# above) and writes its rows with ``executemany``: one prepared statement stepped per row
# in the driver's C loop. That is cheaper than unpacking rows from a JSON array, where
# every ``->>`` parses the row again (docs/benchmarks.md, ``bench/decision_path.py``).
# The driver lets go of the interpreter lock around each step; on the loop's thread
# nobody is waiting for it (the writer thread serves only callers off the loop: the CLI
# and tests).
_DUPLICATES = (
    "SELECT proposition_id FROM decision_events"
    " WHERE proposition_id IN (SELECT value FROM json_each(?))"
)
_SET_COUNTS = (
    "INSERT INTO cap_counters (counter_key, container_id, count) VALUES (?, ?, ?)"
    " ON CONFLICT (counter_key) DO UPDATE SET count = excluded.count"
)
_EVENTS_IN = (
    "INSERT INTO decision_events"
    " (proposition_id, container_id, created, created_us, profile_key, body)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
_DAILY_IN = (
    "INSERT INTO offer_daily (container_id, day, offer_id, propositions, impressions, clicks)"
    " VALUES (?, ?, ?, ?, 0, 0) ON CONFLICT (container_id, day, offer_id)"
    " DO UPDATE SET propositions = propositions + excluded.propositions"
)

_Item = tuple[DecisionRecord, "Future[list[CounterKey]]"]


class SqlitePath:
    """Driver connections for reads (one per thread); records group-committed on the event
    loop's thread, or by a writer thread for callers off the loop (:meth:`record`)."""

    #: WAL readers see the last commit without waiting for the writer, and records are
    #: queued, not written: an event loop may call every method itself.
    inline = True

    def __init__(self, store: Store) -> None:
        path = store.sqlite_path
        if path is None:
            raise ValueError("SqlitePath needs a SQLite store")
        self._path = path
        self._store = store
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._loop_batches: dict[asyncio.AbstractEventLoop, list[_Item]] = {}
        self._writer: threading.Thread | None = None
        self._writer_lock = threading.Lock()
        self._closed = False

    # -- reads -----------------------------------------------------------------------

    def profile(
        self, org: str, sandbox: str, namespace: str, identity: str
    ) -> tuple[str, dict[str, Any]] | None:
        row = self._read(_PROFILE, (org, sandbox, namespace, identity)).fetchone()
        return (row[0], orjson.loads(row[1])) if row is not None else None

    def events(self, profile_id: str, *, limit: int) -> list[dict[str, Any]]:
        rows = self._read(_EVENTS, (profile_id, limit)).fetchall()
        return [orjson.loads(row[0]) for row in reversed(rows)]

    def library_version(self, container_id: str) -> int:
        row = self._read(_VERSION, (container_id,)).fetchone()
        return int(row[0] or 0) if row is not None else 0

    def counts(self, keys: Sequence[CounterKey]) -> dict[CounterKey, int]:
        by_code = {key.encode(): key for key in keys}
        found = read_counts(self._read, "sqlite", list(by_code))
        return {by_code[code]: count for code, count in found.items()}

    def instance(
        self, org: str, sandbox: str, container_id: str, instance_id: str
    ) -> tuple[bool, InstanceRecord | None]:
        row = self._read(_INSTANCE, (instance_id, container_id, org, sandbox)).fetchone()
        if row is None:
            return False, None
        return True, instance_from_row(_InstanceRow._make(row)) if row[0] is not None else None

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
        # Autocommit (isolation_level None): a read is its own snapshot, a write batch
        # begins explicitly. check_same_thread is off only so close() can close them all.
        conn = sqlite3.connect(
            self._path, timeout=30, isolation_level=None, check_same_thread=False
        )
        conn.execute(f"PRAGMA synchronous={SQLITE_SYNCHRONOUS}")
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA wal_autocheckpoint=0")  # the store's checkpointer runs them
        conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        return conn

    # -- writes ----------------------------------------------------------------------

    def record(self, record: DecisionRecord) -> Future[list[CounterKey]]:
        """Queue the record for the next batch.

        Called on a running event loop (the decision route), the batch is every record
        queued while the loop ran its ready callbacks, written by the loop's own thread
        right after them. Called elsewhere (a worker thread, the CLI), the batch is written
        by this path's writer thread. The loop writes itself because a writer thread would
        have to win the interpreter lock back from a busy loop after each call into SQLite
        (each time up to the 5 ms switch interval), and it holds the database's write lock
        meanwhile, which showed in decisions' p99 with two workers (docs/benchmarks.md).
        """
        future: Future[list[CounterKey]] = Future()
        if self._closed:
            future.set_exception(Unavailable("the store is closed"))
            return future
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            # Checked and queued under the lock close() takes to queue the writer's stop
            # mark: a record is either refused here or queued before the mark.
            with self._writer_lock:
                if self._closed:
                    future.set_exception(Unavailable("the store is closed"))
                    return future
                self._start_writer()
                self._queue.put((record, future))
            return future
        batch = self._loop_batches.get(loop)
        if batch is None:
            batch = self._loop_batches[loop] = []
            loop.call_soon(self._write_loop_batch, loop)
        batch.append((record, future))
        return future

    def _write_loop_batch(self, loop: asyncio.AbstractEventLoop) -> None:
        batch = self._loop_batches.pop(loop, [])
        try:
            self._commit(self._thread_conn(), batch)
        except Exception as exc:  # every waiting caller hears of it
            self._fail(batch, exc)

    def _start_writer(self) -> None:
        """Start the writer thread (the caller holds ``_writer_lock``)."""
        if self._writer is None:
            self._writer = threading.Thread(
                target=self._write_loop, name="nextoffer-decision-writer", daemon=True
            )
            self._writer.start()

    def _write_loop(self) -> None:
        conn: sqlite3.Connection | None = None
        while True:
            item = self._queue.get()
            if item is None:
                break
            batch = [item]
            stop = False
            while len(batch) < MAX_BATCH:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
            try:
                if conn is None:
                    conn = self._connect(writer=True)
                self._commit(conn, batch)
            except Exception as exc:  # every waiting caller hears of it; the loop goes on
                self._fail(batch, exc)
            if stop:
                break
        if conn is not None:
            conn.close()

    @staticmethod
    def _fail(batch: list[_Item], exc: Exception) -> None:
        error = translated(exc) or exc
        log.error("decision records not written (%d): %s", len(batch), error)
        for _, future in batch:
            if not future.done():
                future.set_exception(error)

    def _commit(self, conn: sqlite3.Connection, batch: list[_Item]) -> None:
        # A caller that gave up before its turn (a cancelled request) is not written.
        batch = [item for item in batch if item[1].set_running_or_notify_cancel()]
        if not batch:
            return
        with self._store.write_lock():
            conn.execute("BEGIN IMMEDIATE")
            try:
                outcomes = self._write_batch(conn, [record for record, _ in batch])
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, Conflict):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    @staticmethod
    def _write_batch(
        conn: sqlite3.Connection, records: list[DecisionRecord]
    ) -> list[list[CounterKey] | Conflict]:
        """Every record of the batch, in order, inside the batch's write transaction.

        The transaction holds SQLite's single write lock, so the counters read here stay as
        read until the commit: each record's reservation is decided against the counts
        left by the records before it, all of its counters or none.
        """
        ids = [r.proposition_id for r in records]
        stored = {row[0] for row in conn.execute(_DUPLICATES, (_json(ids),))}
        needs = [counter_needs(r.reserve) for r in records]
        codes = {key: key.encode() for need in needs for key in need}
        counts: dict[str, int] = dict.fromkeys(codes.values(), 0)
        counts.update(read_counts(conn.execute, "sqlite", list(counts)))
        owners = {code: key.container_id for key, code in codes.items()}
        changed: set[str] = set()
        outcomes: list[list[CounterKey] | Conflict] = []
        events: list[tuple[Any, ...]] = []
        daily: dict[tuple[str, str, str], int] = {}
        for record, need in zip(records, needs, strict=True):
            if record.proposition_id in stored:
                outcomes.append(Conflict(f"decision {record.proposition_id} is already recorded"))
                continue
            full = [k for k, (n, limit) in need.items() if counts[codes[k]] + n > limit]
            if full:
                outcomes.append(full)
                continue
            for key, (n, _) in need.items():
                counts[codes[key]] += n
                changed.add(codes[key])
            stored.add(record.proposition_id)
            events.append(
                (
                    record.proposition_id,
                    record.container_id,
                    record.created,
                    record.created_us,
                    record.profile_key,
                    orjson.dumps(record.body).decode(),
                )
            )
            for offer_id in record.proposed_offers:
                day_key = (record.container_id, record.day, offer_id)
                daily[day_key] = daily.get(day_key, 0) + 1
            outcomes.append([])
        if changed:
            # Rows in key order, as every writer takes them.
            rows = [(code, owners[code], counts[code]) for code in sorted(changed)]
            conn.executemany(_SET_COUNTS, rows)
        if events:
            conn.executemany(_EVENTS_IN, events)
        if daily:
            conn.executemany(_DAILY_IN, [(*k, n) for k, n in sorted(daily.items())])
        return outcomes

    def close(self) -> None:
        with self._writer_lock:
            self._closed = True
            writer = self._writer
            if writer is not None:
                self._queue.put(None)
        if writer is not None:
            writer.join(timeout=30)
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()
