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
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from contextlib import suppress
from typing import Any, TypeVar

import orjson
import psycopg

from nextoffer.errors import Unavailable
from nextoffer.repository.records import InstanceRecord
from nextoffer.storage.counters import CounterKey, read_counts
from nextoffer.storage.decision_path import DecisionRecord
from nextoffer.storage.errors import translated
from nextoffer.storage.group_commit import BatchWriter, Outcome, counter_owners, plan_batch
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
from nextoffer.storage.report_fold import PG_LOCK, fold_postgres
from nextoffer.storage.rows import instance_from_row
from nextoffer.storage.store import Store

#: Seconds to wait for a connection to the server (the store's engine waits as long).
CONNECT_TIMEOUT = 5

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
_LOCK_COUNTERS = (
    "INSERT INTO cap_counters (counter_key, container_id, count)"
    ' SELECT k, c, 0 FROM unnest(%s::text[], %s::text[]) AS v(k, c) ORDER BY k COLLATE "C"'
    " ON CONFLICT (counter_key) DO UPDATE SET count = cap_counters.count"
    " RETURNING counter_key, count"
)

T = TypeVar("T")


class PgPath:
    """Driver connections for reads (one per thread); records group-committed by a writer
    thread."""

    #: Every read is a round trip to the server: calls belong in a worker thread.
    inline = False

    def __init__(self, store: Store) -> None:
        if store.dialect != "postgresql":
            raise ValueError("PgPath needs a PostgreSQL store")
        self._conninfo = store.engine.url.set(drivername="postgresql").render_as_string(
            hide_password=False
        )
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
        try:
            return psycopg.connect(
                self._conninfo, autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT
            )
        except psycopg.Error as exc:
            raise translated(exc) or exc from exc

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
        (psycopg pipelines them), then the commit. Any error rolls all of it back."""
        try:
            ids = [r.proposition_id for r in records]
            found = conn.execute(_DUPLICATES, (ids,)).fetchone()
            stored = set(found[1]) if found is not None else set()
            owners = counter_owners(records)
            counts: dict[str, int] = {}
            if owners:
                locked = conn.execute(_LOCK_COUNTERS, (list(owners), list(owners.values())))
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
