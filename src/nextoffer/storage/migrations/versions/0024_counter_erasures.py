"""A deleted profile's cap counters are deleted too.

Revision ID: 0024_counter_erasures
Revises: 0023_profile_erasures
Create Date: 2026-12-07

A visitor decided for before having a profile is counted under its identity's scope,
``identity:<namespace>:<id>``: the identity's own text, in the counters' keys (SQL rows,
or Redis keys). Deleting the profile erased the decision events under that scope and
kept its counters. ``counter_erasures`` queues them, by scope and the profile's org and
sandbox; servers walk the counters in the background (``service/retention.py``). The
erasures still queued for decision events are queued for counters as well; profiles
whose erasure had already finished are not.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0024_counter_erasures"
down_revision = "0023_profile_erasures"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "counter_erasures",
        sa.Column("scope", sa.String(1100), nullable=False),
        sa.Column("org_id", sa.String(255), nullable=False),
        sa.Column("sandbox", sa.String(255), nullable=False),
        sa.Column("requested", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("scope", "org_id", "sandbox"),
    )
    op.execute(
        "INSERT INTO counter_erasures (scope, org_id, sandbox, requested)"
        " SELECT profile_key, org_id, sandbox, requested FROM profile_erasures"
    )


def downgrade() -> None:
    op.drop_table("counter_erasures")
