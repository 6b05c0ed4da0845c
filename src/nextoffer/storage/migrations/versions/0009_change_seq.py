"""Change sequence: every instance write carries the library version it made (issue 22).

Revision ID: 0009_change_seq
Revises: 0008_fts_writes
Create Date: 2026-12-05

``instance_revisions.change_seq`` is the container's ``library_version`` after the write
that kept the row (``Session`` bumps the version and writes the row in one transaction),
and ``ix_revisions_change_seq`` finds a container's writes after a given version: what a
snapshot refresh reads instead of the instances modified in the last minutes by the
clock (``Session.changes_since``; the ordering argument is in docs/design.md, "Compiled
snapshots"). Existing rows are backfilled with their container's current version: any
value up to it is right, since a process's first build reads the whole library and only
later writes are read by the sequence.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_change_seq"
down_revision = "0008_fts_writes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instance_revisions") as batch:
        batch.add_column(sa.Column("change_seq", sa.BigInteger, nullable=False, server_default="0"))
    op.execute(
        "UPDATE instance_revisions SET change_seq = COALESCE((SELECT library_version"
        " FROM containers WHERE containers.container_id = instance_revisions.container_id),"
        " 0)"
    )
    op.create_index("ix_revisions_change_seq", "instance_revisions", ["container_id", "change_seq"])


def downgrade() -> None:
    op.drop_index("ix_revisions_change_seq", table_name="instance_revisions")
    with op.batch_alter_table("instance_revisions") as batch:
        batch.drop_column("change_seq")
