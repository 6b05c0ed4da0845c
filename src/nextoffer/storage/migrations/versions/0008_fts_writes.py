"""SQLite: the FTS5 rows of the search index are written by nextoffer, not by triggers.

Revision ID: 0008_fts_writes
Revises: 0007
Create Date: 2026-12-05

FTS5 writes its pending terms out at the end of every nested statement, so the triggers
on ``search_values`` (one firing per string row) wrote a segment per row.
``storage/search_index.py`` now inserts a batch's string rows into ``search_fts`` in one
statement, and tells it the rows it forgets before deleting them. The triggers go; the
FTS5 table and its rows stay as they are (the same rows, the same rowids). Nothing
changes on PostgreSQL. Downgrading puts the triggers back.
"""

from __future__ import annotations

from alembic import op

revision = "0008_fts_writes"
down_revision = "0007"
branch_labels = None
depends_on = None

_TRIGGERS = (
    "CREATE TRIGGER IF NOT EXISTS search_values_fts_insert AFTER INSERT ON search_values "
    "WHEN new.vtype IN ('s', 'd') BEGIN "
    "INSERT INTO search_fts(rowid, vtext) VALUES (new.id, new.vtext); "
    "END",
    "CREATE TRIGGER IF NOT EXISTS search_values_fts_delete AFTER DELETE ON search_values "
    "WHEN old.vtype IN ('s', 'd') BEGIN "
    "INSERT INTO search_fts(search_fts, rowid, vtext) VALUES ('delete', old.id, old.vtext); "
    "END",
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS search_values_fts_insert")
        op.execute("DROP TRIGGER IF EXISTS search_values_fts_delete")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for statement in _TRIGGERS:
            op.execute(statement)
