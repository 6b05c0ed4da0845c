"""Ranking strategies count one display and one success per proposition and offer.

Revision ID: 0021_ranking_trials
Revises: 0020_experience_event_time
Create Date: 2026-12-07

``ranking_trials`` remembers each (proposition, position, offer, kind) a strategy has
counted: a display or a success repeated under a new event ``_id`` (the Web SDK gives
every event one) adds nothing again (``storage/ranking.py``). Feedback counted before
this revision stays counted as it was; the table starts empty.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021_ranking_trials"
down_revision = "0020_experience_event_time"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ranking_trials",
        sa.Column("container_id", sa.String(36), nullable=False),
        sa.Column("proposition_id", sa.String(36), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("offer_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.Integer, nullable=False),
        sa.Column("decided_us", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("container_id", "proposition_id", "position", "offer_id", "kind"),
    )
    op.create_index("ix_ranking_trials_decided", "ranking_trials", ["decided_us"])


def downgrade() -> None:
    op.drop_index("ix_ranking_trials_decided", table_name="ranking_trials")
    op.drop_table("ranking_trials")
