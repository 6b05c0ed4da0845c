"""The ledger of a Spark job's decisions: a row per decided profile, written in the same
transaction as its reservations, so that each profile's reservations count once however
many attempts of its task decided it (:class:`DecisionLedger`; docs/batch.md).

Its own transaction around the decision path's pieces (``group_commit.plan_batch`` and
``BatchWriter``, the paths' connections and counter statements): a batch decision writes
no event, and the ledger's reads and releases belong to batch jobs alone. The rows are
deleted by ``BatchTables.forget_decisions`` when the run ends. With Redis counters the
reservations are Redis's, in a ledger of their own there (``redis_ledger.py``), and this
one writes the rest (:class:`DecisionLedger`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from contextlib import suppress
from dataclasses import replace
from typing import Any, NamedTuple, Protocol

import orjson

from nextoffer.errors import Conflict
from nextoffer.storage import sqlite_path
from nextoffer.storage.counters import CounterKey, counter_needs, read_counts
from nextoffer.storage.decision_path import DecisionRecord
from nextoffer.storage.group_commit import BatchWriter, Outcome, counter_owners, plan_batch
from nextoffer.storage.path_sql import DAILY_IN, SET_COUNTS, on_postgres
from nextoffer.storage.rows import json_text

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


class CountersLedger(Protocol):
    """Where a job's counters are reserved when they are not the database's: reserves
    records as their attempts', releasing what an earlier attempt of each profile
    reserved (``redis_ledger.RedisLedger``)."""

    def reserve(self, records: Sequence[DecisionRecord], attempts: Sequence[str]) -> list[Outcome]:
        """Each record's outcome: ``[]`` reserved, the counters without room, or
        :class:`Conflict` when a later attempt holds the profile."""
        ...


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
    value current when it is handed over.

    **Counters elsewhere** (``counters``: Redis). A reservation there commits before the
    record's transaction, and only a step in Redis can release it exactly once; so Redis
    keeps the job's ledger of reservations (``redis_ledger.py``: the same rule, a later
    attempt releases the field's reservation as it takes its own, an older one is
    refused) and this writer, per batch, first reserves there, then writes the rest in
    one transaction, counters left out: the offers report and the rows, which supersede
    as above (the report's increments of an earlier attempt taken back). A record Redis
    refused for want of room takes back the earlier attempt's report and leaves a row that
    names its attempt with nothing, as Redis's field does. Each window ends with the
    counters and the report equal to the published rows:

    * a worker killed between Redis's step and the commit leaves Redis counting its
      record, the database not: its task failed, and the retry's record of the profile
      releases it in Redis and supersedes the older row (or none) here;
    * the commit failing (the database away), or Redis's answer lost on the way, fails
      the records; each is decided again in the same attempt, and that record supersedes
      the failed one in Redis as a later attempt's would (an attempt may supersede
      itself);
    * a zombie older attempt whose Redis step came first: the retry's released it there;
      its commit, landing before the retry's, is superseded by it; landing after, it
      finds the retry's row and is refused (Redis's order and the database's agree: an
      attempt's Redis step precedes its commit, so a later row here means its Redis step
      superseded the zombie's);
    * a zombie whose Redis step comes after the retry's is refused there and never
      reaches the database.

    Records are written by a writer thread of its own (``group_commit.BatchWriter``), on
    a driver connection like the decision path's: a batch decision writes no decision
    event, only counters (or none, with Redis), the report's increments and this row."""

    def __init__(
        self, store: Any, job_id: str, container_id: str, counters: CountersLedger | None = None
    ) -> None:
        self._store = store
        self._counters = counters
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
        # Reserved in Redis first (its answer decides what the transaction writes), and
        # outside SQLite's write lock: no online writer waits for a Redis round trip.
        held = self._counters.reserve(records, attempts) if self._counters is not None else None
        if self._dialect == "sqlite":
            with self._store.write_lock():
                conn.execute("BEGIN IMMEDIATE")
                try:
                    outcomes = self._transaction(
                        conn.execute, conn.executemany, records, attempts, held
                    )
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            return outcomes
        try:
            with conn.cursor() as cursor:
                outcomes = self._transaction(
                    conn.execute, cursor.executemany, records, attempts, held, postgres=True
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
        held: list[Outcome] | None = None,
        *,
        postgres: bool = False,
    ) -> list[Outcome]:
        """The batch's statements (see the class): read the ledger rows of its profiles,
        release what the superseded ones reserved, plan the records, write. ``held``: the
        records' reservations in Redis, made already (their counters are left out here)."""
        sql = on_postgres if postgres else _same
        profiles = [r.profile_key for r in records]
        keys = profiles if postgres else json_text(profiles)
        found = execute(_LEDGER_READ[self._dialect], (self._job_id, keys))
        prior = {row[0]: _prior(row) for row in found}
        fresh: list[DecisionRecord] = []
        fresh_attempts: list[str] = []
        settled: dict[int, Outcome] = {}
        released: dict[str, int] = {}
        daily: dict[tuple[str, str, str], int] = {}
        superseded: set[str] = set()
        added: list[tuple[str, ...]] = []
        replaced: list[tuple[str, ...]] = []
        for i, (record, attempt) in enumerate(zip(records, attempts, strict=True)):
            old = prior.get(record.profile_key)
            if held is not None and isinstance(held[i], Conflict):
                settled[i] = held[i]  # a later attempt holds it in Redis: nothing changed
                continue
            if old is not None and old.attempt > attempt:
                settled[i] = Conflict(
                    f"profile {record.profile_key} of batch job {self._job_id} was decided"
                    " by a later attempt of its Spark task"
                )
                continue
            if old is not None and record.profile_key not in superseded:
                superseded.add(record.profile_key)
                for code, n in old.reserved:
                    released[code] = released.get(code, 0) + n
                for offer_id in old.offers:
                    key = (self._container_id, old.day, offer_id)
                    daily[key] = daily.get(key, 0) - 1
            if held is not None:
                if held[i]:
                    # Refused in Redis, where the earlier reservation was released: its
                    # report goes too, and the row names this attempt with nothing (as
                    # the field does), so an older one cannot write the profile after.
                    settled[i] = held[i]
                    row = (attempt, record.day, "[]", "[]", self._job_id, record.profile_key)
                    (replaced if record.profile_key in prior else added).append(row)
                    continue
                record = replace(record, reserve=())
            fresh.append(record)
            fresh_attempts.append(attempt)
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
        dropped = []
        for record, attempt, outcome in zip(fresh, fresh_attempts, plan.outcomes, strict=True):
            if outcome == []:
                reserved = [(key.code, n) for key, (n, _) in counter_needs(record.reserve).items()]
                row = (
                    attempt,
                    record.day,
                    json_text(list(record.proposed_offers)),
                    json_text(reserved),
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
        return [settled[i] if i in settled else next(outcomes) for i in range(len(records))]

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
