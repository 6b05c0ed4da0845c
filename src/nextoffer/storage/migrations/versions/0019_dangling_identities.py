"""Identities that name a deleted profile are removed.

Revision ID: 0019_dangling_identities
Revises: 0018_search_text_prefix
Create Date: 2026-12-07

On PostgreSQL an upsert adding an identity to a profile while the profile was deleted
could commit after the delete: the identity's row then named a profile that no longer
existed. No read found a profile through it, and every later upsert of that identity
failed. Writes now lock the profiles they find (``Runtime.find_profile_id``); this
revision deletes the rows such races left. An identity always names a profile when it is
written, so no other row is touched. Nothing to undo on downgrade.
"""

from __future__ import annotations

from alembic import op

revision = "0019_dangling_identities"
down_revision = "0018_search_text_prefix"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "DELETE FROM profile_identities WHERE NOT EXISTS"
        " (SELECT 1 FROM profiles WHERE profiles.profile_id = profile_identities.profile_id)"
    )


def downgrade() -> None:
    pass
