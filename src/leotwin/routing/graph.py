"""One sparse graph per time step and shortest paths from all PoPs in one call.

Nodes are satellites ``0..n_sat-1``, then gateways, then PoPs. Edge weights are one-way delays
in ms (propagation plus a fixed per-hop processing delay). A single multi-source Dijkstra
(``scipy.sparse.csgraph.dijkstra`` with ``min_only=True``) gives, for every satellite, the
delay to its nearest PoP and the predecessor tree; gateway, PoP and hop count of each
satellite's path come from that tree in one compiled linear pass.

:class:`StepGraph` is the same computation for the repeated calls of
:func:`leotwin.network_state`: the fixed parts (laser topology sorted once, fibre) are prepared
once per run and each step's CSR matrix is assembled directly in its canonical (row, column)
order, without a sort of all edges or a COO conversion; the result is the same matrix
:func:`sat_routes` builds, so both give the same routes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_array, csr_array
from scipy.sparse.csgraph import dijkstra

from .._arrays import run_starts
from .._jit import kernel

_NO_PRED = -9999  # scipy's marker for "no predecessor"
_MIN_WEIGHT_MS = 1e-9  # a zero weight would be read as "no edge" by csgraph


@dataclass
class SatRoutes:
    """Per satellite at one step: best path to a PoP (NaN/−1 where none)."""

    delay_ms: np.ndarray  # one-way, satellite → PoP, ms
    gateway: np.ndarray  # gateway index (−1: none)
    pop: np.ndarray  # PoP index (−1: none)
    hops: np.ndarray  # space links from the satellite down to the gateway (≥ 1), 0 where none
    #: Predecessor of every node (satellites, gateways, PoPs) on its path, −1 for none.
    pred: np.ndarray | None = None
    #: Distance of every node (ms) and the graph's edges (from, to, weight) — set by
    #: :meth:`StepGraph.routes`, for :meth:`StepGraph.reroute`.
    dist: np.ndarray | None = None
    edges: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def without(self, sats: np.ndarray) -> SatRoutes:
        """These routes with satellites ``sats`` (bool mask) removed, valid when no other
        node's path passes through them (none of them is a predecessor): then the shortest
        paths of the others are unchanged."""
        return SatRoutes(np.where(sats, np.nan, self.delay_ms), np.where(sats, -1, self.gateway),
                         np.where(sats, -1, self.pop), np.where(sats, 0, self.hops), None)

    def uses(self, sats: np.ndarray, gateways: np.ndarray) -> bool:
        """Whether some path passes through one of ``sats`` (then it is a predecessor) or
        ends at one of ``gateways`` (bool masks)."""
        n_sat, p = sats.size, self.pred[: sats.size]
        via_sat = (p >= 0) & (p < n_sat)
        if sats.any() and sats[p[via_sat]].any():
            return True
        return bool(gateways.any() and gateways[self.gateway[self.gateway >= 0]].any())


@kernel
def _tree_labels(pred, marked):
    """For every node of a forest (``pred``: parent, −1 at roots): the nearest ``marked``
    node on its path to the root, itself included (−1: none), and its number of edges to
    the root. One linear pass: a node's path is walked up to the first node already
    labelled, then labelled on the way down."""
    n = pred.size
    label = np.full(n, -1, np.int64)
    depth = np.full(n, -1, np.int64)  # -1: not yet labelled
    path = np.empty(n, np.int64)
    for v in range(n):
        k = 0
        u = v
        while u >= 0 and depth[u] < 0:
            if k == n:
                raise ValueError("pred has a cycle: not a forest")
            path[k] = u
            k += 1
            u = pred[u]
        d = -1 if u < 0 else depth[u]
        lab = -1 if u < 0 else label[u]
        while k > 0:
            k -= 1
            w = path[k]
            d += 1
            if marked[w]:
                lab = w
            depth[w] = d
            label[w] = lab
    return label, depth


def sat_routes(n_sat: int, n_gw: int, n_pop: int, *, isl_edges: np.ndarray,
               isl_delay_ms: np.ndarray, gw_sat_gw: np.ndarray, gw_sat_sat: np.ndarray,
               gw_sat_delay_ms: np.ndarray, gw_pop: np.ndarray, gw_pop_delay_ms: np.ndarray,
               gw_up: np.ndarray | None = None, processing_delay_ms: float = 0.0) -> SatRoutes:
    """Shortest one-way delay from every satellite to the nearest PoP, at one time step.

    Paths are PoP – fibre – gateway – feeder link – satellite – lasers – satellite: a gateway
    is only ever the exit, not a relay between satellites.

    ``isl_edges`` ``(n_isl, 2)`` usable laser links with ``isl_delay_ms``; feeder links
    ``gw_sat_gw[k] ↔ gw_sat_sat[k]`` with ``gw_sat_delay_ms``; every gateway ``g`` reaches PoP
    ``gw_pop[g]`` over fibre in ``gw_pop_delay_ms[g]`` unless ``gw_up[g]`` is False. Each link
    adds ``processing_delay_ms``. Bent-pipe routing is the same call with no ISL edges.
    """
    gw_node = n_sat + np.arange(n_gw)
    pop_node = n_sat + n_gw + np.arange(n_pop)
    up = np.ones(n_gw, bool) if gw_up is None else np.asarray(gw_up, bool)
    # Directed away from the PoPs: fibre PoP→gateway, feeder gateway→satellite, lasers both
    # ways. A gateway is an exit to the Internet, never a relay between two satellites.
    rows = np.concatenate([pop_node[gw_pop[up]], gw_node[gw_sat_gw], isl_edges[:, 0],
                           isl_edges[:, 1]])
    cols = np.concatenate([gw_node[up], gw_sat_sat, isl_edges[:, 1], isl_edges[:, 0]])
    w = np.concatenate([gw_pop_delay_ms[up], gw_sat_delay_ms, isl_delay_ms, isl_delay_ms])
    w = w + processing_delay_ms
    n = n_sat + n_gw + n_pop
    # One entry per (from, to), the lightest of parallel links (a sparse matrix would add
    # duplicate entries up).
    order = np.lexsort((w, cols, rows))
    rows, cols, w = rows[order], cols[order], w[order]
    first = run_starts(rows, cols)
    rows, cols, w = rows[first], cols[first], w[first]
    graph = coo_array((np.maximum(w, _MIN_WEIGHT_MS), (rows, cols)), shape=(n, n)).tocsr()
    return _routes(graph, n_sat, n_gw, n_pop)


def _routes(graph, n_sat: int, n_gw: int, n_pop: int) -> SatRoutes:
    """Multi-source Dijkstra from the PoP nodes of a canonical CSR graph, and each
    satellite's gateway, PoP and hop count from the predecessor tree."""
    pop_node = n_sat + n_gw + np.arange(n_pop)
    dist, pred, _sources = dijkstra(graph, directed=True, indices=pop_node,
                                    return_predecessors=True, min_only=True)
    pred = np.where(pred == _NO_PRED, -1, pred).astype(np.int64)
    return _tree_routes(dist, pred, n_sat, n_gw, n_pop)


def _tree_routes(dist: np.ndarray, pred: np.ndarray, n_sat: int, n_gw: int,
                 n_pop: int) -> SatRoutes:
    """Each satellite's delay, gateway, PoP and hop count from a shortest-path tree."""
    n = n_sat + n_gw + n_pop
    gw_node = n_sat + np.arange(n_gw)
    is_gw = np.zeros(n, bool)
    is_gw[gw_node] = True
    gw_of, depth = _tree_labels(pred, is_gw)
    # Only PoPs link to a gateway (fibre), so the PoP of a path is its gateway's predecessor.
    pop_of = np.where(gw_of >= 0, pred[np.maximum(gw_of, 0)], -1)
    reach = np.isfinite(dist[:n_sat]) & (gw_of[:n_sat] >= 0)
    return SatRoutes(
        delay_ms=np.where(reach, dist[:n_sat], np.nan),
        gateway=np.where(reach, gw_of[:n_sat] - n_sat, -1),
        pop=np.where(reach, pop_of[:n_sat] - n_sat - n_gw, -1),
        hops=np.where(reach, depth[:n_sat] - 1, 0),  # minus the fibre edge PoP–gateway
        pred=pred,
        dist=dist,
    )


class StepGraph:
    """:func:`sat_routes` for many steps of one run with a fixed laser topology.

    ``isl_edges`` ``(n_edge, 2)`` (each undirected link once, no self-links, no repeats),
    ``gw_pop`` and ``gw_pop_delay_ms`` as in :func:`sat_routes`. :meth:`routes` takes one
    step's usable links and feeder links (unique (gateway, satellite) pairs) and returns what
    :func:`sat_routes` returns for the same inputs.
    """

    def __init__(self, n_sat: int, n_gw: int, n_pop: int, isl_edges: np.ndarray,
                 gw_pop: np.ndarray, gw_pop_delay_ms: np.ndarray,
                 processing_delay_ms: float = 0.0):
        self.n_sat, self.n_gw, self.n_pop = n_sat, n_gw, n_pop
        self.n = n_sat + n_gw + n_pop
        self.processing_delay_ms = processing_delay_ms
        e = np.asarray(isl_edges, np.int64).reshape(-1, 2)
        # Both directions of every link, sorted by (from, to) once: a step only masks them.
        src = np.r_[e[:, 0], e[:, 1]]
        dst = np.r_[e[:, 1], e[:, 0]]
        link = np.r_[np.arange(len(e)), np.arange(len(e))]
        order = np.lexsort((dst, src))
        self.isl_src, self.isl_dst, self.isl_link = src[order], dst[order], link[order]
        # Fibre PoP → gateway, sorted by (PoP, gateway).
        gw_pop = np.asarray(gw_pop, np.int64)
        fo = np.lexsort((np.arange(n_gw), gw_pop))
        self.fib_gw = fo
        self.fib_src = n_sat + n_gw + gw_pop[fo]
        self.fib_w = np.asarray(gw_pop_delay_ms, np.float64)[fo] + processing_delay_ms

    def routes(self, isl_ok: np.ndarray, isl_delay_ms: np.ndarray, feed_gw: np.ndarray,
               feed_sat: np.ndarray, feed_delay_ms: np.ndarray,
               gw_up: np.ndarray | None = None) -> SatRoutes:
        """Routes at one step: ``isl_ok``/``isl_delay_ms`` per link of the topology, feeder
        links ``feed_gw[k] → feed_sat[k]`` (any order) and gateways with backhaul."""
        keep = np.flatnonzero(isl_ok[self.isl_link])
        i_src, i_dst = self.isl_src[keep], self.isl_dst[keep]
        i_w = isl_delay_ms[self.isl_link[keep]] + self.processing_delay_ms
        fo = np.lexsort((feed_sat, feed_gw))
        f_src = self.n_sat + feed_gw[fo]
        f_w = feed_delay_ms[fo] + self.processing_delay_ms
        fib = slice(None) if gw_up is None else np.asarray(gw_up, bool)[self.fib_gw]
        rows = np.concatenate([i_src, f_src, self.fib_src[fib]])
        cols = np.concatenate([i_dst, feed_sat[fo], self.n_sat + self.fib_gw[fib]])
        w = np.concatenate([i_w, f_w, self.fib_w[fib]])
        indptr = np.zeros(self.n + 1, np.int64)
        np.cumsum(np.bincount(rows, minlength=self.n), out=indptr[1:])
        w = np.maximum(w, _MIN_WEIGHT_MS)
        graph = csr_array((w, cols, indptr), shape=(self.n, self.n))
        graph.has_sorted_indices = True
        out = _routes(graph, self.n_sat, self.n_gw, self.n_pop)
        out.edges = (rows, cols, w)
        return out

    def reroute(self, clean: SatRoutes, failed: np.ndarray | None = None,
                gw_up: np.ndarray | None = None) -> SatRoutes:
        """:meth:`routes` of the same step with satellites ``failed`` and gateways not
        ``gw_up`` (bool masks) removed, from that step's routes ``clean`` without them.

        Removing nodes only lengthens paths, so every node whose shortest path avoids them
        keeps its distance and path; only the subtrees below the removed nodes are
        recomputed: one Dijkstra on those nodes from a super-source linked to each of them
        with its best entry ``dist[u] + w(u, v)`` from a node that keeps its path. Distances
        are the same sums in the same order as a full recomputation, so the result is the
        same (up to how exact ties between equal-length paths are broken)."""
        n_sat, n = self.n_sat, self.n
        removed = np.zeros(n, bool)
        if failed is not None:
            removed[:n_sat] = failed
        if gw_up is not None:
            removed[n_sat:n_sat + self.n_gw] = ~np.asarray(gw_up, bool)
        below = _tree_labels(clean.pred, removed)[0] >= 0  # removed or under one
        pred = np.where(below, -1, clean.pred)
        dist = np.where(below, np.inf, clean.dist)
        sub = np.flatnonzero(below & ~removed)  # to recompute
        if sub.size:
            rows, cols, w = clean.edges
            into = below[cols] & ~removed[cols] & ~removed[rows]
            rows, cols, w = rows[into], cols[into], w[into]
            inner = below[rows]
            local = np.full(n, -1, np.int64)
            local[sub] = np.arange(sub.size)
            # Best entry into each recomputed node from a node that keeps its path.
            b_rows, b_cols = rows[~inner], cols[~inner]
            entry = dist[b_rows] + w[~inner]
            order = np.lexsort((entry, b_cols))
            first = order[run_starts(b_cols[order])]
            e_node, e_from, e_w = b_cols[first], b_rows[first], entry[first]
            ok = np.isfinite(e_w)
            e_node, e_from, e_w = e_node[ok], e_from[ok], e_w[ok]
            src = sub.size  # the super-source
            g_rows = np.r_[np.full(e_node.size, src), local[rows[inner]]]
            g_cols = np.r_[local[e_node], local[cols[inner]]]
            graph = coo_array((np.r_[e_w, w[inner]], (g_rows, g_cols)),
                              shape=(src + 1, src + 1)).tocsr()
            d_sub, p_sub = dijkstra(graph, directed=True, indices=src,
                                    return_predecessors=True)
            d_sub, p_sub = d_sub[:src], p_sub[:src]
            reach = np.isfinite(d_sub)
            via = np.full(sub.size, -1, np.int64)
            via[local[e_node]] = e_from
            dist[sub] = np.where(reach, d_sub, np.inf)
            pred[sub] = np.where(~reach, -1, np.where(p_sub == src, via,
                                                      np.r_[sub, -1][np.maximum(p_sub, 0)]))
        return _tree_routes(dist, pred, n_sat, self.n_gw, self.n_pop)
