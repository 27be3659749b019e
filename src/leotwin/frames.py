"""Reference frames: TEME → ECEF, geodetic ↔ ECEF (WGS84), topocentric look angles.

Conventions
-----------
* TEME → ECEF follows Vallado et al. 2006 (AIAA 2006-6753, Appendix C, ``teme2ecef``): a single
  rotation about z by the Greenwich Mean Sidereal Time of IAU 1982 (``gstime``), with UT1 taken
  equal to UTC and no polar motion. The resulting "ECEF" is therefore the pseudo Earth-fixed frame
  PEF; ignoring UT1-UTC (< 0.9 s) moves a ground-track point by at most ~0.4 km at the equator,
  and polar motion (< 0.5") by ~15 m at the surface. Velocities include the ``-ω × r`` term.
* Geodetic coordinates are on the WGS84 ellipsoid; latitudes are geodetic (normal to the
  ellipsoid), altitudes are heights above the ellipsoid in metres.
* Every function broadcasts over leading dimensions and keeps the last axis for x, y, z.
"""

from __future__ import annotations

import numpy as np

from .constants import (
    C_KM_S,
    EARTH_ROTATION_RAD_S,
    JD_J2000,
    MEAN_EARTH_RADIUS_KM,
    SECONDS_PER_DAY,
    WGS84_A_KM,
    WGS84_B_KM,
    WGS84_E2,
)
from .timescale import split_julian_date


def gmst82_rad(jd_ut1: np.ndarray, fraction_ut1: np.ndarray | float = 0.0) -> np.ndarray:
    """Greenwich Mean Sidereal Time (IAU 1982, Vallado's ``gstime``) in radians, in [0, 2π).

    ``jd_ut1 + fraction_ut1`` is the UT1 Julian date; passing the day fraction separately keeps
    the angle precise to well below a microradian.
    """
    jd_ut1 = np.asarray(jd_ut1, dtype=np.float64)
    fraction_ut1 = np.asarray(fraction_ut1, dtype=np.float64)
    t = (jd_ut1 - JD_J2000 + fraction_ut1) / 36525.0
    g_s = 67310.54841 + (8640184.812866 + (0.093104 + (-6.2e-6) * t) * t) * t
    # The 876600 h term is whole days plus the Earth-rotation part; take it from the split date.
    turns = (jd_ut1 % 1.0 + fraction_ut1 % 1.0 + (g_s / SECONDS_PER_DAY) % 1.0) % 1.0
    return turns * (2.0 * np.pi)


def teme_to_ecef(r_teme_km: np.ndarray, v_teme_km_s: np.ndarray | None, times: np.ndarray):
    """Rotate TEME vectors to ECEF (PEF, see module notes).

    ``r_teme_km`` has shape ``(n_time, ..., 3)``; ``times`` (UTC ``datetime64``) has shape
    ``(n_time,)``. Returns ``(r_ecef_km, v_ecef_km_s)``; velocity is ``None`` when not given.
    """
    r = np.asarray(r_teme_km, dtype=np.float64)
    jd, fr = split_julian_date(np.asarray(times))
    theta = gmst82_rad(jd, fr)
    r_ecef = np.empty_like(r)
    if v_teme_km_s is None:
        rotate_teme_to_ecef(r, None, np.cos(theta), np.sin(theta), r_ecef, None)
        return r_ecef, None
    v = np.asarray(v_teme_km_s, dtype=np.float64)
    v_ecef = np.empty_like(v)
    rotate_teme_to_ecef(r, v, np.cos(theta), np.sin(theta), r_ecef, v_ecef)
    return r_ecef, v_ecef


def rotate_teme_to_ecef(r: np.ndarray, v: np.ndarray | None, cos_gmst: np.ndarray,
                        sin_gmst: np.ndarray, out_r: np.ndarray, out_v: np.ndarray | None) -> None:
    """Array core of :func:`teme_to_ecef`: write ECEF into ``out_r``/``out_v``.

    ``r``, ``v`` and the outputs have shape ``(n_time, ..., 3)`` (any strides, e.g. a
    transposed view of SGP4's satellite-major output); ``cos_gmst``/``sin_gmst`` ``(n_time,)``.
    ECEF velocity is ``R·v − ω × r_ecef`` (Vallado's ``teme2ecef``).
    """
    shape = (-1,) + (1,) * (r.ndim - 2)
    c = cos_gmst.reshape(shape)
    s = sin_gmst.reshape(shape)
    rx, ry = r[..., 0], r[..., 1]
    out_r[..., 0] = c * rx + s * ry
    out_r[..., 1] = c * ry - s * rx
    out_r[..., 2] = r[..., 2]
    if v is None:
        return
    w = EARTH_ROTATION_RAD_S
    vx, vy = v[..., 0], v[..., 1]
    out_v[..., 0] = c * vx + s * vy + w * out_r[..., 1]
    out_v[..., 1] = c * vy - s * vx - w * out_r[..., 0]
    out_v[..., 2] = v[..., 2]


def geodetic_to_ecef(lat_deg, lon_deg, alt_m) -> np.ndarray:
    """WGS84 geodetic latitude/longitude (degrees) and height (m) → ECEF position in km.

    Broadcasts its inputs; returns shape ``broadcast_shape + (3,)``.
    """
    lat = np.radians(np.asarray(lat_deg, dtype=np.float64))
    lon = np.radians(np.asarray(lon_deg, dtype=np.float64))
    h_km = np.asarray(alt_m, dtype=np.float64) / 1000.0
    sin_lat = np.sin(lat)
    n_km = WGS84_A_KM / np.sqrt(1.0 - WGS84_E2 * sin_lat**2)
    rho = (n_km + h_km) * np.cos(lat)
    x = rho * np.cos(lon)
    y = rho * np.sin(lon)
    z = (n_km * (1.0 - WGS84_E2) + h_km) * sin_lat
    return np.stack(np.broadcast_arrays(x, y, z), axis=-1)


def ecef_to_geodetic(r_ecef_km: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ECEF position (km, last axis xyz) → WGS84 ``(lat_deg, lon_deg, alt_m)``.

    Heikkinen's closed-form solution (Heikkinen 1982; see Zhu 1994, IEEE TAES 30(3)), exact to
    well below a millimetre for points from a few km below the surface out to GEO. NaN in, NaN out.
    """
    r = np.asarray(r_ecef_km, dtype=np.float64)
    x, y, z = r[..., 0], r[..., 1], r[..., 2]
    a, b, e2 = WGS84_A_KM, WGS84_B_KM, WGS84_E2
    ep2 = (a * a - b * b) / (b * b)
    p = np.hypot(x, y)
    zz = z * z
    f = 54.0 * b * b * zz
    g = p * p + (1.0 - e2) * zz - e2 * (a * a - b * b)
    c = e2 * e2 * f * p * p / (g * g * g)
    s = np.cbrt(1.0 + c + np.sqrt(c * c + 2.0 * c))
    k = s + 1.0 / s + 1.0
    pp = f / (3.0 * k * k * g * g)
    q = np.sqrt(1.0 + 2.0 * e2 * e2 * pp)
    # Next to the polar axis the radicand tends to 0 and rounding can make it slightly negative.
    r0 = -(pp * e2 * p) / (1.0 + q) + np.sqrt(np.maximum(
        0.5 * a * a * (1.0 + 1.0 / q) - pp * (1.0 - e2) * zz / (q * (1.0 + q)) - 0.5 * pp * p * p,
        0.0))
    t = (p - e2 * r0) ** 2
    u = np.sqrt(t + zz)
    v = np.sqrt(t + (1.0 - e2) * zz)
    z0 = b * b * z / (a * v)
    alt_km = u * (1.0 - b * b / (a * v))
    lat = np.arctan2(z + ep2 * z0, p)
    lon = np.arctan2(y, x)
    return np.degrees(lat), np.degrees(lon), alt_km * 1000.0


def enu_basis(lat_deg, lon_deg) -> np.ndarray:
    """Unit vectors east, north, up at geodetic sites: shape ``(..., 3 vectors, 3 xyz)``."""
    lat = np.radians(np.asarray(lat_deg, dtype=np.float64))
    lon = np.radians(np.asarray(lon_deg, dtype=np.float64))
    sl, cl = np.sin(lat), np.cos(lat)
    so, co = np.sin(lon), np.cos(lon)
    zero = np.zeros_like(sl * so)
    east = np.stack(np.broadcast_arrays(-so, co, zero), axis=-1)
    north = np.stack(np.broadcast_arrays(-sl * co, -sl * so, cl), axis=-1)
    up = np.stack(np.broadcast_arrays(cl * co, cl * so, sl), axis=-1)
    return np.stack([east, north, up], axis=-2)


def look_angles(r_sat_ecef_km: np.ndarray, lat_deg, lon_deg, alt_m):
    """Azimuth (deg, clockwise from north, [0, 360)), elevation (deg) and range (km).

    ``r_sat_ecef_km`` has shape ``(..., 3)``; sites are scalars or 1-D arrays of ``n_site``.
    With scalar sites the result has the leading shape of the satellites; with arrays it has
    ``(..., n_site)``.
    """
    r = np.asarray(r_sat_ecef_km, dtype=np.float64)
    scalar_site = np.ndim(lat_deg) == 0 and np.ndim(lon_deg) == 0 and np.ndim(alt_m) == 0
    lat = np.atleast_1d(np.asarray(lat_deg, dtype=np.float64))
    lon = np.atleast_1d(np.asarray(lon_deg, dtype=np.float64))
    alt = np.atleast_1d(np.asarray(alt_m, dtype=np.float64))
    lat, lon, alt = np.broadcast_arrays(lat, lon, alt)
    if lat.ndim != 1:
        raise ValueError("sites must be scalars or 1-D arrays of equal length")
    site = geodetic_to_ecef(lat, lon, alt)  # (n_site, 3)
    basis = enu_basis(lat, lon)  # (n_site, 3, 3)
    d = r[..., None, :] - site  # (..., n_site, 3)
    enu = np.einsum("sij,...sj->...si", basis, d)
    e, n, u = enu[..., 0], enu[..., 1], enu[..., 2]
    range_km = np.sqrt(e * e + n * n + u * u)
    elevation_deg = np.degrees(np.arctan2(u, np.hypot(e, n)))
    azimuth_deg = np.degrees(np.arctan2(e, n)) % 360.0
    if scalar_site:
        return azimuth_deg[..., 0], elevation_deg[..., 0], range_km[..., 0]
    return azimuth_deg, elevation_deg, range_km


def light_time_ms(distance_km):
    """One-way light time in vacuum, ms, for a distance in km."""
    return np.asarray(distance_km, dtype=np.float64) / C_KM_S * 1e3


def great_circle_km(lat1_deg, lon1_deg, lat2_deg, lon2_deg) -> np.ndarray:
    """Great-circle distance on the mean-radius sphere (haversine), km; broadcasts.

    For fibre-route lengths and light-time lower bounds, where a sphere is the convention; use
    ECEF chords (``geodetic_to_ecef``) for line-of-sight geometry.
    """
    p1, p2 = np.radians(np.asarray(lat1_deg, float)), np.radians(np.asarray(lat2_deg, float))
    dl = np.radians(np.asarray(lon2_deg, float) - np.asarray(lon1_deg, float))
    h = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2.0 * MEAN_EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))
