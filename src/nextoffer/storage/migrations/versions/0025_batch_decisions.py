"""The ledger of a Spark batch job's committed decisions, per profile.

Revision ID: 0025_batch_decisions
Revises: 0024_counter_erasures
Create Date: 2026-12-08

A Spark task's reservations commit group by group, so a task attempted again (a lost
executor, ``spark.task.maxFailures``) decided its partition a second time and counted the
first attempt's reservations twice; nextoffer allowed no retry. ``batch_decisions`` holds,
per job and profile, what the profile's committed decision reserved and reported, written
in the same transaction as the reservation: a later attempt's decision of the profile
releases it and takes its own (``storage/ledger.py``, ``DecisionLedger``). The rows of a
job are deleted when its Spark run ends. The table starts empty; on SQLite
``WITHOUT ROWID`` (one b-tree, not a table and its key's index: smaller, and quicker to
insert into; docs/batch.md).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0025_batch_decisions"
down_revision = "0024_counter_erasures"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "batch_decisions",
        sa.Column("job_id", sa.String(36), nullable=False),
        sa.Column("profile_id", sa.String(36), nullable=False),
        sa.Column("attempt", sa.String(32), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("offers", sa.Text(), nullable=False),
        sa.Column("reserved", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "profile_id"),
        sqlite_with_rowid=False,  # the rows in their key's b-tree, as the profiles'
    )


def downgrade() -> None:
    op.drop_table("batch_decisions")
