"""Capacity: beam allocation to cells, max-min sharing in a cell, H3 terminal cells."""

import h3
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leotwin.capacity import allocate, terminal_cells
from leotwin.defaults import default

REL = 1e-9


# --------------------------------------------------------------------------- reference
def _max_min(demands, total):
    """Max-min fair split of ``total`` over ``demands`` (plain loop)."""
    out = [0.0] * len(demands)
    left = float(total)
    todo = sorted(range(len(demands)), key=lambda i: demands[i])
    while todo:
        share = left / len(todo)
        i = todo[0]
        if demands[i] <= share:
            out[i] = demands[i]
            left -= demands[i]
            todo.pop(0)
        else:
            for j in todo:
                out[j] = share
            break
    return out


def _proportional(demands, capacity, beam):
    """Iterative water-filling: split proportionally, cap, redistribute, repeat."""
    caps = [min(d, beam) for d in demands]
    out = [0.0] * len(demands)
    free = set(range(len(demands)))
    left = float(capacity)
    while free:
        weight = sum(demands[i] for i in free)
        over = [i for i in free if left * demands[i] / weight >= caps[i]]
        if not over:
            for i in free:
                out[i] = left * demands[i] / weight
            break
        for i in over:
            out[i] = caps[i]
            left -= caps[i]
            free.discard(i)
    return out


def reference(serving_sat, cell, demand, min_mbps, n_sat, beams, beam, policy):
    """Per-terminal throughput and congestion with explicit loops (2-D inputs)."""
    n_time, n_term = serving_sat.shape
    thr = np.zeros((n_time, n_term))
    cong = np.zeros((n_time, n_term), dtype=bool)
    for t in range(n_time):
        for s in range(n_sat):
            cells = {}
            for k in range(n_term):
                if serving_sat[t, k] == s and demand[t, k] > 0:
                    cells.setdefault(int(cell[t, k]), []).append(k)
            ids = sorted(cells)
            cell_demand = [sum(demand[t, k] for k in cells[c]) for c in ids]
            if policy == "greedy":
                ranked = sorted(range(len(ids)), key=lambda i: (-cell_demand[i], ids[i]))
                alloc = [0.0] * len(ids)
                for i in ranked[:beams]:
                    alloc[i] = min(cell_demand[i], beam)
            else:
                alloc = _proportional(cell_demand, beams * beam, beam)
            for i, c in enumerate(ids):
                terms = cells[c]
                shares = _max_min([demand[t, k] for k in terms], alloc[i])
                for k, x in zip(terms, shares, strict=True):
                    thr[t, k] = x
                    cong[t, k] = x < min(min_mbps[t, k], demand[t, k])
    return thr, cong


# --------------------------------------------------------------------------- random problems
@st.composite
def problems(draw):
    n_time = draw(st.integers(1, 3))
    n_term = draw(st.integers(1, 10))
    n_sat = draw(st.integers(1, 3))
    size = n_time * n_term
    sat = np.array(draw(st.lists(st.integers(-1, n_sat - 1), min_size=size, max_size=size)))
    moving = draw(st.booleans())
    n_cell = size if moving else n_term
    cell = np.array(draw(st.lists(st.integers(1, 4), min_size=n_cell, max_size=n_cell)),
                    dtype=np.uint64)
    demand_value = st.one_of(st.just(0.0), st.integers(1, 30).map(float),
                             st.floats(0.01, 100.0))
    demand = np.array(draw(st.lists(demand_value, min_size=n_term, max_size=n_term)))
    min_mbps = np.array(draw(st.lists(st.floats(0.0, 40.0), min_size=n_term, max_size=n_term)))
    return dict(serving_sat=sat.reshape(n_time, n_term),
                cell=cell.reshape(n_time, n_term) if moving else cell,
                demand_mbps=demand, min_mbps=min_mbps, n_sat=n_sat,
                beams_per_sat=draw(st.integers(1, 3)),
                beam_capacity_mbps=draw(st.sampled_from([5.0, 12.5, 40.0])))


@settings(max_examples=150, deadline=None)
@given(problem=problems(), policy=st.sampled_from(["greedy", "proportional"]))
def test_conservation(problem, policy):
    a = allocate(**problem, policy=policy)
    sat = problem["serving_sat"]
    demand = np.broadcast_to(problem["demand_mbps"], sat.shape)
    cell = np.broadcast_to(problem["cell"], sat.shape)
    beams, beam = problem["beams_per_sat"], problem["beam_capacity_mbps"]
    thr = a.throughput_mbps
    assert thr.shape == sat.shape and a.congested.shape == sat.shape
    assert np.all(thr >= 0) and np.all(thr <= demand)
    assert np.all(thr[sat < 0] == 0) and not a.congested[sat < 0].any()
    assert not a.congested[demand == 0].any()

    table = a.cell_allocated_mbps
    assert list(table.columns) == ["time", "sat", "cell", "demand_mbps", "allocated_mbps",
                                   "beams", "n_terminals"]
    assert np.all(table["allocated_mbps"] <= np.minimum(table["demand_mbps"], beam) * (1 + REL))
    assert np.all(table["beams"] <= 1 + REL) and np.all(table["beams"] >= 0)
    assert a.sat_demand_mbps.shape == (sat.shape[0], problem["n_sat"])
    assert np.all(a.sat_served_mbps <= beams * beam * (1 + REL))
    assert np.all(a.sat_beams_used <= beams + REL)
    assert np.all(a.sat_served_mbps <= a.sat_demand_mbps * (1 + REL))

    # Sum of terminal throughputs per (time, sat, cell) equals the cell's allocation.
    t, k = np.nonzero((sat >= 0) & (demand > 0))
    terms = pd.DataFrame({"time": t, "sat": sat[t, k], "cell": cell[t, k], "thr": thr[t, k],
                          "demand": demand[t, k]})
    sums = terms.groupby(["time", "sat", "cell"], as_index=False).agg(
        thr=("thr", "sum"), demand=("demand", "sum"), n=("thr", "size"))
    merged = table.merge(sums, on=["time", "sat", "cell"], how="outer", validate="1:1")
    assert len(merged) == len(table) == len(sums)
    np.testing.assert_allclose(merged["thr"], merged["allocated_mbps"], rtol=REL, atol=1e-12)
    np.testing.assert_allclose(merged["demand"], merged["demand_mbps"], rtol=REL)
    assert np.array_equal(merged["n"], merged["n_terminals"])
    served = np.zeros_like(a.sat_served_mbps)
    np.add.at(served, (table["time"], table["sat"]), table["allocated_mbps"])
    np.testing.assert_allclose(served, a.sat_served_mbps, rtol=REL, atol=1e-12)


@settings(max_examples=150, deadline=None)
@given(problem=problems(), policy=st.sampled_from(["greedy", "proportional"]))
def test_matches_reference(problem, policy):
    a = allocate(**problem, policy=policy)
    sat = problem["serving_sat"]
    demand = np.broadcast_to(problem["demand_mbps"], sat.shape)
    cell = np.broadcast_to(problem["cell"], sat.shape)
    min_mbps = np.broadcast_to(problem["min_mbps"], sat.shape)
    thr, cong = reference(sat, cell, demand, min_mbps, problem["n_sat"],
                          problem["beams_per_sat"], problem["beam_capacity_mbps"], policy)
    np.testing.assert_allclose(a.throughput_mbps, thr, rtol=REL, atol=1e-9)
    # Congestion may only differ where throughput sits on the threshold within rounding.
    threshold = np.minimum(min_mbps, demand)
    edge = np.isclose(thr, threshold, rtol=1e-9, atol=1e-12)
    assert np.array_equal(a.congested[~edge], cong[~edge])


# --------------------------------------------------------------------------- hand examples
@pytest.mark.parametrize("policy", ["greedy", "proportional"])
@pytest.mark.parametrize("demand", [3.0, 10.0, 25.0])
def test_single_terminal_gets_min_of_demand_and_beam(policy, demand):
    a = allocate(np.array([0]), np.array([7], dtype=np.uint64), [demand], [0.0], n_sat=1,
                 beams_per_sat=2, beam_capacity_mbps=10.0, policy=policy)
    assert a.throughput_mbps.shape == (1,)
    assert a.throughput_mbps[0] == pytest.approx(min(demand, 10.0))
    assert a.sat_demand_mbps.shape == (1,)


def test_defaults_used():
    a = allocate(np.array([0]), np.array([7], dtype=np.uint64), [1e9], [0.0], n_sat=1)
    assert a.throughput_mbps[0] == default("beam_capacity_mbps")


def test_greedy_top_cells_get_beams():
    # Cells 1, 2, 3 with demands 10, 30, 20 (cell 3 has two terminals of 10).
    cell = np.array([1, 2, 3, 3], dtype=np.uint64)
    demand = np.array([10.0, 30.0, 10.0, 10.0])
    a = allocate(np.zeros(4, dtype=int), cell, demand, 5.0, n_sat=1, beams_per_sat=2,
                 beam_capacity_mbps=100.0)
    np.testing.assert_allclose(a.throughput_mbps, [0.0, 30.0, 10.0, 10.0])
    assert a.congested.tolist() == [True, False, False, False]
    table = a.cell_allocated_mbps
    assert table["cell"].tolist() == [1, 2, 3]
    assert table["beams"].tolist() == [0.0, 1.0, 1.0]
    assert table["n_terminals"].tolist() == [1, 1, 2]
    assert a.sat_beams_used.tolist() == [2.0]
    assert a.sat_served_mbps.tolist() == [50.0]
    # Not congested when min_mbps is 0.
    assert not allocate(np.zeros(4, dtype=int), cell, demand, 0.0, n_sat=1, beams_per_sat=2,
                        beam_capacity_mbps=100.0).congested.any()


def test_greedy_ties_go_to_lower_cell_id():
    a = allocate(np.zeros(3, dtype=int), np.array([9, 4, 6], dtype=np.uint64), 10.0, 0.0,
                 n_sat=1, beams_per_sat=2, beam_capacity_mbps=100.0)
    np.testing.assert_array_equal(a.throughput_mbps, [0.0, 10.0, 10.0])


def test_proportional_water_filling():
    # B·C = 2 x 10 = 20 over demands 60, 12, 8: shares 15, 3, 2 -> the 60 cell is capped at one
    # beam (10) and the freed 10 goes 12:8 -> 6, 4.
    a = allocate(np.zeros(3, dtype=int), np.array([1, 2, 3], dtype=np.uint64),
                 [60.0, 12.0, 8.0], 5.0, n_sat=1, beams_per_sat=2, beam_capacity_mbps=10.0,
                 policy="proportional")
    np.testing.assert_allclose(a.throughput_mbps, [10.0, 6.0, 4.0])
    np.testing.assert_allclose(a.cell_allocated_mbps["beams"], [1.0, 0.6, 0.4])
    assert a.congested.tolist() == [False, False, True]
    # Two rounds: B·C = 30 over 100, 20, 10, 10 -> 10 capped, then 20 over 20:10:10 -> 10, 5, 5.
    b = allocate(np.zeros(4, dtype=int), np.arange(1, 5, dtype=np.uint64),
                 [100.0, 20.0, 10.0, 10.0], 0.0, n_sat=1, beams_per_sat=3,
                 beam_capacity_mbps=10.0, policy="proportional")
    np.testing.assert_allclose(b.throughput_mbps, [10.0, 10.0, 5.0, 5.0])
    # Enough capacity for all: everyone gets min(demand, C).
    c = allocate(np.zeros(3, dtype=int), np.arange(3, dtype=np.uint64), [30.0, 6.0, 4.0], 0.0,
                 n_sat=1, beams_per_sat=2, beam_capacity_mbps=10.0, policy="proportional")
    np.testing.assert_allclose(c.throughput_mbps, [10.0, 6.0, 4.0])


@pytest.mark.parametrize("policy", ["greedy", "proportional"])
def test_max_min_within_cell(policy):
    a = allocate(np.zeros(3, dtype=int), np.full(3, 5, dtype=np.uint64), [1.0, 10.0, 10.0],
                 [1.0, 4.0, 5.0], n_sat=1, beams_per_sat=1, beam_capacity_mbps=9.0,
                 policy=policy)
    np.testing.assert_allclose(a.throughput_mbps, [1.0, 4.0, 4.0])
    assert a.congested.tolist() == [False, False, True]


def test_time_and_satellites_are_separate_groups():
    # Two steps; terminal 2 moves from satellite 0 to satellite 1; terminal 3 unserved at t=1.
    sat = np.array([[0, 0, 0, 1], [0, 0, 1, -1]])
    cell = np.array([1, 1, 1, 2], dtype=np.uint64)
    a = allocate(sat, cell, [6.0, 6.0, 6.0, 6.0], 4.0, n_sat=2, beams_per_sat=1,
                 beam_capacity_mbps=9.0)
    np.testing.assert_allclose(a.throughput_mbps, [[3.0, 3.0, 3.0, 6.0], [4.5, 4.5, 6.0, 0.0]])
    assert a.congested.tolist() == [[True, True, True, False], [False, False, False, False]]
    np.testing.assert_allclose(a.sat_demand_mbps, [[18.0, 6.0], [12.0, 6.0]])
    np.testing.assert_allclose(a.sat_served_mbps, [[9.0, 6.0], [9.0, 6.0]])
    assert a.cell_allocated_mbps[["time", "sat", "cell"]].values.tolist() == [
        [0, 0, 1], [0, 1, 2], [1, 0, 1], [1, 1, 1]]


def test_nobody_served():
    a = allocate(np.full((2, 3), -1), np.zeros(3, dtype=np.uint64), 10.0, 5.0, n_sat=4,
                 policy="proportional")
    assert a.throughput_mbps.shape == (2, 3) and not a.throughput_mbps.any()
    assert not a.congested.any()
    assert a.cell_allocated_mbps.empty
    assert a.sat_beams_used.shape == (2, 4) and not a.sat_beams_used.any()
    assert a.sat_served_mbps.dtype == a.sat_demand_mbps.dtype == float
    assert a.cell_allocated_mbps["demand_mbps"].dtype == float


# --------------------------------------------------------------------------- terminal_cells
def test_terminal_cells_kyiv():
    got = terminal_cells(50.4547, 30.5238, 5)
    assert got.dtype == np.uint64 and got.shape == ()
    assert int(got) == h3.str_to_int(h3.latlng_to_cell(50.4547, 30.5238, 5))
    assert int(terminal_cells(50.4547, 30.5238)) == int(got)  # default resolution is 5
    assert int(terminal_cells(50.4547, 30.5238, 7)) == h3.str_to_int(
        h3.latlng_to_cell(50.4547, 30.5238, 7))


def test_terminal_cells_shapes_and_nan():
    lat = np.array([[50.4547, np.nan, 49.84], [50.4547, 46.48, 95.0]])
    lon = np.array([[30.5238, 30.0, 24.03], [30.5238, np.nan, 0.0]])
    got = terminal_cells(lat, lon)
    assert got.shape == (2, 3) and got.dtype == np.uint64
    assert got[0, 1] == 0 and got[1, 1] == 0 and got[1, 2] == 0
    assert got[0, 0] == got[1, 0] != 0
    assert int(got[0, 2]) == h3.str_to_int(h3.latlng_to_cell(49.84, 24.03, 5))
    assert terminal_cells(np.zeros(0), np.zeros(0)).shape == (0,)
    # Broadcasting a single longitude.
    assert terminal_cells(np.array([50.0, 51.0]), 30.0).shape == (2,)


# --------------------------------------------------------------------------- bad inputs
def _ok():
    return dict(serving_sat=np.array([[0, 1]]), cell=np.array([1, 2], dtype=np.uint64),
                demand_mbps=[1.0, 2.0], min_mbps=0.0, n_sat=2)


@pytest.mark.parametrize("change, name", [
    (dict(cell=np.array([1, 2, 3], dtype=np.uint64)), "cell"),
    (dict(cell=np.array([1.0, 2.0])), "cell"),
    (dict(demand_mbps=[1.0, 2.0, 3.0]), "demand_mbps"),
    (dict(demand_mbps=[1.0, -2.0]), "demand_mbps"),
    (dict(demand_mbps=[1.0, np.nan]), "demand_mbps"),
    (dict(min_mbps=[[1.0], [2.0]]), "min_mbps"),
    (dict(min_mbps=-1.0), "min_mbps"),
    (dict(policy="fair"), "policy"),
    (dict(n_sat=1), "serving_sat"),
    (dict(serving_sat=np.array([[0, -2]])), "serving_sat"),
    (dict(serving_sat=np.array([[0.0, 1.0]])), "serving_sat"),
    (dict(serving_sat=np.zeros((1, 1, 2), dtype=int)), "serving_sat"),
    (dict(beams_per_sat=0), "beams_per_sat"),
    (dict(beams_per_sat=1.5), "beams_per_sat"),
    (dict(beam_capacity_mbps=0.0), "beam_capacity_mbps"),
    (dict(n_sat=-1), "n_sat"),
])
def test_bad_inputs(change, name):
    allocate(**_ok())  # the baseline is fine
    with pytest.raises(ValueError, match=name):
        allocate(**{**_ok(), **change})


def test_terminal_cells_bad_inputs():
    with pytest.raises(ValueError, match="resolution"):
        terminal_cells(50.0, 30.0, 16)
    with pytest.raises(ValueError, match="lat_deg"):
        terminal_cells(np.zeros(2), np.zeros(3))
