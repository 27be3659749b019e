"""Service settings from the environment (prefix ``LEOTWIN_``), pydantic-settings style.

``LEOTWIN_DATABASE_URL`` selects the store (SQLite or PostgreSQL); without it the store is a
SQLite file in ``$LEOTWIN_DATA_DIR`` or the XDG data directory
(``$XDG_DATA_HOME/leotwin`` or ``~/.local/share/leotwin``) — never the working directory.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DB_FILENAME = "leotwin.db"


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/leotwin`` or ``~/.local/share/leotwin`` (absolute)."""
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "share"
    return base / "leotwin"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LEOTWIN_", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir,
                           description="where the default SQLite store lives")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default sqlite:///<data_dir>/leotwin.db")
    secret_key: SecretStr | None = None

    @model_validator(mode="after")
    def _defaults(self):
        data_dir = self.data_dir.expanduser()
        if not data_dir.is_absolute():
            raise ValueError(f"LEOTWIN_DATA_DIR must be an absolute path, got {str(data_dir)!r}")
        self.data_dir = data_dir
        if not self.database_url:
            self.database_url = f"sqlite:///{data_dir / DB_FILENAME}"
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; ``get_settings.cache_clear()`` re-reads the env)."""
    return Settings()
