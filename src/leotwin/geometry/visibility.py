"""Which satellites each ground site sees above its elevation mask.

Candidates are pruned geometrically with a KD-tree: a satellite can be at or above the mask
only if its straight-line distance to the site is below the slant range at that elevation
(computed conservatively for the highest satellite and the lowest site of the chunk). One
dual-tree query per time chunk finds every (time, site, sat) candidate; the exact geodetic
elevation is then checked on those pairs only, in one compiled pass that also orders them by
(time, site) (:mod:`leotwin._jit`). No Python loop over sites, satellites or steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr
from scipy.spatial import cKDTree

from .._jit import kernel
from ..constants import WGS84_A_KM
from ..defaults import default
from ..frames import enu_basis, geodetic_to_ecef
from .sites import validate_sites

# The geodetic vertical differs from the geocentric one by < 0.2°: widen the pruning mask.
_PRUNE_MARGIN_DEG = 0.5
_PRUNE_MARGIN_KM = 1.0
#: Points per leaf of the satellites' KD-tree (measured fastest for dual-tree queries here).
_SAT_LEAFSIZE = 16


@dataclass
class Visibility:
    """Sparse visibility: one row per (time, site, sat) at or above the mask, plus counts."""

    table: pd.DataFrame  # time, site, sat, elevation_deg, range_km
    count: xr.DataArray  # (time, site) number of satellites at or above the mask
    min_elevation_deg: float


def max_slant_range_km(r_sat_km: float, r_site_km: float, elevation_deg: float) -> float:
    """Slant range to a satellite at geocentric radius ``r_sat_km`` seen at ``elevation_deg``
    from a site at geocentric radius ``r_site_km`` (spherical geometry, law of cosines)."""
    e = np.radians(elevation_deg)
    return float(np.sqrt(r_sat_km**2 - (r_site_km * np.cos(e)) ** 2) - r_site_km * np.sin(e))


@dataclass
class SatPoints:
    """The valid satellite positions of one chunk and their KD-tree, shareable between
    :func:`visible_pairs` calls over different site sets (see :func:`sat_points`)."""

    n_time: int
    n_sat: int
    ok: np.ndarray  # flat (time * n_sat + sat) index of each point
    pts: np.ndarray  # (n_points, 3) ECEF km
    tree: cKDTree | None
    r_max_km: float


def sat_points(r_sat_ecef_km: np.ndarray, valid: np.ndarray) -> SatPoints:
    """Valid, finite satellite positions of a chunk ``(n_time, n_sat, 3)`` and their tree."""
    n_t, n_sat, _ = r_sat_ecef_km.shape
    flat = r_sat_ecef_km.reshape(-1, 3)
    ok = np.flatnonzero(valid.reshape(-1) & np.isfinite(flat).all(axis=1))
    if ok.size == 0:
        return SatPoints(n_t, n_sat, ok, np.empty((0, 3)), None, 0.0)
    pts = np.ascontiguousarray(flat[ok])
    # A tree built by the sliding midpoint rule (no median search, nodes not shrunk): half
    # the build time and as fast to query for these evenly spread points.
    tree = cKDTree(pts, leafsize=_SAT_LEAFSIZE, balanced_tree=False, compact_nodes=False)
    return SatPoints(n_t, n_sat, ok, pts, tree,
                     float(np.sqrt((pts**2).sum(axis=1).max())))


def visible_pairs(r_sat_ecef_km: np.ndarray, valid: np.ndarray, site_ecef_km: np.ndarray,
                  site_enu: np.ndarray, min_elevation_deg: float, *, site_tree: cKDTree | None
                  = None, sats: SatPoints | None = None):
    """Array core of :func:`visible` for one chunk.

    ``r_sat_ecef_km`` ``(n_time, n_sat, 3)``, ``valid`` ``(n_time, n_sat)`` bool,
    ``site_ecef_km`` ``(n_site, 3)``, ``site_enu`` ``(n_site, 3, 3)`` (:func:`enu_basis`).
    ``sats`` (optional): :func:`sat_points` of the same ``r_sat_ecef_km`` and ``valid``, when
    several site sets are tested against one chunk (the satellites' tree is built once).
    Returns ``(t, site, sat, elevation_deg, range_km)`` index and value arrays, sorted by
    time then site (within a site, in a deterministic order).
    """
    if sats is None:
        sats = sat_points(r_sat_ecef_km, valid)
    n_t, n_sat = sats.n_time, sats.n_sat
    n_site = site_ecef_km.shape[0]
    ok, pts = sats.ok, sats.pts
    empty_i = np.empty(0, np.int64)
    if ok.size == 0 or n_site == 0:
        return empty_i, empty_i, empty_i, np.empty(0), np.empty(0)
    r_sat_max = sats.r_max_km
    r_site_min = float(np.sqrt((site_ecef_km**2).sum(axis=1).min()))
    if r_sat_max <= r_site_min:
        return empty_i, empty_i, empty_i, np.empty(0), np.empty(0)
    radius = max_slant_range_km(r_sat_max, r_site_min,
                                max(min_elevation_deg - _PRUNE_MARGIN_DEG, -90.0))
    radius += _PRUNE_MARGIN_KM
    tree = site_tree if site_tree is not None else cKDTree(site_ecef_km)
    m = tree.sparse_distance_matrix(sats.tree, radius, output_type="ndarray")
    pt_t, pt_sat = np.divmod(ok, n_sat)
    up_dot_site = (site_enu[:, 2, :] * site_ecef_km).sum(axis=1)
    t, site, sat, sin_el, range_km = _elevation_pairs(
        m["i"], m["j"], m["v"], site_enu, up_dot_site, pts,
        float(np.sin(np.radians(min_elevation_deg))), pt_t, pt_sat, n_t, n_site)
    # Vectorized here: a scalar arcsin in the kernel costs 5x.
    elevation_deg = np.degrees(np.arcsin(np.clip(sin_el, -1.0, 1.0)))
    near_zenith = np.flatnonzero(sin_el > 0.99)  # arcsin loses precision there: use atan2
    if near_zenith.size:
        iz = site[near_zenith]
        jz = np.searchsorted(ok, t[near_zenith] * n_sat + sat[near_zenith])  # rows of pts
        enu = np.einsum("pkx,px->pk", site_enu[iz], pts[jz] - site_ecef_km[iz])
        elevation_deg[near_zenith] = np.degrees(np.arctan2(enu[:, 2], np.hypot(enu[:, 0],
                                                                                enu[:, 1])))
    return t, site, sat, elevation_deg, range_km


@kernel
def _elevation_pairs(i, j, d, site_enu, up_dot_site, pts, sin_min, pt_t, pt_sat, n_t, n_site):
    """The candidates ``(site i, point j, range d)`` at or above the mask (``sin_min``) as
    ``(t, site, sat, sin_elevation, range_km)``, ordered by (time, site) and, within a site,
    in the candidates' order (two stable counting sorts)."""
    n = i.size
    sel = np.empty(n, np.int64)
    sin_el = np.empty(n)
    m = 0
    for q in range(n):
        a, b = i[q], j[q]
        # sin(elevation) = up · (r_sat − r_site) / range
        s = -up_dot_site[a]
        s += pts[b, 0] * site_enu[a, 2, 0]
        s += pts[b, 1] * site_enu[a, 2, 1]
        s += pts[b, 2] * site_enu[a, 2, 2]
        s /= d[q]
        if s >= sin_min:
            sel[m] = q
            sin_el[m] = s
            m += 1
    start = np.zeros(n_site + 1, np.int64)
    for q in range(m):
        start[i[sel[q]] + 1] += 1
    for a in range(n_site):
        start[a + 1] += start[a]
    order = np.empty(m, np.int64)
    for q in range(m):
        a = i[sel[q]]
        order[start[a]] = q
        start[a] += 1
    if n_t > 1:
        start = np.zeros(n_t + 1, np.int64)
        for q in range(m):
            start[pt_t[j[sel[q]]] + 1] += 1
        for k in range(n_t):
            start[k + 1] += start[k]
        by_time = np.empty(m, np.int64)
        for r in range(m):
            k = pt_t[j[sel[order[r]]]]
            by_time[start[k]] = order[r]
            start[k] += 1
        order = by_time
    t_out = np.empty(m, np.int64)
    site_out = np.empty(m, np.int64)
    sat_out = np.empty(m, np.int64)
    sin_out = np.empty(m)
    rng_out = np.empty(m)
    for r in range(m):
        q = order[r]
        p = sel[q]
        b = j[p]
        t_out[r] = pt_t[b]
        site_out[r] = i[p]
        sat_out[r] = pt_sat[b]
        sin_out[r] = sin_el[q]
        rng_out[r] = d[p]
    return t_out, site_out, sat_out, sin_out, rng_out


#: Candidate pairs per chunk: arrays of this size (a few MB each) stay in cache while they are
#: filtered, gathered and sorted; measured fastest here (10,000 sites x 4,408 satellites).
_PAIRS_PER_CHUNK = 300_000
#: Satellite positions per chunk, bounding the KD-tree and memory for small site sets.
_POINTS_PER_CHUNK = 2_000_000


def _auto_chunk_steps(n_site: int, n_sat: int, mask_deg: float, r_sat_km: float,
                      pairs_per_chunk: int = _PAIRS_PER_CHUNK) -> int:
    """Time steps per chunk so a chunk yields about ``pairs_per_chunk`` candidates."""
    r_e = WGS84_A_KM
    e = np.radians(max(mask_deg, 0.0))
    central = np.arccos(min(1.0, r_e * np.cos(e) / max(r_sat_km, r_e))) - e  # cap half-angle
    expected = max(1.0, n_site * n_sat * (1.0 - np.cos(central)) / 2.0)
    by_pairs = int(pairs_per_chunk // expected)
    return int(max(1, min(by_pairs, _POINTS_PER_CHUNK // max(n_sat, 1))))


def visible(positions: xr.Dataset, sites, *, min_elevation_deg: float | None = None,
            operational_only: bool = True, chunk_steps: int | None = None) -> Visibility:
    """For every time step and site, the satellites at or above ``min_elevation_deg``.

    ``positions`` is a :func:`leotwin.propagate` Dataset; ``sites`` a table with ``site``,
    ``lat_deg``, ``lon_deg`` and optionally ``alt_m``. With ``operational_only`` (default) only
    satellites flagged ``operational`` count. Elevations are geodetic (WGS84 normal) and exact
    for every returned row; pruning only discards pairs that cannot reach the mask.
    ``chunk_steps`` (default: automatic, about 300,000 candidate pairs per chunk) trades
    memory and cache locality; it does not change the result.
    Returns a :class:`Visibility` with a ``table`` sorted by time and site (``time, site, sat,
    elevation_deg, range_km``) and ``count`` ``(time, site)``.
    """
    mask = default("terminal_min_elevation_deg") if min_elevation_deg is None else float(
        min_elevation_deg)
    if not -90.0 <= mask <= 90.0:
        raise ValueError(f"min_elevation_deg must be within -90..90, got {min_elevation_deg!r}")
    sites = validate_sites(sites)
    lat, lon, alt = (sites[c].to_numpy() for c in ("lat_deg", "lon_deg", "alt_m"))
    site_ecef = geodetic_to_ecef(lat, lon, alt)
    site_enu = enu_basis(lat, lon)
    tree = cKDTree(site_ecef)
    r_all = positions["r_ecef_km"]
    times = positions["time"].to_numpy()
    valid_all = (positions["operational"].to_numpy() if operational_only
                 and "operational" in positions else np.ones(r_all.shape[:2], dtype=bool))
    n_t = times.size
    if chunk_steps is not None and int(chunk_steps) < 1:
        raise ValueError(f"chunk_steps must be >= 1, got {chunk_steps!r}")
    if chunk_steps is None:
        r_max = float(np.nanmax(np.linalg.norm(r_all[0].to_numpy(), axis=-1), initial=0.0))
        chunk_steps = _auto_chunk_steps(len(sites), r_all.shape[1], mask, r_max)
    parts = []
    count = np.zeros((n_t, len(sites)), dtype=np.int32)
    for a in range(0, n_t, max(1, int(chunk_steps))):  # cache-sized chunks, see above
        b = min(a + chunk_steps, n_t)
        r = np.asarray(r_all[a:b].to_numpy(), dtype=np.float64)
        t_idx, site_idx, sat_idx, el, rng = visible_pairs(
            r, valid_all[a:b], site_ecef, site_enu, mask, site_tree=tree)
        count[a:b] = np.bincount(t_idx * len(sites) + site_idx,
                                 minlength=(b - a) * len(sites)).reshape(b - a, len(sites))
        parts.append((t_idx + a, site_idx, sat_idx, el, rng))
    t_idx, site_idx, sat_idx, el, rng = (np.concatenate(x) for x in zip(*parts, strict=True))
    table = pd.DataFrame(copy=False, data={
        "time": times[t_idx],
        "site": sites["site"].to_numpy()[site_idx],
        "sat": positions["sat"].to_numpy()[sat_idx],
        "elevation_deg": el,
        "range_km": rng,
    })
    table.attrs["units"] = {"elevation_deg": "deg", "range_km": "km"}
    count_da = xr.DataArray(count, dims=("time", "site"),
                            coords={"time": times, "site": sites["site"].to_numpy()},
                            name="count", attrs={"min_elevation_deg": mask,
                                                 "description": "satellites at or above mask"})
    return Visibility(table=table, count=count_da, min_elevation_deg=mask)


def coverage_summary(vis: Visibility) -> pd.DataFrame:
    """Per site: satellites in view (min / mean / max over time) and seconds with none.

    A step with no satellite counts for the time until the next step (the last step counts as
    one median step).
    """
    count = vis.count
    times = count["time"].to_numpy()
    if times.size > 1:
        dt_s = np.diff(times).astype("int64") / 1e9
        dt_s = np.r_[dt_s, np.median(dt_s)]
    else:
        dt_s = np.zeros(1)
    c = count.to_numpy()
    none_s = ((c == 0) * dt_s[:, None]).sum(axis=0)
    return pd.DataFrame({
        "site": count["site"].to_numpy(),
        "min_visible": c.min(axis=0),
        "mean_visible": c.mean(axis=0),
        "max_visible": c.max(axis=0),
        "seconds_with_none": none_s,
    })
