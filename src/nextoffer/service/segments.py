"""Segment definitions (audiences) in Adobe's Segmentation Service shape, scoped to an org
and sandbox: ``{"name", "description", "expression": {"type": "PQL", "format":
"pql/text", "value": …}, "schema": {"name": "_xdm.context.profile"}}``.

The expression is checked like any rule (a :class:`~nextoffer.errors.PQLError` with line
and column); a batch job decides for every profile it is true of, and an offer's or
criterion's segment constraint naming its id is met by a profile it is true of (the
snapshots of the tenant's containers are rebuilt on every change). A definition cannot be
deleted while a job that uses it is queued or running.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from nextoffer import pql
from nextoffer.errors import Conflict, NotFound, PQLError, Unprocessable
from nextoffer.service.auth import Principal
from nextoffer.storage.batch import SegmentRecord
from nextoffer.storage.session import Session
from nextoffer.storage.store import Store

__all__ = ["PROFILE_SCHEMA", "SegmentDefinitions", "SegmentRecord", "compile_expression"]

#: The only schema a definition may target: profiles.
PROFILE_SCHEMA = "_xdm.context.profile"
#: Jobs in these statuses hold their segment (``batch/lifecycle.py`` names them too).
_HOLDING = ("QUEUED", "PROCESSING", "INGESTING")
MAX_PAGE = 100
#: A definition's description at most (characters): a page lists 100 definitions whole.
MAX_DESCRIPTION = 4096


def compile_expression(body: Mapping[str, Any]) -> pql.CompiledRule:
    """The definition's expression, compiled; 422 naming the field when it is not PQL text
    that parses and checks (line and column for rule errors)."""
    expression = body.get("expression")
    if not isinstance(expression, Mapping):
        raise Unprocessable(
            "expression must be an object with type, format and value", pointer="/expression"
        )
    if expression.get("type", "PQL") != "PQL":
        raise Unprocessable("expression.type must be PQL", pointer="/expression/type")
    if expression.get("format", "pql/text") != "pql/text":
        raise Unprocessable("expression.format must be pql/text", pointer="/expression/format")
    value = expression.get("value")
    if not isinstance(value, str) or not value.strip():
        raise Unprocessable(
            "expression.value must be a non-empty PQL rule", pointer="/expression/value"
        )
    try:
        return pql.compile(value, format="pql/text", kind="rule")
    except PQLError as exc:
        raise PQLError(
            exc.message,
            line=exc.line,
            column=exc.column,
            source=exc.source,
            pointer="/expression/value",
        ) from exc


def _changed(session: Session, principal: Principal) -> list[str]:
    """Offers' segment constraints may name definitions: every container of the tenant
    compiles its snapshot again (its library version moves on); their ids."""
    ids = []
    for container in session.list_containers(org_id=principal.org, sandbox=principal.sandbox):
        session.bump_library_version(container.container_id)
        ids.append(container.container_id)
    return ids


def _epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


class SegmentDefinitions:
    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], datetime],
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        #: Told each container id whose snapshot a committed change affects (the cache).
        self._on_change = on_change or (lambda _container_id: None)

    def _notify(self, container_ids: list[str]) -> None:
        for container_id in container_ids:
            self._on_change(container_id)

    def create(self, principal: Principal, body: Any) -> SegmentRecord:
        definition = self._validated(principal, body)
        now = _epoch_ms(self._clock())
        record = SegmentRecord(
            str(uuid.uuid4()), principal.org, principal.sandbox, definition["name"], {}, now, now
        )
        record = self._shaped(record, definition)
        with self._store.session(write=True) as session:
            session.batch.insert_segment(record)
            changed = _changed(session, principal)
        self._notify(changed)
        return record

    def get(self, principal: Principal, segment_id: str) -> SegmentRecord:
        with self._store.session() as session:
            record = session.batch.get_segment(principal.org, principal.sandbox, segment_id)
        if record is None:
            raise NotFound(f"no segment definition {segment_id}")
        return record

    def get_all(
        self, principal: Principal, *, start: int = 0, limit: int = MAX_PAGE
    ) -> tuple[list[SegmentRecord], int]:
        limit = max(1, min(limit, MAX_PAGE))
        with self._store.session() as session:
            return session.batch.list_segments(
                principal.org, principal.sandbox, offset=max(0, start), limit=limit
            )

    def update(self, principal: Principal, segment_id: str, patch: Any) -> SegmentRecord:
        """Merge ``patch`` (``name``, ``description``, ``expression``) into the definition."""
        if not isinstance(patch, dict):
            raise Unprocessable("the body must be a JSON object", pointer="/")
        with self._store.session(write=True) as session:
            current = session.batch.get_segment(
                principal.org, principal.sandbox, segment_id, lock="no key update"
            )
            if current is None:
                raise NotFound(f"no segment definition {segment_id}")
            merged = {
                "name": current.body["name"],
                "description": current.body.get("description", ""),
                "expression": current.body["expression"],
                "schema": current.body["schema"],
            }
            for key in ("name", "description", "expression", "schema"):
                if key in patch:
                    merged[key] = patch[key]
            definition = self._validated(principal, merged)
            record = SegmentRecord(
                segment_id,
                principal.org,
                principal.sandbox,
                definition["name"],
                {},
                current.created_ms,
                max(_epoch_ms(self._clock()), current.created_ms),
            )
            record = self._shaped(record, definition)
            session.batch.update_segment(record)
            changed = _changed(session, principal)
        self._notify(changed)
        return record

    def delete(self, principal: Principal, segment_id: str) -> None:
        with self._store.session(write=True) as session:
            record = session.batch.get_segment(
                principal.org, principal.sandbox, segment_id, lock="update"
            )
            if record is None:
                raise NotFound(f"no segment definition {segment_id}")
            if session.batch.segment_in_use(segment_id, _HOLDING):
                raise Conflict(
                    f"segment definition {segment_id} is used by a batch job that is queued or"
                    " running; wait for it to finish or cancel it (DELETE the workload)"
                )
            session.batch.delete_segment(segment_id)
            changed = _changed(session, principal)
        self._notify(changed)

    # -- shape -------------------------------------------------------------------------

    @staticmethod
    def _validated(principal: Principal, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise Unprocessable("the body must be a JSON object", pointer="/")
        name = body.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > 255:
            raise Unprocessable("name must be a non-empty string of up to 255", pointer="/name")
        description = body.get("description", "")
        if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
            raise Unprocessable(
                f"description must be a string of up to {MAX_DESCRIPTION} characters",
                pointer="/description",
            )
        schema = body.get("schema", {"name": PROFILE_SCHEMA})
        if not isinstance(schema, dict) or schema.get("name") != PROFILE_SCHEMA:
            raise Unprocessable(
                f"schema.name must be {PROFILE_SCHEMA} (definitions select profiles)",
                pointer="/schema/name",
            )
        compile_expression(body)
        expression = body["expression"]
        return {
            "name": name,
            "description": description,
            "schema": {"name": PROFILE_SCHEMA},
            "expression": {
                "type": "PQL",
                "format": "pql/text",
                "value": expression["value"],
            },
        }

    @staticmethod
    def _shaped(record: SegmentRecord, definition: dict[str, Any]) -> SegmentRecord:
        body = {
            "id": record.segment_id,
            **definition,
            "imsOrgId": record.org_id,
            "sandbox": {"sandboxName": record.sandbox},
            "creationTime": record.created_ms,
            "updateTime": record.modified_ms,
            "updateEpoch": record.modified_ms // 1000,
        }
        return SegmentRecord(
            record.segment_id,
            record.org_id,
            record.sandbox,
            record.name,
            body,
            record.created_ms,
            record.modified_ms,
        )
