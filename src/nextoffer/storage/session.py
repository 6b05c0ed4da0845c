"""One transaction's reads and writes: :class:`Session`, yielded by ``Store.session``.

Tenants, clients and signing keys, containers and instances (with their references,
counts and search index); the runtime tables through :attr:`Session.runtime`, deleted
profiles' erasures through :attr:`Session.erasures`, what ranking strategies learned
through :attr:`Session.ranking` and the batch's tables through :attr:`Session.batch`. Statements
on the request path are built once; on SQLite, an instance's writes and the reads of a
write (:meth:`Session._write`, :meth:`Session._rows`) run on the driver connection.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from nextoffer.repository.records import Audit, ContainerRecord, InstanceRecord, RevisionRecord
from nextoffer.storage import search_index
from nextoffer.storage import tables as t
from nextoffer.storage.batch import BatchTables
from nextoffer.storage.erasures import Erasures
from nextoffer.storage.locks import Lock, locked
from nextoffer.storage.ranking import Ranking
from nextoffer.storage.rows import (
    DatastreamRecord,
    audit_values,
    container_from_row,
    datastream_from_row,
    instance_from_row,
    json_text,
    revision_from_row,
)
from nextoffer.storage.runtime import Runtime

__all__ = ["ClientRecord", "DatastreamRecord", "Session", "upsert"]


@dataclass(frozen=True, slots=True)
class ClientRecord:
    """An API client: its organisation, the sandboxes it may use, and when it was made
    (tokens minted before are not its: a client revoked and made again)."""

    client_id: str
    org_id: str
    sandboxes: frozenset[str]
    created: str = ""


def upsert(conn: Connection, table: Any) -> Any:
    """An ``INSERT`` with ``ON CONFLICT`` for this connection's dialect (SQLite, PostgreSQL).

    Writers on PostgreSQL are not serialised as SQLite's are: a read-then-insert can race
    with another node, so inserts that may meet an existing row say what to do instead.
    """
    return (postgresql if conn.dialect.name == "postgresql" else sqlite).insert(table)


# Statements on the request path are built once: SQLAlchemy then reuses their compiled
# form, and no expression objects are made per call.
_GET_CONTAINER = select(t.containers).where(
    t.containers.c.container_id == bindparam("container_id"),
    t.containers.c.org_id == bindparam("org_id"),
    t.containers.c.sandbox == bindparam("sandbox"),
)
#: :data:`_GET_CONTAINER`, its row held to the commit (``locks.py``), built once: the
#: SQLite driver path caches a statement's text by the statement.
_LOCK_CONTAINER = locked(_GET_CONTAINER, "update")
_GET_INSTANCE = select(t.instances).where(
    t.instances.c.container_id == bindparam("container_id"),
    t.instances.c.instance_id == bindparam("instance_id"),
)
_BY_AT_ID = select(t.instances).where(
    t.instances.c.container_id == bindparam("container_id"),
    t.instances.c.at_id.in_(bindparam("at_ids", expanding=True)),
)
_LIBRARY_VERSION = select(t.containers.c.library_version).where(
    t.containers.c.container_id == bindparam("container_id")
)
_INSERT_INSTANCE = insert(t.instances)
_INSERT_REFS = insert(t.instance_refs)
_INSERT_REVISION = insert(t.instance_revisions)
_COUNT = select(t.instance_counts.c.count).where(
    t.instance_counts.c.container_id == bindparam("cid"),
    t.instance_counts.c.schema_id == bindparam("sid"),
)
_ADD_COUNT = (
    update(t.instance_counts)
    .where(
        t.instance_counts.c.container_id == bindparam("cid"),
        t.instance_counts.c.schema_id == bindparam("sid"),
    )
    .values(count=t.instance_counts.c.count + bindparam("delta"))
)
_UPDATE_INSTANCE = (
    update(t.instances)
    .where(
        t.instances.c.instance_id == bindparam("iid"),
        t.instances.c.container_id == bindparam("cid"),
        t.instances.c.etag == bindparam("expected_etag"),
    )
    .values(
        name=bindparam("new_name"),
        etag=bindparam("new_etag"),
        modified=bindparam("new_modified"),
        modified_us=bindparam("new_modified_us"),
        modified_by=bindparam("new_modified_by"),
        modified_client=bindparam("new_modified_client"),
        body=bindparam("new_body"),
    )
)
_DELETE_REFS = delete(t.instance_refs).where(t.instance_refs.c.from_instance_id == bindparam("iid"))
_BUMP_LIBRARY_VERSION = (
    update(t.containers)
    .where(t.containers.c.container_id == bindparam("cid"))
    .values(library_version=t.containers.c.library_version + 1)
    .returning(t.containers.c.library_version)
)


@dataclass(frozen=True, slots=True)
class _SqliteText:
    text: str
    #: The values of the statement's own bound literals (the ``+ 1`` of a version bump).
    own: dict[str, Any]
    #: A SELECT's rows, read by column name as attributes (``rows.py``'s mappers).
    row: Any


#: SQLite's text of the prebuilt statements above, by (statement, parameter names, sizes
#: of list parameters): they run on the driver's connection (:meth:`Session._write`,
#: :meth:`Session._rows`), without SQLAlchemy's work per execution (most of an update's
#: CPU once SQLite's own is taken off; docs/benchmarks.md, issue 22's refresh passes).
_SQLITE_NAMED = sqlite.dialect(paramstyle="named")
_SQLITE_TEXT: dict[tuple[int, tuple[str, ...], tuple[int, ...]], _SqliteText] = {}


#: The list parameters (expanding ``IN``) of the prebuilt statements.
_EXPANDING = frozenset({"at_ids"})


def _sqlite_text(statement: Any, keys: tuple[str, ...], sizes: tuple[int, ...]) -> _SqliteText:
    """``statement`` for parameters ``keys``; ``sizes``: the length of each list parameter
    among them (an expanding ``IN``, rendered as ``:name_1, :name_2, …``)."""
    found = _SQLITE_TEXT.get((id(statement), keys, sizes))
    if found is None:
        lists = [key for key in keys if key in _EXPANDING]
        if lists:
            values: dict[str, Any] = dict.fromkeys(keys)
            values.update((key, [None] * n) for key, n in zip(lists, sizes, strict=True))
            sample = statement.params(values)
            compiled = sample.compile(
                dialect=_SQLITE_NAMED, compile_kwargs={"render_postcompile": True}
            )
            own: dict[str, Any] = {}
        else:
            compiled = statement.compile(dialect=_SQLITE_NAMED, column_keys=list(keys))
            own = {name: value for name, value in compiled.params.items() if name not in keys}
        columns = (
            [c.name for c in statement.selected_columns] if isinstance(statement, Select) else []
        )
        row = namedtuple("Row", columns) if columns else None
        found = _SqliteText(str(compiled), own, row)
        _SQLITE_TEXT[(id(statement), keys, sizes)] = found
    return found


class Session:
    """One transaction's worth of reads and writes."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        #: The SQLite driver connection (in this transaction), for :meth:`_write`.
        self._driver: Any = (
            conn.connection.driver_connection if conn.dialect.name == "sqlite" else None
        )
        #: Profiles, events, decision events and counters, in this same transaction.
        self.runtime = Runtime(conn)
        #: What ranking strategies learned (``storage/ranking.py``), in this transaction.
        self.ranking = Ranking(conn)
        #: Deleted profiles' erasures, queued and walked (``storage/erasures.py``).
        self.erasures = Erasures(conn)
        #: Segment definitions, datasets, batch jobs and the batch's profile scan.
        self.batch = BatchTables(conn)

    def _write(self, statement: Any, params: dict[str, Any] | list[dict[str, Any]]) -> Any:
        """Run one of the module's prebuilt statements (only those: every ``statement``
        is kept in a module constant, so :data:`_SQLITE_TEXT` stays as small as they are)
        with ``params`` (a list: once per item); what it gives has ``rowcount`` and
        ``fetchall``. On SQLite the statement runs on the driver connection of this
        transaction (the DB-API cursor); elsewhere through SQLAlchemy (its result)."""
        if self._driver is None:
            return self.conn.execute(statement, params)
        first = params[0] if isinstance(params, list) else params
        found = _sqlite_text(statement, tuple(first), ())
        own = found.own
        # Driver errors are translated by the store's session (``errors.guarded``).
        if isinstance(params, list):
            return self._driver.executemany(
                found.text, [{**own, **p} for p in params] if own else params
            )
        return self._driver.execute(found.text, {**own, **params} if own else params)

    def _rows(self, statement: Any, params: dict[str, Any]) -> list[Any]:
        """The rows of one of the module's prebuilt SELECTs (read by column name, as
        attributes), as :meth:`_write` runs it; a list parameter fills its ``IN``."""
        if self._driver is None:
            return list(self.conn.execute(statement, params))
        sizes = tuple(len(v) for v in params.values() if isinstance(v, list))
        found = _sqlite_text(statement, tuple(params), sizes)
        if sizes:
            flat: dict[str, Any] = {}
            for key, value in params.items():
                if isinstance(value, list):
                    flat.update((f"{key}_{n}", item) for n, item in enumerate(value, 1))
                else:
                    flat[key] = value
            params = flat
        make = found.row._make
        return [make(row) for row in self._driver.execute(found.text, params)]

    # -- datastreams -----------------------------------------------------------------

    def put_datastream(self, record: DatastreamRecord) -> None:
        """Insert or replace a datastream (its id is the key)."""
        values = {
            "datastream_id": record.datastream_id,
            "org_id": record.org_id,
            "sandbox": record.sandbox,
            "container_id": record.container_id,
            "name": record.name,
            "allowed_origins": json_text(list(record.allowed_origins)),
            "rate_limit": record.rate_limit,
            "created": record.created,
            "modified": record.modified,
        }
        statement = upsert(self.conn, t.datastreams).values(**values)
        self.conn.execute(
            statement.on_conflict_do_update(
                index_elements=["datastream_id"],
                set_={k: v for k, v in values.items() if k != "datastream_id"},
            )
        )

    def get_datastream(self, datastream_id: str, *, lock: Lock = None) -> DatastreamRecord | None:
        """The datastream; ``lock`` holds its row to the commit (``locks.py``)."""
        query = select(t.datastreams).where(t.datastreams.c.datastream_id == datastream_id)
        row = self.conn.execute(locked(query, lock)).first()
        return datastream_from_row(row) if row is not None else None

    def list_datastreams(self, *, org_id: str, sandbox: str) -> list[DatastreamRecord]:
        query = (
            select(t.datastreams)
            .where(t.datastreams.c.org_id == org_id, t.datastreams.c.sandbox == sandbox)
            .order_by(t.datastreams.c.created, t.datastreams.c.datastream_id)
        )
        return [datastream_from_row(row) for row in self.conn.execute(query)]

    def delete_datastream(self, datastream_id: str) -> None:
        self.conn.execute(
            delete(t.datastreams).where(t.datastreams.c.datastream_id == datastream_id)
        )

    # -- tenants ---------------------------------------------------------------------

    def ensure_org(self, org_id: str, *, now: str) -> None:
        self.conn.execute(
            upsert(self.conn, t.orgs).values(org_id=org_id, created=now).on_conflict_do_nothing()
        )

    def ensure_sandbox(self, org_id: str, name: str, *, now: str) -> None:
        self.conn.execute(
            upsert(self.conn, t.sandboxes)
            .values(org_id=org_id, name=name, created=now)
            .on_conflict_do_nothing()
        )

    def sandbox_exists(self, org_id: str, name: str) -> bool:
        query = select(t.sandboxes.c.name).where(
            t.sandboxes.c.org_id == org_id, t.sandboxes.c.name == name
        )
        return self.conn.execute(query).first() is not None

    def insert_container(self, record: ContainerRecord) -> None:
        self.conn.execute(
            insert(t.containers).values(
                container_id=record.container_id,
                org_id=record.org_id,
                sandbox=record.sandbox,
                container_type=record.container_type,
                name=record.name,
                product_contexts=json_text(record.product_contexts),
                etag=record.etag,
                library_version=record.library_version,
                **audit_values(record.audit),
            )
        )

    def get_container(
        self, container_id: str, *, org_id: str, sandbox: str, lock: bool = False
    ) -> ContainerRecord | None:
        """The container, only if it belongs to this org and sandbox. ``lock`` holds its
        row until the commit, so that the library writes to one container take turns
        (PostgreSQL; on SQLite every writer holds the write lock): what one write checks
        before it writes (the references it makes or removes, the guardrail totals) then
        stands until it commits."""
        params = {"container_id": container_id, "org_id": org_id, "sandbox": sandbox}
        rows = self._rows(_LOCK_CONTAINER if lock else _GET_CONTAINER, params)
        return container_from_row(rows[0]) if rows else None

    def get_container_by_id(self, container_id: str) -> ContainerRecord | None:
        """Any tenant's container: for operators' commands only, never for API calls."""
        row = self.conn.execute(
            select(t.containers).where(t.containers.c.container_id == container_id)
        ).first()
        return container_from_row(row) if row else None

    def list_containers(self, *, org_id: str, sandbox: str) -> list[ContainerRecord]:
        rows = self.conn.execute(
            select(t.containers)
            .where(t.containers.c.org_id == org_id, t.containers.c.sandbox == sandbox)
            .order_by(t.containers.c.created, t.containers.c.container_id)
        )
        return [container_from_row(row) for row in rows]

    def container_ids(self) -> list[str]:
        """Every container of every tenant."""
        return [row[0] for row in self.conn.execute(select(t.containers.c.container_id))]

    def library_version(self, container_id: str) -> int:
        value = self.conn.execute(_LIBRARY_VERSION, {"container_id": container_id}).scalar()
        return int(value or 0)

    def bump_library_version(self, container_id: str) -> int:
        """Move the container's library version on; the new one (0: no such container).

        Also the *change sequence* of an instance write (its revision row's
        ``change_seq``): the row lock this takes on PostgreSQL is held to the commit, so
        writes to one container commit in the order of their versions (docs/design.md,
        "Compiled snapshots")."""
        rows = self._write(_BUMP_LIBRARY_VERSION, {"cid": container_id}).fetchall()
        return int(rows[0][0]) if rows else 0

    def ensure_client(self, client_id: str, org_id: str, *, now: str) -> bool:
        """Create the API client if missing; False when it exists for another org."""
        self.conn.execute(
            upsert(self.conn, t.api_clients)
            .values(client_id=client_id, org_id=org_id, created=now)
            .on_conflict_do_nothing()
        )
        row = self.conn.execute(
            select(t.api_clients.c.org_id).where(t.api_clients.c.client_id == client_id)
        ).one()
        return bool(row.org_id == org_id)

    def grant_sandbox(self, client_id: str, sandbox: str) -> None:
        self.conn.execute(
            upsert(self.conn, t.client_sandboxes)
            .values(client_id=client_id, sandbox=sandbox)
            .on_conflict_do_nothing()
        )

    def get_client(self, client_id: str) -> ClientRecord | None:
        found = self.list_clients(client_id=client_id)
        return found[0] if found else None

    def list_clients(
        self, *, org_id: str | None = None, client_id: str | None = None
    ) -> list[ClientRecord]:
        """The API clients (of one org, or the one ``client_id``), by id."""
        c = t.api_clients.c
        query = select(c.client_id, c.org_id, c.created).order_by(c.client_id)
        if org_id is not None:
            query = query.where(c.org_id == org_id)
        if client_id is not None:
            query = query.where(c.client_id == client_id)
        rows = self.conn.execute(query).all()
        if not rows:
            return []
        grants: dict[str, set[str]] = {}
        g = t.client_sandboxes.c
        for owner, sandbox in self.conn.execute(
            select(g.client_id, g.sandbox).where(g.client_id.in_([r.client_id for r in rows]))
        ):
            grants.setdefault(owner, set()).add(sandbox)
        return [
            ClientRecord(r.client_id, r.org_id, frozenset(grants.get(r.client_id, ())), r.created)
            for r in rows
        ]

    def revoke_sandbox(self, client_id: str, sandbox: str) -> bool:
        """Take a sandbox from a client; False when it did not have it."""
        g = t.client_sandboxes.c
        deleted = self.conn.execute(
            delete(t.client_sandboxes).where(g.client_id == client_id, g.sandbox == sandbox)
        )
        return bool(deleted.rowcount)

    def delete_client(self, client_id: str) -> bool:
        """Delete a client and its grants; False when there was none."""
        self.conn.execute(
            delete(t.client_sandboxes).where(t.client_sandboxes.c.client_id == client_id)
        )
        deleted = self.conn.execute(
            delete(t.api_clients).where(t.api_clients.c.client_id == client_id)
        )
        return bool(deleted.rowcount)

    def signing_keys(self) -> dict[str, str]:
        """The token signing keys, kid -> secret, the oldest first."""
        k = t.signing_keys.c
        rows = self.conn.execute(select(k.kid, k.secret).order_by(k.created, k.kid))
        return {row.kid: row.secret for row in rows}

    def delete_signing_keys(self, *, keep: str) -> int:
        """Delete every signing key but ``keep``; how many."""
        k = t.signing_keys.c
        return int(self.conn.execute(delete(t.signing_keys).where(k.kid != keep)).rowcount)

    def newest_signing_key_time(self) -> str | None:
        """When the newest signing key was added (``None``: there is none)."""
        newest: str | None = self.conn.execute(
            select(func.max(t.signing_keys.c.created))
        ).scalar_one()
        return newest

    def add_signing_key(self, kid: str, secret: str, *, now: str) -> None:
        self.conn.execute(insert(t.signing_keys).values(kid=kid, secret=secret, created=now))

    # -- instances -------------------------------------------------------------------

    def insert_instance(self, record: InstanceRecord, refs: Iterable[str]) -> None:
        self.insert_instances([(record, refs)])

    def insert_instances(self, items: Sequence[tuple[InstanceRecord, Iterable[str]]]) -> None:
        """Insert instances with their references, search rows and counts: one statement
        per table for all of them, one library version bump per container."""
        if not items:
            return
        self._write(
            _INSERT_INSTANCE,
            [
                {
                    "instance_id": record.instance_id,
                    "container_id": record.container_id,
                    "schema_id": record.schema_id,
                    "at_id": record.at_id,
                    "name": _name_of(record.body),
                    "etag": record.etag,
                    "created_us": record.created_us,
                    "modified_us": record.modified_us,
                    "body": json_text(record.body),
                    **audit_values(record.audit),
                }
                for record, _ in items
            ],
        )
        refs = [row for record, targets in items for row in _ref_rows(record, targets)]
        if refs:
            self._write(_INSERT_REFS, refs)
        # One library version bump per container: the change sequence of its revisions.
        seqs = {
            container_id: self.bump_library_version(container_id)
            for container_id in dict.fromkeys(record.container_id for record, _ in items)
        }
        self._write(
            _INSERT_REVISION,
            [
                _revision_row(record, "create", change_seq=seqs[record.container_id])
                for record, _ in items
            ],
        )
        search_index.index_instances(self.conn, [record for record, _ in items])
        counts: dict[tuple[str, str], int] = {}
        for record, _ in items:
            key = (record.container_id, record.schema_id)
            counts[key] = counts.get(key, 0) + 1
        for (container_id, schema_id), delta in counts.items():
            self._add_count(container_id, schema_id, delta)

    def _add_count(self, container_id: str, schema_id: str, delta: int) -> None:
        params = {"cid": container_id, "sid": schema_id, "delta": delta}
        if self._write(_ADD_COUNT, params).rowcount == 0:
            # The first of its schema. SQLite serialises writers (BEGIN IMMEDIATE), but two
            # PostgreSQL writers may both get here: the second adds to the first's row.
            counts = t.instance_counts
            self.conn.execute(
                upsert(self.conn, counts)
                .values(
                    container_id=container_id,
                    schema_id=schema_id,
                    count=max(delta, 0),
                )
                .on_conflict_do_update(
                    index_elements=[counts.c.container_id, counts.c.schema_id],
                    set_={"count": counts.c.count + delta},
                )
            )

    def update_instance(
        self,
        record: InstanceRecord,
        refs: Iterable[str],
        *,
        expected_etag: int,
        previous_refs: Iterable[str] | None = None,
    ) -> bool:
        """Store a new revision; False (and nothing written) when the etag moved on.
        ``previous_refs``: the references the stored revision holds (its ``instance_refs``
        rows); when they are ``refs`` again, those rows are left as they are."""
        body = json_text(record.body)
        result = self._write(
            _UPDATE_INSTANCE,
            {
                "iid": record.instance_id,
                "cid": record.container_id,
                "expected_etag": expected_etag,
                "new_name": _name_of(record.body),
                "new_etag": record.etag,
                "new_modified": record.audit.modified,
                "new_modified_us": record.modified_us,
                "new_modified_by": record.audit.modified_by,
                "new_modified_client": record.audit.modified_client,
                "new_body": body,
            },
        )
        if result.rowcount != 1:
            return False
        refs = list(dict.fromkeys(refs))
        if previous_refs is None or set(previous_refs) != set(refs):
            self._write(_DELETE_REFS, {"iid": record.instance_id})
            self._write_refs(record, refs)
        seq = self.bump_library_version(record.container_id)
        self._write(_INSERT_REVISION, _revision_row(record, "update", change_seq=seq, body=body))
        search_index.reindex_instance(self.conn, record)
        return True

    def delete_instance(
        self, record: InstanceRecord, *, audit: Audit | None = None, at_us: int | None = None
    ) -> bool:
        """Delete ``record``; ``audit``/``at_us`` say who deleted it and when (its history's
        last row), by default its last writer."""
        result = self.conn.execute(
            delete(t.instances).where(
                t.instances.c.instance_id == record.instance_id,
                t.instances.c.container_id == record.container_id,
            )
        )
        self._write(_DELETE_REFS, {"iid": record.instance_id})
        deleted = result.rowcount == 1
        seq = self.bump_library_version(record.container_id)
        if deleted:
            self._keep_revision(
                record,
                "delete",
                revision=record.etag + 1,
                audit=audit or record.audit,
                at_us=record.modified_us if at_us is None else at_us,
                change_seq=seq,
            )
            search_index.remove_instance(self.conn, record.instance_id)
            self._add_count(record.container_id, record.schema_id, -1)
        return deleted

    def _keep_revision(
        self,
        record: InstanceRecord,
        action: str,
        *,
        revision: int | None = None,
        audit: Audit | None = None,
        at_us: int | None = None,
        change_seq: int,
    ) -> None:
        """Every write keeps its revision, in its own transaction: no path writes without."""
        row = _revision_row(
            record, action, revision=revision, audit=audit, at_us=at_us, change_seq=change_seq
        )
        self._write(_INSERT_REVISION, row)

    def revisions(self, container_id: str, instance_id: str) -> list[RevisionRecord]:
        """An instance's kept writes, newest first."""
        revisions = t.instance_revisions
        rows = self.conn.execute(
            select(revisions)
            .where(
                revisions.c.container_id == container_id,
                revisions.c.instance_id == instance_id,
            )
            .order_by(revisions.c.revision.desc())
        )
        return [revision_from_row(row) for row in rows]

    def _write_refs(self, record: InstanceRecord, refs: Iterable[str]) -> None:
        rows = _ref_rows(record, refs)
        if rows:
            self._write(_INSERT_REFS, rows)

    def get_instance(self, container_id: str, instance_id: str) -> InstanceRecord | None:
        params = {"container_id": container_id, "instance_id": instance_id}
        rows = self._rows(_GET_INSTANCE, params)
        return instance_from_row(rows[0]) if rows else None

    def instances_by_at_id(
        self, container_id: str, at_ids: Sequence[str]
    ) -> dict[str, InstanceRecord]:
        if not at_ids:
            return {}
        params = {"container_id": container_id, "at_ids": list(dict.fromkeys(at_ids))}
        return {row.at_id: instance_from_row(row) for row in self._rows(_BY_AT_ID, params)}

    def referrers(self, container_id: str, at_id: str) -> list[InstanceRecord]:
        """Instances that reference ``at_id``, oldest first."""
        rows = self.conn.execute(
            select(t.instances)
            .join(t.instance_refs, t.instance_refs.c.from_instance_id == t.instances.c.instance_id)
            .where(
                t.instance_refs.c.container_id == container_id, t.instance_refs.c.to_at_id == at_id
            )
            .order_by(t.instances.c.created_us, t.instances.c.instance_id)
        )
        return [instance_from_row(row) for row in rows]

    def all_instances(self, container_id: str) -> list[InstanceRecord]:
        rows = self.conn.execute(
            select(t.instances)
            .where(t.instances.c.container_id == container_id)
            .order_by(t.instances.c.instance_id)
        )
        return [instance_from_row(row) for row in rows]

    def names(self, container_id: str, schema_id: str, *, limit: int) -> list[tuple[str, str]]:
        """``(@id, name)`` of a schema's instances by name (the kept ``name`` column; no
        body is read): what a select of references lists."""
        instances = t.instances
        order: list[ColumnElement[Any]] = [instances.c.name, instances.c.at_id]
        if self.conn.dialect.name == "postgresql":  # its index holds the names' first part
            order.insert(0, t.indexed_prefix(instances.c.name))
        rows = self.conn.execute(
            select(instances.c.at_id, instances.c.name)
            .where(instances.c.container_id == container_id, instances.c.schema_id == schema_id)
            .order_by(*order)
            .limit(limit)
        )
        return [(row.at_id, row.name or row.at_id) for row in rows]

    def changes_since(
        self, container_id: str, seq: int
    ) -> tuple[int, list[tuple[str, str | None, str | None, int | None, Any]]]:
        """The container's library version, and every instance written after library
        version ``seq`` as (``@id``, schema id, instance id, etag, body) — the last four
        ``None`` when it is deleted now: in one statement, so both come from one
        consistent read (a snapshot refresh reads what changed since its version, not the
        library; ``ix_revisions_change_seq`` finds the writes).

        Every write with a ``change_seq`` up to the version read is in the same read (the
        writes to a container commit in version order: ``bump_library_version``); later
        ones are read next time."""
        m = "?" if self.conn.dialect.paramstyle == "qmark" else "%s"
        cursor = self.conn.exec_driver_sql(
            "SELECT c.library_version, w.at_id, i.schema_id, i.instance_id, i.etag, i.body "
            "FROM containers c LEFT JOIN (SELECT DISTINCT at_id FROM instance_revisions "
            f"WHERE container_id = {m} AND change_seq > {m}) w ON 1 = 1 "
            "LEFT JOIN instances i ON i.container_id = c.container_id AND i.at_id = w.at_id "
            f"WHERE c.container_id = {m}",
            (container_id, seq, container_id),
        ).cursor
        assert cursor is not None
        rows = cursor.fetchall()
        if not rows:
            return 0, []
        loads = orjson.loads
        return int(rows[0][0]), [
            (a, s, i, int(e), loads(b)) if s is not None else (a, None, None, None, None)
            for _, a, s, i, e, b in rows
            if a is not None
        ]

    def cap_epochs(self, container_id: str) -> dict[str, int]:
        rows = self.conn.execute(
            select(t.cap_epochs.c.offer_id, t.cap_epochs.c.epoch).where(
                t.cap_epochs.c.container_id == container_id
            )
        )
        return {row.offer_id: int(row.epoch) for row in rows}

    def bump_cap_epoch(self, container_id: str, offer_id: str) -> None:
        """Restart an offer's counting: later counters carry the new epoch."""
        epochs = t.cap_epochs
        self.conn.execute(
            upsert(self.conn, epochs)
            .values(container_id=container_id, offer_id=offer_id, epoch=1)
            .on_conflict_do_update(
                index_elements=[epochs.c.container_id, epochs.c.offer_id],
                set_={"epoch": epochs.c.epoch + 1},
            )
        )

    def count_instances(self, container_id: str, schema_id: str | None = None) -> int:
        """Instances in the container (of one schema): read from the kept counts."""
        if schema_id is not None:
            rows = self._rows(_COUNT, {"cid": container_id, "sid": schema_id})
            return int(rows[0][0] or 0) if rows else 0
        query = select(func.sum(t.instance_counts.c.count)).where(
            t.instance_counts.c.container_id == container_id
        )
        return int(self.conn.execute(query).scalar() or 0)


def _ref_rows(record: InstanceRecord, refs: Iterable[str]) -> list[dict[str, str]]:
    return [
        {
            "container_id": record.container_id,
            "from_instance_id": record.instance_id,
            "to_at_id": ref,
        }
        for ref in dict.fromkeys(refs)
    ]


def _name_of(body: dict[str, Any]) -> str | None:
    name = body.get("xdm:name", body.get("name"))
    return name if isinstance(name, str) else None


def _revision_row(
    record: InstanceRecord,
    action: str,
    *,
    revision: int | None = None,
    audit: Audit | None = None,
    at_us: int | None = None,
    change_seq: int,
    body: str | None = None,
) -> dict[str, Any]:
    """The ``instance_revisions`` row of one write of ``record`` (``change_seq``: the
    library version the write made, ``Session.bump_library_version``; ``body``: its
    body as JSON, when the caller has it already)."""
    audit = audit or record.audit
    return {
        "container_id": record.container_id,
        "instance_id": record.instance_id,
        "revision": record.etag if revision is None else revision,
        "action": action,
        "schema_id": record.schema_id,
        "at_id": record.at_id,
        "modified": audit.modified,
        "modified_us": record.modified_us if at_us is None else at_us,
        "modified_by": audit.modified_by,
        "modified_client": audit.modified_client,
        "body": json_text(record.body) if body is None else body,
        "change_seq": change_seq,
    }
