"""Which satellites each ground site sees above its elevation mask.

Candidates are pruned geometrically with a KD-tree: a satellite can be at or above the mask
only if its straight-line distance to the site is below the slant range at that elevation
(computed conservatively for the highest satellite and the lowest site of the chunk). One
dual-tree query per time chunk finds every (time, site, sat) candidate; the exact geodetic
elevation is then checked on those pairs only. No loop over sites, satellites or steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr
from scipy.spatial import cKDTree

from ..defaults import default
from ..frames import enu_basis, geodetic_to_ecef
from .sites import validate_sites

# The geodetic vertical differs from the geocentric one by < 0.2°: widen the pruning mask.
_PRUNE_MARGIN_DEG = 0.5
_PRUNE_MARGIN_KM = 1.0


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


def visible_pairs(r_sat_ecef_km: np.ndarray, valid: np.ndarray, site_ecef_km: np.ndarray,
                  site_enu: np.ndarray, min_elevation_deg: float, *, site_tree: cKDTree | None
                  = None):
    """Array core of :func:`visible` for one chunk.

    ``r_sat_ecef_km`` ``(n_time, n_sat, 3)``, ``valid`` ``(n_time, n_sat)`` bool,
    ``site_ecef_km`` ``(n_site, 3)``, ``site_enu`` ``(n_site, 3, 3)`` (:func:`enu_basis`).
    Returns ``(t, site, sat, elevation_deg, range_km)`` index and value arrays, sorted by
    time, site, sat.
    """
    n_t, n_sat, _ = r_sat_ecef_km.shape
    n_site = site_ecef_km.shape[0]
    flat = r_sat_ecef_km.reshape(-1, 3)
    ok = np.flatnonzero(valid.reshape(-1) & np.isfinite(flat).all(axis=1))
    empty_i = np.empty(0, np.int64)
    if ok.size == 0:
        return empty_i, empty_i, empty_i, np.empty(0), np.empty(0)
    pts = flat[ok]
    r_sat_max = float(np.sqrt((pts**2).sum(axis=1).max()))
    r_site_min = float(np.sqrt((site_ecef_km**2).sum(axis=1).min()))
    if r_sat_max <= r_site_min:
        return empty_i, empty_i, empty_i, np.empty(0), np.empty(0)
    radius = max_slant_range_km(r_sat_max, r_site_min,
                                max(min_elevation_deg - _PRUNE_MARGIN_DEG, -90.0))
    radius += _PRUNE_MARGIN_KM
    tree = site_tree if site_tree is not None else cKDTree(site_ecef_km)
    m = tree.sparse_distance_matrix(cKDTree(pts), radius, output_type="ndarray")
    i = np.ascontiguousarray(m["i"]).astype(np.int64)
    j = ok[np.ascontiguousarray(m["j"])]
    d = np.ascontiguousarray(m["v"])
    site_up = np.ascontiguousarray(site_enu[:, 2, :].T)  # (3, n_site), gathered per component
    up_dot_site = (site_enu[:, 2, :] * site_ecef_km).sum(axis=1)
    s = up_dot_site[i]
    np.negative(s, out=s)
    for k in range(3):
        s += np.ascontiguousarray(flat[:, k])[j] * site_up[k][i]
    s /= d  # sine of the geodetic elevation
    keep = np.flatnonzero(s >= np.sin(np.radians(min_elevation_deg)))
    t_idx, sat_idx = np.divmod(j[keep], n_sat)
    site_idx = i[keep]
    order = _lexsort3(t_idx, site_idx, sat_idx, (n_t, n_site, n_sat))
    t_idx, site_idx, sat_idx = t_idx[order], site_idx[order], sat_idx[order]
    keep = keep[order]
    sin_el = s[keep]
    elevation_deg = np.degrees(np.arcsin(np.clip(sin_el, -1.0, 1.0)))
    near_zenith = np.flatnonzero(sin_el > 0.99)  # arcsin loses precision there: use atan2
    if near_zenith.size:
        jj, ii = j[keep][near_zenith], i[keep][near_zenith]
        enu = np.einsum("pkx,px->pk", site_enu[ii], flat[jj] - site_ecef_km[ii])
        elevation_deg[near_zenith] = np.degrees(np.arctan2(enu[:, 2], np.hypot(enu[:, 0],
                                                                                enu[:, 1])))
    return t_idx, site_idx, sat_idx, elevation_deg, d[keep]


def _lexsort3(a: np.ndarray, b: np.ndarray, c: np.ndarray, sizes: tuple[int, int, int]):
    """Order sorting by (a, b, c). Uses three stable 16-bit radix passes (linear time) when
    every key fits, else one comparison sort of a combined key."""
    if max(sizes) <= np.iinfo(np.uint16).max:
        order = np.argsort(c.astype(np.uint16), kind="stable")
        order = order[np.argsort(b[order].astype(np.uint16), kind="stable")]
        return order[np.argsort(a[order].astype(np.uint16), kind="stable")]
    return np.argsort((a * sizes[1] + b) * sizes[2] + c, kind="stable")


def visible(positions: xr.Dataset, sites, *, min_elevation_deg: float | None = None,
            operational_only: bool = True, chunk_steps: int = 32) -> Visibility:
    """For every time step and site, the satellites at or above ``min_elevation_deg``.

    ``positions`` is a :func:`leotwin.propagate` Dataset; ``sites`` a table with ``site``,
    ``lat_deg``, ``lon_deg`` and optionally ``alt_m``. With ``operational_only`` (default) only
    satellites flagged ``operational`` count. Elevations are geodetic (WGS84 normal) and exact
    for every returned row; pruning only discards pairs that cannot reach the mask.
    Returns a :class:`Visibility` with a sorted ``table`` (``time, site, sat, elevation_deg,
    range_km``) and ``count`` ``(time, site)``.
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
    parts = []
    count = np.zeros((n_t, len(sites)), dtype=np.int32)
    for a in range(0, n_t, max(1, int(chunk_steps))):  # bounded-memory chunks
        b = min(a + chunk_steps, n_t)
        r = np.asarray(r_all[a:b].to_numpy(), dtype=np.float64)
        t_idx, site_idx, sat_idx, el, rng = visible_pairs(
            r, valid_all[a:b], site_ecef, site_enu, mask, site_tree=tree)
        count[a:b] = np.bincount(t_idx * len(sites) + site_idx,
                                 minlength=(b - a) * len(sites)).reshape(b - a, len(sites))
        parts.append((t_idx + a, site_idx, sat_idx, el, rng))
    t_idx, site_idx, sat_idx, el, rng = (np.concatenate(x) for x in zip(*parts, strict=True))
    table = pd.DataFrame({
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
