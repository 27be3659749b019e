"""The flagship scenario on a short window: the attribution mechanism, not fixed numbers."""

import numpy as np
import pytest

from leotwin.analytics.simulate import simulate_run
from leotwin.flagship import answer, flagship_path, retaken_area
from leotwin.frames import great_circle_km
from leotwin.orbits.propagate import propagate
from leotwin.policy.geofence import ZoneIndex
from leotwin.scenario import load_scenario

WINDOW = {"start": "2022-10-05T10:00:00Z", "stop": "2022-10-05T10:20:00Z"}


@pytest.fixture(scope="module")
def flagship(tmp_path_factory):
    sc = load_scenario(flagship_path(), overrides={"time": WINDOW})
    pos = propagate(sc.constellation(), sc.times())
    run = simulate_run(pos, sc.ground(), policy=sc.policy(), faults=sc.faults(),
                       config=sc.network_config(), as_of=sc.as_of())
    store = tmp_path_factory.mktemp("store") / "policy.sqlite"
    return sc, run, answer(run, scenario=sc, store_url=f"sqlite:///{store}")


def test_retaken_area_contains_izium_and_not_kharkiv():
    zone = ZoneIndex([retaken_area()])
    inside = zone.contains(np.array([49.207, 49.982]), np.array([37.277, 36.255]))[:, 0]
    assert inside.tolist() == [True, False]


def test_outages_in_retaken_areas_are_mainly_policy(flagship):
    _, run, ans = flagship
    assert ans.retaken_outage_hours > 0
    top = ans.retaken.iloc[0]
    assert top["cause"] == "policy" and top["rule"] == f"geofence:{ans.geofence_id}"
    assert top["share"] > 0.5


def test_counterfactual_without_the_geofence_restores_them(flagship):
    _, _, ans = flagship
    assert ans.counterfactual_retaken_hours >= 0.9 * ans.retaken_outage_hours


def test_jammers_explain_only_outages_near_them(flagship):
    sc, run, _ = flagship
    res = run.result
    jam = (res["cause_bits"].to_numpy() & 8) > 0  # CAUSE_BIT["jamming"]
    lat, lon, _ = run.ground.terminal_positions(res["time"].to_numpy())
    jammers = sc.faults().jammers
    d = np.min([great_circle_km(lat, lon, j.lat_deg, j.lon_deg) for j in jammers], axis=0)
    assert (d[jam] < 25.0).all()  # a 30–38 dBW jammer jams a dish within a few km only


def test_contract_breach_and_audit_entry(flagship):
    _, _, ans = flagship
    row = ans.contracts.iloc[0]
    assert row["breach"] and row["breach_hours"] > 0 and row["credit_owed"] > 0
    assert ans.audit["actor"] == "policy-team" and ans.audit["chain_ok"]
    assert ans.audit["recorded_at"].startswith("2022-09-01")
    text = ans.text()
    assert "Terminal-hours lost by cause" in text and ans.geofence_id in text


def test_assumptions_are_listed_for_the_report():
    sc = load_scenario(flagship_path(), overrides={"time": WINDOW})
    rows = sc.assumptions()
    assert len(rows) > 10
    assert {"scenario.yaml", "policy-v1.yaml"} & {r["file"] for r in rows}
    assert all("assumption" in r["assumption"].lower() for r in rows)
