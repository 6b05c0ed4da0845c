"""Batch decisioning's records in SQL: segment definitions, output datasets, batch jobs,
and the scan of a tenant's profiles in key order that every batch engine reads.

Used through ``Session.batch`` inside the service's transaction. A job's status changes
by compare-and-set (:meth:`BatchTables.move_job`): two processes never both start, or
both finish, the same job.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson
from sqlalchemy import Connection, delete, func, insert, select, text, update

from nextoffer.errors import Conflict
from nextoffer.storage import tables as t
from nextoffer.storage.errors import translated
from nextoffer.storage.locks import Lock, locked
from nextoffer.storage.path_sql import DAILY_IN, SET_COUNTS, on_postgres

if TYPE_CHECKING:
    # The session imports this module (``BatchTables``) and the decision path's modules
    # import the session: :class:`DecisionLedger` imports them where it uses them.
    from concurrent.futures import Future

    from nextoffer.storage.counters import CounterKey
    from nextoffer.storage.decision_path import DecisionRecord
    from nextoffer.storage.group_commit import Outcome

#: PostgreSQL's advisory lock (transaction-scoped) that dataset creations take to check
#: and record a location as one step (:meth:`BatchTables.dataset_locations`).
LOCATIONS_LOCK = 0x6E786473  # "nxds"


@dataclass(frozen=True, slots=True)
class SegmentRecord:
    segment_id: str
    org_id: str
    sandbox: str
    name: str
    body: dict[str, Any]
    created_ms: int
    modified_ms: int


@dataclass(frozen=True, slots=True)
class DatasetRecord:
    dataset_id: str
    org_id: str
    sandbox: str
    name: str
    location: str
    created_ms: int


@dataclass(frozen=True, slots=True)
class JobRecord:
    job_id: str
    org_id: str
    sandbox: str
    container_id: str
    dataset_id: str
    segment_id: str
    engine: str
    status: str
    request: dict[str, Any]
    detail: dict[str, Any]
    created_ms: int
    updated_ms: int
    heartbeat_ms: int | None
    owner: str | None


#: One profile as a batch reads it: id, first identity (namespace, id; ``None`` when it
#: has none), attributes (JSON text).
ProfileRow = tuple[str, str | None, str | None, str]


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _segment(row: Any) -> SegmentRecord:
    return SegmentRecord(
        row.segment_id,
        row.org_id,
        row.sandbox,
        row.name,
        orjson.loads(row.body),
        row.created_ms,
        row.modified_ms,
    )


def _dataset(row: Any) -> DatasetRecord:
    return DatasetRecord(
        row.dataset_id, row.org_id, row.sandbox, row.name, row.location, row.created_ms
    )


def _job(row: Any) -> JobRecord:
    return JobRecord(
        row.job_id,
        row.org_id,
        row.sandbox,
        row.container_id,
        row.dataset_id,
        row.segment_id,
        row.engine,
        row.status,
        orjson.loads(row.request),
        orjson.loads(row.detail),
        row.created_ms,
        row.updated_ms,
        row.heartbeat_ms,
        row.owner,
    )


_ns = t.profile_identities.alias("ns")
_FIRST_IDENTITY = (
    select(_ns.c.namespace, _ns.c.identity)
    .where(_ns.c.profile_id == t.profiles.c.profile_id)
    .order_by(_ns.c.namespace, _ns.c.identity)
    .limit(1)
)


class BatchTables:
    """Reads and writes of the batch tables on one connection (one transaction)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    # -- segment definitions -----------------------------------------------------------

    def insert_segment(self, record: SegmentRecord) -> None:
        self.conn.execute(
            insert(t.segment_definitions).values(
                segment_id=record.segment_id,
                org_id=record.org_id,
                sandbox=record.sandbox,
                name=record.name,
                body=_dumps(record.body),
                created_ms=record.created_ms,
                modified_ms=record.modified_ms,
            )
        )

    def get_segment(
        self, org: str, sandbox: str, segment_id: str, *, lock: Lock = None
    ) -> SegmentRecord | None:
        """The tenant's segment definition; ``lock`` holds its row to the commit
        (``locks.py``)."""
        c = t.segment_definitions.c
        query = select(t.segment_definitions).where(
            c.segment_id == segment_id, c.org_id == org, c.sandbox == sandbox
        )
        row = self.conn.execute(locked(query, lock)).first()
        return _segment(row) if row is not None else None

    def list_segments(
        self, org: str, sandbox: str, *, offset: int, limit: int
    ) -> tuple[list[SegmentRecord], int]:
        c = t.segment_definitions.c
        where = (c.org_id == org, c.sandbox == sandbox)
        total = self.conn.execute(
            select(func.count()).select_from(t.segment_definitions).where(*where)
        ).scalar_one()
        rows = self.conn.execute(
            select(t.segment_definitions)
            .where(*where)
            .order_by(c.created_ms, c.segment_id)
            .offset(offset)
            .limit(limit)
        )
        return [_segment(row) for row in rows], int(total)

    def segment_expressions(self, org: str, sandbox: str) -> dict[str, str]:
        """Every segment definition of the tenant: id -> its PQL text."""
        c = t.segment_definitions.c
        rows = self.conn.execute(
            select(c.segment_id, c.body).where(c.org_id == org, c.sandbox == sandbox)
        )
        return {row.segment_id: orjson.loads(row.body)["expression"]["value"] for row in rows}

    def update_segment(self, record: SegmentRecord) -> None:
        self.conn.execute(
            update(t.segment_definitions)
            .where(t.segment_definitions.c.segment_id == record.segment_id)
            .values(name=record.name, body=_dumps(record.body), modified_ms=record.modified_ms)
        )

    def delete_segment(self, segment_id: str) -> None:
        self.conn.execute(
            delete(t.segment_definitions).where(t.segment_definitions.c.segment_id == segment_id)
        )

    # -- datasets ----------------------------------------------------------------------

    def insert_dataset(self, record: DatasetRecord) -> None:
        self.conn.execute(
            insert(t.datasets).values(
                dataset_id=record.dataset_id,
                org_id=record.org_id,
                sandbox=record.sandbox,
                name=record.name,
                location=record.location,
                created_ms=record.created_ms,
            )
        )

    def get_dataset(self, org: str, sandbox: str, dataset_id: str) -> DatasetRecord | None:
        c = t.datasets.c
        row = self.conn.execute(
            select(t.datasets).where(
                c.dataset_id == dataset_id, c.org_id == org, c.sandbox == sandbox
            )
        ).first()
        return _dataset(row) if row is not None else None

    def lock_datasets(self, dataset_ids: Sequence[str]) -> None:
        """Hold these datasets' rows to the commit, in id order: runners claiming jobs of
        a dataset count its running jobs one after the other (``"no key update"``: the
        datasets' other readers pass)."""
        c = t.datasets.c
        for dataset_id in sorted(set(dataset_ids)):
            self.conn.execute(
                locked(select(c.dataset_id).where(c.dataset_id == dataset_id), "no key update")
            ).first()

    def dataset_locations(self, *, lock: bool = False) -> list[str]:
        """Every dataset's location, of every tenant (a new one must not overlap them).

        ``lock`` (in a write session, before the new dataset is inserted) makes the check
        and the insert one step: no other dataset is recorded between them, or two created
        at once on one folder would both find it free. A new row has nothing to lock, so
        on PostgreSQL every such reader takes one transaction-scoped advisory lock
        (:data:`LOCATIONS_LOCK`) and the next waits for the commit; a SQLite write session
        holds the database's write lock from its start (``Store.session``)."""
        if lock and self.conn.dialect.name == "postgresql":
            self.conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCATIONS_LOCK})
        return [str(row[0]) for row in self.conn.execute(select(t.datasets.c.location))]

    def list_datasets(self, org: str, sandbox: str) -> list[DatasetRecord]:
        c = t.datasets.c
        rows = self.conn.execute(
            select(t.datasets)
            .where(c.org_id == org, c.sandbox == sandbox)
            .order_by(c.created_ms, c.dataset_id)
        )
        return [_dataset(row) for row in rows]

    # -- jobs --------------------------------------------------------------------------

    def insert_job(self, record: JobRecord) -> None:
        self.conn.execute(
            insert(t.batch_jobs).values(
                job_id=record.job_id,
                org_id=record.org_id,
                sandbox=record.sandbox,
                container_id=record.container_id,
                dataset_id=record.dataset_id,
                segment_id=record.segment_id,
                engine=record.engine,
                status=record.status,
                request=_dumps(record.request),
                detail=_dumps(record.detail),
                created_ms=record.created_ms,
                updated_ms=record.updated_ms,
                heartbeat_ms=record.heartbeat_ms,
                owner=record.owner,
            )
        )

    def get_job(
        self, job_id: str, *, org: str | None = None, sandbox: str | None = None
    ) -> JobRecord | None:
        """The job; with ``org`` and ``sandbox``, only when it is theirs."""
        c = t.batch_jobs.c
        query = select(t.batch_jobs).where(c.job_id == job_id)
        if org is not None:
            query = query.where(c.org_id == org, c.sandbox == sandbox)
        row = self.conn.execute(query).first()
        return _job(row) if row is not None else None

    def list_jobs(self, org: str, sandbox: str, *, limit: int) -> list[JobRecord]:
        c = t.batch_jobs.c
        rows = self.conn.execute(
            select(t.batch_jobs)
            .where(c.org_id == org, c.sandbox == sandbox)
            .order_by(c.created_ms.desc(), c.job_id)
            .limit(limit)
        )
        return [_job(row) for row in rows]

    def jobs_with_status(self, statuses: Sequence[str]) -> list[JobRecord]:
        """Jobs in these statuses, oldest first."""
        c = t.batch_jobs.c
        rows = self.conn.execute(
            select(t.batch_jobs)
            .where(c.status.in_(list(statuses)))
            .order_by(c.created_ms, c.job_id)
        )
        return [_job(row) for row in rows]

    def count_jobs(self, *, dataset_id: str, statuses: Sequence[str]) -> int:
        c = t.batch_jobs.c
        return int(
            self.conn.execute(
                select(func.count())
                .select_from(t.batch_jobs)
                .where(c.dataset_id == dataset_id, c.status.in_(list(statuses)))
            ).scalar_one()
        )

    def segment_in_use(self, segment_id: str, statuses: Sequence[str]) -> bool:
        c = t.batch_jobs.c
        row = self.conn.execute(
            select(c.job_id)
            .where(c.segment_id == segment_id, c.status.in_(list(statuses)))
            .limit(1)
        ).first()
        return row is not None

    def move_job(
        self, job_id: str, *, expect: Sequence[str] | None, values: Mapping[str, Any]
    ) -> bool:
        """Update the job when its status is one of ``expect`` (any when ``None``); whether
        it was updated. ``detail`` and ``request`` are given as objects."""
        c = t.batch_jobs.c
        query = update(t.batch_jobs).where(c.job_id == job_id)
        if expect is not None:
            query = query.where(c.status.in_(list(expect)))
        encoded = {k: _dumps(v) if k in ("detail", "request") else v for k, v in values.items()}
        return bool(self.conn.execute(query.values(**encoded)).rowcount)

    # -- the profiles a batch reads ----------------------------------------------------

    def count_profiles(self, org: str, sandbox: str) -> int:
        c = t.profiles.c
        return int(
            self.conn.execute(
                select(func.count())
                .select_from(t.profiles)
                .where(c.org_id == org, c.sandbox == sandbox)
            ).scalar_one()
        )

    def ledger_jobs(self, job_id: str, *, finished: Sequence[str]) -> list[str]:
        """The job, and every job whose status is in ``finished`` that still has ledger
        rows (:class:`DecisionLedger`; a runner that died before deleting them)."""
        c = t.batch_decisions.c
        done = select(t.batch_jobs.c.job_id).where(t.batch_jobs.c.status.in_(list(finished)))
        left = self.conn.execute(select(c.job_id).where(c.job_id.in_(done)).distinct())
        return [job_id, *sorted({row[0] for row in left} - {job_id})]

    def forget_decisions(self, job_id: str, *, limit: int) -> int:
        """Delete up to ``limit`` of the job's ledger rows; how many. A bounded step: a
        million rows deleted at once held SQLite's write lock for 2 s, every online
        decision waiting."""
        c = t.batch_decisions.c
        some = select(c.profile_id).where(c.job_id == job_id).limit(limit)
        query = delete(t.batch_decisions).where(c.job_id == job_id, c.profile_id.in_(some))
        return int(self.conn.execute(query).rowcount or 0)

    def profile_chunk(self, org: str, sandbox: str, *, after: str, limit: int) -> list[ProfileRow]:
        """Up to ``limit`` profiles of the tenant with ids after ``after``, in id order:
        id, first identity (by namespace, then id), attributes as stored (JSON text)."""
        c = t.profiles.c
        rows = self.conn.execute(
            select(
                c.profile_id,
                _FIRST_IDENTITY.with_only_columns(_ns.c.namespace).scalar_subquery(),
                _FIRST_IDENTITY.with_only_columns(_ns.c.identity).scalar_subquery(),
                c.attributes,
            )
            .where(c.org_id == org, c.sandbox == sandbox, c.profile_id > after)
            .order_by(c.profile_id)
            .limit(limit)
        ).all()
        return [(r[0], r[1], r[2], r[3]) for r in rows]


# -- the ledger of a Spark job's committed decisions ----------------------------------

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
        from nextoffer.storage.group_commit import BatchWriter

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
        if self._dialect == "sqlite":
            from nextoffer.settings import sqlite_synchronous
            from nextoffer.storage.database import WAL_SIZE_LIMIT

            # As the decision path's writer connects (``sqlite_path.py``).
            conn = sqlite3.connect(
                self._store.sqlite_path, timeout=30, isolation_level=None, check_same_thread=False
            )
            conn.execute(f"PRAGMA synchronous={sqlite_synchronous()}")
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA wal_autocheckpoint=0")  # the store's checkpointer runs them
            conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
            return conn
        import psycopg

        from nextoffer.storage.pg_path import CONNECT_TIMEOUT, conninfo

        try:
            return psycopg.connect(
                conninfo(self._store.engine.url), autocommit=False, connect_timeout=CONNECT_TIMEOUT
            )
        except psycopg.Error as exc:
            raise translated(exc) or exc from exc

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
        from nextoffer.storage.counters import counter_needs
        from nextoffer.storage.group_commit import counter_owners, plan_batch

        sql = on_postgres if postgres else _same
        profiles = [r.profile_key for r in records]
        found = execute(
            _LEDGER_READ[self._dialect], (self._job_id, profiles if postgres else _dumps(profiles))
        )
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
                    _dumps(list(record.proposed_offers)),
                    _dumps(reserved),
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
            from nextoffer.storage.counters import read_counts

            return read_counts(execute, "sqlite", codes)
        from nextoffer.storage.pg_path import _LOCK_COUNTERS

        containers = [owners.get(code, self._container_id) for code in codes]
        return {code: int(n) for code, n in execute(_LOCK_COUNTERS, (codes, containers))}


def _prior(row: Any) -> _Prior:
    return _Prior(
        row[1], row[2], orjson.loads(row[3]), [(code, n) for code, n in orjson.loads(row[4])]
    )


def _same(sql: str) -> str:
    return sql


def _close(conn: Any) -> None:
    conn.close()
