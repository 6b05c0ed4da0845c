"""The ledger of a Spark job's decisions: a row per decided profile, written in the same
transaction as its reservations, so that each profile's reservations count once however
many attempts of its task decided it (:class:`DecisionLedger`; docs/batch.md).

Its own transaction around the decision path's pieces (``group_commit.plan_batch`` and
``BatchWriter``, the paths' connections and counter statements): a batch decision writes
no event, and the ledger's reads and releases belong to batch jobs alone. The rows are
deleted by ``BatchTables.forget_decisions`` when the run ends.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from contextlib import suppress
from typing import Any, NamedTuple

import orjson

from nextoffer.errors import Conflict
from nextoffer.storage import sqlite_path
from nextoffer.storage.counters import CounterKey, counter_needs, read_counts
from nextoffer.storage.decision_path import DecisionRecord
from nextoffer.storage.group_commit import BatchWriter, Outcome, counter_owners, plan_batch
from nextoffer.storage.path_sql import DAILY_IN, SET_COUNTS, on_postgres

#: The ledger rows of a batch's profiles, locked on PostgreSQL (a later attempt's
#: transaction waits for an earlier one still writing the same profile).
_LEDGER_READ = {
    "sqlite": "SELECT profile_id, attempt, day, offers, reserved FROM batch_decisions"
    " WHERE job_id = ? AND profile_id IN (SELECT value FROM json_each(?))",
    "postgresql": "SELECT profile_id, attempt, day, offers, reserved FROM batch_decisions"
    " WHERE job_id = %s AND profile_id = ANY(%s) FOR UPDATE",
}
#: A profile's first row: a plain insert, so two attempts writing it at once (a zombie
#: executor) cannot both count: the second's transaction fails whole.
_LEDGER_IN = (
    "INSERT INTO batch_decisions (attempt, day, offers, reserved, job_id, profile_id)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
_LEDGER_SET = (
    "UPDATE batch_decisions SET attempt = ?, day = ?, offers = ?, reserved = ?"
    " WHERE job_id = ? AND profile_id = ?"
)
_LEDGER_OUT = "DELETE FROM batch_decisions WHERE job_id = ? AND profile_id = ?"


class _Prior(NamedTuple):
    """A profile's decision the ledger holds: which attempt, what it reported and
    reserved."""

    attempt: str
    day: str
    offers: list[str]
    reserved: list[tuple[str, int]]


class DecisionLedger:
    """One Spark job's decisions, recorded with a ledger row per profile in the same
    transaction as their reservations, so that every profile's reservations count once
    however many task attempts decided it.

    A task attempted again (its executor lost, its Python worker killed) decides its
    partition again from its first profile. Its record of a profile an earlier attempt
    committed *supersedes* that one, in one transaction: the earlier reservations are
    released (the counters less what it took, the offers report less what it proposed),
    then the new record is planned as any other (``group_commit.plan_batch``: all of its
    counters or none, against the counts left), and the ledger row names the new attempt
    (a refused record leaves no row: the earlier one is released, and the profile's next
    record is decided on the counts left). A failed attempt's output is never published,
    so the counters then hold exactly what the published rows received. A record of an
    attempt older than the row's (a zombie executor still writing) is refused with
    :class:`Conflict`: the newer attempt's decision stands.

    Attempts are ordered by :attr:`attempt`, a string that sorts later for a later one
    (the run's start, then Spark's task attempt id: ``spark.py``); each record takes the
    value current when it is handed over. Counters in the database only: with Redis
    counters a reservation commits in Redis before the record's transaction, and nothing
    here could release it exactly once (docs/batch.md).

    Records are written by a writer thread of its own (``group_commit.BatchWriter``), on
    a driver connection like the decision path's: a batch decision writes no decision
    event, only counters, the report's increments and this row."""

    def __init__(self, store: Any, job_id: str, container_id: str) -> None:
        self._store = store
        self._job_id = job_id
        self._container_id = container_id
        self._dialect = "sqlite" if store.sqlite_path else "postgresql"
        #: The attempt records handed over now are written for.
        self.attempt = ""
        #: Each handed-over record's attempt until it is written, by proposition id.
        self._attempts: dict[str, str] = {}
        self._lock = threading.Lock()
        self._writer: BatchWriter[Any] = BatchWriter(self._connect, self._write, _close)

    def record_many(self, items: Sequence[tuple[DecisionRecord, Future[list[CounterKey]]]]) -> None:
        """Queue records (each with the future its caller made) for the writer, as
        :attr:`attempt`'s."""
        with self._lock:
            for record, _ in items:
                if record.body is not None:  # it writes no event (see the class)
                    raise ValueError("the ledger records batch decisions only (no event)")
                self._attempts[record.proposition_id] = self.attempt
        self._writer.put_many(items)

    def close(self) -> None:
        """Write what is queued, then close the connection."""
        self._writer.close()

    def _connect(self) -> Any:
        """A driver connection as the decision path's writer makes."""
        if self._dialect == "sqlite":
            return sqlite_path.connect(self._store.sqlite_path)
        from nextoffer.storage import pg_path  # psycopg: only where PostgreSQL is used

        return pg_path.connect(pg_path.conninfo(self._store.engine.url), autocommit=False)

    def _write(self, conn: Any, records: list[DecisionRecord]) -> list[Outcome]:
        """One batch in one transaction: SQLite's write lock held from its start,
        PostgreSQL's ledger rows and counters locked (in that order) before they are read."""
        with self._lock:
            attempts = [self._attempts.pop(r.proposition_id, self.attempt) for r in records]
        if self._dialect == "sqlite":
            with self._store.write_lock():
                conn.execute("BEGIN IMMEDIATE")
                try:
                    outcomes = self._transaction(conn.execute, conn.executemany, records, attempts)
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            return outcomes
        try:
            with conn.cursor() as cursor:
                outcomes = self._transaction(
                    conn.execute, cursor.executemany, records, attempts, postgres=True
                )
            conn.commit()
        except BaseException:
            with suppress(Exception):  # a broken connection is closed by the writer
                conn.rollback()
            raise
        return outcomes

    def _transaction(
        self,
        execute: Callable[..., Any],
        executemany: Callable[..., Any],
        records: list[DecisionRecord],
        attempts: list[str],
        *,
        postgres: bool = False,
    ) -> list[Outcome]:
        """The batch's statements (see the class): read the ledger rows of its profiles,
        release what the superseded ones reserved, plan the records, write."""
        sql = on_postgres if postgres else _same
        profiles = [r.profile_key for r in records]
        keys = profiles if postgres else sqlite_path.json_text(profiles)
        found = execute(_LEDGER_READ[self._dialect], (self._job_id, keys))
        prior = {row[0]: _prior(row) for row in found}
        fresh: list[DecisionRecord] = []
        fresh_attempts: list[str] = []
        stale: dict[int, Outcome] = {}
        released: dict[str, int] = {}
        daily: dict[tuple[str, str, str], int] = {}
        superseded: set[str] = set()
        for i, (record, attempt) in enumerate(zip(records, attempts, strict=True)):
            old = prior.get(record.profile_key)
            if old is not None and old.attempt > attempt:
                stale[i] = Conflict(
                    f"profile {record.profile_key} of batch job {self._job_id} was decided"
                    " by a later attempt of its Spark task"
                )
                continue
            fresh.append(record)
            fresh_attempts.append(attempt)
            if old is not None and record.profile_key not in superseded:
                superseded.add(record.profile_key)
                for code, n in old.reserved:
                    released[code] = released.get(code, 0) + n
                for offer_id in old.offers:
                    key = (self._container_id, old.day, offer_id)
                    daily[key] = daily.get(key, 0) - 1
        owners = counter_owners(fresh)
        codes = sorted({*owners, *released})
        counts = self._counts(execute, codes, owners, postgres=postgres)
        for code, n in released.items():
            counts[code] = max(0, counts.get(code, 0) - n)
        plan = plan_batch(fresh, set(), counts, owners)
        rows = {code: (container, count) for code, container, count in plan.counters}
        for code in released:
            rows.setdefault(code, (self._container_id, counts[code]))
        for container, day, offer_id, n in plan.daily:
            daily[(container, day, offer_id)] = daily.get((container, day, offer_id), 0) + n
        added: list[tuple[str, ...]] = []
        replaced: list[tuple[str, ...]] = []
        dropped = []
        for record, attempt, outcome in zip(fresh, fresh_attempts, plan.outcomes, strict=True):
            if outcome == []:
                reserved = [(key.code, n) for key, (n, _) in counter_needs(record.reserve).items()]
                row = (
                    attempt,
                    record.day,
                    sqlite_path.json_text(list(record.proposed_offers)),
                    sqlite_path.json_text(reserved),
                    self._job_id,
                    record.profile_key,
                )
                (replaced if record.profile_key in prior else added).append(row)
            elif record.profile_key in superseded:
                dropped.append((self._job_id, record.profile_key))
        if rows:
            executemany(sql(SET_COUNTS), [(code, c, n) for code, (c, n) in sorted(rows.items())])
        changes = [(*key, n) for key, n in sorted(daily.items()) if n]
        if changes:
            executemany(sql(DAILY_IN), changes)
        if added:
            executemany(sql(_LEDGER_IN), added)
        if replaced:
            executemany(sql(_LEDGER_SET), replaced)
        if dropped:
            executemany(sql(_LEDGER_OUT), dropped)
        outcomes = iter(plan.outcomes)
        return [stale[i] if i in stale else next(outcomes) for i in range(len(records))]

    def _counts(
        self,
        execute: Callable[..., Any],
        codes: list[str],
        owners: dict[str, str],
        *,
        postgres: bool,
    ) -> dict[str, int]:
        """The counters' counts; on PostgreSQL created at 0 when missing and locked, in
        key order (as the decision path locks them)."""
        if not codes:
            return {}
        if not postgres:
            return read_counts(execute, "sqlite", codes)
        from nextoffer.storage.pg_path import LOCK_COUNTERS  # as in _connect

        containers = [owners.get(code, self._container_id) for code in codes]
        return {code: int(n) for code, n in execute(LOCK_COUNTERS, (codes, containers))}


def _prior(row: Any) -> _Prior:
    return _Prior(
        row[1], row[2], orjson.loads(row[3]), [(code, n) for code, n in orjson.loads(row[4])]
    )


def _same(sql: str) -> str:
    return sql


def _close(conn: Any) -> None:
    conn.close()
