"""Laser inter-satellite links in a +Grid per shell.

Topology: every satellite links to its two neighbours in its orbital plane (previous and next
in argument of latitude) and to the nearest satellite (in argument of latitude) of the next
plane east; a satellite chosen by several satellites of the plane west keeps only the closest,
so no satellite has more than four links (two intra-plane, two cross-plane). Planes are
inferred from the satellites' state vectors (clustering of the node longitude), so the same
code serves Walker shells and real TLE constellations. Links never join different shells.

Feasibility per time step: the line of sight must clear the Earth (WGS84 ellipsoid) plus an
atmosphere margin, and the range must not exceed the maximum ISL range.
"""

from __future__ import annotations

import numpy as np

from .._arrays import run_starts
from .._jit import kernel
from ..constants import EARTH_ROTATION_RAD_S, WGS84_A_KM, WGS84_B_KM
from ..defaults import default
from ..frames import light_time_ms

#: A gap in node longitude larger than this starts a new orbital plane (Gen1 planes are 5–60°
#: apart; satellites of one real plane spread over a few tenths of a degree).
PLANE_GAP_DEG = 1.0


def orbit_angles(r_ecef_km: np.ndarray, v_ecef_km_s: np.ndarray):
    """Node longitude (deg, Earth-fixed, [0, 360)) and argument of latitude (deg, [0, 360)) of
    each satellite from an ECEF state; NaN in, NaN out. Shapes ``(..., 3)`` → ``(...)``."""
    r = np.asarray(r_ecef_km, dtype=np.float64)
    v = np.asarray(v_ecef_km_s, dtype=np.float64)
    w = np.array([0.0, 0.0, EARTH_ROTATION_RAD_S])
    v_inertial = v + np.cross(w, r)  # inertial velocity expressed in the Earth-fixed axes
    h = np.cross(r, v_inertial)
    h /= np.linalg.norm(h, axis=-1, keepdims=True)
    node = np.arctan2(h[..., 0], -h[..., 1])  # h = (sin i sin Ω, −sin i cos Ω, cos i)
    n_vec = np.stack([np.cos(node), np.sin(node), np.zeros_like(node)], axis=-1)
    m_vec = np.cross(h, n_vec)
    u = np.arctan2((r * m_vec).sum(-1), (r * n_vec).sum(-1))
    return np.degrees(node) % 360.0, np.degrees(u) % 360.0


def infer_planes(node_deg: np.ndarray, shell: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Plane id per satellite (−1 where not ``valid``): within each shell, satellites sorted by
    node longitude split into planes at gaps above :data:`PLANE_GAP_DEG` (circularly)."""
    n = node_deg.size
    plane = np.full(n, -1, dtype=np.int64)
    shell_codes, shell_idx = np.unique(np.asarray(shell).astype(str), return_inverse=True)
    ok = np.flatnonzero(valid & np.isfinite(node_deg))
    if ok.size == 0:
        return plane
    # Rotate each shell's node longitudes so its largest gap sits at 0/360 (no plane is split).
    s = shell_idx[ok]
    order = np.lexsort((node_deg[ok], s))
    sid, nd = s[order], node_deg[ok][order]
    start = run_starts(sid)
    first = np.flatnonzero(start)
    last = np.r_[first[1:], sid.size] - 1
    gap = np.diff(nd, append=np.nan)
    gap[last] = nd[first] + 360.0 - nd[last]  # wrap-around gap of each shell
    # The start of each shell's cycle: the element after its largest gap.
    gap_rank = np.lexsort((-gap, sid))
    largest = gap_rank[run_starts(sid[gap_rank])]
    cycle_start = np.where(largest == last[np.searchsorted(first, largest, side="right") - 1],
                           first[np.searchsorted(first, largest, side="right") - 1], largest + 1)
    shift = np.zeros(len(shell_codes))
    shift[sid[cycle_start]] = nd[cycle_start]
    rel = (nd - shift[sid]) % 360.0
    order2 = np.lexsort((rel, sid))
    sid2, rel2 = sid[order2], rel[order2]
    new_plane = np.r_[True, (sid2[1:] != sid2[:-1]) | (np.diff(rel2) > PLANE_GAP_DEG)]
    plane[ok[order][order2]] = np.cumsum(new_plane) - 1
    return plane


def plus_grid_edges(r_ecef_km: np.ndarray, v_ecef_km_s: np.ndarray, shell: np.ndarray,
                    valid: np.ndarray) -> np.ndarray:
    """+Grid links ``(n_edge, 2)`` (satellite indices, each pair once, ``a < b``) at one time.

    ``r_ecef_km``/``v_ecef_km_s`` ``(n_sat, 3)``, ``shell`` labels ``(n_sat,)``, ``valid``
    bool ``(n_sat,)`` (e.g. operational). Whether a link is usable at a given step is decided
    by :func:`isl_feasible`.
    """
    node, u = orbit_angles(r_ecef_km, v_ecef_km_s)
    plane = infer_planes(node, shell, np.asarray(valid, bool))
    sats = np.flatnonzero(plane >= 0)
    if sats.size < 2:
        return np.empty((0, 2), dtype=np.int64)
    order = sats[np.lexsort((u[sats], plane[sats]))]
    p, uu = plane[order], u[order]
    first_of = np.flatnonzero(run_starts(p))
    count = np.diff(np.r_[first_of, p.size])
    plane_ids = p[first_of]
    pos_first = np.searchsorted(plane_ids, p)  # plane ordinal of each sorted satellite
    start, size = first_of[pos_first], count[pos_first]
    k = np.arange(p.size) - start
    # Intra-plane ring: each satellite to the next in argument of latitude.
    nxt = start + (k + 1) % size
    intra = np.stack([order, order[nxt]], axis=1)[size > 1]

    # Cross-plane: the next plane of the same shell, ordered by mean node longitude.
    shell_str = np.asarray(shell).astype(str)
    plane_shell = shell_str[order[first_of]]
    plane_node = _circular_mean_deg(node[order], pos_first, plane_ids.size)
    porder = np.lexsort((plane_node, plane_shell))
    same_next = np.r_[plane_shell[porder][1:] == plane_shell[porder][:-1], False]
    next_plane = np.full(plane_ids.size, -1)
    next_plane[porder[:-1][same_next[:-1]]] = porder[1:][same_next[:-1]]
    # Close the ring of planes when the last-to-first gap is like the others (Walker delta).
    sh_first = np.flatnonzero(run_starts(plane_shell[porder]))
    sh_last = np.r_[sh_first[1:], porder.size] - 1
    for a, b in zip(sh_first, sh_last, strict=True):  # over shells (≤ a handful)
        if b > a:
            nodes = plane_node[porder[a:b + 1]]
            gaps = np.diff(nodes)
            wrap = nodes[0] + 360.0 - nodes[-1]
            if wrap <= 1.5 * np.median(gaps):
                next_plane[porder[b]] = porder[a]
    has_next = next_plane[pos_first] >= 0
    src = np.flatnonzero(has_next)
    tgt_plane = next_plane[pos_first[src]]
    t_start, t_size = first_of[tgt_plane], count[tgt_plane]
    # Nearest argument of latitude in the target plane (circular): check the insertion
    # neighbours and the plane's first and last satellites.
    key = tgt_plane * 360.0 + uu[src]
    ins = np.searchsorted(pos_first * 360.0 + uu, key)
    cands = np.stack([ins - 1, ins, t_start, t_start + t_size - 1], axis=1)
    cands = np.clip(cands, t_start[:, None], (t_start + t_size - 1)[:, None])
    du = np.abs((uu[cands] - uu[src][:, None] + 180.0) % 360.0 - 180.0)
    best = cands[np.arange(src.size), np.argmin(du, axis=1)]
    # A satellite has one laser terminal facing west: when several choose it, keep the closest.
    dist = np.linalg.norm(r_ecef_km[order[best]] - r_ecef_km[order[src]], axis=-1)
    pick = np.lexsort((dist, best))
    pick = pick[run_starts(best[pick])]
    cross = np.stack([order[src[pick]], order[best[pick]]], axis=1)

    edges = np.concatenate([intra, cross])
    edges = np.sort(edges, axis=1)
    edges = edges[edges[:, 0] != edges[:, 1]]
    return np.unique(edges, axis=0)


def _circular_mean_deg(angle_deg: np.ndarray, group: np.ndarray, n_group: int) -> np.ndarray:
    a = np.radians(angle_deg)
    s = np.bincount(group, np.sin(a), n_group)
    c = np.bincount(group, np.cos(a), n_group)
    return np.degrees(np.arctan2(s, c)) % 360.0


def segment_clears_earth(r_a_km: np.ndarray, r_b_km: np.ndarray,
                         margin_km: float | None = None) -> np.ndarray:
    """True where the straight segment a→b stays above the WGS84 ellipsoid inflated by
    ``margin_km`` (default ``isl_atmosphere_margin_km``). Shapes ``(..., 3)`` → ``(...)``.
    :func:`isl_feasible` applies the same test in its compiled pass (tested equal).

    Stretching z by a/b maps the ellipsoid onto a sphere of radius a, where the closest point
    of a segment to the centre is exact; the margin is applied on that sphere (an error of at
    most f·margin ≈ 0.3 km in the margin).
    """
    margin = default("isl_atmosphere_margin_km") if margin_km is None else float(margin_km)
    scale = np.array([1.0, 1.0, WGS84_A_KM / WGS84_B_KM])
    a = np.asarray(r_a_km) * scale
    b = np.asarray(r_b_km) * scale
    d = b - a
    dd = (d * d).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.clip(-(a * d).sum(-1) / dd, 0.0, 1.0)
    closest = a + t[..., None] * d
    return np.sqrt((closest * closest).sum(-1)) > WGS84_A_KM + margin


def isl_feasible(r_ecef_km: np.ndarray, edges: np.ndarray, *, max_range_km: float | None = None,
                 margin_km: float | None = None, valid: np.ndarray | None = None):
    """Per time and edge: usable, and its length (km) and one-way light delay (ms).

    ``r_ecef_km`` ``(n_time, n_sat, 3)`` (or ``(n_sat, 3)``), ``edges`` ``(n_edge, 2)``;
    ``valid`` ``(n_time, n_sat)`` marks satellites that may carry traffic (operational, not
    failed). Returns ``(usable, length_km, delay_ms)`` each ``(n_time, n_edge)``.
    """
    max_range = default("isl_max_range_km") if max_range_km is None else float(max_range_km)
    margin = default("isl_atmosphere_margin_km") if margin_km is None else float(margin_km)
    r = np.asarray(r_ecef_km, dtype=np.float64)
    edges = np.asarray(edges, np.int64).reshape(-1, 2)
    r3 = r.reshape(-1, *r.shape[-2:])  # (time, sat, 3), one time for (n_sat, 3)
    if edges.size and (edges.min() < 0 or edges.max() >= r3.shape[1]):
        raise ValueError(f"edges name satellites outside 0..{r3.shape[1] - 1}")
    v = (np.ones(r3.shape[:2], bool) if valid is None
         else np.broadcast_to(np.asarray(valid, bool).reshape(-1, r3.shape[1]), r3.shape[:2]))
    usable, length_km = _isl_links(np.ascontiguousarray(r3), edges, np.ascontiguousarray(v),
                                   max_range, WGS84_A_KM / WGS84_B_KM, WGS84_A_KM + margin)
    shape = r.shape[:-2] + (edges.shape[0],)
    length_km = length_km.reshape(shape)
    return usable.reshape(shape), length_km, light_time_ms(length_km)


@kernel
def _isl_links(r, edges, valid, max_range_km, z_scale, clear_radius_km):
    """:func:`isl_feasible` in one pass over (time, edge): length, range, both ends valid,
    and :func:`segment_clears_earth` (the same stretched-sphere test)."""
    n_t, n_e = r.shape[0], edges.shape[0]
    usable = np.zeros((n_t, n_e), np.bool_)
    length = np.empty((n_t, n_e))
    for k in range(n_t):
        for e in range(n_e):
            i, j = edges[e, 0], edges[e, 1]
            dx = r[k, j, 0] - r[k, i, 0]
            dy = r[k, j, 1] - r[k, i, 1]
            dz = r[k, j, 2] - r[k, i, 2]
            d = np.sqrt(dx * dx + dy * dy + dz * dz)
            length[k, e] = d
            if not (d <= max_range_km and valid[k, i] and valid[k, j]):
                continue
            ax, ay, az = r[k, i, 0], r[k, i, 1], r[k, i, 2] * z_scale
            dz = r[k, j, 2] * z_scale - az
            dd = dx * dx + dy * dy + dz * dz
            if not dd > 0.0:  # coincident ends: no segment (numpy's 0/0)
                continue
            t = min(max(-(ax * dx + ay * dy + az * dz) / dd, 0.0), 1.0)
            cx, cy, cz = ax + t * dx, ay + t * dy, az + t * dz
            usable[k, e] = np.sqrt(cx * cx + cy * cy + cz * cz) > clear_radius_km
    return usable, length


def laser_links(positions, *, max_range_km: float | None = None,
                margin_km: float | None = None):
    """The +Grid of a :func:`leotwin.propagate` result as a labelled Dataset: per (time, link)
    ``usable``, ``length_km`` and ``delay_ms``; each link's endpoints as catalog numbers
    (coordinates ``sat_a``, ``sat_b``). The topology is built at the first time step from the
    operational satellites; usability is evaluated at every step."""
    import xarray as xr

    r = positions["r_ecef_km"].to_numpy()
    ok = positions["operational"].to_numpy()
    edges = plus_grid_edges(r[0], positions["v_ecef_km_s"].to_numpy()[0],
                            positions["shell"].to_numpy(), ok[0])
    usable, length_km, delay_ms = isl_feasible(r, edges, max_range_km=max_range_km,
                                               margin_km=margin_km, valid=ok)
    sats = positions["sat"].to_numpy()
    return xr.Dataset(
        {"usable": (("time", "link"), usable),
         "length_km": (("time", "link"), length_km, {"units": "km"}),
         "delay_ms": (("time", "link"), delay_ms, {"units": "ms", "description": "one-way, c"})},
        coords={"time": positions["time"].to_numpy(), "sat_a": ("link", sats[edges[:, 0]]),
                "sat_b": ("link", sats[edges[:, 1]])},
    )
