"""Scenario files: the flagship loads; every section's mistakes name their path in the file."""

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import shapely
import yaml

from leotwin.cli import main
from leotwin.faults import Faults
from leotwin.policy.geofence import country_polygons, parse_geometry
from leotwin.policy.models import PolicyHistory
from leotwin.routing.network import NetworkConfig
from leotwin.scenario import ScenarioError, load_scenario, scenario_json_schema
from leotwin.scenarios import bundled_scenario

FLAGSHIP = bundled_scenario("ukraine-2022-10")
IZIUM = shapely.Point(37.277, 49.207)


@pytest.fixture(scope="module")
def flagship():
    return load_scenario(FLAGSHIP)


def test_flagship_times_and_config(flagship):
    t = flagship.times()
    assert t.dtype == np.dtype("datetime64[ns]")
    assert t[0] == np.datetime64("2022-10-01T00:00:00") and t[-1] == np.datetime64("2022-10-11")
    assert np.all(np.diff(t) == np.timedelta64(60, "s"))
    cfg = flagship.network_config()
    assert isinstance(cfg, NetworkConfig) and cfg.slot_s == 15.0
    assert flagship.chunk_steps == 240 and flagship.report is True
    assert flagship.as_of() == datetime(2022, 10, 11, tzinfo=UTC)
    assert isinstance(flagship.faults(), Faults) and len(flagship.faults().jammers) == 5
    assert flagship.source_path == FLAGSHIP.resolve()


def test_flagship_ground(flagship):
    g = flagship.ground()
    t = g.terminals
    assert 2000 <= len(t) <= 3000
    assert set(t["account"]) == {"army", "civil"}
    share = (t["kind"] == "in_motion").mean()
    assert 0.1 < share < 0.4
    ukraine = country_polygons(["UKR"])["UKR"]
    assert shapely.covers(ukraine, shapely.points(t["lon_deg"], t["lat_deg"])).all()
    assert set(g.tracks["terminal"]) == set(t.loc[t["kind"] == "in_motion", "terminal"])
    assert flagship.ground() is g  # cached


def test_flagship_policy_history(flagship):
    p = flagship.policy()
    assert isinstance(p, PolicyHistory) and len(p.versions) == 2
    v1, v2 = p.versions
    assert (v1.author, v1.reason) == ("policy-team", "service not offered in occupied territory")
    assert v1.recorded_at == datetime(2022, 9, 1, tzinfo=UTC)
    assert v2.recorded_at == datetime(2022, 10, 12, tzinfo=UTC)
    g1 = parse_geometry(v1.policy.geofences[0].geometry)
    g2 = parse_geometry(v2.policy.geofences[0].geometry)
    assert g1.geom_type == "MultiPolygon" and v1.policy.geofences[0].action == "deny"
    assert v1.policy.geofences[0].override_contracts
    assert g1.covers(IZIUM) and not g2.covers(IZIUM)
    assert p.at(flagship.as_of()).version == 1
    assert len(v1.policy.terminals) == len(flagship.ground().terminals)
    assert v1.policy.contracts[0].account == "army"


def test_flagship_constellation_and_hash(flagship):
    assert len(flagship.constellation()) > 3000
    h = flagship.scenario_hash()
    assert h == load_scenario(FLAGSHIP).scenario_hash() and len(h) == 64
    shorter = flagship.override({"time": {"stop": "2022-10-01T01:00:00Z"}})
    assert shorter.times().size == 61 and shorter.scenario_hash() != h


# ----------------------------------------------------------------------------- errors

TLE = Path(str(FLAGSHIP)).parents[2] / "data" / "starlink-2022-10-24.tle"


def write(tmp_path: Path, doc: dict, name="scenario.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def minimal(tmp_path: Path) -> dict:
    (tmp_path / "terminals.csv").write_text("terminal,account,lat_deg,lon_deg\nt1,a,50.4,30.5\n")
    return {"name": "t",
            "time": {"start": "2022-10-07T12:00:00Z", "stop": "2022-10-07T12:10:00Z",
                     "step_s": 60},
            "constellation": {"shells": [{"altitude_km": 550, "inclination_deg": 53,
                                          "planes": 4, "sats_per_plane": 5, "phasing": 1}]},
            "ground": {"terminals": {"file": "terminals.csv"}}}


def error(tmp_path, doc) -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        load_scenario(write(tmp_path, doc))
    assert "\n" not in str(info.value)
    return info.value


def test_minimal_loads(tmp_path):
    s = load_scenario(write(tmp_path, minimal(tmp_path)))
    assert len(s.constellation()) == 20 and s.times().size == 11
    assert list(s.ground().terminals["terminal"]) == ["t1"]
    assert s.policy() is None and s.faults() is None


@pytest.mark.parametrize("patch, location, needle", [
    (lambda d: d.update(nmae="x"), "nmae", "unknown key"),
    (lambda d: d["time"].update(step="60"), "time.step", "did you mean 'step_s'"),
    (lambda d: d["time"].update(stop="2022-10-07T11:00:00Z"), "time", "stop must be after"),
    (lambda d: d["time"].update(step_s=4), "time", "whole multiple of step_s"),
    (lambda d: d["time"].update(start="yesterday"), "time.start", "must be a UTC time"),
    (lambda d: d["constellation"].update(starlink_2022=True), "constellation",
     "exactly one constellation source"),
    (lambda d: d["constellation"]["shells"][0].update(planes="four"),
     "constellation.shells[0].planes", "must be a whole number"),
    (lambda d: d["ground"]["terminals"].update(file="nope.csv"), "ground.terminals.file",
     "file not found"),
    (lambda d: d["ground"].update(gateways="gw.csv"), "ground.gateways", "file not found"),
    (lambda d: d.update(faults={"jammers": [
        {"id": "a", "lat_deg": 48, "lon_deg": 37, "eirp_dbw": 30, "bandwidth_mhz": 250,
         "center_ghz": 11.7},
        {"id": "b", "lat_deg": 48, "lon_deg": 37, "eirp_dbw": "loud", "bandwidth_mhz": 250,
         "center_ghz": 11.7}]}), "faults.jammers[1].eirp_dbw", "must be a number"),
    (lambda d: d.update(faults={"failures": [{"sat": 1, "start": "2022-10-07", "extra": 1}]}),
     "faults.failures[0].extra", "unknown key"),
    (lambda d: d.update(policy={"file": "missing.yaml"}), "policy.file", "file not found"),
    (lambda d: d.update(policy={}), "policy", "exactly one of file or versions"),
    (lambda d: d.update(network={"mode": "laser"}), "network.mode", "'isl' or 'bent_pipe'"),
    (lambda d: d.update(outputs={"chunk_steps": 0}), "outputs.chunk_steps",
     "greater than or equal to 1"),
    (lambda d: d.update(outputs={"chunk_steps": 10}) or d["time"].update(step_s=5),
     "outputs.chunk_steps", "multiple of slot_s/step_s = 3"),
    (lambda d: d.update(outputs={"partition_terminals": 0}), "outputs.partition_terminals",
     "greater than or equal to 1"),
    (lambda d: d.update(outputs={"partition_terminals": "many"}),
     "outputs.partition_terminals", "must be a whole number"),
    (lambda d: d.update(outputs={"partitions": 4}), "outputs.partitions", "unknown key"),
    (lambda d: d["ground"].update(terminals={"generate": [
        {"prefix": "a", "account": "a", "n": 5, "within": {"oblasts": ["UA-99"]}}]}),
     "ground.terminals.generate[0].within.oblasts[0]", "unknown oblast"),
])
def test_errors_name_the_path(tmp_path, patch, location, needle):
    doc = minimal(tmp_path)
    patch(doc)
    err = error(tmp_path, doc)
    assert err.location == location
    assert f"scenario.yaml: {location}: " in str(err)
    assert needle in str(err)


def test_bad_policy_file_names_both_paths(tmp_path):
    doc = minimal(tmp_path)
    (tmp_path / "p.yaml").write_text("accounts: [{id: a, country: Ukraine}]\n")
    doc["policy"] = {"file": "p.yaml"}
    s = load_scenario(write(tmp_path, doc))
    with pytest.raises(ScenarioError, match=r"policy\.file: .*p\.yaml: accounts\[0\]\.country"):
        s.policy()


def test_paths_resolve_against_the_file_not_the_cwd(tmp_path, monkeypatch):
    sub = tmp_path / "scen"
    sub.mkdir()
    doc = minimal(sub)
    shutil.copy(TLE, sub / "oct.tle")
    doc["constellation"] = {"tle": ["oct.tle"], "include": ["STARLINK-*"]}
    (sub / "zones").mkdir()
    (sub / "zones" / "z.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [
            [[30, 50], [31, 50], [31, 51], [30, 51], [30, 50]]]}}]}))
    (sub / "policy.yaml").write_text(
        "accounts: [{id: a, country: UKR}]\n"
        "geofences: [{id: z, action: deny, geometry: {$ref: zones/z.geojson}}]\n")
    doc["policy"] = {"file": "policy.yaml"}
    path = write(sub, doc)
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)
    s = load_scenario(Path("..") / "scen" / "scenario.yaml")
    assert len(s.constellation()) > 3000
    assert s.policy().geofences[0].geometry["type"] == "Polygon"
    assert [t.id for t in s.policy().terminals] == ["t1"]
    assert s.source_path == path.resolve()


def test_schema_command_prints_json(capsys):
    assert main(["schema", "scenario"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema == scenario_json_schema()
    assert {"time", "constellation", "ground", "policy", "faults"} <= set(schema["properties"])
    assert main(["schema", "policy"]) == 0
    assert "geofences" in json.loads(capsys.readouterr().out)["properties"]


def test_partition_terminals_is_optional_and_not_hashed(tmp_path):
    doc = minimal(tmp_path)
    plain = load_scenario(write(tmp_path, doc))
    assert plain.partition_terminals is None
    doc["outputs"] = {"partition_terminals": 500}
    parted = load_scenario(write(tmp_path, doc, "parted.yaml"))
    assert parted.partition_terminals == 500
    # how chunks are computed, not what they hold: a run resumes under another setting
    assert parted.scenario_hash() == plain.scenario_hash()
    field = scenario_json_schema()["$defs"]["OutputsSpec"]["properties"]["partition_terminals"]
    assert {"type": "integer", "minimum": 1} in field["anyOf"]


def test_overrides_merge_replace_and_remove_keys():
    from leotwin.flagship import flagship_path
    from leotwin.scenario import ScenarioError, load_scenario

    sc = load_scenario(flagship_path(), overrides={
        "constellation": {"starlink_2022": None, "starlink_gen1": True},
        "time": {"stop": "2022-10-01T01:00:00Z"}})
    assert sc.spec.constellation.starlink_gen1 and not sc.spec.constellation.starlink_2022
    assert sc.spec.time.step_s == 60  # the rest of the section is kept
    with pytest.raises(ScenarioError, match="constellation"):  # two sources: still an error
        load_scenario(flagship_path(), overrides={"constellation": {"starlink_gen1": True}})
