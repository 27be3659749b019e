"""SQLAlchemy 2.0 ORM models of the store.

The schema itself is created by the Alembic migrations in ``migrations/versions`` (not by
``metadata.create_all``); these classes mirror it for queries and inserts.

* ``policy_versions`` holds the full :class:`~leotwin.policy.models.Policy` snapshot of every
  version as JSON text — authoritative for as-of replays.
* ``geofences`` denormalises every version's geofences (GeoJSON text plus a lon/lat bbox) for
  queries; it is derived from the snapshot and never read back into a policy.
* ``users`` holds names, roles and (for customers) the one account they belong to.
* ``audit_log`` is append-only (database triggers refuse UPDATE and DELETE) and hash-chained.
* ``user_passwords`` holds an argon2 hash per user who may log in (revision 0002).
* ``api_tokens`` holds revocable API tokens, by the SHA-256 of the token only (0002).
* ``runs`` is the service's table of simulation runs: status, progress, directory (0002).
* ``policy_changes`` holds changes awaiting or holding an approval; ``users.disabled`` and
  ``users.token_version`` disable a user and invalidate its access tokens (0003).
* ``current_terminals`` denormalises the terminals of the latest policy version (maintained by
  ``Store.record_policy`` in the same transaction) so that lists filter by account in SQL.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

ROLES = ("admin", "policy_editor", "approver", "auditor", "customer")
RUN_STATUSES = ("queued", "running", "done", "failed")
GENESIS_HASH = "0" * 64


class UTCDateTime(TypeDecorator):
    """A timezone-aware UTC datetime on every backend (SQLite keeps naive UTC text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class PolicyVersionRow(Base):
    __tablename__ = "policy_versions"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    author: Mapped[str] = mapped_column(String(200), nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    policy_json: Mapped[str] = mapped_column(Text, nullable=False)


class GeofenceRow(Base):
    __tablename__ = "geofences"
    __table_args__ = (
        CheckConstraint("min_lat >= -90 AND max_lat <= 90 AND min_lat <= max_lat "
                        "AND min_lon >= -180 AND max_lon <= 540 AND min_lon <= max_lon",
                        name="ck_geofences_bbox"),
    )

    version: Mapped[int] = mapped_column(
        Integer, ForeignKey("policy_versions.version"), primary_key=True)
    geofence_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    action: Mapped[str] = mapped_column(String(20), nullable=False)
    max_mbps: Mapped[float | None] = mapped_column(Float, nullable=True)
    valid_from: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    valid_to: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    scope_json: Mapped[str] = mapped_column(Text, nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    author: Mapped[str] = mapped_column(String(200), nullable=False)
    geojson: Mapped[str] = mapped_column(Text, nullable=False)
    min_lon: Mapped[float] = mapped_column(Float, nullable=False)
    min_lat: Mapped[float] = mapped_column(Float, nullable=False)
    max_lon: Mapped[float] = mapped_column(Float, nullable=False)
    max_lat: Mapped[float] = mapped_column(Float, nullable=False)


class UserRow(Base):
    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint("role IN ('admin', 'policy_editor', 'approver', 'auditor', 'customer')",
                        name="ck_users_role"),
        CheckConstraint("role <> 'customer' OR account IS NOT NULL",
                        name="ck_users_customer_account"),
    )

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    role: Mapped[str] = mapped_column(String(20), nullable=False)
    account: Mapped[str | None] = mapped_column(String(200), nullable=True)
    disabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)  # 0003
    token_version: Mapped[int] = mapped_column(Integer, nullable=False, default=0)  # 0003


class PolicyChangeRow(Base):
    """A policy change waiting for (or holding) an approval (revision 0003)."""

    __tablename__ = "policy_changes"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    author: Mapped[str] = mapped_column(String(200), ForeignKey("users.name"), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    base_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    policy_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    preview_json: Mapped[str] = mapped_column(Text, nullable=False)
    approver: Mapped[str | None] = mapped_column(String(200), nullable=True)
    approval_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    used_version: Mapped[int | None] = mapped_column(Integer, nullable=True)


class AuditRow(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    actor: Mapped[str] = mapped_column(String(200), nullable=False)
    action: Mapped[str] = mapped_column(String(50), nullable=False)
    entity: Mapped[str] = mapped_column(String(50), nullable=False)
    entity_id: Mapped[str] = mapped_column(String(200), nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    before_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    after_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    prev_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)


class UserPasswordRow(Base):
    __tablename__ = "user_passwords"

    name: Mapped[str] = mapped_column(String(200), ForeignKey("users.name"), primary_key=True)
    password_hash: Mapped[str] = mapped_column(String(300), nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class ApiTokenRow(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_name: Mapped[str] = mapped_column(String(200), ForeignKey("users.name"), nullable=False,
                                           index=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    token_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class RunRow(Base):
    __tablename__ = "runs"
    __table_args__ = (
        CheckConstraint("status IN ('queued', 'running', 'done', 'failed')",
                        name="ck_runs_status"),
        CheckConstraint("progress >= 0 AND progress <= 1", name="ck_runs_progress"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False)
    progress: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    chunks_done: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    chunks_total: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    out_dir: Mapped[str] = mapped_column(Text, nullable=False)
    scenario: Mapped[str | None] = mapped_column(Text, nullable=True)
    time_start: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    time_stop: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    step_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    n_terminals: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_by: Mapped[str] = mapped_column(String(200), nullable=False)
    account: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class CurrentTerminalRow(Base):
    __tablename__ = "current_terminals"
    __table_args__ = (Index("ix_current_terminals_account", "account", "terminal_id"),)

    terminal_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    account: Mapped[str] = mapped_column(String(200), nullable=False)
    serial: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    kind: Mapped[str] = mapped_column(String(20), nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False)
    plan: Mapped[str | None] = mapped_column(String(200), nullable=True)
    registered: Mapped[bool] = mapped_column(Boolean, nullable=False)
    lat_deg: Mapped[float | None] = mapped_column(Float, nullable=True)
    lon_deg: Mapped[float | None] = mapped_column(Float, nullable=True)
    version: Mapped[int] = mapped_column(Integer, ForeignKey("policy_versions.version"),
                                         nullable=False)
