"""The Offer Library's use cases: create, read, replace, patch and delete instances.

Each method opens one transaction, checks tenancy (a container of another org or sandbox
is reported exactly like a missing one), validates, checks references, and writes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from nextoffer import pql
from nextoffer.errors import Conflict, NotFound, PayloadTooLarge, Unprocessable
from nextoffer.ids import IdFactory, epoch_micros, format_datetime, parse_datetime
from nextoffer.repository import hal, patch, references, revisions, rules
from nextoffer.repository.objects import (
    COLLECTION,
    DECISION,
    FALLBACK_OFFER,
    OBJECT_TYPES,
    PERSONALIZED_OFFER,
    PLACEMENT,
    RANKING_FORMULA,
    RANKING_STRATEGY,
    RULE,
    TAG,
    ObjectType,
    SchemaRef,
    at_id_type,
)
from nextoffer.repository.records import Audit, ContainerRecord, InstanceRecord, RevisionRecord
from nextoffer.service.auth import Principal
from nextoffer.service.body_checks import BodyChecks, check_body, problems_of
from nextoffer.service.offload import in_pool
from nextoffer.storage.decision_path import DecisionPath
from nextoffer.storage.session import Session
from nextoffer.storage.store import Store

#: Creating an @id collides only if two processes draw the same worker number in the same
#: millisecond; we retry a few times with a fresh id.
_CREATE_ATTEMPTS = 3

#: Totals per container from the guardrails (spec §10): types counted together, and the most.
TOTAL_LIMITS: tuple[tuple[frozenset[ObjectType], int, str], ...] = (
    (frozenset({PLACEMENT}), 1_000, "placements"),
    (frozenset({PERSONALIZED_OFFER, FALLBACK_OFFER}), 10_000, "offers (personalized and fallback)"),
    (frozenset({COLLECTION}), 10_000, "collections"),
    (frozenset({TAG}), 1_000, "collection qualifiers"),
    (frozenset({RULE, RANKING_FORMULA}), 10_000, "decision rules and ranking formulas"),
    (frozenset({DECISION}), 10_000, "decisions"),
    # Adobe allows 5 AI models; nextoffer's strategies are cheaper to keep.
    (frozenset({RANKING_STRATEGY}), 1_000, "ranking strategies"),
)


@dataclass(frozen=True, slots=True)
class Revision:
    """A kept write and what it changed against the revision before it."""

    record: RevisionRecord
    changes: list[dict[str, Any]] = field(hash=False)


class Repository:
    def __init__(
        self,
        store: Store,
        *,
        path: DecisionPath,
        ids: IdFactory,
        clock: Callable[[], datetime],
        on_change: Callable[[str], None] | None = None,
        executor: Executor | None = None,
        compile_rule: rules.Compile = pql.compile,
    ) -> None:
        self._store = store
        #: Validates PQL on save; the root passes the snapshots' compiled-rule cache, so a
        #: rule saved (or imported) is compiled once, for both.
        self._compile_rule = compile_rule
        #: Reads of one instance by key go the decision path's way (a driver read on SQLite).
        self._path = path
        self._executor = executor
        self._ids = ids
        self._clock = clock
        #: Told the container id after every committed write (the catalog cache listens).
        self._on_change = on_change or (lambda _container_id: None)

    # -- containers ------------------------------------------------------------------

    def containers(self, principal: Principal) -> list[ContainerRecord]:
        with self._store.session() as session:
            return session.list_containers(org_id=principal.org, sandbox=principal.sandbox)

    def container(
        self, session: Session, principal: Principal, container_id: str, *, lock: bool = False
    ) -> ContainerRecord:
        """The caller's container (404 for another tenant's). A write of the library takes
        it with ``lock``, before it reads what it checks (``Session.get_container``)."""
        record = session.get_container(
            container_id, org_id=principal.org, sandbox=principal.sandbox, lock=lock
        )
        if record is None:
            raise _no_container(container_id)
        return record

    # -- instances -------------------------------------------------------------------

    def get(self, principal: Principal, container_id: str, instance_id: str) -> InstanceRecord:
        owned, record = self._path.instance(
            principal.org, principal.sandbox, container_id, instance_id
        )
        if not owned:
            raise _no_container(container_id)
        if record is None:
            raise _no_instance(container_id, instance_id)
        return record

    def by_at_id(self, principal: Principal, container_id: str, at_id: str) -> InstanceRecord:
        """The instance whose ``@id`` is ``at_id`` (how the dps API names objects)."""
        owned, record = self._path.instance(
            principal.org, principal.sandbox, container_id, at_id, by_at_id=True
        )
        if not owned:
            raise _no_container(container_id)
        if record is None:
            raise NotFound(f"{at_id} does not exist")
        return record

    async def by_at_id_async(
        self, principal: Principal, container_id: str, at_id: str
    ) -> InstanceRecord:
        """:meth:`by_at_id` from an event loop, as :meth:`get_async`."""
        if self._path.inline:
            return self.by_at_id(principal, container_id, at_id)
        return await in_pool(self._executor, self.by_at_id, principal, container_id, at_id)

    async def get_async(
        self, principal: Principal, container_id: str, instance_id: str
    ) -> InstanceRecord:
        """:meth:`get` from an event loop: on it when the path is ``inline`` (a local read
        that never waits for a writer), else in the root's thread pool."""
        if self._path.inline:
            return self.get(principal, container_id, instance_id)
        return await in_pool(self._executor, self.get, principal, container_id, instance_id)

    def create(
        self,
        principal: Principal,
        container_id: str,
        schema: SchemaRef,
        body: dict[str, Any],
        *,
        prefix: str = "",
        scheme: str = "xcore",
    ) -> InstanceRecord:
        """``scheme`` names the ``@id`` form: ``xcore`` (the xcore API) or ``dps``."""
        object_type = schema.type
        if "@id" in body:
            raise Unprocessable(
                "@id is assigned by the repository and cannot be sent on create",
                pointer=f"{prefix}/@id",
            )
        self._check_body(object_type, body, prefix)
        for attempt in range(_CREATE_ATTEMPTS):
            now = self._clock()
            stamp = format_datetime(now)
            at_id = self._ids.at_id(object_type.name, now, scheme=scheme)
            record = InstanceRecord(
                instance_id=self._ids.instance_id(now),
                container_id=container_id,
                schema_id=object_type.schema_id,
                at_id=at_id,
                etag=1,
                audit=Audit(
                    stamp,
                    stamp,
                    principal.user,
                    principal.user,
                    principal.client_id,
                    principal.client_id,
                ),
                body={**body, "@id": at_id},
                created_us=epoch_micros(now),
                modified_us=epoch_micros(now),
            )
            try:
                with self._store.session(write=True) as session:
                    self.container(session, principal, container_id, lock=True)
                    self._check_total(session, container_id, object_type)
                    refs = self._check_references(session, object_type, container_id, body, prefix)
                    session.insert_instance(record, refs)
                self._on_change(container_id)
                return record
            except Conflict:
                if attempt == _CREATE_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def replace(
        self,
        principal: Principal,
        container_id: str,
        instance_id: str,
        schema: SchemaRef | None,
        body: dict[str, Any],
        *,
        if_match: int | None,
        prefix: str = "",
    ) -> InstanceRecord:
        with self._store.session(write=True) as session:
            self.container(session, principal, container_id, lock=True)
            current = self._instance(session, container_id, instance_id)
            if schema is not None and schema.type.schema_id != current.schema_id:
                raise Unprocessable(
                    f"instance {instance_id} is a {current.schema_id}, "
                    f"not a {schema.type.schema_id}"
                )
            if "@id" in body and body["@id"] != current.at_id:
                raise Unprocessable(
                    "@id is immutable and cannot be changed", pointer=f"{prefix}/@id"
                )
            record = self._update(
                session, principal, current, {**body, "@id": current.at_id}, if_match, prefix
            )
        self._on_change(container_id)
        return record

    def patch(
        self,
        principal: Principal,
        container_id: str,
        instance_id: str,
        operations: Any,
        *,
        schema: SchemaRef | None,
        if_match: int | None,
        view: patch.View = patch.HAL,
    ) -> InstanceRecord:
        """Apply a JSON Patch to the instance as ``view`` shows it (xcore's HAL resource,
        or the dps document), then validate and check it like a PUT."""
        with self._store.session(write=True) as session:
            self.container(session, principal, container_id, lock=True)
            current = self._instance(session, container_id, instance_id)
            if schema is not None and schema.type.schema_id != current.schema_id:
                raise Unprocessable(
                    f"instance {instance_id} is a {current.schema_id}, "
                    f"not a {schema.type.schema_id}"
                )
            body = patch.apply(current, operations, view)
            if all(op["op"] == "test" for op in operations):
                # Nothing written (an empty patch, or tests alone): no revision, and the
                # etag and modification date stay. A patch that writes is a write even of
                # the same values, as Adobe's fallback-offer update receipt shows (etag 2).
                self._check_etag(current, if_match)
                return current
            record = self._update(session, principal, current, body, if_match, view.prefix)
        self._on_change(container_id)
        return record

    def delete(
        self, principal: Principal, container_id: str, instance_id: str, *, if_match: int | None
    ) -> InstanceRecord:
        with self._store.session(write=True) as session:
            self.container(session, principal, container_id, lock=True)
            current = self._instance(session, container_id, instance_id)
            self._check_etag(current, if_match)
            referrers = session.referrers(container_id, current.at_id)
            if referrers:
                names = ", ".join(r.at_id for r in referrers[:10])
                raise Conflict(
                    f"{current.at_id} cannot be deleted: it is referenced by {names}"
                    + (f" and {len(referrers) - 10} more" if len(referrers) > 10 else ""),
                    referencedBy=[
                        {
                            "@id": r.at_id,
                            "instanceId": r.instance_id,
                            "schema": r.schema_id,
                            "href": hal.instance_href(r),
                        }
                        for r in referrers
                    ],
                )
            now = self._clock()
            stamp = format_datetime(now)
            deleted_by = Audit(
                current.audit.created,
                stamp,
                current.audit.created_by,
                principal.user,
                current.audit.created_client,
                principal.client_id,
            )
            session.delete_instance(current, audit=deleted_by, at_us=epoch_micros(now))
        self._on_change(container_id)
        return current

    def names(
        self, principal: Principal, container_id: str, object_type: ObjectType, *, limit: int
    ) -> list[tuple[str, str]]:
        """``(@id, name)`` of the container's instances of a type, by name, at most ``limit``
        (the console's reference selects and labels; no body is read)."""
        with self._store.session() as session:
            self.container(session, principal, container_id)
            return session.names(container_id, object_type.schema_id, limit=limit)

    # -- history (beyond Adobe) ------------------------------------------------------

    def revisions(
        self, principal: Principal, container_id: str, instance_id: str
    ) -> list[Revision]:
        """Every kept write of an instance, newest first, each with what it changed.
        A deleted instance keeps its history; an id never written is a 404."""
        with self._store.session() as session:
            self.container(session, principal, container_id)
            kept = session.revisions(container_id, instance_id)
        if not kept:
            raise _no_instance(container_id, instance_id)
        out: list[Revision] = []
        for index, record in enumerate(kept):
            older = kept[index + 1].body if index + 1 < len(kept) else None
            changed = [] if record.action == "delete" else revisions.changes(older, record.body)
            out.append(Revision(record, changed))
        return out

    def revert(
        self,
        principal: Principal,
        container_id: str,
        instance_id: str,
        revision: int,
        *,
        if_match: int | None,
    ) -> InstanceRecord:
        """Write revision ``revision``'s body again, as a new revision (validated and
        reference-checked like any replace: a revision naming a deleted object is a 422)."""
        with self._store.session() as session:
            self.container(session, principal, container_id)
            kept = {r.revision: r for r in session.revisions(container_id, instance_id)}
        target = kept.get(revision)
        if target is None or target.action == "delete":
            raise NotFound(f"instance {instance_id} has no revision {revision} to revert to")
        return self.replace(
            principal, container_id, instance_id, None, dict(target.body), if_match=if_match
        )

    # -- bulk ------------------------------------------------------------------------

    def create_many(
        self,
        principal: Principal,
        container_id: str,
        items: Sequence[tuple[ObjectType, dict[str, Any]]],
        *,
        keep_ids: bool,
        chunk_size: int = 1_000,
        progress: Callable[[str, int], None] | None = None,
        checks: BodyChecks | None = None,
    ) -> dict[str, str]:
        """Create many instances, checked together before any is written (a library
        imported from elsewhere); the new ``@id`` of each given one.

        ``items`` are (type, ``_instance`` body with its ``@id`` when it has one). With
        ``keep_ids`` every body keeps its ``@id`` (it must name its own type and be free
        in the container); otherwise each gets a new one and the references among the
        items are rewritten to match. Every body goes through the checks of
        :meth:`create` — schema, rules, caps, references (to an item or to an instance
        already in the container), the guardrail totals — and every problem found is
        raised at once (``Unprocessable`` with ``errors``, each pointer prefixed by the
        item's ``/<index>``) before anything is stored. Then the instances are written in
        transactions of ``chunk_size``. ``progress`` is told ``("checked", n)`` as bodies
        are checked and ``("written", n)`` after each transaction. ``checks`` runs the body
        checks (:func:`check_body`) of all items at once, e.g. in worker processes
        (``service/body_checks.py``); without it they run here, one by one.
        """
        with self._store.session() as session:
            self.container(session, principal, container_id)
        now = self._clock()
        problems: list[dict[str, str]] = []
        given: dict[str, int] = {}
        for index, (object_type, body) in enumerate(items):
            at_id = body.get("@id")
            if at_id is None and not keep_ids:
                continue
            if not isinstance(at_id, str) or at_id_type(at_id) is not object_type:
                problems.append(
                    {
                        "pointer": f"/{index}/@id",
                        "message": f"@id must be an xcore:{object_type.name}:<hex> id",
                    }
                )
            elif at_id in given:
                problems.append({"pointer": f"/{index}/@id", "message": f"{at_id} appears twice"})
            else:
                given[at_id] = index
        mapping = (
            {old: self._ids.at_id(items[i][0].name, now) for old, i in given.items()}
            if not keep_ids
            else {}
        )
        prepared: list[tuple[ObjectType, dict[str, Any], str]] = []
        for index, (object_type, body) in enumerate(items):
            content = {k: v for k, v in body.items() if k != "@id"}
            if mapping:
                content = references.rewrite(content, mapping)
            old_id = body.get("@id")
            at_id = (
                str(old_id)
                if keep_ids
                else mapping.get(str(old_id)) or self._ids.at_id(object_type.name, now)
            )
            if checks is None:
                try:
                    self._check_body(object_type, content, f"/{index}")
                except (Unprocessable, PayloadTooLarge) as exc:
                    problems.extend(problems_of(exc))
                if progress is not None and (index + 1) % 100 == 0:
                    progress("checked", 100)
            prepared.append((object_type, content, at_id))
        if checks is not None:
            checked = (lambda n: progress("checked", n)) if progress is not None else None
            problems.extend(checks([(t, c) for t, c, _ in prepared], checked))
        with self._store.session() as session:
            if keep_ids:
                taken = session.instances_by_at_id(container_id, list(given))
                problems.extend(
                    {"pointer": f"/{given[at_id]}/@id", "message": f"{at_id} already exists"}
                    for at_id in taken
                )
            bodies = {at_id: content for object_type, content, at_id in prepared}
            types = {at_id: object_type.schema_id for object_type, _, at_id in prepared}
            refs_of = [[r.at_id for r in references.references(c)] for _, c, _ in prepared]
            outside = {at_id for refs in refs_of for at_id in refs if at_id not in bodies}
            found = session.instances_by_at_id(container_id, sorted(outside))
            for at_id, record in found.items():
                bodies.setdefault(at_id, record.body)
                types.setdefault(at_id, record.schema_id)
            for types_counted, limit, label in TOTAL_LIMITS:
                adding = sum(1 for object_type, _, _ in prepared if object_type in types_counted)
                if adding:
                    count = sum(
                        session.count_instances(container_id, t.schema_id) for t in types_counted
                    )
                    if count + adding > limit:
                        problems.append(
                            {
                                "pointer": "",
                                "message": f"the container holds {count} {label} and the "
                                f"import adds {adding}; the limit is {limit}",
                            }
                        )
        resolved = {at_id: b for at_id, b in bodies.items() if types[at_id] == _type_of(at_id)}
        for index, (object_type, content, _) in enumerate(prepared):
            try:
                references.check_integrity(object_type, content, resolved, prefix=f"/{index}")
            except Unprocessable as exc:
                problems.extend(problems_of(exc))
        if problems:
            raise Unprocessable(
                f"{len(problems)} problem(s) found; nothing was imported: "
                + problems[0]["message"],
                pointer=problems[0]["pointer"] or None,
                errors=problems,
            )
        stamp = format_datetime(now)
        audit = Audit(
            stamp, stamp, principal.user, principal.user, principal.client_id, principal.client_id
        )
        micros = epoch_micros(now)
        try:
            for start in range(0, len(prepared), chunk_size):
                chunk = [
                    (
                        InstanceRecord(
                            instance_id=self._ids.instance_id(now),
                            container_id=container_id,
                            schema_id=object_type.schema_id,
                            at_id=at_id,
                            etag=1,
                            audit=audit,
                            body={**content, "@id": at_id},
                            created_us=micros,
                            modified_us=micros,
                        ),
                        refs,
                    )
                    for (object_type, content, at_id), refs in zip(
                        prepared[start : start + chunk_size],
                        refs_of[start : start + chunk_size],
                        strict=True,
                    )
                ]
                self._write_chunk(
                    principal, container_id, chunk, outside, imported=start, total=len(prepared)
                )
                if progress is not None:
                    progress("written", len(chunk))
        finally:
            self._on_change(container_id)  # the chunks written, also when one failed
        return {
            str(body.get("@id")): at_id
            for (_, body), (_, _, at_id) in zip(items, prepared, strict=True)
            if body.get("@id") is not None
        }

    def _write_chunk(
        self,
        principal: Principal,
        container_id: str,
        chunk: list[tuple[InstanceRecord, list[str]]],
        outside: set[str],
        *,
        imported: int,
        total: int,
    ) -> None:
        """Write one chunk of an import in one transaction, holding the container (as
        every library write does) and finding again the instances outside the import
        that it references: one deleted since the checks is a 409, which says how many
        instances the chunks before it imported."""
        needed = sorted({at_id for _, refs in chunk for at_id in refs if at_id in outside})
        with self._store.session(write=True) as session:
            self.container(session, principal, container_id, lock=True)
            gone = set(needed) - set(session.instances_by_at_id(container_id, needed))
            if gone:
                raise Conflict(
                    f"{', '.join(sorted(gone)[:10])} referenced by the import "
                    f"{'was' if len(gone) == 1 else 'were'} deleted while it ran; "
                    f"{imported} of {total} instances were imported"
                )
            session.insert_instances(chunk)

    # -- helpers ---------------------------------------------------------------------

    def _instance(self, session: Session, container_id: str, instance_id: str) -> InstanceRecord:
        record = session.get_instance(container_id, instance_id)
        if record is None:
            raise _no_instance(container_id, instance_id)
        return record

    @staticmethod
    def _check_total(session: Session, container_id: str, object_type: ObjectType) -> None:
        for types, limit, label in TOTAL_LIMITS:
            if object_type in types:
                count = sum(session.count_instances(container_id, t.schema_id) for t in types)
                if count >= limit:
                    raise Unprocessable(
                        f"the container already holds {count} {label}; the limit is {limit}"
                    )

    @staticmethod
    def _check_etag(current: InstanceRecord, if_match: int | None) -> None:
        if if_match is not None and if_match != current.etag:
            raise Conflict(
                f"If-Match {if_match} does not match the current repo:etag {current.etag}: "
                "the instance was changed by someone else"
            )

    def _check_body(self, object_type: ObjectType, body: dict[str, Any], prefix: str) -> None:
        check_body(object_type, body, prefix, self._compile_rule)

    def _check_references(
        self,
        session: Session,
        object_type: ObjectType,
        container_id: str,
        body: dict[str, Any],
        prefix: str,
    ) -> list[str]:
        refs = references.references(body)
        found = session.instances_by_at_id(container_id, [r.at_id for r in refs])
        resolved = {
            at_id: rec.body for at_id, rec in found.items() if rec.schema_id == _type_of(at_id)
        }
        references.check_integrity(object_type, body, resolved, prefix=prefix, refs=refs)
        return [r.at_id for r in refs]

    def _update(
        self,
        session: Session,
        principal: Principal,
        current: InstanceRecord,
        body: dict[str, Any],
        if_match: int | None,
        prefix: str,
    ) -> InstanceRecord:
        self._check_etag(current, if_match)
        object_type = _object_type(current.schema_id)
        self._check_body(object_type, body, prefix)
        refs = self._check_references(session, object_type, current.container_id, body, prefix)
        now = self._clock()
        stamp = format_datetime(now)
        audit = Audit(
            current.audit.created,
            stamp,
            current.audit.created_by,
            principal.user,
            current.audit.created_client,
            principal.client_id,
        )
        record = InstanceRecord(
            instance_id=current.instance_id,
            container_id=current.container_id,
            schema_id=current.schema_id,
            at_id=current.at_id,
            etag=current.etag + 1,
            audit=audit,
            body=body,
            created_us=current.created_us,
            modified_us=epoch_micros(now),
        )
        previous = [r.at_id for r in references.references(current.body)]
        if not session.update_instance(
            record, refs, expected_etag=current.etag, previous_refs=previous
        ):
            raise Conflict("the instance was changed by someone else; read it again and retry")
        if object_type is PERSONALIZED_OFFER and _restarts_counting(current.body, body):
            session.bump_cap_epoch(current.container_id, current.at_id)
        return record


def _restarts_counting(before: dict[str, Any], after: dict[str, Any]) -> bool:
    """True when the new start date is after the old end date (spec decisioning-api §5.2:
    then the counts reset to 0 for all); other date changes carry the counts forward."""
    old_end = _date(before, "xdm:endDate")
    new_start = _date(after, "xdm:startDate")
    return old_end is not None and new_start is not None and new_start > old_end


def _date(body: dict[str, Any], key: str) -> datetime | None:
    constraint = body.get("xdm:selectionConstraint")
    value = constraint.get(key) if isinstance(constraint, dict) else None
    try:
        return parse_datetime(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _object_type(schema_id: str) -> ObjectType:
    return OBJECT_TYPES[schema_id]


def _type_of(at_id: str) -> str | None:
    object_type = at_id_type(at_id)
    return object_type.schema_id if object_type else None


def _no_container(container_id: str) -> NotFound:
    return NotFound(f"container {container_id} does not exist")


def _no_instance(container_id: str, instance_id: str) -> NotFound:
    return NotFound(f"instance {instance_id} does not exist in container {container_id}")
