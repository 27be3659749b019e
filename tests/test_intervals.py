"""Outage intervals: exact merging (property tests), hand examples, input checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from leotwin.analytics import intervals as intervals_mod
from leotwin.analytics.intervals import (
    INTERVAL_COLUMNS,
    CodedGrid,
    IntervalAccumulator,
    intervals_to_mask,
    outage_intervals,
)

T0 = np.datetime64("2022-10-01T00:00:00", "ns")
STEP_S = 60


def grid(n: int, step_s: int = STEP_S) -> np.ndarray:
    return T0 + np.arange(n) * np.timedelta64(step_s, "s")


shapes = st.tuples(st.integers(1, 30), st.integers(0, 6))


@st.composite
def masks(draw):
    shape = draw(shapes)
    unserved = draw(arrays(bool, shape))
    cause = draw(arrays(np.int8, shape, elements=st.integers(0, 2)))
    return unserved, cause


@settings(max_examples=200, deadline=None)
@given(masks())
def test_round_trip_and_durations_are_exact(data):
    unserved, cause = data
    n_time, n_term = unserved.shape
    times = grid(n_time)
    ids = np.array([f"t{j}" for j in range(n_term)])[::-1]      # not sorted: output sorts them
    iv = outage_intervals(times, ids, unserved, step_s=STEP_S)
    assert list(iv.columns) == list(INTERVAL_COLUMNS)
    assert np.array_equal(intervals_to_mask(iv, times, ids), unserved)
    assert iv["duration_s"].sum() == pytest.approx(unserved.sum() * STEP_S)
    # maximal runs: two intervals of one terminal never touch
    same = iv["terminal"].to_numpy()[1:] == iv["terminal"].to_numpy()[:-1]
    assert (iv["start"].to_numpy()[1:][same] > iv["end"].to_numpy()[:-1][same]).all()
    # sorted by terminal, then start
    assert iv.equals(iv.sort_values(["terminal", "start"], kind="stable"))
    # number of intervals = number of run starts
    padded = np.vstack([np.zeros((1, n_term), bool), unserved])
    assert len(iv) == int((padded[1:] & ~padded[:-1]).sum())


@settings(max_examples=200, deadline=None)
@given(masks())
def test_intervals_never_mix_causes(data):
    unserved, cause = data
    n_time, n_term = unserved.shape
    times = grid(n_time)
    ids = np.arange(n_term)
    iv = outage_intervals(times, ids, unserved, cause=cause, step_s=STEP_S)
    assert np.array_equal(intervals_to_mask(iv, times, ids), unserved)
    assert iv["duration_s"].sum() == pytest.approx(unserved.sum() * STEP_S)
    # every step of an interval has the interval's cause
    for c in range(3):
        sub = iv[iv["cause"] == c]
        mask_c = intervals_to_mask(sub, times, ids)
        assert not (mask_c & (cause != c)).any()
        assert np.array_equal(mask_c, unserved & (cause == c))


def test_hand_example_outages_at_start_and_end_of_window():
    times = grid(6, 600)                   # 00:00 … 00:50, every 10 min
    ids = ["b", "a"]
    unserved = np.array([[1, 0],
                         [1, 0],
                         [0, 0],
                         [0, 1],
                         [0, 1],
                         [0, 1]], dtype=bool)
    rule = np.array([["r1", None]] * 6, dtype=object)
    cause = np.where(unserved, np.array(["policy", "jamming"])[None, :], None)
    iv = outage_intervals(times, ids, unserved, cause=cause, rule=rule)   # median step: 600 s
    assert iv["terminal"].tolist() == ["a", "b"]
    a, b = iv.iloc[0], iv.iloc[1]
    # running to the end of the window: end = last time + one step
    assert a["start"] == pd.Timestamp("2022-10-01T00:30")
    assert a["end"] == pd.Timestamp("2022-10-01T01:00")
    assert a["duration_s"] == 1800.0
    assert a["cause"] == "jamming" and pd.isna(a["rule"])
    # at the start: ends when the first served step starts
    assert b["start"] == pd.Timestamp("2022-10-01T00:00")
    assert b["end"] == pd.Timestamp("2022-10-01T00:20")
    assert b["duration_s"] == 1200.0
    assert b["cause"] == "policy" and b["rule"] == "r1"


def test_change_of_rule_splits_an_outage():
    times = grid(4, 60)
    unserved = np.ones((4, 1), bool)
    rule = np.array([["a"], ["a"], ["b"], ["b"]])
    iv = outage_intervals(times, ["x"], unserved, cause=np.full((4, 1), "policy"), rule=rule)
    assert iv["rule"].tolist() == ["a", "b"]
    assert iv["duration_s"].tolist() == [120.0, 120.0]
    assert iv["end"].iloc[0] == iv["start"].iloc[1]


def test_irregular_grid_and_explicit_last_step():
    times = T0 + np.array([0, 60, 180, 190], dtype="timedelta64[s]")
    unserved = np.array([[0], [1], [1], [1]], bool)
    iv = outage_intervals(times, ["x"], unserved, step_s=5)
    assert iv["duration_s"].tolist() == [135.0]          # 60 → 190 + 5


def test_empty_inputs():
    assert outage_intervals(grid(0), ["x"], np.zeros((0, 1), bool)).empty
    iv = outage_intervals(grid(3), [], np.zeros((3, 0), bool))
    assert iv.empty and list(iv.columns) == list(INTERVAL_COLUMNS)


def test_tz_aware_times_are_converted_to_utc():
    times = pd.date_range("2022-10-01T02:00", periods=3, freq="1h", tz="Europe/Kyiv")
    iv = outage_intervals(times, ["x"], np.array([[1], [0], [0]], bool))
    assert iv["start"].iloc[0] == pd.Timestamp("2022-09-30T23:00")


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"unserved": np.zeros((3, 2), bool)}, "unserved"),
    ({"unserved": np.zeros((4, 2), int)}, "unserved"),
    ({"cause": np.zeros((4, 3))}, "cause"),
    ({"rule": np.zeros(4)}, "rule"),
    ({"times": grid(4)[::-1]}, "times"),
    ({"times": grid(4)[[0, 1, 1, 2]]}, "times"),
    ({"times": grid(4).reshape(2, 2)}, "times"),
    ({"terminals": ["x", "x"]}, "terminals"),
    ({"step_s": -1.0}, "step_s"),
])
def test_bad_input_names_the_argument(kwargs, name):
    args = {"times": grid(4), "terminals": ["x", "y"], "unserved": np.zeros((4, 2), bool)}
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        outage_intervals(**args)


def test_single_time_needs_step_s():
    with pytest.raises(ValueError, match="step_s"):
        outage_intervals(grid(1), ["x"], np.ones((1, 1), bool))
    iv = outage_intervals(grid(1), ["x"], np.ones((1, 1), bool), step_s=30)
    assert iv["duration_s"].tolist() == [30.0]


def test_mask_rejects_unknown_terminal():
    iv = outage_intervals(grid(3), ["x"], np.ones((3, 1), bool))
    with pytest.raises(ValueError, match="terminal"):
        intervals_to_mask(iv, grid(3), ["y"])


@settings(max_examples=150, deadline=None)
@given(masks(), st.lists(st.integers(1, 29), max_size=6))
def test_windows_with_carried_open_intervals_equal_the_whole(data, cuts):
    """Streaming: intervals open at a window's end are merged with the next window's."""
    unserved, code = data
    n_time, n_term = unserved.shape
    times = grid(n_time)
    ids = np.array([f"t{j}" for j in range(n_term)])[::-1]
    cause = np.array(["policy", "jamming", None], dtype=object)[code]
    rule = np.where(cause == "policy", "geofence:G", "").astype(object)
    whole = outage_intervals(times, ids, unserved, cause=cause, rule=rule, step_s=STEP_S)
    acc = IntervalAccumulator(ids)
    edges = [0, *sorted({c for c in cuts if c < n_time}), n_time]
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        acc.add(times[a:b], unserved[a:b], cause=cause[a:b], rule=rule[a:b], step_s=STEP_S)
    pd.testing.assert_frame_equal(acc.table(), whole, check_exact=True)


@settings(max_examples=100, deadline=None)
@given(masks())
def test_coded_labels_give_the_same_table_as_strings(data):
    """A CodedGrid (codes into names, names repeated and missing) splits and labels as the
    strings it stands for."""
    unserved, code = data
    n_time, n_term = unserved.shape
    names = np.array(["policy", "jamming", None, "policy"], dtype=object)   # 0 and 3 equal
    # "policy" as code 0 or 3 alternately along time: equal labels, different codes
    codes = np.where(code == 0, 3 * (np.arange(n_time)[:, None] % 2), code).astype(np.int64)
    strings = names[codes]
    times = grid(n_time)
    ids = np.array([f"t{j}" for j in range(n_term)])
    whole = outage_intervals(times, ids, unserved, cause=strings, rule=strings, step_s=STEP_S)
    coded = outage_intervals(times, ids, unserved, cause=CodedGrid(names, codes),
                             rule=CodedGrid(names, codes), step_s=STEP_S)
    pd.testing.assert_frame_equal(coded, whole, check_exact=True)
    if codes.size:
        with pytest.raises(ValueError, match="cause.codes"):
            outage_intervals(times, ids, unserved, cause=CodedGrid(names[:1], codes + 1),
                             step_s=STEP_S)


@settings(max_examples=60, deadline=None)
@given(masks(), st.lists(st.integers(1, 29), max_size=6))
def test_spilled_intervals_are_written_sorted_as_the_whole(tmp_path_factory, data, cuts):
    """With a spill file and tiny limits: finished intervals leave memory window by window,
    and the written table (several row groups) equals the one-call table."""
    unserved, code = data
    n_time, n_term = unserved.shape
    times = grid(n_time)
    ids = np.array([f"t{j}" for j in range(n_term)])[::-1]
    cause = np.array(["policy", "jamming", "no_coverage"], dtype=object)[code]
    rule = np.where(cause == "policy", "geofence:G", "").astype(object)
    whole = outage_intervals(times, ids, unserved, cause=cause, rule=rule, step_s=STEP_S)
    tmp = tmp_path_factory.mktemp("spill")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(intervals_mod, "SPILL_ROWS", 2)
        mp.setattr(intervals_mod, "WRITE_ROWS", 3)
        acc = IntervalAccumulator(ids, spill=tmp / "spill.parquet")
        edges = [0, *sorted({c for c in cuts if c < n_time}), n_time]
        for a, b in zip(edges[:-1], edges[1:], strict=True):
            acc.add(times[a:b], unserved[a:b], cause=cause[a:b], rule=rule[a:b],
                    step_s=STEP_S)
            assert acc._done_rows < 2            # finished intervals do not pile up
        assert len(acc) == len(whole)
        assert acc.write(tmp / "iv.parquet") == len(whole)
    assert not (tmp / "spill.parquet").exists()
    written = pd.read_parquet(tmp / "iv.parquet")
    if len(whole):
        pd.testing.assert_frame_equal(written, whole, check_exact=True)
        assert pq.ParquetFile(tmp / "iv.parquet").num_row_groups >= -(-len(whole) // (
            3 + int(np.bincount(np.searchsorted(np.sort(ids), whole["terminal"])).max())))
    else:
        assert written.empty and list(written.columns) == list(INTERVAL_COLUMNS)
