"""Database rows to records, one mapper per table for every reader (sessions, the SQLite
decision path's driver reads, search). Rows are read by column name, as attributes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from nextoffer.repository.records import Audit, ContainerRecord, InstanceRecord, RevisionRecord

AUDIT_COLUMNS = (
    "created",
    "modified",
    "created_by",
    "modified_by",
    "created_client",
    "modified_client",
)


def json_text(value: Any) -> str:
    """``value`` as JSON text: how a JSON column is written, and a list of keys is bound
    where SQLite reads it with ``json_each``."""
    return orjson.dumps(value).decode()


def audit_from_row(row: Any) -> Audit:
    return Audit(
        created=row.created,
        modified=row.modified,
        created_by=row.created_by,
        modified_by=row.modified_by,
        created_client=row.created_client,
        modified_client=row.modified_client,
    )


def audit_values(audit: Audit) -> dict[str, str]:
    """The audit columns of a row to write."""
    return {name: getattr(audit, name) for name in AUDIT_COLUMNS}


def container_from_row(row: Any) -> ContainerRecord:
    return ContainerRecord(
        container_id=row.container_id,
        org_id=row.org_id,
        sandbox=row.sandbox,
        container_type=row.container_type,
        name=row.name,
        product_contexts=orjson.loads(row.product_contexts),
        etag=row.etag,
        audit=audit_from_row(row),
        library_version=row.library_version,
    )


def instance_from_row(row: Any) -> InstanceRecord:
    return InstanceRecord(
        instance_id=row.instance_id,
        container_id=row.container_id,
        schema_id=row.schema_id,
        at_id=row.at_id,
        etag=row.etag,
        audit=audit_from_row(row),
        body=orjson.loads(row.body),
        created_us=row.created_us,
        modified_us=row.modified_us,
    )


def revision_from_row(row: Any) -> RevisionRecord:
    return RevisionRecord(
        container_id=row.container_id,
        instance_id=row.instance_id,
        revision=row.revision,
        action=row.action,
        schema_id=row.schema_id,
        at_id=row.at_id,
        modified=row.modified,
        modified_us=row.modified_us,
        modified_by=row.modified_by,
        modified_client=row.modified_client,
        body=orjson.loads(row.body),
    )


@dataclass(frozen=True, slots=True)
class DatastreamRecord:
    """A datastream: the public key of the Edge endpoints (``service/datastreams.py``)."""

    datastream_id: str
    org_id: str
    sandbox: str
    container_id: str
    name: str
    allowed_origins: tuple[str, ...]
    rate_limit: int
    created: str
    modified: str


def datastream_from_row(row: Any) -> DatastreamRecord:
    return DatastreamRecord(
        datastream_id=row.datastream_id,
        org_id=row.org_id,
        sandbox=row.sandbox,
        container_id=row.container_id,
        name=row.name,
        allowed_origins=tuple(orjson.loads(row.allowed_origins)),
        rate_limit=row.rate_limit,
        created=row.created,
        modified=row.modified,
    )
