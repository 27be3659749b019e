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
    TerminalGenerator,
    _distance_km,
    area_geometry,
    generate_terminals,
    generate_tracks,
)

DATA = Path(str(resources.files("leotwin.data")))
OCC = "frontline/occupied-2022-10-07.geojson"


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


def test_bad_specs():
    with pytest.raises(ValueError, match="exactly one of oblasts or geojson"):
        TerminalGenerator.model_validate(spec(within={}))
    with pytest.raises(ValueError, match="unknown oblast"):
        generate_terminals(spec(within={"oblasts": ["UA-99"]}), base_dir=DATA)
