"""Terminal generators: determinism, area, density near a line, track speed."""

from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import shapely

from leotwin.frames import great_circle_km
from leotwin.ground import Ground
from leotwin.ground_gen import (
    Area,
    TerminalGenerator,
    _distance_km,
    area_geometry,
    generate_terminals,
    generate_tracks,
    oblast_codes,
)
from leotwin.scenario import load_scenario

DATA = Path(str(resources.files("leotwin.data")))
OCC = "frontline/occupied-2022-10-07.geojson"
FLAGSHIP = Path(str(resources.files("leotwin.scenarios").joinpath("ukraine-2022-10",
                                                                   "scenario.yaml")))


def spec(**kw) -> dict:
    base = {"prefix": "u", "account": "army", "n": 800, "seed": 3,
            "within": {"oblasts": ["UA-63"], "exclude": [OCC]},
            "near": {"geojson": OCC, "scale_km": 30}}
    return base | kw


def test_same_seed_same_table_other_seed_differs():
    a = generate_terminals(spec(), base_dir=DATA)
    b = generate_terminals(spec(), base_dir=DATA)
    c = generate_terminals(spec(seed=4), base_dir=DATA)
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a["lat_deg"], c["lat_deg"])
    assert list(a["terminal"][:2]) == ["u-0000", "u-0001"]
    assert len(a) == 800 and set(a["account"]) == {"army"}


def test_points_inside_the_area_and_outside_the_exclusion():
    t = generate_terminals(spec(n=500), base_dir=DATA)
    area = area_geometry(TerminalGenerator.model_validate(spec()).within, base_dir=DATA)
    occ = shapely.from_geojson((DATA / OCC).read_text())
    occ = shapely.union_all(shapely.get_parts(occ))
    pts = shapely.points(t["lon_deg"], t["lat_deg"])
    assert shapely.covers(area, pts).all()
    assert not shapely.intersects(occ, pts).any()
    Ground.load(t)  # a valid terminal table


def test_density_is_higher_near_the_line():
    gen = TerminalGenerator.model_validate(spec(n=1500))
    t = generate_terminals(gen, base_dir=DATA)
    occ = shapely.union_all(shapely.get_parts(shapely.from_geojson((DATA / OCC).read_text())))
    lat0 = 49.5
    d = _distance_km(occ.boundary, t["lat_deg"].to_numpy(), t["lon_deg"].to_numpy(), lat0)
    # area (km², same local projection) of the sampled region within / beyond 30 km of the line
    area = area_geometry(gen.within, base_dir=DATA).difference(occ)
    c = np.cos(np.radians(lat0))
    scaled = shapely.transform(area, lambda xy: xy * [c, 1.0])
    band = shapely.transform(occ.boundary, lambda xy: xy * [c, 1.0]).buffer(30 / 111.195)
    near_km2 = scaled.intersection(band).area * 111.195**2
    far_km2 = scaled.difference(band).area * 111.195**2
    near_density = (d <= 30).sum() / near_km2
    far_density = (d > 30).sum() / far_km2
    assert near_density > 5 * far_density


def test_in_motion_share_and_track_speed():
    t = generate_terminals(spec(n=200, in_motion_fraction=0.25, near=None), base_dir=DATA)
    assert (t["kind"] == "in_motion").sum() == 50
    tr = generate_tracks(t, "2022-10-01T00:00:00", "2022-10-01T05:30:00", 40.0, seed=1,
                         leg_km=20.0)
    assert set(tr["terminal"]) == set(t.loc[t["kind"] == "in_motion", "terminal"])
    for _, g in tr.groupby("terminal"):
        g = g.sort_values("time")
        km = great_circle_km(g["lat_deg"].to_numpy()[:-1], g["lon_deg"].to_numpy()[:-1],
                             g["lat_deg"].to_numpy()[1:], g["lon_deg"].to_numpy()[1:])
        h = np.diff(g["time"].to_numpy()).astype("timedelta64[ns]").astype(np.int64) / 3.6e12
        np.testing.assert_allclose(km / h, 40.0, rtol=0.01)
    assert tr["time"].min() == np.datetime64("2022-10-01T00:00:00")
    assert tr["time"].max() == np.datetime64("2022-10-01T05:30:00")
    Ground.load(t, tracks=tr)


def _union(path: Path) -> shapely.Geometry:
    return shapely.union_all(shapely.get_parts(shapely.from_geojson(path.read_text())))


def _segment_speeds_kmh(tracks: pd.DataFrame) -> np.ndarray:
    tr = tracks.sort_values(["terminal", "time"], kind="stable")
    same = (tr["terminal"].to_numpy()[1:] == tr["terminal"].to_numpy()[:-1])
    lat, lon = tr["lat_deg"].to_numpy(), tr["lon_deg"].to_numpy()
    km = great_circle_km(lat[:-1], lon[:-1], lat[1:], lon[1:])
    h = np.diff(tr["time"].to_numpy()).astype("timedelta64[ns]").astype(np.int64) / 3.6e12
    return (km / h)[same]


def _positions(ground: Ground, start: str, stop: str, step_min: int) -> tuple:
    times = np.arange(np.datetime64(start), np.datetime64(stop) + np.timedelta64(1, "m"),
                      np.timedelta64(step_min, "m"))
    lat, lon, _ = ground.terminal_positions(times)
    return times, lat, lon


def test_tracks_stay_in_a_small_area_and_keep_their_speed():
    within = {"oblasts": ["UA-30"]}            # Kyiv city, ~30 km across: 40 km legs cannot fit
    t = generate_terminals(spec(n=120, in_motion_fraction=1.0, near=None, within=within),
                           base_dir=DATA)
    kw = {"leg_km": 40.0, "within": Area.model_validate(within), "base_dir": DATA}
    tr = generate_tracks(t, "2022-10-01T00:00:00", "2022-10-01T06:00:00", 40.0, seed=2, **kw)
    pd.testing.assert_frame_equal(
        tr, generate_tracks(t, "2022-10-01T00:00:00", "2022-10-01T06:00:00", 40.0, seed=2, **kw))
    stay = tr.attrs["stationary"]
    assert len(stay) <= 0.1 * len(t) and not set(stay) & set(tr["terminal"])
    assert set(tr["terminal"]) | set(stay) == set(t["terminal"])
    assert list(pd.unique(tr["terminal"])) == [x for x in t["terminal"] if x not in stay]
    np.testing.assert_allclose(_segment_speeds_kmh(tr), 40.0, rtol=0.01)
    # half legs: 20 km where that fits, halved (down to 0.625 km) where it does not
    first = tr.groupby("terminal", sort=False)[["lat_deg", "lon_deg"]].first()
    centre = t.set_index("terminal").loc[first.index]
    half = great_circle_km(first["lat_deg"].to_numpy(), first["lon_deg"].to_numpy(),
                           centre["lat_deg"].to_numpy(), centre["lon_deg"].to_numpy())
    levels = np.abs(np.round(np.log2(20.0 / half), 3))
    assert set(levels) <= {0.0, 1.0, 2.0, 3.0, 4.0, 5.0} and len(set(levels)) >= 3
    ground = Ground.load(t.assign(kind=np.where(t["terminal"].isin(stay), "fixed", "in_motion")),
                         tracks=tr)
    _, lat, lon = _positions(ground, "2022-10-01T00:00", "2022-10-01T06:00", 5)
    area = area_geometry(Area.model_validate(within), base_dir=DATA)
    assert shapely.covers(area, shapely.points(lon.ravel(), lat.ravel())).all()
    with pytest.raises(ValueError, match="base_dir"):
        generate_tracks(t, "2022-10-01T00:00:00", "2022-10-01T01:00:00", within=within)


def test_flagship_tracks_stay_in_ukraine_and_out_of_the_occupied_area():
    sc = load_scenario(FLAGSHIP, {"time": {"start": "2022-10-05T10:00:00Z",
                                           "stop": "2022-10-05T12:00:00Z"}})
    ground = sc.ground()
    terms = ground.terminals
    _, lat, lon = _positions(ground, "2022-10-05T10:00", "2022-10-05T12:00", 7)
    oblasts = area_geometry(Area(oblasts=list(oblast_codes())), base_dir=DATA)
    data = Path(str(resources.files("leotwin.data")))
    occupied = _union(data / OCC)
    moving = (terms["kind"] == "in_motion").to_numpy()
    assert moving.sum() > 400
    assert (lat[0] != lat[-1]).sum() > 0.9 * moving.sum()    # they do move
    for gen in sc.spec.ground.terminals.generate:
        cols = terms["terminal"].str.startswith(f"{gen.prefix}-").to_numpy()
        pts = shapely.points(lon[:, cols].ravel(), lat[:, cols].ravel())
        assert shapely.covers(oblasts, pts).all(), gen.prefix
        own = area_geometry(gen.within, base_dir=sc.base_dir)
        assert shapely.covers(own, pts).all(), gen.prefix
        for ex in gen.within.exclude:
            assert not shapely.intersects(_union(sc.base_dir / ex), pts).any(), (gen.prefix, ex)
        if gen.account == "army" and any("occupied-2022-10-07" in e for e in gen.within.exclude):
            assert not shapely.intersects(occupied, pts).any(), gen.prefix
    # tracks at the configured speed; the few terminals that fit no leg are fixed, untracked
    speeds = {g.prefix: g.speed_kmh for g in sc.spec.ground.terminals.generate}
    tr = ground.tracks
    for prefix, v in speeds.items():
        own = tr[tr["terminal"].str.startswith(f"{prefix}-")]
        if len(own):
            np.testing.assert_allclose(_segment_speeds_kmh(own), v, rtol=0.01)
    assert set(tr["terminal"]) == set(terms.loc[moving, "terminal"])
    full = load_scenario(FLAGSHIP).terminals_table()       # kinds before the tracks were made
    demoted = (full["kind"] == "in_motion").to_numpy() & ~moving
    assert demoted.sum() <= 0.02 * moving.sum()


def test_bad_specs():
    with pytest.raises(ValueError, match="exactly one of oblasts or geojson"):
        TerminalGenerator.model_validate(spec(within={}))
    with pytest.raises(ValueError, match="unknown oblast"):
        generate_terminals(spec(within={"oblasts": ["UA-99"]}), base_dir=DATA)
