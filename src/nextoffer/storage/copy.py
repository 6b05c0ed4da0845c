"""One database copied into another (``nextoffer db copy``): the way from a SQLite
deployment to PostgreSQL (and back, or between two servers of either).

Both databases are at the newest revision: the source is read as it is, the target is
made by the migrations (so its tables, indexes and sequences are PostgreSQL's own when it
is PostgreSQL) and must hold nothing yet. Every table of ``tables.py`` is copied but two
kinds: ``schema_info``, which the migrations write, and the search index, which is built
again on the target from the instances copied (its rows are the dialect's own: an FTS5
table on SQLite, ``tsvector`` columns on PostgreSQL). Rows keep their values — ids,
sequence numbers, the report's fold watermark, signing keys and clients — so tokens go on
working, and the offers report goes on folding from where it stood.

The source is read in one read transaction (SQLite's snapshot, PostgreSQL's repeatable
read): the copy is the database as it was when the copy began, whatever servers write
meanwhile. What they committed meanwhile is found after the copy, so the operator is told
the copy is not the source as it is now: rows added or deleted by each table's row count;
rows changed in place (a cap counter counted, an offer edited, a row deleted and another
inserted) on SQLite by ``PRAGMA data_version`` (any other connection's commit, tables not
named), on PostgreSQL by each table's rows' ``xmin`` (:func:`_tally`: the tables named).
The target is written in one transaction: a copy that fails leaves it as empty as it
was. Each table's rows are counted on both sides before the commit; a difference
fails the copy. On PostgreSQL the sequences behind identity columns are moved past the
copied values (new events are numbered after them), and the tables are analysed after the
commit, so the planner has statistics before the first node starts.

Cap counters in Redis are not in either database and are not touched: the target lists the
same containers as Redis-held (``redis_counter_markers``), and nodes on the target use the
same Redis.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    URL,
    BigInteger,
    Connection,
    Engine,
    Integer,
    Table,
    delete,
    func,
    literal_column,
    select,
    text,
)

from nextoffer.errors import BadRequest, Conflict
from nextoffer.storage import search_index
from nextoffer.storage import tables as t
from nextoffer.storage.database import parse_url, sqlite_file
from nextoffer.storage.errors import guarded

#: Rows read and inserted at a time.
BATCH = 2000

#: Tables the migrations give one row each (an empty database has them): replaced by the
#: source's rows.
SEEDED = frozenset({"report_folds", "profile_seq"})

#: Not copied: written by the migrations (``schema_info``), or built again on the target
#: from the instances (the search index).
NOT_COPIED = frozenset({"schema_info"}) | frozenset(
    table.name
    for table in (
        search_index.search_scopes,
        search_index.search_docs,
        search_index.search_values,
        search_index.search_state,
    )
)


def copied_tables() -> list[Table]:
    """The tables a copy writes, in the order it writes them."""
    return [table for table in t.metadata.sorted_tables if table.name not in NOT_COPIED]


@dataclass(frozen=True, slots=True)
class Copied:
    """What a copy wrote: rows per table (every table copied, in order), and whether
    another connection wrote to a SQLite source meanwhile (``written``: any commit, rows
    changed in place too, which row counts do not show). From a PostgreSQL source,
    ``marks`` holds each table's mark of its rows' versions as copied (:func:`_tally`),
    which :func:`changed_since` compares with the source's after the copy."""

    rows: dict[str, int]
    written: bool = False
    marks: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.rows.values())


def copy_database(
    source: Engine,
    target: Engine,
    *,
    on_start: Callable[[dict[str, int]], None] | None = None,
    on_table: Callable[[str], None] | None = None,
    on_rows: Callable[[int], None] | None = None,
) -> Copied:
    """Copy every row of ``source`` into ``target`` (both at the newest revision, the
    target holding nothing yet). ``on_start`` hears the rows of each table to copy,
    ``on_table`` each table's name as its copy starts, ``on_rows`` each batch's size as
    it is written."""
    tables = copied_tables()
    with _read(source) as src:
        tallies = {table.name: _tally(src, table) for table in tables}
        counts = {name: rows for name, (rows, _) in tallies.items()}
        marks = {name: mark for name, (_, mark) in tallies.items() if mark is not None}
        version = _data_version(src)  # the snapshot's: taken by the first read above
        if on_start is not None:
            on_start(counts)
        with target.connect().execution_options(nextoffer_write=True) as dst, dst.begin():
            _require_empty(dst, tables)
            for table in tables:
                if on_table is not None:
                    on_table(table.name)
                _copy_table(src, dst, table, on_rows)
            written = {table.name: _count(dst, table) for table in tables}
            differ = [name for name in counts if written[name] != counts[name]]
            if differ:  # nothing should change the target meanwhile: it is empty and ours
                raise Conflict(
                    "the copy's rows differ from the source's in "
                    + ", ".join(f"{n} ({written[n]} of {counts[n]})" for n in differ)
                )
            if dst.dialect.name == "postgresql":
                _advance_sequences(dst, tables)
            search_index.rebuild(dst)
        src.rollback()  # the snapshot ends: the next read sees the source as it is now
        meanwhile = version is not None and _data_version(src) != version
    if target.dialect.name == "postgresql":
        with target.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE"))
    return Copied(counts, meanwhile, marks)


def _data_version(src: Connection) -> int | None:
    """SQLite's ``data_version``: on one connection, a number that moves when another
    connection commits a write (an update in place as well as an insert or a delete).
    ``None`` on PostgreSQL, whose tables are compared one by one (:func:`_tally`)."""
    if src.dialect.name != "sqlite":
        return None
    return int(src.exec_driver_sql("PRAGMA data_version").scalar_one())


def changed_since(source: Engine, copied: Copied) -> dict[str, tuple[int, int]]:
    """The tables ``source`` now holds other rows in than the copy: (rows copied, rows
    now). Rows written after a copy began are not in it. A table whose row count differs;
    from a PostgreSQL source also one whose count is the same but whose rows are not (its
    mark differs: a row updated, or one deleted and another inserted), with equal counts.
    One pass over each table, as when the copy began."""
    with _read(source) as src:
        now = {table.name: _tally(src, table) for table in copied_tables()}
    return {
        name: (rows, now[name][0])
        for name, rows in copied.rows.items()
        if now[name][0] != rows or (name in copied.marks and now[name][1] != copied.marks[name])
    }


def _read(engine: Engine) -> Connection:
    """A connection whose reads all see one snapshot: SQLite's read transaction (the
    engine's ``BEGIN``, deferred: a snapshot from the first read on), PostgreSQL's
    repeatable read, read only."""
    conn = engine.connect()
    if engine.dialect.name == "postgresql":
        conn = conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
    conn.begin()
    return conn


def _count(conn: Connection, table: Table) -> int:
    return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


#: A row version's mark on PostgreSQL: a 64-bit hash of the transaction that wrote it
#: (``xmin``; a 32-bit ``xid``, which has no cast to a number but through text).
_VERSION = literal_column("hashint8extended(xmin::text::int8, 0)", BigInteger)


def _tally(conn: Connection, table: Table) -> tuple[int, int | None]:
    """A table's rows, and on PostgreSQL the mark of their versions (``None`` on SQLite):
    the sum of a hash of each visible row's ``xmin``, in one pass with the count.

    PostgreSQL never changes a row in place: an update, as an insert, writes a new row
    version whose ``xmin`` is its transaction's id, and a delete hides the old one. So
    when no write was committed since a snapshot, the rows visible now are the rows it
    saw, with the same ``xmin`` each, and the mark is the same; any committed write adds
    a version labelled by a transaction the snapshot did not see, or hides one, and the
    mark moves. It stays put only by chance: the hashes of what was added and of what
    was hidden summing alike (about one chance in 2**64), or a row deleted whose frozen
    ``xmin`` (below) is, 2**32 transactions on, the id of the very transaction that
    inserted a row in its place.

    Marks are compared rather than each ``xmin`` judged against the snapshot
    (``pg_current_snapshot()``'s ``xmax`` and ``xip``, ``pg_visible_in_snapshot``),
    which is wrong twice. The snapshot lists top-level transactions only: a write made
    under a savepoint by a transaction open when the copy began, and committed during
    it, passes as seen once a later transaction committed before the copy began (the
    savepoint's id is then below ``xmax``, and not in ``xip``). And a 32-bit ``xmin``
    made into an ``xid8`` (by the epoch, or by ``age()``'s distance) is ambiguous for
    frozen rows, which keep the ``xmin`` they were written with (since PostgreSQL 9.4)
    however many epochs ago: one written 2**32 transactions before the copy looks
    written during it. A mark uses ``xmin`` only as a label, equal or not, so neither
    wraparound nor freezing (which sets flags and keeps ``xmin``), a row lock (``xmax``),
    a rolled-back write or a VACUUM moves it."""
    if conn.dialect.name != "postgresql":
        return _count(conn, table), None
    rows, mark = conn.execute(
        select(func.count(), func.coalesce(func.sum(_VERSION), 0)).select_from(table)
    ).one()
    return int(rows), int(mark)


def _require_empty(dst: Connection, tables: Sequence[Table]) -> None:
    """Refuse a target that holds anything but the rows its migrations wrote."""
    held = [table.name for table in tables if table.name not in SEEDED and _count(dst, table) > 0]
    if held:
        raise Conflict(
            "the target database is not empty (rows in " + ", ".join(held) + "): copy into a"
            f" new database, or empty this one first ({emptying(dst.engine.url)})"
        )


def emptying(url: str | URL) -> str:
    """The command that empties the target for another copy. It names the target: without
    ``--db``, ``downgrade --to base`` drops every table of the default database, which is
    the copy's source when the source is the default (``./.nextoffer/nextoffer.db``)."""
    parsed = parse_url(url) if isinstance(url, str) else url
    parsed = parsed.set(drivername=parsed.get_backend_name())  # as given: no driver named
    shown = parsed.render_as_string(hide_password=True)
    secret = " (its password in place of ***)" if parsed.password else ""
    return f"`nextoffer db downgrade --to base --db '{shown}'`{secret}"


def _copy_table(
    src: Connection, dst: Connection, table: Table, on_rows: Callable[[int], None] | None
) -> None:
    if table.name in SEEDED:
        dst.execute(delete(table))
    result = src.execution_options(yield_per=BATCH).execute(select(table))
    # A refused write names its table: a value one database held and the other cannot
    # (PostgreSQL refuses a NUL in text, which SQLite keeps).
    with guarded(f"copying {table.name}"), _writer(dst, table) as write:
        for part in result.partitions():
            write(part)
            if on_rows is not None:
                on_rows(len(part))


@contextmanager
def _writer(dst: Connection, table: Table) -> Iterator[Callable[[Sequence[Any]], None]]:
    """How a table's rows are written, on the target's own driver in its transaction:
    one ``COPY FROM STDIN`` a table on PostgreSQL (psycopg's ``copy``), ``executemany``
    a batch on SQLite. The rows come from the source as Python values already; building
    SQLAlchemy's statement per row was most of a copy's time into PostgreSQL
    (docs/benchmarks.md, "Moving a database")."""
    quote = dst.dialect.identifier_preparer.quote
    name = quote(table.name)
    columns = ", ".join(quote(column.name) for column in table.columns)
    driver = dst.connection.driver_connection
    assert driver is not None  # a connection in a transaction has its driver's
    if dst.dialect.name == "postgresql":
        with driver.cursor() as cursor, cursor.copy(f"COPY {name} ({columns}) FROM STDIN") as copy:

            def load(rows: Sequence[Any]) -> None:
                for row in rows:
                    copy.write_row(row)

            yield load
        return
    statement = f"INSERT INTO {name} ({columns}) VALUES ({', '.join('?' * len(table.columns))})"

    def insert_many(rows: Sequence[Any]) -> None:
        driver.executemany(statement, [tuple(row) for row in rows])

    yield insert_many


def _advance_sequences(dst: Connection, tables: Sequence[Table]) -> None:
    """Move each sequence behind an integer key past the largest value copied into it (a
    sequence is not moved by rows inserted with their values)."""
    for table in tables:
        for column in table.primary_key.columns:
            if not isinstance(column.type, Integer):
                continue
            sequence = dst.execute(
                text("SELECT pg_get_serial_sequence(:table, :column)"),
                {"table": table.name, "column": column.name},
            ).scalar()
            if sequence is None:
                continue
            dst.execute(
                text(
                    f"SELECT setval(:sequence, COALESCE(MAX({column.name}), 1),"
                    f" MAX({column.name}) IS NOT NULL) FROM {table.name}"
                ),
                {"sequence": sequence},
            )


def refuse_same(source: str, target: str) -> None:
    """Refuse a copy of a database onto itself (the check would find it not empty, after
    the migrations had run on it: say so first)."""
    if _identity(source) == _identity(target):
        raise BadRequest("the source and the target are one database: copy into another")


def _identity(url: str) -> tuple[str, ...]:
    path = sqlite_file(url)
    if path is not None:
        return ("sqlite", str(path.expanduser().resolve()))
    parsed = parse_url(url)
    backend = {"postgres": "postgresql"}.get(parsed.get_backend_name(), parsed.get_backend_name())
    return (backend, parsed.host or "", str(parsed.port or ""), parsed.database or "")
