"""Visibility: pruned result equals brute force; hand geometry; passes vs Skyfield."""

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import leotwin
from leotwin.frames import enu_basis, geodetic_to_ecef
from leotwin.geometry.visibility import visible_pairs


def brute_force(r_ecef_km, valid, sites, mask_deg):
    """Dense reference: every site × every satellite × every step, no pruning."""
    lat, lon, alt = (sites[c].to_numpy() for c in ("lat_deg", "lon_deg", "alt_m"))
    az, el, rng = leotwin.look_angles(r_ecef_km, lat, lon, alt)  # (time, sat, site)
    ok = (el >= mask_deg) & valid[..., None]
    t, s, k = np.nonzero(ok)
    frame = pd.DataFrame({"t": t, "site": k, "sat": s, "elevation_deg": el[t, s, k],
                          "range_km": rng[t, s, k]})
    return frame.sort_values(["t", "site", "sat"]).reset_index(drop=True)


def random_sites(n, seed):
    rng = np.random.default_rng(seed)
    lat = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    lon = rng.uniform(-180, 180, n)
    # Always include the poles and the antimeridian.
    lat[:6] = [90, -90, 89.99, -89.99, 10, -10]
    lon[:6] = [0, 0, 180, -180, 179.999, -179.999]
    return pd.DataFrame({"site": [f"s{i}" for i in range(n)], "lat_deg": lat, "lon_deg": lon,
                         "alt_m": rng.uniform(0, 3000, n)})


@pytest.fixture(scope="module")
def walker_positions():
    con = leotwin.walker_shell(altitude_km=550, inclination_deg=87, planes=12, sats_per_plane=20,
                               phasing=3, epoch="2022-10-07T00:00Z", name="polar") + \
        leotwin.walker_shell(altitude_km=1100, inclination_deg=53, planes=10, sats_per_plane=10,
                             phasing=1, epoch="2022-10-07T00:00Z", name="high", first_satnum=1000)
    times = leotwin.time_grid("2022-10-07T00:00Z", "2022-10-07T00:30Z", 120)
    return leotwin.propagate(con, times)


@pytest.mark.parametrize("mask_deg", [0.0, 10.0, 25.0, 40.0, 80.0])
def test_pruned_equals_brute_force(walker_positions, mask_deg):
    sites = random_sites(400, seed=int(mask_deg))
    vis = leotwin.visible(walker_positions, sites, min_elevation_deg=mask_deg, chunk_steps=5)
    r = walker_positions["r_ecef_km"].to_numpy()
    ref = brute_force(r, np.ones(r.shape[:2], bool), sites, mask_deg)
    site_pos = {s: k for k, s in enumerate(sites["site"])}
    key = (pd.Series(vis.table["time"]).rank(method="dense").to_numpy() * len(sites)
           + vis.table["site"].map(site_pos).to_numpy())
    assert np.all(np.diff(key) >= 0)  # ordered by time, then site
    got = vis.table.assign(_k=key).sort_values(["_k", "sat"], kind="stable")
    assert len(got) == len(ref)
    np.testing.assert_array_equal(got["sat"], walker_positions["sat"].to_numpy()[ref["sat"]])
    np.testing.assert_array_equal(got["site"], sites["site"].to_numpy()[ref["site"]])
    np.testing.assert_array_equal(got["time"], walker_positions["time"].to_numpy()[ref["t"]])
    np.testing.assert_allclose(got["elevation_deg"], ref["elevation_deg"], atol=1e-9)
    np.testing.assert_allclose(got["range_km"], ref["range_km"], rtol=1e-12)
    counts = got.groupby(["time", "site"]).size()
    for (t, site), n in counts.sample(20, random_state=1, replace=True).items():
        assert vis.count.sel(time=t, site=site).item() == n
    assert vis.count.sum().item() == len(got)


def test_real_constellation_matches_brute_force_with_operational_mask():
    con = leotwin.starlink_2022()
    times = leotwin.time_grid("2022-10-07T12:00Z", "2022-10-07T12:05Z", 60)
    pos = leotwin.propagate(con, times)
    sites = random_sites(150, seed=7)
    vis = leotwin.visible(pos, sites)  # default 25° and operational satellites only
    r = pos["r_ecef_km"].to_numpy()
    ref = brute_force(r, pos["operational"].to_numpy(), sites, 25.0)
    assert len(vis.table) == len(ref) > 0
    site_pos = {s: k for k, s in enumerate(sites["site"])}
    got = vis.table.assign(_s=vis.table["site"].map(site_pos)).sort_values(["time", "_s", "sat"])
    np.testing.assert_array_equal(got["sat"], pos["sat"].to_numpy()[ref["sat"]])
    np.testing.assert_allclose(got["elevation_deg"], ref["elevation_deg"], atol=1e-9)
    everything = leotwin.visible(pos, sites, operational_only=False)
    assert len(everything.table) > len(vis.table)


def test_satellite_straight_overhead():
    site = pd.DataFrame({"site": ["A"], "lat_deg": [48.0], "lon_deg": [37.8], "alt_m": [0.0]})
    up = enu_basis(48.0, 37.8)[2]
    r_sat = geodetic_to_ecef(48.0, 37.8, 0.0) + 550.0 * up
    ds = xr.Dataset({"r_ecef_km": (("time", "sat", "xyz"), r_sat[None, None, :])},
                    coords={"time": [np.datetime64("2022-10-07T00:00", "ns")], "sat": [1]})
    vis = leotwin.visible(ds, site, min_elevation_deg=89.0)
    assert len(vis.table) == 1
    assert vis.table["elevation_deg"].iloc[0] == pytest.approx(90.0, abs=1e-9)
    assert vis.table["range_km"].iloc[0] == pytest.approx(550.0, abs=1e-9)
    # One-way light time straight up: 550 km / c.
    assert vis.table["range_km"].iloc[0] / 299792.458 * 1e3 == pytest.approx(1.8346, abs=1e-4)


def test_nan_positions_are_not_visible():
    r = geodetic_to_ecef(0.0, 0.0, 550e3)[None, None, :].repeat(2, axis=1)
    r[0, 1] = np.nan
    t, s, k, el, rng = visible_pairs(r, np.ones((1, 2), bool), geodetic_to_ecef([0.0], [0.0],
                                     [0.0]), enu_basis([0.0], [0.0]), 25.0)
    np.testing.assert_array_equal(k, [0])


@pytest.mark.parametrize("bad,match", [
    ({"site": ["a"], "lat_deg": [91.0], "lon_deg": [0.0]}, "row 0.*lat_deg"),
    ({"site": ["a", "b"], "lat_deg": [1.0, "x"], "lon_deg": [0.0, 0.0]}, "row 1.*lat_deg"),
    ({"site": ["a"], "lon_deg": [0.0]}, "missing column"),
    ({"site": ["a", "a"], "lat_deg": [1.0, 2.0], "lon_deg": [0.0, 0.0]}, "duplicate"),
    ({"site": [], "lat_deg": [], "lon_deg": []}, "empty"),
])
def test_bad_sites(walker_positions, bad, match):
    with pytest.raises(ValueError, match=match):
        leotwin.visible(walker_positions, pd.DataFrame(bad))


def test_bad_mask(walker_positions):
    with pytest.raises(ValueError, match="min_elevation_deg"):
        leotwin.visible(walker_positions, random_sites(10, 0), min_elevation_deg=95)


def test_coverage_summary(walker_positions):
    sites = random_sites(20, seed=3)
    vis = leotwin.visible(walker_positions, sites, min_elevation_deg=25)
    summary = leotwin.coverage_summary(vis)
    c = vis.count.to_numpy()
    np.testing.assert_array_equal(summary["max_visible"], c.max(axis=0))
    np.testing.assert_allclose(summary["seconds_with_none"], (c == 0).sum(axis=0) * 120.0)


def test_passes_against_skyfield():
    from skyfield.api import EarthSatellite, load, wgs84

    con = leotwin.load_tle(
        str(leotwin.orbits.catalog.bundled_tle_path("starlink-2022-10-24")), include="STARLINK-*"
    ).select(names=["STARLINK-1*"])
    kyiv = (50.45466, 30.5238, 180.0)
    table = leotwin.passes(con, kyiv, "2022-10-24T12:00Z", "2022-10-24T14:00Z",
                           min_elevation_deg=25, step_s=10)
    complete = table[table["complete"]]
    assert len(complete) > 20
    assert (complete["rise_time"] < complete["culmination_time"]).all()
    assert (complete["culmination_time"] < complete["set_time"]).all()
    assert (complete["max_elevation_deg"] >= 25).all()
    ts = load.timescale(builtin=True)
    topos = wgs84.latlon(*kyiv[:2], elevation_m=kyiv[2])
    t0 = ts.utc(2022, 10, 24, 12)
    t1 = ts.utc(2022, 10, 24, 14)
    by_sat = {int(s): i for i, s in enumerate(con.satnum)}
    checked = 0
    for row in complete.head(15).itertuples():
        sf = EarthSatellite.from_satrec(con.satrecs[by_sat[row.sat]], ts)
        t, events = sf.find_events(topos, t0, t1, altitude_degrees=25.0)
        rises = [tt for tt, e in zip(t.utc_datetime(), events, strict=True) if e == 0]
        sets = [tt for tt, e in zip(t.utc_datetime(), events, strict=True) if e == 2]
        rise = pd.Timestamp(row.rise_time).tz_localize("UTC")
        nearest_rise = min(rises, key=lambda x: abs(x - rise))
        nearest_set = min(sets, key=lambda x: abs(x - pd.Timestamp(row.set_time).tz_localize(
            "UTC")))
        # Skyfield uses real UT1 and IAU 2000 nutation; ours GMST82 with UT1=UTC: ~0.01° of
        # geometry, a fraction of a second of pass time; linear interpolation over 10 s adds
        # less than a second more.
        assert abs((nearest_rise - rise).total_seconds()) < 2.0
        set_ = pd.Timestamp(row.set_time).tz_localize("UTC")
        assert abs((nearest_set - set_).total_seconds()) < 2.0
        checked += 1
    assert checked == 15


def test_passes_bad_site():
    con = leotwin.walker_shell(altitude_km=550, inclination_deg=53, planes=2, sats_per_plane=2,
                               phasing=0, epoch="2022-10-07")
    with pytest.raises(ValueError, match="site"):
        leotwin.passes(con, (95.0, 0.0), "2022-10-07", "2022-10-07T01:00")
    with pytest.raises(ValueError, match="site"):
        leotwin.passes(con, ("north", 0.0), "2022-10-07", "2022-10-07T01:00")


def test_one_step_grids(walker_positions):
    con = leotwin.walker_shell(altitude_km=550, inclination_deg=53, planes=4, sats_per_plane=4,
                               phasing=1, epoch="2022-10-07")
    for stop in ("2022-10-07T00:00:00Z", "2022-10-07T00:00:10Z"):
        table = leotwin.passes(con, (10.0, 20.0), "2022-10-07T00:00:00Z", stop,
                               min_elevation_deg=0)
        assert (table["max_elevation_deg"] >= 0).all()
    with pytest.raises(ValueError, match="chunk_steps"):
        leotwin.visible(walker_positions, random_sites(10, 0), chunk_steps=0)
