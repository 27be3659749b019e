"""Initial store: policy versions, geofences, users, append-only hash-chained audit log.

Revision ID: 0001
Revises:
Create Date: 2025-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_SQLITE_TRIGGERS = [
    """CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END""",
    """CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END""",
]

# No '%' in these statements: they pass through a pyformat DB-API driver.
_POSTGRESQL_TRIGGERS = [
    """CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $body$
    BEGIN
        RAISE EXCEPTION USING
            MESSAGE = 'audit_log is append-only: ' || TG_OP || ' refused',
            ERRCODE = 'insufficient_privilege';
    END
    $body$""",
    """CREATE TRIGGER audit_log_no_update_delete BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()""",
    """CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()""",
]


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "policy_versions",
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("recorded_at", _ts(), nullable=False),
        sa.Column("author", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("policy_json", sa.Text, nullable=False),
    )
    op.create_table(
        "geofences",
        sa.Column("version", sa.Integer, sa.ForeignKey("policy_versions.version"),
                  primary_key=True),
        sa.Column("geofence_id", sa.String(200), primary_key=True),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("max_mbps", sa.Float, nullable=True),
        sa.Column("valid_from", _ts(), nullable=True),
        sa.Column("valid_to", _ts(), nullable=True),
        sa.Column("scope_json", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("author", sa.String(200), nullable=False),
        sa.Column("geojson", sa.Text, nullable=False),
        sa.Column("min_lon", sa.Float, nullable=False),
        sa.Column("min_lat", sa.Float, nullable=False),
        sa.Column("max_lon", sa.Float, nullable=False),
        sa.Column("max_lat", sa.Float, nullable=False),
        sa.CheckConstraint("min_lat >= -90 AND max_lat <= 90 AND min_lat <= max_lat "
                           "AND min_lon >= -180 AND max_lon <= 540 AND min_lon <= max_lon",
                           name="ck_geofences_bbox"),
    )
    op.create_index("ix_geofences_bbox", "geofences", ["min_lon", "min_lat", "max_lon", "max_lat"])
    op.create_table(
        "users",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("account", sa.String(200), nullable=True),
        sa.CheckConstraint(
            "role IN ('admin', 'policy_editor', 'approver', 'auditor', 'customer')",
            name="ck_users_role"),
        sa.CheckConstraint("role <> 'customer' OR account IS NOT NULL",
                           name="ck_users_customer_account"),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", _ts(), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(50), nullable=False),
        sa.Column("entity", sa.String(50), nullable=False),
        sa.Column("entity_id", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("before_json", sa.Text, nullable=True),
        sa.Column("after_json", sa.Text, nullable=True),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.UniqueConstraint("prev_hash", name="uq_audit_log_prev_hash"),
        sa.UniqueConstraint("hash", name="uq_audit_log_hash"),
    )
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        statements = _SQLITE_TRIGGERS
    elif dialect == "postgresql":
        statements = _POSTGRESQL_TRIGGERS
    else:
        raise RuntimeError(f"no append-only trigger for the {dialect!r} backend; "
                           "the store supports sqlite and postgresql")
    for sql in statements:
        op.execute(sql)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.drop_table("audit_log")  # drops its triggers with it
    if dialect == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS audit_log_append_only()")
    op.drop_table("users")
    op.drop_index("ix_geofences_bbox", table_name="geofences")
    op.drop_table("geofences")
    op.drop_table("policy_versions")
