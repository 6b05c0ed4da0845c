"""The wire shapes of the repository: HAL resources and receipts (spec §4.2–§4.4)."""

from __future__ import annotations

from typing import Any

from nextoffer.repository.objects import CONTAINER_SCHEMA, OBJECT_TYPES
from nextoffer.repository.records import Audit, ContainerRecord, InstanceRecord, RevisionRecord

CONTAINER_VERSION = "0.5"


def _repo(etag: int, audit: Audit) -> dict[str, Any]:
    return {
        "repo:etag": etag,
        "repo:createdDate": audit.created,
        "repo:lastModifiedDate": audit.modified,
        "repo:createdBy": audit.created_by,
        "repo:lastModifiedBy": audit.modified_by,
        "repo:createdByClientId": audit.created_client,
        "repo:lastModifiedByClientId": audit.modified_client,
    }


def receipt(record: InstanceRecord) -> dict[str, Any]:
    """The ``xdm.receipt`` body answered to create, update and delete."""
    return {
        "instanceId": record.instance_id,
        "@id": record.at_id,
        **_repo(record.etag, record.audit),
    }


def instance_href(record: InstanceRecord) -> str:
    return f"/{record.container_id}/instances/{record.instance_id}"


def resource(
    record: InstanceRecord, *, sandbox: str | None = None, score: float | None = None
) -> dict[str, Any]:
    """The HAL form of one instance, as read and as listed."""
    versioned = OBJECT_TYPES[record.schema_id].versioned_schema
    out: dict[str, Any] = {
        "instanceId": record.instance_id,
        "schemas": [versioned],
        "productContexts": ["acp"],
        **_repo(record.etag, record.audit),
    }
    if score is not None:
        out["_score"] = score
    if sandbox is not None:
        out["sandboxName"] = sandbox
    out["_instance"] = record.body
    out["_links"] = {
        "self": {
            "name": f"{versioned}#{record.instance_id}",
            "href": instance_href(record),
            "@type": versioned,
        }
    }
    return out


def container_resource(record: ContainerRecord) -> dict[str, Any]:
    return {
        "instanceId": record.container_id,
        "schemas": [f"{CONTAINER_SCHEMA};version={CONTAINER_VERSION}"],
        "productContexts": record.product_contexts,
        **_repo(record.etag, record.audit),
        "_instance": {
            "containerType": record.container_type,
            "repo:name": record.name,
            "dataCenter": "local",
            "parentName": record.sandbox,
            "parentId": record.org_id,
        },
        "_links": {"self": {"href": f"/containers/{record.container_id}"}},
    }


def revision(record: RevisionRecord, changes: list[dict[str, Any]]) -> dict[str, Any]:
    """One kept write (beyond Adobe, ``GET …/instances/{id}/revisions``)."""
    return {
        "revision": record.revision,
        "action": record.action,
        "@id": record.at_id,
        "schema": record.schema_id,
        "repo:lastModifiedDate": record.modified,
        "repo:lastModifiedBy": record.modified_by,
        "repo:lastModifiedByClientId": record.modified_client,
        "changes": changes,
        "_instance": record.body,
    }
