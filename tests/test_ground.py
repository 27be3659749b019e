"""Ground segment: bundled lists, file round trips, every validation rule, terminal positions."""

import json
import logging
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import leotwin.ground as ground_module
from leotwin.defaults import default
from leotwin.ground import (
    GATEWAY_COLUMNS,
    POP_COLUMNS,
    TERMINAL_COLUMNS,
    TRACK_COLUMNS,
    Ground,
    GroundError,
    load_gateways,
    load_pops,
    load_terminals,
    load_tracks,
)

# ----------------------------------------------------------------------------- helpers


def write_csv(frame, path):
    pd.DataFrame(frame).to_csv(path, index=False)
    return path


def write_geojson(frame, path):
    """FeatureCollection of Points ([lon, lat, alt]); other columns as properties."""
    frame = pd.DataFrame(frame)
    features = []
    for rec in frame.to_dict("records"):
        coords = [rec.pop("lon_deg"), rec.pop("lat_deg")]
        if "alt_m" in rec:
            coords.append(rec.pop("alt_m"))
        props = {k: (None if isinstance(v, float) and math.isnan(v) else
                     v.isoformat() if isinstance(v, pd.Timestamp) else v)
                 for k, v in rec.items()}
        features.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": coords},
                         "properties": props})
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}),
                    encoding="utf-8")
    return path


def write_parquet(frame, path):
    pd.DataFrame(frame).to_parquet(path, index=False)
    return path


WRITERS = {"csv": write_csv, "geojson": write_geojson, "parquet": write_parquet}


def terminals_frame():
    return pd.DataFrame({
        "terminal": ["T1", "T2", "T3", "T4"],
        "account": ["acme", "acme", "bravo", "bravo"],
        "lat_deg": [50.45, 49.99, 46.48, 48.0],
        "lon_deg": [30.52, 36.23, 30.73, 179.95],
        "alt_m": [180.0, 0.0, 40.0, 0.0],
        "kind": ["fixed", "fixed", "in_motion", "in_motion"],
        "demand_mbps": [100.0, 50.0, 20.0, 10.0],
        "min_mbps": [25.0, 10.0, 5.0, 5.0],
        "note": ["hq", "NA", "ship", "plane"],  # "NA" must stay text, not NaN
    })


def haversine_km(lat1, lon1, lat2, lon2, r_km=6371.0088):
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * r_km * math.asin(math.sqrt(h))


def raises_ground(func, *args, contains=(), **kwargs):
    with pytest.raises(GroundError) as info:
        func(*args, **kwargs)
    message = str(info.value)
    for text in contains:
        assert text in message, message
    return info.value


# ----------------------------------------------------------------------------- bundled data


def test_bundled_pops():
    pops = load_pops()
    assert len(pops) == 23
    assert tuple(pops.columns[:4]) == POP_COLUMNS
    assert pops["pop"].is_unique
    assert {"FRA", "MAD", "LON/LHR"} <= set(pops["pop"])
    assert pops.loc[pops["pop"] == "FRA", "name"].item() == "FRA - FRNTDEU1"


def test_bundled_gateways_map_to_existing_pops():
    gateways = load_gateways()
    pops = load_pops()
    assert len(gateways) == 261
    assert tuple(gateways.columns[:len(GATEWAY_COLUMNS)]) == GATEWAY_COLUMNS
    assert gateways["gateway"].is_unique
    assert set(gateways["pop"]) <= set(pops["pop"])
    assert (gateways["antennas"] >= 1).all() and gateways["antennas"].dtype == np.int64
    assert (gateways["backhaul_gbps"] == default("gateway_backhaul_gbps")).all()
    assert (gateways["min_elevation_deg"] == default("gateway_min_elevation_deg")).all()
    assert isinstance(gateways.index, pd.RangeIndex)
    # Every gateway's PoP is its nearest one.
    d = np.array([[haversine_km(g.lat_deg, g.lon_deg, p.lat_deg, p.lon_deg)
                   for p in pops.itertuples()] for g in gateways.itertuples()])
    np.testing.assert_array_equal(pops["pop"].to_numpy()[d.argmin(axis=1)], gateways["pop"])
    np.testing.assert_allclose(gateways["pop_distance_km"], d.min(axis=1), rtol=1e-12)


def test_polish_gateway_maps_to_frankfurt():
    gateways = load_gateways()
    pops = load_pops().set_index("pop")
    wola = gateways[gateways["name"] == "Wola Krobowska"].iloc[0]
    assert (wola["lat_deg"], wola["lon_deg"], wola["antennas"]) == (51.86417, 20.92105, 8)
    d = {p: haversine_km(51.86417, 20.92105, pops.at[p, "lat_deg"], pops.at[p, "lon_deg"])
         for p in ("FRA", "MAD", "LON/LHR")}
    assert min(d, key=d.get) == "FRA"
    assert 870 < d["FRA"] < 885 and d["LON/LHR"] > 1400 and d["MAD"] > 2200
    assert wola["pop"] == "FRA"
    assert wola["pop_distance_km"] == pytest.approx(d["FRA"], rel=1e-12)


def test_bundled_assumptions_are_logged(caplog):
    with caplog.at_level(logging.INFO, logger="leotwin.ground"):
        load_gateways()
    text = caplog.text
    assert "late 2023" in text and "gateway_backhaul_gbps" in text and "nearest PoP" in text


def test_loaded_tables_reload_unchanged():
    pops = load_pops()
    gateways = load_gateways(pops=pops)
    pd.testing.assert_frame_equal(load_pops(pops), pops)
    pd.testing.assert_frame_equal(load_gateways(gateways, pops=pops), gateways)


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("fmt", ["csv", "geojson", "parquet"])
def test_round_trip_terminals(tmp_path, fmt):
    first = load_terminals(terminals_frame())
    assert tuple(first.columns) == TERMINAL_COLUMNS + ("note",)
    assert first["note"].tolist() == ["hq", "NA", "ship", "plane"]
    path = WRITERS[fmt](first, tmp_path / f"terminals.{fmt}")
    pd.testing.assert_frame_equal(load_terminals(path), first)


@pytest.mark.parametrize("fmt", ["csv", "geojson", "parquet"])
def test_round_trip_gateways_and_pops(tmp_path, fmt):
    pops = load_pops()
    gateways = load_gateways(pops=pops)
    pop_path = WRITERS[fmt](pops, tmp_path / f"pops.{fmt}")
    gw_path = WRITERS[fmt](gateways, tmp_path / f"gateways.{fmt}")
    pops2 = load_pops(pop_path)
    pd.testing.assert_frame_equal(pops2, pops)
    pd.testing.assert_frame_equal(load_gateways(gw_path, pops=pop_path), gateways)


@pytest.mark.parametrize("fmt", ["csv", "geojson", "parquet"])
def test_round_trip_tracks(tmp_path, fmt):
    tracks = load_tracks([
        {"terminal": "T3", "time": "2022-10-07T12:00:00Z", "lat_deg": 46.0, "lon_deg": 30.0},
        {"terminal": "T3", "time": "2022-10-07T14:30:00+02:00", "lat_deg": 46.1, "lon_deg": 30.0,
         "alt_m": 5.0},
        {"terminal": "T4", "time": "2022-10-07 12:00:00.000000001", "lat_deg": 48.0,
         "lon_deg": 179.9},
    ])
    assert tuple(tracks.columns) == TRACK_COLUMNS
    assert tracks["time"].dtype == "datetime64[ns]"
    assert tracks["time"].iloc[1] == pd.Timestamp("2022-10-07T12:30:00")
    assert tracks["alt_m"].tolist() == [0.0, 5.0, 0.0]
    path = WRITERS[fmt](tracks, tmp_path / f"tracks.{fmt}")
    pd.testing.assert_frame_equal(load_tracks(path), tracks)


def test_defaults_fill_absent_and_blank_cells(tmp_path, caplog):
    path = tmp_path / "t.csv"
    path.write_text("terminal,account,lat_deg,lon_deg,kind,demand_mbps\n"
                    "A,x,1,2,,\nB,x,3,4,in_motion,7\n", encoding="utf-8")
    with caplog.at_level(logging.INFO, logger="leotwin.ground"):
        t = load_terminals(path)
    assert t["kind"].tolist() == ["fixed", "in_motion"]
    assert t["demand_mbps"].tolist() == [default("terminal_demand_mbps"), 7.0]
    assert (t["min_mbps"] == default("terminal_min_mbps")).all()
    assert (t["alt_m"] == 0.0).all()
    assert "terminal_demand_mbps" in caplog.text and "terminal_min_mbps" in caplog.text
    gw = load_gateways([{"gateway": "G", "lat_deg": 50.0, "lon_deg": 8.0, "antennas": None}])
    assert gw["antennas"].item() == default("gateway_antennas")
    assert gw["pop"].item() == "FRA"
    gw = load_gateways([{"gateway": "G", "lat_deg": 50.0, "lon_deg": 8.0, "antenna_count": 3,
                         "pop": "MAD", "country": "DE"}])
    assert gw["antennas"].item() == 3 and gw["pop"].item() == "MAD"
    assert gw["pop_distance_km"].item() == pytest.approx(
        haversine_km(50.0, 8.0, 40.423203, -3.703585), rel=1e-12)
    assert list(gw.columns) == list(GATEWAY_COLUMNS) + ["country"]


# ----------------------------------------------------------------------------- bad input


def terminal_csv(tmp_path, rows, header="terminal,account,lat_deg,lon_deg"):
    path = tmp_path / "field_terminals.csv"
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


GOOD = ["A,x,50,30", "B,x,51,31"]


@pytest.mark.parametrize("bad, column, words", [
    ("C,x,95,30", "lat_deg", ["95", "[-90, 90]"]),
    ("C,x,-90.5,30", "lat_deg", ["[-90, 90]"]),
    ("C,x,50,200", "lon_deg", ["200", "[-180, 180]", "subtract 360"]),
    ("C,x,50,-181", "lon_deg", ["[-180, 180]"]),
    ("C,x,120,45", "lat_deg", ["look swapped"]),
    ("C,x,abc,30", "lat_deg", ["'abc' is not a finite number"]),
    ("C,x,nan,30", "lat_deg", ["not a finite number"]),
    ("C,x,,30", "lat_deg", ["missing value"]),
    ("C,x,50,inf", "lon_deg", ["not a finite number"]),
    (",x,50,30", "terminal", ["missing terminal id"]),
    ("C,,50,30", "account", ["missing account"]),
])
def test_bad_terminal_rows_name_file_line_and_column(tmp_path, bad, column, words):
    path = terminal_csv(tmp_path, [*GOOD, bad])  # third data row = line 4
    err = raises_ground(load_terminals, path,
                        contains=["field_terminals.csv", "line 4", repr(column), *words])
    assert (err.source, err.row, err.column) == (str(path), 4, column)


@pytest.mark.parametrize("bad, column, words", [
    ("C,x,50,30,boat,1,1", "kind", ["'boat'", "'fixed', 'in_motion'"]),
    ("C,x,50,30,fixed,-1,1", "demand_mbps", [">= 0"]),
    ("C,x,50,30,fixed,1,-0.5", "min_mbps", [">= 0"]),
    ("C,x,50,30,fixed,lots,1", "demand_mbps", ["'lots'"]),
    ("C,x,50,30,fixed,1,1,x", None, []),  # a ragged row is a parse error, not a crash
])
def test_bad_terminal_values(tmp_path, bad, column, words):
    path = terminal_csv(tmp_path, ["A,x,50,30,fixed,1,1", "B,x,51,31,in_motion,1,1", bad],
                        header="terminal,account,lat_deg,lon_deg,kind,demand_mbps,min_mbps")
    if column is None:
        raises_ground(load_terminals, path, contains=["field_terminals.csv"])
        return
    err = raises_ground(load_terminals, path, contains=["line 4", repr(column), *words])
    assert err.row == 4 and err.column == column


def test_line_numbers_count_blank_lines_and_multiline_quotes(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('terminal,account,lat_deg,lon_deg\n\nA,"two\nlines",50,30\nB,x,91,30\n',
                    encoding="utf-8")
    err = raises_ground(load_terminals, path, contains=["line 5", "lat_deg"])
    assert err.row == 5


def test_duplicate_ids_name_both_rows(tmp_path):
    path = terminal_csv(tmp_path, ["A,x,50,30", "B,x,51,31", "A,y,52,32"])
    raises_ground(load_terminals, path, contains=["duplicate terminal 'A'", "line 4", "line 2"])
    raises_ground(load_pops, [{"pop": "P", "lat_deg": 0, "lon_deg": 0}] * 2,
                  contains=["PoPs table", "row 1", "duplicate pop 'P'", "row 0"])
    raises_ground(load_gateways, [{"gateway": "G", "lat_deg": 0, "lon_deg": 0}] * 2,
                  contains=["row 1", "duplicate gateway 'G'", "row 0"])


def test_missing_columns_and_empty_tables(tmp_path):
    path = terminal_csv(tmp_path, ["A,50,30"], header="terminal,lat,lon_deg")
    err = raises_ground(load_terminals, path,
                        contains=["missing required column(s) 'account', 'lat_deg'",
                                  "'lat' → 'lat_deg'"])
    assert err.column == "account" and err.row is None
    raises_ground(load_terminals, terminal_csv(tmp_path, []), contains=["empty"])
    (tmp_path / "nothing.csv").write_text("", encoding="utf-8")
    raises_ground(load_pops, tmp_path / "nothing.csv", contains=["nothing.csv", "empty"])
    raises_ground(load_pops, pd.DataFrame(), contains=["PoPs table", "empty"])
    raises_ground(load_tracks, [{"terminal": "A", "lat_deg": 1, "lon_deg": 2}],
                  contains=["missing required column(s) 'time'"])


def test_gateway_rules(tmp_path):
    def gw(**kw):
        return [{"gateway": "G0", "lat_deg": 50.0, "lon_deg": 8.0},
                {"gateway": "G1", "lat_deg": 50.0, "lon_deg": 8.0, **kw}]

    raises_ground(load_gateways, gw(antennas=0), contains=["row 1", "'antennas'", ">= 1"])
    raises_ground(load_gateways, gw(antennas=2.5), contains=["'antennas'", "whole number"])
    raises_ground(load_gateways, gw(min_elevation_deg=95), contains=["'min_elevation_deg'"])
    raises_ground(load_gateways, gw(min_elevation_deg=-1), contains=["'min_elevation_deg'"])
    raises_ground(load_gateways, gw(backhaul_gbps=-1), contains=["'backhaul_gbps'"])
    path = write_csv(gw(pop="XYZ"), tmp_path / "gw.csv")
    err = raises_ground(load_gateways, path,
                        contains=["gw.csv", "line 3", "'pop'", "unknown PoP 'XYZ'"])
    assert (err.row, err.column) == (3, "pop")


def test_geojson_rules(tmp_path):
    doc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [30.5, 50.4]},
         "properties": {"terminal": "A", "account": "x"}},
        {"type": "Feature",
         "geometry": {"type": "LineString", "coordinates": [[30, 50], [31, 51]]},
         "properties": {"terminal": "B", "account": "x"}},
    ]}
    path = tmp_path / "t.geojson"
    path.write_text(json.dumps(doc), encoding="utf-8")
    err = raises_ground(load_terminals, path,
                        contains=["t.geojson", "feature 1", "'LineString'", "Point"])
    assert (err.row, err.column) == (1, "geometry")
    # [lat, lon] instead of [lon, lat]: latitude 120 → swapped, with a GeoJSON hint.
    doc["features"][1]["geometry"] = {"type": "Point", "coordinates": [45.0, 120.0]}
    path.write_text(json.dumps(doc), encoding="utf-8")
    raises_ground(load_terminals, path,
                  contains=["feature 1", "look swapped", "[longitude, latitude]"])
    path.write_text(json.dumps({"type": "Feature"}), encoding="utf-8")
    raises_ground(load_terminals, path, contains=["FeatureCollection"])
    path.write_text("{not json", encoding="utf-8")
    raises_ground(load_terminals, path, contains=["JSON"])


def test_dataframe_and_parquet_rows_are_positions(tmp_path):
    frame = terminals_frame()
    frame.loc[2, "lon_deg"] = 400.0
    raises_ground(load_terminals, frame, contains=["terminals table", "row 2", "'lon_deg'"])
    path = write_parquet(frame, tmp_path / "t.parquet")
    err = raises_ground(load_terminals, path, contains=["t.parquet", "row 2", "'lon_deg'"])
    assert err.row == 2


def test_unknown_format_and_missing_file(tmp_path):
    raises_ground(load_terminals, tmp_path / "t.xlsx", contains=[".xlsx"])
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        load_terminals(tmp_path / "nope.csv")
    with pytest.raises(TypeError):
        load_terminals(42)


def test_track_rules():
    row = {"terminal": "T3", "time": "2022-10-07T12:00:00Z", "lat_deg": 46.0, "lon_deg": 30.0}
    raises_ground(load_tracks, [row, {**row, "time": "yesterday"}],
                  contains=["row 1", "'time'", "'yesterday'", "ISO 8601"])
    raises_ground(load_tracks, [row, {**row, "time": "2022-10-07T14:00:00+02:00"}],
                  contains=["row 1", "two track points", "row 0"])
    raises_ground(load_tracks, [row, {**row, "time": None}], contains=["row 1", "missing time"])


# ----------------------------------------------------------------------------- Ground.load


def test_ground_load_cross_checks():
    tracks = [{"terminal": "T3", "time": "2022-10-07T12:00Z", "lat_deg": 46.0, "lon_deg": 30.0}]
    ground = Ground.load(terminals_frame(), tracks=tracks)
    assert len(ground.terminals) == 4 and len(ground.gateways) == 261 and len(ground.pops) == 23
    assert len(ground.tracks) == 1
    raises_ground(Ground.load, terminals_frame(), tracks=[{**tracks[0], "terminal": "T9"}],
                  contains=["tracks table", "row 0", "unknown terminal 'T9'"])
    raises_ground(Ground.load, terminals_frame(), tracks=[{**tracks[0], "terminal": "T1"}],
                  contains=["'T1' has a track but kind 'fixed'"])
    pops = [{"pop": "P1", "lat_deg": 50.0, "lon_deg": 8.0}]
    gws = [{"gateway": "G0", "lat_deg": 50.0, "lon_deg": 9.0, "pop": "P1"},
           {"gateway": "G1", "lat_deg": 51.0, "lon_deg": 9.0, "pop": "FRA"}]
    raises_ground(Ground.load, terminals_frame(), gateways=gws, pops=pops,
                  contains=["gateways table", "row 1", "unknown PoP 'FRA'"])
    ground = Ground.load(terminals_frame(), gateways=gws[:1], pops=pops)
    assert ground.gateways["pop"].tolist() == ["P1"]


def test_nothing_half_loaded():
    terminals = terminals_frame()
    before = terminals.copy()
    bad_tracks = pd.DataFrame({"terminal": ["T3", "T3"], "time": ["2022-10-07T12:00Z", "bad"],
                               "lat_deg": [46.0, 46.1], "lon_deg": [30.0, 30.0]})
    tracks_before = bad_tracks.copy()
    ground = None
    with pytest.raises(GroundError):
        ground = Ground.load(terminals, tracks=bad_tracks)
    assert ground is None
    pd.testing.assert_frame_equal(terminals, before)  # inputs are never modified
    pd.testing.assert_frame_equal(bad_tracks, tracks_before)
    load_terminals(terminals)
    pd.testing.assert_frame_equal(terminals, before)


# ----------------------------------------------------------------------------- positions


def test_terminal_positions():
    t0 = np.datetime64("2022-10-07T12:00:00", "ns")
    tracks = pd.DataFrame({
        # T3 moves north along the 30°E meridian by 0.1° in 10 min (held outside that span).
        "terminal": ["T3", "T3", "T4", "T4"],
        "time": [t0 + np.timedelta64(600, "s"), t0, t0, t0 + np.timedelta64(1000, "s")],
        "lat_deg": [46.1, 46.0, 48.0, 48.0],
        "lon_deg": [30.0, 30.0, 179.9, -179.9],  # T4 crosses the antimeridian
        "alt_m": [10.0, 0.0, 0.0, 0.0],
    })
    ground = Ground.load(terminals_frame(), tracks=tracks)
    times = t0 + np.array([-60, 0, 150, 300, 500, 600, 900], dtype="timedelta64[s]")
    lat, lon, alt = ground.terminal_positions(times)
    assert lat.shape == lon.shape == alt.shape == (7, 4)
    # Fixed terminals are constant.
    np.testing.assert_array_equal(lat[:, 0], 50.45)
    np.testing.assert_array_equal(lon[:, 1], 36.23)
    np.testing.assert_array_equal(alt[:, 0], 180.0)
    # T3: held before and after, midpoint latitude at mid time (1 m ≈ 9e-6° of latitude).
    assert (lat[0, 2], lon[0, 2], alt[0, 2]) == (46.0, 30.0, 0.0)
    assert (lat[1, 2], lat[5, 2], lat[6, 2], alt[6, 2]) == (46.0, 46.1, 46.1, 10.0)
    assert lat[3, 2] == pytest.approx(46.05, abs=9e-6)
    assert lon[3, 2] == pytest.approx(30.0, abs=1e-9)
    assert alt[3, 2] == pytest.approx(5.0)
    assert lat[2, 2] == pytest.approx(46.025, abs=9e-6)
    assert np.all(np.diff(lat[:, 2]) >= 0)
    # T4: through 180°, never through 0°.
    assert np.all(np.abs(lon[:, 3]) >= 179.9 - 1e-9)
    assert abs(lon[4, 3]) == pytest.approx(180.0, abs=1e-6)  # mid time
    assert lon[2, 3] == pytest.approx(179.93, abs=1e-4)
    assert lon[6, 3] == pytest.approx(-179.92, abs=1e-4)
    assert lat[4, 3] == pytest.approx(48.0, abs=1e-4)


def test_positions_without_tracks_and_scalar_time(caplog):
    with caplog.at_level(logging.WARNING, logger="leotwin.ground"):
        ground = Ground.load(terminals_frame())
    assert "without a track" in caplog.text and "T3, T4" in caplog.text
    lat, lon, alt = ground.terminal_positions("2022-10-07T12:00:00Z")
    assert lat.shape == (1, 4)
    np.testing.assert_array_equal(lon[0], terminals_frame()["lon_deg"])


def test_positions_far_apart_points_stay_finite():
    tracks = [{"terminal": "T3", "time": "2022-10-07T12:00Z", "lat_deg": 10.0, "lon_deg": 20.0},
              {"terminal": "T3", "time": "2022-10-07T13:00Z", "lat_deg": -10.0,
               "lon_deg": -160.0}]  # antipodal: the chord passes through the centre
    ground = Ground.load(terminals_frame(), tracks=tracks)
    times = np.datetime64("2022-10-07T12:00") + np.arange(0, 61, 10).astype("timedelta64[m]")
    lat, lon, alt = ground.terminal_positions(times)
    assert np.isfinite(lat).all() and np.isfinite(lon).all() and np.isfinite(alt).all()
    assert (lat[3, 2], lon[3, 2]) == (10.0, 20.0)


def test_positions_many_terminals_vectorized(monkeypatch):
    monkeypatch.setattr(ground_module, "_POSITION_CHUNK", 1000)  # several chunks of times
    rng = np.random.default_rng(1)
    n = 300
    t0 = np.datetime64("2022-10-07T00:00:00", "ns")
    terms = pd.DataFrame({"terminal": [f"m{i}" for i in range(n)], "account": "a",
                          "lat_deg": 0.0, "lon_deg": 0.0, "kind": "in_motion"})
    k = np.repeat(np.arange(n), 5)
    secs = np.tile(np.arange(5) * 60, n) + rng.integers(0, 30, 5 * n)
    lat0 = rng.uniform(-60, 60, n)
    tracks = pd.DataFrame({"terminal": terms["terminal"].to_numpy()[k],
                           "time": t0 + secs.astype("timedelta64[s]"),
                           "lat_deg": lat0[k] + np.tile(np.arange(5) * 0.01, n),
                           "lon_deg": 20.0})
    tracks = tracks.sample(frac=1.0, random_state=0)  # order must not matter
    ground = Ground.load(terms, tracks=tracks)
    times = t0 + np.arange(0, 330, 7).astype("timedelta64[s]")
    lat, _, _ = ground.terminal_positions(times)
    for i in (0, 17, n - 1):  # compare with np.interp (latitude is linear along a meridian)
        tr = tracks[tracks["terminal"] == f"m{i}"].sort_values("time")
        x = (tr["time"].to_numpy() - t0).astype(np.int64)
        ref = np.interp((times - t0).astype(np.int64), x, tr["lat_deg"].to_numpy())
        np.testing.assert_allclose(lat[:, i], ref, atol=1e-6)


# ----------------------------------------------------------------------------- property

ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_ ",
              min_size=1, max_size=8).filter(lambda s: s.strip() == s and s)
finite = {"allow_nan": False, "allow_infinity": False}


@st.composite
def terminal_tables(draw):
    n = draw(st.integers(1, 6))
    names = draw(st.lists(ids, min_size=n, max_size=n, unique=True))
    rows = []
    for name in names:
        rows.append({
            "terminal": name,
            "account": draw(ids),
            "lat_deg": draw(st.floats(-90, 90, **finite)),
            "lon_deg": draw(st.floats(-180, 180, **finite)),
            "alt_m": draw(st.floats(-500, 100_000, **finite)),
            "kind": draw(st.sampled_from(["fixed", "in_motion"])),
            "demand_mbps": draw(st.floats(0, 1e4, **finite)),
            "min_mbps": draw(st.floats(0, 1e4, **finite)),
            "extra": draw(st.one_of(st.none(), st.floats(-1e6, 1e6, **finite))),
        })
    return rows


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=terminal_tables())
def test_property_csv_round_trip_is_identity(tmp_path, rows):
    first = load_terminals(rows)
    path = write_csv(first, tmp_path / "prop.csv")
    pd.testing.assert_frame_equal(load_terminals(path), first)
    gateways = [{"gateway": r["terminal"], "lat_deg": r["lat_deg"], "lon_deg": r["lon_deg"],
                 "antennas": 1 + int(r["demand_mbps"]) % 40} for r in rows]
    first = load_gateways(gateways)
    path = write_csv(first, tmp_path / "prop_gw.csv")
    pd.testing.assert_frame_equal(load_gateways(path), first)


@pytest.mark.parametrize("body,line", [("1,a,50.45,30.52,7\n", 2),
                                       ("x,a,50.45,30.52\n1,a,50.45,30.52,7\n", 3),
                                       ("x,a,50.45\n", 2)])
def test_csv_rows_with_a_wrong_number_of_fields(tmp_path, body, line):
    path = tmp_path / "terminals.csv"
    path.write_text("terminal,account,lat_deg,lon_deg\n" + body)
    with pytest.raises(GroundError, match=f"terminals.csv, line {line}: .* fields"):
        load_terminals(path)
