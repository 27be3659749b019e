"""SGP4 on a node grid with cubic Hermite interpolation (``propagate(node_step_s=...)``),
checked against SGP4 at every time: the reference is sgp4's own ``SatrecArray.sgp4`` through
``propagate`` without nodes."""

from __future__ import annotations

import numpy as np
import pytest

from leotwin import propagate, starlink_2022, walker_shell
from leotwin.orbits.propagate import sgp4_hermite


def _grid(start: str, minutes: float, step_s: float) -> np.ndarray:
    t0 = np.datetime64(start, "ns")
    return t0 + (np.arange(0, minutes * 60, step_s) * 1e9).astype("timedelta64[ns]")


@pytest.fixture(scope="module")
def catalog():
    return starlink_2022()


def _errors(a, b):
    dr_m = np.linalg.norm((a["r_ecef_km"] - b["r_ecef_km"]).to_numpy(), axis=-1) * 1e3
    dv_m_s = np.linalg.norm((a["v_ecef_km_s"] - b["v_ecef_km_s"]).to_numpy(), axis=-1) * 1e3
    return dr_m, dv_m_s


def test_bundled_catalog_within_two_metres_of_sgp4(catalog):
    # 7 s steps: every fraction of the 60 s node interval, not only its quarters.
    times = _grid("2022-10-05T10:00:00", 40, 7)
    exact = propagate(catalog, times)
    fast = propagate(catalog, times, node_step_s=60)
    dr_m, _ = _errors(exact, fast)
    both = np.isfinite(dr_m)
    # Where SGP4 works the interpolation is used or SGP4 itself; a time between nodes where
    # one of them fails takes that failure (never interpolated through).
    assert not (np.isnan(dr_m) & (exact["error"].to_numpy() == 0)
                & (fast["error"].to_numpy() == 0)).any()
    assert (fast["error"].to_numpy() != 0)[exact["error"].to_numpy() != 0].all()
    assert dr_m[both].max() < 2.0
    assert np.percentile(dr_m[both], 99) < 1.0
    ok = exact["operational"].to_numpy() & fast["operational"].to_numpy()
    assert (exact["operational"].to_numpy() == fast["operational"].to_numpy()).mean() > 0.999
    assert dr_m[ok].max() < 2.0


def test_circular_shell_sub_metre_and_velocity_within_centimetres():
    con = walker_shell(altitude_km=550, inclination_deg=53, planes=6, sats_per_plane=10,
                       phasing=1, epoch=np.datetime64("2022-10-05T00:00:00", "ns"))
    times = _grid("2022-10-05T10:00:00", 100, 3)  # a full orbit
    dr_m, dv_m_s = _errors(propagate(con, times), propagate(con, times, node_step_s=60))
    assert dr_m.max() < 0.5
    assert dv_m_s.max() < 0.05


def test_times_on_nodes_are_sgp4_exactly(catalog):
    times = _grid("2022-10-05T10:00:00", 30, 60)
    exact = propagate(catalog, times)
    fast = propagate(catalog, times, node_step_s=60)
    for name in ("r_ecef_km", "v_ecef_km_s", "error", "operational"):
        np.testing.assert_array_equal(fast[name].to_numpy(), exact[name].to_numpy())


def test_same_state_whatever_the_chunking(catalog):
    # The node grid is absolute: chunk boundaries and call boundaries change nothing.
    times = _grid("2022-10-05T10:00:13", 20, 15)
    whole = propagate(catalog, times, node_step_s=60)
    chunked = propagate(catalog, times, node_step_s=60, chunk_steps=7)
    tail = propagate(catalog, times[33:], node_step_s=60)
    np.testing.assert_array_equal(whole["r_ecef_km"].to_numpy(),
                                  chunked["r_ecef_km"].to_numpy())
    np.testing.assert_array_equal(whole["r_ecef_km"].to_numpy()[33:],
                                  tail["r_ecef_km"].to_numpy())


def test_rough_sgp4_states_fall_back_to_sgp4(catalog):
    # Satellites whose SGP4 velocity is not the derivative of its position (element sets
    # propagated weeks before their epoch with a large drag term) are not interpolated.
    times = _grid("2022-10-05T10:00:00", 10, 1)
    exact = propagate(catalog, times)
    r = exact["r_ecef_km"].to_numpy()
    v = exact["v_ecef_km_s"].to_numpy()
    mismatch = np.linalg.norm((r[2:] - r[:-2]) / 2.0 - v[1:-1], axis=-1)
    worst = np.where(np.isnan(mismatch), 0.0, mismatch).max(axis=0)
    rough = np.flatnonzero(worst > 0.01)  # > 10 m/s: not smooth
    assert rough.size > 0, "the bundled catalog has such satellites; the test needs one"
    fast = propagate(catalog, times, node_step_s=60)
    np.testing.assert_array_equal(fast["r_ecef_km"].to_numpy()[:, rough], r[:, rough])


def test_rough_intervals_and_workers_do_not_depend_on_the_chunking(catalog):
    # A satellite with rough intervals gets SGP4 itself at those times only: any chunking
    # and any number of worker processes give the same states.
    times = _grid("2022-10-05T10:00:07", 30, 15)
    whole = propagate(catalog, times, node_step_s=60)
    for kw in ({"chunk_steps": 5}, {"chunk_steps": 13, "workers": 2}):
        other = propagate(catalog, times, node_step_s=60, **kw)
        for name in ("r_ecef_km", "v_ecef_km_s", "error", "operational"):
            np.testing.assert_array_equal(other[name].to_numpy(), whole[name].to_numpy())


def test_a_node_before_a_failing_one_keeps_its_state():
    # Vallado's 28872 (perigee -51 km) decays ~55 min after epoch: a time on the last good
    # node is SGP4's state, not the failure of the node after it.
    from leotwin import load_tle, time_grid

    tle = ("1 28872U 05037B   05333.02012661  .25992681  00000-0  24476-3 0  1534\n"
           "2 28872  96.4736 157.9986 0303955 244.0492 110.6523 16.46015938 10708\n")
    con = load_tle(tle)
    times = time_grid("2005-11-29T00:30Z", "2005-11-29T01:25Z", 60)
    exact = propagate(con, times)
    fast = propagate(con, times, node_step_s=60)
    err = exact["error"].to_numpy()[:, 0]
    assert err[0] == 0 and err[-1] == 6
    np.testing.assert_array_equal(fast["error"].to_numpy(), exact["error"].to_numpy())
    np.testing.assert_array_equal(fast["r_ecef_km"].to_numpy(), exact["r_ecef_km"].to_numpy())
    # Between nodes, a time next to a failing node takes its failure (never interpolated
    # through).
    mid = propagate(con, times[:-1] + np.timedelta64(30, "s"), node_step_s=60)
    last_good = np.flatnonzero(err == 0)[-1]
    assert mid["error"].to_numpy()[last_good, 0] == 6


def test_node_step_must_be_positive(catalog):
    with pytest.raises(ValueError, match="node_step_s"):
        propagate(catalog, _grid("2022-10-05T10:00:00", 1, 15), node_step_s=0)
    with pytest.raises(ValueError, match="node_step_s"):
        sgp4_hermite(catalog, np.arange(3), _grid("2022-10-05T10:00:00", 1, 15), -60)


def test_scenario_runs_interpolate_only_finer_steps():
    from leotwin import load_scenario
    from leotwin.flagship import flagship_path

    def scenario(step_s):
        return load_scenario(flagship_path(), overrides={"time": {
            "start": "2022-10-05T10:00:00Z", "stop": "2022-10-05T10:05:00Z",
            "step_s": step_s}})

    fine = scenario(15)
    con = fine.constellation()
    np.testing.assert_array_equal(
        fine.positions(constellation=con)["r_ecef_km"].to_numpy(),
        propagate(con, fine.times(), node_step_s=60)["r_ecef_km"].to_numpy())
    coarse = scenario(60)
    np.testing.assert_array_equal(
        coarse.positions(constellation=con)["r_ecef_km"].to_numpy(),
        propagate(con, coarse.times())["r_ecef_km"].to_numpy())
