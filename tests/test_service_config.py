"""Service settings and secrets (S10), and no store call on the event loop (S9)."""

from __future__ import annotations

import inspect
import os
import stat

import pytest
from pydantic import ValidationError

from leotwin.config import Settings
from leotwin.service import security


def test_a_short_secret_key_is_refused(tmp_path):
    with pytest.raises(ValidationError, match="at least 32 bytes"):
        Settings(data_dir=tmp_path, secret_key="too short")
    key = "k" * 32
    assert security.signing_key(Settings(data_dir=tmp_path, secret_key=key)) == key.encode()


def test_the_generated_key_is_private_and_stable(tmp_path):
    data = tmp_path / "new" / "data"
    s = Settings(data_dir=data)
    key = security.signing_key(s)
    assert len(key) >= 64 and security.signing_key(s) == key
    assert stat.S_IMODE(os.stat(data).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(data / security.SECRET_FILE).st_mode) == 0o600
    assert [p.name for p in data.iterdir()] == [security.SECRET_FILE]  # no temp file left


def test_no_async_route_or_dependency_calls_the_store(service):
    """S9: a synchronous store call in an ``async def`` blocks the event loop; routes and
    dependencies that reach the store are plain ``def`` (the thread pool). The caller's
    dependency is async for a remembered token and hands any store look-up to the thread
    pool itself."""
    client, _ = service
    from fastapi.routing import APIRoute

    from leotwin.service import deps

    src = inspect.getsource(deps.get_current_user)
    assert "state.store." not in src
    assert [line for line in src.splitlines() if "user_of_token" in line] == [
        "        user = await run_in_threadpool(user_of_token, state, token)"]
    for route in client.app.routes:
        if isinstance(route, APIRoute) and inspect.iscoroutinefunction(route.endpoint):
            src = inspect.getsource(route.endpoint)
            calls = [line for line in src.splitlines() if "state.store." in line
                     and "run_in_threadpool" not in line]
            assert not calls, (route.path, calls)


def test_unknown_api_paths_are_404_problems_for_every_method(service):
    """C3: an unknown /api path is 404 problem details whatever the method (never the
    dashboard's static files); a known path with another method is 405."""
    client, h = service
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        r = client.request(method, "/api/nope/deeper", headers=h["root"])
        assert r.status_code == 404, (method, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    r = client.request("PUT", "/api/health")
    assert r.status_code == 405 and r.headers["allow"] == "GET"
    assert r.headers["content-type"].startswith("application/problem+json")


def test_one_state_classification_for_the_api_and_the_report():
    """C1: the API and the report classify steps with the same function; an unserved step
    without a recorded cause is ``unattributed`` in both (not ``no_coverage``)."""
    from leotwin.analytics import report
    from leotwin.analytics.states import STATES, timeline_states
    from leotwin.service import results

    codes = timeline_states([True, True, False, False, False],
                            ["", "congestion", "policy", "", "no_coverage"])
    assert [STATES[c] for c in codes] == ["served", "degraded", "policy", "unattributed",
                                          "no_coverage"]
    assert results.STATES is STATES and report.STATES is STATES


def test_a_new_sqlite_data_dir_is_private(tmp_path):
    """S10: a data directory the store creates is 0700."""
    from leotwin.store import Store

    with Store.open(f"sqlite:///{tmp_path / 'fresh' / 'leotwin.db'}"):
        pass
    assert stat.S_IMODE(os.stat(tmp_path / "fresh").st_mode) == 0o700
