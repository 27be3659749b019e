"""Persistent store: SQLAlchemy models, Alembic migrations, policy versions, users, audit log.

SQLite file by default (``leotwin.config.Settings.database_url``), PostgreSQL via
``LEOTWIN_DATABASE_URL`` (``postgresql+psycopg://...``).
"""

from .repository import (
    ApiToken,
    ApprovalError,
    AuditEntry,
    AuditReport,
    PolicyChange,
    RunRecord,
    StaleVersion,
    Store,
    TooManyPendingChanges,
    User,
    audit_hash,
)

__all__ = ["ApiToken", "ApprovalError", "AuditEntry", "AuditReport", "PolicyChange", "RunRecord",
           "StaleVersion", "Store", "TooManyPendingChanges", "User", "audit_hash"]
