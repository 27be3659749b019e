"""Run the store's Alembic migrations programmatically (no ``alembic.ini``, no working dir)."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
HEAD = "head"
_PG_MIGRATION_LOCK = 7_160_001  # advisory lock id serialising concurrent upgrades


def alembic_config(url: str | None = None) -> Config:
    """An Alembic :class:`Config` whose ``script_location`` is the packaged migrations."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(engine: Engine, revision: str = HEAD) -> None:
    """Migrate the database behind ``engine`` to ``revision`` in one transaction."""
    cfg = alembic_config()
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    log.debug("store at %s migrated to %s", engine.url.render_as_string(), revision)
