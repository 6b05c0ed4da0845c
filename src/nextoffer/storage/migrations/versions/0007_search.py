"""Search at 100,000 instances (issue 22): document numbers, typed indexes, one row each.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05

* ``search_docs``: one row per indexed instance, its *document number*; a row of
  ``search_values`` has the id ``doc << 20 | n``, so an FTS5 rowid names its instance
  (SQLite) and PostgreSQL keeps every word of the instance in ``search_docs.words``
  (a ``tsvector`` with a GIN index) for one-word ``q`` terms.
* ``ix_search_values_text`` / ``_num`` lead with ``vtype`` after the path: a typed
  comparison is one index range, not a row lookup per candidate.
* PostgreSQL: ``search_values.id`` becomes BIGINT; ``vtext`` compares in the "C"
  collation (code-point order, and ``LIKE 'abc%'`` uses the index).
* SQLite: ``search_fts`` loses its unused ``scope`` column.

The index's rows change shape (``search_index.INDEX_VERSION`` 2), so they are emptied
here and a database holding instances is re-indexed once, by the first search
(``search_index.ensure_current``), as after any change of the index. Downgrading does
the same for the older shape.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_FTS_DROP = (
    "DROP TRIGGER IF EXISTS search_values_fts_insert",
    "DROP TRIGGER IF EXISTS search_values_fts_delete",
    "DROP TABLE IF EXISTS search_fts",
)
_FTS_NEW = (
    "CREATE VIRTUAL TABLE search_fts USING fts5("
    "vtext, content='', tokenize='unicode61 remove_diacritics 2')",
    "CREATE TRIGGER search_values_fts_insert AFTER INSERT ON search_values "
    "WHEN new.vtype IN ('s', 'd') BEGIN "
    "INSERT INTO search_fts(rowid, vtext) VALUES (new.id, new.vtext); "
    "END",
    "CREATE TRIGGER search_values_fts_delete AFTER DELETE ON search_values "
    "WHEN old.vtype IN ('s', 'd') BEGIN "
    "INSERT INTO search_fts(search_fts, rowid, vtext) VALUES ('delete', old.id, old.vtext); "
    "END",
)
_FTS_OLD = (
    "CREATE VIRTUAL TABLE search_fts USING fts5("
    "vtext, scope, content='', tokenize='unicode61 remove_diacritics 2')",
    "CREATE TRIGGER search_values_fts_insert AFTER INSERT ON search_values "
    "WHEN new.vtype IN ('s', 'd') BEGIN "
    "INSERT INTO search_fts(rowid, vtext, scope) VALUES (new.id, new.vtext, 's' || new.scope); "
    "END",
    "CREATE TRIGGER search_values_fts_delete AFTER DELETE ON search_values "
    "WHEN old.vtype IN ('s', 'd') BEGIN "
    "INSERT INTO search_fts(search_fts, rowid, vtext, scope) "
    "VALUES ('delete', old.id, old.vtext, 's' || old.scope); "
    "END",
)


def _empty_index(version_if_instances: int, version_if_empty: int) -> None:
    """Drop every row of the index; mark it for re-indexing when instances exist."""
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute("TRUNCATE search_values")
    else:
        op.execute("DELETE FROM search_values")
    existing = bind.execute(sa.text("SELECT 1 FROM instances LIMIT 1")).first()
    version = version_if_instances if existing else version_if_empty
    op.execute(sa.text("UPDATE search_state SET version = :v").bindparams(v=version))


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if not postgres:
        for statement in _FTS_DROP:
            op.execute(statement)
    _empty_index(0, 2)
    op.create_table(
        "search_docs",
        sa.Column("doc", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("scope", sa.Integer(), nullable=False),
        sa.Column("instance_id", sa.String(36), nullable=False),
        sa.Column("words", postgresql.TSVECTOR() if postgres else sa.Text()),
        sa.UniqueConstraint("instance_id", name="uq_search_docs_instance"),
    )
    op.drop_index("ix_search_values_text", table_name="search_values")
    op.drop_index("ix_search_values_num", table_name="search_values")
    if postgres:
        op.create_index("ix_search_docs_words", "search_docs", ["words"], postgresql_using="gin")
        op.alter_column("search_values", "id", type_=sa.BigInteger(), existing_nullable=False)
        op.alter_column("search_values", "vtext", type_=postgresql.TEXT(collation="C"))
    op.create_index(
        "ix_search_values_text",
        "search_values",
        ["scope", "path", "vtype", "vtext", "instance_id"],
    )
    op.create_index(
        "ix_search_values_num",
        "search_values",
        ["scope", "path", "vtype", "vnum", "instance_id"],
    )
    if not postgres:
        for statement in _FTS_NEW:
            op.execute(statement)


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if not postgres:
        for statement in _FTS_DROP:
            op.execute(statement)
    _empty_index(0, 1)
    op.drop_index("ix_search_values_text", table_name="search_values")
    op.drop_index("ix_search_values_num", table_name="search_values")
    if postgres:
        op.drop_index("ix_search_docs_words", table_name="search_docs")
        op.alter_column("search_values", "vtext", type_=sa.Text())
        op.alter_column("search_values", "id", type_=sa.Integer(), existing_nullable=False)
    op.drop_table("search_docs")
    op.create_index(
        "ix_search_values_text", "search_values", ["scope", "path", "vtext", "instance_id"]
    )
    op.create_index(
        "ix_search_values_num", "search_values", ["scope", "path", "vnum", "instance_id"]
    )
    if not postgres:
        for statement in _FTS_OLD:
            op.execute(statement)
