"""The search index: every property of every instance as a row, kept in step with writes.

``search_values`` holds one row per node of an instance's ``_instance`` object (objects,
arrays and scalars; array positions dropped from the path, so ``xdm:tags`` rows hold each
tag), typed so SQL can compare it:

====== ========================== ==================================================
vtype  meaning                    columns
====== ========================== ==================================================
``s``  string                     ``vtext``
``d``  string that is an RFC 3339 ``vtext``, and ``vnum`` = epoch µs
       date-time
``n``  number                     ``vnum``
``b``  boolean                    ``vtext`` = ``true`` / ``false``
``z``  null                       —
``o``  object                     —
``a``  array                      —
====== ========================== ==================================================

Rows are grouped by a small integer *scope*, one per (container, schema), so an index
range never crosses tenants. Each indexed instance has a *document number*
(``search_docs.doc``), and the id of its ``n``-th row is ``doc << 20 | n``
(:data:`ROW_BITS`): an id names its instance without a table lookup. A property's rows
are unique per instance (an array holding a value twice gives one row), so an equality
range counts instances without a ``DISTINCT`` (``storage/search.py``).

On SQLite the string rows also feed an FTS5 table (``search_fts``, contentless) for
``q``: its rowid is the row's id, so ``rowid >> 20`` is the document. PostgreSQL puts a
``tsvector`` on the same rows instead. The FTS5 rows are written here, one statement per
batch of instances, not by triggers on ``search_values``: FTS5 writes its pending terms
out at every nested statement, so a trigger firing once per string row made a segment per
row — three quarters of an import's index writes (``docs/benchmarks.md``).

The write path keeps the index in step, in the same transaction as the instance write:

* after inserting an instance: ``index_instance(conn, record)``
* after updating one: ``reindex_instance(conn, record)``
* after deleting one: ``remove_instance(conn, instance_id)``

A database whose instances predate the index is indexed once by :func:`ensure_current`.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable
from typing import Any

import orjson
from sqlalchemy import (
    DDL,
    BigInteger,
    Column,
    Connection,
    Engine,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    bindparam,
    delete,
    event,
    insert,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import TSVECTOR
from sqlalchemy.schema import CreateIndex

from nextoffer.errors import PayloadTooLarge
from nextoffer.ids import epoch_micros, parse_datetime
from nextoffer.repository.query import tokens
from nextoffer.repository.records import InstanceRecord
from nextoffer.storage import tables as t

#: Bumped when the index's content changes shape; older databases are re-indexed.
#: 2: row ids ``doc << 20 | n`` (``search_docs``), rows unique per instance, vtype in
#: the indexes (migration ``0007_search``).
INDEX_VERSION = 2

#: The low bits of a row id number the rows of one instance: at most 2**20 of them.
ROW_BITS = 20
MAX_ROWS = 1 << ROW_BITS

search_scopes = Table(
    "search_scopes",
    t.metadata,
    Column("scope", Integer, primary_key=True, autoincrement=True),
    Column("container_id", String(36), nullable=False),
    Column("schema_id", String(255), nullable=False),
    UniqueConstraint("container_id", "schema_id", name="uq_search_scopes"),
)

#: One row per indexed instance: its document number (the high bits of its rows' ids).
search_docs = Table(
    "search_docs",
    t.metadata,
    Column("doc", Integer, primary_key=True, autoincrement=True),
    Column("scope", Integer, nullable=False),
    Column("instance_id", String(36), nullable=False),
    #: PostgreSQL: every word of the instance's strings (no positions), which answers a
    #: one-word ``q`` term without visiting its rows; NULL on SQLite (FTS5 rowids do).
    Column("words", Text().with_variant(TSVECTOR(), "postgresql")),
    UniqueConstraint("instance_id", name="uq_search_docs_instance"),
)
Index("ix_search_docs_words", search_docs.c.words, postgresql_using="gin").ddl_if(
    dialect="postgresql"
)

search_values = Table(
    "search_values",
    t.metadata,
    #: ``doc << 20 | n`` (the FTS5 rowid on SQLite, where INTEGER is 64-bit).
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("scope", Integer, nullable=False),
    Column("instance_id", String(36), nullable=False),
    Column("path", Text, nullable=False),
    Column("vtype", String(1), nullable=False),
    #: Compared in code-point order on both databases (PostgreSQL: the "C" collation,
    #: whatever the database's; it also lets ``LIKE 'abc%'`` use the index).
    Column("vtext", Text().with_variant(postgresql.TEXT(collation="C"), "postgresql")),
    Column("vnum", Float),
    #: PostgreSQL: ``vtext``'s first :data:`~nextoffer.storage.tables.TEXT_PREFIX`
    #: characters, what its index holds (a b-tree entry holds at most 2,704 bytes); a
    #: column, not an expression, so that an index-only scan can answer a comparison.
    #: NULL on SQLite, whose index holds ``vtext`` whole.
    Column("vkey", Text().with_variant(postgresql.TEXT(collation="C"), "postgresql")),
    #: PostgreSQL: the words of a string row (``tokens()``), which answer ``q``; NULL on
    #: SQLite, where FTS5 does (``storage/search_postgres.py``).
    Column("vwords", Text().with_variant(TSVECTOR(), "postgresql")),
    # vtype before the value: a typed test (``vtype = 'n' AND vnum >= 90``) is one range,
    # never a row lookup per candidate.
    Index("ix_search_values_num", "scope", "path", "vtype", "vnum", "instance_id"),
    Index("ix_search_values_instance", "instance_id"),
)
_v = search_values.c
Index("ix_search_values_text", _v.scope, _v.path, _v.vtype, _v.vtext, _v.instance_id).ddl_if(
    dialect="sqlite"
)
Index("ix_search_values_text_prefix", _v.scope, _v.path, _v.vtype, _v.vkey, _v.instance_id).ddl_if(
    dialect="postgresql"
)
Index("ix_search_values_words", _v.vwords, postgresql_using="gin").ddl_if(dialect="postgresql")

search_state = Table(
    "search_state",
    t.metadata,
    Column("id", Integer, primary_key=True),
    Column("version", Integer, nullable=False),
)

#: Dates sort and page in epoch milliseconds (the cursor's unit, spec §5.1); these
#: expression indexes serve ``orderby=±repo:createdDate`` / ``repo:lastModifiedDate``.
CREATED_MS = "created_us / 1000"
MODIFIED_MS = "modified_us / 1000"
Index(
    "ix_instances_created_ms",
    t.instances.c.container_id,
    t.instances.c.schema_id,
    text(f"({CREATED_MS})"),  # PostgreSQL wants an expression in an index in parentheses
    t.instances.c.instance_id,
)
Index(
    "ix_instances_modified_ms",
    t.instances.c.container_id,
    t.instances.c.schema_id,
    text(f"({MODIFIED_MS})"),
    t.instances.c.instance_id,
)

#: The scope lives in ``search_docs`` (found from ``rowid >> 20``), not in the FTS table.
#: Its rows are written by :func:`_index` and :func:`remove_instance` (no triggers).
_FTS_DDL = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS search_fts USING fts5("
    "vtext, content='', tokenize='unicode61 remove_diacritics 2')",
)
_FTS_DROP = (
    # Databases before migration 0008_fts_writes kept the FTS rows by triggers.
    "DROP TRIGGER IF EXISTS search_values_fts_insert",
    "DROP TRIGGER IF EXISTS search_values_fts_delete",
    "DROP TABLE IF EXISTS search_fts",
)
#: The string rows (``vtype`` s and d) go to FTS5 as they are written and leave it before
#: they are deleted (a contentless table is told the text it forgets).
_FTS_FORGET = text(
    "INSERT INTO search_fts(search_fts, rowid, vtext) "
    "SELECT 'delete', id, vtext FROM search_values "
    "WHERE instance_id = :instance_id AND vtype IN ('s', 'd')"
)

for _statement in _FTS_DDL:
    # DDL() is untyped in SQLAlchemy's stubs.
    _ddl = DDL(_statement)  # type: ignore[no-untyped-call]
    event.listen(search_values, "after_create", _ddl.execute_if(dialect="sqlite"))


@event.listens_for(search_state, "after_create")
def _mark_state(_target: Any, connection: Connection, **_kw: Any) -> None:
    # A fresh database is complete from its first write; one with instances already
    # stored needs the one-off indexing of ensure_current().
    existing = connection.execute(select(t.instances.c.instance_id).limit(1)).first()
    version = 0 if existing else INDEX_VERSION
    connection.execute(insert(search_state).values(id=1, version=version))


# -- flattening ----------------------------------------------------------------------


#: A row of the index before it is numbered: (path, vtype, vtext, vnum).
Row = tuple[str, str, str | None, float | None]


def _row(path: str, value: Any) -> Row:
    if isinstance(value, bool):
        return (path, "b", "true" if value else "false", None)
    if isinstance(value, int | float):
        return (path, "n", None, float(value))
    if isinstance(value, str):
        instant = _instant(value)
        if instant is not None:
            return (path, "d", value, float(instant))
        return (path, "s", value, None)
    if isinstance(value, dict):
        return (path, "o", None, None)
    if isinstance(value, list):
        return (path, "a", None, None)
    return (path, "z", None, None)


def _instant(value: str) -> int | None:
    if len(value) < 20 or len(value) > 40 or value[10:11] not in ("T", "t"):
        return None
    try:
        return epoch_micros(parse_datetime(value))
    except (ValueError, OverflowError):
        return None


def flatten(body: dict[str, Any]) -> list[Row]:
    """One row per distinct node below the root, in document order: (path, vtype, vtext,
    vnum) (an array holding the same value twice gives one row)."""
    rows: list[Row] = []

    def walk(node: Any, path: str) -> None:
        rows.append(_row(path, node))
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            elements(node, path)

    def elements(items: list[Any], path: str) -> None:
        # Array elements sit at the array's own path; nested arrays flatten too.
        for item in items:
            if isinstance(item, list):
                elements(item, path)
            else:
                walk(item, path)

    for key, value in body.items():
        walk(value, key)
    return list(dict.fromkeys(rows))


# -- keeping it in step --------------------------------------------------------------

_SCOPE = select(search_scopes.c.scope).where(
    search_scopes.c.container_id == bindparam("container_id"),
    search_scopes.c.schema_id == bindparam("schema_id"),
)
_INSERT_VALUES = insert(search_values)
_DELETE_VALUES = delete(search_values).where(
    search_values.c.instance_id == bindparam("instance_id")
)
_INSERT_DOCS = insert(search_docs).returning(
    search_docs.c.doc, search_docs.c.instance_id, sort_by_parameter_order=True
)
_DELETE_DOC = delete(search_docs).where(search_docs.c.instance_id == bindparam("instance_id"))


def scope_of(conn: Connection, container_id: str, schema_id: str, *, create: bool) -> int | None:
    params = {"container_id": container_id, "schema_id": schema_id}
    scope = conn.execute(_SCOPE, params).scalar()
    if scope is None and create:
        # Writers on PostgreSQL are not serialised: another may create the scope meanwhile.
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        conn.execute(dialect.insert(search_scopes).values(**params).on_conflict_do_nothing())
        scope = conn.execute(_SCOPE, params).scalar()
    return int(scope) if scope is not None else None


#: PostgreSQL refuses longer lexemes; such a word cannot be searched for anyway.
_MAX_WORD_BYTES = 2046


def words(value: str) -> str | None:
    """``value``'s words as a ``tsvector`` literal with positions (PostgreSQL's ``vwords``).

    The words are :func:`~nextoffer.repository.query.tokens`, the ones a ``q`` term is
    split into, so both sides agree on what a word is (PostgreSQL's own parser would
    keep URLs, e-mail addresses and accents whole). Tokens never contain quotes.
    """
    found = [
        f"'{word}':{n}"
        for n, word in enumerate(tokens(value), start=1)
        if len(word.encode()) <= _MAX_WORD_BYTES
    ]
    return " ".join(found) if found else None


def doc_words(rows: Iterable[Row]) -> str | None:
    """Every word of the string ``rows`` of an instance (:func:`flatten`), once, as a
    ``tsvector`` literal without positions (PostgreSQL's ``search_docs.words``)."""
    found: set[str] = set()
    for _, vtype, vtext, _ in rows:
        if vtype in ("s", "d") and vtext is not None:
            found.update(tokens(vtext))
    kept = sorted(f"'{w}'" for w in found if len(w.encode()) <= _MAX_WORD_BYTES)
    return " ".join(kept) if kept else None


def index_instance(conn: Connection, record: InstanceRecord) -> None:
    """Index a newly inserted instance (same transaction as the insert)."""
    index_instances(conn, [record])


def index_instances(conn: Connection, records: Iterable[InstanceRecord]) -> None:
    """Index newly inserted instances (same transaction as the insert): one statement
    for their documents, one for their rows."""
    scopes: dict[tuple[str, str], int | None] = {}
    docs: list[dict[str, Any]] = []
    bodies: list[dict[str, Any]] = []
    for record in records:
        key = (record.container_id, record.schema_id)
        if key not in scopes:
            scopes[key] = scope_of(conn, *key, create=True)
        docs.append({"scope": scopes[key], "instance_id": record.instance_id})
        bodies.append(record.body)
    _index(conn, docs, bodies)


#: SQLite: the rows go to the driver as tuples in one ``executemany`` each (per row,
#: SQLAlchemy's parameter processing cost more than SQLite's insert).
_SQLITE_VALUES = (
    "INSERT INTO search_values (id, scope, instance_id, path, vtype, vtext, vnum) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_SQLITE_FTS = "INSERT INTO search_fts (rowid, vtext) VALUES (?, ?)"


def _index(conn: Connection, docs: list[dict[str, Any]], bodies: list[dict[str, Any]]) -> None:
    """Number ``docs`` (``{"scope", "instance_id"}``) and store the rows of ``bodies``:
    one statement for the documents, one for their rows, one for their FTS5 rows."""
    if not docs:
        return
    flat = [flatten(body) for body in bodies]
    for item, rows in zip(docs, flat, strict=True):
        if len(rows) > MAX_ROWS:
            raise PayloadTooLarge(
                f"instance {item['instance_id']} has more distinct properties and array "
                f"elements than the search index holds: at most {MAX_ROWS:,} per instance"
            )
    postgres = conn.dialect.name == "postgresql"
    if postgres:
        for item, rows in zip(docs, flat, strict=True):
            item["words"] = doc_words(rows)
    numbers = conn.execute(_INSERT_DOCS, docs).all()
    values: list[tuple[int, int, str, str, str, str | None, float | None]] = []
    for (doc, instance_id), item, rows in zip(numbers, docs, flat, strict=True):
        assert instance_id == item["instance_id"]
        base, scope = int(doc) << ROW_BITS, item["scope"]
        values.extend(
            (base | n, scope, instance_id, path, vtype, vtext, vnum)
            for n, (path, vtype, vtext, vnum) in enumerate(rows)
        )
    if not values:
        return
    if postgres:
        params = [
            {
                "id": row_id,
                "scope": scope,
                "instance_id": instance_id,
                "path": path,
                "vtype": vtype,
                "vtext": vtext,
                "vkey": vtext[: t.TEXT_PREFIX] if vtext is not None else None,
                "vnum": vnum,
                "vwords": words(vtext) if vtext is not None and vtype in ("s", "d") else None,
            }
            for row_id, scope, instance_id, path, vtype, vtext, vnum in values
        ]
        conn.execute(_INSERT_VALUES, params)
        return
    conn.exec_driver_sql(_SQLITE_VALUES, values)
    strings = [(row[0], row[5]) for row in values if row[4] in ("s", "d")]
    if strings:
        conn.exec_driver_sql(_SQLITE_FTS, strings)


def remove_instance(conn: Connection, instance_id: str) -> None:
    """Drop a deleted instance from the index."""
    if conn.dialect.name == "sqlite":
        conn.execute(_FTS_FORGET, {"instance_id": instance_id})
    conn.execute(_DELETE_VALUES, {"instance_id": instance_id})
    conn.execute(_DELETE_DOC, {"instance_id": instance_id})


def reindex_instance(conn: Connection, record: InstanceRecord) -> None:
    """Re-index an updated instance: on SQLite only the rows that changed (most updates
    change a few properties), elsewhere all of them."""
    if conn.dialect.name == "sqlite" and _reindex_changed(conn, record):
        return
    remove_instance(conn, record.instance_id)
    index_instance(conn, record)


_SQLITE_ROWS = "SELECT id, scope, path, vtype, vtext, vnum FROM search_values WHERE instance_id = ?"
_SQLITE_FTS_DELETE = "INSERT INTO search_fts(search_fts, rowid, vtext) VALUES ('delete', ?, ?)"
_SQLITE_DELETE_ROW = "DELETE FROM search_values WHERE id = ?"


def _reindex_changed(conn: Connection, record: InstanceRecord) -> bool:
    """SQLite: replace only the rows of ``record`` whose (path, type, value) is not
    indexed already, keeping the others (and its document number). A property's rows
    are unique per instance, so a row is named by its content. False when this cannot
    be done (not indexed yet, or the row numbers would run out): index it afresh.

    An update that changes a priority then writes one row and one FTS5 term instead of
    deleting and inserting the whole document (seven statements; ``bench/library_scale.py``
    measures the write's CPU)."""
    # Straight on the driver's connection (this transaction's): no SQLAlchemy work per
    # statement, as ``Session._write``.
    driver = conn.connection.driver_connection
    assert driver is not None
    stored = driver.execute(_SQLITE_ROWS, (record.instance_id,)).fetchall()
    if not stored:
        return False
    wanted = flatten(record.body)
    if len(wanted) > MAX_ROWS:
        return False  # index_instances says what is wrong
    by_content = {
        (path, vtype, vtext, vnum): row_id for row_id, _, path, vtype, vtext, vnum in stored
    }
    came = [row for row in wanted if row not in by_content]
    kept = set(wanted)
    gone = [(row_id, content) for content, row_id in by_content.items() if content not in kept]
    if not came and not gone:
        return True
    base = (stored[0][0] >> ROW_BITS) << ROW_BITS
    free = max(row_id & (MAX_ROWS - 1) for row_id, *_ in stored) + 1
    if free + len(came) > MAX_ROWS:
        return False
    strings = [(row_id, c[2]) for row_id, c in gone if c[1] in ("s", "d")]
    if strings:
        driver.executemany(_SQLITE_FTS_DELETE, strings)
    if gone:
        driver.executemany(_SQLITE_DELETE_ROW, [(row_id,) for row_id, _ in gone])
    if came:
        scope = stored[0][1]
        values = [
            (base | (free + n), scope, record.instance_id, path, vtype, vtext, vnum)
            for n, (path, vtype, vtext, vnum) in enumerate(came)
        ]
        driver.executemany(_SQLITE_VALUES, values)
        fts = [(row[0], row[5]) for row in values if row[4] in ("s", "d")]
        if fts:
            driver.executemany(_SQLITE_FTS, fts)
    return True


# -- the one-off indexing of older databases -----------------------------------------

_current: weakref.WeakSet[Engine] = weakref.WeakSet()
_lock = threading.Lock()


def ensure_current(engine: Engine, *, batch: int = 1000) -> None:
    """Index every instance once if the index is missing or older (cheap after that)."""
    if engine in _current:
        return
    with _lock:
        if engine in _current:
            return
        with engine.connect().execution_options(nextoffer_write=True) as conn, conn.begin():
            search_state.create(conn, checkfirst=True)
            # FOR UPDATE: nodes sharing a PostgreSQL database rebuild one at a time, and the
            # later ones find the index current (SQLite's BEGIN IMMEDIATE does this there).
            version = conn.execute(select(search_state.c.version).with_for_update()).scalar()
            if version != INDEX_VERSION:
                rebuild(conn, batch=batch)
        _current.add(engine)


def rebuild(conn: Connection, *, batch: int = 1000) -> None:
    """Drop and rebuild the whole index from ``instances`` (in the caller's transaction)."""
    sqlite = conn.dialect.name == "sqlite"
    if sqlite:
        for statement in _FTS_DROP:
            conn.exec_driver_sql(statement)
    search_values.create(conn, checkfirst=True)
    search_scopes.create(conn, checkfirst=True)
    search_docs.create(conn, checkfirst=True)
    conn.execute(delete(search_values))
    conn.execute(delete(search_docs))
    if sqlite:
        for statement in _FTS_DDL:
            conn.exec_driver_sql(statement)
    for index in t.instances.indexes:
        if index.name in ("ix_instances_created_ms", "ix_instances_modified_ms"):
            # IF NOT EXISTS: reflection cannot see expression indexes (checkfirst would not).
            conn.execute(CreateIndex(index, if_not_exists=True))
    last = ""
    i = t.instances
    while True:
        rows = conn.execute(
            select(i.c.instance_id, i.c.container_id, i.c.schema_id, i.c.body)
            .where(i.c.instance_id > last)
            .order_by(i.c.instance_id)
            .limit(batch)
        ).all()
        if not rows:
            break
        docs: list[dict[str, Any]] = []
        for row in rows:
            scope = scope_of(conn, row.container_id, row.schema_id, create=True)
            docs.append({"scope": scope, "instance_id": row.instance_id})
        _index(conn, docs, [orjson.loads(row.body) for row in rows])
        last = rows[-1].instance_id
    updated = conn.execute(search_state.update().values(version=INDEX_VERSION)).rowcount
    if not updated:
        conn.execute(insert(search_state).values(id=1, version=INDEX_VERSION))
