"""User-beam capacity: which cells a satellite's beams serve and what each terminal gets.

Model
-----
User cells are H3 cells (resolution ``default("h3_resolution")``, 5 unless told otherwise).
Each satellite has ``B`` user beams (``default("beams_per_satellite")``) and each beam carries
``C`` Mbit/s (``default("beam_capacity_mbps")``).  In each time slot a beam serves exactly one
cell.  A terminal is *active* in a slot when it has a serving satellite (index >= 0) and a
demand > 0; the demand of a (time, satellite, cell) group is the sum of the demands of the active
terminals in that cell served by that satellite.

Cell allocation, per satellite and slot:

``policy="greedy"``
    The satellite's cells are ranked by demand (ties: lower cell id first); the top ``B`` cells
    get one beam each and ``min(demand, C)``; the others get nothing this slot.
``policy="proportional"``
    The satellite's total capacity ``B·C`` is split across its cells in proportion to demand, but
    no cell gets more than one beam (``C``) nor more than its demand; capacity freed by capped
    cells goes to the others (exact water-filling: cell ``i`` gets ``min(u_i, λ·d_i)`` with
    ``u_i = min(d_i, C)`` and ``λ`` the largest level whose total fits in ``B·C``).  The
    ``beams`` a cell uses is then the fraction ``allocated / C``.

Within a cell the terminals share the cell's allocation by max-min fairness (water-filling on
demand: small demands are served in full, the rest split the remainder equally).  A terminal's
throughput is its share.  It is *congested* when it is active and its throughput is below
``min(min_mbps, demand)`` — a terminal that gets all it asks for is not congested even if it asks
for less than ``min_mbps``.  A terminal without a serving satellite gets 0 and is not congested
(it is unserved, a different cause).

Cell id 0 (what :func:`terminal_cells` returns for an unknown position) is treated as one cell
like any other.  Everything is computed over whole arrays: (time, satellite) is one group key and
the grouping is done by sorting, so there is no Python loop over time, satellites, cells or
terminals.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import h3.api.basic_int as h3_int
import numpy as np
import pandas as pd

from .defaults import default

POLICIES = ("greedy", "proportional")


def terminal_cells(lat_deg, lon_deg, resolution: int | None = None) -> np.ndarray:
    """H3 cell id (``uint64``) of each position, in the broadcast shape of the inputs.

    A position that is not finite or has ``|lat| > 90`` gets cell 0.  H3 is called once per
    distinct (lat, lon) pair, since terminals are mostly fixed.
    """
    res = int(default("h3_resolution")) if resolution is None else resolution
    try:
        res = operator.index(res)
    except TypeError:
        raise ValueError(f"resolution must be an integer 0..15, got {resolution!r}") from None
    if not 0 <= res <= 15:
        raise ValueError(f"resolution must be an integer 0..15, got {resolution!r}")
    lat = np.asarray(lat_deg, dtype=float)
    lon = np.asarray(lon_deg, dtype=float)
    try:
        lat, lon = np.broadcast_arrays(lat, lon)
    except ValueError:
        raise ValueError(f"lat_deg shape {lat.shape} and lon_deg shape {lon.shape} do not "
                         "broadcast together") from None
    shape = lat.shape
    if lat.ndim == 2 and lat.shape[0] > 1:
        # (time, terminal): a terminal that does not move needs its cell once.
        still = (lat == lat[0]).all(axis=0) & (lon == lon[0]).all(axis=0)
        if still.any():
            out = np.empty(shape, dtype=np.uint64)
            out[:, still] = _cells(lat[0, still], lon[0, still], res)[None, :]
            out[:, ~still] = _cells(lat[:, ~still].ravel(), lon[:, ~still].ravel(),
                                    res).reshape(shape[0], -1)
            return out
    return _cells(lat.ravel(), lon.ravel(), res).reshape(shape)


def _cells(lat: np.ndarray, lon: np.ndarray, res: int) -> np.ndarray:
    """H3 cells of 1-D positions, one H3 call per distinct (lat, lon) pair."""
    ok = np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90.0)
    out = np.zeros(lat.size, dtype=np.uint64)
    if ok.any():
        # Distinct pairs through one complex key (a 1-D sort, much faster than axis=0).
        key = lat[ok] + 1j * lon[ok]
        pairs, inverse = np.unique(key, return_inverse=True)
        cells = np.fromiter((h3_int.latlng_to_cell(a, b, res)
                             for a, b in zip(pairs.real.tolist(), pairs.imag.tolist(),
                                             strict=True)),
                            dtype=np.uint64, count=len(pairs))
        out[ok] = cells[inverse.reshape(-1)]
    return out


@dataclass
class Allocation:
    """Result of :func:`allocate`.

    ``throughput_mbps`` and ``congested`` have the shape of ``serving_sat``.  The ``sat_*`` arrays
    are ``(n_time, n_sat)`` (``(n_sat,)`` when ``serving_sat`` is 1-D).  ``cell_allocated_mbps``
    is one row per (time, sat, cell) group with active terminals: ``time, sat, cell,
    demand_mbps, allocated_mbps, beams, n_terminals``, sorted by (time, sat, cell).
    """

    throughput_mbps: np.ndarray
    congested: np.ndarray
    cell_allocated_mbps: pd.DataFrame
    sat_demand_mbps: np.ndarray
    sat_served_mbps: np.ndarray
    sat_beams_used: np.ndarray


def _broadcast(name: str, value, shape: tuple[int, ...], dtype=float) -> np.ndarray:
    arr = np.asarray(value, dtype=dtype) if dtype is not None else np.asarray(value)
    try:
        return np.broadcast_to(arr, shape)
    except ValueError:
        raise ValueError(f"{name} has shape {arr.shape}, which does not broadcast to "
                         f"serving_sat's shape {shape}") from None


def _starts(new: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start index of each run and the run id of each element, from a 'starts a run' mask."""
    return np.flatnonzero(new), np.cumsum(new) - 1


def _water_fill(group: np.ndarray, ratio: np.ndarray, cap: np.ndarray, weight: np.ndarray,
                capacity: np.ndarray) -> np.ndarray:
    """Exact grouped water-filling: item ``i`` gets ``min(cap_i, λ_g·weight_i)``.

    ``λ_g`` is the largest level with ``Σ_i min(cap_i, λ_g·weight_i) <= capacity_g``.  Items must
    be sorted by (``group``, ``ratio``) with ``ratio = cap / weight`` and ``group`` the dense run
    ids 0..G-1.  Item ``j`` is capped iff filling to its own ratio still fits:
    ``Σ_{i<=j} cap_i + ratio_j·Σ_{i>j} weight_i <= capacity``.
    """
    if group.size == 0:
        return np.zeros(0)
    n_groups = capacity.size
    start = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    cum_cap = np.cumsum(cap)
    cum_w = np.cumsum(weight)
    cap_incl = cum_cap - (cum_cap - cap)[start][group]
    w_incl = cum_w - (cum_w - weight)[start][group]
    w_total = np.bincount(group, weights=weight, minlength=n_groups)
    capped = cap_incl + ratio * (w_total[group] - w_incl) <= capacity[group]
    cap_used = np.bincount(group, weights=np.where(capped, cap, 0.0), minlength=n_groups)
    w_free = np.bincount(group, weights=np.where(capped, 0.0, weight), minlength=n_groups)
    level = np.divide(np.maximum(capacity - cap_used, 0.0), w_free, out=np.zeros(n_groups),
                      where=w_free > 0)
    return np.where(capped, cap, np.minimum(cap, level[group] * weight))


def allocate(serving_sat, cell, demand_mbps, min_mbps, *, n_sat: int,
             beams_per_sat: int | None = None, beam_capacity_mbps: float | None = None,
             policy: str = "greedy") -> Allocation:
    """Allocate user beams to cells and cell capacity to terminals (see the module docstring).

    ``serving_sat``: int ``(n_time, n_term)`` or ``(n_term,)``, satellite index 0..n_sat-1 or -1
    for none.  ``cell``: H3 ids ``(n_term,)`` or ``(n_time, n_term)``.  ``demand_mbps`` and
    ``min_mbps``: broadcastable to ``serving_sat``'s shape.  Caller mistakes raise ``ValueError``
    naming the argument.
    """
    # --- validate
    try:
        n_sat = operator.index(n_sat)
    except TypeError:
        raise ValueError(f"n_sat must be a non-negative integer, got {n_sat!r}") from None
    if n_sat < 0:
        raise ValueError(f"n_sat must be a non-negative integer, got {n_sat!r}")
    n_beams = int(default("beams_per_satellite")) if beams_per_sat is None else beams_per_sat
    try:
        n_beams = operator.index(n_beams)
    except TypeError:
        raise ValueError(f"beams_per_sat must be a positive integer, got {beams_per_sat!r}"
                         ) from None
    if n_beams < 1:
        raise ValueError(f"beams_per_sat must be a positive integer, got {beams_per_sat!r}")
    beam_mbps = (default("beam_capacity_mbps") if beam_capacity_mbps is None
                 else beam_capacity_mbps)
    try:
        beam_mbps = float(beam_mbps)
    except (TypeError, ValueError):
        raise ValueError("beam_capacity_mbps must be a positive finite number, got "
                         f"{beam_capacity_mbps!r}") from None
    if not (np.isfinite(beam_mbps) and beam_mbps > 0):
        raise ValueError("beam_capacity_mbps must be a positive finite number, got "
                         f"{beam_capacity_mbps!r}")
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; known: {list(POLICIES)}")

    sat = np.asarray(serving_sat)
    if sat.ndim not in (1, 2) or not (np.issubdtype(sat.dtype, np.integer) or sat.size == 0):
        raise ValueError("serving_sat must be an integer array of shape (n_time, n_term) or "
                         f"(n_term,), got dtype {sat.dtype} shape {sat.shape}")
    one_d = sat.ndim == 1
    sat2 = sat.astype(np.int64)[None, :] if one_d else sat.astype(np.int64)
    n_time, n_term = sat2.shape
    if sat2.size and (sat2.min() < -1 or sat2.max() >= n_sat):
        raise ValueError(f"serving_sat must hold -1 (none) or a satellite index 0..{n_sat - 1}, "
                         f"got values {sat2.min()}..{sat2.max()}")
    shape = sat.shape
    cell_arr = np.asarray(cell)
    if not (np.issubdtype(cell_arr.dtype, np.integer) or cell_arr.size == 0):
        raise ValueError(f"cell must be an integer (uint64 H3 id) array, got dtype "
                         f"{cell_arr.dtype}")
    if np.issubdtype(cell_arr.dtype, np.signedinteger) and cell_arr.size and cell_arr.min() < 0:
        raise ValueError("cell must hold non-negative H3 ids, got a negative value")
    # Dense cell index (unique over the cell argument as given, usually just (n_term,)).
    cell_ids, cell_idx = np.unique(cell_arr.astype(np.uint64), return_inverse=True)
    cell2 = _broadcast("cell", cell_idx.reshape(cell_arr.shape), shape, dtype=None
                       ).reshape(sat2.shape)
    demand2 = _broadcast("demand_mbps", demand_mbps, shape).reshape(sat2.shape)
    min2 = _broadcast("min_mbps", min_mbps, shape).reshape(sat2.shape)
    if not np.all(np.isfinite(demand2) & (demand2 >= 0)):
        raise ValueError("demand_mbps must be finite and >= 0")
    if not np.all(min2 >= 0):  # also rejects NaN
        raise ValueError("min_mbps must be >= 0 (and not NaN)")

    # --- terminals grouped by (time, sat, cell), sorted by demand within a group
    active = (sat2 >= 0) & (demand2 > 0)
    flat = np.flatnonzero(active)
    key = flat // max(n_term, 1) * n_sat + sat2.ravel()[flat]  # (time, sat) as one key
    term_cell = cell2.ravel()[flat]
    term_demand = demand2.ravel()[flat]
    n_ids = max(cell_ids.size, 1)
    if n_time * n_sat * n_ids < 2**62:  # (time, sat, cell) as one int64 key: a faster sort
        order = np.lexsort((term_demand, key * n_ids + term_cell))
    else:  # pragma: no cover - more groups than an int64 key holds
        order = np.lexsort((term_demand, term_cell, key))
    flat, key, term_cell, term_demand = flat[order], key[order], term_cell[order], \
        term_demand[order]
    new_cell = np.r_[True, (key[1:] != key[:-1]) | (term_cell[1:] != term_cell[:-1])]
    cell_start, cell_of_term = _starts(new_cell[: flat.size])
    n_cells = cell_start.size
    g_key = key[cell_start]
    g_cell = cell_ids[term_cell[cell_start]]
    g_terms = np.diff(np.r_[cell_start, flat.size])
    g_demand = np.bincount(cell_of_term, weights=term_demand, minlength=n_cells).astype(float)

    # --- cells grouped by (time, sat): already contiguous because of the sort above
    sat_start, sat_of_cell = _starts(np.r_[True, g_key[1:] != g_key[:-1]][:n_cells])
    cell_cap = np.minimum(g_demand, beam_mbps)
    if policy == "greedy":
        # Cells are in ascending id within a satellite already; the stable sort keeps that order
        # for equal demands, so ties go to the lower cell id.
        by_rank = np.lexsort((-g_demand, sat_of_cell))
        rank = np.empty(n_cells, dtype=np.int64)
        rank[by_rank] = np.arange(n_cells) - sat_start[sat_of_cell[by_rank]]
        g_beams = (rank < n_beams).astype(float)
        g_alloc = np.where(rank < n_beams, cell_cap, 0.0)
    else:
        ratio = np.divide(cell_cap, g_demand, out=np.ones(n_cells), where=g_demand > 0)
        by_ratio = np.lexsort((ratio, sat_of_cell))
        sat_capacity = np.full(sat_start.size, n_beams * beam_mbps)
        g_alloc = np.empty(n_cells)
        g_alloc[by_ratio] = _water_fill(sat_of_cell[by_ratio], ratio[by_ratio],
                                        cell_cap[by_ratio], g_demand[by_ratio], sat_capacity)
        g_beams = g_alloc / beam_mbps

    # --- terminals share their cell's allocation max-min fairly (sorted by demand already)
    term_mbps = _water_fill(cell_of_term, term_demand, term_demand, np.ones(flat.size), g_alloc)
    throughput = np.zeros(sat2.size)
    throughput[flat] = term_mbps
    throughput = throughput.reshape(sat2.shape)
    congested = active & (throughput < np.minimum(min2, demand2))

    # --- per-satellite totals and the cell table
    n_keys = n_time * n_sat
    sat_shape = (n_sat,) if one_d else (n_time, n_sat)

    def per_sat(weights: np.ndarray) -> np.ndarray:
        total = np.bincount(g_key, weights=weights, minlength=n_keys)
        return total.astype(float, copy=False).reshape(sat_shape)

    table = pd.DataFrame({
        "time": g_key // max(n_sat, 1),
        "sat": g_key % max(n_sat, 1),
        "cell": g_cell.astype(np.uint64),
        "demand_mbps": g_demand,
        "allocated_mbps": g_alloc,
        "beams": g_beams,
        "n_terminals": g_terms.astype(np.int64),
    })
    return Allocation(
        throughput_mbps=throughput.reshape(shape),
        congested=congested.reshape(shape),
        cell_allocated_mbps=table,
        sat_demand_mbps=per_sat(g_demand),
        sat_served_mbps=per_sat(g_alloc),
        sat_beams_used=per_sat(g_beams),
    )
