"""PostgreSQL indexes the first characters of a searched string or a name, not all of it.

Revision ID: 0018_search_text_prefix
Revises: 0017_event_seq_key
Create Date: 2026-12-07

A b-tree entry of PostgreSQL holds at most 2,704 bytes, and ``ix_search_values_text``
held every string of every instance whole: saving an instance with a longer string that
does not compress (an offer's HTML content, a description, a name of 1,024 characters
outside Latin-1) failed with "index row size … exceeds btree version 4 maximum" — a 503.
On PostgreSQL that index now holds ``vkey``, a new column with the string's first 200
characters (at most 800 bytes), in its place; a comparison tests it through the index
and, for a literal of 200 characters or more, the whole string on the row
(``storage/search_postgres.py``). A column rather than an index on ``left(vtext, 200)``:
PostgreSQL answers from an expression index only by visiting every row it finds, and an
equality that matches a third of a library (``status==approved``) cost 2.6× as much so.
``ix_instances_name`` held instance names (up to 1,024 characters) whole for the same
reason: it now holds ``left(name, 200)``, which a list of names orders by first (no
count is taken there). SQLite has no such limit: it keeps both indexes, and ``vkey``
stays NULL.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018_search_text_prefix"
down_revision = "0017_event_seq_key"
branch_labels = None
depends_on = None

#: ``tables.TEXT_PREFIX``, as of this revision.
_PREFIX = 200


def upgrade() -> None:
    op.add_column("search_values", sa.Column("vkey", sa.Text()))
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute('ALTER TABLE search_values ALTER COLUMN vkey TYPE text COLLATE "C"')
    op.execute(f"UPDATE search_values SET vkey = left(vtext, {_PREFIX}) WHERE vtext IS NOT NULL")
    op.drop_index("ix_search_values_text", table_name="search_values")
    op.create_index(
        "ix_search_values_text_prefix",
        "search_values",
        ["scope", "path", "vtype", "vkey", "instance_id"],
    )
    op.drop_index("ix_instances_name", table_name="instances")
    op.execute(
        "CREATE INDEX ix_instances_name_prefix ON instances"
        f" (container_id, schema_id, left(name, {_PREFIX}))"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_instances_name_prefix", table_name="instances")
        op.create_index("ix_instances_name", "instances", ["container_id", "schema_id", "name"])
        op.drop_index("ix_search_values_text_prefix", table_name="search_values")
        op.create_index(
            "ix_search_values_text",
            "search_values",
            ["scope", "path", "vtype", "vtext", "instance_id"],
        )
    op.drop_column("search_values", "vkey")
