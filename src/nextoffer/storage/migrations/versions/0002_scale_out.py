"""Scale-out: PostgreSQL full-text search, and a tripwire for pre-migration binaries.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29

* ``search_values.vwords``: the words of a string value as :func:`repository.query.tokens`
  finds them. On PostgreSQL it is a ``tsvector`` under a GIN index and answers ``q``
  (SQLite keeps answering from FTS5 and leaves the column empty). Existing PostgreSQL
  indexes are marked stale, so the first search rebuilds them with the words.
* ``schema_info.version`` becomes 2: nextoffer 0.1 (which read that row instead of
  Alembic's) refuses a version above 1, so an old binary cannot run on this schema.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.add_column(
        "search_values", sa.Column("vwords", postgresql.TSVECTOR() if postgres else sa.Text())
    )
    if postgres:
        op.create_index(
            "ix_search_values_words", "search_values", ["vwords"], postgresql_using="gin"
        )
        op.execute("UPDATE search_state SET version = 0")
    op.execute("UPDATE schema_info SET version = 2")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_search_values_words", table_name="search_values")
    # A plain DROP COLUMN (SQLite >= 3.35): batch mode would copy the table and lose the
    # full-text triggers that hang on it.
    op.drop_column("search_values", "vwords")
    op.execute("UPDATE schema_info SET version = 1")
