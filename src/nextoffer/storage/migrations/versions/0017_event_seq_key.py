"""A decision event's place in commit order is its key; its proposition id stays unique.

Revision ID: 0017_event_seq_key
Revises: 0016_clustered_profiles
Create Date: 2026-12-06

On SQLite ``decision_events`` was a rowid table with a text primary key, so each event
went into four b-trees: the rows (by rowid), the proposition id's index, the container
index and ``ix_decision_events_seq``, although ``seq`` (the writer's largest + 1) and the
rowid were the same number kept twice. Now ``seq`` is ``INTEGER PRIMARY KEY``: it is the
rowid, given by SQLite on insert (the largest + 1, as before), the rows are stored in
its order (which the report fold reads a range of) and its own index is gone: three
b-trees a row. The table is rebuilt with its rows and their places as they were.

On PostgreSQL the primary key moves from ``proposition_id`` to ``seq`` and the proposition
id gets a unique constraint instead, replacing ``ix_decision_events_seq``: the same two
unique indexes, so the schema is the same on both databases.
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.schema import CreateIndex, CreateTable

revision = "0017_event_seq_key"
down_revision = "0016_clustered_profiles"
branch_labels = None
depends_on = None

_COLUMNS = "proposition_id, container_id, created, created_us, profile_key, body, seq, offers"


def _table(*, seq_key: bool, name: str = "decision_events") -> Table:
    """The SQLite table at this revision (``seq_key``) or the one before, as ``name``."""
    m = MetaData()
    if seq_key:
        proposition = Column("proposition_id", String(36), nullable=False)
        seq = Column("seq", Integer, primary_key=True)
    else:
        proposition = Column("proposition_id", String(36), primary_key=True)
        seq = Column("seq", BigInteger)
    unique = [UniqueConstraint("proposition_id", name="uq_decision_events_proposition")]
    return Table(
        name,
        m,
        proposition,
        Column("container_id", String(36), nullable=False),
        Column("created", String(32), nullable=False),
        Column("created_us", BigInteger, nullable=False),
        Column("profile_key", String(1100)),
        Column("body", Text, nullable=False),
        seq,
        Column("offers", Text, nullable=False, server_default="[]"),
        *(unique if seq_key else []),
    )


def _rebuild_sqlite(*, seq_key: bool) -> None:
    dialect = op.get_bind().dialect
    new = _table(seq_key=seq_key, name="decision_events_rebuilt")
    op.execute(str(CreateTable(new).compile(dialect=dialect)).strip())
    op.execute(
        f"INSERT INTO decision_events_rebuilt ({_COLUMNS})"
        f" SELECT {_COLUMNS} FROM decision_events ORDER BY seq"
    )
    op.execute("DROP TABLE decision_events")
    op.execute("ALTER TABLE decision_events_rebuilt RENAME TO decision_events")
    table = _table(seq_key=seq_key)
    indexes = [Index("ix_decision_events_container", table.c.container_id, table.c.created_us)]
    if not seq_key:
        indexes.append(Index("ix_decision_events_seq", table.c.seq, unique=True))
    for index in indexes:
        op.execute(str(CreateIndex(index).compile(dialect=dialect)).strip())


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite(seq_key=True)
        return
    op.execute("ALTER TABLE decision_events DROP CONSTRAINT decision_events_pkey")
    op.create_unique_constraint(
        "uq_decision_events_proposition", "decision_events", ["proposition_id"]
    )
    op.drop_index("ix_decision_events_seq", table_name="decision_events")
    op.create_primary_key("decision_events_pkey", "decision_events", ["seq"])


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite(seq_key=False)
        return
    op.execute("ALTER TABLE decision_events DROP CONSTRAINT decision_events_pkey")
    op.create_index("ix_decision_events_seq", "decision_events", ["seq"], unique=True)
    op.drop_constraint("uq_decision_events_proposition", "decision_events", type_="unique")
    op.create_primary_key("decision_events_pkey", "decision_events", ["proposition_id"])
