"""Runs through the API: a real (short) flagship run started with POST /api/runs and polled
until done, its results as the run directory says, and tenancy of runs and outages."""

from __future__ import annotations

import io
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from leotwin.analytics.report import report_tables_streamed
from leotwin.analytics.runio import read_run
from leotwin.service import results
from leotwin.service.results import STATES

WINDOW = {"start": "2022-10-05T10:00:00Z", "stop": "2022-10-05T10:02:00Z"}


def problem(r, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    return r.json()


def wait_done(client, headers, run_id: int, timeout_s: float = 240.0) -> dict:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        r = client.get(f"/api/runs/{run_id}", headers=headers).json()
        assert 0.0 <= r["progress"] <= 1.0
        if r["status"] in ("done", "failed"):
            return r
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} not finished after {timeout_s} s")


def expected_state(served: np.ndarray, cause: np.ndarray) -> np.ndarray:
    return np.where(served, np.where(cause != "", "degraded", "served"),
                    np.where(np.isin(cause, STATES), cause, "unattributed"))


def test_run_through_the_api(service, monkeypatch):
    client, h = service
    store = client.app.state.leotwin.store
    store.add_user("armyc", "customer", account="army", actor="root",
                   password="army password 1")
    tok = client.post("/api/auth/token", data={"username": "armyc",
                                               "password": "army password 1"}).json()
    army = {"Authorization": f"Bearer {tok['access_token']}"}
    # bad requests never queue anything
    problem(client.post("/api/runs", json={"scenario": "/etc/passwd"}, headers=army), 422)
    problem(client.post("/api/runs", json={"scenario": "nope"}, headers=h["root"]), 422)
    body = problem(client.post("/api/runs", json={"scenario": "ukraine-2022-10",
                                                  "start": "2022-10-05T10:00:00Z",
                                                  "stop": "2022-10-04T00:00:00Z"},
                               headers=army), 422)
    assert body["errors"][0]["field"].startswith("time")
    problem(client.post("/api/runs", json={"scenario": "ukraine-2022-10"}, headers=h["aud"]),
            403)
    problem(client.post("/api/runs", json={"run_dir": "/tmp"}, headers=h["ed"]), 403)
    assert client.get("/api/runs", headers=h["root"]).json() == []

    r = client.post("/api/runs", json={"scenario": "ukraine-2022-10", "name": "short",
                                       **WINDOW}, headers=army)
    assert r.status_code == 202, r.text
    run = r.json()
    assert run["status"] in ("queued", "running") and run["account"] == "army"
    assert run["created_by"] == "armyc" and run["start"] == WINDOW["start"]
    done = wait_done(client, army, run["id"])
    assert done["status"] == "done", done["error"]
    assert done["progress"] == 1.0 and done["chunks_done"] == done["chunks_total"] == 1
    rid = run["id"]
    tables = read_run(store.get_run(rid).out_dir)
    tl = tables["timeline"]
    army_ids = tables["terminals"].query("account == 'army'")["terminal"].astype(str).tolist()

    # --- tenancy: another customer sees nothing of it, by id or by list
    assert [x["id"] for x in client.get("/api/runs", headers=h["gus"]).json()] == []
    for path in ("", "/terminals", "/frames", "/availability", "/outages", "/summary",
                 "/timeline", f"/terminals/{army_ids[0]}/timeline"):
        problem(client.get(f"/api/runs/{rid}{path}", headers=h["gus"]), 404)
    problem(client.post(f"/api/runs/{rid}/counterfactual",
                        json={"without": ["geofence:occupied-2022-08-31"]}, headers=h["gus"]),
            403)  # counterfactual reruns are operator staff's
    assert [x["id"] for x in client.get("/api/runs", headers=h["root"]).json()] == [rid]

    # --- frames and terminals: the caller's columns only, codes as the timeline says
    fc = client.get(f"/api/runs/{rid}/terminals", headers=army).json()
    assert [f["properties"]["terminal"] for f in fc["features"]] == army_ids
    assert [f["properties"]["index"] for f in fc["features"]] == list(range(len(army_ids)))
    frames = client.get(f"/api/runs/{rid}/frames", headers=army).json()
    assert frames["states"] == list(STATES) and frames["terminals"] == army_ids
    codes = np.array(frames["codes"])
    assert codes.shape == (3, len(army_ids))
    sub = tl[tl["account"] == "army"].sort_values(["time", "terminal"])
    want = expected_state(sub["served"].to_numpy(bool), sub["cause"].astype(str).to_numpy())
    got = pd.DataFrame({"time": np.repeat(frames["times"], len(army_ids)),
                        "terminal": np.tile(army_ids, 3),
                        "state": np.array(STATES)[codes.ravel()]}).sort_values(
        ["time", "terminal"])
    assert (got["state"].to_numpy() == want).all()
    assert len(set(got["state"])) > 1  # the flagship has outages by several causes
    everything = client.get(f"/api/runs/{rid}/frames", headers=h["aud"]).json()
    assert len(everything["terminals"]) == len(tables["terminals"])
    assert client.get(f"/api/runs/{rid}/frames?every=2", headers=army).json()["times"] == [
        frames["times"][0], frames["times"][2]]
    # (S8) above the cell limit: 413 naming `every` and the least value that fits
    monkeypatch.setattr(results, "MAX_FRAME_CELLS", 2 * len(army_ids))
    body = problem(client.get(f"/api/runs/{rid}/frames?start={WINDOW['start']}",
                              headers=army), 413)
    assert body["errors"][0]["field"] == "every" and "at least 2" in body["errors"][0]["msg"]
    assert len(client.get(f"/api/runs/{rid}/frames?every=2&start={WINDOW['start']}",
                          headers=army).json()["times"]) == 2
    monkeypatch.undo()
    av = client.get(f"/api/runs/{rid}/availability", headers=army).json()
    total = np.sum([av["fractions"][s] for s in STATES], axis=0)
    assert np.allclose(total, 1.0) and av["times"] == frames["times"]
    # (C1) one classification: the API's availability is the report's, state by state
    report = report_tables_streamed(store.get_run(rid).out_dir)["availability"]
    every_av = client.get(f"/api/runs/{rid}/availability", headers=h["aud"]).json()
    for s in STATES:
        assert np.allclose(np.array(every_av["fractions"][s]) * 100.0,
                           report[f"{s}_pct"].to_numpy(), atol=1e-3), s

    # --- one terminal, outages, summary
    policy_cut = tl[(tl["cause"] == "policy") & (tl["account"] == "army")]["terminal"]
    term = str(policy_cut.iloc[0])
    tt = client.get(f"/api/runs/{rid}/terminals/{term}/timeline", headers=army).json()
    assert len(tt["steps"]) == 3 and tt["account"] == "army"
    assert any(s["state"] == "policy" and s["rule"].startswith("geofence:") for s in tt["steps"])
    assert tt["intervals"] and tt["intervals"][0]["terminal"] == term
    civil = tables["terminals"].query("account == 'civil'")["terminal"].iloc[0]
    problem(client.get(f"/api/runs/{rid}/terminals/{civil}/timeline", headers=army), 404)
    outages = client.get(f"/api/runs/{rid}/outages", headers=army).json()
    intervals = tables["intervals"]
    assert len(outages) == int(intervals["terminal"].isin(army_ids).sum()) > 0
    assert {o["account"] for o in outages} == {"army"}
    pol = client.get(f"/api/runs/{rid}/outages?cause=policy", headers=army).json()
    assert pol and {o["cause"] for o in pol} == {"policy"}
    gj = client.get(f"/api/runs/{rid}/outages?format=geojson", headers=army).json()
    assert len(gj["features"]) == len(outages)
    pqt = pq.read_table(io.BytesIO(client.get(f"/api/runs/{rid}/outages?format=parquet",
                                              headers=army).content))
    assert pqt.num_rows == len(outages) and set(pqt.column("account").to_pylist()) == {"army"}
    summ = client.get(f"/api/runs/{rid}/summary", headers=army).json()
    assert summ["terminals"] == len(army_ids) and summ["steps"] == 3
    assert summ["terminal_hours"] == pytest.approx(len(army_ids) * 3 / 60)
    lost = {c["cause"]: c["terminal_hours"] for c in summ["lost_by_cause"]}
    assert lost["policy"] == pytest.approx(
        ((sub["cause"] == "policy") & ~sub["served"]).sum() / 60)
    # --- timeline downloads (streamed), filtered for the customer
    raw = client.get(f"/api/runs/{rid}/timeline?format=parquet", headers=army).content
    mine = pq.read_table(io.BytesIO(raw))
    assert mine.num_rows == len(sub) and set(mine.column("account").to_pylist()) == {"army"}
    full = pq.read_table(io.BytesIO(client.get(f"/api/runs/{rid}/timeline",
                                               headers=h["root"]).content))
    assert full.num_rows == len(tl)
    rows = client.get(f"/api/runs/{rid}/timeline?format=json", headers=army).json()
    assert len(rows) == len(sub) and rows[0]["time"].endswith("Z")

    # --- admin registers the directory as a shared run: customers see their own terminals
    problem(client.post("/api/runs", json={"run_dir": "relative/dir"}, headers=h["root"]), 422)
    problem(client.post("/api/runs", json={"run_dir": "/nonexistent/run"}, headers=h["root"]),
            422)
    # (S11) a directory registered already, or outside the runs directory and
    # LEOTWIN_RUN_ROOTS (also through .. or a symlink), is refused
    out_dir = Path(store.get_run(rid).out_dir)
    problem(client.post("/api/runs", json={"run_dir": str(out_dir)}, headers=h["root"]), 409)
    outside = Path(tempfile.mkdtemp(prefix="leotwin-outside-"))
    try:
        shutil.copytree(out_dir, outside / "run")
        problem(client.post("/api/runs", json={"run_dir": str(outside / "run")},
                            headers=h["root"]), 422)
        escape = out_dir.parent / ".." / ".." / outside.name / "run"
        problem(client.post("/api/runs", json={"run_dir": str(escape)}, headers=h["root"]), 422)
        (out_dir.parent / "link").symlink_to(outside / "run")
        problem(client.post("/api/runs", json={"run_dir": str(out_dir.parent / "link")},
                            headers=h["root"]), 422)
    finally:
        shutil.rmtree(outside)
    shutil.copytree(out_dir, out_dir.parent / "shared-copy")
    shared = client.post("/api/runs", json={"run_dir": str(out_dir.parent / "shared-copy"),
                                            "name": "registered"}, headers=h["root"])
    assert shared.status_code == 201 and shared.json()["status"] == "done"
    sid = shared.json()["id"]
    assert shared.json()["scenario"]  # read from the run's progress file
    assert "/" not in client.get(f"/api/runs/{sid}", headers=army).json()["scenario"]
    assert client.get(f"/api/runs/{sid}", headers=h["gus"]).json()["n_terminals"] == 0
    assert client.get(f"/api/runs/{sid}/frames", headers=h["gus"]).json()["terminals"] == []
    assert client.get(f"/api/runs/{sid}/outages", headers=h["gus"]).json() == []
    assert client.get(f"/api/runs/{sid}", headers=army).json()["n_terminals"] == len(army_ids)

    if store.dialect == "sqlite":  # the rerun is backend-independent: once is enough
        problem(client.post(f"/api/runs/{rid}/counterfactual", json={"without": ["bogus"]},
                            headers=h["ed"]), 422)
        body = problem(client.post(f"/api/runs/{rid}/counterfactual", json={
            "without": ["geofence:occupied-2022-08-31", "jammer:nope"]}, headers=h["ed"]), 422)
        assert [(e["row"], e["field"]) for e in body["errors"]] == [(1, "without")]
        assert "jammer:nope" in body["detail"]
        problem(client.post(f"/api/runs/{rid}/counterfactual", json={
            "without": ["geofence:occupied-2022-08-31"]}, headers=army), 403)
        cf = client.post(f"/api/runs/{rid}/counterfactual",
                         json={"without": ["geofence:occupied-2022-08-31"]}, headers=h["ed"])
        assert cf.status_code == 200, cf.text
        cf = cf.json()
        by = {a["key"]: a["hours_restored"] for a in cf["by_account"]}
        policy_steps = int(((sub["cause"] == "policy") & ~sub["served"]).sum())
        assert by["army"] > 0.5 * policy_steps / 60
        assert sum(a["hours_restored"] for a in cf["by_area"]) == pytest.approx(
            cf["hours_restored"])


def test_queued_runs_are_capped_and_cancellable(service):
    """S8: a user has at most LEOTWIN_MAX_ACTIVE_RUNS_PER_USER runs queued or running; a
    queued run is cancelled with DELETE (by its creator or an admin), a started one is not."""
    from concurrent.futures import Future

    client, h = service
    store, runs = client.app.state.leotwin.store, client.app.state.leotwin.runs
    ids = []
    for k in range(2):
        r = store.create_run(name=f"q{k}", out_dir=f"/nonexistent/q{k}", created_by="cathy",
                             account="acme")
        runs.futures[r.id] = Future()  # queued: not started by the worker
        ids.append(r.id)
    body = problem(client.post("/api/runs", json={"scenario": "ukraine-2022-10", **WINDOW},
                               headers=h["cathy"]), 429)
    assert "at most 2" in body["detail"]
    problem(client.delete(f"/api/runs/{ids[0]}", headers=h["gus"]), 404)
    problem(client.delete(f"/api/runs/{ids[0]}", headers=h["ed"]), 403)
    r = client.delete(f"/api/runs/{ids[0]}", headers=h["cathy"])
    assert r.status_code == 200 and r.json()["status"] == "failed"
    assert "cancelled by cathy" in r.json()["error"]
    problem(client.delete(f"/api/runs/{ids[0]}", headers=h["cathy"]), 409)
    runs.futures[ids[1]].set_running_or_notify_cancel()  # the worker took it
    store.update_run(ids[1], status="running")
    problem(client.delete(f"/api/runs/{ids[1]}", headers=h["root"]), 409)
