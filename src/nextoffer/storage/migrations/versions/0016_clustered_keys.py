"""SQLite: the tables a decision reads by key keep their rows in their key's b-tree.

Revision ID: 0016_clustered_keys
Revises: 0011_profile_seq
Create Date: 2026-12-06

``profiles``, ``profile_identities`` and ``cap_counters`` have text primary keys. As rowid
tables, SQLite kept each of them as two b-trees, the key's index and the rows, so a
lookup by key read a leaf of each: the decision's profile read four leaves (the
identity's index and row, the profile's index and row), the record's counters two per
counter. ``WITHOUT ROWID`` tables keep the row in the key's b-tree: two leaves for the
profile read, one per counter. With two workers, every commit of one empties the other's
page cache, so those leaves are mostly read from the file again (docs/benchmarks.md,
"The kernel and SQLite work of a decision"). Each table is rebuilt with its rows and
indexes as they were; the columns do not change. Nothing changes on PostgreSQL.
Downgrading rebuilds them as rowid tables.
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import BigInteger, Column, Index, MetaData, String, Table, Text
from sqlalchemy.schema import CreateIndex, CreateTable

revision = "0016_clustered_keys"
down_revision = "0011_profile_seq"
branch_labels = None
depends_on = None


def _tables(*, with_rowid: bool, suffix: str = "") -> list[Table]:
    """The three tables as they are at this revision (a frozen copy of ``tables.py``),
    their names ending in ``suffix``; their indexes only without one."""
    m = MetaData()
    indexed = not suffix

    def indexes(*made: Index) -> list[Index]:
        return list(made) if indexed else []

    return [
        Table(
            "profiles" + suffix,
            m,
            Column("profile_id", String(36), primary_key=True),
            Column("org_id", String(255), nullable=False),
            Column("sandbox", String(255), nullable=False),
            Column("attributes", Text, nullable=False),
            Column("created", String(32), nullable=False),
            Column("modified", String(32), nullable=False),
            *indexes(Index("ix_profiles_tenant", "org_id", "sandbox", "profile_id")),
            sqlite_with_rowid=with_rowid,
        ),
        Table(
            "profile_identities" + suffix,
            m,
            Column("org_id", String(255), primary_key=True),
            Column("sandbox", String(255), primary_key=True),
            Column("namespace", String(255), primary_key=True),
            Column("identity", String(1024), primary_key=True),
            Column("profile_id", String(36), nullable=False),
            *indexes(Index("ix_profile_identities_profile", "profile_id")),
            sqlite_with_rowid=with_rowid,
        ),
        Table(
            "cap_counters" + suffix,
            m,
            Column("counter_key", String(1400), primary_key=True),
            Column("container_id", String(36), nullable=False),
            Column("count", BigInteger, nullable=False),
            sqlite_with_rowid=with_rowid,
        ),
    ]


def _rebuild(*, with_rowid: bool) -> None:
    """Each table made again as ``with_rowid`` says, with its rows and its indexes."""
    dialect = op.get_bind().dialect
    rebuilt = _tables(with_rowid=with_rowid, suffix="_rebuilt")
    for table, new in zip(_tables(with_rowid=with_rowid), rebuilt, strict=True):
        columns = ", ".join(column.name for column in table.columns)
        op.execute(str(CreateTable(new).compile(dialect=dialect)).strip())
        op.execute(f"INSERT INTO {new.name} ({columns}) SELECT {columns} FROM {table.name}")
        op.execute(f"DROP TABLE {table.name}")
        op.execute(f"ALTER TABLE {new.name} RENAME TO {table.name}")
        for index in table.indexes:
            op.execute(str(CreateIndex(index).compile(dialect=dialect)).strip())


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild(with_rowid=False)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild(with_rowid=True)
