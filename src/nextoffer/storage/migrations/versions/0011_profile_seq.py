"""The profiles' change sequence: what a node's profile cache follows (issue 16).

Revision ID: 0011_profile_seq
Revises: 0010_report_fold
Create Date: 2026-12-05

* ``profile_seq``: one row (``name = 'profiles'``), bumped by every transaction that
  changes or deletes profiles, as its last statement (``Runtime.flush``).
* ``profile_changes``: the profiles each number changed, with when; a node reads the rows
  past the number it knows and drops those profiles from its cache
  (``service/profile_cache.py``). Rows older than a few minutes are trimmed by the nodes.

Nothing to backfill: a node's cache starts empty at the current number.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_profile_seq"
down_revision = "0010_report_fold"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "profile_seq",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("seq", sa.BigInteger(), nullable=False),
    )
    op.execute("INSERT INTO profile_seq (name, seq) VALUES ('profiles', 0)")
    op.create_table(
        "profile_changes",
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("profile_id", sa.String(36), nullable=False),
        sa.Column("changed_us", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_profile_changes_seq", "profile_changes", ["seq"])
    op.create_index("ix_profile_changes_changed", "profile_changes", ["changed_us"])


def downgrade() -> None:
    op.drop_index("ix_profile_changes_changed", table_name="profile_changes")
    op.drop_index("ix_profile_changes_seq", table_name="profile_changes")
    op.drop_table("profile_changes")
    op.drop_table("profile_seq")
