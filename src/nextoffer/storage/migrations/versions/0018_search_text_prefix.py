"""PostgreSQL indexes the first characters of a searched string or a name, not all of it.

Revision ID: 0018_search_text_prefix
Revises: 0017_event_seq_key
Create Date: 2026-12-07

A b-tree entry of PostgreSQL holds at most 2,704 bytes, and ``ix_search_values_text``
held every string of every instance whole: saving an instance with a longer string that
does not compress (an offer's HTML content, a description, a name of 1,024 characters
outside Latin-1) failed with "index row size … exceeds btree version 4 maximum" — a 503.
On PostgreSQL that index now holds ``left(vtext, 200)`` (at most 800 bytes) in its
place; a comparison tests the prefix through the index and the whole string on the row
(``storage/search_postgres.py``). ``ix_instances_name`` held instance names (up to 1,024
characters) whole for the same reason: it now holds ``left(name, 200)``, which a list
of names orders by first. SQLite has no such limit and keeps both indexes.
"""

from __future__ import annotations

from alembic import op

revision = "0018_search_text_prefix"
down_revision = "0017_event_seq_key"
branch_labels = None
depends_on = None

#: ``tables.TEXT_PREFIX``, as of this revision.
_PREFIX = 200


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index("ix_search_values_text", table_name="search_values")
    op.execute(
        "CREATE INDEX ix_search_values_text_prefix ON search_values"
        f" (scope, path, vtype, left(vtext, {_PREFIX}), instance_id)"
    )
    op.drop_index("ix_instances_name", table_name="instances")
    op.execute(
        "CREATE INDEX ix_instances_name_prefix ON instances"
        f" (container_id, schema_id, left(name, {_PREFIX}))"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index("ix_instances_name_prefix", table_name="instances")
    op.create_index("ix_instances_name", "instances", ["container_id", "schema_id", "name"])
    op.drop_index("ix_search_values_text_prefix", table_name="search_values")
    op.create_index(
        "ix_search_values_text",
        "search_values",
        ["scope", "path", "vtype", "vtext", "instance_id"],
    )
