"""Datastreams: the public key of the Edge Network endpoints (issue 20).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05

A datastream maps a public id (Adobe's ``configId``) to an org, a sandbox and a
decisioning container, with the browser origins it serves and its request rate.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "datastreams",
        sa.Column("datastream_id", sa.String(36), primary_key=True),
        sa.Column("org_id", sa.String(255), nullable=False),
        sa.Column("sandbox", sa.String(255), nullable=False),
        sa.Column("container_id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("allowed_origins", sa.Text(), nullable=False),
        sa.Column("rate_limit", sa.Integer(), nullable=False),
        sa.Column("created", sa.String(32), nullable=False),
        sa.Column("modified", sa.String(32), nullable=False),
    )
    op.create_index("ix_datastreams_tenant", "datastreams", ["org_id", "sandbox"])


def downgrade() -> None:
    op.drop_index("ix_datastreams_tenant", table_name="datastreams")
    op.drop_table("datastreams")
