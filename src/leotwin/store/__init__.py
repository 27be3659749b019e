"""Persistent store: SQLAlchemy models, Alembic migrations, policy versions, users, audit log.

SQLite file by default (``leotwin.config.Settings.database_url``), PostgreSQL via
``LEOTWIN_DATABASE_URL`` (``postgresql+psycopg://...``).
"""

from .repository import (
    ApiToken,
    AuditEntry,
    AuditReport,
    RunRecord,
    StaleVersion,
    Store,
    User,
    audit_hash,
)

__all__ = ["ApiToken", "AuditEntry", "AuditReport", "RunRecord", "StaleVersion", "Store", "User",
           "audit_hash"]
