"""The network at every time step: who serves each terminal, over which path, how fast.

For each step: laser links of the +Grid that are usable, feeder links from every gateway to the
satellites above its mask (at most one per gateway antenna, highest first), fibre from each
gateway to its PoP; one multi-source shortest-path call from all PoPs; then every terminal is
scheduled onto one satellite that has a path, on a fixed slot grid (``slot_s``): at a slot
start by the policy (``max_elevation`` or ``least_loaded``), inside a slot the same satellite
as long as it still has a path. Capacity is allocated per cell and beam afterwards
(:mod:`leotwin.capacity`).

Time steps are processed in a loop because the schedule carries state from one step to the
next (the serving satellite, handovers) and each step needs its own graph; everything inside a
step is vectorized over satellites, gateways and terminals, or one compiled pass over them
(:mod:`leotwin._jit`: a step's schedule and causes, each gateway's antennas). Link geometry
is computed for several steps at once where that is cheaper: laser links per 30-step chunk,
feeder and user links per sub-chunk of about 100,000 candidate pairs (cache-resident; one
satellite KD-tree for both), and the shortest-path graph is assembled from a topology sorted
once per run (:class:`leotwin.routing.graph.StepGraph`).

With attribution, a step needs routes with and without its failures and outages. Variants
that coincide are computed once: without failures or outages at the step all four are one;
with only one of the two, two; and when no healthy path passes through a failed satellite or
ends at a gateway that is down, the healthy routes serve for all (failed satellites only stop
serving); otherwise only the paths below the failed satellites and down gateways are
recomputed (:meth:`~leotwin.routing.graph.StepGraph.reroute`).

The jamming test of the scheduled links (a link budget per link) waits and runs for many
steps in one call, except before a step that continues the previous step's slot (that step
needs the previous one's final serving satellite). Results are the same as computing every
variant in full and testing every step on its own (``tests/test_simulate.py`` pins it), up to
how exact ties between equal-length paths or equal elevations are broken.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import xarray as xr
from scipy.spatial import cKDTree

from .._arrays import run_starts
from .._jit import kernel
from ..defaults import default
from ..frames import enu_basis, geodetic_to_ecef, light_time_ms
from ..geometry.visibility import _auto_chunk_steps, sat_points, visible_pairs
from ..links.isl import isl_feasible, plus_grid_edges
from .graph import SatRoutes, StepGraph

log = logging.getLogger(__name__)

REASONS = ("", "no_satellite", "no_gateway_path")
CAPACITY_POLICIES = ("greedy", "proportional")
#: Steps whose links are computed together: candidate arrays of ~30 steps × 10,000 terminals
#: stay around 100 MB.
_STEPS_PER_CHUNK = 30
#: Candidate user-link pairs per visibility call (see ``network_state``).
_USER_PAIRS_PER_CHUNK = 100_000
MODES = ("isl", "bent_pipe")
#: Route variants with failures or outages by recomputing only the paths that change
#: (:meth:`StepGraph.reroute`); False: a full shortest-path call per variant (the reference).
_REROUTE = True
#: Test the links of several steps for jamming in one call where the schedule allows it
#: (see ``_flush``); False: one call per step (the reference).
_BATCH_JAM = True
#: Schedule and cause bits of a step in one compiled pass (:func:`_fused_step`) under
#: ``max_elevation``; False: the numpy reference (:func:`_choose`, :func:`_step_causes`).
_FUSED_STEP = True
POLICIES = ("max_elevation", "least_loaded")


@dataclass(frozen=True)
class NetworkConfig:
    """Parameters of :func:`network_state`; ``None`` means the value in ``leotwin.DEFAULTS``."""

    mode: str = "isl"
    policy: str = "max_elevation"
    terminal_min_elevation_deg: float | None = None
    slot_s: float | None = None
    processing_delay_ms: float | None = None
    fibre_refractive_index: float | None = None
    fibre_route_factor: float | None = None
    isl_max_range_km: float | None = None
    isl_atmosphere_margin_km: float | None = None
    capacity: bool = True
    capacity_policy: str = "greedy"
    beams_per_satellite: int | None = None
    beam_capacity_mbps: float | None = None
    h3_resolution: int | None = None

    def resolved(self) -> NetworkConfig:
        """A copy with every ``None`` replaced by its default, validated."""
        names = {"terminal_min_elevation_deg", "slot_s", "processing_delay_ms",
                 "fibre_refractive_index", "fibre_route_factor", "isl_max_range_km",
                 "isl_atmosphere_margin_km", "beams_per_satellite", "beam_capacity_mbps",
                 "h3_resolution"}
        values = {n: (default(n) if getattr(self, n) is None else getattr(self, n))
                  for n in names}
        cfg = replace(self, **values)
        if cfg.mode not in MODES:
            raise ValueError(f"config.mode must be one of {MODES}, got {cfg.mode!r}")
        if cfg.policy not in POLICIES:
            raise ValueError(f"config.policy must be one of {POLICIES}, got {cfg.policy!r}")
        if cfg.capacity_policy not in CAPACITY_POLICIES:
            raise ValueError(f"config.capacity_policy must be one of {CAPACITY_POLICIES}, got "
                             f"{cfg.capacity_policy!r}")
        if not cfg.slot_s > 0:
            raise ValueError(f"config.slot_s must be positive, got {cfg.slot_s!r}")
        return cfg


def _sites(df) -> tuple[np.ndarray, np.ndarray, cKDTree]:
    lat, lon, alt = (df[c].to_numpy(dtype=np.float64) for c in ("lat_deg", "lon_deg", "alt_m"))
    ecef = geodetic_to_ecef(lat, lon, alt)
    return ecef, enu_basis(lat, lon), cKDTree(ecef)


def _gateway_links(r, ok, gw_ecef, gw_enu, gw_tree, gw_mask_deg, antennas, sats=None):
    """Feeder links of one chunk: (t, gw, sat, range_km), at most ``antennas`` per gateway
    and step, highest elevation first."""
    t, g, s, el, rng = visible_pairs(r, ok, gw_ecef, gw_enu, float(gw_mask_deg.min()),
                                     site_tree=gw_tree, sats=sats)
    rows = _antenna_rows(g, t, el, np.asarray(gw_mask_deg, np.float64),
                         np.asarray(antennas, np.int64))
    return t[rows], g[rows], s[rows], rng[rows]


@kernel
def _antenna_rows(g, t, el, mask_deg, antennas):
    """Rows of the (time, gateway)-grouped links ``g``, ``t``, ``el`` at or above their
    gateway's mask, at most ``antennas`` per group, highest elevation first (equal ones in
    row order)."""
    n = g.size
    out = np.empty(n, np.int64)
    m = 0
    a = 0
    while a < n:
        b = a + 1
        while b < n and g[b] == g[a] and t[b] == t[a]:
            b += 1
        start = m
        for r in range(a, b):
            if el[r] >= mask_deg[g[r]]:
                # Insertion into the group's rows, by descending elevation (stable).
                k = m
                while k > start and el[out[k - 1]] < el[r]:
                    out[k] = out[k - 1]
                    k -= 1
                out[k] = r
                m += 1
        m = min(m, start + antennas[g[a]])
        a = b
    return out[:m]


def _choose(term, sat, el, routable, policy, n_sat, groups=None):
    """Per terminal (rows grouped by terminal; ``groups``: their :func:`_groups`, when known):
    the row of the chosen satellite.

    ``max_elevation``: the highest satellite with a path. ``least_loaded``: a capped
    deferred-acceptance assignment — every terminal proposes to its highest remaining
    candidate, each satellite accepts up to a common cap (highest elevation first), rejected
    terminals move to their next candidate; the cap starts at ⌈terminals / satellites⌉ and
    grows only when some terminal has run out of candidates. This balances load while still
    preferring high satellites, with every round vectorized.
    """
    if policy != "least_loaded" and groups is not None:
        # The highest routable row of each group: its maximum over the routable rows (others
        # count as -inf), then the first routable row at it.
        if groups[0].size == 0:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        e = np.where(routable, el, -np.inf)
        top = np.maximum.reduceat(e, groups[0])
        hit = np.flatnonzero(routable & (e == np.repeat(top, np.diff(np.r_[groups[0],
                                                                           e.size]))))
        hit = hit[run_starts(term[hit])]  # first row at the maximum
        return term[hit], hit
    rows = np.flatnonzero(routable)
    if rows.size == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    if policy != "least_loaded":
        # Rows come grouped by terminal: a per-group maximum, no sort needed.
        t = term[rows]
        start = np.flatnonzero(run_starts(t))
        e = el[rows]
        top = np.repeat(np.maximum.reduceat(e, start), np.diff(np.r_[start, t.size]))
        hit = np.flatnonzero(e == top)
        hit = hit[run_starts(t[hit])]  # first row at the maximum
        return t[hit], rows[hit]
    order = rows[np.lexsort((-el[rows], term[rows]))]
    first = run_starts(term[order])
    start = np.flatnonzero(first)
    count = np.diff(np.r_[start, order.size])
    n_t = start.size
    pointer = np.zeros(n_t, np.int64)
    chosen = np.full(n_t, -1, np.int64)
    load = np.zeros(n_sat, np.int64)
    cap = int(np.ceil(n_t / max(1, np.unique(sat[order]).size)))
    while True:
        todo = np.flatnonzero(chosen < 0)
        if todo.size == 0:
            break
        exhausted = pointer[todo] >= count[todo]
        if exhausted.any():  # no room anywhere for them at this cap: raise it and retry
            cap += 1
            pointer[todo[exhausted]] = 0
        prop = order[start[todo] + pointer[todo]]
        s = sat[prop]
        by_sat = np.lexsort((-el[prop], s))
        group = np.r_[0, np.flatnonzero(s[by_sat][1:] != s[by_sat][:-1]) + 1]
        rank = np.arange(by_sat.size) - np.repeat(group, np.diff(np.r_[group, by_sat.size]))
        ok = rank < cap - load[s[by_sat]]
        won = by_sat[ok]
        chosen[todo[won]] = prop[won]
        load += np.bincount(s[won], minlength=n_sat)
        pointer[todo[by_sat[~ok]]] += 1
    return term[chosen], chosen


#: Cause bits of :func:`network_state` with ``attribution=True`` (and of ``simulate``).
CAUSES = ("policy", "no_coverage", "satellite_failure", "jamming", "no_backhaul", "congestion")
CAUSE_BIT = {c: 1 << k for k, c in enumerate(CAUSES)}
_FUSED_BITS = np.array([CAUSE_BIT[c] for c in ("no_coverage", "no_backhaul",
                                                "satellite_failure", "policy")], np.uint8)


def network_state(positions: xr.Dataset, ground, *, config: NetworkConfig | None = None,
                  failed: np.ndarray | None = None, gateway_down: np.ndarray | None = None,
                  allowed: np.ndarray | None = None, jammed=None,
                  attribution: bool = False, progress=None) -> xr.Dataset:
    """Serving satellite, gateway, PoP, hops and latency per (time, terminal), and load per
    (time, sat), for a :func:`leotwin.propagate` result and a :class:`leotwin.ground.Ground`.

    ``failed`` (optional, ``(n_time, n_sat)`` bool) marks satellites that neither serve nor
    relay; ``gateway_down`` ``(n_time, n_gateway)`` gateways without backhaul; ``allowed``
    ``(n_time, n_terminal)`` terminals the policy lets on the network (others are not
    scheduled); ``jammed(step, terminal_idx, sat_idx) -> bool`` tells whether a terminal
    served by a satellite is jammed (then it is not served); a ``jammed`` with the attribute
    ``steps_as_array = True`` also takes one step per link (an array) and is then called once
    for many steps.

    With ``attribution=True`` the result also has ``cause_bits`` (``CAUSE_BIT`` flags): each
    factor whose presence *alone* (all other factors removed) would cut the terminal at that
    step — computed in the same pass from up to four shortest-path calls per step (actual,
    without failures, without outages, healthy; variants that coincide are computed once),
    never by rerunning terminals. ``jammed`` is then called once per step for the actual and
    the healthy choice together.
    ``progress(done_steps, total_steps)`` is called after each chunk (e.g. for a progress bar).

    Latency: space links at c, gateway→PoP fibre at c/n over the great-circle distance
    times a route factor, plus a processing delay per link; RTT is twice the one-way delay
    (symmetric path). ``reason`` says why a terminal has no route: ``no_satellite`` (none
    operational above its mask) or ``no_gateway_path`` (satellites, but none with a path).
    """
    return _network_state(positions, ground, config=config, failed=failed,
                          gateway_down=gateway_down, allowed=allowed, jammed=jammed,
                          attribution=attribution, progress=progress)[0]


def _network_state(positions: xr.Dataset, ground, *, config=None, failed=None,
                   gateway_down=None, allowed=None, jammed=None, attribution=False,
                   progress=None, strings: bool = True) -> tuple[xr.Dataset, np.ndarray]:
    """:func:`network_state` and the gateway of every (time, terminal) as an index into
    ``ground.gateways`` (−1: none), the codes behind the ``gateway`` strings. With
    ``strings=False`` the string variables (``gateway``, ``pop``, ``reason``) are left out."""
    cfg = (config or NetworkConfig()).resolved()
    terminals, gateways, pops = ground.terminals, ground.gateways, ground.pops
    times = positions["time"].to_numpy()
    n_t, n_sat = times.size, positions.sizes["sat"]
    n_term, n_gw, n_pop = len(terminals), len(gateways), len(pops)
    r_all = positions["r_ecef_km"]
    ok_all = positions["operational"].to_numpy() if "operational" in positions else \
        np.ones((n_t, n_sat), bool)  # physically able to serve; failures applied per step
    failed = np.zeros((n_t, n_sat), bool) if failed is None else np.asarray(failed, bool)
    gw_down = (np.zeros((n_t, n_gw), bool) if gateway_down is None
               else np.asarray(gateway_down, bool))
    allowed = (np.ones((n_t, n_term), bool) if allowed is None
               else np.broadcast_to(np.asarray(allowed, bool), (n_t, n_term)))
    cause_bits = np.zeros((n_t, n_term), np.uint8)

    pop_index = {p: k for k, p in enumerate(pops["pop"].astype(str))}
    gw_pop = np.array([pop_index[p] for p in gateways["pop"].astype(str)], dtype=np.int64)
    fibre_ms = light_time_ms(gateways["pop_distance_km"].to_numpy(np.float64)
                             * cfg.fibre_route_factor * cfg.fibre_refractive_index)
    gw_ecef, gw_enu, gw_tree = _sites(gateways)
    gw_mask = gateways["min_elevation_deg"].to_numpy(np.float64)
    antennas = gateways["antennas"].to_numpy().astype(np.int64)
    lat_t, lon_t, alt_t = ground.terminal_positions(times)
    moving = np.flatnonzero(np.ptp(lat_t, axis=0) + np.ptp(lon_t, axis=0) > 0)
    fixed = np.setdiff1d(np.arange(n_term), moving)
    fx_ecef = geodetic_to_ecef(lat_t[0, fixed], lon_t[0, fixed], alt_t[0, fixed])
    fx_enu = enu_basis(lat_t[0, fixed], lon_t[0, fixed])
    fx_tree = cKDTree(fx_ecef) if fixed.size else None

    # Outputs.
    serving = np.full((n_t, n_term), -1, np.int64)  # satellite index
    out_gw = np.full((n_t, n_term), -1, np.int64)
    out_pop = np.full((n_t, n_term), -1, np.int64)
    hops = np.zeros((n_t, n_term), np.int16)
    elev = np.full((n_t, n_term), np.nan, np.float32)
    one_way = np.full((n_t, n_term), np.nan)
    reason = np.zeros((n_t, n_term), np.int8)
    handover = np.zeros((n_t, n_term), bool)
    sat_load = np.zeros((n_t, n_sat), np.int32)

    # The +Grid is wired once, at the first step, for every satellite that is operational at
    # some step of the run; failures and orbit state only switch links off step by step.
    r0 = r_all[0].to_numpy()
    v0 = positions["v_ecef_km_s"][0].to_numpy()
    wired = (positions["operational"].to_numpy().any(axis=0) if "operational" in positions
             else np.ones(n_sat, bool)) & np.isfinite(r0).all(axis=1)
    edges = (plus_grid_edges(r0, v0, positions["shell"].to_numpy(), wired)
             if cfg.mode == "isl" else np.empty((0, 2), np.int64))
    slot = np.floor((times - times[0]).astype("int64") / 1e9 / cfg.slot_s).astype(np.int64)
    graph = StepGraph(n_sat, n_gw, n_pop, edges, gw_pop, fibre_ms, cfg.processing_delay_ms)
    # User links are found a few steps at a time: arrays of ~100,000 candidate pairs stay in
    # cache while they are filtered and sorted (measured 5x faster per step than 30 steps).
    r_max = float(np.nanmax(np.linalg.norm(r0, axis=-1), initial=0.0))
    user_steps = _auto_chunk_steps(n_term, n_sat, cfg.terminal_min_elevation_deg, r_max,
                                   _USER_PAIRS_PER_CHUNK)
    seen = np.zeros((n_t, n_term), bool)  # terminals with some satellite above the mask
    pending: list[_Chosen] = []  # steps whose jamming test is deferred (see _flush)
    batch_jam = _BATCH_JAM and getattr(jammed, "steps_as_array", False)
    for a in range(0, n_t, _STEPS_PER_CHUNK):  # chunks bound memory; see the module note on steps
        b = min(a + _STEPS_PER_CHUNK, n_t)
        r = r_all[a:b].to_numpy()
        ok = ok_all[a:b]
        usable, _, isl_ms = isl_feasible(r, edges, max_range_km=cfg.isl_max_range_km,
                                         margin_km=cfg.isl_atmosphere_margin_km, valid=ok)
        # Moving terminals' sites at every step of the chunk, in one call each.
        mv_ecef = geodetic_to_ecef(lat_t[a:b, moving], lon_t[a:b, moving], alt_t[a:b, moving])
        mv_enu = enu_basis(lat_t[a:b, moving], lon_t[a:b, moving])
        for c in range(a, b, user_steps):  # cache-sized sub-chunks of feeder and user links
            d = min(c + user_steps, b)
            r_cd, ok_cd = r[c - a:d - a], ok[c - a:d - a]
            sats = sat_points(r_cd, ok_cd)  # one satellite tree for gateways and terminals
            gt, gg, gs, grng = _gateway_links(r_cd, ok_cd, gw_ecef, gw_enu, gw_tree, gw_mask,
                                              antennas, sats)
            g_ms = light_time_ms(grng)
            g_bounds = np.searchsorted(gt, np.arange(d - c + 1))
            tt, ts, tsat, tel, trng = _terminal_links(
                r_cd, ok_cd, fixed, fx_ecef, fx_enu, fx_tree, moving,
                mv_ecef[c - a:d - a], mv_enu[c - a:d - a], cfg.terminal_min_elevation_deg, sats)
            t_bounds = np.searchsorted(tt, np.arange(d - c + 1))
            for step in range(c, d):  # the schedule carries state from step to step
                k = step - a
                gsl = slice(g_bounds[step - c], g_bounds[step - c + 1])
                tsl = slice(t_bounds[step - c], t_bounds[step - c + 1])
                f = failed[step]
                variants = _step_variants(graph, edges, usable[k], isl_ms[k], gg[gsl], gs[gsl],
                                          g_ms[gsl], f, gw_down[step], attribution)
                routes = variants[0]
                term, sat, el, rng = ts[tsl], tsat[tsl], tel[tsl], trng[tsl]
                sat_ok = ~f & np.isfinite(routes.delay_ms)
                # Keep last step's satellite inside a slot while it still has a path (the
                # previous step is final: pending steps are flushed before a slot goes on).
                keep_prev = step > 0 and slot[step] == slot[step - 1]
                healthy_term = healthy_row = None
                if _FUSED_STEP and cfg.policy != "least_loaded":
                    chosen_term, chosen_row, has_rows, bits, healthy_term, healthy_row = \
                        _fused_choice(term, sat, el, sat_ok, allowed[step],
                                      serving[step - 1] if keep_prev else None, f,
                                      variants if attribution else None, jammed is not None,
                                      n_term)
                    seen[step] = has_rows
                    if attribution:
                        cause_bits[step] = bits
                else:
                    groups = _groups(term)  # rows come grouped by terminal
                    routable = sat_ok[sat] & allowed[step][term]
                    chosen_term = np.empty(0, np.int64)
                    chosen_row = np.empty(0, np.int64)
                    if keep_prev:
                        keep_rows = np.flatnonzero(routable & (sat == serving[step - 1][term]))
                        chosen_term, chosen_row = term[keep_rows], keep_rows
                    need = np.ones(n_term, bool)
                    need[chosen_term] = False
                    nt, nr = _choose(term, sat, el, routable & need[term], cfg.policy, n_sat,
                                     groups)
                    chosen_term = np.r_[chosen_term, nt]
                    chosen_row = np.r_[chosen_row, nr]
                    if attribution:
                        cause_bits[step], healthy_term, healthy_row = _step_causes(
                            n_term, term, sat, el, f, variants, allowed[step],
                            jammed is not None, cfg.policy, n_sat, groups)
                    seen[step, term] = True
                s_chosen = sat[chosen_row]
                pending.append(_Chosen(
                    step, chosen_term, s_chosen, el[chosen_row], rng[chosen_row],
                    routes.gateway[s_chosen], routes.pop[s_chosen], routes.hops[s_chosen],
                    routes.delay_ms[s_chosen], healthy_term,
                    None if healthy_term is None else sat[healthy_row]))
                # A step's jamming test waits (one link-budget call for many steps) unless
                # the next step continues its slot and needs its final serving satellite.
                if (jammed is None or not batch_jam or step + 1 == b
                        or slot[step + 1] == slot[step]):
                    outs = (serving, out_gw, out_pop, hops, elev, one_way, cause_bits)
                    _flush(pending, jammed, batch_jam, outs, cfg.processing_delay_ms)
                    pending = []
        if progress is not None:
            progress(b, n_t)
    served_any = serving >= 0
    reason[:] = np.where(served_any, 0, np.where(seen, 2, 1))
    handover[1:] = served_any[:-1] & served_any[1:] & (serving[1:] != serving[:-1])
    flat_load = (np.arange(n_t)[:, None] * n_sat + serving)[served_any]
    sat_load[:] = np.bincount(flat_load, minlength=n_t * n_sat).reshape(n_t, n_sat)

    demand = terminals["demand_mbps"].to_numpy(np.float64)
    flat = (np.arange(n_t)[:, None] * n_sat + serving)[serving >= 0]
    sat_demand = np.bincount(flat, weights=np.broadcast_to(demand, serving.shape)[serving >= 0],
                             minlength=n_t * n_sat).reshape(n_t, n_sat)
    sat_ids = positions["sat"].to_numpy()
    gw_names = gateways["gateway"].astype(str).to_numpy()
    pop_names = pops["pop"].astype(str).to_numpy()
    served = serving >= 0
    ds = xr.Dataset(
        {
            "served": (("time", "terminal"), served),
            "serving_sat": (("time", "terminal"), np.where(served, sat_ids[np.maximum(serving, 0)],
                                                           -1),
                    {"description": "catalog number of the serving satellite, -1: none"}),
            "hops": (("time", "terminal"), hops, {"description": "space links terminal→gateway"}),
            "elevation_deg": (("time", "terminal"), elev, {"units": "deg"}),
            "one_way_ms": (("time", "terminal"), one_way, {"units": "ms",
                                                           "description": "terminal → PoP"}),
            "rtt_ms": (("time", "terminal"), 2.0 * one_way, {"units": "ms"}),
            "handover": (("time", "terminal"), handover),
            "handovers": (("terminal",), handover.sum(axis=0).astype(np.int32)),
            "sat_load_terminals": (("time", "sat"), sat_load),
            "sat_load_demand_mbps": (("time", "sat"), sat_demand, {"units": "Mbit/s"}),
        },
        coords={"time": times, "terminal": terminals["terminal"].astype(str).to_numpy(),
                "sat": sat_ids, "account": ("terminal", terminals["account"].astype(str)
                                            .to_numpy())},
        attrs={"mode": cfg.mode, "policy": cfg.policy, "slot_s": cfg.slot_s,
               "terminal_min_elevation_deg": cfg.terminal_min_elevation_deg,
               "processing_delay_ms": cfg.processing_delay_ms,
               "fibre_refractive_index": cfg.fibre_refractive_index,
               "fibre_route_factor": cfg.fibre_route_factor},
    )
    if strings:  # in their place among the variables
        names = list(ds.data_vars)
        ds = ds.assign(
            gateway=(("time", "terminal"), np.where(out_gw >= 0, gw_names[np.maximum(
                out_gw, 0)], "")),
            pop=(("time", "terminal"), np.where(out_pop >= 0, pop_names[np.maximum(
                out_pop, 0)], "")),
            reason=(("time", "terminal"), code_strings(REASONS, reason),
                    {"description": "why there is no route: no_satellite, no_gateway_path"}))
        ds = ds[names[:2] + ["gateway", "pop"] + names[2:6] + ["reason"] + names[6:]]
    if cfg.capacity:
        ds = _add_capacity(ds, serving, terminals, lat_t, lon_t, cfg, n_sat)
    if attribution:
        if cfg.capacity:
            congested = ds["congested"].to_numpy()
            cause_bits[congested] |= CAUSE_BIT["congestion"]
        ds["cause_bits"] = (("time", "terminal"), cause_bits,
                            {"flag_masks": [CAUSE_BIT[c] for c in CAUSES],
                             "flag_meanings": " ".join(CAUSES)})
    return ds, out_gw


@dataclass
class _Chosen:
    """One step's scheduled links before the jamming test: terminal, satellite, elevation,
    range and route of each, and the healthy choice whose jamming is tested (or None)."""

    step: int
    term: np.ndarray
    sat: np.ndarray
    el: np.ndarray
    rng: np.ndarray
    gateway: np.ndarray
    pop: np.ndarray
    hops: np.ndarray
    delay_ms: np.ndarray
    healthy_term: np.ndarray | None
    healthy_sat: np.ndarray | None


def _flush(pending: list[_Chosen], jammed, batch_jam: bool, outs, processing_delay_ms: float):
    """Test the pending steps' links for jamming — one call for all of them when ``jammed``
    takes an array of steps (``jammed.steps_as_array``), else one per step — and write the
    links that are not jammed (and the healthy choices that are) into the outputs."""
    serving, out_gw, out_pop, hops, elev, one_way, cause_bits = outs
    hit = [np.zeros(0, bool)] * len(pending)
    if jammed is not None:
        q_step, q_term, q_sat = [], [], []
        for p in pending:  # over a few steps: the queries of each, actual then healthy
            terms = p.term if p.healthy_term is None else np.r_[p.term, p.healthy_term]
            sats = p.sat if p.healthy_sat is None else np.r_[p.sat, p.healthy_sat]
            q_step.append(np.full(terms.size, p.step, np.int64))
            q_term.append(terms)
            q_sat.append(sats)
        if batch_jam:
            steps, terms = np.concatenate(q_step), np.concatenate(q_term)
            flat = (np.asarray(jammed(steps, terms, np.concatenate(q_sat)), bool)
                    if terms.size else np.zeros(0, bool))
            hit = np.split(flat, np.cumsum([x.size for x in q_term])[:-1])
        else:
            hit = [np.asarray(jammed(p.step, t, sa), bool) if t.size else np.zeros(0, bool)
                   for p, t, sa in zip(pending, q_term, q_sat, strict=True)]
    for p, h in zip(pending, hit, strict=True):  # over the pending steps
        n_c = p.term.size
        keep = ~h[:n_c] if h.size else slice(None)
        step, t = p.step, p.term[keep]
        serving[step, t] = p.sat[keep]
        out_gw[step, t] = p.gateway[keep]
        out_pop[step, t] = p.pop[keep]
        hops[step, t] = p.hops[keep] + 1  # + the user link
        elev[step, t] = p.el[keep]
        one_way[step, t] = light_time_ms(p.rng[keep]) + processing_delay_ms + p.delay_ms[keep]
        if p.healthy_term is not None and h.size:
            cause_bits[step, p.healthy_term[h[n_c:]]] |= CAUSE_BIT["jamming"]


def code_strings(names, codes: np.ndarray) -> np.ndarray:
    """``names[codes]`` as a str array as wide as the longest name present — what
    ``np.array(names, dtype=object)[codes].astype(str)`` gives, without object arrays."""
    codes = np.asarray(codes)
    present = np.flatnonzero(np.bincount(codes.ravel(), minlength=len(names)))
    width = max([1] + [len(names[k]) for k in present])
    return np.array(names, dtype=f"<U{width}")[codes]


def _step_variants(graph: StepGraph, edges, usable, isl_ms, feed_gw, feed_sat, feed_ms,
                   failed, down, attribution: bool):
    """Routes at one step: (actual, healthy, failures only, outages only) — the last three
    only with ``attribution``. A variant equal to another one (no failure, or no outage, at
    this step) is not computed twice."""
    any_f, any_d = bool(failed.any()), bool(down.any())

    def routes(with_failures: bool, with_outages: bool) -> SatRoutes:
        isl_ok, f_gw, f_sat, f_ms = usable, feed_gw, feed_sat, feed_ms
        if with_failures:
            isl_ok = usable & ~failed[edges[:, 0]] & ~failed[edges[:, 1]]
            feed_ok = ~failed[feed_sat]
            f_gw, f_sat, f_ms = feed_gw[feed_ok], feed_sat[feed_ok], feed_ms[feed_ok]
        return graph.routes(isl_ok, isl_ms, f_gw, f_sat, f_ms,
                            gw_up=~down if with_outages else None)

    if not attribution or not (any_f or any_d):
        actual = routes(any_f, any_d)
        return actual, actual if attribution else None, actual, actual
    clean = routes(False, False)
    if not clean.uses(failed, down):
        # No healthy path passes through a failed satellite or ends at a gateway that is
        # down: removing them changes no other path (failed satellites only stop serving).
        actual = clean.without(failed) if any_f else clean
        return actual, clean, actual, clean
    if _REROUTE:  # only the paths below failed satellites and gateways that are down
        def routes(with_failures: bool, with_outages: bool) -> SatRoutes:  # noqa: F811
            return graph.reroute(clean, failed if with_failures else None,
                                 ~down if with_outages else None)
    actual = routes(any_f, any_d)
    only_f = routes(True, False) if (any_f and any_d) else (actual if any_f else clean)
    only_d = routes(False, True) if (any_f and any_d) else (actual if any_d else clean)
    return actual, clean, only_f, only_d


def _groups(term: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start row and terminal of each group of rows of ``term`` (grouped by terminal)."""
    start = np.flatnonzero(run_starts(term)) if term.size else np.empty(0, np.int64)
    return start, term[start]


def _any_per_terminal(n_term: int, groups, rows_ok: np.ndarray) -> np.ndarray:
    """Per terminal: whether some of its rows is ``rows_ok`` (``groups``: :func:`_groups`)."""
    out = np.zeros(n_term, bool)
    if groups[0].size:
        out[groups[1]] = np.logical_or.reduceat(rows_ok, groups[0])
    return out


def _step_causes(n_term, term, sat, el, failed, variants, allowed, with_jammers, policy,
                 n_sat, groups):
    """Cause bits at one step: each factor that alone (everything else healthy) cuts the
    terminal. Healthy = no failures, no outages, no policy, no jammers. With jammers, also the
    healthy choice (terminal, row) whose jamming the caller tests (then sets ``jamming``).
    ``failed``: per satellite; ``groups``: :func:`_groups` of ``term``."""
    _, clean, only_f, only_d = variants
    bits = np.zeros(n_term, np.uint8)
    has_rows = np.zeros(n_term, bool)
    has_rows[groups[1]] = True
    ok_clean = np.isfinite(clean.delay_ms)[sat]
    servable = _any_per_terminal(n_term, groups, ok_clean)
    servable_f = (servable if only_f is clean else _any_per_terminal(
        n_term, groups, (~failed & np.isfinite(only_f.delay_ms))[sat]))
    servable_d = (servable if only_d is clean else _any_per_terminal(
        n_term, groups, np.isfinite(only_d.delay_ms)[sat]))
    bits[~has_rows] |= CAUSE_BIT["no_coverage"]
    bits[has_rows & ~servable] |= CAUSE_BIT["no_backhaul"]  # no path even when healthy
    bits[servable & ~servable_d] |= CAUSE_BIT["no_backhaul"]
    bits[servable & ~servable_f] |= CAUSE_BIT["satellite_failure"]
    bits[servable & ~allowed] |= CAUSE_BIT["policy"]
    if not with_jammers:
        return bits, None, None
    ct, cr = _choose(term, sat, el, ok_clean, policy, n_sat, groups)  # the healthy choice
    return bits, ct, cr


def _fused_choice(term, sat, el, sat_ok, allowed, prev, failed, variants, with_jammers,
                  n_term):
    """The ``max_elevation`` schedule of one step and, with ``variants`` (attribution), its
    cause bits and healthy choice, by :func:`_fused_step`: ``(chosen terminals, rows,
    terminals with some link, bits, healthy terminals, rows)``, as the numpy path gives them
    (kept links first, then new choices; healthy choice None without jammers)."""
    keep_prev = prev is not None
    if variants is None:
        clean_ok = f_ok = d_ok = sat_ok  # unused
    else:
        _, clean, only_f, only_d = variants
        clean_ok = np.isfinite(clean.delay_ms)
        f_ok = clean_ok if only_f is clean else ~failed & np.isfinite(only_f.delay_ms)
        d_ok = clean_ok if only_d is clean else np.isfinite(only_d.delay_ms)
    kt, kr, nt, nr, has_rows, bits, ht, hr = _fused_step(
        term, sat, el, sat_ok, allowed, prev if keep_prev else np.empty(0, np.int64),
        keep_prev, clean_ok, f_ok, d_ok, variants is not None, with_jammers, n_term,
        _FUSED_BITS)
    healthy = (ht, hr) if variants is not None and with_jammers else (None, None)
    return np.r_[kt, nt], np.r_[kr, nr], has_rows, bits, *healthy


@kernel
def _fused_step(term, sat, el, sat_ok, allowed, prev, keep_prev, clean_ok, f_ok, d_ok,
                attribution, with_jammers, n_term, bits_code):
    """One step's schedule under ``max_elevation`` and its cause bits, in one pass over the
    user links (rows grouped by terminal): what :func:`_choose` and :func:`_step_causes`
    give. ``sat_ok``/``clean_ok``/``f_ok``/``d_ok``: per satellite, a path in the actual,
    healthy, failures-only and outages-only routes (``f_ok`` also not failed); ``prev``: the
    serving satellite per terminal at the previous step, kept when ``keep_prev`` and still
    routable. ``bits_code``: the bits of no_coverage, no_backhaul, satellite_failure, policy.
    Returns (kept terminals, kept rows, newly chosen terminals, rows, has-rows per terminal,
    cause bits, healthy choice terminals, rows)."""
    n = term.size
    kept_t = np.empty(n, np.int64)
    kept_r = np.empty(n, np.int64)
    new_t = np.empty(n, np.int64)
    new_r = np.empty(n, np.int64)
    heal_t = np.empty(n, np.int64)
    heal_r = np.empty(n, np.int64)
    has_rows = np.zeros(n_term, np.bool_)
    bits = np.zeros(n_term, np.uint8)
    n_kept = n_new = n_heal = 0
    a = 0
    while a < n:
        t = term[a]
        b = a + 1
        while b < n and term[b] == t:
            b += 1
        has_rows[t] = True
        kept = -1
        best, best_el = -1, -np.inf
        heal, heal_el = -1, -np.inf
        servable = servable_f = servable_d = False
        for r in range(a, b):
            s = sat[r]
            if sat_ok[s] and allowed[t]:
                if keep_prev and kept < 0 and s == prev[t]:
                    kept = r
                if el[r] > best_el:
                    best, best_el = r, el[r]
            if attribution:
                if clean_ok[s]:
                    servable = True
                    if el[r] > heal_el:
                        heal, heal_el = r, el[r]
                servable_f |= f_ok[s]
                servable_d |= d_ok[s]
        if kept >= 0:
            kept_t[n_kept] = t
            kept_r[n_kept] = kept
            n_kept += 1
        elif best >= 0:
            new_t[n_new] = t
            new_r[n_new] = best
            n_new += 1
        if attribution:
            if not servable:
                bits[t] |= bits_code[1]  # no path even when healthy
            else:
                if not servable_d:
                    bits[t] |= bits_code[1]
                if not servable_f:
                    bits[t] |= bits_code[2]
                if not allowed[t]:
                    bits[t] |= bits_code[3]
                if with_jammers:
                    heal_t[n_heal] = t
                    heal_r[n_heal] = heal
                    n_heal += 1
        a = b
    if attribution:
        for t in range(n_term):
            if not has_rows[t]:
                bits[t] |= bits_code[0]
    return (kept_t[:n_kept], kept_r[:n_kept], new_t[:n_new], new_r[:n_new], has_rows, bits,
            heal_t[:n_heal], heal_r[:n_heal])


def _terminal_links(r, ok, fixed, fx_ecef, fx_enu, fx_tree, moving, mv_ecef, mv_enu, mask_deg,
                    sats=None):
    """User links of one chunk as (t, terminal, sat, elevation_deg, range_km) grouped by
    (t, terminal): fixed terminals through one KD-tree query per chunk, moving ones through
    one per step (their positions change: ``mv_ecef`` ``(n_time, n_moving, 3)`` and
    ``mv_enu`` their :func:`enu_basis`). ``sats``: :func:`sat_points` of ``r``, ``ok``."""
    parts = []
    if fixed.size:
        t, s, sat, el, rng = visible_pairs(r, ok, fx_ecef, fx_enu, mask_deg, site_tree=fx_tree,
                                           sats=sats)
        parts.append((t, fixed[s], sat, el, rng))
    if moving.size:
        for k in range(r.shape[0]):  # per step: moving terminals change position every step
            _, m, sat, el, rng = visible_pairs(r[k:k + 1], ok[k:k + 1], mv_ecef[k], mv_enu[k],
                                               mask_deg, sats=sats if r.shape[0] == 1 else None)
            parts.append((np.full(sat.size, k), moving[m], sat, el, rng))
    t, term, sat, el, rng = (np.concatenate(x) for x in zip(*parts, strict=True))
    if r.shape[0] == 1 or (moving.size == 0 and np.array_equal(fixed, np.arange(fixed.size))):
        return t, term, sat, el, rng  # already grouped by (t, terminal) by visible_pairs
    # Each part is already grouped by (step, terminal); a stable sort on the step alone keeps
    # every terminal's rows together (fixed and moving terminals are disjoint).
    order = np.argsort(t, kind="stable")
    return t[order], term[order], sat[order], el[order], rng[order]


def _allocate(serving, terminals, lat_t, lon_t, cfg, n_sat):
    """:func:`leotwin.capacity.allocate` for the schedule ``serving`` (satellite index per
    (time, terminal), −1: none) of ``terminals`` at ``lat_t``, ``lon_t`` (time, terminal) with
    the resolved config ``cfg`` — the one place capacity is allocated (``network_state`` and
    ``simulate_run``, which allocates on a whole chunk after terminal partitions)."""
    from .. import capacity

    cells = capacity.terminal_cells(lat_t, lon_t, int(cfg.h3_resolution))
    return capacity.allocate(
        serving, cells, terminals["demand_mbps"].to_numpy(np.float64),
        terminals["min_mbps"].to_numpy(np.float64), n_sat=n_sat,
        beams_per_sat=int(cfg.beams_per_satellite), beam_capacity_mbps=cfg.beam_capacity_mbps,
        policy=cfg.capacity_policy)


def _add_capacity(ds, serving, terminals, lat_t, lon_t, cfg, n_sat):
    alloc = _allocate(serving, terminals, lat_t, lon_t, cfg, n_sat)
    return ds.assign(
        throughput_mbps=(("time", "terminal"), alloc.throughput_mbps, {"units": "Mbit/s"}),
        congested=(("time", "terminal"), alloc.congested),
        sat_served_mbps=(("time", "sat"), alloc.sat_served_mbps, {"units": "Mbit/s"}),
        sat_beams_used=(("time", "sat"), alloc.sat_beams_used),
    )


_TERMINAL_VARS = ("served", "serving_sat", "gateway", "pop", "hops", "elevation_deg",
                  "one_way_ms", "rtt_ms", "reason", "handover", "throughput_mbps", "congested")


def terminal_table(state: xr.Dataset) -> pd.DataFrame:
    """The per-(time, terminal) part of :func:`network_state` as a long table (one row per
    time and terminal, ``account`` included) — the layout the CLI writes."""
    names = [v for v in _TERMINAL_VARS if v in state]
    n_t, n_term = state.sizes["time"], state.sizes["terminal"]
    data = {
        "time": np.repeat(state["time"].to_numpy(), n_term),
        "terminal": np.tile(state["terminal"].to_numpy(), n_t),
        "account": np.tile(state["account"].to_numpy(), n_t),
    }
    for v in names:
        data[v] = state[v].to_numpy().reshape(-1)
    return pd.DataFrame(data)


def rtt_summary(state: xr.Dataset) -> pd.DataFrame:
    """Per terminal: share of time served, most used PoP, median and 95th-percentile RTT (ms)
    over the served steps (NaN when never served), and handovers."""
    rtt = state["rtt_ms"].to_numpy()
    served = state["served"].to_numpy()
    n_term = state.sizes["terminal"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: never served
        median = np.nanmedian(rtt, axis=0)
        p95 = np.nanpercentile(rtt, 95, axis=0)
    t_idx, term_idx = np.nonzero(served)
    pops = pd.DataFrame({"terminal": term_idx, "pop": state["pop"].to_numpy()[t_idx, term_idx]})
    top = pops.groupby(["terminal", "pop"]).size().reset_index(name="n")
    top = top.sort_values(["terminal", "n"], ascending=[True, False]).drop_duplicates("terminal")
    top_pop = np.full(n_term, "", dtype=object)
    top_pop[top["terminal"].to_numpy()] = top["pop"].to_numpy()
    return pd.DataFrame({
        "terminal": state["terminal"].to_numpy(),
        "served_fraction": served.mean(axis=0),
        "pop": top_pop.astype(str),
        "rtt_median_ms": median,
        "rtt_p95_ms": p95,
        "handovers": state["handovers"].to_numpy(),
    })
