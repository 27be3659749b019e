"""Run directories (write_run / read_run) and the HTML report of a small synthetic run."""

import json
import re
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

import leotwin
from leotwin.analytics.report import REPORT_SECTIONS, report_tables, write_report
from leotwin.analytics.runio import RUN_FILES, read_manifest, read_run, write_run
from leotwin.analytics.simulate import simulate_run
from leotwin.cli import main
from leotwin.faults import Faults, GatewayOutage, SatelliteFailure
from leotwin.policy.models import (
    Account,
    Contract,
    Geofence,
    Policy,
    PolicyHistory,
    PolicyVersion,
    ServicePlan,
    Terminal,
)

STEP_S = 60.0
KHARKIV, KYIV, LVIV = (49.98, 36.25), (50.45, 30.52), (49.84, 24.03)


def utc(minute):
    return datetime(2022, 10, 5, 12, minute, tzinfo=UTC)


def box(lat, lon, half=0.5):
    ring = [[lon - half, lat - half], [lon + half, lat - half], [lon + half, lat + half],
            [lon - half, lat + half], [lon - half, lat - half]]
    return {"type": "Polygon", "coordinates": [ring]}


@pytest.fixture(scope="module")
def positions():
    shell = leotwin.walker_shell(altitude_km=550, inclination_deg=53, planes=72,
                                 sats_per_plane=22, phasing=17, epoch="2022-10-05", name="s1")
    return leotwin.propagate(shell, leotwin.time_grid("2022-10-05T12:00Z", "2022-10-05T12:20Z",
                                                      STEP_S))


@pytest.fixture(scope="module")
def ground():
    terminals = pd.DataFrame({"terminal": ["kharkiv", "kyiv", "lviv"],
                              "account": ["army", "army", "clinic"],
                              "lat_deg": [KHARKIV[0], KYIV[0], LVIV[0]],
                              "lon_deg": [KHARKIV[1], KYIV[1], LVIV[1]]})
    gateways = pd.DataFrame({"gateway": ["GW-KYIV"], "lat_deg": [50.4], "lon_deg": [30.6],
                             "pop": ["KBP"]})
    pops = pd.DataFrame({"pop": ["KBP"], "lat_deg": [50.35], "lon_deg": [30.9]})
    return leotwin.Ground.load(terminals, gateways=gateways, pops=pops)


def scenario_policy(geofence_until=10):
    return Policy(
        accounts=[Account(id="army", country="UKR"), Account(id="clinic", country="UKR")],
        plans=[ServicePlan(name="std", priority_quota_gb_month=1000, min_mbps=0, max_mbps=500)],
        terminals=[Terminal(id="kharkiv", account="army", plan="std"),
                   Terminal(id="kyiv", account="army", plan="std"),
                   Terminal(id="lviv", account="clinic", plan="std")],
        geofences=[Geofence(id="G-EAST", geometry=box(*KHARKIV), action="deny",
                            valid_to=utc(geofence_until), reason="front", author="ops")],
        contracts=[Contract(id="C-KYIV", account="army", committed_availability_pct=99.0,
                            covered_area=box(*KYIV), term_start=datetime(2022, 10, 1, tzinfo=UTC),
                            term_end=datetime(2022, 11, 1, tzinfo=UTC),
                            credit_per_breach_hour=50.0)])


@pytest.fixture(scope="module")
def run(positions, ground):
    # The history's latest version is the one whose contracts the run directory evaluates.
    history = PolicyHistory(versions=[
        PolicyVersion(version=1, recorded_at=datetime(2022, 10, 1, tzinfo=UTC), author="ops",
                      reason="initial", policy=scenario_policy().model_copy(
                          update={"contracts": []})),
        PolicyVersion(version=2, recorded_at=datetime(2022, 10, 2, tzinfo=UTC), author="ops",
                      reason="contract", policy=scenario_policy())])
    faults = Faults(
        outages=[GatewayOutage(id="cut", pop="KBP", start=utc(4), end=utc(7))],
        failures=[SatelliteFailure(sat=int(s), start=utc(13), end=utc(15))
                  for s in positions["sat"].to_numpy()])
    return simulate_run(positions, ground, policy=history, faults=faults)


@pytest.fixture(scope="module")
def run_dir(run, tmp_path_factory):
    return write_run(run, tmp_path_factory.mktemp("run") / "run1")


@pytest.fixture(scope="module")
def report(run_dir):
    return write_report(run_dir)


def expected_cause_hours(result):
    """Terminal-hours per primary cause, counted straight from the simulation result."""
    cause = result["cause"].to_numpy()
    names, counts = np.unique(cause[cause != ""], return_counts=True)
    return {str(n): c * STEP_S / 3600.0 for n, c in zip(names, counts, strict=True)}


def section(text, sid):
    start = text.index(f'<h2 id="{sid}"')
    nxt = text.find("<h2 ", start + 1)
    return text[start:nxt if nxt > 0 else len(text)]


def test_the_scenario_has_several_causes(run):
    hours = expected_cause_hours(run.result)
    assert set(hours) == {"policy", "no_backhaul", "satellite_failure"}


def test_run_directory_round_trip(run, run_dir):
    manifest = read_manifest(run_dir)
    assert manifest["format_version"] == 1 and manifest["step_s"] == STEP_S
    assert manifest["time_start"] == "2022-10-05T12:00:00Z"
    assert manifest["time_end"] == "2022-10-05T12:21:00Z"
    assert manifest["counts"]["steps"] == 21 and manifest["counts"]["terminals"] == 3
    assert manifest["primary_order"][0] == "no_coverage"
    tables = read_run(run_dir)
    assert set(tables) == set(RUN_FILES)
    tl = tables["timeline"]
    res = run.result
    assert len(tl) == res.sizes["time"] * res.sizes["terminal"]
    wide = tl.pivot(index="time", columns="terminal", values="cause")
    wide = wide[res["terminal"].to_numpy()]
    np.testing.assert_array_equal(wide.to_numpy(dtype=str), res["cause"].to_numpy())
    served = tl.pivot(index="time", columns="terminal", values="served")
    np.testing.assert_array_equal(served[res["terminal"].to_numpy()].to_numpy(bool),
                                  res["served"].to_numpy())
    assert tl["time"].dtype == "datetime64[ns]"
    iv = tables["intervals"]
    assert len(iv) == manifest["counts"]["intervals"] == len(leotwin.outage_table(res))
    assert iv["duration_s"].sum() == (~res["served"].to_numpy()).sum() * STEP_S
    # contracts of the latest policy version: Kyiv lost 5 of 21 steps against 99 %
    c = tables["contracts"].iloc[0]
    assert c["contract"] == "C-KYIV" and bool(c["breach"])
    assert c["achieved_pct"] == pytest.approx(100 * 16 / 21)
    assert c["credit_owed"] == pytest.approx(c["breach_hours"] * 50.0)
    usage = tables["usage"]
    assert list(usage["account"]) == ["army", "clinic"]
    gb = res["throughput_mbps"].to_numpy().sum() * 1e6 * STEP_S / 8e9
    assert usage["gb"].sum() == pytest.approx(gb)


def test_report_html_has_every_section_and_figures(report):
    text = report.read_text(encoding="utf-8")
    assert report.name == "report.html"
    for sid in REPORT_SECTIONS:
        assert f'<h2 id="{sid}"' in text
    assert text.count('<img src="data:image/png;base64,') >= 3
    # self-contained: nothing fetched from elsewhere
    assert not re.search(r'<(link|script)\b|src="(?!data:)|url\(', text)
    assert "geofence:G-EAST" in section(text, "rules")
    assert "C-KYIV" in section(text, "sla")


def test_cause_table_matches_the_run(run, report):
    hours = expected_cause_hours(run.result)
    causes = pd.read_parquet(report.parent / "report_causes.parquet")
    got = dict(zip(causes["cause"], causes["terminal_hours"], strict=True))
    assert got.keys() == hours.keys()
    for name, h in hours.items():
        assert got[name] == pytest.approx(h)
    assert list(causes["cause"]) == ["policy", "satellite_failure", "no_backhaul"]
    dish = dict(zip(causes["cause"], causes["dish_state"], strict=True))
    assert dish["policy"] == dish["satellite_failure"] == "SEARCHING"  # indistinguishable
    html_causes = section(report.read_text(encoding="utf-8"), "causes")
    for h in hours.values():
        assert f"{h:.3f}" in html_causes
    rules = pd.read_parquet(report.parent / "report_rules.parquet")
    assert list(rules["rule"]) == ["geofence:G-EAST"]
    assert rules["terminal_hours_denied"].iloc[0] == pytest.approx(hours["policy"])
    states = pd.read_parquet(report.parent / "report_dish_states.parquet")
    assert states["steps"].sum() == run.result["cause"].size
    assert states["share_pct"].sum() == pytest.approx(100.0)


def test_report_parquet_tables_round_trip(run, run_dir, report):
    expected = report_tables(read_run(run_dir), read_manifest(run_dir))
    for name, frame in expected.items():
        got = pd.read_parquet(report.parent / f"report_{name}.parquet")
        pd.testing.assert_frame_equal(got, frame, check_dtype=False)
    av = expected["availability"]
    assert len(av) == run.result.sizes["time"]
    shares = av.drop(columns="time").sum(axis=1).to_numpy()
    np.testing.assert_allclose(shares, 100.0)
    np.testing.assert_allclose(av["served_pct"] / 100,
                               run.result["served"].mean("terminal").to_numpy())
    terms = expected["terminals"].set_index("terminal")
    assert terms.loc["kharkiv", "dominant_cause"] == "policy"
    assert terms.loc["kyiv", "dominant_cause"] == "no_backhaul"
    assert terms.loc["kharkiv", "outage_hours"] == pytest.approx(12 * STEP_S / 3600)


def test_cli_report(run_dir, tmp_path, capsys):
    out = tmp_path / "elsewhere" / "r.html"
    assert main(["report", str(run_dir), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert out.is_file() and (out.parent / "report_causes.parquet").is_file()


def test_cli_report_bad_run_dir(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing" in err
    (tmp_path / "manifest.json").write_text("{not json")
    assert main(["report", str(tmp_path)]) == 2
    assert "manifest.json" in capsys.readouterr().err


def test_invalid_run_directories_name_the_file(run_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        read_run(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "leotwin-run",
                                                        "format_version": 99}))
    with pytest.raises(ValueError, match=r"manifest\.json.*version 99"):
        read_run(tmp_path)
    (tmp_path / "manifest.json").write_text((run_dir / "manifest.json").read_text())
    with pytest.raises(FileNotFoundError, match="timeline.parquet"):
        read_run(tmp_path)
    with pytest.raises(ValueError, match="not a directory"):
        write_run(None, tmp_path / "manifest.json")


def test_report_of_a_quiet_run_without_policy(positions, ground, tmp_path):
    quiet = simulate_run(positions, ground)
    run_dir = write_run(quiet, tmp_path / "quiet")
    assert len(read_run(run_dir)["contracts"]) == 0
    path = write_report(run_dir, tmp_path)
    assert path == tmp_path / "report.html"
    text = path.read_text(encoding="utf-8")
    assert all(f'<h2 id="{sid}"' in text for sid in REPORT_SECTIONS)
    assert "No step was denied by a policy rule." in text
    assert len(pd.read_parquet(tmp_path / "report_causes.parquet")) == 0
