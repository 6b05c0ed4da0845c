"""The schema as nextoffer 0.1 made it with ``create_all``: repository, runtime, search.

Revision ID: 0001
Revises:
Create Date: 2026-11-29

The tables are a frozen copy (later revisions change them; this one must keep making the
0.1 schema). Creation is idempotent: a database made by ``create_all`` before migrations
existed is adopted, and only what it lacks is created. Then ``schema_info`` holds
version 1 (what 0.1 wrote), and ``search_state`` says whether the search index is
complete (a database with instances but no index gets indexed once, on first search).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _metadata() -> MetaData:
    m = MetaData()
    Table(
        "schema_info",
        m,
        Column("id", Integer, primary_key=True),
        Column("version", Integer, nullable=False),
    )
    Table(
        "orgs",
        m,
        Column("org_id", String(255), primary_key=True),
        Column("created", String(32), nullable=False),
    )
    Table(
        "sandboxes",
        m,
        Column("org_id", String(255), ForeignKey("orgs.org_id"), nullable=False),
        Column("name", String(255), nullable=False),
        Column("created", String(32), nullable=False),
        sa.PrimaryKeyConstraint("org_id", "name"),
    )
    Table(
        "containers",
        m,
        Column("container_id", String(36), primary_key=True),
        Column("org_id", String(255), nullable=False),
        Column("sandbox", String(255), nullable=False),
        Column("container_type", String(64), nullable=False),
        Column("name", String(255), nullable=False),
        Column("product_contexts", Text, nullable=False),
        Column("etag", Integer, nullable=False),
        Column("created", String(32), nullable=False),
        Column("modified", String(32), nullable=False),
        Column("created_by", String(255), nullable=False),
        Column("modified_by", String(255), nullable=False),
        Column("created_client", String(255), nullable=False),
        Column("modified_client", String(255), nullable=False),
        Column("library_version", BigInteger, nullable=False),
        Index("ix_containers_tenant", "org_id", "sandbox"),
    )
    Table(
        "api_clients",
        m,
        Column("client_id", String(255), primary_key=True),
        Column("org_id", String(255), nullable=False),
        Column("created", String(32), nullable=False),
    )
    Table(
        "client_sandboxes",
        m,
        Column("client_id", String(255), ForeignKey("api_clients.client_id"), nullable=False),
        Column("sandbox", String(255), nullable=False),
        sa.PrimaryKeyConstraint("client_id", "sandbox"),
    )
    Table(
        "signing_keys",
        m,
        Column("kid", String(64), primary_key=True),
        Column("secret", String(128), nullable=False),
        Column("created", String(32), nullable=False),
    )
    instances = Table(
        "instances",
        m,
        Column("instance_id", String(36), primary_key=True),
        Column("container_id", String(36), nullable=False),
        Column("schema_id", String(255), nullable=False),
        Column("at_id", String(64), nullable=False),
        Column("name", Text),
        Column("etag", Integer, nullable=False),
        Column("created", String(32), nullable=False),
        Column("modified", String(32), nullable=False),
        Column("created_us", BigInteger, nullable=False),
        Column("modified_us", BigInteger, nullable=False),
        Column("created_by", String(255), nullable=False),
        Column("modified_by", String(255), nullable=False),
        Column("created_client", String(255), nullable=False),
        Column("modified_client", String(255), nullable=False),
        Column("body", Text, nullable=False),
        sa.UniqueConstraint("container_id", "at_id", name="uq_instances_at_id"),
        Index("ix_instances_schema", "container_id", "schema_id", "instance_id"),
        Index("ix_instances_name", "container_id", "schema_id", "name"),
        Index("ix_instances_created", "container_id", "schema_id", "created_us"),
        Index("ix_instances_modified", "container_id", "schema_id", "modified_us"),
    )
    for name, expression in _MS_INDEXES:
        Index(
            name,
            instances.c.container_id,
            instances.c.schema_id,
            sa.text(expression),
            instances.c.instance_id,
        )
    Table(
        "instance_refs",
        m,
        Column("container_id", String(36), nullable=False),
        Column("from_instance_id", String(36), nullable=False),
        Column("to_at_id", String(64), nullable=False),
        sa.PrimaryKeyConstraint("from_instance_id", "to_at_id"),
        Index("ix_instance_refs_target", "container_id", "to_at_id"),
    )
    Table(
        "instance_counts",
        m,
        Column("container_id", String(36), nullable=False),
        Column("schema_id", String(255), nullable=False),
        Column("count", Integer, nullable=False),
        sa.PrimaryKeyConstraint("container_id", "schema_id"),
    )
    Table(
        "profiles",
        m,
        Column("profile_id", String(36), primary_key=True),
        Column("org_id", String(255), nullable=False),
        Column("sandbox", String(255), nullable=False),
        Column("attributes", Text, nullable=False),
        Column("created", String(32), nullable=False),
        Column("modified", String(32), nullable=False),
    )
    Table(
        "profile_identities",
        m,
        Column("org_id", String(255), nullable=False),
        Column("sandbox", String(255), nullable=False),
        Column("namespace", String(255), nullable=False),
        Column("identity", String(1024), nullable=False),
        Column("profile_id", String(36), nullable=False),
        sa.PrimaryKeyConstraint("org_id", "sandbox", "namespace", "identity"),
        Index("ix_profile_identities_profile", "profile_id"),
    )
    Table(
        "experience_events",
        m,
        Column("seq", Integer, primary_key=True, autoincrement=True),
        Column("org_id", String(255), nullable=False),
        Column("sandbox", String(255), nullable=False),
        Column("profile_id", String(36), nullable=False),
        Column("event_id", String(255), nullable=False),
        Column("event_type", String(255)),
        Column("timestamp", String(40), nullable=False),
        Column("timestamp_us", BigInteger, nullable=False),
        Column("body", Text, nullable=False),
        sa.UniqueConstraint("org_id", "sandbox", "event_id", name="uq_experience_events_id"),
        Index("ix_experience_events_profile", "profile_id", "timestamp_us"),
    )
    Table(
        "decision_events",
        m,
        Column("proposition_id", String(36), primary_key=True),
        Column("container_id", String(36), nullable=False),
        Column("created", String(32), nullable=False),
        Column("created_us", BigInteger, nullable=False),
        Column("profile_key", String(1100)),
        Column("body", Text, nullable=False),
        Index("ix_decision_events_container", "container_id", "created_us"),
    )
    Table(
        "cap_counters",
        m,
        Column("counter_key", String(1400), primary_key=True),
        Column("container_id", String(36), nullable=False),
        Column("count", BigInteger, nullable=False),
    )
    Table(
        "offer_daily",
        m,
        Column("container_id", String(36), nullable=False),
        Column("day", String(10), nullable=False),
        Column("offer_id", String(64), nullable=False),
        Column("propositions", BigInteger, nullable=False),
        Column("impressions", BigInteger, nullable=False),
        Column("clicks", BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("container_id", "day", "offer_id"),
    )
    Table(
        "cap_epochs",
        m,
        Column("container_id", String(36), nullable=False),
        Column("offer_id", String(64), nullable=False),
        Column("epoch", Integer, nullable=False),
        sa.PrimaryKeyConstraint("container_id", "offer_id"),
    )
    Table(
        "search_scopes",
        m,
        Column("scope", Integer, primary_key=True, autoincrement=True),
        Column("container_id", String(36), nullable=False),
        Column("schema_id", String(255), nullable=False),
        sa.UniqueConstraint("container_id", "schema_id", name="uq_search_scopes"),
    )
    Table(
        "search_values",
        m,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("scope", Integer, nullable=False),
        Column("instance_id", String(36), nullable=False),
        Column("path", Text, nullable=False),
        Column("vtype", String(1), nullable=False),
        Column("vtext", Text),
        Column("vnum", Float),
        Index("ix_search_values_text", "scope", "path", "vtext", "instance_id"),
        Index("ix_search_values_num", "scope", "path", "vnum", "instance_id"),
        Index("ix_search_values_instance", "instance_id"),
    )
    Table(
        "search_state",
        m,
        Column("id", Integer, primary_key=True),
        Column("version", Integer, nullable=False),
    )
    return m


_MS_INDEXES = (
    ("ix_instances_created_ms", "(created_us / 1000)"),
    ("ix_instances_modified_ms", "(modified_us / 1000)"),
)

#: SQLite's full-text index of the string rows of ``search_values``, kept by triggers.
_FTS = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS search_fts USING fts5("
    "vtext, scope, content='', tokenize='unicode61 remove_diacritics 2')",
    "CREATE TRIGGER IF NOT EXISTS search_values_fts_insert AFTER INSERT ON search_values "
    "WHEN new.vtype IN ('s', 'd') BEGIN "
    "INSERT INTO search_fts(rowid, vtext, scope) VALUES (new.id, new.vtext, 's' || new.scope); "
    "END",
    "CREATE TRIGGER IF NOT EXISTS search_values_fts_delete AFTER DELETE ON search_values "
    "WHEN old.vtype IN ('s', 'd') BEGIN "
    "INSERT INTO search_fts(search_fts, rowid, vtext, scope) "
    "VALUES ('delete', old.id, old.vtext, 's' || old.scope); "
    "END",
)
_FTS_DROP = (
    "DROP TRIGGER IF EXISTS search_values_fts_insert",
    "DROP TRIGGER IF EXISTS search_values_fts_delete",
    "DROP TABLE IF EXISTS search_fts",
)


def upgrade() -> None:
    bind = op.get_bind()
    metadata = _metadata()
    had_search = sa.inspect(bind).has_table("search_values")
    metadata.create_all(bind, checkfirst=True)
    # An adopted database may have its tables but not every index made later in 0.1.
    for name, expression in _MS_INDEXES:
        op.create_index(
            name,
            "instances",
            ["container_id", "schema_id", sa.text(expression), "instance_id"],
            if_not_exists=True,
        )
    if bind.dialect.name == "sqlite":
        if not had_search:
            for statement in _FTS_DROP:  # an FTS table without its rows would be wrong
                op.execute(statement)
        for statement in _FTS:
            op.execute(statement)
    schema_info = metadata.tables["schema_info"]
    if bind.execute(sa.select(schema_info.c.version)).first() is None:
        bind.execute(schema_info.insert().values(id=1, version=1))
    search_state = metadata.tables["search_state"]
    if bind.execute(sa.select(search_state.c.version)).first() is None:
        instances = metadata.tables["instances"]
        existing = bind.execute(sa.select(instances.c.instance_id).limit(1)).first()
        bind.execute(search_state.insert().values(id=1, version=0 if existing else 1))


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for statement in _FTS_DROP:
            op.execute(statement)
    _metadata().drop_all(bind)
