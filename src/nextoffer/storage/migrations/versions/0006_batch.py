"""Batch decisioning: segment definitions, output datasets and batch jobs.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05

* ``segment_definitions``: audiences (a PQL expression), scoped to org and sandbox.
* ``datasets``: where batch jobs write their Parquet files.
* ``batch_jobs``: the workloads API's jobs, their lifecycle and progress; a heartbeat lets
  another process find a job whose runner died.
* ``ix_profiles_tenant``: a batch scans one tenant's profiles in key order.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "segment_definitions",
        sa.Column("segment_id", sa.String(36), primary_key=True),
        sa.Column("org_id", sa.String(255), nullable=False),
        sa.Column("sandbox", sa.String(255), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("modified_ms", sa.BigInteger(), nullable=False),
    )
    op.create_index(
        "ix_segment_definitions_tenant",
        "segment_definitions",
        ["org_id", "sandbox", "created_ms"],
    )
    op.create_table(
        "datasets",
        sa.Column("dataset_id", sa.String(36), primary_key=True),
        sa.Column("org_id", sa.String(255), nullable=False),
        sa.Column("sandbox", sa.String(255), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("location", sa.String(2048), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_datasets_tenant", "datasets", ["org_id", "sandbox", "created_ms"])
    op.create_table(
        "batch_jobs",
        sa.Column("job_id", sa.String(36), primary_key=True),
        sa.Column("org_id", sa.String(255), nullable=False),
        sa.Column("sandbox", sa.String(255), nullable=False),
        sa.Column("container_id", sa.String(36), nullable=False),
        sa.Column("dataset_id", sa.String(36), nullable=False),
        sa.Column("segment_id", sa.String(36), nullable=False),
        sa.Column("engine", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("request", sa.Text(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
        sa.Column("heartbeat_ms", sa.BigInteger()),
        sa.Column("owner", sa.String(255)),
    )
    op.create_index("ix_batch_jobs_status", "batch_jobs", ["status", "created_ms"])
    op.create_index("ix_batch_jobs_dataset", "batch_jobs", ["dataset_id", "status"])
    op.create_index("ix_batch_jobs_tenant", "batch_jobs", ["org_id", "sandbox", "created_ms"])
    op.create_index("ix_profiles_tenant", "profiles", ["org_id", "sandbox", "profile_id"])


def downgrade() -> None:
    op.drop_index("ix_profiles_tenant", table_name="profiles")
    op.drop_table("batch_jobs")
    op.drop_table("datasets")
    op.drop_table("segment_definitions")
