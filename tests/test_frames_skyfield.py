"""leotwin's frames against Skyfield, an independent implementation (offline: builtin timescale).

What is compared, and why the tolerances are what they are:

* TEME -> ECEF with UT1 = UTC and no polar motion, against ``skyfield.sgp4lib.TEME_to_ITRF``
  (Vallado's teme2ecef, the same convention as leotwin): positions within 1 mm (measured:
  identical to the last bit); velocities within 1e-7 km/s. The velocity difference (measured
  4.9e-8 km/s) is the Earth rate in the -ω×r term: leotwin uses Vallado's constant
  7.29211514670698e-5 rad/s, Skyfield the time derivative of its GMST82 polynomial,
  7.2921158553e-5 rad/s; Δω·|r| = 7.1e-12 rad/s × 6950 km = 4.9e-8 km/s.
* Skyfield's full chain ``EarthSatellite.at(t).frame_xyz(itrs)``: TEME -> GCRS with
  ``TEME.rotation_at(t) = R_z(GMST82(UT1) - GAST) · M(t)`` (M = IAU 2000 precession-nutation),
  then GCRS -> ITRS with ``R_z(-GAST) · M(t)`` and, unless a polar-motion table is installed
  (it is not here), no polar motion. The GAST and M factors cancel exactly, leaving a
  rotation by GMST82 at *real* UT1, where leotwin uses UT1 = UTC. The whole difference is
  therefore the Earth's rotation during DUT1 = UT1 - UTC (about -8 ms in October 2022, from
  Skyfield's builtin IERS table): |r_xy| · ω · |DUT1| <= 6950 km × 7.29e-5 rad/s × 9 ms ≈ 4.6 m
  (measured 4.7 m max). We assert < 100 m, and separately that rotating at Skyfield's UT1
  with ``leotwin.teme_to_ecef`` reproduces Skyfield to 1 mm, which proves that DUT1 is the
  only difference: precession-nutation does not enter (it cancels) and polar motion is off.
* Look angles from the same ECEF vectors: Skyfield's topocentric ``altaz()`` (its horizon
  rotation ``R_latlon · R_itrs(t)`` applied to GCRS vectors that came from the same ITRS
  vectors, so the Earth rotation cancels) within 1e-6° (measured ~4e-13°).
* End to end (leotwin.propagate + look_angles vs ``(sat - wgs84.latlon(...)).at(t).altaz()``):
  the only physical difference is again DUT1: ~5 m of satellite position seen from >= 550 km
  is < 6e-4°; we assert the required 0.02° (measured ~2e-4°).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sgp4.api import Satrec, SatrecArray
from skyfield.api import EarthSatellite, load, wgs84
from skyfield.framelib import itrs
from skyfield.sgp4lib import TEME_to_ITRF, theta_GMST1982
from skyfield.toposlib import ITRSPosition
from skyfield.units import Distance

import leotwin
from leotwin.frames import gmst82_rad

STARLINK_TLE = Path(__file__).parent.parent / "src" / "leotwin" / "data" / \
    "starlink-2022-10-24.tle"
N_SATS = 50
SECONDS_PER_DAY = 86400.0
_NS_PER_DAY = 86_400_000_000_000

MM_IN_KM = 1e-6
ECEF_TOL_KM = 1.0 * MM_IN_KM
ECEF_V_TOL_KM_S = 1e-7  # Earth-rate convention, see module docstring (measured 4.9e-8)
FULL_CHAIN_TOL_KM = 0.100  # 100 m; DUT1 makes ~5 m
LOOK_ANGLE_TOL_DEG = 1e-6
LOOK_RANGE_TOL_KM = 1e-8  # 10 um
END_TO_END_TOL_DEG = 0.02


# --------------------------------------------------------------------------- fixtures
def _raw_lines(path: Path) -> dict[int, tuple[str, str]]:
    lines = path.read_text(encoding="ascii").splitlines()
    return {int(l1[2:7]): (l1.rstrip(), lines[i + 1].rstrip())
            for i, l1 in enumerate(lines) if l1.startswith("1 ")}


@pytest.fixture(scope="module")
def ts():
    return load.timescale(builtin=True)  # bundled IERS data, no network


@pytest.fixture(scope="module")
def sample():
    """~50 real Starlink element sets, loaded by leotwin, and the raw lines of each."""
    con = leotwin.load_tle(STARLINK_TLE, include="STARLINK-*")
    rng = np.random.default_rng(20221024)
    sub = con.select(satnums=rng.choice(con.satnum, N_SATS, replace=False))
    raw = _raw_lines(STARLINK_TLE)
    return sub, [raw[int(s)] for s in sub.satnum]


@pytest.fixture(scope="module")
def times() -> np.ndarray:
    """Nine UTC times over two days around the epochs, with odd sub-second parts."""
    rng = np.random.default_rng(3)
    base = np.datetime64("2022-10-23T18:00", "ns")
    offsets = np.arange(9) * 6 * 3600 * 10**9 + rng.integers(0, 10**12, 9)
    return base + offsets.astype("timedelta64[ns]")


@pytest.fixture(scope="module")
def propagated(sample, times):
    sub, _ = sample
    ds = leotwin.propagate(sub, times)
    assert (ds["error"].values == 0).all()
    return ds["r_ecef_km"].values, ds["v_ecef_km_s"].values


def _jd_pair(times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """UTC datetime64 -> (whole JD ending in .5, day fraction), computed independently here."""
    days, rem = np.divmod(times.astype("datetime64[ns]").astype("int64"), _NS_PER_DAY)
    return 2440587.5 + days.astype(np.float64), rem / _NS_PER_DAY


def _skyfield_times(ts, times: np.ndarray):
    ns = times.astype("datetime64[ns]").astype("int64")
    t0 = np.datetime64("2022-10-23T00:00", "ns").astype("int64")
    return ts.utc(2022, 10, 23, 0, 0, (ns - t0) / 1e9)


def _teme(lines, times):
    """TEME r, v (time, sat, 3) from satrecs built straight from the raw lines."""
    jd, fr = _jd_pair(times)
    e, r, v = SatrecArray([Satrec.twoline2rv(*pair) for pair in lines]).sgp4(jd, fr)
    assert (e == 0).all()
    return r.transpose(1, 0, 2), v.transpose(1, 0, 2)


def _sky_arc_deg(az1, az2, el):
    """Azimuth difference as an arc on the sky (degrees): |Δaz| cos(el)."""
    d_az = (np.asarray(az1) - np.asarray(az2) + 180.0) % 360.0 - 180.0
    return np.abs(d_az) * np.cos(np.radians(el))


# --------------------------------------------------------------------------- GMST 1982
def test_gmst82_matches_skyfield_and_sofa():
    rng = np.random.default_rng(1)
    jd = np.floor(rng.uniform(2440000, 2470000, 1000)) + 0.5
    fr = rng.uniform(0.0, 1.0, 1000)
    theirs, _ = theta_GMST1982(jd, fr)
    ours = gmst82_rad(jd, fr)
    diff = (ours - theirs + np.pi) % (2 * np.pi) - np.pi
    assert np.max(np.abs(diff)) < 1e-12  # rad
    assert np.all((ours >= 0) & (ours < 2 * np.pi))
    # SOFA's t_sofa.c test of iauGmst82(2400000.5, 53736.0): 1.754174981860675096 rad.
    assert abs(float(gmst82_rad(2400000.5, 53736.0)) - 1.754174981860675096) < 1e-12
    assert abs(float(gmst82_rad(2453736.5, 0.0)) - 1.754174981860675096) < 1e-12


# --------------------------------------------------------------------------- TEME -> ECEF
def test_propagate_ecef_matches_skyfield_teme_to_itrf_with_ut1_equal_utc(
        sample, times, propagated):
    _, lines = sample
    r_ecef, v_ecef = propagated
    r_teme, v_teme = _teme(lines, times)
    jd, fr = _jd_pair(times)
    shape = r_teme.shape[:2]
    jd_all = np.broadcast_to(jd[:, None], shape).ravel()
    fr_all = np.broadcast_to(fr[:, None], shape).ravel()
    # Skyfield's TEME_to_ITRF works per day (its theta_dot is in rad/day): v in km/day.
    r_sky, v_sky = TEME_to_ITRF(jd_all, r_teme.reshape(-1, 3).T,
                                v_teme.reshape(-1, 3).T * SECONDS_PER_DAY, xp=0.0, yp=0.0,
                                fraction_ut1=fr_all)
    r_sky = r_sky.T.reshape(r_ecef.shape)
    v_sky = (v_sky / SECONDS_PER_DAY).T.reshape(v_ecef.shape)
    assert np.max(np.linalg.norm(r_ecef - r_sky, axis=-1)) < ECEF_TOL_KM
    assert np.max(np.abs(v_ecef - v_sky)) < ECEF_V_TOL_KM_S
    # The public teme_to_ecef is the same transform.
    r2, v2 = leotwin.teme_to_ecef(r_teme, v_teme, times)
    assert np.max(np.linalg.norm(r2 - r_sky, axis=-1)) < ECEF_TOL_KM
    assert np.max(np.abs(v2 - v_sky)) < ECEF_V_TOL_KM_S


def test_propagate_ecef_within_100_m_of_skyfield_itrs(sample, times, propagated, ts):
    _, lines = sample
    r_ecef, _ = propagated
    t = _skyfield_times(ts, times)
    assert ts.polar_motion_table is None  # so Skyfield's ITRS has no polar motion either
    r_sky = np.stack([EarthSatellite(*pair, ts=ts).at(t).frame_xyz(itrs).km.T
                      for pair in lines], axis=1)
    assert np.max(np.linalg.norm(r_ecef - r_sky, axis=-1)) < FULL_CHAIN_TOL_KM


def test_skyfield_itrs_differs_from_leotwin_only_by_dut1(sample, times, ts):
    """Rotating by GMST82 at Skyfield's own UT1 reproduces its full IAU 2000 chain to 1 mm."""
    _, lines = sample
    t = _skyfield_times(ts, times)
    dut1_s = np.asarray(t.dut1)
    assert np.all(np.abs(dut1_s) < 0.9)  # UTC keeps |UT1 - UTC| < 0.9 s
    assert np.all(np.abs(dut1_s) > 1e-3)  # else this test could not tell UT1 from UTC
    r_teme, v_teme = _teme(lines, times)  # SGP4 runs on UTC, as in Skyfield
    ut1_times = times + np.round(dut1_s * 1e9).astype("int64").astype("timedelta64[ns]")
    r_ut1, v_ut1 = leotwin.teme_to_ecef(r_teme, v_teme, ut1_times)
    pos_vel = [EarthSatellite(*pair, ts=ts).at(t).frame_xyz_and_velocity(itrs) for pair in lines]
    r_sky = np.stack([p.km.T for p, _ in pos_vel], axis=1)
    v_sky = np.stack([v.km_per_s.T for _, v in pos_vel], axis=1)
    assert np.max(np.linalg.norm(r_ut1 - r_sky, axis=-1)) < ECEF_TOL_KM
    # Skyfield's ITRS velocity uses ANGVEL = 7.292115e-5 rad/s: 1.5e-12 rad/s × 7000 km.
    assert np.max(np.abs(v_ut1 - v_sky)) < ECEF_V_TOL_KM_S


# --------------------------------------------------------------------------- look angles
def _sites(n_random: int, seed: int):
    edge = [(90.0, 0.0), (-90.0, 45.0), (90.0, 180.0), (-90.0, -180.0), (89.9, 180.0),
            (-89.9, -180.0), (89.9, -179.999), (0.0, 180.0), (0.0, -180.0), (0.0, 179.999),
            (0.0, -179.999), (53.0, 179.999), (-53.0, -179.999), (0.0, 0.0)]
    rng = np.random.default_rng(seed)
    lat = np.r_[[e[0] for e in edge], np.degrees(np.arcsin(rng.uniform(-1, 1, n_random)))]
    lon = np.r_[[e[1] for e in edge], rng.uniform(-180.0, 180.0, n_random)]
    alt = np.r_[np.zeros(len(edge)), rng.uniform(-400.0, 5000.0, n_random)]
    return lat, lon, alt


def test_look_angles_match_skyfield_altaz_for_the_same_ecef_vectors(propagated, ts):
    r_ecef, _ = propagated
    r = r_ecef.reshape(-1, 3)
    n = r.shape[0]
    t = ts.utc(2022, 10, 24)  # any time: both vectors pass through the same ITRS rotation
    sat = ITRSPosition(Distance(km=r.T))
    lat, lon, alt = _sites(60, seed=11)
    az, el, rng_km = leotwin.look_angles(r, lat, lon, alt)  # (n, n_site)
    for k in range(lat.size):
        site = wgs84.latlon(np.full(n, lat[k]), np.full(n, lon[k]), elevation_m=np.full(n, alt[k]))
        sky_el, sky_az, sky_d = (sat - site).at(t).altaz()
        assert np.max(np.abs(el[:, k] - sky_el.degrees)) < LOOK_ANGLE_TOL_DEG
        assert np.max(_sky_arc_deg(az[:, k], sky_az.degrees, el[:, k])) < LOOK_ANGLE_TOL_DEG
        not_zenith = el[:, k] < 89.99
        assert np.max(np.abs((az[not_zenith, k] - sky_az.degrees[not_zenith] + 180.0) % 360.0
                             - 180.0), initial=0.0) < LOOK_ANGLE_TOL_DEG
        assert np.max(np.abs(rng_km[:, k] - sky_d.km)) < LOOK_RANGE_TOL_KM
    # Scalar-site calls agree with the vector call.
    az0, el0, rng0 = leotwin.look_angles(r, lat[0], lon[0], alt[0])
    np.testing.assert_array_equal(np.c_[az0, el0, rng0], np.c_[az[:, 0], el[:, 0], rng_km[:, 0]])


def test_end_to_end_look_angles_within_0p02_deg_of_skyfield(sample, times, propagated, ts):
    """leotwin (UT1 = UTC) vs Skyfield (real UT1): fair because DUT1 moves the satellite by
    only ~5 m, i.e. < 6e-4° from >= 550 km; only satellites above the horizon count."""
    _, lines = sample
    r_ecef, _ = propagated
    t = _skyfield_times(ts, times)
    sats = [EarthSatellite(*pair, ts=ts) for pair in lines]
    lat, lon, alt = _sites(40, seed=12)
    az, el, rng_km = leotwin.look_angles(r_ecef, lat, lon, alt)  # (time, sat, site)
    visible = 0
    for k in range(lat.size):
        site = wgs84.latlon(lat[k], lon[k], elevation_m=alt[k])
        for j, sat in enumerate(sats):
            up = el[:, j, k] > 0.0
            if not up.any():
                continue
            visible += int(up.sum())
            sky_el, sky_az, sky_d = (sat - site).at(t).altaz()
            assert np.max(np.abs(el[up, j, k] - sky_el.degrees[up])) < END_TO_END_TOL_DEG
            assert np.max(_sky_arc_deg(az[up, j, k], sky_az.degrees[up], el[up, j, k])) \
                < END_TO_END_TOL_DEG
            assert np.max(np.abs(rng_km[up, j, k] - sky_d.km[up])) < 0.1  # DUT1: ~5 m
    assert visible >= 50, "too few visible satellites for a meaningful comparison"
