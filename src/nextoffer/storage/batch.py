"""Batch decisioning's records in SQL: segment definitions, output datasets, batch jobs,
and the scan of a tenant's profiles in key order that every batch engine reads.

Used through ``Session.batch`` inside the service's transaction. A job's status changes
by compare-and-set (:meth:`BatchTables.move_job`): two processes never both start, or
both finish, the same job.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, delete, func, insert, select, text, update

from nextoffer.storage import tables as t
from nextoffer.storage.locks import Lock, locked
from nextoffer.storage.rows import json_text

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
                body=json_text(record.body),
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
            .values(name=record.name, body=json_text(record.body), modified_ms=record.modified_ms)
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
                request=json_text(record.request),
                detail=json_text(record.detail),
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

    def job_statuses(self, job_ids: Sequence[str]) -> dict[str, str]:
        """The status of each of ``job_ids`` that has a row."""
        c = t.batch_jobs.c
        rows = self.conn.execute(select(c.job_id, c.status).where(c.job_id.in_(list(job_ids))))
        return {row[0]: row[1] for row in rows}

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
        encoded = {k: json_text(v) if k in ("detail", "request") else v for k, v in values.items()}
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
        rows (``storage/ledger.py``; a runner that died before deleting them)."""
        c = t.batch_decisions.c
        done = select(t.batch_jobs.c.job_id).where(t.batch_jobs.c.status.in_(list(finished)))
        left = self.conn.execute(select(c.job_id).where(c.job_id.in_(done)).distinct())
        return [job_id, *sorted({row[0] for row in left} - {job_id})]

    def forget_decisions(self, job_id: str, *, limit: int) -> int:
        """Delete up to ``limit`` of the job's ledger rows; how many. A bounded step: a
        job's rows deleted at once would hold SQLite's write lock for seconds, every
        online decision waiting (docs/batch.md)."""
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
