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
step is vectorized over satellites, gateways and terminals. Link geometry is computed for
several steps at once where that is cheaper: laser links per 30-step chunk, feeder and user
links per sub-chunk of about 100,000 candidate pairs (cache-resident; one satellite KD-tree
for both), and the shortest-path graph is assembled from a topology sorted once per run
(:class:`leotwin.routing.graph.StepGraph`).

With attribution, a step needs routes with and without its failures and outages. Variants
that coincide are computed once: without failures or outages at the step all four are one;
with only one of the two, two; and when no healthy path passes through a failed satellite or
ends at a gateway that is down, the healthy routes serve for all (failed satellites only stop
serving). Results are the same as computing every variant (``tests/test_simulate.py`` pins
it), up to how exact ties between equal-length paths or equal elevations are broken.
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
    keep = el >= gw_mask_deg[g]
    t, g, s, el, rng = t[keep], g[keep], s[keep], el[keep], rng[keep]
    order = np.lexsort((-el, g, t))
    t, g, s, rng = t[order], g[order], s[order], rng[order]
    group_start = np.flatnonzero(run_starts(t, g))
    rank = np.arange(t.size) - np.repeat(group_start, np.diff(np.r_[group_start, t.size]))
    keep = rank < antennas[g]
    return t[keep], g[keep], s[keep], rng[keep]


def _choose(term, sat, el, routable, policy, n_sat):
    """Per terminal (rows sorted by terminal): the row of the chosen satellite.

    ``max_elevation``: the highest satellite with a path. ``least_loaded``: a capped
    deferred-acceptance assignment — every terminal proposes to its highest remaining
    candidate, each satellite accepts up to a common cap (highest elevation first), rejected
    terminals move to their next candidate; the cap starts at ⌈terminals / satellites⌉ and
    grows only when some terminal has run out of candidates. This balances load while still
    preferring high satellites, with every round vectorized.
    """
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
    served by a satellite is jammed (then it is not served).

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
    prev = np.full(n_term, -1, np.int64)
    for a in range(0, n_t, _STEPS_PER_CHUNK):  # chunks bound memory; see the module note on steps
        b = min(a + _STEPS_PER_CHUNK, n_t)
        r = r_all[a:b].to_numpy()
        ok = ok_all[a:b]
        usable, _, isl_ms = isl_feasible(r, edges, max_range_km=cfg.isl_max_range_km,
                                         margin_km=cfg.isl_atmosphere_margin_km, valid=ok)
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
                lat_t[c:d], lon_t[c:d], alt_t[c:d], cfg.terminal_min_elevation_deg, sats)
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
                sat_up = ~f[sat]
                routable = sat_up & np.isfinite(routes.delay_ms[sat]) & allowed[step][term]
                # Keep last step's satellite inside a slot while it still has a path.
                chosen_term = np.empty(0, np.int64)
                chosen_row = np.empty(0, np.int64)
                if step > 0 and slot[step] == slot[step - 1]:
                    keep_rows = np.flatnonzero(routable & (sat == prev[term]))
                    chosen_term, chosen_row = term[keep_rows], keep_rows
                need = np.ones(n_term, bool)
                need[chosen_term] = False
                nt, nr = _choose(term, sat, el, routable & need[term], cfg.policy, n_sat)
                chosen_term = np.r_[chosen_term, nt]
                chosen_row = np.r_[chosen_row, nr]
                healthy_term = healthy_row = None
                if attribution:
                    cause_bits[step], healthy_term, healthy_row = _step_causes(
                        n_term, term, sat, el, sat_up, variants, allowed[step],
                        jammed is not None, cfg.policy, n_sat)
                if jammed is not None:
                    # One link-budget call for the actual and the healthy choice.
                    n_c = chosen_term.size
                    q_term, q_row = chosen_term, chosen_row
                    if healthy_term is not None:
                        q_term, q_row = np.r_[q_term, healthy_term], np.r_[q_row, healthy_row]
                    hit = (np.asarray(jammed(step, q_term, sat[q_row]), bool) if q_term.size
                           else np.zeros(0, bool))
                    chosen_term, chosen_row = chosen_term[~hit[:n_c]], chosen_row[~hit[:n_c]]
                    if healthy_term is not None:
                        cause_bits[step, healthy_term[hit[n_c:]]] |= CAUSE_BIT["jamming"]
                s_chosen = sat[chosen_row]
                serving[step, chosen_term] = s_chosen
                out_gw[step, chosen_term] = routes.gateway[s_chosen]
                out_pop[step, chosen_term] = routes.pop[s_chosen]
                hops[step, chosen_term] = routes.hops[s_chosen] + 1  # + the user link
                elev[step, chosen_term] = el[chosen_row]
                one_way[step, chosen_term] = (light_time_ms(rng[chosen_row])
                                              + cfg.processing_delay_ms
                                              + routes.delay_ms[s_chosen])
                seen = np.zeros(n_term, bool)
                seen[term] = True
                reason[step] = np.where(serving[step] >= 0, 0, np.where(seen, 2, 1))
                handover[step] = (prev >= 0) & (serving[step] >= 0) & (serving[step] != prev)
                sat_load[step] = np.bincount(s_chosen, minlength=n_sat)
                prev = serving[step]
        if progress is not None:
            progress(b, n_t)

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
            "gateway": (("time", "terminal"), np.where(out_gw >= 0, gw_names[np.maximum(
                out_gw, 0)], "")),
            "pop": (("time", "terminal"), np.where(out_pop >= 0, pop_names[np.maximum(
                out_pop, 0)], "")),
            "hops": (("time", "terminal"), hops, {"description": "space links terminal→gateway"}),
            "elevation_deg": (("time", "terminal"), elev, {"units": "deg"}),
            "one_way_ms": (("time", "terminal"), one_way, {"units": "ms",
                                                           "description": "terminal → PoP"}),
            "rtt_ms": (("time", "terminal"), 2.0 * one_way, {"units": "ms"}),
            "reason": (("time", "terminal"), code_strings(REASONS, reason),
                       {"description": "why there is no route: no_satellite, no_gateway_path"}),
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
    if cfg.capacity:
        ds = _add_capacity(ds, serving, terminals, lat_t, lon_t, cfg, n_sat)
    if attribution:
        if cfg.capacity:
            congested = ds["congested"].to_numpy()
            cause_bits[congested] |= CAUSE_BIT["congestion"]
        ds["cause_bits"] = (("time", "terminal"), cause_bits,
                            {"flag_masks": [CAUSE_BIT[c] for c in CAUSES],
                             "flag_meanings": " ".join(CAUSES)})
    return ds


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
    actual = routes(any_f, any_d)
    only_f = routes(True, False) if (any_f and any_d) else (actual if any_f else clean)
    only_d = routes(False, True) if (any_f and any_d) else (actual if any_d else clean)
    return actual, clean, only_f, only_d


def _any_per_terminal(n_term: int, term: np.ndarray, rows_ok: np.ndarray) -> np.ndarray:
    return np.bincount(term[rows_ok], minlength=n_term) > 0


def _step_causes(n_term, term, sat, el, sat_up, variants, allowed, with_jammers, policy,
                 n_sat):
    """Cause bits at one step: each factor that alone (everything else healthy) cuts the
    terminal. Healthy = no failures, no outages, no policy, no jammers. With jammers, also the
    healthy choice (terminal, row) whose jamming the caller tests (then sets ``jamming``)."""
    _, clean, only_f, only_d = variants
    bits = np.zeros(n_term, np.uint8)
    has_rows = np.bincount(term, minlength=n_term) > 0
    ok_clean = np.isfinite(clean.delay_ms[sat])
    servable = _any_per_terminal(n_term, term, ok_clean)
    servable_f = (servable if only_f is clean else
                  _any_per_terminal(n_term, term, sat_up & np.isfinite(only_f.delay_ms[sat])))
    servable_d = (servable if only_d is clean else
                  _any_per_terminal(n_term, term, np.isfinite(only_d.delay_ms[sat])))
    bits[~has_rows] |= CAUSE_BIT["no_coverage"]
    bits[has_rows & ~servable] |= CAUSE_BIT["no_backhaul"]  # no path even when healthy
    bits[servable & ~servable_d] |= CAUSE_BIT["no_backhaul"]
    bits[servable & ~servable_f] |= CAUSE_BIT["satellite_failure"]
    bits[servable & ~allowed] |= CAUSE_BIT["policy"]
    if not with_jammers:
        return bits, None, None
    ct, cr = _choose(term, sat, el, ok_clean, policy, n_sat)  # the healthy choice
    return bits, ct, cr


def _terminal_links(r, ok, fixed, fx_ecef, fx_enu, fx_tree, moving, lat, lon, alt, mask_deg,
                    sats=None):
    """User links of one chunk as (t, terminal, sat, elevation_deg, range_km) grouped by
    (t, terminal): fixed terminals through one KD-tree query per chunk, moving ones through
    one per step (their positions change). ``sats``: :func:`sat_points` of ``r``, ``ok``."""
    parts = []
    if fixed.size:
        t, s, sat, el, rng = visible_pairs(r, ok, fx_ecef, fx_enu, mask_deg, site_tree=fx_tree,
                                           sats=sats)
        parts.append((t, fixed[s], sat, el, rng))
    if moving.size:
        for k in range(r.shape[0]):  # per step: moving terminals change position every step
            site = geodetic_to_ecef(lat[k, moving], lon[k, moving], alt[k, moving])
            _, m, sat, el, rng = visible_pairs(r[k:k + 1], ok[k:k + 1], site,
                                               enu_basis(lat[k, moving], lon[k, moving]),
                                               mask_deg, sats=sats if r.shape[0] == 1 else None)
            parts.append((np.full(sat.size, k), moving[m], sat, el, rng))
    t, term, sat, el, rng = (np.concatenate(x) for x in zip(*parts, strict=True))
    if r.shape[0] == 1 or (moving.size == 0 and np.array_equal(fixed, np.arange(fixed.size))):
        return t, term, sat, el, rng  # already grouped by (t, terminal) by visible_pairs
    # Each part is already grouped by (step, terminal); a stable sort on the step alone keeps
    # every terminal's rows together (fixed and moving terminals are disjoint).
    order = np.argsort(t, kind="stable")
    return t[order], term[order], sat[order], el[order], rng[order]


def _add_capacity(ds, serving, terminals, lat_t, lon_t, cfg, n_sat):
    from .. import capacity

    cells = capacity.terminal_cells(lat_t, lon_t, int(cfg.h3_resolution))
    alloc = capacity.allocate(
        serving, cells, terminals["demand_mbps"].to_numpy(np.float64),
        terminals["min_mbps"].to_numpy(np.float64), n_sat=n_sat,
        beams_per_sat=int(cfg.beams_per_satellite), beam_capacity_mbps=cfg.beam_capacity_mbps,
        policy=cfg.capacity_policy)
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
