"""Regression tests of the service's security review: the guard's own windows (S1), contract
weakening (S2), approvals as pending changes (S3), tenant confinement of change answers and
explanations (S4, S5)."""

from __future__ import annotations

import pytest

SQUARE_KYIV = {"type": "Polygon", "coordinates": [[[30.0, 50.0], [31.0, 50.0], [31.0, 51.0],
                                                    [30.0, 51.0], [30.0, 50.0]]]}
pytestmark = pytest.mark.parametrize("service_settings", ["sqlite"], indirect=True)


def problem(r, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    return r.json()


def cut(**extra) -> dict:
    return {"add_geofences": [{"id": "G-CUT", "action": "deny", "geometry": SQUARE_KYIV,
                               "reason": "cut", "override_contracts": True, **extra}],
            "step_s": 3600, "reason": "cut"}


def test_the_caller_cannot_choose_the_guard_window(service):
    """S1: a breaching change is refused whatever window the caller names (a far-future
    one, or one before the change starts): the server checks from max(now, valid_from) to
    the contracts' term end itself; the caller's window only adds to it."""
    client, h = service
    far = {**cut(), "window_start": "2100-01-01T00:00:00Z", "window_end": "2100-01-02T00:00:00Z"}
    body = problem(client.post("/api/policy/apply", json=far, headers=h["ed"]), 409)
    assert body["preview"]["breach"] and body["change_id"]
    later = {**cut(valid_from="2031-01-01T00:00:00Z"),
             "window_start": "2030-01-01T00:00:00Z", "window_end": "2030-01-02T00:00:00Z"}
    body = problem(client.post("/api/policy/apply", json=later, headers=h["ed"]), 409)
    assert body["preview"]["window_start"].startswith("2031-01-01")
    # a one-day cut inside the 90-day horizon is not diluted: checked per 30-day period
    short = cut(valid_from="2027-01-10T00:00:00Z", valid_to="2027-01-11T00:00:00Z")
    problem(client.post("/api/policy/apply", json=short, headers=h["ed"]), 409)
    # after the contract's term: nothing to breach, applied at once
    after = cut(valid_from="2041-01-01T00:00:00Z")
    r = client.post("/api/policy/apply", json=after, headers=h["ed"])
    assert r.status_code == 201, r.text
    assert client.app.state.leotwin.store.history().versions[-1].author == "ed"


def test_resource_routes_use_the_server_window(service):
    """S1 for resource routes: a geofence added through /api/geofences with a later
    valid_from is checked from then on."""
    client, h = service
    fence = {"type": "Feature", "geometry": SQUARE_KYIV,
             "properties": {"id": "G-LATE", "action": "deny", "override_contracts": True,
                            "valid_from": "2032-05-01T00:00:00Z", "reason": "later"}}
    problem(client.post("/api/geofences", json=fence, headers=h["ed"]), 409)


def test_pending_change_approval_is_bound_and_single_use(service):
    """S3: 409 stores a pending change; a second user approves it with their own reason; the
    author retries with approval_id; the approval is bound to the proposed policy and the
    base version, and used once."""
    client, h = service
    store = client.app.state.leotwin.store
    refused = problem(client.post("/api/policy/apply", json=cut(), headers=h["ed"]), 409)
    cid = refused["change_id"]
    ch = client.get(f"/api/policy/changes/{cid}", headers=h["ann"]).json()
    assert ch["status"] == "pending" and ch["author"] == "ed" and ch["base_version"] == 1
    assert ch["preview"]["breach"]
    assert client.get(f"/api/policy/changes/{cid}", headers=h["ed"]).status_code == 200
    problem(client.get(f"/api/policy/changes/{cid}", headers=h["cathy"]), 404)
    problem(client.get(f"/api/policy/changes/{cid}", headers=h["aud"]), 404)
    # not approved yet: still refused
    problem(client.post("/api/policy/apply", json={**cut(), "approval_id": cid},
                        headers=h["ed"]), 409)
    # only an approver or admin other than the author, with a reason
    problem(client.post(f"/api/policy/changes/{cid}/approve", json={"reason": "x"},
                        headers=h["ed"]), 403)
    problem(client.post(f"/api/policy/changes/{cid}/approve", json={}, headers=h["ann"]), 422)
    r = client.post(f"/api/policy/changes/{cid}/approve", json={"reason": "ordered by HQ"},
                    headers=h["ann"])
    assert r.status_code == 200 and r.json()["status"] == "approved"
    problem(client.post(f"/api/policy/changes/{cid}/approve", json={"reason": "again"},
                        headers=h["root"]), 409)
    row = store.audit_rows()[-1]
    assert (row.action, row.actor, row.reason, row.entity_id) == (
        "policy.approve", "ann", "ordered by HQ", cid)
    # another change with this approval: refused (bound to the proposed policy's SHA-256)
    other = cut()
    other["add_geofences"][0]["id"] = "G-OTHER"
    problem(client.post("/api/policy/apply", json={**other, "approval_id": cid},
                        headers=h["ed"]), 409)
    # another author with this approval: refused
    problem(client.post("/api/policy/apply", json={**cut(), "approval_id": cid},
                        headers=h["root"]), 409)
    ok = client.post("/api/policy/apply", json={**cut(), "approval_id": cid}, headers=h["ed"])
    assert ok.status_code == 201, ok.text
    assert ok.json()["approver"] == "ann" and ok.json()["version"] == 2
    assert client.get(f"/api/policy/changes/{cid}", headers=h["ann"]).json()["status"] == "used"
    # single use: removing and re-adding the same fence with it is refused
    problem(client.post("/api/policy/apply", json={**cut(), "approval_id": cid},
                        headers=h["ed"]), 422)  # G-CUT exists now
    assert store.verify_audit().ok
    # the retired header/body members are gone
    problem(client.post("/api/policy/apply", json={**cut(), "approver_token": "x"},
                        headers=h["ed"]), 422)


def test_an_approval_expires_and_is_void_on_a_new_base_version(service):
    client, h = service
    store = client.app.state.leotwin.store
    cid = problem(client.post("/api/policy/apply", json=cut(), headers=h["ed"]), 409)["change_id"]
    assert client.post(f"/api/policy/changes/{cid}/approve", json={"reason": "ok"},
                       headers=h["ann"]).status_code == 200
    # another version recorded meanwhile: the approval was given on version 1
    assert client.post("/api/accounts", json={"id": "initech", "country": "UKR"},
                       headers=h["ed"]).status_code == 201
    body = problem(client.post("/api/policy/apply", json={**cut(), "approval_id": cid},
                               headers=h["ed"]), 409)
    assert "not the one approved" in body["detail"] or "version" in body["detail"]
    # expiry
    cid = body["change_id"]
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from leotwin.store.models import PolicyChangeRow

    with store.engine.begin() as conn:
        conn.execute(update(PolicyChangeRow).where(PolicyChangeRow.id == cid).values(
            expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    assert client.get(f"/api/policy/changes/{cid}", headers=h["ann"]).json()["status"] == \
        "expired"
    problem(client.post(f"/api/policy/changes/{cid}/approve", json={"reason": "late"},
                        headers=h["ann"]), 409)


def test_customers_see_only_their_account_in_change_answers(service):
    """S4 and S5: a customer's change answer lists no other tenant's accounts, contracts or
    terminals; an explanation omits the policy version's author and reason."""
    client, h = service
    r = client.post("/api/contracts", json={
        "id": "C-GLOBEX-SECRET", "account": "globex", "committed_availability_pct": 97.5,
        "covered_area": {"type": "Polygon", "coordinates": [[[35, 49], [37, 49], [37, 51],
                                                             [35, 51], [35, 49]]]},
        "term_start": "2020-01-01T00:00:00Z", "term_end": "2040-01-01T00:00:00Z"},
        headers={**h["ed"], "X-Change-Reason": "globex secret deal"})
    assert r.status_code == 201, r.text
    r = client.patch("/api/terminals/A-1", json={"serial": "x"}, headers=h["cathy"])
    assert r.status_code == 200, r.text
    prev = r.json()["preview"]
    assert {a["account"] for a in prev["accounts"]} <= {"acme"}
    assert {c["account"] for c in prev["contracts"]} <= {"acme"}
    assert "C-GLOBEX-SECRET" not in r.text and "globex" not in r.text
    staff = client.patch("/api/terminals/A-1", json={"serial": "y"}, headers=h["ed"]).json()
    assert "C-GLOBEX-SECRET" in {c["contract"] for c in staff["preview"]["contracts"]}
    e = client.get("/api/explain/A-1?at=2022-10-05T12:00:00Z", headers=h["cathy"]).json()
    assert "version_author" not in e and "version_reason" not in e and e["version"] == 4
    e = client.get("/api/explain/A-1?at=2022-10-05T12:00:00Z", headers=h["aud"]).json()
    assert e["version_author"] == "ed"


def test_pending_changes_per_user_are_limited(service, monkeypatch):
    """S6: one user holds at most ``max_pending_changes_per_user`` pending changes; beyond
    it a breaching change is refused with 409 ``too-many-pending-changes`` naming the limit
    and the pending ids, and nothing is stored. Retrying the same change reuses its pending
    change; approved or expired changes no longer count; other users are not affected."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import func, select, update

    from leotwin.store.models import PolicyChangeRow

    client, h = service
    state = client.app.state.leotwin
    monkeypatch.setattr(state, "settings", state.settings.model_copy(
        update={"max_pending_changes_per_user": 2}))
    store = state.store

    def fence(fid: str) -> dict:
        body = cut()
        body["add_geofences"][0]["id"] = fid
        return body

    def count(author: str) -> int:
        with store.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(PolicyChangeRow).where(
                PolicyChangeRow.author == author)).scalar()

    c1 = problem(client.post("/api/policy/apply", json=fence("G-1"), headers=h["ed"]),
                 409)["change_id"]
    assert problem(client.post("/api/policy/apply", json=fence("G-1"), headers=h["ed"]),
                   409)["change_id"] == c1           # the same change: no second entry
    c2 = problem(client.post("/api/policy/apply", json=fence("G-2"), headers=h["ed"]),
                 409)["change_id"]
    audit = len(store.audit_rows())
    body = problem(client.post("/api/policy/apply", json=fence("G-3"), headers=h["ed"]), 409)
    assert body["type"] == "urn:leotwin:problem:too-many-pending-changes"
    assert body["limit"] == 2 and body["pending"] == 2
    assert body["pending_change_ids"] == [c1, c2] and "change_id" not in body
    assert "at most 2" in body["detail"] and "max_pending_changes_per_user" in body["detail"]
    assert body["preview"]["breach"]
    assert count("ed") == 2 and len(store.audit_rows()) == audit
    assert store.history().versions[-1].version == 1
    # the same limit through a resource route
    geo = {"type": "Feature", "geometry": SQUARE_KYIV,
           "properties": {"id": "G-4", "action": "deny", "override_contracts": True}}
    assert problem(client.post("/api/geofences", json=geo, headers=h["ed"]), 409)[
        "type"] == "urn:leotwin:problem:too-many-pending-changes"
    # another user has its own allowance
    assert problem(client.post("/api/policy/apply", json=fence("G-3"), headers=h["root"]),
                   409)["change_id"]
    # an approved change no longer counts as pending
    assert client.post(f"/api/policy/changes/{c1}/approve", json={"reason": "ok"},
                       headers=h["ann"]).status_code == 200
    c3 = problem(client.post("/api/policy/apply", json=fence("G-3"), headers=h["ed"]),
                 409)["change_id"]
    assert c3 not in (c1, c2)
    problem(client.post("/api/policy/apply", json=fence("G-5"), headers=h["ed"]), 409)
    assert count("ed") == 3
    # nor does an expired one
    with store.engine.begin() as conn:
        conn.execute(update(PolicyChangeRow).where(PolicyChangeRow.id == c2).values(
            expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    assert problem(client.post("/api/policy/apply", json=fence("G-5"), headers=h["ed"]),
                   409)["change_id"] not in (c1, c2, c3)


def test_the_pending_change_limit_comes_from_the_settings(service, monkeypatch):
    from leotwin.config import Settings
    from leotwin.service import changes

    client, _ = service
    assert changes.max_pending_changes(client.app.state.leotwin) == 5  # the default
    monkeypatch.setenv("LEOTWIN_MAX_PENDING_CHANGES_PER_USER", "7")
    assert Settings().max_pending_changes_per_user == 7
