"""``leotwin serve``, ``leotwin user …`` and the demo's dashboard registration."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

import leotwin
from leotwin.cli import _demo_dashboard, main
from leotwin.config import get_settings
from leotwin.store import Store


@pytest.fixture
def data_env(tmp_path, monkeypatch, fast_password_hashing):
    monkeypatch.setenv("LEOTWIN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("LEOTWIN_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def run(capsys, monkeypatch, *argv, stdin: str | None = None):
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, " ".join(out.split()), err


def test_user_add_passwd_list(data_env, capsys, monkeypatch):
    code, out, _ = run(capsys, monkeypatch, "user", "add", "boss", "--role", "admin",
                       "--password-stdin", stdin="first password\n")
    assert code == 0 and "user boss (admin) added" in out
    code, out, _ = run(capsys, monkeypatch, "user", "add", "c1", "--role", "customer",
                       "--account", "acme", "--password-stdin", stdin="customer pw 1\n")
    assert code == 0 and "account acme" in out
    code, _, err = run(capsys, monkeypatch, "user", "add", "c2", "--role", "customer",
                       "--password-stdin", stdin="customer pw 2\n")
    assert code == 2 and "needs the account" in err
    code, _, err = run(capsys, monkeypatch, "user", "add", "x", "--role", "auditor",
                       "--password-stdin", stdin="short\n")
    assert code == 2 and "at least 8" in err
    code, out, _ = run(capsys, monkeypatch, "user", "passwd", "c1", "--password-stdin",
                       stdin="a new password\n")
    assert code == 0
    code, out, _ = run(capsys, monkeypatch, "user", "list")
    assert code == 0 and "boss" in out and "c1" in out and "acme" in out
    with Store.open() as store:
        assert store.authenticate("c1", "a new password").account == "acme"
        assert store.authenticate("c1", "customer pw 1") is None
        assert store.authenticate("boss", "first password").role == "admin"
        assert store.verify_audit().ok
        # the audit actor of `user passwd` is the admin running it, not the target (S11)
        row = store.audit_rows(action="user.password")[-1]
        assert (row.actor, row.entity_id) == ("boss", "c1")


def test_demo_registers_its_run_and_a_demo_user(data_env, capsys, tmp_path):
    from test_run import make

    run_dir = tmp_path / "run"
    leotwin.run(make(tmp_path / "scenario"), run_dir, report=False)
    from rich.console import Console

    out, err = Console(file=io.StringIO(), width=200), Console(file=io.StringIO())
    _demo_dashboard(run_dir, out, err)
    _demo_dashboard(run_dir, out, err)  # idempotent: one run, one user
    text = out.file.getvalue()
    assert "dashboard: http://127.0.0.1:8000/#run=1  (start it with: make serve)" in text
    assert "demo login (demo only, local store): user 'demo'" in text
    password = (data_env / "data" / "demo-password").read_text().strip()
    assert oct((data_env / "data" / "demo-password").stat().st_mode & 0o777) == "0o600"
    with Store.open() as store:
        assert [r.out_dir for r in store.runs()] == [str(run_dir)]
        assert store.runs()[0].status == "done" and store.runs()[0].scenario
        # the demo user edits geofences but is no admin (S11); the store's first admin has
        # no password until one is set
        assert store.authenticate("demo", password).role == "policy_editor"
        assert store.user("admin").role == "admin" and store.authenticate("admin", "") is None
        assert len(store.history().versions) == 2  # the flagship's policy history


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_runs_the_app(tmp_path):
    url = f"sqlite:///{tmp_path / 'data' / 'leotwin.db'}"
    with Store.open(url) as store:  # a run a crashed server left "running"
        store.add_user("root", "admin", actor="root")
        store.create_run(name="orphan", out_dir=str(tmp_path / "x"), created_by="root",
                         status="running")
    port = _free_port()
    env = {**os.environ, "LEOTWIN_DATA_DIR": str(tmp_path / "data")}
    env.pop("LEOTWIN_DATABASE_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "leotwin.cli", "serve", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1.0)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "leotwin serve did not start"
                time.sleep(0.2)
        assert r.json()["status"] == "ok" and r.json()["database"] == "sqlite"
        r = httpx.get(f"http://127.0.0.1:{port}/api/users/me")
        assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
        key = tmp_path / "data" / "secret_key"
        assert key.is_file() and key.stat().st_mode & 0o777 == 0o600
        with Store.open(url) as store:
            orphan = store.get_run(1)
        assert orphan.status == "failed" and "interrupted" in orphan.error
    finally:
        proc.terminate()
        proc.wait(timeout=20)
