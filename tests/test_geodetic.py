"""WGS84 geodetic <-> ECEF and topocentric look angles.

References: closed-form values derived by hand from the WGS84 definition (a = 6378.137 km,
1/f = 298.257223563), Skyfield's independent ``wgs84`` model, and round trips. Positions are
compared as 3-D distances in millimetres; angles as arcs on the sky.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from skyfield.api import load, wgs84
from skyfield.toposlib import ITRSPosition
from skyfield.units import Distance

import leotwin
from leotwin import ecef_to_geodetic, geodetic_to_ecef, look_angles

MM_IN_KM = 1e-6
ROUND_TRIP_TOL_KM = 1.0 * MM_IN_KM  # 1 mm
#: Skyfield's ``Geoid._compute_latitude`` stops after three fixed-point iterations; its
#: latitude is off by up to 2.85 mm (measured, near ±20° at the surface) against the point
#: that produced the ECEF vector, where leotwin's closed form is good to ~1e-5 mm. 5 mm.
SKYFIELD_LATITUDE_TOL_KM = 5.0 * MM_IN_KM
WGS84_POLAR_RADIUS_KM = 6356.752314245  # b = a (1 - f), NIMA TR8350.2 Table 3.1 / 3.3
LAT = st.floats(-90.0, 90.0, allow_nan=False)
LON = st.floats(-180.0, 180.0, allow_nan=False)
ALT_M = st.floats(-400.0, 40_000_000.0, allow_nan=False)


def _wrap_deg(d):
    return (np.asarray(d) + 180.0) % 360.0 - 180.0


def _random_points(n: int, seed: int, lat_limit: float = 90.0):
    """Area-uniform latitudes, lower altitudes weighted up; antimeridian and near-pole rows."""
    rng = np.random.default_rng(seed)
    lat = np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, n)))
    lat[: n // 20] = rng.choice([lat_limit, -lat_limit, 89.9, -89.9, 0.0], n // 20)
    lat = np.clip(lat, -lat_limit, lat_limit)
    lon = rng.uniform(-180.0, 180.0, n)
    lon[n // 20: n // 10] = rng.choice([180.0, -180.0, 179.999, -179.999], n // 20)
    alt = np.where(rng.random(n) < 0.5, rng.uniform(-400.0, 2e6, n), rng.uniform(-400.0, 4e7, n))
    return lat, lon, alt


# --------------------------------------------------------------------------- hand-derived
def test_equator_prime_meridian_and_north_pole_are_the_semi_axes():
    np.testing.assert_allclose(geodetic_to_ecef(0.0, 0.0, 0.0), [6378.137, 0.0, 0.0],
                               rtol=0, atol=1e-9)
    np.testing.assert_allclose(geodetic_to_ecef(90.0, 0.0, 0.0),
                               [0.0, 0.0, WGS84_POLAR_RADIUS_KM], rtol=0, atol=1e-9)
    np.testing.assert_allclose(geodetic_to_ecef(-90.0, 123.0, 1000.0),
                               [0.0, 0.0, -WGS84_POLAR_RADIUS_KM - 1.0], rtol=0, atol=1e-9)
    np.testing.assert_allclose(geodetic_to_ecef(0.0, 90.0, 550_000.0), [0.0, 6928.137, 0.0],
                               rtol=0, atol=1e-9)
    np.testing.assert_allclose(geodetic_to_ecef(0.0, 180.0, 0.0), [-6378.137, 0.0, 0.0],
                               rtol=0, atol=1e-9)


def test_equatorial_points_invert_exactly():
    lat, lon, alt = ecef_to_geodetic(np.array([[6378.137, 0.0, 0.0], [0.0, -6928.137, 0.0]]))
    np.testing.assert_allclose(lat, [0.0, 0.0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(lon, [0.0, -90.0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(alt, [0.0, 550_000.0], rtol=0, atol=1e-6)  # metres


@pytest.mark.parametrize("lat, lon", [(0.0, 0.0), (47.3, 8.5), (-33.9, 151.2), (89.9, -179.999),
                                      (-89.9, 180.0), (64.0, 179.999)])
def test_satellite_straight_overhead_at_550_km(lat, lon):
    sat = geodetic_to_ecef(lat, lon, 550_000.0)
    az, el, rng_km = look_angles(sat, lat, lon, 0.0)
    assert abs(el - 90.0) < 1e-9
    assert abs(rng_km - 550.0) < 1e-9  # the ellipsoid normal is the local vertical
    assert 0.0 <= az < 360.0


@pytest.mark.parametrize("lat, lon, alt_m", [(0.0, 0.0, 0.0), (47.3, 8.5, 400.0),
                                             (-33.9, 151.2, 0.0), (-60.0, -179.999, 1200.0)])
def test_azimuth_of_the_four_compass_directions(lat, lon, alt_m):
    # East and north unit vectors from their definition (derivatives of the WGS84 map).
    phi, lam = np.radians(lat), np.radians(lon)
    east = np.array([-np.sin(lam), np.cos(lam), 0.0])
    north = np.array([-np.sin(phi) * np.cos(lam), -np.sin(phi) * np.sin(lam), np.cos(phi)])
    up = np.cross(east, north)
    site = geodetic_to_ecef(lat, lon, alt_m)
    targets = site + np.array([800.0 * north + 300.0 * up, 800.0 * east + 300.0 * up,
                               -800.0 * north + 300.0 * up, -800.0 * east + 300.0 * up])
    az, el, rng_km = look_angles(targets, lat, lon, alt_m)
    np.testing.assert_allclose(_wrap_deg(az - np.array([0.0, 90.0, 180.0, 270.0])), 0.0,
                               rtol=0, atol=1e-9)
    np.testing.assert_allclose(el, np.degrees(np.arctan2(300.0, 800.0)), rtol=0, atol=1e-9)
    np.testing.assert_allclose(rng_km, np.hypot(300.0, 800.0), rtol=0, atol=1e-9)


def test_due_north_and_east_on_the_equator():
    # At the equator north is +z and east at lon 0 is +y: no ellipsoid algebra needed.
    az, el, _ = look_angles(np.array([[7000.0, 0.0, 500.0], [7000.0, 500.0, 0.0]]), 0.0, 0.0, 0.0)
    np.testing.assert_allclose(az, [0.0, 90.0], rtol=0, atol=1e-12)
    expected_el = np.degrees(np.arctan2(7000.0 - 6378.137, 500.0))
    np.testing.assert_allclose(el, [expected_el, expected_el], rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- round trips
@settings(max_examples=400, deadline=None)
@given(lat=LAT, lon=LON, alt_m=ALT_M)
@example(lat=0.0, lon=180.0, alt_m=0.0)
@example(lat=0.0, lon=-180.0, alt_m=-400.0)
@example(lat=45.0, lon=179.999, alt_m=550_000.0)
@example(lat=-45.0, lon=-179.999, alt_m=40_000_000.0)
@example(lat=90.0, lon=0.0, alt_m=40_000_000.0)
@example(lat=-90.0, lon=180.0, alt_m=-400.0)
def test_round_trip_geodetic_ecef_geodetic_within_1_mm(lat, lon, alt_m):
    r = geodetic_to_ecef(lat, lon, alt_m)
    lat2, lon2, alt2 = ecef_to_geodetic(r)
    assert abs(alt2 - alt_m) < ROUND_TRIP_TOL_KM * 1e3  # metres
    assert abs(np.radians(lat2 - lat)) * np.linalg.norm(r) < ROUND_TRIP_TOL_KM
    rho = np.hypot(r[0], r[1])
    assert abs(np.radians(_wrap_deg(lon2 - lon))) * rho < ROUND_TRIP_TOL_KM
    assert -180.0 <= lon2 <= 180.0
    assert np.linalg.norm(geodetic_to_ecef(lat2, lon2, alt2) - r) < ROUND_TRIP_TOL_KM


def test_round_trip_vectorized_sample_within_1_mm():
    lat, lon, alt = _random_points(100_000, seed=20221024)
    r = geodetic_to_ecef(lat, lon, alt)
    lat2, lon2, alt2 = ecef_to_geodetic(r)
    assert np.max(np.abs(alt2 - alt)) < 1e-3
    assert np.max(np.linalg.norm(geodetic_to_ecef(lat2, lon2, alt2) - r, axis=-1)) \
        < ROUND_TRIP_TOL_KM


def test_round_trip_at_and_next_to_the_poles():
    # Regression: next to the polar axis Heikkinen's r0 radicand went negative by round-off.
    lat = np.repeat([90.0, -90.0, 89.999999, -89.999999, 89.99999999], 4)
    alt = np.tile([-400.0, 0.0, 550_000.0, 36_000_000.0], 5)
    lon = np.linspace(-180.0, 180.0, lat.size)
    r = np.vstack([geodetic_to_ecef(lat, lon, alt), [[0.0, 0.0, WGS84_POLAR_RADIUS_KM],
                                                      [0.0, 0.0, -6357.0]]])
    lat_in = np.r_[lat, 90.0, -90.0]
    alt_in = np.r_[alt, 0.0, (6357.0 - WGS84_POLAR_RADIUS_KM) * 1e3]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lat2, lon2, alt2 = ecef_to_geodetic(r)
    assert np.max(np.abs(alt2 - alt_in)) < 1e-3
    assert np.max(np.abs(lat2 - lat_in)) < 1e-8
    assert np.max(np.linalg.norm(geodetic_to_ecef(lat2, lon2, alt2) - r, axis=-1)) \
        < ROUND_TRIP_TOL_KM


def test_broadcasting_shapes():
    assert geodetic_to_ecef(np.zeros((4, 1)), np.zeros(3), 0.0).shape == (4, 3, 3)
    lat, lon, alt = ecef_to_geodetic(np.ones((2, 5, 3)) * 4000.0)
    assert lat.shape == lon.shape == alt.shape == (2, 5)
    az, el, rng_km = look_angles(np.ones((6, 7, 3)) * 5000.0, np.zeros(4), np.zeros(4), 0.0)
    assert az.shape == el.shape == rng_km.shape == (6, 7, 4)


# --------------------------------------------------------------------------- Skyfield
def test_geodetic_to_ecef_matches_skyfield_within_1_mm():
    lat, lon, alt = _random_points(20_000, seed=7, lat_limit=90.0)
    lat[:4] = [90.0, -90.0, 89.9, -89.9]
    lon[4:8] = [180.0, -180.0, 179.999, -179.999]
    ours = geodetic_to_ecef(lat, lon, alt)
    theirs = wgs84.latlon(lat, lon, elevation_m=alt).itrs_xyz.km.T
    assert np.max(np.linalg.norm(ours - theirs, axis=-1)) < ROUND_TRIP_TOL_KM


def test_ecef_to_geodetic_matches_skyfield():
    lat, lon, alt = _random_points(20_000, seed=8)
    r = geodetic_to_ecef(lat, lon, alt)
    lat2, lon2, alt2 = ecef_to_geodetic(r)
    # Skyfield's geographic functions take a geocentric position at a time; ITRSPosition
    # goes to GCRS and back through the same rotation, so the time does not matter.
    ts = load.timescale(builtin=True)
    pos = ITRSPosition(Distance(km=r.T)).at(ts.utc(2022, 10, 24))
    sky = wgs84.geographic_position_of(pos)
    sky_lat, sky_lon = wgs84.latlon_of(pos)
    np.testing.assert_array_equal(sky_lat.degrees, sky.latitude.degrees)
    np.testing.assert_allclose(wgs84.height_of(pos).m, sky.elevation.m, rtol=0, atol=1e-9)
    dist_km = np.linalg.norm(r, axis=-1)
    rho_km = np.hypot(r[:, 0], r[:, 1])
    assert np.max(np.abs(alt2 - sky.elevation.m)) < 1e-3  # metres; measured 0.35 um
    assert np.max(np.abs(np.radians(lat2 - sky.latitude.degrees)) * dist_km) \
        < SKYFIELD_LATITUDE_TOL_KM
    assert np.max(np.abs(np.radians(_wrap_deg(lon2 - sky_lon.degrees))) * rho_km) \
        < ROUND_TRIP_TOL_KM
    sub = wgs84.subpoint_of(pos)
    np.testing.assert_allclose(sub.elevation.m, 0.0)
    assert np.max(np.abs(np.radians(_wrap_deg(lon2 - sub.longitude.degrees))) * rho_km) \
        < ROUND_TRIP_TOL_KM


# --------------------------------------------------------------------------- bad input
def test_nan_in_gives_nan_out_without_exceptions_or_warnings():
    nan = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = geodetic_to_ecef([nan, 10.0, 10.0], [20.0, nan, 20.0], [0.0, 0.0, nan])
        g = ecef_to_geodetic(np.array([[nan, 1.0, 7000.0], [7000.0, nan, 1.0],
                                       [7000.0, 1.0, nan], [nan, nan, nan]]))
        az, el, rng_km = look_angles(np.array([[nan, 0.0, 7000.0], [7000.0, 0.0, 0.0]]),
                                     [0.0, nan, 0.0], [0.0, 0.0, nan], [0.0, 0.0, 0.0])
        az_s, el_s, rng_s = look_angles(np.array([7000.0, 0.0, 0.0]), 0.0, 0.0, nan)
    # A NaN input makes every output that depends on it NaN; z does not depend on longitude
    # and longitude does not depend on z.
    assert np.isnan(r[0]).all() and np.isnan(r[2]).all()
    assert np.isnan(r[1, :2]).all() and np.isfinite(r[1, 2])
    lat, lon, alt = g
    assert np.isnan(lat).all() and np.isnan(alt).all()
    assert np.isnan(lon[[0, 1, 3]]).all() and np.isfinite(lon[2])
    assert np.isnan(az[0]).all() and np.isnan(el[0]).all() and np.isnan(rng_km[0]).all()
    assert np.isnan(az[1, 1:]).all() and np.isnan(el[1, 1:]).all()
    assert np.isnan(rng_km[1, 1:]).all()
    assert np.isfinite([az[1, 0], el[1, 0], rng_km[1, 0]]).all()
    assert np.isnan([az_s, el_s, rng_s]).all()


def test_public_api_exports_the_frame_functions():
    assert leotwin.geodetic_to_ecef is geodetic_to_ecef
    assert leotwin.ecef_to_geodetic is ecef_to_geodetic
    assert leotwin.look_angles is look_angles
