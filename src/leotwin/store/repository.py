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

Limits: deleting the *last* rows of the chain is not detectable from the table alone (keep the
head hash elsewhere, e.g. in a signed export, to detect truncation); a superuser who disables the
triggers and rewrites the whole chain consistently is not detectable either.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..config import get_settings
from ..policy.errors import PolicyError
from ..policy.geofence import parse_geometry
from ..policy.models import Policy, PolicyHistory, PolicyVersion
from . import migrate
from .models import GENESIS_HASH, ROLES, AuditRow, GeofenceRow, PolicyVersionRow, UserRow

log = logging.getLogger(__name__)

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


def _version_json(row: PolicyVersionRow) -> str:
    return canonical_json({"version": row.version,
                           "recorded_at": _utc(row.recorded_at).isoformat(),
                           "author": row.author, "reason": row.reason,
                           "policy": json.loads(row.policy_json)})


def _sqlite_engine_hooks(engine: Engine) -> None:
    """Foreign keys on; each transaction ``BEGIN IMMEDIATE`` (serialised writers)."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # let SQLAlchemy emit BEGIN itself
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def create_store_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            path = Path(parsed.database)
            if not path.is_absolute():
                raise ValueError(f"SQLite store path must be absolute, got {parsed.database!r} "
                                 "(paths relative to the working directory are refused)")
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url)
        _sqlite_engine_hooks(engine)
        return engine
    return create_engine(url, pool_pre_ping=True)


class Store:
    """Policy versions, users and the audit log in SQLite or PostgreSQL."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

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
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            yield session

    # -- policy versions ------------------------------------------------------------------
    def record_policy(self, policy: Policy, *, author: str, reason: str,
                      recorded_at: datetime | None = None, approver: str | None = None,
                      approval_reason: str | None = None) -> PolicyVersion:
        """Store ``policy`` as the next version, with its geofences and one audit row (two
        when a second user ``approver`` approved it: the approval is audited as its own row,
        in the same transaction)."""
        if not isinstance(policy, Policy):
            raise TypeError(f"expected a Policy, got {type(policy).__name__}")
        if not author or not reason:
            raise PolicyError("a policy change needs an author and a reason", source="store",
                              field="author" if not author else "reason")
        recorded_at = _utc(recorded_at or datetime.now(UTC))
        with self._write() as s:
            last = s.scalars(select(PolicyVersionRow)
                             .order_by(PolicyVersionRow.version.desc()).limit(1)).first()
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
            self._append_audit(s, actor=author, action="policy.record", entity="policy",
                               entity_id=str(version), reason=reason,
                               before=None if last is None else _version_json(last),
                               after=_version_json(row))
            if approver:
                self._append_audit(s, actor=approver, action="policy.approve", entity="policy",
                                   entity_id=str(version), reason=approval_reason or "",
                                   before=None, after=None)
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

    def current(self) -> Policy | None:
        """The latest recorded policy, or ``None`` for an empty store."""
        with self._read() as s:
            r = s.scalars(select(PolicyVersionRow)
                          .order_by(PolicyVersionRow.version.desc()).limit(1)).first()
        return None if r is None else Policy.model_validate_json(r.policy_json)

    # -- users and roles ------------------------------------------------------------------
    def add_user(self, name: str, role: str, *, account: str | None = None,
                 actor: str) -> User:
        """Add a user. The first user must be an ``admin`` (bootstrap, any actor); after that
        ``actor`` must be an existing admin. A ``customer`` needs its one ``account``."""
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
            user = User(name, role, account)
            self._append_audit(s, actor=actor, action="user.add", entity="user", entity_id=name,
                               reason=f"add {role} {name}", before=None,
                               after=canonical_json({"name": name, "role": role,
                                                     "account": account}))
        return user

    def user(self, name: str) -> User | None:
        with self._read() as s:
            r = s.get(UserRow, name)
        return None if r is None else User(r.name, r.role, r.account)

    def users(self) -> list[User]:
        with self._read() as s:
            rows = s.scalars(select(UserRow).order_by(UserRow.name)).all()
        return [User(r.name, r.role, r.account) for r in rows]

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

    def audit_rows(self) -> list[AuditEntry]:
        with self._read() as s:
            rows = s.scalars(select(AuditRow).order_by(AuditRow.id)).all()
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
