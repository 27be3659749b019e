"""Streamed post-processing of runs: the run directory written chunk by chunk equals the
in-memory functions over the whole timeline; outages across chunk seams stay one interval."""

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import leotwin
from leotwin.analytics.intervals import outage_intervals
from leotwin.analytics.report import report_tables, report_tables_streamed
from leotwin.analytics.runio import RunWriter, read_manifest, read_run
from leotwin.analytics.sla import contract_availability, usage_by_account_day
from leotwin.scenario import load_scenario
from test_run import make

STEP_S = 60.0


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    # 4 chunks of 5 steps; t0 inside the deny geofence the whole time (an outage across every
    # seam); random satellite failures and a contract over the west of the country.
    tmp = tmp_path_factory.mktemp("stream")
    sc = make(tmp / "s", n_terms=12, contract=True, quota_gb=3)
    leotwin.run(sc, tmp / "out", report=False)
    return tmp / "out"


def grids(tl: pd.DataFrame):
    times = np.unique(tl["time"].to_numpy())
    terms = tl["terminal"].to_numpy()[: len(tl) // times.size].astype(object)
    shape = (times.size, terms.size)
    return times, terms, {c: tl[c].to_numpy().reshape(shape) for c in tl.columns}


def test_timeline_is_one_row_group_per_chunk(run_dir):
    f = pq.ParquetFile(run_dir / "timeline.parquet")
    assert f.num_row_groups == 4 and f.metadata.num_rows == 20 * 12
    chunks = pd.concat([pd.read_parquet(p) for p in sorted((run_dir / "chunks").glob(
        "chunk-*.parquet"))], ignore_index=True)
    tl = pd.read_parquet(run_dir / "timeline.parquet")
    pd.testing.assert_frame_equal(tl, chunks.astype({c: str for c in (
        "terminal", "account", "gateway", "cause", "rule", "dish_state")}))


def test_streamed_tables_equal_the_whole_timeline_functions(run_dir):
    tables = read_run(run_dir)
    times, terms, g = grids(tables["timeline"])
    ivs = outage_intervals(times, terms, ~g["served"], cause=g["cause"].astype(object),
                           rule=g["rule"].astype(object), step_s=STEP_S)
    pd.testing.assert_frame_equal(tables["intervals"], ivs, check_exact=True)
    usage = usage_by_account_day(times, terms, g["account"][0], g["throughput_mbps"],
                                 step_s=STEP_S)
    pd.testing.assert_frame_equal(tables["usage"], usage, check_exact=True)
    t = tables["terminals"]
    policy = load_scenario(run_dir.parent / "s" / "scenario.yaml").policy()
    contracts = contract_availability(times, t["lat_deg"], t["lon_deg"], t["account"],
                                      g["served"], policy.contracts, step_s=STEP_S)
    pd.testing.assert_frame_equal(tables["contracts"], contracts, check_exact=True)
    assert len(contracts) == 1 and contracts["in_scope_terminal_hours"].iloc[0] > 0
    # the seams: t0's geofence outage is one interval over the whole run
    t0 = tables["intervals"][tables["intervals"]["terminal"] == "t0"]
    assert len(t0) == 1 and t0["rule"].iloc[0] == "geofence:G-EAST"
    assert t0["duration_s"].iloc[0] == 20 * STEP_S
    # and the other outages crossing a seam
    seams = times[[5, 10, 15]][:, None]
    start = tables["intervals"]["start"].to_numpy()[None, :]
    end = tables["intervals"]["end"].to_numpy()[None, :]
    across = ((start < seams) & (end > seams)).any(axis=0)
    assert across.sum() > 1


def test_streamed_report_tables_equal_the_in_memory_ones(run_dir):
    manifest = read_manifest(run_dir)
    whole = report_tables(read_run(run_dir), manifest)
    streamed = report_tables_streamed(run_dir, manifest)
    assert set(whole) == set(streamed)
    for name, frame in whole.items():
        pd.testing.assert_frame_equal(streamed[name], frame, rtol=1e-12)


def test_an_outage_across_a_seam_is_one_interval_window_by_window(tmp_path):
    t = np.datetime64("2022-10-05T12:00", "ns") + np.arange(6) * np.timedelta64(60, "s")
    served = np.array([[1, 1], [0, 1], [0, 0], [0, 0], [1, 0], [1, 1]], bool)
    cause = np.where(served, "", "jamming").astype(object)
    terminals = pd.DataFrame({"terminal": ["a", "b"], "account": "x", "lat_deg": 50.0,
                              "lon_deg": 30.0})
    w = RunWriter(tmp_path / "run", terminals)
    for a, b in ((0, 2), (2, 3), (3, 6)):              # seams inside both outages
        n = (b - a) * 2
        w.add(pd.DataFrame({
            "time": np.repeat(t[a:b], 2), "terminal": ["a", "b"] * (b - a), "account": "x",
            "served": served[a:b].ravel(), "throughput_mbps": 10.0 * served[a:b].ravel(),
            "rtt_ms": np.full(n, 30.0), "sat": np.full(n, -1), "gateway": "",
            "cause": cause[a:b].ravel(), "cause_bits": np.zeros(n, np.uint8),
            "rule": "", "dish_state": "X"}), STEP_S)
    w.close()
    iv = pd.read_parquet(tmp_path / "run" / "intervals.parquet")
    assert iv[["terminal", "duration_s"]].values.tolist() == [["a", 180.0], ["b", 180.0]]
    with pytest.raises(ValueError, match="not after"):
        w2 = RunWriter(tmp_path / "run2", terminals)
        frame = pd.read_parquet(tmp_path / "run" / "timeline.parquet")
        w2.add(frame, STEP_S)
        w2.add(frame, STEP_S)


def test_report_tables_folded_while_writing_equal_a_pass_over_the_timeline(run_dir, tmp_path):
    """The report's timeline tables folded by RunWriter window by window (what the report
    reads) are the ones a pass over the finished timeline gives (what it falls back to)."""
    import shutil

    from leotwin.analytics.runio import AGGREGATE_FILES

    manifest = read_manifest(run_dir)
    assert manifest["aggregates"] == AGGREGATE_FILES
    folded = report_tables_streamed(run_dir, manifest)
    bare = tmp_path / "bare"
    shutil.copytree(run_dir, bare)
    for f in AGGREGATE_FILES.values():
        (bare / f).unlink()
    again = report_tables_streamed(bare, manifest)
    for name, frame in folded.items():
        pd.testing.assert_frame_equal(again[name], frame, rtol=1e-12)
