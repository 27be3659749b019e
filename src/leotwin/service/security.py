"""Access tokens (signed, expiring JWTs, HS256) and the signing key.

The key is ``LEOTWIN_SECRET_KEY`` when set; otherwise a random 64-byte key generated once per
data directory and kept in ``<data_dir>/secret_key`` (mode 0600, created atomically), so tokens
survive a restart and no key is ever hard-coded. API tokens (``ltk_…``) are opaque and live in
the store (:meth:`leotwin.store.Store.create_api_token`).
"""

from __future__ import annotations

import logging
import os
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt

from ..config import Settings

log = logging.getLogger(__name__)

ALGORITHM = "HS256"
SECRET_FILE = "secret_key"
ISSUER = "leotwin"


def signing_key(settings: Settings) -> bytes:
    """The configured secret, or the data directory's generated one (created on first use)."""
    if settings.secret_key is not None and settings.secret_key.get_secret_value():
        return settings.secret_key.get_secret_value().encode("utf-8")
    path = Path(settings.data_dir) / SECRET_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_key(path)
    key = secrets.token_urlsafe(64).encode("ascii")
    with os.fdopen(fd, "wb") as f:
        f.write(key + b"\n")
    log.info("generated a token signing key in %s", path)
    return key


def _read_key(path: Path) -> bytes:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise PermissionError(f"{path}: the token signing key must be private (mode 0600), "
                              f"it is {mode:o}; chmod 600 it")
    key = path.read_bytes().strip()
    if len(key) < 32:
        raise ValueError(f"{path}: the token signing key is too short; delete the file to "
                         "generate a new one (every issued token becomes invalid)")
    return key


def create_access_token(user: str, key: bytes, minutes: int) -> tuple[str, int]:
    """A signed token for ``user`` valid ``minutes``: ``(token, expires_in_seconds)``."""
    now = datetime.now(UTC)
    claims = {"sub": user, "iat": now, "nbf": now, "exp": now + timedelta(minutes=minutes),
              "iss": ISSUER, "typ": "access", "jti": secrets.token_urlsafe(8)}
    return jwt.encode(claims, key, algorithm=ALGORITHM), minutes * 60


def access_token_subject(token: str, key: bytes) -> str | None:
    """The user name of a valid, unexpired access token, else None."""
    try:
        claims = jwt.decode(token, key, algorithms=[ALGORITHM], issuer=ISSUER,
                            options={"require": ["exp", "iat", "sub", "iss"]})
    except jwt.PyJWTError:
        return None
    if claims.get("typ") != "access" or not isinstance(claims.get("sub"), str):
        return None
    return claims["sub"]
