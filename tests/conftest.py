"""Shared fixtures. ``postgresql_url``: a throwaway PostgreSQL server for the store tests."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
PG_DATABASE = "leotwin_test"


def _pg_bindir() -> Path:
    dirs = [p for p in Path("/").glob(PG_BIN_GLOB.lstrip("/"))
            if (p / "initdb").exists() and (p / "pg_ctl").exists()]
    if not dirs:
        pytest.fail(f"PostgreSQL server binaries (initdb, pg_ctl) not found under {PG_BIN_GLOB}; "
                    "`make test` installs them (Debian package `postgresql`), or run "
                    "`apt-get install --no-install-recommends postgresql`", pytrace=False)

    def major(p: Path) -> int:
        m = re.search(r"/(\d+)/bin$", str(p))
        return int(m.group(1)) if m else 0

    return max(dirs, key=major)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgresql_url():
    """Start a PostgreSQL cluster in a temp dir (unix socket only), yield a SQLAlchemy URL to a
    fresh ``leotwin_test`` database, stop and remove the cluster afterwards. As root, the server
    runs as the ``postgres`` system user (initdb refuses to run as root)."""
    bindir = _pg_bindir()
    as_user: list[str] = []
    base = Path(tempfile.mkdtemp(prefix="leotwin-pg-"))
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(base, ignore_errors=True)
            pytest.fail("running as root but there is no `postgres` system user to run the "
                        "server as (it comes with the Debian `postgresql` package)",
                        pytrace=False)
        os.chown(base, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, log = base / "data", base / "server.log"
    port = _free_port()

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*as_user, *args], capture_output=True, text=True, timeout=60)

    started = False
    try:
        r = run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                "-E", "UTF8", "--no-sync")
        if r.returncode:
            pytest.fail(f"initdb failed:\n{r.stdout}\n{r.stderr}", pytrace=False)
        opts = (f"-k {base} -p {port} -c listen_addresses='' -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off")
        r = run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", opts, "-w",
                "-t", "30", "start")
        if r.returncode:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            pytest.fail(f"pg_ctl start failed:\n{r.stdout}\n{r.stderr}\n{tail}", pytrace=False)
        started = True
        import psycopg

        with psycopg.connect(host=str(base), port=port, user="postgres", dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {PG_DATABASE}")
        yield f"postgresql+psycopg://postgres@/{PG_DATABASE}?host={base}&port={port}"
    finally:
        if started:
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)


# --------------------------------------------------------------------------- REST service
SERVICE_BACKENDS = ["sqlite", "postgresql"]
SERVICE_PASSWORD = "correct horse battery"  # test users only


def _reset_postgresql(url: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as conn:  # a fresh, empty schema for every test
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture
def fast_password_hashing(monkeypatch):
    """argon2id with the cheapest parameters (the production defaults cost ~0.4 s per hash on
    a busy 2-core machine; the code path is the same)."""
    from argon2 import PasswordHasher

    from leotwin.store import repository

    monkeypatch.setattr(repository, "_HASHER",
                        PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


@pytest.fixture(params=SERVICE_BACKENDS)
def service_settings(request, tmp_path, fast_password_hashing):
    """Settings of a service on a fresh SQLite file or the (reset) PostgreSQL database, with
    a small upload limit and the data directory in ``tmp_path``."""
    from leotwin.config import Settings

    url = f"sqlite:///{tmp_path / 'store.db'}"
    if request.param == "postgresql":
        url = request.getfixturevalue("postgresql_url")
        _reset_postgresql(url)
    return Settings(data_dir=tmp_path / "data", database_url=url, max_upload_bytes=64 * 1024)


def seed_service_store(store) -> None:
    """Users of every role (two customers of two accounts) and one policy version."""
    from datetime import UTC, datetime

    from leotwin.policy.models import Account, Contract, Policy, ServicePlan, Terminal

    for name, role, account in (("root", "admin", None), ("ed", "policy_editor", None),
                                ("ann", "approver", None), ("aud", "auditor", None),
                                ("cathy", "customer", "acme"), ("gus", "customer", "globex")):
        store.add_user(name, role, account=account, actor="root", password=SERVICE_PASSWORD)

    def box(lat, lon, half):
        ring = [[lon - half, lat - half], [lon + half, lat - half], [lon + half, lat + half],
                [lon - half, lat + half], [lon - half, lat - half]]
        return {"type": "Polygon", "coordinates": [ring]}

    policy = Policy(
        accounts=[Account(id="acme", country="UKR"), Account(id="globex", country="UKR")],
        plans=[ServicePlan(name="std", priority_quota_gb_month=100, min_mbps=1, max_mbps=100)],
        terminals=[Terminal(id="A-1", account="acme", plan="std", lat_deg=50.45, lon_deg=30.52),
                   Terminal(id="A-2", account="acme", plan="std", lat_deg=50.40, lon_deg=30.60),
                   Terminal(id="G-1", account="globex", plan="std", lat_deg=49.98,
                            lon_deg=36.25)],
        contracts=[Contract(id="C-ACME", account="acme", committed_availability_pct=99.0,
                            covered_area=box(50.4, 30.5, 1.0),
                            term_start=datetime(2020, 1, 1, tzinfo=UTC),
                            term_end=datetime(2040, 1, 1, tzinfo=UTC),
                            credit_per_breach_hour=10.0)])
    store.record_policy(policy, author="root", reason="initial customers",
                        recorded_at=datetime(2022, 9, 1, tzinfo=UTC))


@pytest.fixture
def service(service_settings):
    """``(client, tokens)``: a TestClient on ``create_app`` over a seeded store, and a bearer
    header per user (obtained through ``POST /api/auth/token``)."""
    from fastapi.testclient import TestClient

    from leotwin.service import create_app
    from leotwin.store import Store

    with Store.open(service_settings.database_url) as store:
        seed_service_store(store)
    app = create_app(service_settings)
    with TestClient(app) as client:
        headers = {}
        for name in ("root", "ed", "ann", "aud", "cathy", "gus"):
            r = client.post("/api/auth/token",
                            data={"username": name, "password": SERVICE_PASSWORD})
            assert r.status_code == 200, r.text
            headers[name] = {"Authorization": f"Bearer {r.json()['access_token']}"}
        yield client, headers
