"""The REST service on SQLite and PostgreSQL: every route's happy path, 401 without a token,
403 for a wrong role, and cross-tenant access refused (404 by id, 403 by explicit account)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from conftest import SERVICE_PASSWORD
from leotwin.store import Store

SQUARE_KYIV = {"type": "Polygon", "coordinates": [[[30.0, 50.0], [31.0, 50.0], [31.0, 51.0],
                                                    [30.0, 51.0], [30.0, 50.0]]]}
PUBLIC = {("GET", "/api/health"), ("GET", "/api/layers/{name}"), ("POST", "/api/auth/token")}


def problem(r, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == status and body["title"] and "errors" in body
    return body


def approve(client, h, refused: dict, approver: str = "ann", reason: str = "approved") -> str:
    """Approve the pending change of a 409 answer as ``approver``; its ``change_id``."""
    cid = refused["change_id"]
    r = client.post(f"/api/policy/changes/{cid}/approve", json={"reason": reason},
                    headers=h[approver])
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "approved" and r.json()["approver"] == approver
    return cid


def api_routes(client) -> list[tuple[str, str]]:
    paths = client.get("/openapi.json").json()["paths"]
    return [(m.upper(), p) for p, ops in paths.items() for m in ops]


def fill(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


@pytest.mark.parametrize("service_settings", ["sqlite"], indirect=True)
def test_every_route_needs_a_token(service):
    """Authentication does not depend on the backend: checked once, on SQLite."""
    client, _ = service
    routes = api_routes(client)
    assert len(routes) > 40
    for k, (method, path) in enumerate(routes):
        if (method, path) in PUBLIC:
            continue
        bad = {"Authorization": "Bearer nonsense"} if k % 2 else {}
        r = client.request(method, fill(path), headers=bad)
        body = problem(r, 401)
        assert r.headers["www-authenticate"] == "Bearer", (method, path, body)


def test_login_tokens_and_me(service):
    client, h = service
    problem(client.post("/api/auth/token", data={"username": "root", "password": "wrong-pw"}),
            401)
    problem(client.post("/api/auth/token", data={"username": "ghost", "password": "whatever"}),
            401)
    assert client.get("/api/users/me", headers=h["cathy"]).json() == {
        "name": "cathy", "role": "customer", "account": "acme", "disabled": False}
    r = client.post("/api/auth/api-tokens", json={"name": "script", "expires_days": 30},
                    headers=h["ed"])
    assert r.status_code == 201
    tok = r.json()
    assert tok["token"].startswith("ltk_") and tok["expires_at"]
    bearer = {"Authorization": f"Bearer {tok['token']}"}
    assert client.get("/api/users/me", headers=bearer).json()["name"] == "ed"
    listed = client.get("/api/auth/api-tokens", headers=h["ed"]).json()
    assert [t["name"] for t in listed] == ["script"] and "token" not in listed[0]
    problem(client.delete(f"/api/auth/api-tokens/{tok['id']}", headers=h["cathy"]), 404)
    assert client.delete(f"/api/auth/api-tokens/{tok['id']}", headers=h["ed"]).status_code == 204
    problem(client.get("/api/users/me", headers=bearer), 401)
    problem(client.delete(f"/api/auth/api-tokens/{tok['id']}", headers=h["ed"]), 404)
    # the store keeps only the hash
    store = client.app.state.leotwin.store
    with store.engine.connect() as conn:
        from sqlalchemy import text

        hashes = conn.execute(text("SELECT token_hash FROM api_tokens")).scalars().all()
    assert tok["token"] not in hashes and len(hashes[0]) == 64


def test_users_admin_only(service):
    client, h = service
    assert len(client.get("/api/users", headers=h["root"]).json()) == 6
    problem(client.get("/api/users", headers=h["ed"]), 403)
    problem(client.post("/api/users", json={"name": "x", "role": "auditor"}, headers=h["ed"]),
            403)
    r = client.post("/api/users", json={"name": "newcust", "role": "customer",
                                        "account": "acme", "password": "long enough pw"},
                    headers=h["root"])
    assert r.status_code == 201 and r.json()["account"] == "acme"
    body = problem(client.post("/api/users", json={"name": "nc2", "role": "customer"},
                               headers=h["root"]), 422)
    assert body["errors"][0]["field"] == "account"
    problem(client.post("/api/users", json={"name": "newcust", "role": "auditor"},
                        headers=h["root"]), 409)
    body = problem(client.post("/api/users", json={"name": "z", "role": "wizard"},
                               headers=h["root"]), 422)
    assert body["errors"][0]["field"] == "role"
    assert client.get("/api/users/cathy", headers=h["cathy"]).status_code == 200
    problem(client.get("/api/users/gus", headers=h["cathy"]), 404)
    problem(client.put("/api/users/gus/password", json={"password": "another long one"},
                       headers=h["cathy"]), 404)
    # one's own password: only with the current one; older access tokens become void
    problem(client.put("/api/users/cathy/password", json={"password": "another long one"},
                       headers=h["cathy"]), 403)
    problem(client.put("/api/users/cathy/password", json={
        "password": "another long one", "current_password": "wrong wrong"},
        headers=h["cathy"]), 403)
    assert client.put("/api/users/cathy/password", json={
        "password": "another long one", "current_password": SERVICE_PASSWORD},
        headers=h["cathy"]).status_code == 204
    problem(client.get("/api/users/me", headers=h["cathy"]), 401)
    assert client.post("/api/auth/token", data={"username": "cathy",
                                                "password": "another long one"}).status_code == 200


def test_admin_disables_users_and_revokes_tokens(service):
    """S7: an admin disables a user (every token refused at once), changes roles, revokes
    anyone's API token; API tokens expire after 90 days by default, 365 at most."""
    client, h = service
    tok = client.post("/api/auth/api-tokens", json={"name": "t"}, headers=h["cathy"]).json()
    days = (datetime.fromisoformat(tok["expires_at"]) - datetime.now(UTC)).days
    assert 88 <= days <= 90
    problem(client.post("/api/auth/api-tokens", json={"name": "t", "expires_days": 400},
                        headers=h["cathy"]), 422)
    api = {"Authorization": f"Bearer {tok['token']}"}
    assert client.get("/api/users/me", headers=api).status_code == 200
    assert {t["user"] for t in client.get("/api/auth/api-tokens?all_users=true",
                                          headers=h["root"]).json()} == {"cathy"}
    problem(client.get("/api/auth/api-tokens?all_users=true", headers=h["ed"]), 403)
    assert client.delete(f"/api/auth/api-tokens/{tok['id']}",
                         headers=h["root"]).status_code == 204
    problem(client.get("/api/users/me", headers=api), 401)
    tok = client.post("/api/auth/api-tokens", json={"name": "t2"}, headers=h["gus"]).json()
    api = {"Authorization": f"Bearer {tok['token']}"}
    problem(client.patch("/api/users/gus", json={"disabled": True}, headers=h["ed"]), 403)
    r = client.patch("/api/users/gus", json={"disabled": True}, headers=h["root"])
    assert r.status_code == 200 and r.json()["disabled"] is True
    problem(client.get("/api/users/me", headers=h["gus"]), 401)
    problem(client.get("/api/users/me", headers=api), 401)
    problem(client.post("/api/auth/token", data={"username": "gus",
                                                 "password": SERVICE_PASSWORD}), 401)
    assert client.patch("/api/users/gus", json={"disabled": False},
                        headers=h["root"]).status_code == 200
    problem(client.get("/api/users/me", headers=h["gus"]), 401)  # disabling voided it
    # a role change voids the old tokens too; the last admin cannot be removed
    assert client.patch("/api/users/ed", json={"role": "auditor"},
                        headers=h["root"]).json()["role"] == "auditor"
    problem(client.get("/api/users/me", headers=h["ed"]), 401)
    problem(client.delete("/api/users/root", headers=h["root"]), 422)
    assert client.delete("/api/users/aud", headers=h["root"]).json()["disabled"] is True
    problem(client.patch("/api/users/ghost", json={"disabled": True}, headers=h["root"]), 404)
    assert client.app.state.leotwin.store.verify_audit().ok


def test_terminals_are_filtered_by_account_in_the_query(service):
    client, h = service
    ids = [t["id"] for t in client.get("/api/terminals", headers=h["root"]).json()]
    assert ids == ["A-1", "A-2", "G-1"]
    mine = client.get("/api/terminals", headers=h["cathy"]).json()
    assert [t["id"] for t in mine] == ["A-1", "A-2"] and {t["account"] for t in mine} == {"acme"}
    assert [t["id"] for t in client.get("/api/terminals?account=globex",
                                        headers=h["aud"]).json()] == ["G-1"]
    # cross-tenant: by list filter 403, by id 404 (like an id that does not exist)
    problem(client.get("/api/terminals?account=globex", headers=h["cathy"]), 403)
    assert client.get("/api/terminals?account=acme", headers=h["cathy"]).status_code == 200
    assert client.get("/api/terminals/A-1", headers=h["cathy"]).json()["id"] == "A-1"
    problem(client.get("/api/terminals/G-1", headers=h["cathy"]), 404)
    problem(client.get("/api/terminals/NOPE", headers=h["cathy"]), 404)
    assert client.get("/api/terminals?limit=1&offset=1", headers=h["root"]).json()[0]["id"] == \
        "A-2"


def test_terminal_changes_are_audited_versions(service):
    client, h = service
    store: Store = client.app.state.leotwin.store
    audit_before = len(store.audit_rows())
    # a customer writes only serial and kind; its new terminal waits (standby, unregistered)
    body = problem(client.post("/api/terminals", json={
        "id": "A-3", "account": "acme", "plan": "std", "lat_deg": 50.5, "lon_deg": 30.4},
        headers=h["cathy"]), 403)
    assert {e["field"] for e in body["errors"]} == {"plan", "lat_deg", "lon_deg"}
    r = client.post("/api/terminals", json={"id": "A-3", "account": "acme", "serial": "S3"},
                    headers={**h["cathy"], "X-Change-Reason": "new site"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["version"] == 2 and body["author"] == "cathy" and body["reason"] == "new site"
    assert body["item"]["id"] == "A-3" and body["preview"]["breach"] is False
    assert body["item"]["status"] == "standby" and body["item"]["registered"] is False
    rows = store.audit_rows()
    assert len(rows) == audit_before + 1 and rows[-1].actor == "cathy"
    assert rows[-1].action == "policy.record" and rows[-1].entity_id == "2"
    for upd in ({"status": "active"}, {"plan": "std"}, {"registered": True},
                {"lat_deg": 50.5}):
        problem(client.patch("/api/terminals/A-3", json=upd, headers=h["cathy"]), 403)
    assert client.patch("/api/terminals/A-3", json={"serial": "S3b"},
                        headers=h["cathy"]).status_code == 200
    r = client.patch("/api/terminals/A-3", json={"status": "active", "plan": "std",
                                                 "registered": True, "lat_deg": 50.5,
                                                 "lon_deg": 30.4}, headers=h["ed"])
    assert r.status_code == 200, r.text
    # no existence oracle: another account's id is answered like any unavailable id
    taken = problem(client.post("/api/terminals", json={"id": "G-1", "account": "acme"},
                                headers=h["cathy"]), 403)
    assert "G-1" not in taken["detail"] and "globex" not in str(taken)
    # cross-tenant writes
    problem(client.post("/api/terminals", json={"id": "X-1", "account": "globex"},
                        headers=h["cathy"]), 403)
    problem(client.patch("/api/terminals/G-1", json={"serial": "x"}, headers=h["cathy"]), 404)
    problem(client.delete("/api/terminals/G-1", headers=h["cathy"]), 404)
    problem(client.patch("/api/terminals/A-3", json={"account": "globex"}, headers=h["cathy"]),
            403)
    # wrong roles
    problem(client.post("/api/terminals", json={"id": "X-2", "account": "acme"},
                        headers=h["aud"]), 403)
    problem(client.post("/api/terminals", json={"id": "X-2", "account": "acme"},
                        headers=h["ann"]), 403)
    # validation: named field, unknown fields refused, unknown references named
    body = problem(client.post("/api/terminals", json={"id": "X-3", "account": "acme",
                                                       "lat_deg": 123}, headers=h["ed"]), 422)
    assert body["errors"][0]["field"] == "lat_deg"
    body = problem(client.post("/api/terminals", json={"id": "X-3", "account": "acme",
                                                       "colour": "red"}, headers=h["ed"]), 422)
    assert body["errors"][0]["field"] == "colour"
    body = problem(client.post("/api/terminals", json={"id": "X-3", "account": "acme",
                                                       "plan": "gold"}, headers=h["ed"]), 422)
    assert body["errors"][0]["field"] == "plan"
    problem(client.post("/api/terminals", json={"id": "A-1", "account": "acme"},
                        headers=h["ed"]), 409)
    # suspending a contracted terminal cuts the contract's availability: the guard asks for
    # an approver, as for any other breaching change (a customer may not change the status)
    problem(client.patch("/api/terminals/A-3", json={"status": "suspended"},
                         headers=h["cathy"]), 403)
    body = problem(client.patch("/api/terminals/A-3", json={"status": "suspended"},
                                headers=h["ed"]), 409)
    assert body["preview"]["contracts_affected"] == ["C-ACME"]
    cid = approve(client, h, body)
    r = client.patch("/api/terminals/A-3", json={"status": "suspended"},
                     headers={**h["ed"], "X-Approval-Id": cid})
    assert r.status_code == 200, r.text
    assert r.json()["item"]["status"] == "suspended" and r.json()["approver"] == "ann"
    assert client.get("/api/terminals?status=suspended", headers=h["cathy"]).json()[0]["id"] == \
        "A-3"
    assert client.delete("/api/terminals/A-3", headers=h["cathy"]).status_code == 200
    assert [t["id"] for t in client.get("/api/terminals", headers=h["cathy"]).json()] == [
        "A-1", "A-2"]
    assert len(store.history().versions) == 6 and store.verify_audit().ok
    assert store.audit_rows()[-2].action == "policy.approval_used"


def test_accounts_plans_contracts_service_areas(service):
    client, h = service
    assert [a["id"] for a in client.get("/api/accounts", headers=h["aud"]).json()] == [
        "acme", "globex"]
    problem(client.get("/api/accounts", headers=h["cathy"]), 403)
    problem(client.get("/api/accounts/acme", headers=h["cathy"]), 403)
    problem(client.post("/api/accounts", json={"id": "x", "country": "UKR"}, headers=h["aud"]),
            403)
    r = client.post("/api/accounts", json={"id": "initech", "country": "POL"}, headers=h["ed"])
    assert r.status_code == 201 and r.json()["item"]["country"] == "POL"
    body = problem(client.post("/api/accounts", json={"id": "bad", "country": "Poland"},
                               headers=h["ed"]), 422)
    assert body["errors"][0]["field"] == "country"
    r = client.patch("/api/accounts/initech", json={"name": "Initech"}, headers=h["ed"])
    assert r.json()["item"]["name"] == "Initech"
    problem(client.delete("/api/accounts/acme", headers=h["ed"]), 409)  # still has terminals
    assert client.delete("/api/accounts/initech", headers=h["root"]).status_code == 200
    problem(client.get("/api/accounts/initech", headers=h["root"]), 404)

    assert [p["name"] for p in client.get("/api/plans", headers=h["cathy"]).json()] == ["std"]
    assert client.get("/api/plans/std", headers=h["gus"]).json()["max_mbps"] == 100
    problem(client.post("/api/plans", json={"name": "gold", "priority_quota_gb_month": 1,
                                            "min_mbps": 1, "max_mbps": 10},
                        headers=h["cathy"]), 403)
    r = client.post("/api/plans", json={"name": "gold", "priority_quota_gb_month": 1,
                                        "min_mbps": 1, "max_mbps": 10}, headers=h["ed"])
    assert r.status_code == 201
    body = problem(client.patch("/api/plans/gold", json={"min_mbps": 50}, headers=h["ed"]), 422)
    assert "min_mbps" in body["errors"][0]["msg"]
    assert client.patch("/api/plans/gold", json={"max_mbps": 20},
                        headers=h["ed"]).json()["item"]["max_mbps"] == 20
    problem(client.delete("/api/plans/std", headers=h["ed"]), 409)
    assert client.delete("/api/plans/gold", headers=h["ed"]).status_code == 200

    contracts = client.get("/api/contracts", headers=h["aud"]).json()
    assert [c["id"] for c in contracts] == ["C-ACME"]
    problem(client.get("/api/contracts", headers=h["cathy"]), 403)
    new = {"id": "C-GLOBEX", "account": "globex", "committed_availability_pct": 90,
           "covered_area": SQUARE_KYIV, "term_start": "2022-01-01T00:00:00Z",
           "term_end": "2030-01-01T00:00:00Z"}
    assert client.post("/api/contracts", json=new, headers=h["ed"]).status_code == 201
    bad = {**new, "id": "C-BAD", "covered_area": {"type": "Polygon", "coordinates": [[[0, 0]]]}}
    body = problem(client.post("/api/contracts", json=bad, headers=h["ed"]), 422)
    assert body["errors"][0]["field"]
    assert client.patch("/api/contracts/C-GLOBEX", json={"price": 5},
                        headers=h["ed"]).json()["item"]["price"] == 5
    assert client.get("/api/contracts/C-GLOBEX", headers=h["ann"]).json()["account"] == "globex"
    # deleting or weakening a contract in term needs an approval (S2); strengthening does not
    for weaker in ({"committed_availability_pct": 80}, {"term_end": "2029-01-01T00:00:00Z"},
                   {"covered_area": {"type": "Polygon", "coordinates": [[
                       [30.0, 50.0], [30.5, 50.0], [30.5, 51.0], [30.0, 51.0], [30.0, 50.0]]]}}):
        body = problem(client.patch("/api/contracts/C-GLOBEX", json=weaker, headers=h["ed"]),
                       409)
        assert body["preview"]["weakened_contracts"][0]["contract"] == "C-GLOBEX"
    assert client.patch("/api/contracts/C-GLOBEX", json={"committed_availability_pct": 95},
                        headers=h["ed"]).status_code == 200
    body = problem(client.delete("/api/contracts/C-GLOBEX", headers=h["ed"]), 409)
    assert body["preview"]["breach"] and "deleted" in body["detail"]
    cid = approve(client, h, body)
    assert client.delete("/api/contracts/C-GLOBEX", headers={
        **h["ed"], "X-Approval-Id": cid}).status_code == 200

    r = client.post("/api/service-areas", json={"id": "licensed", "countries": ["UKR", "POL"]},
                    headers=h["ed"])
    assert r.status_code == 201
    fc = client.get("/api/service-areas", headers=h["aud"]).json()
    assert fc["type"] == "FeatureCollection"
    assert fc["features"][0]["geometry"]["type"] in ("Polygon", "MultiPolygon")
    problem(client.post("/api/service-areas", json={"id": "x", "countries": ["XXX"]},
                        headers=h["ed"]), 422)
    assert client.put("/api/service-areas/licensed", json={"countries": ["UKR"]},
                      headers=h["ed"]).json()["item"]["countries"] == ["UKR"]
    assert client.get("/api/service-areas/licensed",
                      headers=h["ed"]).json()["properties"]["countries"] == ["UKR"]
    assert client.delete("/api/service-areas/licensed", headers=h["ed"]).status_code == 200
    store = client.app.state.leotwin.store
    assert store.verify_audit().ok
    assert {r.actor for r in store.audit_rows(action="policy.record")} == {"root", "ed"}


def fence_feature(gid: str, **props) -> dict:
    return {"type": "Feature", "geometry": SQUARE_KYIV,
            "properties": {"id": gid, "action": "deny", "reason": "test restriction",
                           "valid_from": "2030-01-01T00:00:00Z", **props}}


def test_geofences_breach_needs_a_second_user(service):
    client, h = service
    store: Store = client.app.state.leotwin.store
    n_versions = len(store.history().versions)
    # a deny fence that spares contracted terminals: no breach, applied at once
    r = client.post("/api/geofences", json=fence_feature("G-SOFT"), headers=h["ed"])
    assert r.status_code == 201, r.text
    assert r.json()["preview"]["breach"] is False
    fc = client.get("/api/geofences", headers=h["aud"]).json()
    props = fc["features"][0]["properties"]
    assert props["id"] == "G-SOFT" and props["author"] == "ed" and props["action"] == "deny"
    problem(client.get("/api/geofences", headers=h["cathy"]), 403)
    # overriding the contract breaches it: 409 with the preview, nothing recorded
    hard = fence_feature("G-HARD", override_contracts=True)
    body = problem(client.post("/api/geofences", json=hard, headers=h["ed"]), 409)
    assert body["preview"]["breach"] and body["preview"]["contracts_affected"] == ["C-ACME"]
    assert body["preview"]["credits_owed"] > 0
    assert len(store.history().versions) == n_versions + 1
    # the author cannot approve their own change; an auditor is not an approver; an
    # unapproved or unknown change id is no approval
    cid = body["change_id"]
    problem(client.post(f"/api/policy/changes/{cid}/approve", json={"reason": "me"},
                        headers=h["aud"]), 403)
    problem(client.post("/api/geofences", json=hard, headers={**h["ed"], "X-Approval-Id": cid}),
            409)
    problem(client.post("/api/geofences", json=hard,
                        headers={**h["ed"], "X-Approval-Id": "garbage"}), 409)
    r = client.post("/api/geofences", json=hard, headers=h["ed"])
    cid = approve(client, h, problem(r, 409), reason="operational security")
    r = client.post("/api/geofences", json=hard, headers={**h["ed"], "X-Approval-Id": cid})
    assert r.status_code == 201 and r.json()["approver"] == "ann"
    rows = store.audit_rows()
    assert [x.action for x in rows[-3:]] == ["policy.approve", "policy.record",
                                             "policy.approval_used"]
    assert rows[-3].actor == "ann" and rows[-3].reason == "operational security"
    # bad geometry and wrong CRS are named
    bad = fence_feature("G-BAD")
    bad["geometry"] = {"type": "Polygon", "coordinates": [[[30, 50], [31, 50], [31, 51]]]}
    body = problem(client.post("/api/geofences", json=bad, headers=h["ed"]), 422)
    assert body["errors"][0]["field"]
    crs = {**fence_feature("G-CRS"), "crs": {"type": "name",
                                             "properties": {"name": "EPSG:3857"}}}
    body = problem(client.post("/api/geofences", json=crs, headers=h["ed"]), 422)
    assert "WGS84" in body["detail"]
    problem(client.post("/api/geofences", json=fence_feature("G-T", action="throttle"),
                        headers=h["ed"]), 422)  # throttle needs max_mbps
    # G-HARD keeps C-ACME in breach, but a change that leaves C-ACME as it was is not the
    # change's doing: it needs no approval
    approved = h["ed"]
    new = fence_feature("G-SOFT", action="throttle", max_mbps=5)
    body = problem(client.put("/api/geofences/G-SOFT", json=new, headers=approved), 422)
    assert "overlaps" in body["detail"]  # check_overlaps: same specificity as G-HARD
    new["properties"]["scope"] = {"accounts": ["globex"]}
    r = client.put("/api/geofences/G-SOFT", json=new, headers=h["ed"])
    assert r.status_code == 200, r.text
    assert r.json()["approver"] is None and r.json()["preview"]["breach"] is False
    assert r.json()["preview"]["contracts"][0]["breach"]  # still in breach, as before
    assert r.json()["item"]["properties"]["max_mbps"] == 5
    problem(client.put("/api/geofences/G-SOFT", json=fence_feature("OTHER"), headers=approved),
            422)
    assert client.get("/api/geofences/G-SOFT", headers=h["ann"]).json()["properties"][
        "action"] == "throttle"
    assert client.delete("/api/geofences/G-SOFT", headers=approved).status_code == 200
    problem(client.delete("/api/geofences/G-SOFT", headers=approved), 404)
    r = client.delete("/api/geofences/G-HARD", headers=h["ed"])  # lifting the cut: no breach
    assert r.status_code == 200 and not r.json()["preview"]["breach"]
    assert store.verify_audit().ok


def test_policy_preview_apply_versions_history(service):
    client, h = service
    change = {"add_geofences": [{"id": "G-KYIV", "action": "deny", "geometry": SQUARE_KYIV,
                                 "reason": "test", "override_contracts": True}],
              "window_start": "2030-01-01T00:00:00Z", "window_end": "2030-01-02T00:00:00Z",
              "step_s": 3600}
    p = client.post("/api/policy/preview", json=change, headers=h["aud"])
    assert p.status_code == 200, p.text
    prev = p.json()
    assert prev["terminals_affected"] == 2 and prev["accounts_affected"] == ["acme"]
    assert prev["terminal_hours_lost"] == pytest.approx(2 * 25.0)
    assert {t["terminal"] for t in prev["terminals"]} == {"A-1", "A-2"}
    assert prev["breach"] and prev["contracts"][0]["after_pct"] == 0.0
    problem(client.post("/api/policy/preview", json=change, headers=h["cathy"]), 403)
    problem(client.post("/api/policy/apply", json={**change, "reason": "x"},
                        headers=h["ann"]), 403)
    refused = problem(client.post("/api/policy/apply", json={**change, "reason": "cut"},
                                  headers=h["ed"]), 409)
    assert refused["preview"] == prev
    cid = approve(client, h, refused, approver="root")
    ok = client.post("/api/policy/apply", json={**change, "reason": "cut", "approval_id": cid},
                     headers=h["ed"])
    assert ok.status_code == 201, ok.text
    assert ok.json()["version"] == 2 and ok.json()["approver"] == "root"
    assert ok.json()["preview"]["terminal_hours_lost"] == prev["terminal_hours_lost"]
    # validation: unknown ids, duplicates, windows
    body = problem(client.post("/api/policy/preview", json={"remove_geofences": ["NOPE"]},
                               headers=h["ed"]), 422)
    assert body["errors"][0]["row"] == 0 and body["errors"][0]["field"] == "remove_geofences"
    body = problem(client.post("/api/policy/preview", json=change, headers=h["ed"]), 422)
    assert "exists" in body["errors"][0]["msg"]
    problem(client.post("/api/policy/preview", json={
        "window_start": "2030-01-02T00:00:00Z", "window_end": "2030-01-01T00:00:00Z"},
        headers=h["ed"]), 422)
    problem(client.post("/api/policy/preview", json={"extra": 1}, headers=h["ed"]), 422)
    # removal restores service
    back = client.post("/api/policy/preview", json={
        "remove_geofences": ["G-KYIV"], "window_start": "2030-01-01T00:00:00Z",
        "window_end": "2030-01-02T00:00:00Z", "step_s": 3600}, headers=h["ed"]).json()
    assert back["terminal_hours_gained"] == pytest.approx(50.0) and not back["breach"]

    versions = client.get("/api/policy/versions", headers=h["aud"]).json()
    assert [v["version"] for v in versions] == [1, 2] and versions[1]["geofences"] == ["G-KYIV"]
    hist = client.get("/api/policy/history?as_of=2022-10-01T00:00:00Z", headers=h["aud"]).json()
    assert [v["version"] for v in hist] == [1]
    v1 = client.get("/api/policy/versions/1", headers=h["aud"]).json()
    assert v1["geofences"] == [] and len(v1["terminals"]) == 3
    problem(client.get("/api/policy/versions/99", headers=h["aud"]), 404)
    assert client.get("/api/policy", headers=h["ann"]).json()["geofences"][0]["id"] == "G-KYIV"
    problem(client.get("/api/policy", headers=h["gus"]), 403)


def test_explain_as_of_and_tenancy(service):
    client, h = service
    change = {"add_geofences": [{"id": "G-KYIV", "action": "deny", "geometry": SQUARE_KYIV,
                                 "reason": "front line", "override_contracts": True,
                                 "valid_from": "2022-10-02T00:00:00Z"}],
              "step_s": 3600, "reason": "restrict"}
    cid = approve(client, h, problem(client.post("/api/policy/apply", json=change,
                                                 headers=h["ed"]), 409))
    assert client.post("/api/policy/apply", json={**change, "approval_id": cid},
                       headers=h["ed"]).status_code == 201
    r = client.get("/api/explain/A-1?at=2022-10-05T12:00:00Z", headers=h["cathy"])
    assert r.status_code == 200, r.text
    e = r.json()
    assert e["decision"] == "deny" and e["rule_id"] == "geofence:G-KYIV"
    assert e["rule_author"] == "ed" and e["rule_reason"].startswith("front line")
    assert e["version"] == 2 and e["at"] == "2022-10-05T12:00:00Z" and e["account"] == "acme"
    # as known before the change was recorded (version 1): allowed by the plan
    old = client.get("/api/explain/A-1", params={"at": "2022-10-05T12:00:00Z",
                                                 "as_of": "2022-10-01T00:00:00Z"},
                     headers=h["aud"]).json()
    assert old["decision"] == "allow" and old["version"] == 1 and old["rule_id"] == "plan:std"
    assert old["as_of"] == "2022-10-01T00:00:00Z"
    body = problem(client.get("/api/explain/A-1?as_of=2000-01-01T00:00:00Z",
                              headers=h["aud"]), 422)
    assert body["errors"][0]["field"] == "as_of"
    problem(client.get("/api/explain/G-1", headers=h["cathy"]), 404)
    problem(client.get("/api/explain/NOPE", headers=h["root"]), 404)
    assert client.get("/api/explain/G-1", headers=h["gus"]).json()["account"] == "globex"


def test_audit_routes(service):
    client, h = service
    rows = client.get("/api/audit", headers=h["aud"]).json()
    assert rows[0]["id"] == 1 and rows[0]["action"] == "user.add"
    assert [r["action"] for r in client.get("/api/audit?action=policy.record",
                                            headers=h["root"]).json()] == ["policy.record"]
    assert len(client.get("/api/audit?limit=2&offset=1", headers=h["aud"]).json()) == 2
    one = client.get("/api/audit/1", headers=h["aud"]).json()
    assert one == rows[0]
    problem(client.get("/api/audit/9999", headers=h["aud"]), 404)
    v = client.get("/api/audit/verify", headers=h["aud"]).json()
    assert v["ok"] and v["rows"] == len(rows)
    for who in ("cathy", "ed", "ann"):  # customers (other accounts' rows) and non-auditors
        problem(client.get("/api/audit", headers=h[who]), 403)
        problem(client.get("/api/audit/1", headers=h[who]), 403)
        problem(client.get("/api/audit/verify", headers=h[who]), 403)


def test_layers_health_and_root(service):
    client, _ = service
    for name in ("countries", "oblasts", "gateways", "pops"):
        fc = client.get(f"/api/layers/{name}").json()
        assert fc["type"] == "FeatureCollection" and len(fc["features"]) > 10
    gw = client.get("/api/layers/gateways").json()["features"][0]
    assert gw["geometry"]["type"] == "Point" and "gateway" in gw["properties"]
    problem(client.get("/api/layers/rivers"), 404)
    health = client.get("/api/health").json()
    assert health["status"] == "ok" and health["database"] in ("sqlite", "postgresql")
    assert client.get("/").status_code == 200
    problem(client.get("/api/no-such-route"), 404)


def test_oversize_body_and_concurrent_change(service):
    client, h = service
    big = {"id": "X", "account": "acme", "serial": "x" * 70_000}
    body = problem(client.post("/api/terminals", json=big, headers=h["ed"]), 413)
    assert "bytes" in body["detail"]
    # a change prepared against an old version is refused, not silently merged
    from leotwin.service.changes import apply_change

    state = client.app.state.leotwin
    user = state.store.user("ed")
    pol = state.policy.current().policy
    from leotwin.service.problems import ProblemError

    with pytest.raises(ProblemError) as info:
        apply_change(state, user, pol, base_version=0, reason="stale")
    assert info.value.status == 409


@pytest.mark.parametrize("service_settings", ["sqlite"], indirect=True)
def test_expired_tokens_secret_and_cors(service, service_settings):
    from fastapi.testclient import TestClient

    from leotwin.service import create_app
    from leotwin.service.security import create_access_token, signing_key

    client, h = service
    key = signing_key(service_settings)
    assert (service_settings.data_dir / "secret_key").stat().st_mode & 0o777 == 0o600
    expired, _ = create_access_token("root", key, -1)
    problem(client.get("/api/users/me", headers={"Authorization": f"Bearer {expired}"}), 401)
    forged, _ = create_access_token("root", b"x" * 64, 5)
    problem(client.get("/api/users/me", headers={"Authorization": f"Bearer {forged}"}), 401)
    valid, _ = create_access_token("root", key, 5)
    assert client.get("/api/users/me", headers={"Authorization": f"Bearer {valid}"}).json()[
        "role"] == "admin"
    from leotwin.config import Settings

    other = Settings(data_dir=service_settings.data_dir,
                     database_url=service_settings.database_url, secret_key="s" * 40,
                     cors_origins="http://dash.example")
    app = create_app(other)
    with TestClient(app) as c2:  # a configured secret: the file's tokens are not accepted
        problem(c2.get("/api/users/me", headers={"Authorization": f"Bearer {valid}"}), 401)
        r = c2.options("/api/health", headers={"Origin": "http://dash.example",
                                               "Access-Control-Request-Method": "GET"})
        assert r.headers["access-control-allow-origin"] == "http://dash.example"
