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
