"""Pending policy changes (approvals), disabled users and a per-user token version.

``policy_changes`` holds a change that needs an approval: the proposed policy's SHA-256, the
version it was computed against, its author, reason and preview, until an approver approves
it and its author records it once (``used_at``), or it expires. ``users.disabled`` refuses
every token of a user; ``users.token_version`` invalidates a user's access tokens (bumped on a
password change).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "policy_changes",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("author", sa.String(200), sa.ForeignKey("users.name"), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("expires_at", _ts(), nullable=False),
        sa.Column("base_version", sa.Integer, nullable=True),
        sa.Column("policy_sha256", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("preview_json", sa.Text, nullable=False),
        sa.Column("approver", sa.String(200), nullable=True),
        sa.Column("approval_reason", sa.Text, nullable=True),
        sa.Column("approved_at", _ts(), nullable=True),
        sa.Column("used_at", _ts(), nullable=True),
        sa.Column("used_version", sa.Integer, nullable=True),
    )
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("disabled", sa.Boolean, nullable=False,
                                   server_default=sa.false()))
        batch.add_column(sa.Column("token_version", sa.Integer, nullable=False,
                                   server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("token_version")
        batch.drop_column("disabled")
    op.drop_table("policy_changes")
