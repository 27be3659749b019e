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


MIN_KEY_BYTES = 32


def signing_key(settings: Settings) -> bytes:
    """The configured secret (at least 32 bytes), or the data directory's generated one
    (created on first use: written to a private temporary file, then linked into place, so
    a concurrent start never reads a half-written key)."""
    if settings.secret_key is not None and settings.secret_key.get_secret_value():
        key = settings.secret_key.get_secret_value().encode("utf-8")
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"LEOTWIN_SECRET_KEY is {len(key)} bytes; at least "
                             f"{MIN_KEY_BYTES} (e.g. `python -c 'import secrets; "
                             "print(secrets.token_urlsafe(48))'`)")
        return key
    path = Path(settings.data_dir) / SECRET_FILE
    private_dir(path.parent)
    if path.exists():
        return _read_key(path)
    key = secrets.token_urlsafe(64).encode("ascii")
    tmp = path.with_name(f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(key + b"\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # atomic, and never replaces a key another process made
        except FileExistsError:
            return _read_key(path)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("generated a token signing key in %s", path)
    return key


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) with mode 0700; an existing one is kept."""
    path = Path(path)
    if not path.exists():
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path, 0o700)  # mkdir's mode is masked by the umask
    return path


def _read_key(path: Path) -> bytes:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise PermissionError(f"{path}: the token signing key must be private (mode 0600), "
                              f"it is {mode:o}; chmod 600 it")
    key = path.read_bytes().strip()
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"{path}: the token signing key is too short; delete the file to "
                         "generate a new one (every issued token becomes invalid)")
    return key


def create_access_token(user: str, key: bytes, minutes: int, *,
                        token_version: int = 0) -> tuple[str, int]:
    """A signed token for ``user`` valid ``minutes``: ``(token, expires_in_seconds)``. It
    carries the user's token version (``tv``): a password change or disabling the user bumps
    the stored version and voids every older token."""
    now = datetime.now(UTC)
    claims = {"sub": user, "iat": now, "nbf": now, "exp": now + timedelta(minutes=minutes),
              "iss": ISSUER, "typ": "access", "jti": secrets.token_urlsafe(8),
              "tv": token_version}
    return jwt.encode(claims, key, algorithm=ALGORITHM), minutes * 60


def access_token_claims(token: str, key: bytes) -> tuple[str, int] | None:
    """``(user name, token version)`` of a valid, unexpired access token, else None."""
    try:
        claims = jwt.decode(token, key, algorithms=[ALGORITHM], issuer=ISSUER,
                            options={"require": ["exp", "iat", "sub", "iss"]})
    except jwt.PyJWTError:
        return None
    if claims.get("typ") != "access" or not isinstance(claims.get("sub"), str):
        return None
    tv = claims.get("tv", 0)
    return (claims["sub"], tv) if isinstance(tv, int) else None
