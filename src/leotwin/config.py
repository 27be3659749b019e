"""Service settings from the environment (prefix ``LEOTWIN_``), pydantic-settings style.

``LEOTWIN_DATABASE_URL`` selects the store (SQLite or PostgreSQL); without it the store is a
SQLite file in ``$LEOTWIN_DATA_DIR`` or the XDG data directory
(``$XDG_DATA_HOME/leotwin`` or ``~/.local/share/leotwin``) — never the working directory.

The REST service (:mod:`leotwin.service`) also reads ``LEOTWIN_SECRET_KEY`` (signs access
tokens; without it a random key is generated once per data directory and kept in the 0600 file
``<data_dir>/secret_key``), ``LEOTWIN_CORS_ORIGINS`` (comma-separated origins, or a JSON list),
``LEOTWIN_ACCESS_TOKEN_MINUTES``, ``LEOTWIN_MAX_UPLOAD_BYTES`` and ``LEOTWIN_RUN_ROOTS``
(directories besides ``<data_dir>/runs`` whose finished runs an admin may register).
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DB_FILENAME = "leotwin.db"


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/leotwin`` or ``~/.local/share/leotwin`` (absolute)."""
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "share"
    return base / "leotwin"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LEOTWIN_", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir,
                           description="where the default SQLite store and run directories live")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default sqlite:///<data_dir>/leotwin.db")
    secret_key: SecretStr | None = Field(
        None, description="HS256 key of the access tokens; default: <data_dir>/secret_key")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="origins allowed by CORS (comma-separated or JSON)")
    access_token_minutes: int = Field(60, ge=1, le=60 * 24 * 30,
                                      description="lifetime of an OAuth2 access token")
    run_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list, description="directories (besides <data_dir>/runs) under which "
        "an admin may register a finished run directory (comma-separated or JSON)")
    max_active_runs_per_user: int = Field(
        2, ge=1, le=100, description="runs one user may have queued or running at once")
    max_pending_changes_per_user: int = Field(
        5, ge=1, le=1000, description="pending (unapproved) policy changes one user may hold")
    max_upload_bytes: int = Field(10 * 1024 * 1024, ge=1024,
                                  description="largest accepted upload (terminal import)")

    @field_validator("cors_origins", "run_roots", mode="before")
    @classmethod
    def _lists(cls, value):
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [o.strip() for o in text.split(",") if o.strip()]
        return value

    @field_validator("secret_key")
    @classmethod
    def _key_length(cls, value):
        if value is not None and value.get_secret_value() and \
                len(value.get_secret_value().encode("utf-8")) < 32:
            raise ValueError("LEOTWIN_SECRET_KEY must be at least 32 bytes (e.g. "
                             "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`)")
        return value

    @model_validator(mode="after")
    def _defaults(self):
        data_dir = self.data_dir.expanduser()
        if not data_dir.is_absolute():
            raise ValueError(f"LEOTWIN_DATA_DIR must be an absolute path, got {str(data_dir)!r}")
        self.data_dir = data_dir
        if not self.database_url:
            self.database_url = f"sqlite:///{data_dir / DB_FILENAME}"
        return self

    @property
    def runs_dir(self) -> Path:
        """Where the service writes the run directories it starts."""
        return self.data_dir / "runs"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; ``get_settings.cache_clear()`` re-reads the env)."""
    return Settings()
