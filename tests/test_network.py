"""network_state end to end: light-time bound, modes, reasons, slots, antennas, capacity, CLI."""

from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import leotwin
from leotwin.cli import main
from leotwin.constants import C_KM_S
from leotwin.frames import great_circle_km

OCT = Path(str(resources.files("leotwin.data"))) / "starlink-2022-10-24.tle"
EPOCH = "2022-10-24T12:00:00Z"


@pytest.fixture(scope="module")
def positions():
    con = leotwin.load_tle(OCT, include="STARLINK-*")
    return leotwin.propagate(con, leotwin.time_grid(EPOCH, "2022-10-24T12:05:00Z", 15))


def terminals(lat, lon):
    lat, lon = np.atleast_1d(lat), np.atleast_1d(lon)
    return pd.DataFrame({"terminal": [f"t{k}" for k in range(lat.size)], "account": "acme",
                         "lat_deg": lat, "lon_deg": lon, "alt_m": 0.0})


def light_time_bound_ms(state, ground):
    pops = ground.pops.set_index("pop")
    term = ground.terminals.set_index("terminal")
    pop = state["pop"].to_numpy()
    lat_p = np.where(pop != "", pops["lat_deg"].reindex(pop.ravel()).to_numpy().reshape(
        pop.shape), np.nan)
    lon_p = np.where(pop != "", pops["lon_deg"].reindex(pop.ravel()).to_numpy().reshape(
        pop.shape), np.nan)
    names = state["terminal"].to_numpy()
    gc = great_circle_km(term.loc[names, "lat_deg"].to_numpy()[None, :],
                         term.loc[names, "lon_deg"].to_numpy()[None, :], lat_p, lon_p)
    return gc / C_KM_S * 1e3


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), mode=st.sampled_from(["isl", "bent_pipe"]))
def test_latency_never_below_great_circle_light_time(positions, seed, mode):
    rng = np.random.default_rng(seed)
    lat = np.degrees(np.arcsin(rng.uniform(-0.85, 0.85, 25)))
    ground = leotwin.Ground.load(terminals(lat, rng.uniform(-180, 180, 25)))
    state = leotwin.network_state(positions, ground,
                                  config=leotwin.NetworkConfig(mode=mode, capacity=False))
    served = state["served"].to_numpy()
    assert served.any()
    bound = light_time_bound_ms(state, ground)
    assert np.all(state["one_way_ms"].to_numpy()[served] >= bound[served])
    assert np.allclose(state["rtt_ms"], 2 * state["one_way_ms"], equal_nan=True)
    assert (state["hops"].to_numpy()[served] >= 2).all()
    if mode == "bent_pipe":
        assert (state["hops"].to_numpy()[served] == 2).all()


def test_reasons_no_satellite_and_no_gateway_path(positions):
    # 88°N: only the polar shells pass; mid-Pacific in bent-pipe mode: no gateway in view of
    # the satellites overhead.
    ground = leotwin.Ground.load(terminals([88.0, 0.0, 50.45], [0.0, -150.0, 30.52]))
    state = leotwin.network_state(positions, ground, config=leotwin.NetworkConfig(
        mode="bent_pipe", capacity=False, terminal_min_elevation_deg=60))
    reasons = state["reason"].to_numpy()
    assert "no_satellite" in reasons[:, 0]
    assert np.isin(reasons[:, 1], ["no_gateway_path", "no_satellite"]).all()
    assert (reasons[:, 1] == "no_gateway_path").sum() > len(reasons) // 2
    assert not state["served"].to_numpy()[:, 1].any()
    assert state["served"].to_numpy()[:, 2].any()  # Kyiv, at least when a gateway is in reach
    assert (reasons[state["served"].to_numpy()] == "").all()
    isl = leotwin.network_state(positions, ground, config=leotwin.NetworkConfig(
        mode="isl", capacity=False, terminal_min_elevation_deg=60))
    assert isl["served"].to_numpy()[:, 1].any()  # lasers carry the Pacific terminal home


def test_handovers_only_at_slot_starts_unless_path_lost(positions):
    ground = leotwin.Ground.load(terminals([50.45, 49.98, 46.64], [30.52, 36.25, 32.62]))
    state = leotwin.network_state(positions, ground, config=leotwin.NetworkConfig(
        slot_s=60, capacity=False))
    times = state["time"].to_numpy()
    slot = ((times - times[0]).astype("int64") // 60_000_000_000)
    slot_start = np.r_[True, slot[1:] != slot[:-1]]
    ho = state["handover"].to_numpy()
    # Inside a slot a terminal keeps its satellite (a real path loss would show as a reason).
    assert not ho[~slot_start].any()
    assert ho[slot_start].any()
    assert (state["handovers"].to_numpy() == ho.sum(axis=0)).all()


def test_least_loaded_spreads_terminals(positions):
    rng = np.random.default_rng(3)
    lat = 50.0 + rng.uniform(-0.3, 0.3, 60)
    lon = 30.5 + rng.uniform(-0.3, 0.3, 60)
    ground = leotwin.Ground.load(terminals(lat, lon))
    max_el = leotwin.network_state(positions, ground, config=leotwin.NetworkConfig(
        capacity=False))
    least = leotwin.network_state(positions, ground, config=leotwin.NetworkConfig(
        policy="least_loaded", capacity=False))
    peak_max = max_el["sat_load_terminals"].max("sat").to_numpy()
    peak_least = least["sat_load_terminals"].max("sat").to_numpy()
    assert (peak_least <= peak_max).all() and (peak_least < peak_max).any()
    assert least["served"].all()


def test_gateway_antenna_limit_in_bent_pipe(positions):
    gws = leotwin.load_gateways()
    gws = gws[gws["name"].isin(["Kaunas", "Wola Krobowska", "Muallim"])].assign(antennas=1)
    rng = np.random.default_rng(5)
    ground = leotwin.Ground.load(terminals(48 + rng.uniform(-2, 2, 80),
                                           30 + rng.uniform(-4, 4, 80)), gateways=gws)
    state = leotwin.network_state(positions, ground, config=leotwin.NetworkConfig(
        mode="bent_pipe", capacity=False))
    served = state["served"].to_numpy()
    gw = state["gateway"].to_numpy()
    sat = state["serving_sat"].to_numpy()
    for k in range(served.shape[0]):  # check per step: one satellite per single-antenna gateway
        frame = pd.DataFrame({"gw": gw[k][served[k]], "sat": sat[k][served[k]]})
        assert (frame.groupby("gw")["sat"].nunique() <= 1).all()


def test_capacity_is_conserved(positions):
    rng = np.random.default_rng(9)
    ground = leotwin.Ground.load(terminals(50 + rng.uniform(-1, 1, 300),
                                           30 + rng.uniform(-1, 1, 300)))
    state = leotwin.network_state(positions, ground, config=leotwin.NetworkConfig(
        beams_per_satellite=2, beam_capacity_mbps=1000))
    thr = state["throughput_mbps"].to_numpy()
    assert (thr <= ground.terminals["demand_mbps"].to_numpy()[None, :] + 1e-9).all()
    assert (thr[~state["served"].to_numpy()] == 0).all()
    assert (state["sat_served_mbps"].to_numpy() <= 2 * 1000 + 1e-6).all()
    assert state["congested"].to_numpy().any()  # 300 terminals, 2 beams of 1 Gbit/s
    per_sat = np.zeros_like(state["sat_served_mbps"].to_numpy())
    idx = {s: k for k, s in enumerate(state["sat"].to_numpy())}
    sat = state["serving_sat"].to_numpy()
    for t in range(thr.shape[0]):
        for term in np.flatnonzero(sat[t] >= 0):
            per_sat[t, idx[sat[t, term]]] += thr[t, term]
    np.testing.assert_allclose(per_sat, state["sat_served_mbps"].to_numpy(), atol=1e-6)


def test_failed_satellites_are_not_used(positions):
    ground = leotwin.Ground.load(terminals([50.45], [30.52]))
    first = leotwin.network_state(positions, ground,
                                  config=leotwin.NetworkConfig(capacity=False))
    used = np.unique(first["serving_sat"].to_numpy())
    failed = np.isin(positions["sat"].to_numpy(), used)[None, :].repeat(positions.sizes["time"],
                                                                        axis=0)
    second = leotwin.network_state(positions, ground, failed=failed,
                                   config=leotwin.NetworkConfig(capacity=False))
    assert not np.isin(second["serving_sat"].to_numpy(), used).any()


def test_bad_config(positions):
    ground = leotwin.Ground.load(terminals([50.45], [30.52]))
    with pytest.raises(ValueError, match="config.mode"):
        leotwin.network_state(positions, ground, config=leotwin.NetworkConfig(mode="laser"))
    with pytest.raises(ValueError, match="config.policy"):
        leotwin.network_state(positions, ground, config=leotwin.NetworkConfig(policy="random"))


def test_cli_network(tmp_path, capsys):
    small = tmp_path / "small.tle"
    small.write_text(OCT.read_text())
    terms = tmp_path / "terminals.csv"
    terminals([50.45, 49.98], [30.52, 36.25]).to_csv(terms, index=False)
    out = tmp_path / "net.parquet"
    code = main(["network", str(small), "--terminals", str(terms), "--start", EPOCH,
                 "--stop", "2022-10-24T12:02:00Z", "--step", "30", "--out", str(out)])
    assert code == 0
    frame = pd.read_parquet(out)
    assert len(frame) == 2 * 5
    assert {"time", "terminal", "serving_sat", "gateway", "pop", "rtt_ms", "reason"} <= set(frame)
    assert "median RTT" in capsys.readouterr().out
    bad = tmp_path / "bad.csv"
    bad.write_text("terminal,account,lat_deg,lon_deg\nt1,a,50,30\nt2,a,95,30\n")
    code = main(["network", str(small), "--terminals", str(bad), "--start", EPOCH,
                 "--stop", "2022-10-24T12:02:00Z", "--out", str(tmp_path / "x.csv")])
    err = capsys.readouterr().err
    assert code == 2 and "bad.csv" in err and "line 3" in err and "lat_deg" in err


def test_in_motion_terminal_follows_its_track(positions):
    terms = terminals([50.45, 49.98], [30.52, 36.25])
    terms["kind"] = ["in_motion", "fixed"]
    track = pd.DataFrame({"terminal": ["t0", "t0"], "time": [EPOCH, "2022-10-24T12:05:00Z"],
                          "lat_deg": [50.45, 49.98], "lon_deg": [30.52, 36.25]})
    ground = leotwin.Ground.load(terms, tracks=track)
    state = leotwin.network_state(positions, ground, config=leotwin.NetworkConfig(
        capacity=False))
    lat, lon, alt = ground.terminal_positions(state["time"].to_numpy())
    assert lon[0, 0] < lon[-1, 0]  # it moved east
    idx = {s: k for k, s in enumerate(positions["sat"].to_numpy())}
    sat = state["serving_sat"].to_numpy()[:, 0]
    r = positions["r_ecef_km"].to_numpy()
    for k in np.flatnonzero(sat >= 0):
        _, el, _ = leotwin.look_angles(r[k, idx[sat[k]]], lat[k, 0], lon[k, 0], alt[k, 0])
        assert el == pytest.approx(state["elevation_deg"].to_numpy()[k, 0], abs=1e-3)
    assert state["served"].to_numpy()[:, 0].all()


def test_laser_links_dataset(positions):
    links = leotwin.laser_links(positions)
    assert links["usable"].dims == ("time", "link")
    usable = links["usable"].to_numpy()
    assert usable.mean() > 0.9
    assert (links["length_km"].to_numpy()[usable] <= 5016).all()
    np.testing.assert_allclose(links["delay_ms"], links["length_km"] / C_KM_S * 1e3)
    assert (links["sat_a"] != links["sat_b"]).all()


def test_failure_at_the_first_step_does_not_unwire_the_grid(positions):
    ground = leotwin.Ground.load(terminals([0.0], [-150.0]))  # mid-Pacific: needs lasers
    failed = np.zeros((positions.sizes["time"], positions.sizes["sat"]), bool)
    failed[0] = True  # every satellite down at step 0 only
    state = leotwin.network_state(positions, ground, failed=failed,
                                  config=leotwin.NetworkConfig(capacity=False))
    served = state["served"].to_numpy()[:, 0]
    assert not served[0] and served[1:].all()


def test_cli_network_with_nothing_served_and_unwritable_output(tmp_path, capsys):
    terms = tmp_path / "pacific.csv"
    terminals([0.0], [-150.0]).to_csv(terms, index=False)
    args = ["network", str(OCT), "--terminals", str(terms), "--start", EPOCH,
            "--stop", "2022-10-24T12:01:00Z", "--mode", "bent_pipe"]
    assert main([*args, "--out", str(tmp_path / "n.csv")]) == 0
    assert "n/a (nothing served)" in " ".join(capsys.readouterr().out.split())
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main([*args, "--out", str(blocker / "sub" / "n.csv")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_fused_step_equals_the_numpy_schedule_and_causes(data):
    """The compiled pass of a step (:func:`_fused_choice`) gives what :func:`_choose` and
    :func:`_step_causes` give: the same kept and new links in the same order, the same cause
    bits, the same healthy choice, on random links, paths, failures, policy and variants."""
    from leotwin.routing import network as nw
    from leotwin.routing.graph import SatRoutes

    n_term = data.draw(st.integers(1, 12))
    n_sat = data.draw(st.integers(1, 10))
    per_term = [data.draw(st.lists(st.integers(0, n_sat - 1), max_size=n_sat, unique=True))
                for _ in range(n_term)]
    term = np.array([t for t, sats in enumerate(per_term) for _ in sats], np.int64)
    sat = np.array([s for sats in per_term for s in sats], np.int64)
    # Elevations from a small set: ties are broken the same way (first row at the maximum).
    el = np.array(data.draw(st.lists(st.sampled_from([25.0, 40.0, 40.0, 70.0, 89.0]),
                                     min_size=sat.size, max_size=sat.size)), float)

    def routes():
        ok = np.array(data.draw(st.lists(st.booleans(), min_size=n_sat, max_size=n_sat)))
        return SatRoutes(np.where(ok, 10.0, np.nan), np.zeros(n_sat, np.int64),
                         np.zeros(n_sat, np.int64), np.ones(n_sat, np.int64))

    clean = routes()
    only_f = data.draw(st.sampled_from([clean, routes()]))
    only_d = data.draw(st.sampled_from([clean, routes()]))
    actual = routes()
    variants = (actual, clean, only_f, only_d)
    failed = np.array(data.draw(st.lists(st.booleans(), min_size=n_sat, max_size=n_sat)))
    allowed = np.array(data.draw(st.lists(st.booleans(), min_size=n_term, max_size=n_term)))
    prev = (np.array(data.draw(st.lists(st.integers(-1, n_sat - 1), min_size=n_term,
                                        max_size=n_term)), np.int64)
            if data.draw(st.booleans()) else None)
    jammers = data.draw(st.booleans())
    attribution = data.draw(st.booleans())
    sat_ok = ~failed & np.isfinite(actual.delay_ms)

    got = nw._fused_choice(term, sat, el, sat_ok, allowed, prev, failed,
                           variants if attribution else None, jammers, n_term)
    groups = nw._groups(term)
    routable = sat_ok[sat] & allowed[term]
    kept_term = kept_row = np.empty(0, np.int64)
    if prev is not None:
        kept_row = np.flatnonzero(routable & (sat == prev[term]))
        kept_term = term[kept_row]
    need = np.ones(n_term, bool)
    need[kept_term] = False
    nt, nr = nw._choose(term, sat, el, routable & need[term], "max_elevation", n_sat, groups)
    bits, ht, hr = nw._step_causes(n_term, term, sat, el, failed, variants, allowed, jammers,
                                   "max_elevation", n_sat, groups)
    np.testing.assert_array_equal(got[0], np.r_[kept_term, nt])
    np.testing.assert_array_equal(got[1], np.r_[kept_row, nr])
    has_rows = np.zeros(n_term, bool)
    has_rows[term] = True
    np.testing.assert_array_equal(got[2], has_rows)
    if not attribution:  # the schedule only: no causes, no healthy choice
        assert got[4] is None and got[5] is None
        return
    np.testing.assert_array_equal(got[3], bits)
    if jammers:
        np.testing.assert_array_equal(got[4], ht)
        np.testing.assert_array_equal(got[5], hr)
    else:
        assert got[4] is None and ht is None


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_antenna_rows_keep_the_highest_links_per_gateway_and_step(data):
    """Feeder links kept per (step, gateway): those at or above the gateway's mask, the
    ``antennas`` highest, highest first — against a sort of all links (np.lexsort)."""
    from leotwin.routing.network import _antenna_rows

    n_gw = data.draw(st.integers(1, 5))
    n = data.draw(st.integers(0, 40))
    t = np.sort(np.array(data.draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)),
                         np.int64))
    g = np.array(data.draw(st.lists(st.integers(0, n_gw - 1), min_size=n, max_size=n)),
                 np.int64)
    order = np.lexsort((g, t))  # grouped by (step, gateway), as visible_pairs returns them
    t, g = t[order], g[order]
    el = np.array(data.draw(st.lists(st.sampled_from([10.0, 25.0, 30.0, 30.0, 60.0, 85.0]),
                                     min_size=n, max_size=n)), float)
    mask = np.array(data.draw(st.lists(st.sampled_from([5.0, 25.0, 40.0]), min_size=n_gw,
                                       max_size=n_gw)))
    antennas = np.array(data.draw(st.lists(st.integers(1, 4), min_size=n_gw,
                                           max_size=n_gw)), np.int64)
    rows = _antenna_rows(g, t, el, mask, antennas)
    ok = np.flatnonzero(el >= mask[g])
    ref = ok[np.lexsort((np.arange(ok.size), -el[ok], g[ok], t[ok]))]
    keys = t[ref] * n_gw + g[ref]
    rank = np.arange(ref.size) - np.searchsorted(keys, keys)
    np.testing.assert_array_equal(rows, ref[rank < antennas[g[ref]]])
