"""The store: policy versions, users and roles, and the hash-chained append-only audit log.

Every write is one database transaction — the version row, its geofence rows and its audit row
are committed together or not at all. Writers are serialised (``BEGIN IMMEDIATE`` on SQLite, a
table lock on PostgreSQL) so the audit chain never forks.

Audit chain: row ``n`` stores ``prev_hash`` (the ``hash`` of row ``n - 1``, 64 zeros for row 1)
and ``hash = sha256(prev_hash + canonical JSON of its other fields)``, the fields being ``id``,
``at`` (ISO 8601 UTC, microseconds), ``actor``, ``action``, ``entity``, ``entity_id``, ``reason``,
``before_json`` and ``after_json`` (text as stored). Canonical JSON: sorted keys, separators
``(",", ":")``, UTF-8. Ids are assigned 1, 2, 3, ... by the writer inside its transaction (not
by a sequence, which would leave gaps after a rollback), so a gap means a deleted row.

Service additions (revision 0002): argon2 password hashes, revocable API tokens (only their
SHA-256 is stored), the ``runs`` table, and ``current_terminals`` — the terminals of the latest
policy version, rewritten by :meth:`Store.record_policy` inside the same transaction, so that a
customer's terminal list is one indexed ``WHERE account = :acct`` query.

Limits: deleting the *last* rows of the chain is not detectable from the table alone (keep the
head hash elsewhere, e.g. in a signed export, to detect truncation); a superuser who disables the
triggers and rewrites the whole chain consistently is not detectable either.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import EllipsisType

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Engine, create_engine, delete, event, func, insert, or_, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..config import get_settings
from ..policy.errors import PolicyError
from ..policy.geofence import parse_geometry
from ..policy.models import Policy, PolicyHistory, PolicyVersion, Terminal
from . import migrate
from .models import (
    GENESIS_HASH,
    ROLES,
    RUN_STATUSES,
    ApiTokenRow,
    AuditRow,
    CurrentTerminalRow,
    GeofenceRow,
    PolicyChangeRow,
    PolicyVersionRow,
    RunRow,
    UserPasswordRow,
    UserRow,
)

log = logging.getLogger(__name__)

_HASHER = PasswordHasher()  # argon2id with argon2-cffi's current defaults
API_TOKEN_PREFIX = "ltk_"
RUN_FIELDS = ("id", "name", "status", "progress", "chunks_done", "chunks_total", "out_dir",
              "scenario", "time_start", "time_stop", "step_s", "n_terminals", "created_by",
              "account", "error", "created_at", "started_at", "finished_at")
TERMINAL_FIELDS = ("serial", "kind", "status", "plan", "registered", "lat_deg", "lon_deg")

AUDIT_FIELDS = ("id", "at", "actor", "action", "entity", "entity_id", "reason", "before_json",
                "after_json")


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def audit_hash(prev_hash: str, fields: dict) -> str:
    """``sha256(prev_hash + canonical JSON of fields)`` as 64 hex digits."""
    payload = dict(fields)
    at = payload.get("at")
    if isinstance(at, datetime):
        payload["at"] = _utc(at).isoformat(timespec="microseconds")
    return hashlib.sha256((prev_hash + canonical_json(payload)).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class User:
    name: str
    role: str
    account: str | None = None
    disabled: bool = False
    #: bumped when the password changes or the user is disabled: older access tokens are void
    token_version: int = 0


class ApprovalError(PermissionError):
    """An approval that cannot be given or used (unknown, expired, used, another change...)."""


@dataclass(frozen=True)
class PolicyChange:
    """A policy change that needs (or holds) the approval of a second user."""

    id: str
    author: str
    created_at: datetime
    expires_at: datetime
    base_version: int | None
    policy_sha256: str
    reason: str
    preview_json: str
    approver: str | None
    approval_reason: str | None
    approved_at: datetime | None
    used_at: datetime | None
    used_version: int | None

    def status(self, now: datetime | None = None) -> str:
        """``used``, ``expired``, ``approved`` or ``pending``."""
        if self.used_at is not None:
            return "used"
        if _utc(now or datetime.now(UTC)) >= _utc(self.expires_at):
            return "expired"
        return "approved" if self.approved_at is not None else "pending"


def _change_record(r: PolicyChangeRow) -> PolicyChange:
    return PolicyChange(r.id, r.author, r.created_at, r.expires_at, r.base_version,
                        r.policy_sha256, r.reason, r.preview_json, r.approver,
                        r.approval_reason, r.approved_at, r.used_at, r.used_version)


def _user(r) -> User:
    return User(r.name, r.role, r.account, bool(r.disabled), int(r.token_version or 0))


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    action: str
    entity: str
    entity_id: str
    reason: str
    before_json: str | None
    after_json: str | None
    prev_hash: str
    hash: str

    def fields(self) -> dict:
        return {k: getattr(self, k) for k in AUDIT_FIELDS}


@dataclass(frozen=True)
class AuditReport:
    """``ok`` when every row's hash and link is right; else ``bad_row`` is the first bad id."""

    ok: bool
    rows: int
    bad_row: int | None
    message: str


class StaleVersion(RuntimeError):
    """A policy change was computed against a version that is no longer the latest."""


class TooManyPendingChanges(RuntimeError):
    """An author already holds the most pending changes allowed (``pending``: their ids,
    oldest first)."""

    def __init__(self, author: str, limit: int, pending: list[str]):
        super().__init__(f"{author!r} already has {len(pending)} pending changes (at most "
                         f"{limit})")
        self.author, self.limit, self.pending = author, limit, pending


@dataclass(frozen=True)
class ApiToken:
    """A stored API token (never the token itself: only its hash is kept)."""

    id: int
    user: str
    name: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class RunRecord:
    """One row of the ``runs`` table."""

    id: int
    name: str
    status: str
    progress: float
    chunks_done: int
    chunks_total: int
    out_dir: str
    scenario: str | None
    time_start: datetime | None
    time_stop: datetime | None
    step_s: float | None
    n_terminals: int | None
    created_by: str
    account: str | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


def _run_record(r: RunRow) -> RunRecord:
    return RunRecord(**{k: getattr(r, k) for k in RUN_FIELDS})


def token_hash(token: str) -> str:
    """SHA-256 hex of an API token (what the store keeps)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _version_json(row: PolicyVersionRow) -> str:
    return canonical_json({"version": row.version,
                           "recorded_at": _utc(row.recorded_at).isoformat(),
                           "author": row.author, "reason": row.reason,
                           "policy": json.loads(row.policy_json)})


def _sqlite_engine_hooks(engine: Engine) -> None:
    """Foreign keys on; each transaction ``BEGIN IMMEDIATE`` (serialised writers), except on
    connections marked ``leotwin_read`` (:attr:`Store.reader`): a read-only transaction
    begins deferred, so concurrent readers share the database instead of queueing behind
    one another for the write lock."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # let SQLAlchemy emit BEGIN itself
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):
        read_only = conn.get_execution_options().get("leotwin_read", False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def _hash_password(password: str) -> str:
    if not isinstance(password, str) or len(password) < 8:
        raise ValueError("a password needs at least 8 characters")
    return _HASHER.hash(password)


@functools.cache
def _dummy_hash() -> str:
    """A hash to verify against for unknown users (equal work, no user enumeration)."""
    return _HASHER.hash(secrets.token_urlsafe(16))


def create_store_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            path = Path(parsed.database)
            if not path.is_absolute():
                raise ValueError(f"SQLite store path must be absolute, got {parsed.database!r} "
                                 "(paths relative to the working directory are refused)")
            if not path.parent.exists():  # a new data directory is private (0700)
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                path.parent.chmod(0o700)  # mkdir's mode is masked by the umask
        engine = create_engine(url)
        _sqlite_engine_hooks(engine)
        return engine
    return create_engine(url, pool_pre_ping=True)


def _filtered_page(query, equalities, offset: int, limit: int | None):
    """``query`` with ``column == value`` for every pair whose value is given, then paged."""
    for column, value in equalities:
        if value is not None:
            query = query.where(column == value)
    if offset:
        query = query.offset(offset)
    return query if limit is None else query.limit(limit)


class Store:
    """Policy versions, users and the audit log in SQLite or PostgreSQL."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        #: The same engine for read-only work (a deferred transaction on SQLite).
        self.reader = engine.execution_options(leotwin_read=True)

    # -- lifecycle ------------------------------------------------------------------------
    @classmethod
    def open(cls, url: str | None = None) -> Store:
        """Open (and migrate to head) the store at ``url`` or at the settings' database URL."""
        url = url or get_settings().database_url
        engine = create_store_engine(url)
        try:
            migrate.upgrade(engine)
        except Exception:
            engine.dispose()
            raise
        log.info("store opened: %s", engine.url.render_as_string(hide_password=True))
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def _write(self) -> Iterator[Session]:
        """One serialised write transaction; any exception rolls everything back."""
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            if self.dialect == "postgresql":
                session.execute(text("LOCK TABLE audit_log IN EXCLUSIVE MODE"))
            yield session

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with Session(self.reader, expire_on_commit=False) as session, session.begin():
            yield session

    # -- policy versions ------------------------------------------------------------------
    def record_policy(self, policy: Policy, *, author: str, reason: str,
                      recorded_at: datetime | None = None, approver: str | None = None,
                      approval_reason: str | None = None,
                      expected_version: int | None | EllipsisType = ...,
                      approval_id: str | None = None,
                      policy_sha256: str | None = None) -> PolicyVersion:
        """Store ``policy`` as the next version, with its geofences and one audit row (two
        when a second user ``approver`` approved it: the approval is audited as its own row,
        in the same transaction). With ``expected_version`` (a version number, or None for an
        empty store) the write is refused with :class:`StaleVersion` when another version was
        recorded in between (a change computed from an outdated policy is never stored).

        With ``approval_id`` the approved pending change is used up in the same transaction
        (:class:`ApprovalError` unless it is approved, unused, unexpired, by ``author``, for a
        policy with SHA-256 ``policy_sha256`` computed against ``expected_version``); the
        audit row ``policy.approval_used`` links the version to it."""
        if not isinstance(policy, Policy):
            raise TypeError(f"expected a Policy, got {type(policy).__name__}")
        if not author or not reason:
            raise PolicyError("a policy change needs an author and a reason", source="store",
                              field="author" if not author else "reason")
        recorded_at = _utc(recorded_at or datetime.now(UTC))
        with self._write() as s:
            last = s.scalars(select(PolicyVersionRow)
                             .order_by(PolicyVersionRow.version.desc()).limit(1)).first()
            if expected_version is not ... and (None if last is None else last.version) \
                    != expected_version:
                raise StaleVersion(f"the policy changed meanwhile (now version "
                                   f"{None if last is None else last.version}, the change was "
                                   f"made against {expected_version}); retry the change")
            if last is not None and recorded_at < _utc(last.recorded_at):
                raise PolicyError(
                    f"recorded_at {recorded_at.isoformat()} is before version {last.version} "
                    f"({_utc(last.recorded_at).isoformat()}); record time only moves forward",
                    source="store", field="recorded_at")
            version = 1 if last is None else last.version + 1
            row = PolicyVersionRow(version=version, recorded_at=recorded_at, author=author,
                                   reason=reason, policy_json=policy.model_dump_json())
            s.add(row)
            s.flush()
            for k, g in enumerate(policy.geofences):
                geom = parse_geometry(g.geometry, source="policy", feature=k,
                                      field="geofences.geometry")
                min_lon, min_lat, max_lon, max_lat = (float(v) for v in geom.bounds)
                s.add(GeofenceRow(
                    version=version, geofence_id=g.id, action=g.action, max_mbps=g.max_mbps,
                    valid_from=g.valid_from, valid_to=g.valid_to,
                    scope_json=g.scope.model_dump_json(), reason=g.reason, author=g.author,
                    geojson=canonical_json(g.geometry), min_lon=min_lon, min_lat=min_lat,
                    max_lon=max_lon, max_lat=max_lat))
                try:
                    s.flush()
                except IntegrityError as exc:
                    raise PolicyError(f"geofence {g.id!r} rejected by the database: "
                                      f"{exc.orig}", source="policy", feature=k,
                                      field="geofences") from exc
            s.execute(delete(CurrentTerminalRow))
            if policy.terminals:
                s.execute(insert(CurrentTerminalRow), [
                    {"terminal_id": t.id, "account": t.account, "serial": t.serial,
                     "kind": t.kind, "status": t.status, "plan": t.plan,
                     "registered": t.registered, "lat_deg": t.lat_deg, "lon_deg": t.lon_deg,
                     "version": version} for t in policy.terminals])
            self._append_audit(s, actor=author, action="policy.record", entity="policy",
                               entity_id=str(version), reason=reason,
                               before=None if last is None else _version_json(last),
                               after=_version_json(row))
            if approver:
                self._append_audit(s, actor=approver, action="policy.approve", entity="policy",
                                   entity_id=str(version), reason=approval_reason or "",
                                   before=None, after=None)
            if approval_id is not None:
                ch = self._use_approval(s, approval_id, author=author,
                                        policy_sha256=policy_sha256,
                                        base_version=None if expected_version is ...
                                        else expected_version, version=version,
                                        now=recorded_at)
                self._append_audit(s, actor=author, action="policy.approval_used",
                                   entity="policy_change", entity_id=approval_id,
                                   reason=f"version {version}, approved by {ch.approver}: "
                                          f"{ch.approval_reason}", before=None, after=None)
        log.info("policy version %d recorded by %s", version, author)
        return PolicyVersion(version=version, recorded_at=recorded_at, author=author,
                             reason=reason, policy=policy)

    def history(self) -> PolicyHistory:
        """Every recorded version, in order; :class:`PolicyError` if none was recorded yet."""
        with self._read() as s:
            rows = s.scalars(select(PolicyVersionRow).order_by(PolicyVersionRow.version)).all()
        if not rows:
            raise PolicyError("no policy version recorded yet", source="store")
        return PolicyHistory(versions=[
            PolicyVersion(version=r.version, recorded_at=r.recorded_at, author=r.author,
                          reason=r.reason, policy=Policy.model_validate_json(r.policy_json))
            for r in rows])

    def current_version(self) -> PolicyVersion | None:
        """The latest recorded version with its number and metadata (None for an empty store)."""
        with self._read() as s:
            r = s.scalars(select(PolicyVersionRow)
                          .order_by(PolicyVersionRow.version.desc()).limit(1)).first()
        if r is None:
            return None
        return PolicyVersion(version=r.version, recorded_at=r.recorded_at, author=r.author,
                             reason=r.reason, policy=Policy.model_validate_json(r.policy_json))

    def current(self) -> Policy | None:
        """The latest recorded policy, or ``None`` for an empty store."""
        with self._read() as s:
            r = s.scalars(select(PolicyVersionRow)
                          .order_by(PolicyVersionRow.version.desc()).limit(1)).first()
        return None if r is None else Policy.model_validate_json(r.policy_json)

    # -- users and roles ------------------------------------------------------------------
    def add_user(self, name: str, role: str, *, account: str | None = None,
                 actor: str, password: str | None = None) -> User:
        """Add a user. The first user must be an ``admin`` (bootstrap, any actor); after that
        ``actor`` must be an existing admin. A ``customer`` needs its one ``account``. With a
        ``password`` its argon2 hash is stored in the same transaction (the user may log in)."""
        if not name:
            raise ValueError("a user needs a name")
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
        if role == "customer" and not account:
            raise ValueError(f"customer {name!r} needs the account it belongs to")
        with self._write() as s:
            if s.scalar(select(func.count()).select_from(UserRow)) == 0:
                if role != "admin":
                    raise PermissionError(f"the first user must be an admin, not {role!r}")
            else:
                self._require_role(s, actor, "admin")
            if s.get(UserRow, name) is not None:
                raise ValueError(f"user {name!r} already exists")
            s.add(UserRow(name=name, role=role, account=account))
            s.flush()
            if password is not None:
                s.add(UserPasswordRow(name=name, password_hash=_hash_password(password),
                                      updated_at=datetime.now(UTC)))
                s.flush()
            user = User(name, role, account)
            self._append_audit(s, actor=actor, action="user.add", entity="user", entity_id=name,
                               reason=f"add {role} {name}", before=None,
                               after=canonical_json({"name": name, "role": role,
                                                     "account": account}))
        return user

    def user(self, name: str) -> User | None:
        q = select(UserRow.name, UserRow.role, UserRow.account, UserRow.disabled,
                   UserRow.token_version).where(UserRow.name == name)
        with self.reader.connect() as conn:
            r = conn.execute(q).first()
        return None if r is None else _user(r)

    def users(self, *, account: str | None = None) -> list[User]:
        with self._read() as s:
            q = select(UserRow).order_by(UserRow.name)
            if account is not None:
                q = q.where(UserRow.account == account)
            rows = s.scalars(q).all()
        return [_user(r) for r in rows]

    def update_user(self, name: str, *, actor: str, role: str | None = None,
                    account: str | None | EllipsisType = ..., disabled: bool | None = None,
                    reason: str = "") -> User:
        """Change a user's role, account or disabled flag (``actor``: an admin). Disabling
        also voids its access tokens (token version bump); API tokens are refused while it is
        disabled. Audited with before and after."""
        if role is not None and role not in ROLES:
            raise ValueError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
        with self._write() as s:
            self._require_role(s, actor, "admin")
            r = s.get(UserRow, name)
            if r is None:
                raise ValueError(f"unknown user {name!r}")
            before = canonical_json({"name": r.name, "role": r.role, "account": r.account,
                                     "disabled": bool(r.disabled)})
            if role is not None:
                r.role = role
            if account is not ...:
                r.account = account
            if r.role == "customer" and not r.account:
                raise ValueError(f"customer {name!r} needs the account it belongs to")
            if r.role != "customer" and account is ...:
                r.account = None
            if disabled is not None:
                if disabled and not r.disabled:
                    r.token_version = (r.token_version or 0) + 1
                r.disabled = disabled
            if role is not None:
                r.token_version = (r.token_version or 0) + 1  # claims of old tokens are stale
            if r.role != "admin" or r.disabled:
                admins = s.scalar(select(func.count()).select_from(UserRow).where(
                    UserRow.role == "admin", UserRow.disabled.is_(False),
                    UserRow.name != name))
                if not admins:
                    raise ValueError("this would leave no enabled admin")
            s.flush()
            after = canonical_json({"name": r.name, "role": r.role, "account": r.account,
                                    "disabled": bool(r.disabled)})
            self._append_audit(s, actor=actor, action="user.update", entity="user",
                               entity_id=name, reason=reason or f"update user {name}",
                               before=before, after=after)
            return _user(r)

    # -- passwords and API tokens ---------------------------------------------------------
    def set_password(self, name: str, password: str, *, actor: str) -> None:
        """Store the argon2 hash of ``password`` for user ``name``; ``actor`` is the user
        itself or an admin. Audited (without the hash)."""
        with self._write() as s:
            if s.get(UserRow, name) is None:
                raise ValueError(f"unknown user {name!r}")
            if actor != name:
                self._require_role(s, actor, "admin")
            row = s.get(UserPasswordRow, name)
            hashed = _hash_password(password)
            if row is None:
                s.add(UserPasswordRow(name=name, password_hash=hashed,
                                      updated_at=datetime.now(UTC)))
            else:
                row.password_hash, row.updated_at = hashed, datetime.now(UTC)
            u = s.get(UserRow, name)
            u.token_version = (u.token_version or 0) + 1  # older access tokens are void
            s.flush()
            self._append_audit(s, actor=actor, action="user.password", entity="user",
                               entity_id=name, reason=f"password of {name} set", before=None,
                               after=None)

    def authenticate(self, name: str, password: str) -> User | None:
        """The user if ``password`` matches its stored hash, else None (also for a user
        without a password). Constant work whether or not the user exists."""
        with self._read() as s:
            u = s.get(UserRow, name)
            row = s.get(UserPasswordRow, name) if u is not None else None
            stored = row.password_hash if row is not None and not u.disabled else None
        try:
            if stored is None:
                _HASHER.verify(_dummy_hash(), password)
                return None
            _HASHER.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return None
        if _HASHER.check_needs_rehash(stored):
            try:
                with self._write() as s:
                    r = s.get(UserPasswordRow, name)
                    if r is not None and r.password_hash == stored:
                        r.password_hash = _hash_password(password)
            except Exception:  # a rehash is an optimisation; never fail a good login on it
                log.warning("could not rehash the password of %s", name, exc_info=True)
        return _user(u)

    def create_api_token(self, user: str, name: str, *,
                         expires_at: datetime | None = None) -> tuple[ApiToken, str]:
        """A new API token for ``user``: ``(record, token)``; the token text exists only in
        this return value (the store keeps its SHA-256). Audited."""
        if not name:
            raise ValueError("an API token needs a name")
        token = API_TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        with self._write() as s:
            if s.get(UserRow, user) is None:
                raise ValueError(f"unknown user {user!r}")
            row = ApiTokenRow(user_name=user, name=name, token_hash=token_hash(token),
                              created_at=now, expires_at=None if expires_at is None
                              else _utc(expires_at), revoked_at=None)
            s.add(row)
            s.flush()
            self._append_audit(s, actor=user, action="token.create", entity="api_token",
                               entity_id=str(row.id), reason=f"API token {name!r}",
                               before=None, after=None)
            record = ApiToken(row.id, user, name, row.created_at, row.expires_at, None)
        return record, token

    def api_token_user(self, token: str, *, now: datetime | None = None) -> User | None:
        """The user of a valid (known, not revoked, not expired) API token, else None."""
        now = _utc(now or datetime.now(UTC))
        q = (select(UserRow.name, UserRow.role, UserRow.account, UserRow.disabled,
                    UserRow.token_version, ApiTokenRow.expires_at, ApiTokenRow.revoked_at)
             .join(ApiTokenRow, ApiTokenRow.user_name == UserRow.name)
             .where(ApiTokenRow.token_hash == token_hash(token)))
        with self.reader.connect() as conn:  # Core: this runs on every request
            row = conn.execute(q).first()
        if row is None or row.revoked_at is not None or row.disabled:
            return None
        expires = row.expires_at
        if expires is not None and _utc(expires) <= now:
            return None
        return _user(row)

    def api_tokens(self, user: str) -> list[ApiToken]:
        with self._read() as s:
            rows = s.scalars(select(ApiTokenRow).where(ApiTokenRow.user_name == user)
                             .order_by(ApiTokenRow.id)).all()
        return [ApiToken(r.id, r.user_name, r.name, r.created_at, r.expires_at, r.revoked_at)
                for r in rows]

    def all_api_tokens(self) -> list[ApiToken]:
        """Every user's API tokens (for an admin)."""
        with self._read() as s:
            rows = s.scalars(select(ApiTokenRow).order_by(ApiTokenRow.id)).all()
        return [ApiToken(r.id, r.user_name, r.name, r.created_at, r.expires_at, r.revoked_at)
                for r in rows]

    def revoke_api_token(self, user: str, token_id: int, *, actor: str | None = None) -> bool:
        """Revoke ``user``'s token ``token_id`` (``user`` None: anyone's, ``actor`` must then
        be an admin); False when there is no such live token."""
        actor = actor or user
        with self._write() as s:
            q = select(ApiTokenRow).where(ApiTokenRow.id == token_id)
            if user is None:
                self._require_role(s, actor, "admin")
            else:
                q = q.where(ApiTokenRow.user_name == user)
            row = s.scalars(q).first()
            if row is None or row.revoked_at is not None:
                return False
            row.revoked_at = datetime.now(UTC)
            s.flush()
            self._append_audit(s, actor=actor, action="token.revoke", entity="api_token",
                               entity_id=str(token_id), reason=f"API token {row.name!r} revoked",
                               before=None, after=None)
        return True

    # -- current terminals (latest version, denormalised) -----------------------------------
    def terminal_rows(self, *, account: str | None = None, plan: str | None = None,
                      status: str | None = None, terminal_id: str | None = None,
                      limit: int | None = None, offset: int = 0) -> list[dict]:
        """Terminals of the latest policy version as plain dicts (the :class:`Terminal` fields),
        filtered in SQL (``WHERE account = :acct`` on an index), ordered by id."""
        t = CurrentTerminalRow.__table__
        q = select(t.c.terminal_id.label("id"), t.c.account,
                   *(t.c[name] for name in TERMINAL_FIELDS))
        if account is not None:
            q = q.where(t.c.account == account).order_by(t.c.account, t.c.terminal_id)
        else:
            q = q.order_by(t.c.terminal_id)
        q = _filtered_page(q, ((t.c.plan, plan), (t.c.status, status),
                               (t.c.terminal_id, terminal_id)), offset, limit)
        with self.reader.connect() as conn:
            rows = conn.execute(q).mappings().all()
        return [{**r, "registered": bool(r["registered"])} for r in rows]

    def terminals(self, *, account: str | None = None, plan: str | None = None,
                  status: str | None = None, limit: int | None = None,
                  offset: int = 0) -> list[Terminal]:
        """Terminals of the latest policy version, filtered in SQL, ordered by id."""
        return [Terminal.model_construct(**r) for r in self.terminal_rows(
            account=account, plan=plan, status=status, limit=limit, offset=offset)]

    def terminal(self, terminal_id: str, *, account: str | None = None) -> Terminal | None:
        """One terminal of the latest version (None if unknown, or not of ``account``)."""
        rows = self.terminal_rows(terminal_id=terminal_id, account=account)
        return Terminal.model_construct(**rows[0]) if rows else None

    def latest_version(self) -> int | None:
        """Number of the latest policy version (None for an empty store); one cheap query."""
        with self.reader.connect() as conn:
            return conn.execute(select(func.max(PolicyVersionRow.version))).scalar()

    # -- runs -----------------------------------------------------------------------------
    def create_run(self, *, name: str, out_dir: str, created_by: str,
                   account: str | None = None, scenario: str | None = None,
                   status: str = "queued", time_start: datetime | None = None,
                   time_stop: datetime | None = None, step_s: float | None = None,
                   n_terminals: int | None = None, chunks_done: int = 0,
                   chunks_total: int = 0) -> RunRecord:
        """Insert a run (audited as ``run.create``)."""
        if status not in RUN_STATUSES:
            raise ValueError(f"unknown run status {status!r}")
        now = datetime.now(UTC)
        done = status == "done"
        with self._write() as s:
            row = RunRow(name=name, status=status, progress=1.0 if done else 0.0,
                         chunks_done=chunks_done, chunks_total=chunks_total, out_dir=out_dir,
                         scenario=scenario, time_start=time_start, time_stop=time_stop,
                         step_s=step_s, n_terminals=n_terminals, created_by=created_by,
                         account=account, error=None, created_at=now,
                         started_at=now if done else None, finished_at=now if done else None)
            s.add(row)
            s.flush()
            self._append_audit(s, actor=created_by, action="run.create", entity="run",
                               entity_id=str(row.id), reason=f"run {name!r} ({status})",
                               before=None, after=canonical_json(
                                   {"name": name, "scenario": scenario, "out_dir": out_dir,
                                    "account": account}))
            return _run_record(row)

    def update_run(self, run_id: int, **fields) -> None:
        """Set fields of run ``run_id`` (status, progress, chunks, error, times...)."""
        unknown = set(fields) - set(RUN_FIELDS[2:])
        if unknown:
            raise ValueError(f"update_run: unknown fields {sorted(unknown)}")
        if "status" in fields and fields["status"] not in RUN_STATUSES:
            raise ValueError(f"unknown run status {fields['status']!r}")
        with Session(self.engine) as s, s.begin():  # no audit row: no audit lock
            s.execute(update(RunRow).where(RunRow.id == run_id).values(**fields))

    def get_run(self, run_id: int, *, visible_to: str | None = None) -> RunRecord | None:
        """Run ``run_id``; with ``visible_to`` (a customer's account) only a run of that
        account or an operator-wide run (no account)."""
        q = select(RunRow).where(RunRow.id == run_id)
        if visible_to is not None:
            q = q.where(or_(RunRow.account.is_(None), RunRow.account == visible_to))
        with self._read() as s:
            r = s.scalars(q).first()
        return None if r is None else _run_record(r)

    def runs(self, *, visible_to: str | None = None, status: str | None = None
             ) -> list[RunRecord]:
        """Runs, newest first; ``visible_to`` as in :meth:`get_run`, filtered in SQL."""
        q = select(RunRow).order_by(RunRow.id.desc())
        if visible_to is not None:
            q = q.where(or_(RunRow.account.is_(None), RunRow.account == visible_to))
        if status is not None:
            q = q.where(RunRow.status == status)
        with self._read() as s:
            rows = s.scalars(q).all()
        return [_run_record(r) for r in rows]

    @staticmethod
    def _require_role(session: Session, user: str | User, *roles: str) -> User:
        name = user.name if isinstance(user, User) else user
        r = session.get(UserRow, name)
        if r is None:
            raise PermissionError(f"unknown user {name!r}")
        if r.role not in roles:
            raise PermissionError(f"user {name!r} has role {r.role!r}; this needs "
                                  f"{' or '.join(repr(x) for x in roles)}")
        return User(r.name, r.role, r.account)

    def require_role(self, user: str | User, *roles: str) -> User:
        """The stored user if its role is one of ``roles``, else :class:`PermissionError`."""
        unknown = [x for x in roles if x not in ROLES]
        if not roles or unknown:
            raise ValueError(f"require_role needs roles among {', '.join(ROLES)}; got {roles!r}")
        with self._read() as s:
            return self._require_role(s, user, *roles)

    def require_account(self, user: str | User, account: str) -> User:
        """A customer may act only on its own account; other roles on any account."""
        name = user.name if isinstance(user, User) else user
        u = self.user(name)
        if u is None:
            raise PermissionError(f"unknown user {name!r}")
        if u.role == "customer" and u.account != account:
            raise PermissionError(f"customer {name!r} belongs to account {u.account!r} and may "
                                  f"not act on account {account!r}")
        return u

    # -- pending policy changes (approvals) ------------------------------------------------
    def create_policy_change(self, *, author: str, base_version: int | None,
                             policy_sha256: str, reason: str, preview_json: str,
                             ttl: timedelta, max_pending: int | None = None) -> PolicyChange:
        """Store a change that needs an approval; its id is random and unguessable.

        With ``max_pending``: the author's pending change for the same policy (SHA-256 and
        base version) is returned instead of a new one, and a new one beyond ``max_pending``
        pending changes of the author raises :class:`TooManyPendingChanges` — counted and
        written in the same serialised write transaction, so concurrent requests, in any
        process, cannot both pass the limit."""
        now = datetime.now(UTC)
        with self._write() as s:
            if max_pending is not None:
                c = PolicyChangeRow
                rows = s.execute(select(c).where(c.author == author, c.used_at.is_(None))
                                 .order_by(c.created_at, c.id)).scalars()
                pending = [r for r in map(_change_record, rows) if r.status(now) == "pending"]
                same = next((r for r in pending if r.policy_sha256 == policy_sha256
                             and r.base_version == base_version), None)
                if same is not None:
                    return same
                if len(pending) >= max_pending:
                    raise TooManyPendingChanges(author, max_pending, [r.id for r in pending])
            row = PolicyChangeRow(id=secrets.token_urlsafe(18), author=author, created_at=now,
                                  expires_at=now + ttl, base_version=base_version,
                                  policy_sha256=policy_sha256, reason=reason,
                                  preview_json=preview_json)
            s.add(row)
            s.flush()
            self._append_audit(s, actor=author, action="policy.propose",
                               entity="policy_change", entity_id=row.id, reason=reason,
                               before=None, after=None)
            return _change_record(row)

    def policy_change(self, change_id: str) -> PolicyChange | None:
        with self._read() as s:
            row = s.get(PolicyChangeRow, change_id)
            return None if row is None else _change_record(row)

    def approve_policy_change(self, change_id: str, *, approver: str,
                              reason: str) -> PolicyChange:
        """Approve a pending change: ``approver`` has role approver or admin, is not its
        author, gives a reason. Audited (``policy.approve``, the approver's reason)."""
        if not reason or not reason.strip():
            raise ApprovalError("an approval needs a reason")
        now = datetime.now(UTC)
        with self._write() as s:
            self._require_role(s, approver, "approver", "admin")
            row = s.get(PolicyChangeRow, change_id)
            if row is None:
                raise LookupError(f"no policy change {change_id!r}")
            status = _change_record(row).status(now)
            if status != "pending":
                raise ApprovalError(f"policy change {change_id} is {status}")
            if row.author == approver:
                raise ApprovalError("the author of a change may not approve it; a second "
                                    "person must")
            n = s.execute(update(PolicyChangeRow).where(
                PolicyChangeRow.id == change_id, PolicyChangeRow.approved_at.is_(None))
                .values(approver=approver, approval_reason=reason, approved_at=now)).rowcount
            if n != 1:
                raise ApprovalError(f"policy change {change_id} was approved meanwhile")
            self._append_audit(s, actor=approver, action="policy.approve",
                               entity="policy_change", entity_id=change_id, reason=reason,
                               before=None, after=None)
            s.refresh(row)
            return _change_record(row)

    def _use_approval(self, s: Session, change_id: str, *, author: str,
                      policy_sha256: str | None, base_version: int | None, version: int,
                      now: datetime) -> PolicyChange:
        row = s.get(PolicyChangeRow, change_id)
        if row is None:
            raise ApprovalError(f"no policy change {change_id!r}")
        ch = _change_record(row)
        status = ch.status(now)
        problem = None
        if status != "approved":
            problem = f"the approval {change_id} is {status}"
        elif ch.author != author:
            problem = f"the approved change {change_id} was proposed by another user"
        elif ch.approver == author:
            problem = "the approver is the author"
        elif policy_sha256 is None or ch.policy_sha256 != policy_sha256:
            problem = f"this change is not the one approved as {change_id}"
        elif ch.base_version != base_version:
            problem = (f"the approval {change_id} was given on version {ch.base_version}; "
                       "the policy changed since")
        if problem:
            raise ApprovalError(problem)
        n = s.execute(update(PolicyChangeRow).where(
            PolicyChangeRow.id == change_id, PolicyChangeRow.used_at.is_(None))
            .values(used_at=now, used_version=version)).rowcount
        if n != 1:
            raise ApprovalError(f"the approval {change_id} was used meanwhile")
        return ch

    # -- audit log ------------------------------------------------------------------------
    def _append_audit(self, s: Session, *, actor: str, action: str, entity: str, entity_id: str,
                      reason: str, before: str | None, after: str | None) -> AuditRow:
        last = s.execute(select(AuditRow.id, AuditRow.hash)
                         .order_by(AuditRow.id.desc()).limit(1)).first()
        prev_hash = GENESIS_HASH if last is None else last.hash
        fields = {"id": 1 if last is None else last.id + 1,
                  "at": datetime.now(UTC), "actor": actor, "action": action, "entity": entity,
                  "entity_id": entity_id, "reason": reason, "before_json": before,
                  "after_json": after}
        row = AuditRow(**fields, prev_hash=prev_hash, hash=audit_hash(prev_hash, fields))
        s.add(row)
        s.flush()
        return row

    def audit_rows(self, *, actor: str | None = None, action: str | None = None,
                   entity: str | None = None, entity_id: str | None = None,
                   row_id: int | None = None, limit: int | None = None,
                   offset: int = 0) -> list[AuditEntry]:
        """Audit rows in id order, filtered and paged in SQL."""
        q = _filtered_page(select(AuditRow).order_by(AuditRow.id),
                           ((AuditRow.actor, actor), (AuditRow.action, action),
                            (AuditRow.entity, entity), (AuditRow.entity_id, entity_id),
                            (AuditRow.id, row_id)), offset, limit)
        with self._read() as s:
            rows = s.scalars(q).all()
        return [AuditEntry(**{k: getattr(r, k) for k in (*AUDIT_FIELDS, "prev_hash", "hash")})
                for r in rows]

    def verify_audit(self) -> AuditReport:
        """Re-hash the chain; name the first edited row, broken link or missing (deleted) id."""
        try:
            rows = self.audit_rows()
        except Exception as exc:  # e.g. a timestamp edited into something unreadable
            return AuditReport(False, 0, None, f"audit_log cannot be read: {exc}")
        prev_hash, expected_id = GENESIS_HASH, 1
        for r in rows:
            if r.id != expected_id:
                missing = (f"row {expected_id}" if r.id == expected_id + 1
                           else f"rows {expected_id}..{r.id - 1}")
                return AuditReport(False, len(rows), expected_id,
                                   f"audit_log {missing} missing (ids jump from "
                                   f"{expected_id - 1} to {r.id}): deleted")
            if r.prev_hash != prev_hash:
                return AuditReport(False, len(rows), r.id,
                                   f"audit_log row {r.id}: prev_hash does not match the hash of "
                                   f"row {r.id - 1}" if r.id > 1 else
                                   "audit_log row 1: prev_hash is not the genesis hash")
            if audit_hash(r.prev_hash, r.fields()) != r.hash:
                return AuditReport(False, len(rows), r.id,
                                   f"audit_log row {r.id}: hash does not match its content "
                                   f"(row edited)")
            prev_hash, expected_id = r.hash, r.id + 1
        return AuditReport(True, len(rows), None,
                           f"audit_log ok: {len(rows)} rows, chain intact")
