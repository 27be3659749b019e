"""The store against SQLite and a real PostgreSQL server (``postgresql_url`` in conftest)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import shapely
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.exc import DBAPIError

from leotwin.config import Settings, get_settings
from leotwin.policy.errors import PolicyError
from leotwin.policy.models import Account, Geofence, Policy
from leotwin.store import Store, audit_hash
from leotwin.store import repository as repo_module
from leotwin.store.models import GENESIS_HASH, AuditRow, GeofenceRow, PolicyVersionRow, UserRow

BACKENDS = ["sqlite", "postgresql"]
SQUARE = {"type": "Polygon", "coordinates": [[[30, 48], [32, 48], [32, 50], [30, 50], [30, 48]]]}


def t(day: int, hour: int = 0) -> datetime:
    return datetime(2022, 10, day, hour, tzinfo=UTC)


OCT_7 = datetime(2022, 10, 7, tzinfo=UTC)


def fence(gid: str = "kherson", *, valid_to: datetime | None = OCT_7, geometry=SQUARE,
          **kw) -> Geofence:
    return Geofence(id=gid, geometry=geometry, action="deny", valid_from=t(1), valid_to=valid_to,
                    reason="front line", author="ops", **kw)


def policy(*fences: Geofence) -> Policy:
    return Policy(accounts=[Account(id="acme", country="UKR")], geofences=list(fences))


@pytest.fixture(params=BACKENDS)
def store_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    url = request.getfixturevalue("postgresql_url")
    engine = create_engine(url)
    with engine.begin() as conn:  # a fresh, empty schema for every test
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    yield url


@pytest.fixture
def store(store_url):
    s = Store.open(store_url)
    yield s
    s.close()


def _raw(store: Store, *sql: str) -> None:
    with store.engine.begin() as conn:
        for statement in sql:
            conn.execute(text(statement))


def _disable_append_only(store: Store) -> None:
    """What an attacker with DDL rights would do before tampering."""
    if store.dialect == "sqlite":
        _raw(store, "DROP TRIGGER audit_log_no_update", "DROP TRIGGER audit_log_no_delete")
    else:  # superuser only
        _raw(store, "ALTER TABLE audit_log DISABLE TRIGGER ALL")


def _snapshot(store: Store) -> dict:
    with store.engine.connect() as conn:
        counts = {m.__tablename__: conn.scalar(select(func.count()).select_from(m))
                  for m in (PolicyVersionRow, GeofenceRow, UserRow, AuditRow)}
    return {"counts": counts, "audit": store.audit_rows(), "current": store.current()}


def _populate(store: Store) -> None:
    store.add_user("root", "admin", actor="bootstrap")
    store.record_policy(policy(fence()), author="alice", reason="initial", recorded_at=t(1))
    store.record_policy(policy(fence(valid_to=t(3))), author="bob", reason="correction",
                        recorded_at=t(10))


def test_record_and_history_as_of(store, store_url):
    assert store.current() is None
    with pytest.raises(PolicyError, match="no policy version"):
        store.history()
    p1, p2 = policy(fence()), policy(fence(valid_to=t(3)), fence("second"))
    v1 = store.record_policy(p1, author="alice", reason="initial", recorded_at=t(1))
    v2 = store.record_policy(p2, author="bob", reason="correction", recorded_at=t(10))
    assert (v1.version, v2.version) == (1, 2)

    history = store.history()
    assert [v.version for v in history.versions] == [1, 2]
    assert history.at(t(5)).policy == p1 and history.at(t(5)).author == "alice"
    assert history.at(t(10)).policy == p2 and history.at(t(12)).reason == "correction"
    assert history.at().version == 2
    assert history.at(t(5)).recorded_at == t(1)
    with pytest.raises(PolicyError, match="no policy version recorded"):
        history.at(datetime(2022, 9, 30, tzinfo=UTC))
    assert store.current() == p2
    g = history.at(t(5)).policy.geofences[0]
    assert (g.valid_from, g.valid_to) == (t(1), t(7))

    # geofence rows for every version, with a bbox
    with store.engine.connect() as conn:
        rows = conn.execute(select(GeofenceRow.version, GeofenceRow.geofence_id,
                                   GeofenceRow.min_lon, GeofenceRow.min_lat, GeofenceRow.max_lon,
                                   GeofenceRow.max_lat, GeofenceRow.valid_to)
                            .order_by(GeofenceRow.version, GeofenceRow.geofence_id)).all()
    assert [(r.version, r.geofence_id) for r in rows] == [(1, "kherson"), (2, "kherson"),
                                                         (2, "second")]
    assert tuple(rows[0][2:6]) == (30.0, 48.0, 32.0, 50.0)

    # persisted: a second open (migrations already at head) sees the same history
    store.close()
    again = Store.open(store_url)
    try:
        assert again.history() == history
    finally:
        again.close()


def test_record_time_only_moves_forward(store):
    store.record_policy(policy(), author="alice", reason="initial", recorded_at=t(10))
    with pytest.raises(PolicyError, match="record time only moves forward"):
        store.record_policy(policy(), author="alice", reason="late", recorded_at=t(1))
    assert [v.version for v in store.history().versions] == [1]


@pytest.mark.parametrize("failure", ["invalid_geometry", "db_constraint", "audit_failure"])
def test_failed_record_leaves_store_unchanged(store, monkeypatch, failure):
    _populate(store)
    before = _snapshot(store)
    bad = policy(fence("ok"), fence("second"))
    if failure == "invalid_geometry":  # unclosed ring in feature 1, found after rows were added
        bad = policy(fence("ok"), fence("bad", geometry={
            "type": "Polygon", "coordinates": [[[30, 48], [32, 48], [32, 50], [30, 50]]]}))
        expected = PolicyError
    elif failure == "db_constraint":  # the database's bbox CHECK refuses a latitude of 95
        real = repo_module.parse_geometry

        def fake(geometry, **kw):
            return shapely.box(30, 48, 32, 95) if kw.get("feature") == 1 else real(geometry, **kw)

        monkeypatch.setattr(repo_module, "parse_geometry", fake)
        expected = PolicyError
    else:
        def boom(*args, **kw):
            raise RuntimeError("disk on fire")

        monkeypatch.setattr(Store, "_append_audit", boom)
        expected = RuntimeError
    with pytest.raises(expected) as info:
        store.record_policy(bad, author="mallory", reason="bad change", recorded_at=t(20))
    if failure != "audit_failure":
        assert info.value.feature == 1
    if failure == "db_constraint":
        assert "rejected by the database" in str(info.value)
    assert _snapshot(store) == before
    assert store.verify_audit().ok


def test_audit_chain_verifies(store):
    _populate(store)
    rows = store.audit_rows()
    assert [r.id for r in rows] == [1, 2, 3]
    assert [r.action for r in rows] == ["user.add", "policy.record", "policy.record"]
    assert rows[0].prev_hash == GENESIS_HASH
    for a, b in zip(rows, rows[1:], strict=False):
        assert b.prev_hash == a.hash
    for r in rows:
        assert r.hash == audit_hash(r.prev_hash, r.fields())
    assert rows[1].before_json is None and '"version":1' in rows[1].after_json
    assert '"version":1' in rows[2].before_json and '"reason":"correction"' in rows[2].after_json
    report = store.verify_audit()
    assert report.ok and report.rows == 3 and report.bad_row is None, report


@pytest.mark.parametrize("statement", ["UPDATE audit_log SET reason = 'forged' WHERE id = 2",
                                       "DELETE FROM audit_log WHERE id = 2",
                                       "DELETE FROM audit_log"])
def test_update_and_delete_refused_by_database(store, statement):
    _populate(store)
    before = store.audit_rows()
    with pytest.raises(DBAPIError, match="append-only"):
        _raw(store, statement)
    assert store.audit_rows() == before
    assert store.verify_audit().ok


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
def test_truncate_refused_on_postgresql(store):
    """SQLite has no TRUNCATE (its ``DELETE FROM t`` is covered above)."""
    assert store.dialect == "postgresql"
    _populate(store)
    with pytest.raises(DBAPIError, match="append-only"):
        _raw(store, "TRUNCATE audit_log")
    assert len(store.audit_rows()) == 3


@pytest.mark.parametrize("column, value", [("reason", "'forged'"), ("actor", "'eve'"),
                                           ("after_json", "NULL")])
def test_edited_row_detected(store, column, value):
    _populate(store)
    _disable_append_only(store)
    _raw(store, f"UPDATE audit_log SET {column} = {value} WHERE id = 2")
    report = store.verify_audit()
    assert not report.ok and report.bad_row == 2 and report.rows == 3
    assert "row 2" in report.message and "edited" in report.message


def test_rehashed_row_breaks_the_link(store):
    """Recomputing an edited row's own hash does not help: row 3's prev_hash link breaks."""
    _populate(store)
    row = store.audit_rows()[1]
    fields = {**row.fields(), "reason": "forged"}
    _disable_append_only(store)
    _raw(store, f"UPDATE audit_log SET reason = 'forged', "
                f"hash = '{audit_hash(row.prev_hash, fields)}' WHERE id = 2")
    report = store.verify_audit()
    assert (report.ok, report.bad_row) == (False, 3)
    assert "prev_hash" in report.message


@pytest.mark.parametrize("deleted", [1, 2])
def test_deleted_row_detected(store, deleted):
    _populate(store)
    _disable_append_only(store)
    _raw(store, f"DELETE FROM audit_log WHERE id = {deleted}")
    report = store.verify_audit()
    assert not report.ok and report.bad_row == deleted and report.rows == 2
    assert f"row {deleted} missing" in report.message and "deleted" in report.message


def test_users_and_roles(store):
    with pytest.raises(PermissionError, match="first user must be an admin"):
        store.add_user("eve", "customer", account="acme", actor="eve")
    root = store.add_user("root", "admin", actor="bootstrap")
    assert store.user("root") == root
    store.add_user("ed", "policy_editor", actor="root")
    store.add_user("ann", "approver", actor="root")
    store.add_user("aud", "auditor", actor="root")
    cust = store.add_user("cathy", "customer", account="acme", actor="root")
    assert cust.account == "acme"
    assert store.user("nobody") is None

    with pytest.raises(PermissionError, match="'ed' has role 'policy_editor'"):
        store.add_user("x", "admin", actor="ed")
    with pytest.raises(PermissionError, match="unknown user 'ghost'"):
        store.add_user("x", "admin", actor="ghost")
    with pytest.raises(ValueError, match="unknown role"):
        store.add_user("x", "superuser", actor="root")
    with pytest.raises(ValueError, match="needs the account"):
        store.add_user("x", "customer", actor="root")
    with pytest.raises(ValueError, match="already exists"):
        store.add_user("ed", "auditor", actor="root")

    assert store.require_role("ed", "policy_editor", "admin").name == "ed"
    assert store.require_role(root, "admin") == root
    with pytest.raises(PermissionError, match="'ann' has role 'approver'.*'policy_editor'"):
        store.require_role("ann", "policy_editor")
    with pytest.raises(PermissionError, match="unknown user"):
        store.require_role("ghost", "admin")
    with pytest.raises(ValueError, match="require_role needs roles"):
        store.require_role("ed", "wizard")

    assert store.require_account("cathy", "acme") == cust
    with pytest.raises(PermissionError, match="belongs to account 'acme'.*'globex'"):
        store.require_account("cathy", "globex")
    assert store.require_account("aud", "globex").role == "auditor"

    # the database itself refuses a bad role or a customer without an account
    for statement in ("INSERT INTO users (name, role) VALUES ('z', 'wizard')",
                      "INSERT INTO users (name, role) VALUES ('z', 'customer')"):
        with pytest.raises(DBAPIError):
            _raw(store, statement)

    assert [r.action for r in store.audit_rows()] == ["user.add"] * 5
    assert store.verify_audit().ok


def test_settings_default_is_data_dir_not_cwd(tmp_path, monkeypatch):
    monkeypatch.delenv("LEOTWIN_DATABASE_URL", raising=False)
    monkeypatch.setenv("LEOTWIN_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    try:
        settings = get_settings()
        assert settings.database_url == f"sqlite:///{tmp_path / 'data' / 'leotwin.db'}"
        with Store.open() as s:
            assert s.current() is None
        assert (tmp_path / "data" / "leotwin.db").exists()
    finally:
        get_settings.cache_clear()
    monkeypatch.delenv("LEOTWIN_DATA_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert Settings().database_url == f"sqlite:///{tmp_path / 'xdg' / 'leotwin' / 'leotwin.db'}"
    monkeypatch.setenv("LEOTWIN_DATA_DIR", "relative/dir")
    with pytest.raises(ValueError, match="absolute"):
        Settings()
    with pytest.raises(ValueError, match="must be absolute"):
        Store.open("sqlite:///relative.db")


def test_migrations_down_and_up(store):
    """The packaged migration runs both ways on each backend (script_location from the package)."""
    from alembic import command

    from leotwin.store import migrate

    _populate(store)
    cfg = migrate.alembic_config()
    assert (migrate.MIGRATIONS_DIR / "versions" / "0001_initial.py").is_file()
    with store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    with store.engine.connect() as conn:
        tables = set(conn.dialect.get_table_names(conn))
    assert not tables & {"policy_versions", "geofences", "users", "audit_log"}
    migrate.upgrade(store.engine)
    assert store.current() is None and store.verify_audit().ok
    _populate(store)  # the append-only triggers are back
    with pytest.raises(DBAPIError, match="append-only"):
        _raw(store, "DELETE FROM audit_log")
