"""Experience events indexed by their timestamp, for retention.

Revision ID: 0020_experience_event_time
Revises: 0019_dangling_identities
Create Date: 2026-12-07

``NEXTOFFER_RETAIN_EXPERIENCE_EVENTS_DAYS`` deletes the events older than that, the
oldest first (``service/retention.py``); without an index on the timestamp each pass
would read the whole table. Building it reads the table once.
"""

from __future__ import annotations

from alembic import op

revision = "0020_experience_event_time"
down_revision = "0019_dangling_identities"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_experience_events_time", "experience_events", ["timestamp_us"])


def downgrade() -> None:
    op.drop_index("ix_experience_events_time", table_name="experience_events")
