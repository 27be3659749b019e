"""Bulk terminal import: CSV and GeoJSON, all or nothing, every bad row and field named,
tenancy, wrong CRS, unknown fields, oversize uploads — the store unchanged on any error."""

from __future__ import annotations

import json

from sqlalchemy import func, select

from leotwin.store.models import AuditRow, CurrentTerminalRow, PolicyVersionRow


def snapshot(client) -> dict:
    store = client.app.state.leotwin.store
    with store.engine.connect() as conn:
        counts = {m.__tablename__: conn.scalar(select(func.count()).select_from(m))
                  for m in (PolicyVersionRow, AuditRow, CurrentTerminalRow)}
    return {"counts": counts, "terminals": store.terminals()}


def upload(client, headers, name: str, data: str | bytes, ctype: str = "text/csv"):
    body = data.encode() if isinstance(data, str) else data
    return client.post("/api/terminals/import", files={"file": (name, body, ctype)},
                       headers=headers)


def problem(r, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    return r.json()


GOOD_CSV = """id,account,plan,lat_deg,lon_deg,registered
N-1,acme,std,50.1,30.1,true
N-2,acme,,50.2,30.2,no
A-1,acme,std,50.46,30.53,1
"""


def test_csv_import_creates_and_updates(service):
    client, h = service
    r = upload(client, h["ed"], "t.csv", GOOD_CSV)
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["created"], body["updated"], body["terminals"]) == (2, 1, 3)
    ids = [t["id"] for t in client.get("/api/terminals?account=acme", headers=h["ed"]).json()]
    assert ids == ["A-1", "A-2", "N-1", "N-2"]
    t = client.get("/api/terminals/N-2", headers=h["ed"]).json()
    assert t["plan"] is None and t["registered"] is False
    assert client.get("/api/terminals/A-1", headers=h["ed"]).json()["lat_deg"] == 50.46
    store = client.app.state.leotwin.store
    assert store.audit_rows()[-1].actor == "ed" and store.verify_audit().ok


def test_geojson_import_by_a_customer(service):
    client, h = service
    doc = {"type": "FeatureCollection",
           "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}},
           "features": [{"type": "Feature", "id": "C-1",
                         "geometry": {"type": "Point", "coordinates": [30.3, 50.3]},
                         "properties": {"plan": "std"}},
                        {"type": "Feature", "geometry": None,
                         "properties": {"id": "C-2", "kind": "in_motion"}}]}
    # a customer may not set the plan or the position (operator fields): nothing imported
    body = problem(upload(client, h["cathy"], "t.geojson", json.dumps(doc),
                          "application/geo+json"), 403)
    assert {(e["row"], e["field"]) for e in body["errors"]} == {
        (1, "plan"), (1, "lat_deg"), (1, "lon_deg")}
    doc["features"][0] = {"type": "Feature", "id": "C-1", "geometry": None,
                          "properties": {"serial": "SN-1"}}
    r = upload(client, h["cathy"], "t.geojson", json.dumps(doc), "application/geo+json")
    assert r.status_code == 201, r.text
    mine = {t["id"]: t for t in client.get("/api/terminals", headers=h["cathy"]).json()}
    assert mine["C-1"]["account"] == "acme" and mine["C-1"]["serial"] == "SN-1"
    assert mine["C-2"]["lat_deg"] is None and mine["C-2"]["kind"] == "in_motion"
    assert mine["C-1"]["status"] == "standby" and mine["C-1"]["registered"] is False


def test_csv_with_one_bad_row_imports_nothing(service):
    client, h = service
    before = snapshot(client)
    bad = GOOD_CSV.replace("N-2,acme,,50.2,30.2,no", "N-2,acme,,95.0,30.2,maybe")
    body = problem(upload(client, h["ed"], "t.csv", bad), 422)
    fields = {(e["row"], e["field"]) for e in body["errors"]}
    assert fields == {(2, "lat_deg"), (2, "registered")}
    assert "nothing was imported" in body["detail"]
    # unknown references are named by row too
    body = problem(upload(client, h["ed"], "t.csv",
                          "id,account,plan\nX-1,acme,std\nX-2,nobody,gold\n"), 422)
    assert {(e["row"], e["field"]) for e in body["errors"]} == {(2, "account"), (2, "plan")}
    # duplicates, wrong column count, unknown column
    body = problem(upload(client, h["ed"], "t.csv", "id,account\nX-1,acme\nX-1,acme\n"), 422)
    assert body["errors"][0]["row"] == 2 and body["errors"][0]["field"] == "id"
    body = problem(upload(client, h["ed"], "t.csv", "id,account\nX-1,acme,extra\n"), 422)
    assert body["errors"][0]["row"] == 1
    body = problem(upload(client, h["ed"], "t.csv", "id,account,colour\nX-1,acme,red\n"), 422)
    assert body["errors"][0]["field"] == "colour" and body["errors"][0]["row"] is None
    body = problem(upload(client, h["ed"], "t.csv", b"id,account\n\xff\xfe,acme\n"), 422)
    assert "UTF-8" in body["errors"][0]["msg"]
    problem(upload(client, h["ed"], "t.csv", ""), 422)
    assert snapshot(client) == before


def test_bad_geojson_imports_nothing(service):
    client, h = service
    before = snapshot(client)
    point = {"type": "Feature", "properties": {"id": "P-1", "account": "acme"},
             "geometry": {"type": "Point", "coordinates": [30.0, 50.0]}}
    cases = [
        ('{"type": "FeatureCollection", "features": [', None, "not valid JSON"),
        (json.dumps({"type": "FeatureCollection", "features": [point],
                     "crs": {"type": "name", "properties": {"name": "EPSG:3857"}}}),
         "crs", "not WGS84"),
        (json.dumps({"type": "FeatureCollection", "features": [
            point, {**point, "properties": {"id": "P-2", "account": "acme", "colour": "red"}}]}),
         "colour", "unknown field"),
        (json.dumps({"type": "FeatureCollection", "features": [
            {**point, "geometry": {"type": "Polygon", "coordinates": []}}]}),
         "geometry", "Point"),
        (json.dumps({"type": "FeatureCollection", "features": [
            {**point, "geometry": {"type": "Point", "coordinates": ["a", 1]}}]}),
         "geometry.coordinates", "numbers"),
        (json.dumps({"type": "Feature"}), "type", "FeatureCollection"),
        (json.dumps({"type": "FeatureCollection", "features": [
            {**point, "geometry": {"type": "Point", "coordinates": [200.0, 50.0]}}]}),
         "lon_deg", "less than or equal"),
    ]
    for text, field, msg in cases:
        body = problem(upload(client, h["ed"], "t.geojson", text, "application/geo+json"), 422)
        err = body["errors"][0]
        assert err["field"] == field and msg in err["msg"], (text, body)
    assert snapshot(client) == before


def test_import_tenancy_and_roles(service):
    client, h = service
    before = snapshot(client)
    # a row of another account, or an existing terminal of another account: refused, 403
    body = problem(upload(client, h["cathy"], "t.csv",
                          "id,account\nX-1,acme\nX-2,globex\n"), 403)
    assert body["errors"][0]["row"] == 2 and body["errors"][0]["field"] == "account"
    body = problem(upload(client, h["cathy"], "t.csv", "id,lat_deg,lon_deg\nG-1,50,30\n"), 403)
    assert body["errors"][0]["row"] == 1 and body["errors"][0]["field"] == "id"
    problem(upload(client, h["aud"], "t.csv", "id,account\nX-1,acme\n"), 403)
    problem(upload(client, h["ann"], "t.csv", "id,account\nX-1,acme\n"), 403)
    assert snapshot(client) == before
    assert client.get("/api/terminals/G-1", headers=h["gus"]).json()["lat_deg"] == 49.98


def test_oversize_upload_is_refused(service):
    client, h = service
    before = snapshot(client)
    limit = client.app.state.leotwin.settings.max_upload_bytes
    rows = "".join(f"T-{k:06d},acme,,50.0,30.0\n" for k in range(limit // 20 + 10))
    data = "id,account,plan,lat_deg,lon_deg\n" + rows
    assert len(data) > limit
    body = problem(upload(client, h["ed"], "big.csv", data), 413)
    assert str(limit) in body["detail"]

    def chunks():  # no Content-Length: the streamed body is counted
        yield b"x" * (limit // 2)
        yield b"x" * (limit // 2)
        yield b"x" * 100

    r = client.post("/api/terminals/import", content=chunks(),
                    headers={**h["ed"], "Content-Type": "multipart/form-data; boundary=b"})
    problem(r, 413)
    assert snapshot(client) == before
