"""Chunked, resumable scenario runs: resume after a kill, Dask, refusal of a foreign run dir."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import leotwin
from leotwin.cli import main

SCENARIO = """\
name: tiny
time: {start: 2022-10-05T12:00:00Z, stop: 2022-10-05T12:%(stop)02d:00Z, step_s: 60, slot_s: 15}
constellation:
  shells:
    - {altitude_km: 550, inclination_deg: 53, planes: 36, sats_per_plane: 20, phasing: 7}
ground:
  terminals: {file: terminals.csv}
policy: {file: policy.yaml}
faults:
  failures: [{sat: 5, start: 2022-10-05T12:03:00Z, end: 2022-10-05T12:09:00Z}]
  random: {mtbf_h: 5, repair_h: 1, seed: 4}
outputs: {chunk_steps: %(chunk)d, report: %(report)s}
"""
POLICY = """\
accounts: [{id: army, country: UKR}]
geofences:
  - id: G-EAST
    action: deny
    reason: illustrative
    author: ops
    geometry: {type: Polygon, coordinates: [[[35.5, 49.5], [37, 49.5], [37, 50.5], [35.5, 50.5],
                                              [35.5, 49.5]]]}
"""


def make(tmp: Path, *, stop=19, chunk=5, report="false", n_terms=2, quota_gb=None,
         roaming=False, contract=False) -> Path:
    """The tiny scenario. ``quota_gb``: every terminal on a plan with that monthly priority
    quota (fallback 2 Mbit/s); ``roaming``: a roaming rule (0 days) and the last terminal in
    Warsaw; ``contract``: a contract of the army over the west of Ukraine (not the geofence)."""
    tmp.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lat = np.r_[49.98, 50.45, rng.uniform(48, 51, n_terms)][:n_terms]
    lon = np.r_[36.25, 30.52, rng.uniform(30, 37, n_terms)][:n_terms]
    if roaming:
        lat[-1], lon[-1] = 52.23, 21.01
    terms = pd.DataFrame({"terminal": [f"t{k}" for k in range(n_terms)], "account": "army",
                          "lat_deg": lat, "lon_deg": lon})
    policy = POLICY
    if quota_gb is not None:
        terms["plan"] = "p"
        policy += (f"plans: [{{name: p, priority_quota_gb_month: {quota_gb:g}, min_mbps: 1, "
                   "max_mbps: 500, fallback_mbps: 2}]\n")
    if roaming:
        policy += "roaming_rules: [{id: r, max_days_per_year: 0}]\n"
    if contract:
        policy += ("contracts: [{id: c1, account: army, committed_availability_pct: 99.5,"
                   " credit_per_breach_hour: 10, term_start: 2022-01-01T00:00:00Z,"
                   " term_end: 2023-01-01T00:00:00Z, covered_area: {type: Polygon, coordinates:"
                   " [[[29, 47], [35, 47], [35, 52], [29, 52], [29, 47]]]}}]\n")
    terms.to_csv(tmp / "terminals.csv", index=False)
    (tmp / "policy.yaml").write_text(policy)
    path = tmp / "scenario.yaml"
    path.write_text(SCENARIO % {"stop": stop, "chunk": chunk, "report": report})
    return path


def chunk_bytes(out: Path) -> dict[str, bytes]:
    """The chunk files and the policy state files written next to them."""
    files = [*(out / "chunks").glob("chunk-*.parquet"), *(out / "chunks").glob("state-*.json")]
    return {p.name: p.read_bytes() for p in sorted(files)}


def tables_equal(a: Path, b: Path) -> None:
    """The run directories' tables are equal — and their files byte-identical (the manifest
    differs only by its creation time)."""
    for name in ("timeline", "intervals", "usage", "contracts", "terminals"):
        pd.testing.assert_frame_equal(pd.read_parquet(a / f"{name}.parquet"),
                                      pd.read_parquet(b / f"{name}.parquet"), check_exact=True)
        assert (a / f"{name}.parquet").read_bytes() == (b / f"{name}.parquet").read_bytes()
    manifests = [json.loads((d / "manifest.json").read_text()) for d in (a, b)]
    for m in manifests:
        m.pop("created_at")
    assert manifests[0] == manifests[1]
    # nothing temporary is left behind
    assert not [f.name for d in (a, b) for f in d.iterdir() if f.name.endswith(".tmp")]


def test_run_writes_chunks_tables_and_report(tmp_path):
    sc = make(tmp_path / "s", report="true")
    result = leotwin.run(sc, tmp_path / "out")
    assert result.complete and result.chunks_total == 4
    assert result.report_path is not None and result.report_path.exists()
    timeline = pd.read_parquet(tmp_path / "out" / "timeline.parquet")
    assert len(timeline) == 20 * 2
    kh = timeline[timeline["terminal"] == "t0"]
    assert (kh["cause"] == "policy").all() and (kh["rule"] == "geofence:G-EAST").all()
    assert (tmp_path / "out" / "intervals.parquet").exists()


def test_resume_after_partial_run_is_byte_identical(tmp_path):
    sc = make(tmp_path / "s")
    clean = leotwin.run(sc, tmp_path / "clean")
    part = leotwin.run(sc, tmp_path / "resumed", max_chunks=2)
    assert not part.complete and part.chunks_done == 2
    done = leotwin.run(sc, tmp_path / "resumed")
    assert done.complete
    assert chunk_bytes(tmp_path / "resumed") == chunk_bytes(tmp_path / "clean")
    tables_equal(tmp_path / "resumed", tmp_path / "clean")
    assert clean.complete


def test_killed_subprocess_resumes_to_the_same_result(tmp_path):
    # a quota spent after a few chunks and a roaming terminal: the carried state matters
    sc = make(tmp_path / "s", stop=59, chunk=1, n_terms=150, quota_gb=2, roaming=True)
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "leotwin.cli", "run", str(sc), "--out", str(out),
           "--no-report"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    progress = out / "chunks" / "progress.json"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if len(json.loads(progress.read_text())["chunks"]) >= 3:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = len(json.loads(progress.read_text())["chunks"])
    assert 3 <= finished < 60  # killed mid-run
    assert main(["run", str(sc), "--out", str(out), "--no-report"]) == 0
    leotwin.run(sc, tmp_path / "clean", report=False)
    assert chunk_bytes(out) == chunk_bytes(tmp_path / "clean")
    assert len(chunk_bytes(out)) == 2 * 60
    assert not list((out / "chunks").glob("*.tmp"))
    tables_equal(out, tmp_path / "clean")
    timeline = pd.read_parquet(out / "timeline.parquet")
    assert (timeline["rule"] == "quota:p").any() and (timeline["rule"] == "roaming:r").any()


def test_dask_local_cluster_gives_the_same_chunks(tmp_path):
    # chained: the quota makes every chunk depend on its predecessor's simulated usage
    sc = make(tmp_path / "s", quota_gb=2, roaming=True)
    leotwin.run(sc, tmp_path / "single")
    leotwin.run(sc, tmp_path / "dask", dask="local")
    assert chunk_bytes(tmp_path / "dask") == chunk_bytes(tmp_path / "single")
    tables_equal(tmp_path / "dask", tmp_path / "single")


def test_a_different_scenario_is_not_resumed_into_the_same_directory(tmp_path):
    leotwin.run(make(tmp_path / "a"), tmp_path / "out")
    with pytest.raises(ValueError, match="different scenario"):
        leotwin.run(make(tmp_path / "b", stop=18), tmp_path / "out")
