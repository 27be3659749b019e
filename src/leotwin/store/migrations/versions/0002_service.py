"""Service tables: password hashes, API tokens, runs, and the current terminals by account.

``current_terminals`` is filled from the latest recorded policy version, so an existing store
keeps working; afterwards ``Store.record_policy`` maintains it in the same transaction as the
version it derives from.

Revision ID: 0002
Revises: 0001
Create Date: 2025-11-25
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "user_passwords",
        sa.Column("name", sa.String(200), sa.ForeignKey("users.name"), primary_key=True),
        sa.Column("password_hash", sa.String(300), nullable=False),
        sa.Column("updated_at", _ts(), nullable=False),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("user_name", sa.String(200), sa.ForeignKey("users.name"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("expires_at", _ts(), nullable=True),
        sa.Column("revoked_at", _ts(), nullable=True),
        sa.UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"),
    )
    op.create_index("ix_api_tokens_user_name", "api_tokens", ["user_name"])
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("progress", sa.Float, nullable=False),
        sa.Column("chunks_done", sa.Integer, nullable=False),
        sa.Column("chunks_total", sa.Integer, nullable=False),
        sa.Column("out_dir", sa.Text, nullable=False),
        sa.Column("scenario", sa.Text, nullable=True),
        sa.Column("time_start", _ts(), nullable=True),
        sa.Column("time_stop", _ts(), nullable=True),
        sa.Column("step_s", sa.Float, nullable=True),
        sa.Column("n_terminals", sa.Integer, nullable=True),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("account", sa.String(200), nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("started_at", _ts(), nullable=True),
        sa.Column("finished_at", _ts(), nullable=True),
        sa.CheckConstraint("status IN ('queued', 'running', 'done', 'failed')",
                           name="ck_runs_status"),
        sa.CheckConstraint("progress >= 0 AND progress <= 1", name="ck_runs_progress"),
    )
    op.create_index("ix_runs_account", "runs", ["account"])
    terminals = op.create_table(
        "current_terminals",
        sa.Column("terminal_id", sa.String(200), primary_key=True),
        sa.Column("account", sa.String(200), nullable=False),
        sa.Column("serial", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("plan", sa.String(200), nullable=True),
        sa.Column("registered", sa.Boolean, nullable=False),
        sa.Column("lat_deg", sa.Float, nullable=True),
        sa.Column("lon_deg", sa.Float, nullable=True),
        sa.Column("version", sa.Integer, sa.ForeignKey("policy_versions.version"),
                  nullable=False),
    )
    op.create_index("ix_current_terminals_account", "current_terminals",
                    ["account", "terminal_id"])
    # Fill from the latest version (plain JSON: migrations do not import the domain models).
    bind = op.get_bind()
    latest = bind.execute(sa.text("SELECT version, policy_json FROM policy_versions "
                                  "ORDER BY version DESC LIMIT 1")).first()
    if latest is not None:
        rows = [{"terminal_id": t["id"], "account": t["account"], "serial": t.get("serial", ""),
                 "kind": t.get("kind", "fixed"), "status": t.get("status", "active"),
                 "plan": t.get("plan"), "registered": bool(t.get("registered", True)),
                 "lat_deg": t.get("lat_deg"), "lon_deg": t.get("lon_deg"),
                 "version": latest.version}
                for t in json.loads(latest.policy_json).get("terminals", [])]
        if rows:
            op.bulk_insert(terminals, rows)


def downgrade() -> None:
    op.drop_index("ix_current_terminals_account", table_name="current_terminals")
    op.drop_table("current_terminals")
    op.drop_index("ix_runs_account", table_name="runs")
    op.drop_table("runs")
    op.drop_index("ix_api_tokens_user_name", table_name="api_tokens")
    op.drop_table("api_tokens")
    op.drop_table("user_passwords")
