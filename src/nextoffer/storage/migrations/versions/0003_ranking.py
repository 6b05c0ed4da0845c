"""Ranking strategies: their learned statistics and daily report.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05

* ``ranking_state``: a version per container, moved on by every transaction that adds
  feedback to a strategy (decisions read only the cells changed since they last looked);
* ``ranking_stats``: each strategy's sufficient statistics per offer (``engine/strategy.py``);
* ``ranking_daily``: impressions and rewards per strategy, day, offer and exploration.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ranking_state",
        sa.Column("container_id", sa.String(36), primary_key=True),
        sa.Column("version", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "ranking_stats",
        sa.Column("container_id", sa.String(36), nullable=False),
        sa.Column("strategy_id", sa.String(64), nullable=False),
        sa.Column("offer_id", sa.String(64), nullable=False),
        sa.Column("row", sa.Integer, nullable=False),
        sa.Column("col", sa.Integer, nullable=False),
        sa.Column("value", sa.Float(precision=53), nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("container_id", "strategy_id", "offer_id", "row", "col"),
    )
    op.create_index("ix_ranking_stats_version", "ranking_stats", ["container_id", "version"])
    op.create_table(
        "ranking_daily",
        sa.Column("container_id", sa.String(36), nullable=False),
        sa.Column("strategy_id", sa.String(64), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("offer_id", sa.String(64), nullable=False),
        sa.Column("explored", sa.Integer, nullable=False),
        sa.Column("impressions", sa.BigInteger, nullable=False),
        sa.Column("clicks", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("container_id", "strategy_id", "day", "offer_id", "explored"),
    )


def downgrade() -> None:
    op.drop_table("ranking_daily")
    op.drop_index("ix_ranking_stats_version", table_name="ranking_stats")
    op.drop_table("ranking_stats")
    op.drop_table("ranking_state")
