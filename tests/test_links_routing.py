"""Laser links and shortest paths: hand geometry and a brute-force reference (networkx)."""

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import leotwin
from leotwin.constants import C_KM_S, WGS84_A_KM
from leotwin.links.isl import infer_planes, isl_feasible, orbit_angles, plus_grid_edges
from leotwin.routing.graph import _tree_labels, sat_routes


def test_overhead_satellite_range_and_light_time():
    site = leotwin.geodetic_to_ecef(48.0, 37.8, 0.0)
    # 550 km along the geodetic normal (look_angles' "up").
    lat, lon = np.radians(48.0), np.radians(37.8)
    normal = np.array([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)])
    az, el, rng = leotwin.look_angles(site + 550.0 * normal, 48.0, 37.8, 0.0)
    assert el == pytest.approx(90.0, abs=1e-6)
    assert rng == pytest.approx(550.0, abs=1e-9)
    assert leotwin.frames.light_time_ms(rng) == pytest.approx(1.835, abs=5e-4)  # the ms


def _equatorial(radius_km, angle_deg):
    a = np.radians(angle_deg)
    return np.stack([radius_km * np.cos(a), radius_km * np.sin(a), np.zeros_like(a)], axis=-1)


@pytest.mark.parametrize("separation_deg", [1.0, 10.0, 30.0])
def test_isl_chord_and_delay(separation_deg):
    r = WGS84_A_KM + 550.0
    pos = _equatorial(r, np.array([0.0, separation_deg]))[None]
    usable, length, delay = isl_feasible(pos, np.array([[0, 1]]), max_range_km=1e5)
    chord = 2 * r * np.sin(np.radians(separation_deg) / 2)
    assert length[0, 0] == pytest.approx(chord, rel=1e-12)
    assert delay[0, 0] == pytest.approx(chord / C_KM_S * 1e3, rel=1e-12)
    assert usable[0, 0]


def test_isl_through_earth_and_grazing_are_rejected():
    r = WGS84_A_KM + 550.0
    # The closest approach of the chord to the centre is r·cos(θ/2).
    def sep_for_grazing(alt_km):
        return 2 * np.degrees(np.arccos((WGS84_A_KM + alt_km) / r))
    seps = [180.0, sep_for_grazing(70.0), sep_for_grazing(90.0)]
    pos = np.concatenate([_equatorial(r, np.array([0.0, s])) for s in seps])[None]
    edges = np.array([[0, 1], [2, 3], [4, 5]])
    usable, _, _ = isl_feasible(pos, edges, max_range_km=1e5, margin_km=80.0)
    np.testing.assert_array_equal(usable[0], [False, False, True])
    usable, _, _ = isl_feasible(pos, edges, max_range_km=100.0)  # too long in any case
    assert not usable.any()


def test_plus_grid_on_a_walker_shell():
    planes, per_plane = 12, 10
    con = leotwin.walker_shell(altitude_km=550, inclination_deg=53, planes=planes,
                               sats_per_plane=per_plane, phasing=1, epoch="2022-10-07")
    ds = leotwin.propagate(con, np.array(["2022-10-07T00:30"], dtype="datetime64[ns]"))
    r, v = ds["r_ecef_km"].values[0], ds["v_ecef_km_s"].values[0]
    node, _ = orbit_angles(r, v)
    plane = infer_planes(node, ds["shell"].values, np.ones(len(con), bool))
    true_plane = np.arange(len(con)) // per_plane
    # Same partition as the construction (labels may be permuted).
    assert len(np.unique(plane)) == planes
    for p in range(planes):
        assert len(np.unique(plane[true_plane == p])) == 1
    edges = plus_grid_edges(r, v, ds["shell"].values, np.ones(len(con), bool))
    degree = np.bincount(edges.ravel(), minlength=len(con))
    assert (degree == 4).all()
    pa, pb = true_plane[edges[:, 0]], true_plane[edges[:, 1]]
    intra = pa == pb
    assert intra.sum() == planes * per_plane
    slot_a, slot_b = edges[intra, 0] % per_plane, edges[intra, 1] % per_plane
    assert np.all(((slot_b - slot_a) % per_plane == 1) | ((slot_a - slot_b) % per_plane == 1))
    assert np.all(((pb[~intra] - pa[~intra]) % planes == 1)
                  | ((pa[~intra] - pb[~intra]) % planes == 1))


def test_tree_labels():
    # Children listed before their parents too: the walk up labels them in any order.
    pred = np.array([-1, 0, 1, 2, 3, 0, 5, -1, 7, 10, 4])
    marked = np.zeros(11, bool)
    marked[[2, 5, 10]] = True
    label, depth = _tree_labels(pred, marked)
    np.testing.assert_array_equal(depth, [0, 1, 2, 3, 4, 1, 2, 0, 1, 6, 5])
    np.testing.assert_array_equal(label, [-1, -1, 2, 2, 2, 5, 5, -1, -1, 10, 10])
    with pytest.raises(ValueError, match="cycle"):
        _tree_labels(np.array([1, 2, 0]), np.zeros(3, bool))


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_tree_labels_equal_a_walk_to_the_root(data):
    n = data.draw(st.integers(1, 40))
    # A random forest: each node's parent comes earlier in a random order, or none.
    order = np.array(data.draw(st.permutations(range(n))))
    pred = np.full(n, -1, np.int64)
    for k in range(1, n):
        parent = data.draw(st.integers(-1, k - 1))
        pred[order[k]] = order[parent] if parent >= 0 else -1
    marked = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    label, depth = _tree_labels(pred, marked)
    for v in range(n):
        path = [v]
        while pred[path[-1]] >= 0:
            path.append(pred[path[-1]])
        assert depth[v] == len(path) - 1
        assert label[v] == next((u for u in path if marked[u]), -1)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n_sat=st.integers(2, 30), n_gw=st.integers(1, 6),
       n_pop=st.integers(1, 3))
def test_sat_routes_equal_networkx_dijkstra(seed, n_sat, n_gw, n_pop):
    rng = np.random.default_rng(seed)
    n_isl = rng.integers(0, 3 * n_sat)
    isl = rng.integers(0, n_sat, size=(n_isl, 2))
    isl = isl[isl[:, 0] != isl[:, 1]]
    isl_ms = rng.uniform(1, 20, len(isl))
    n_feed = rng.integers(0, 2 * n_gw + 1)
    feed_gw, feed_sat = rng.integers(0, n_gw, n_feed), rng.integers(0, n_sat, n_feed)
    feed_ms = rng.uniform(1.5, 4, n_feed)
    gw_pop = rng.integers(0, n_pop, n_gw)
    fibre_ms = rng.uniform(0, 10, n_gw)
    gw_up = rng.random(n_gw) > 0.2
    proc = 0.1
    res = sat_routes(n_sat, n_gw, n_pop, isl_edges=isl.reshape(-1, 2), isl_delay_ms=isl_ms,
                     gw_sat_gw=feed_gw, gw_sat_sat=feed_sat, gw_sat_delay_ms=feed_ms,
                     gw_pop=gw_pop, gw_pop_delay_ms=fibre_ms, gw_up=gw_up,
                     processing_delay_ms=proc)
    # Reference: a directed networkx graph away from the PoPs (a gateway is an exit only).
    g = nx.DiGraph()
    def add(u, v, w):  # parallel links: only the lightest matters
        if g.has_edge(u, v):
            g[u][v]["weight"] = min(g[u][v]["weight"], w)
        else:
            g.add_edge(u, v, weight=w)
    for (a, b), w in zip(isl, isl_ms, strict=True):
        add(("s", a), ("s", b), w + proc)
        add(("s", b), ("s", a), w + proc)
    for gw, s, w in zip(feed_gw, feed_sat, feed_ms, strict=True):
        add(("g", gw), ("s", s), w + proc)
    for gw in range(n_gw):
        if gw_up[gw]:
            add(("p", gw_pop[gw]), ("g", gw), fibre_ms[gw] + proc)
    sources = [("p", p) for p in range(n_pop) if ("p", p) in g]
    dist = nx.multi_source_dijkstra_path_length(g, sources) if sources else {}
    for s in range(n_sat):
        ref = dist.get(("s", s), np.inf)
        if np.isinf(ref):
            assert np.isnan(res.delay_ms[s]) and res.gateway[s] == -1 and res.pop[s] == -1
            continue
        assert res.delay_ms[s] == pytest.approx(ref, abs=1e-9)
        # The reported gateway/PoP/hops describe a path of that same length.
        gw, pop = res.gateway[s], res.pop[s]
        assert gw_pop[gw] == pop and gw_up[gw]
        via = nx.dijkstra_path_length(g, ("g", gw), ("s", s)) + fibre_ms[gw] + proc
        assert via == pytest.approx(ref, abs=1e-9)
        # Random real weights: shortest paths are unique, so the hop count must match.
        assert res.hops[s] == len(nx.dijkstra_path(g, ("g", gw), ("s", s))) - 1


def test_sat_routes_without_any_link():
    empty = np.empty(0, np.int64)
    res = sat_routes(3, 1, 1, isl_edges=np.empty((0, 2), np.int64), isl_delay_ms=np.empty(0),
                     gw_sat_gw=empty, gw_sat_sat=empty, gw_sat_delay_ms=np.empty(0),
                     gw_pop=np.array([0]), gw_pop_delay_ms=np.array([0.0]))
    assert np.isnan(res.delay_ms).all() and (res.gateway == -1).all() and (res.pop == -1).all()


def _random_step(rng, n_sat: int, n_gw: int, n_pop: int):
    """A random laser topology (each link once) with usable links and delays, feeder links
    (unique gateway–satellite pairs, in random order) and fibre to PoPs."""
    pairs = np.unique(np.sort(rng.integers(0, n_sat, size=(3 * n_sat, 2)), axis=1), axis=0)
    isl = pairs[pairs[:, 0] != pairs[:, 1]]
    isl_ms = rng.uniform(1, 20, len(isl))
    usable = rng.random(len(isl)) > 0.2
    feed = np.unique(np.c_[rng.integers(0, n_gw, 2 * n_gw), rng.integers(0, n_sat, 2 * n_gw)],
                     axis=0)
    feed = feed[rng.permutation(len(feed))]
    feed_ms = rng.uniform(1.5, 4, len(feed))
    gw_pop = rng.integers(0, n_pop, n_gw)
    fibre_ms = rng.uniform(0, 10, n_gw)
    return isl, isl_ms, usable, feed, feed_ms, gw_pop, fibre_ms


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n_sat=st.integers(2, 40), n_gw=st.integers(1, 6),
       n_pop=st.integers(1, 3))
def test_step_graph_equals_sat_routes(seed, n_sat, n_gw, n_pop):
    """The per-run prepared graph of network_state gives exactly sat_routes' answer."""
    from leotwin.routing.graph import StepGraph

    rng = np.random.default_rng(seed)
    isl, isl_ms, usable, feed, feed_ms, gw_pop, fibre_ms = _random_step(rng, n_sat, n_gw, n_pop)
    gw_up = rng.random(n_gw) > 0.2
    ref = sat_routes(n_sat, n_gw, n_pop, isl_edges=isl[usable], isl_delay_ms=isl_ms[usable],
                     gw_sat_gw=feed[:, 0], gw_sat_sat=feed[:, 1], gw_sat_delay_ms=feed_ms,
                     gw_pop=gw_pop, gw_pop_delay_ms=fibre_ms, gw_up=gw_up,
                     processing_delay_ms=0.1)
    got = StepGraph(n_sat, n_gw, n_pop, isl, gw_pop, fibre_ms, 0.1).routes(
        usable, isl_ms, feed[:, 0], feed[:, 1], feed_ms, gw_up=gw_up)
    np.testing.assert_array_equal(got.delay_ms, ref.delay_ms)
    for name in ("gateway", "pop", "hops", "pred"):
        np.testing.assert_array_equal(getattr(got, name), getattr(ref, name))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n_sat=st.integers(2, 40), n_gw=st.integers(1, 6),
       n_pop=st.integers(1, 3), outages=st.booleans())
def test_reroute_equals_a_full_recomputation(seed, n_sat, n_gw, n_pop, outages):
    """Routes without failed satellites (and gateways that are down) recomputed from the
    healthy routes below the removed nodes only are the full shortest-path answer."""
    from leotwin.routing.graph import StepGraph

    rng = np.random.default_rng(seed)
    isl, isl_ms, usable, feed, feed_ms, gw_pop, fibre_ms = _random_step(rng, n_sat, n_gw, n_pop)
    failed = rng.random(n_sat) < 0.15
    gw_up = rng.random(n_gw) > 0.3 if outages else None
    graph = StepGraph(n_sat, n_gw, n_pop, isl, gw_pop, fibre_ms, 0.1)
    clean = graph.routes(usable, isl_ms, feed[:, 0], feed[:, 1], feed_ms)
    ok = ~failed[feed[:, 1]]
    ref = graph.routes(usable & ~failed[isl[:, 0]] & ~failed[isl[:, 1]], isl_ms,
                       feed[ok, 0], feed[ok, 1], feed_ms[ok], gw_up=gw_up)
    got = graph.reroute(clean, failed, gw_up)
    np.testing.assert_array_equal(got.delay_ms, ref.delay_ms)
    for name in ("gateway", "pop", "hops", "pred"):
        np.testing.assert_array_equal(getattr(got, name), getattr(ref, name))


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_isl_feasible_equals_its_numpy_definition(data):
    """The compiled pass of :func:`isl_feasible` against its definition in numpy: length
    within range, both ends valid and :func:`segment_clears_earth`, bit for bit — on random
    positions from low orbits to grazing and Earth-crossing links, with NaNs and coincident
    satellites."""
    from leotwin.links.isl import segment_clears_earth

    n_t, n_sat = data.draw(st.integers(1, 4)), data.draw(st.integers(2, 12))
    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    u = rng.normal(size=(n_t, n_sat, 3))
    r = u / np.linalg.norm(u, axis=-1, keepdims=True) * rng.uniform(6300, 7600, (n_t, n_sat, 1))
    r[rng.random((n_t, n_sat)) < 0.1] = np.nan
    r[:, -1] = r[:, 0]  # a coincident pair
    edges = np.array([(i, j) for i in range(n_sat) for j in range(n_sat) if i != j])
    valid = rng.random((n_t, n_sat)) < 0.9
    usable, length, delay = isl_feasible(r, edges, max_range_km=5000.0, margin_km=80.0,
                                         valid=valid)
    a, b = r[:, edges[:, 0]], r[:, edges[:, 1]]
    ref_len = np.linalg.norm(b - a, axis=-1)
    with np.errstate(invalid="ignore"):
        ref = ((ref_len <= 5000.0) & segment_clears_earth(a, b, 80.0)
               & valid[:, edges[:, 0]] & valid[:, edges[:, 1]])
    np.testing.assert_array_equal(usable, ref)
    np.testing.assert_array_equal(length, ref_len)
