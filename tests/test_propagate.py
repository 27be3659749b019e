"""Propagation: structure, chunking, workers, element-set history, operational mask."""

from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import leotwin
from leotwin.frames import ecef_to_geodetic

DATA = Path(str(resources.files("leotwin.data")))
OCT = DATA / "starlink-2022-10-24.tle"
AUG = DATA / "starlink-2022-08-31-supgp.tle"


@pytest.fixture(scope="module")
def october():
    return leotwin.load_tle(OCT, include="STARLINK-*")


@pytest.fixture(scope="module")
def history():
    return leotwin.starlink_2022()


def test_dataset_layout_and_units(october):
    con = october.select(names=["STARLINK-10*"])
    times = leotwin.time_grid("2022-10-24T00:00Z", "2022-10-24T00:10Z", 60)
    ds = leotwin.propagate(con, times)
    assert ds["r_ecef_km"].dims == ("time", "sat", "xyz")
    assert ds["v_ecef_km_s"].dims == ("time", "sat", "xyz")
    assert ds["error"].dims == ("time", "sat")
    assert ds["r_ecef_km"].attrs["units"] == "km"
    assert ds["v_ecef_km_s"].attrs["units"] == "km/s"
    assert ds.sizes["sat"] == len(con) and ds.sizes["time"] == 11
    np.testing.assert_array_equal(ds["sat"], con.satnum)
    assert ds["name"].to_numpy()[0].startswith("STARLINK-10")
    radius = np.linalg.norm(ds["r_ecef_km"].to_numpy(), axis=-1)
    assert np.all((radius > 6600) & (radius < 7000))
    speed = np.linalg.norm(ds["v_ecef_km_s"].to_numpy(), axis=-1)
    assert np.all((speed > 6.5) & (speed < 8.0))  # ECEF speed of a LEO satellite


def test_chunks_and_workers_give_identical_results(october):
    con = october.select(names=["STARLINK-1*"])
    times = leotwin.time_grid("2022-10-24T00:00Z", "2022-10-24T01:00Z", 30)
    whole = leotwin.propagate(con, times, chunk_steps=1000)
    chunked = xr.concat(list(leotwin.propagate_chunks(con, times, chunk_steps=7)), dim="time")
    forked = leotwin.propagate(con, times, chunk_steps=13, workers=2)
    for other in (chunked, forked):
        for var in ("r_ecef_km", "v_ecef_km_s", "error", "operational", "elset_age_s"):
            np.testing.assert_array_equal(whole[var].to_numpy(), other[var].to_numpy())


def test_velocity_is_the_derivative_of_position(october):
    con = october.select(names=["STARLINK-11*"])
    t0 = np.datetime64("2022-10-24T06:00:00", "ns")
    dt = np.timedelta64(500, "ms")
    ds = leotwin.propagate(con, np.array([t0 - dt, t0, t0 + dt]))
    r = ds["r_ecef_km"].to_numpy()
    numeric = (r[2] - r[0]) / 1.0
    # SGP4's analytic velocity is itself not the exact derivative of its position (short-period
    # terms): ~1e-5 km/s in TEME. The ECEF transform adds ω×r ≈ 0.5 km/s, so an error in the
    # rotation term would show four orders of magnitude above this tolerance.
    np.testing.assert_allclose(numeric, ds["v_ecef_km_s"].to_numpy()[1], atol=5e-5)


def test_history_uses_nearest_epoch(history):
    times = leotwin.time_grid("2022-09-01T00:00Z", "2022-10-24T00:00Z", 86400 * 3)
    ds = leotwin.propagate(history, times)
    age = np.abs(ds["elset_age_s"].to_numpy().astype(np.float64))
    # For every satellite, no other element set of it is nearer in time.
    epochs = history.elset_epoch
    for k in range(0, len(history), 97):  # a sample of satellites
        own = epochs[history.elset_sat == k]
        best = np.min(np.abs((times[:, None] - own[None, :]).astype("int64") / 1e9), axis=1)
        np.testing.assert_allclose(age[:, k], best, atol=1.0)


def test_history_switches_at_midpoint_and_matches_single_snapshots(history):
    aug = leotwin.load_tle(AUG)
    octo = leotwin.load_tle(OCT, include="STARLINK-*")
    both = np.intersect1d(aug.satnum, octo.satnum)[:20]
    early = np.array(["2022-09-02T00:00"], dtype="datetime64[ns]")
    late = np.array(["2022-10-20T00:00"], dtype="datetime64[ns]")
    sel = history.select(satnums=both)
    np.testing.assert_array_equal(
        leotwin.propagate(sel, early)["r_ecef_km"], leotwin.propagate(aug.select(satnums=both),
                                                                       early)["r_ecef_km"])
    np.testing.assert_array_equal(
        leotwin.propagate(sel, late)["r_ecef_km"], leotwin.propagate(octo.select(satnums=both),
                                                                      late)["r_ecef_km"])


def test_satellite_only_in_later_snapshot_is_propagated_backwards(history):
    aug = leotwin.load_tle(AUG)
    only_oct = np.setdiff1d(history.satnum, aug.satnum)
    assert only_oct.size > 300  # launches of September and October 2022
    sel = history.select(satnums=only_oct[:50])
    ds = leotwin.propagate(sel, np.array(["2022-10-07T12:00"], dtype="datetime64[ns]"))
    assert (ds["elset_age_s"].to_numpy() < -86400 * 10).all()  # epoch is ~17 days later
    ok = ds["error"].to_numpy() == 0
    assert np.isfinite(ds["r_ecef_km"].to_numpy()[ok]).all()


def test_operational_mask_excludes_orbit_raising(october):
    times = np.array(["2022-10-24T12:00"], dtype="datetime64[ns]")
    ds = leotwin.propagate(october, times)
    alt = october.elset_mean_altitude_km
    centre = october.shell_altitude_km
    op = ds["operational"].to_numpy()[0]
    assert not op[np.abs(alt - centre) > 30].any()
    assert op[(np.abs(alt - centre) < 29) & (ds["error"].to_numpy()[0] == 0)].all()
    low = (october.shell == "gen1-2") & (alt < 480)
    assert low.sum() > 100 and not op[low].any()  # the 53.2° shell still raising in Oct 2022
    counts = october.shell_counts()
    assert counts["gen1-1"] > 1400 and counts["gen1-2"] > 1000 and counts["gen1-4/5"] > 150


def test_sgp4_error_gives_nan_and_code():
    # Vallado's 28872 (MINOTAUR R/B, perigee -51 km): SGP4 reports decay (6) from ~55 min.
    tle = ("1 28872U 05037B   05333.02012661  .25992681  00000-0  24476-3 0  1534\n"
           "2 28872  96.4736 157.9986 0303955 244.0492 110.6523 16.46015938 10708\n")
    con = leotwin.load_tle(tle)
    times = leotwin.time_grid("2005-11-29T00:30Z", "2005-11-29T01:25Z", 300)
    ds = leotwin.propagate(con, times)
    err = ds["error"].to_numpy()[:, 0]
    assert err[0] == 0 and err[-1] == 6
    assert np.isnan(ds["r_ecef_km"].to_numpy()[err != 0]).all()
    assert not ds["operational"].to_numpy()[err != 0].any()


def test_walker_shell_geometry():
    con = leotwin.walker_shell(altitude_km=550, inclination_deg=53, planes=72, sats_per_plane=22,
                               phasing=17, epoch="2022-10-07T00:00Z", name="s1")
    assert len(con) == 1584
    times = leotwin.time_grid("2022-10-07T00:00Z", "2022-10-07T01:40Z", 60)
    ds = leotwin.propagate(con, times)
    lat, lon, alt_m = ecef_to_geodetic(ds["r_ecef_km"].to_numpy())
    assert np.nanmax(lat) == pytest.approx(53, abs=0.3)  # ground track reaches the inclination
    assert np.nanmin(alt_m) > 530e3 and np.nanmax(alt_m) < 580e3
    assert ds["operational"].all()
    # Consecutive satellites of a plane are 360/22° apart in argument of latitude: same radius.
    r = np.linalg.norm(ds["r_ecef_km"].to_numpy()[0], axis=-1)
    assert np.ptp(r) < 30


def test_walker_bad_parameters():
    with pytest.raises(ValueError, match="phasing"):
        leotwin.walker_shell(altitude_km=550, inclination_deg=53, planes=4, sats_per_plane=2,
                             phasing=4, epoch="2022-01-01")
    with pytest.raises(ValueError, match="planes"):
        leotwin.walker_shell(altitude_km=550, inclination_deg=53, planes=0, sats_per_plane=2,
                             phasing=0, epoch="2022-01-01")
    with pytest.raises(ValueError, match="altitude_km"):
        leotwin.walker_shell(altitude_km=-5, inclination_deg=53, planes=2, sats_per_plane=2,
                             phasing=0, epoch="2022-01-01")


def test_starlink_gen1_matches_filing():
    con = leotwin.starlink_gen1("2022-10-07T00:00Z")
    assert len(con) == 4408
    assert con.shell_counts() == {"gen1-1": 1584, "gen1-2": 1584, "gen1-3": 720,
                                  "gen1-4": 348, "gen1-5": 172}
    inc = con.elset_inclination_deg
    assert set(np.round(inc, 1)) == {53.0, 53.2, 70.0, 97.6}
    assert len(np.unique(con.satnum)) == 4408


def test_constellation_algebra(october):
    a = october.select(names="STARLINK-1*")
    b = october.select(names="STARLINK-2*")
    ab = a + b
    assert len(ab) == len(a) + len(b)
    assert len(october.select(shell="gen1-3")) == october.shell_counts()["gen1-3"]
    same = a + a  # identical element sets are not duplicated
    assert len(same) == len(a) and same.n_elsets == a.n_elsets
    assert "Constellation(" in repr(ab)
    assert len(october.select(satnums=[44713, 1])) == 1


def test_propagate_bad_times(october):
    with pytest.raises(ValueError, match="non-empty"):
        leotwin.propagate(october, np.array([], dtype="datetime64[ns]"))
    with pytest.raises(ValueError, match="cannot read time"):
        leotwin.propagate(october, ["not a time"])


def test_operational_needs_the_position_on_its_shell():
    # Early October 2022 from the bundled history: a few satellites known only from the
    # 10-24 snapshot have their mean altitude in the band, but SGP4 run weeks backwards with
    # their drag term puts them thousands of kilometres off the shell. They do not serve.
    from leotwin.constants import WGS72_RADIUS_KM
    from leotwin.defaults import default

    band_km = default("operational_band_km")
    allowed_km = band_km + default("osculating_altitude_margin_km")
    con = leotwin.starlink_2022()
    ds = leotwin.propagate(con, leotwin.time_grid("2022-10-05T10:00Z", "2022-10-05T10:10Z", 60))
    height = np.linalg.norm(ds["r_ecef_km"].to_numpy(), axis=-1) - WGS72_RADIUS_KM
    off = np.abs(height - con.shell_altitude_km[None, :])
    idx = leotwin.orbits.propagate.nearest_elset_index(con, ds["time"].to_numpy())
    mean_in_band = (np.abs(con.elset_mean_altitude_km[idx] - con.shell_altitude_km)
                    <= band_km) & (ds["error"].to_numpy() == 0)
    op = ds["operational"].to_numpy()
    far = mean_in_band & (off > allowed_km)
    assert 0 < far.any(axis=0).sum() < 0.02 * len(con)
    assert not op[far].any()
    assert (ds["elset_age_s"].to_numpy()[far] < -10 * 86400).all()  # weeks before the epoch
    assert op[mean_in_band & (off <= allowed_km)].all()
    assert off[op].max() < band_km + 10  # those that serve are on station
