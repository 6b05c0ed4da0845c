"""Revisions: every write of a library instance, kept (issue 19).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05

``instance_revisions`` holds one row per create, update and delete of an instance: the
body as it was written, who wrote it and when (``Session`` adds the row in the same
transaction as the write, so no path can write without one). Existing instances get one
``create`` row each, carrying their current body and etag, so every instance has a history.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "instance_revisions",
        sa.Column("container_id", sa.String(36), nullable=False),
        sa.Column("instance_id", sa.String(36), nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("schema_id", sa.String(255), nullable=False),
        sa.Column("at_id", sa.String(64), nullable=False),
        sa.Column("modified", sa.String(32), nullable=False),
        sa.Column("modified_us", sa.BigInteger, nullable=False),
        sa.Column("modified_by", sa.String(255), nullable=False),
        sa.Column("modified_client", sa.String(255), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("container_id", "instance_id", "revision"),
    )
    op.execute(
        "INSERT INTO instance_revisions (container_id, instance_id, revision, action,"
        " schema_id, at_id, modified, modified_us, modified_by, modified_client, body)"
        " SELECT container_id, instance_id, etag, 'create', schema_id, at_id, modified,"
        " modified_us, modified_by, modified_client, body FROM instances"
    )


def downgrade() -> None:
    op.drop_table("instance_revisions")
