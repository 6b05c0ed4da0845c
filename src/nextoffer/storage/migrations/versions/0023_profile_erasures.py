"""A deleted profile's decision events are deleted too.

Revision ID: 0023_profile_erasures
Revises: 0022_redis_counter_markers
Create Date: 2026-12-07

Deleting a profile deleted its identities, attributes and experience events, and kept
every decision event recorded for it: each names the identity it was decided for, until
retention (if any) deleted it. ``profile_erasures`` queues the events to delete, by the
key they were recorded under and the profile's org and sandbox; servers walk the events
in the background (``Runtime.erase_decision_events``). Profiles deleted before this revision are not
queued.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0023_profile_erasures"
down_revision = "0022_redis_counter_markers"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "profile_erasures",
        sa.Column("profile_key", sa.String(1100), nullable=False),
        sa.Column("org_id", sa.String(255), nullable=False),
        sa.Column("sandbox", sa.String(255), nullable=False),
        sa.Column("until_seq", sa.BigInteger, nullable=False),
        sa.Column("cursor_seq", sa.BigInteger, nullable=False),
        sa.Column("requested", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("profile_key", "org_id", "sandbox"),
    )
    op.create_index("ix_profile_erasures_cursor", "profile_erasures", ["cursor_seq"])


def downgrade() -> None:
    op.drop_index("ix_profile_erasures_cursor", table_name="profile_erasures")
    op.drop_table("profile_erasures")
