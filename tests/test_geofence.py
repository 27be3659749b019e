"""Geofences: ZoneIndex equals exact point-in-polygon; every bad-input rule; bundled borders."""

import copy
import json

import numpy as np
import pytest
import shapely
import shapely.geometry
from hypothesis import given, settings
from hypothesis import strategies as st

from leotwin.policy import geofence
from leotwin.policy.errors import PolicyError
from leotwin.policy.geofence import ZoneIndex, country_polygons, parse_geometry, read_zones

N_POINTS = 100_000
KM_PER_DEG = 111.32

# ----------------------------------------------------------------------------- helpers


def reference(zones, lat, lon):
    """The obviously right answer: shapely ``covers`` per (point, zone) on an unprepared copy,
    testing each point at lon and at lon + 360 (unwrapped antimeridian zones)."""
    out = np.zeros((len(lat), len(zones)), dtype=bool)
    for j, zone in enumerate(zones):
        zone = shapely.from_wkb(shapely.to_wkb(zone))
        out[:, j] = (shapely.covers(zone, shapely.points(lon, lat))
                     | shapely.covers(zone, shapely.points(lon + 360.0, lat)))
    return out


def near_boundary(zone, n, rng, km=1.0):
    """(lat, lon) of n points within ``km`` of the zone's boundary, plus its exact vertices."""
    boundary = shapely.boundary(zone)
    on_edge = shapely.line_interpolate_point(boundary, rng.uniform(0, 1, n), normalized=True)
    xy = shapely.get_coordinates(on_edge)
    r_deg = km / KM_PER_DEG * np.sqrt(rng.uniform(0, 1, n))
    phi = rng.uniform(0, 2 * np.pi, n)
    lat = xy[:, 1] + r_deg * np.sin(phi)
    lon = xy[:, 0] + r_deg * np.cos(phi) / np.cos(np.radians(xy[:, 1]))
    lat[: n // 20], lon[: n // 20] = xy[: n // 20, 1], xy[: n // 20, 0]   # on the edge
    vertices = shapely.get_coordinates(zone)
    return np.r_[lat, vertices[:, 1]], np.r_[lon, vertices[:, 0]]


def uniform(bounds, n, rng, pad=0.1):
    x0, y0, x1, y1 = bounds
    dx, dy = pad * (x1 - x0), pad * (y1 - y0)
    return rng.uniform(y0 - dy, y1 + dy, n), rng.uniform(x0 - dx, x1 + dx, n)


def wrap_lon(lon):
    return np.where(lon >= 180.0, lon - 360.0, lon)


def star_polygon(lon0, lat0, radius_deg, n, rng, wiggle=0.15):
    """A polygon with n vertices at increasing angles round a centre: always simple."""
    t = np.sort(rng.uniform(0, 2 * np.pi, n))
    r = radius_deg * (1 + wiggle * np.sin(7 * t) + 0.05 * rng.uniform(-1, 1, n))
    return shapely.Polygon(np.c_[lon0 + r * np.cos(t) / np.cos(np.radians(lat0)),
                                 lat0 + r * np.sin(t)])


def disk(lon0, lat0, radius_deg, n=64):
    return shapely.Point(lon0, lat0).buffer(radius_deg, quad_segs=n // 4)


def sample(zones, rng, n=N_POINTS, km=1.0):
    """Half uniform over the zones' bounds, half near their boundaries (split evenly)."""
    bounds = shapely.total_bounds(zones)
    lat_u, lon_u = uniform(bounds, n // 2, rng)
    parts = [near_boundary(z, (n - n // 2) // len(zones), rng, km) for z in zones]
    lat = np.concatenate([lat_u, *(p[0] for p in parts)])
    lon = np.concatenate([lon_u, *(p[1] for p in parts)])
    return lat, lon


def mapping(geom):
    return json.loads(shapely.to_geojson(geom))


# ----------------------------------------------------------------------------- cases


def case_holes(rng):
    shell = star_polygon(20.0, 50.0, 4.0, 400, rng)
    holes = [disk(19.0, 50.0, 0.7), disk(21.5, 50.8, 0.4), star_polygon(20.5, 48.7, 0.6, 50, rng)]
    zone = shell.difference(shapely.union_all(holes))
    assert zone.geom_type == "Polygon" and len(zone.interiors) == 3
    return [zone], sample([zone], rng)


def case_multipolygon(rng):
    lake = shapely.box(3, 3, 7, 7)
    a = shapely.box(0, 0, 10, 10).difference(lake)
    island = shapely.box(4, 4, 6, 6)                      # inside a's hole
    corner = shapely.box(10, 10, 12, 12)                  # touches a at one vertex
    zone = shapely.MultiPolygon([a, island, corner])
    other = shapely.MultiPolygon([disk(2, 2, 1.5), star_polygon(8, 11, 1.0, 200, rng)])
    assert zone.is_valid and other.is_valid
    zones = [zone, other]
    lat, lon = sample(zones, rng)
    # exact points on edges, at vertices, in the shared corner and on the island's shore
    grid = np.arange(0, 12.25, 0.25)
    gx, gy = np.meshgrid(grid, grid)
    return zones, (np.r_[lat, gy.ravel()], np.r_[lon, gx.ravel()])


def antimeridian_unwrapped(rng):
    """Shell spanning lon 168…195 (unwrapped), with a hole straddling 180 and one east of it."""
    shell = star_polygon(181.5, 57.0, 6.5, 600, rng, wiggle=0.1)
    zone = shell.difference(shapely.union_all([disk(180.0, 57.0, 1.0), disk(186.0, 58.0, 0.8)]))
    assert zone.geom_type == "Polygon" and len(zone.interiors) == 2
    assert zone.bounds[0] < 180 < zone.bounds[2]
    return zone


def jump_form(zone):
    """The same zone written as GeoJSON in [-180, 180]: rings jump 179 → -179."""
    doc = mapping(zone)
    doc["coordinates"] = [[[x - 360.0 if x > 180 else x, y] for x, y in ring]
                          for ring in doc["coordinates"]]
    return doc


def split_form(zone):
    """RFC 7946: a MultiPolygon cut at the antimeridian, both sides in [-180, 180]."""
    west = zone.intersection(shapely.box(0, -90, 180, 90))
    east = shapely.transform(zone.intersection(shapely.box(180, -90, 540, 90)),
                             lambda c: c - [360.0, 0.0])
    parts = [p for g in (west, east) for p in getattr(g, "geoms", [g])]
    return mapping(shapely.MultiPolygon(parts))


def antimeridian_points(zone, rng):
    lat, lon = sample([zone], rng)
    lon = wrap_lon(lon)
    return np.r_[lat, 55.0, 57.0, 57.0, 60.0], np.r_[lon, 180.0, 180.0, -180.0, -180.0]


def case_antimeridian_unwrapped(rng):
    zone = antimeridian_unwrapped(rng)
    return [zone], antimeridian_points(zone, rng)


def case_antimeridian_jump(rng):
    zone = antimeridian_unwrapped(rng)
    parsed = parse_geometry(jump_form(zone))
    assert parsed.bounds[2] > 180                        # remembered as unwrapped
    assert shapely.equals_exact(parsed, zone, tolerance=1e-9)
    return [parsed], antimeridian_points(zone, rng)


def case_antimeridian_split(rng):
    zone = antimeridian_unwrapped(rng)
    parsed = parse_geometry(split_form(zone))
    assert parsed.geom_type == "MultiPolygon" and parsed.bounds[2] <= 180
    return [parsed], antimeridian_points(zone, rng)


def case_tiny_and_large(rng):
    tiny = shapely.Polygon([(30.52, 50.45), (30.5201, 50.45), (30.52012, 50.45007),
                            (30.52005, 50.45011), (30.51998, 50.45006)])   # ~10 m across
    large = star_polygon(25.0, 48.0, 3.0, 1000, rng)                      # 1,000 vertices
    assert tiny.is_valid and large.is_valid
    lat_t, lon_t = uniform(tiny.bounds, N_POINTS // 2, rng, pad=1.0)
    lat_b, lon_b = near_boundary(tiny, N_POINTS // 8, rng, km=0.002)
    lat_l, lon_l = sample([large], rng, n=N_POINTS // 2)
    return [tiny, large], (np.r_[lat_t, lat_b, lat_l], np.r_[lon_t, lon_b, lon_l])


def case_borders(rng):
    zones = list(country_polygons(["UKR", "POL"]).values())
    lat, lon = uniform((13.0, 43.0, 42.0, 56.0), N_POINTS // 2, rng, pad=0)
    parts = [near_boundary(z, N_POINTS // 4, rng, km=1.0) for z in zones]
    return zones, (np.r_[lat, parts[0][0], parts[1][0]], np.r_[lon, parts[0][1], parts[1][1]])


CASES = {
    "holes": case_holes,
    "multipolygon": case_multipolygon,
    "antimeridian-unwrapped": case_antimeridian_unwrapped,
    "antimeridian-jump": case_antimeridian_jump,
    "antimeridian-split": case_antimeridian_split,
    "tiny-and-1000-vertices": case_tiny_and_large,
    "borders-UKR-POL": case_borders,
}


@pytest.mark.parametrize("name", list(CASES))
def test_zone_index_equals_exact_covers(name):
    rng = np.random.default_rng(sum(map(ord, name)))
    zones, (lat, lon) = CASES[name](rng)
    assert len(lat) >= N_POINTS
    expected = reference(zones, lat, lon)
    assert expected.any(axis=0).all() and not expected.all(axis=0).any()   # a real test
    index = ZoneIndex(zones)
    got = index.contains(lat, lon)
    assert got.shape == (len(lat), len(zones))
    mismatch = np.flatnonzero((got != expected).any(axis=1))
    assert mismatch.size == 0, [(lat[i], lon[i], got[i], expected[i]) for i in mismatch[:5]]
    p, z = index.zones_of(lat, lon)
    np.testing.assert_array_equal(np.c_[p, z], np.argwhere(expected))


def test_antimeridian_forms_agree_away_from_the_cut():
    rng = np.random.default_rng(7)
    zone = antimeridian_unwrapped(rng)
    lat, lon = uniform(zone.bounds, 50_000, rng)
    lon = wrap_lon(lon)
    forms = [zone, parse_geometry(jump_form(zone)), parse_geometry(split_form(zone))]
    results = [ZoneIndex([g]).contains(lat, lon)[:, 0] for g in forms]
    assert 0.3 < results[0].mean() < 0.9
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], results[2])


def test_grid_fast_path_changes_nothing():
    rng = np.random.default_rng(3)
    zones, (lat, lon) = case_tiny_and_large(rng)
    zones = [*zones, antimeridian_unwrapped(rng)]
    lat2, lon2 = antimeridian_points(zones[-1], rng)
    lat, lon = np.r_[lat, lat2], np.r_[lon, lon2]
    np.testing.assert_array_equal(ZoneIndex(zones).contains(lat, lon),
                                  ZoneIndex(zones, grid_cells=0).contains(lat, lon))


def test_points_conventions():
    square = shapely.box(10, 40, 12, 42)
    east = shapely.box(170, 0, 180, 10)            # touches the antimeridian from the west
    index = ZoneIndex([square, east])
    lat = [41, 40, 42, np.nan, 41, 5, 5, 5, 41]
    lon = [11, 10, 11.5, 11, np.nan, 180, -180, 175 - 360, 371]
    expected = [[1, 0], [1, 0], [1, 0], [0, 0], [0, 0], [0, 1], [0, 1], [0, 1], [1, 0]]
    np.testing.assert_array_equal(index.contains(lat, lon), np.array(expected, dtype=bool))
    # broadcasting, scalars, empty input and an empty index
    assert index.contains(41.0, [11.0, 13.0]).tolist() == [[True, False], [False, False]]
    assert index.contains([], []).shape == (0, 2)
    assert ZoneIndex([]).contains([1.0, 2.0], [3.0, 4.0]).shape == (2, 0)
    p, z = ZoneIndex([]).zones_of([1.0], [2.0])
    assert p.size == z.size == 0


def test_zones_of_sorted_with_overlaps():
    zones = [shapely.box(0, 0, 2, 2), shapely.box(1, 1, 3, 3), shapely.box(175, 0, 185, 2)]
    p, z = ZoneIndex(zones).zones_of([1.5, 0.5, 1.5, 2.5, 1.0], [1.5, 0.5, 179.0, 2.5, -178.0])
    assert list(zip(p.tolist(), z.tolist(), strict=True)) == [
        (0, 0), (0, 1), (1, 0), (2, 2), (3, 1), (4, 2)]


def test_zone_index_shifts_zones_below_minus_180_and_refuses_bad_zones():
    index = ZoneIndex([shapely.box(-190, 0, -170, 10)])
    assert index.geometries[0].bounds == (170.0, 0.0, 190.0, 10.0)
    assert index.contains([5, 5, 5], [-175, 175, 0]).ravel().tolist() == [True, True, False]
    bow_tie = shapely.Polygon([(0, 0), (1, 1), (1, 0), (0, 1)])
    for bad, text in [(shapely.Point(0, 0), "Point"), (bow_tie, "Self-intersection"),
                      (shapely.box(0, 80, 10, 95), "outside")]:
        with pytest.raises(PolicyError, match=text) as info:
            ZoneIndex([shapely.box(0, 0, 1, 1), bad])
        assert info.value.feature == 1


@settings(max_examples=60, deadline=None)
@given(lon0=st.floats(-130, 130), lat0=st.floats(-40, 40), a=st.floats(1e-3, 20),
       ratio=st.floats(0.05, 1), theta=st.floats(0, np.pi), n=st.integers(3, 40),
       seed=st.integers(0, 2**32 - 1))
def test_convex_polygons_property(lon0, lat0, a, ratio, theta, n, seed):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.uniform(0, 2 * np.pi, n))
    ex, ey = a * np.cos(t), a * ratio * np.sin(t)
    x = lon0 + ex * np.cos(theta) - ey * np.sin(theta)
    y = np.clip(lat0 + ex * np.sin(theta) + ey * np.cos(theta), -90, 90)
    zone = shapely.Polygon(np.c_[x, y])
    if not zone.is_valid or zone.area == 0:
        return
    lat, lon = uniform(zone.bounds, 400, rng, pad=0.2)
    edges = np.c_[x, y]
    mid = 0.5 * (edges + np.roll(edges, 1, axis=0))
    lat, lon = np.r_[lat, y, mid[:, 1]], np.r_[lon, x, mid[:, 0]]
    np.testing.assert_array_equal(ZoneIndex([zone]).contains(lat, lon),
                                  reference([zone], lat, lon))


# ----------------------------------------------------------------------------- parsing

SQUARE = [[30.0, 50.0], [31.0, 50.0], [31.0, 51.0], [30.0, 51.0], [30.0, 50.0]]


def polygon(*rings):
    return {"type": "Polygon", "coordinates": [copy.deepcopy(r) for r in rings]}


def feature(geometry, zone_id, **extra):
    return {"type": "Feature", "properties": {"id": zone_id}, "geometry": geometry, **extra}


def collection(*geometries, **extra):
    return {"type": "FeatureCollection", "features": [
        feature(g, f"z{i}") for i, g in enumerate(geometries)], **extra}


def test_parse_valid_forms():
    geom = parse_geometry(polygon(SQUARE))
    assert geom.equals(shapely.box(30, 50, 31, 51))
    assert parse_geometry(json.dumps(polygon(SQUARE))).equals(geom)
    assert parse_geometry(feature(polygon(SQUARE), "a")).equals(geom)
    assert parse_geometry(collection(polygon(SQUARE))).equals(geom)
    multi = parse_geometry({"type": "MultiPolygon", "coordinates": [[SQUARE]]})
    assert multi.geom_type == "MultiPolygon"
    with_alt = polygon([[*p, 120.0] for p in SQUARE])        # altitudes are dropped
    assert parse_geometry(with_alt).equals(geom)
    as_tuples = shapely.geometry.mapping(shapely.box(30, 50, 31, 51))   # tuples, not lists
    assert parse_geometry(as_tuples).equals(geom)
    clockwise = polygon(SQUARE[::-1])                        # RFC 7946 orientation not enforced
    assert parse_geometry(clockwise).equals(geom)
    for name in ["urn:ogc:def:crs:OGC:1.3:CRS84", "EPSG:4326", "urn:ogc:def:crs:EPSG::4326"]:
        crs = {"type": "name", "properties": {"name": name}}
        assert parse_geometry({**polygon(SQUARE), "crs": crs}).equals(geom)
        assert parse_geometry(collection(polygon(SQUARE), crs=crs)).equals(geom)


def test_parse_unwraps_antimeridian_rings():
    ring = [[179.0, 10.0], [-179.0, 10.0], [-179.0, 11.0], [179.0, 11.0], [179.0, 10.0]]
    geom = parse_geometry(polygon(ring))
    assert geom.bounds == (179.0, 10.0, 181.0, 11.0)
    start_east = ring[1:] + [ring[1]]                         # starts at -179
    assert parse_geometry(polygon(start_east)).bounds == (179.0, 10.0, 181.0, 11.0)
    # a hole written without a jump east of the line moves with its unwrapped shell
    shell = [[170.0, 0.0], [-170.0, 0.0], [-170.0, 10.0], [170.0, 10.0], [170.0, 0.0]]
    hole = [[-175.0, 4.0], [-173.0, 4.0], [-173.0, 6.0], [-175.0, 4.0]]
    geom = parse_geometry(polygon(shell, hole))
    assert geom.interiors[0].bounds == (185.0, 4.0, 187.0, 6.0)
    index = ZoneIndex([geom])
    assert index.contains([5, 5, 5, 4.5], [175, -171, 179.999, -173.2]).ravel().tolist() == [
        True, True, True, False]


def assert_policy_error(call, *, feature, field, text, source=None):
    with pytest.raises(PolicyError) as info:
        call()
    err = info.value
    assert err.feature == feature and err.field == field, str(err)
    assert text.lower() in str(err).lower(), str(err)
    if feature is not None:
        assert f"feature {feature}" in str(err)
    if field is not None:
        assert repr(field) in str(err)
    if source is not None:
        assert err.source == source
    return err


BOW_TIE = [[30.0, 50.0], [31.0, 51.0], [31.0, 50.0], [30.0, 51.0], [30.0, 50.0]]
BAD_GEOMETRIES = {
    "point": ({"type": "Point", "coordinates": [30.0, 50.0]}, "geometry.type", "'Point'"),
    "linestring": ({"type": "LineString", "coordinates": SQUARE}, "geometry.type", "LineString"),
    "collection": ({"type": "GeometryCollection", "geometries": [polygon(SQUARE)]},
                   "geometry.type", "GeometryCollection"),
    "no type": ({"coordinates": [SQUARE]}, "geometry.type", "missing"),
    "null geometry": (None, "geometry", "no geometry"),
    "no coordinates": ({"type": "Polygon"}, "geometry.coordinates", "no 'coordinates'"),
    "empty polygon": ({"type": "Polygon", "coordinates": []}, "geometry.coordinates",
                      "non-empty"),
    "string coordinate": (polygon([*SQUARE[:2], ["31", 51.0], *SQUARE[3:]]),
                          "geometry.coordinates[0][2]", "must be numbers"),
    "bool coordinate": (polygon([*SQUARE[:3], [True, 51.0], SQUARE[4]]),
                        "geometry.coordinates[0][3]", "must be numbers"),
    "short position": (polygon([*SQUARE[:1], [31.0], *SQUARE[2:]]),
                       "geometry.coordinates[0][1]", "[longitude, latitude]"),
    "nan": (polygon([*SQUARE[:3], [float("nan"), 51.0], SQUARE[4]]),
            "geometry.coordinates[0][3]", "finite"),
    "ring not an array": ({"type": "Polygon", "coordinates": [5]}, "geometry.coordinates[0]",
                          "array of positions"),
    "unclosed": (polygon(SQUARE[:4] + [[30.0, 50.5]]), "geometry.coordinates[0]",
                 "not closed"),
    "three positions": (polygon([[30.0, 50.0], [31.0, 50.0], [30.0, 50.0]]),
                        "geometry.coordinates[0]", "at least 4 positions"),
    "self-intersection": (polygon(BOW_TIE), "geometry.coordinates[0]", "Self-intersection"),
    "hole outside shell": (polygon(SQUARE, [[40, 40], [41, 40], [41, 41], [40, 40]]),
                           "geometry.coordinates", "Hole lies outside shell"),
    "multipolygon bad part": ({"type": "MultiPolygon", "coordinates": [[SQUARE], [BOW_TIE]]},
                              "geometry.coordinates[1][0]", "Self-intersection"),
    "multipolygon overlap": ({"type": "MultiPolygon", "coordinates": [[SQUARE], [SQUARE]]},
                             "geometry.coordinates", "invalid multipolygon"),
    "longitude": (polygon([*SQUARE[:2], [181.0, 51.0], *SQUARE[3:]]),
                  "geometry.coordinates[0][2]", "longitude 181.0"),
    "latitude": (polygon([[120.0, 80.0], [125.0, 80.0], [125.0, 91.0], [120.0, 80.0]]),
                 "geometry.coordinates[0][2]", "latitude 91.0 of position"),
    "swapped": (polygon([[43.1, 131.9], [43.1, 132.1], [43.2, 132.1], [43.1, 131.9]]),
                "geometry.coordinates[0][0]", "latitude and longitude look swapped"),
    "swapped multipolygon": ({"type": "MultiPolygon", "coordinates": [
        [SQUARE], [[[-33.9, 151.1], [-33.8, 151.1], [-33.8, 151.3], [-33.9, 151.1]]]]},
        "geometry.coordinates[1][0][0]", "look swapped"),
    "winds round pole": (polygon([[0.0, 80.0], [120.0, 80.0], [-120.0, 80.0], [-10.0, 85.0],
                                  [0.0, 80.0]]), "geometry.coordinates[0]", "round a pole"),
    "geometry crs": ({**polygon(SQUARE), "crs": {"type": "name",
                                                 "properties": {"name": "EPSG:3857"}}},
                     "geometry.crs", "not WGS84"),
}


@pytest.mark.parametrize("case", list(BAD_GEOMETRIES))
def test_bad_geometry_is_named_by_feature_and_field(case):
    bad, field, text = BAD_GEOMETRIES[case]
    good = polygon(SQUARE)
    doc = collection(good, good, good, good)
    doc["features"][2]["geometry"] = bad            # the 3rd feature is bad
    assert_policy_error(lambda: read_zones(doc), feature=2, field=field, text=text,
                        source="<zones>")
    if bad is not None and "coordinates" in field:    # same rule through parse_geometry
        assert_policy_error(lambda: parse_geometry(bad, source="zone.json", feature=7),
                            feature=7, field=field, text=text, source="zone.json")


def test_parse_geometry_field_prefix_and_json_errors():
    bad = polygon(SQUARE[:4] + [[30.0, 50.5]])
    assert_policy_error(lambda: parse_geometry(bad, field="covered_area"), feature=None,
                        field="covered_area.coordinates[0]", text="not closed")
    assert_policy_error(lambda: parse_geometry("{not json"), feature=None, field=None,
                        text="not valid JSON")
    assert_policy_error(lambda: parse_geometry(collection(polygon(SQUARE), polygon(SQUARE))),
                        feature=None, field="features", text="use read_zones")
    assert_policy_error(lambda: parse_geometry([1, 2]), feature=None, field="geometry",
                        text="expected a GeoJSON object")
    # a FeatureCollection's single feature is feature 0
    assert_policy_error(lambda: parse_geometry(collection(polygon(BOW_TIE))), feature=0,
                        field="geometry.coordinates[0]", text="Self-intersection")


@pytest.mark.parametrize("crs", [
    {"type": "name", "properties": {"name": "EPSG:3857"}},
    {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32636"}},
    {"type": "link", "properties": {"href": "http://example.com/crs", "type": "proj4"}},
    "EPSG:2180",
])
def test_crs_other_than_wgs84(crs):
    assert_policy_error(lambda: read_zones(collection(polygon(SQUARE), crs=crs)), feature=None,
                        field="crs", text="not WGS84")
    assert_policy_error(lambda: parse_geometry({**polygon(SQUARE), "crs": crs}), feature=None,
                        field="crs", text="not WGS84")
    doc = collection(polygon(SQUARE), polygon(SQUARE))
    doc["features"][1]["crs"] = crs
    assert_policy_error(lambda: read_zones(doc), feature=1, field="crs", text="not WGS84")


def test_read_zones_sources_ids_and_atomicity(tmp_path):
    doc = collection(polygon(SQUARE), {"type": "MultiPolygon", "coordinates": [[SQUARE]]})
    doc["features"][1]["properties"] = {"id": 42, "reason": "test"}
    path = tmp_path / "zones.geojson"
    path.write_text(json.dumps(doc), encoding="utf-8")
    for source in (doc, json.dumps(doc), path, str(path)):
        zones = read_zones(source)
        assert [z[0] for z in zones] == ["z0", "42"]
        assert zones[1][1] == {"id": 42, "reason": "test"}
        assert zones[1][2].geom_type == "MultiPolygon"
    # id from another property, or from the Feature's own "id"
    doc2 = copy.deepcopy(doc)
    for i, f in enumerate(doc2["features"]):
        f["properties"] = {"name": f"zone-{i}"}
    assert [z[0] for z in read_zones(doc2, id_property="name")] == ["zone-0", "zone-1"]
    doc2["features"][0]["id"], doc2["features"][1]["id"] = "a", "b"
    assert [z[0] for z in read_zones(doc2)] == ["a", "b"]
    # errors name the file and the feature; nothing is returned
    bad = copy.deepcopy(doc)
    bad["features"].append(feature(polygon(BOW_TIE), "z2"))
    path.write_text(json.dumps(bad), encoding="utf-8")
    assert_policy_error(lambda: read_zones(path), feature=2, field="geometry.coordinates[0]",
                        text="Self-intersection", source=str(path))
    dup = collection(polygon(SQUARE), polygon(SQUARE), polygon(SQUARE))
    dup["features"][2]["properties"]["id"] = "z0"
    assert_policy_error(lambda: read_zones(dup), feature=2, field="properties.id",
                        text="duplicate zone id 'z0' (also feature 0)")
    for missing in ({}, {"id": None}, {"id": True}, {"id": " "}):
        doc3 = collection(polygon(SQUARE), polygon(SQUARE))
        doc3["features"][1]["properties"] = missing
        assert_policy_error(lambda d=doc3: read_zones(d), feature=1, field="properties.id",
                            text="zone id")
    assert_policy_error(lambda: read_zones(tmp_path / "missing.geojson"), feature=None,
                        field=None, text="cannot read")
    assert_policy_error(lambda: read_zones({"type": "Feature"}), feature=None, field="type",
                        text="FeatureCollection")
    not_feature = collection(polygon(SQUARE))
    not_feature["features"].append(polygon(SQUARE))
    assert_policy_error(lambda: read_zones(not_feature), feature=1, field="type",
                        text="expected a GeoJSON Feature")


# ----------------------------------------------------------------------------- borders

KYIV, SIMFEROPOL, WARSAW, DONETSK = (30.52, 50.45), (34.10, 44.95), (21.01, 52.23), (37.80, 48.016)


def covers(geom, lon_lat):
    return geom.covers(shapely.Point(lon_lat))


def test_country_polygons():
    countries = country_polygons(["UKR", "pol", "RUS", "USA", "SDN"])
    assert set(countries) == {"UKR", "POL", "RUS", "USA", "SDN"}
    ukr, pol, rus = countries["UKR"], countries["POL"], countries["RUS"]
    assert covers(ukr, KYIV) and covers(ukr, SIMFEROPOL) and covers(ukr, DONETSK)
    assert not covers(ukr, WARSAW)
    assert covers(pol, WARSAW) and not covers(pol, KYIV)
    assert covers(rus, SIMFEROPOL)              # Natural Earth: de facto; UKR: recognised extent
    assert all(g.is_valid for g in countries.values())       # Sudan fixed with buffer(0)
    assert rus.bounds[0] == -180 and rus.bounds[2] == 180   # split at the antimeridian
    assert country_polygons(["UKR"])["UKR"] is ukr          # loaded once
    index = ZoneIndex([ukr, pol, rus])
    lon, lat = np.array([KYIV, SIMFEROPOL, WARSAW, (178.0, 66.0), (-175.0, 66.0)]).T
    assert index.contains(lat, lon).astype(int).tolist() == [
        [1, 0, 0], [1, 0, 1], [0, 1, 0], [0, 0, 1], [0, 0, 1]]


def test_country_polygons_unknown_code_and_working_directory(tmp_path, monkeypatch):
    assert_policy_error(lambda: country_polygons(["UKR", "XXX"]), feature=None,
                        field="codes[1]", text="unknown country code 'XXX'")
    monkeypatch.chdir(tmp_path)
    geofence._countries.cache_clear()
    assert covers(country_polygons(["POL"])["POL"], WARSAW)
