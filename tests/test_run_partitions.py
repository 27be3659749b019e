"""Terminal partitions of run chunks: the same files as whole chunks, in one process and as
Dask tasks, with capacity (shared by terminals, allocated on the merged chunk) off and on;
refused (whole chunks) where the scheduling itself couples terminals (``least_loaded``)."""

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import leotwin
from leotwin import runs
from leotwin.analytics.simulate import simulate_run
from leotwin.routing.network import CAUSE_BIT
from leotwin.scenario import load_scenario
from test_run import POLICY, chunk_bytes, tables_equal

# A jammer next to t01 (Kyiv), random and fixed satellite failures, a moving terminal, the
# geofence, a roaming rule and (optionally) a quota that chains the chunks. With capacity (the
# default of scenarios, off here unless asked), t02-t06 stand together in one H3 cell and the
# beams are small: they share one beam of their satellite and are congested; partitions of 4,
# 5 or 6 terminals cut that group (leotwin.runs, "Terminal partitions").
SCENARIO = """\
name: tiny-partitions
time: {start: 2022-10-05T12:00:00Z, stop: 2022-10-05T12:14:00Z, step_s: 60, slot_s: 15}
constellation:
  shells:
    - {altitude_km: 550, inclination_deg: 53, planes: 36, sats_per_plane: 20, phasing: 7}
ground:
  terminals: {file: terminals.csv}
  tracks: tracks.csv
policy: {file: policy.yaml}
faults:
  failures: [{sat: 5, start: 2022-10-05T12:03:00Z, end: 2022-10-05T12:09:00Z}]
  random: {mtbf_h: 5, repair_h: 1, seed: 4}
  jammers:
    - {id: j1, lat_deg: 50.452, lon_deg: 30.522, eirp_dbw: 40, bandwidth_mhz: 250,
       center_ghz: 11.7}
network: %(network)s
outputs: {chunk_steps: 5, report: false}
"""
N_TERMS = 13


def make(tmp: Path, *, quota: bool = True, capacity: bool = False,
         least_loaded: bool = False) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    lat = np.r_[49.98, 50.45, rng.uniform(48, 51, N_TERMS)][:N_TERMS]
    lon = np.r_[36.25, 30.52, rng.uniform(30, 37, N_TERMS)][:N_TERMS]
    lat[-1], lon[-1] = 52.23, 21.01                      # in Warsaw: roaming
    network = {"capacity": capacity}
    if capacity:   # five terminals in one H3 cell; beams of 150 Mbit/s
        lat[2:7], lon[2:7] = 48.9 + 0.004 * np.arange(5), 33.0
        network.update(beams_per_satellite=2, beam_capacity_mbps=150)
    if least_loaded:
        network["policy"] = "least_loaded"
    terms = pd.DataFrame({"terminal": [f"t{k:02d}" for k in range(N_TERMS)],
                          "account": "army", "lat_deg": lat, "lon_deg": lon,
                          "kind": ["fixed"] * (N_TERMS - 2) + ["in_motion", "fixed"],
                          "demand_mbps": 100.0, "min_mbps": 50.0})
    policy = POLICY + "roaming_rules: [{id: r, max_days_per_year: 0}]\n"
    if quota:
        terms["plan"] = "p"
        policy += ("plans: [{name: p, priority_quota_gb_month: 2, min_mbps: 1, "
                   "max_mbps: 500, fallback_mbps: 2}]\n")
    terms.to_csv(tmp / "terminals.csv", index=False)
    # the moving terminal drives east into the geofence during the run
    pd.DataFrame({"terminal": "t11", "time": ["2022-10-05T12:00:00Z", "2022-10-05T12:14:00Z"],
                  "lat_deg": [49.9, 49.9], "lon_deg": [34.5, 36.5]}).to_csv(
        tmp / "tracks.csv", index=False)
    (tmp / "policy.yaml").write_text(policy)
    path = tmp / "scenario.yaml"
    path.write_text(SCENARIO % {"network": json.dumps(network)})
    return path


class Chunks(logging.Handler):
    """The ChunkDone records a run logs."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.done = []

    def emit(self, record):
        if hasattr(record, "chunk_done"):
            self.done.append(record.chunk_done)


@pytest.fixture
def chunks_log():
    handler = Chunks()
    logger = logging.getLogger("leotwin.runs")
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_partition_bounds():
    assert runs.partition_bounds(13, None) == [(0, 13)]
    assert runs.partition_bounds(13, 13) == [(0, 13)]
    assert runs.partition_bounds(13, 5) == [(0, 4), (4, 8), (8, 13)]
    assert runs.partition_bounds(10, 5) == [(0, 5), (5, 10)]


@pytest.mark.parametrize("capacity", [False, True])
def test_partitions_in_one_process_write_the_same_files(tmp_path, chunks_log, capacity):
    sc = make(tmp_path / "s", capacity=capacity)
    leotwin.run(sc, tmp_path / "whole")
    assert {c.partitions for c in chunks_log.done} == {1}
    chunks_log.done.clear()
    leotwin.run(sc, tmp_path / "parts", partition_terminals=5)
    assert [c.partitions for c in chunks_log.done] == [3, 3, 3]
    assert chunk_bytes(tmp_path / "parts") == chunk_bytes(tmp_path / "whole")
    tables_equal(tmp_path / "parts", tmp_path / "whole")
    assert not list((tmp_path / "parts" / "chunks").glob("part-*"))
    # the physics the partitions must reproduce is there: policy, roaming, quota, jamming
    tl = pd.read_parquet(tmp_path / "whole" / "timeline.parquet")
    rules = set(tl["rule"])
    assert {"geofence:G-EAST", "roaming:r", "quota:p"} <= rules
    assert (tl["cause"] == "jamming").any() or (tl["cause_bits"] & 8).any()
    congested = tl[(tl["cause_bits"] & CAUSE_BIT["congestion"]) > 0]
    if capacity:   # congestion among terminals of different partitions (t02-t03 | t04-t06)
        assert (congested["cause"] == "congestion").any()
        assert {"t02", "t03", "t04", "t05", "t06"} <= set(congested["terminal"].astype(str))
        assert_partition_alone_differs(sc)
    else:
        assert congested.empty


def assert_partition_alone_differs(path: Path) -> None:
    """The test has teeth: simulated without the other partitions' terminals, the first
    partition's terminals get other rates (capacity couples them)."""
    sc = load_scenario(path)
    ground = sc.ground()
    times = sc.times()[:sc.chunk_steps]
    pos = leotwin.propagate(sc.constellation(), times)
    kw = dict(config=sc.network_config(), faults=sc.faults(), window=(times[0], times[-1]))
    whole = simulate_run(pos, ground, **kw).result["throughput_mbps"].to_numpy()
    alone = simulate_run(pos, runs._ground_part(ground, 0, 4), **kw).result[
        "throughput_mbps"].to_numpy()
    assert not np.array_equal(whole[:, :4], alone)


def test_partitions_as_dask_tasks_write_the_same_files(tmp_path, chunks_log):
    # chained chunks (quota), then parallel ones (state pass); capacity off, then on
    for quota, capacity in ((True, True), (False, True), (False, False)):
        sc = make(tmp_path / f"s{quota}{capacity}", quota=quota, capacity=capacity)
        whole, parts = tmp_path / f"whole{quota}{capacity}", tmp_path / f"parts{quota}{capacity}"
        leotwin.run(sc, whole)
        chunks_log.done.clear()
        leotwin.run(sc, parts, dask="local", partition_terminals=4)
        assert sorted(c.partitions for c in chunks_log.done) == [4, 4, 4]
        assert chunk_bytes(parts) == chunk_bytes(whole)
        tables_equal(parts, whole)


@pytest.mark.parametrize("capacity", [False, True])
def test_partitions_resume_and_environment_setting(tmp_path, monkeypatch, chunks_log,
                                                   capacity):
    sc = make(tmp_path / "s", capacity=capacity)
    leotwin.run(sc, tmp_path / "whole")
    monkeypatch.setenv(runs.PARTITION_ENV, "6")
    leotwin.run(sc, tmp_path / "out", max_chunks=1)
    # a partition file left by a call killed in the middle of chunk 1 is not trusted
    stale = tmp_path / "out" / "chunks" / runs.PART_FILE.format(k=1, p=0)
    stale.write_bytes(b"not parquet")
    chunks_log.done.clear()
    leotwin.run(sc, tmp_path / "out")
    assert [c.partitions for c in chunks_log.done] == [3, 3]
    assert not list((tmp_path / "out" / "chunks").glob("part-*"))
    assert chunk_bytes(tmp_path / "out") == chunk_bytes(tmp_path / "whole")
    tables_equal(tmp_path / "out", tmp_path / "whole")
    monkeypatch.setenv(runs.PARTITION_ENV, "many")
    with pytest.raises(ValueError, match=runs.PARTITION_ENV):
        leotwin.run(sc, tmp_path / "bad")


def test_coupled_terminals_run_whole_chunks(tmp_path, caplog, chunks_log):
    # least_loaded caps the terminals per satellite: partitions would change the schedule
    sc = make(tmp_path / "s", capacity=True, least_loaded=True)
    leotwin.run(sc, tmp_path / "out", partition_terminals=5)
    assert "terminal partitions not used" in caplog.text and "least_loaded" in caplog.text
    assert {c.partitions for c in chunks_log.done} == {1}
