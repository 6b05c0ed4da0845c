"""The xcore records: a container, an instance and their audit envelope.

Plain values the store returns and the service and the wire shapes (``hal.py``) use: the
service never sees a database row, and nothing here knows where the records are kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Audit:
    """Who and when: the ``repo:*`` envelope fields."""

    created: str
    modified: str
    created_by: str
    modified_by: str
    created_client: str
    modified_client: str


@dataclass(frozen=True, slots=True)
class ContainerRecord:
    container_id: str
    org_id: str
    sandbox: str
    container_type: str
    name: str
    product_contexts: list[str]
    etag: int
    audit: Audit
    library_version: int = 0


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    instance_id: str
    container_id: str
    schema_id: str
    at_id: str
    etag: int
    audit: Audit
    body: dict[str, Any] = field(hash=False)
    created_us: int = 0
    modified_us: int = 0


@dataclass(frozen=True, slots=True)
class RevisionRecord:
    """One write of an instance as it was kept (issue 19): ``revision`` is the etag the
    write produced (for a delete, one past the last); ``body`` the ``_instance`` written
    (for a delete, the last one)."""

    container_id: str
    instance_id: str
    revision: int
    action: str  # "create" | "update" | "delete"
    schema_id: str
    at_id: str
    modified: str
    modified_us: int
    modified_by: str
    modified_client: str
    body: dict[str, Any] = field(hash=False)
