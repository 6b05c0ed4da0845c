"""SQLite: the profile tables keep their rows in their key's b-tree (``WITHOUT ROWID``).

Revision ID: 0016_clustered_profiles
Revises: 0011_profile_seq
Create Date: 2026-12-06

``profiles`` and ``profile_identities`` have text primary keys. As rowid tables, SQLite
kept each of them as two b-trees, the key's index and the rows, so the decision's profile
read (an identity, then its profile) read four leaves: the identity's index entry and
row, the profile's index entry and row. ``WITHOUT ROWID`` tables keep the row in the
key's b-tree: two leaves. With two workers every commit of one empties the other's page
cache, so those leaves are mostly read from the file again (docs/benchmarks.md, "The
kernel and SQLite work of a recorded decision"). Each table is rebuilt with its rows and
indexes as they were; the columns do not change. Nothing changes on PostgreSQL.
Downgrading rebuilds them as rowid tables.

``cap_counters`` stays a rowid table: its rows are in the order they were made, so the
counters for everyone (made first, updated by almost every batch) share a few pages;
ordered by key they would sit each beside its offer's per-profile counters, and a batch
would write a page per offer it reserved (measured: more pages per batch than the reads
it saved).
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import Column, Index, MetaData, String, Table, Text
from sqlalchemy.schema import CreateIndex, CreateTable

revision = "0016_clustered_profiles"
down_revision = "0011_profile_seq"
branch_labels = None
depends_on = None


def _tables(*, with_rowid: bool, suffix: str = "") -> list[Table]:
    """The two tables as they are at this revision (a frozen copy of ``tables.py``),
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
