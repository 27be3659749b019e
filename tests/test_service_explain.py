"""``GET /api/explain``: the one-terminal answers equal the library's, follow a policy change
at once (whoever records it) and are not taken from another version; the app compiles the
latest version's zones at start-up, so the first request does not."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

import leotwin.policy.engine as engine
from leotwin.policy.engine import decide, explain
from leotwin.policy.models import Geofence
from leotwin.store import Store


def box(lat, lon, half):
    ring = [[lon - half, lat - half], [lon + half, lat - half], [lon + half, lat + half],
            [lon - half, lat + half], [lon - half, lat - half]]
    return {"type": "Polygon", "coordinates": [ring]}


AT = "2022-10-05T12:00:00Z"


def test_explain_equals_the_library_for_every_terminal(service):
    client, h = service
    history = client.app.state.leotwin.store.history()
    terms = history.versions[-1].policy.terminals
    times = ["2022-10-01T00:00:00Z", AT]
    full = decide(history, None, np.array([t[:-1] for t in times], dtype="datetime64[ns]"),
                  (np.array([t.lat_deg for t in terms]), np.array([t.lon_deg for t in terms])))
    for at in times:
        for t in terms:
            got = client.get(f"/api/explain/{t.id}", params={"at": at}, headers=h["root"])
            assert got.status_code == 200, got.text
            got = got.json()
            want = explain(full, t.id, at)
            assert (got["decision"], got["rule_id"], got["rule_kind"], got["rule_reason"],
                    got["rule_author"]) == (want["decision"], want["rule"], want["kind"],
                                            want["reason"], want["author"])


def test_a_policy_change_gives_the_new_answer_at_once(service, service_settings):
    """The cached answer of version 1 is not served after version 2 is recorded — through
    the API or by another process on the same store — but still is for an as_of before."""
    client, h = service
    first = client.get(f"/api/explain/G-1?at={AT}", headers=h["root"]).json()
    assert (first["decision"], first["rule_id"], first["version"]) == ("allow", "plan:std", 1)
    assert client.get(f"/api/explain/G-1?at={AT}", headers=h["root"]).json() == first
    change = {"add_geofences": [{"id": "G-KHARKIV", "action": "deny", "geometry":
                                 box(49.98, 36.25, 0.3), "reason": "front line",
                                 "valid_from": "2022-10-01T00:00:00Z"}],
              "step_s": 3600, "reason": "restrict Kharkiv"}
    r = client.post("/api/policy/apply", json=change, headers=h["ed"])
    assert r.status_code == 201, r.text
    now = client.get(f"/api/explain/G-1?at={AT}", headers=h["gus"]).json()
    assert (now["decision"], now["rule_id"], now["rule_author"], now["version"]) == (
        "deny", "geofence:G-KHARKIV", "ed", 2)
    assert now["rule_reason"].startswith("front line")
    old = client.get("/api/explain/G-1", params={"at": AT, "as_of": "2024-01-01T00:00:00Z"},
                     headers=h["root"]).json()
    assert (old["decision"], old["rule_id"], old["version"]) == ("allow", "plan:std", 1)
    # another process lifts the fence (a third version): seen by the next request
    with Store.open(service_settings.database_url) as other:
        cur = other.current()
        other.record_policy(cur.model_copy(update={"geofences": []}), author="root",
                            reason="lifted", recorded_at=datetime.now(UTC))
    back = client.get(f"/api/explain/G-1?at={AT}", headers=h["root"]).json()
    assert (back["decision"], back["rule_id"], back["version"]) == ("allow", "plan:std", 3)


def test_the_first_request_finds_the_zones_compiled(service_settings, fast_password_hashing):
    """Start-up (the lifespan) compiles the latest version's zones: the first explanation
    compiles nothing. A geofence added later is compiled on its first use."""
    from fastapi.testclient import TestClient

    from conftest import seed_service_store
    from leotwin.service import create_app

    with Store.open(service_settings.database_url) as store:
        seed_service_store(store)
        cur = store.current()
        fence = Geofence(id="G-WARM", action="deny", geometry=box(48.1234, 33.4321, 0.25),
                         reason="warm-up check")
        store.record_policy(cur.model_copy(update={"geofences": [fence]}), author="root",
                            reason="a fence no other test compiles",
                            recorded_at=datetime.now(UTC))
        _, token = store.create_api_token("root", "t")
    key = ("geofences", (engine._geometry_key(fence, fence.geometry),))
    engine._ZONES.clear()
    with TestClient(create_app(service_settings)) as client:
        assert key in engine._ZONES._items
        built = set(engine._ZONES._items)
        r = client.get(f"/api/explain/A-1?at={AT}", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        assert set(engine._ZONES._items) == built


@pytest.mark.parametrize("service_settings", ["sqlite"], indirect=True)
def test_explain_cache_is_bounded(service):
    client, h = service
    cache = client.app.state.leotwin.explain
    cache.max_answers = 5
    for hour in range(12):
        assert client.get(f"/api/explain/A-1?at=2022-10-05T{hour:02d}:00:00Z",
                          headers=h["root"]).status_code == 200
    assert len(cache._answers) == 5


@pytest.mark.parametrize("service_settings", ["sqlite"], indirect=True)
def test_a_large_parsed_policy_is_frozen_out_of_the_cycle_collector(service_settings,
                                                                    monkeypatch):
    """A large policy's parsed objects leave the garbage collector's full passes (their
    traversal stalled requests); a small one's do not touch the collector."""
    import gc

    from conftest import seed_service_store
    from leotwin.service import state as service_state

    with Store.open(service_settings.database_url) as store:
        seed_service_store(store)
        gc.unfreeze()
        service_state.PolicyCache(store).history()
        assert gc.get_freeze_count() == 0                     # 3 terminals: left alone
        monkeypatch.setattr(service_state, "FREEZE_MIN_TERMINALS", 3)
        try:
            cache = service_state.PolicyCache(store)
            history = cache.history()
            assert gc.get_freeze_count() > 0
            assert cache.current() is history.versions[-1]   # not parsed a second time
        finally:
            gc.unfreeze()
