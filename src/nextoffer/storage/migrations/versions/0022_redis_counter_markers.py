"""The containers whose cap counters Redis holds, to tell a Redis that lost them.

Revision ID: 0022_redis_counter_markers
Revises: 0021_ranking_trials
Create Date: 2026-12-07

A deployment with ``--redis`` keeps its cap counters there only. Redis restarted without
its data (no append-only file, a new instance, ``FLUSHALL``) answered as if no offer had
ever been proposed, and caps started again from zero. Now the first count of a container
places a marker key beside its counters in Redis and a row here; a container listed here
whose marker is gone has lost its counters (``storage/redis_markers.py``). The table
starts empty: a deployment's containers are listed at their next count, with the
counters Redis holds then.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0022_redis_counter_markers"
down_revision = "0021_ranking_trials"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "redis_counter_markers",
        sa.Column("container_id", sa.String(36), primary_key=True),
        sa.Column("placed", sa.String(32), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("redis_counter_markers")
