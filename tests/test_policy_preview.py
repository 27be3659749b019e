"""Change-impact preview and the contract guard, through the decision engine."""

from datetime import datetime

import pytest

from leotwin.policy.models import Account, Contract, Geofence, Policy, Terminal
from leotwin.policy.preview import ChangeRefused, guard, preview_change


def box(lat, lon, half=0.5):
    ring = [[lon - half, lat - half], [lon + half, lat - half], [lon + half, lat + half],
            [lon - half, lat + half], [lon - half, lat - half]]
    return {"type": "Polygon", "coordinates": [ring]}


def base(**extra) -> Policy:
    return Policy(
        accounts=[Account(id="army", country="UKR"), Account(id="ngo", country="UKR")],
        terminals=[Terminal(id="kh1", account="army", lat_deg=49.98, lon_deg=36.25),
                   Terminal(id="kh2", account="ngo", lat_deg=49.95, lon_deg=36.30),
                   Terminal(id="kv", account="army", lat_deg=50.45, lon_deg=30.52),
                   Terminal(id="nowhere", account="ngo")],
        contracts=[Contract(id="c-army", account="army", committed_availability_pct=99.0,
                            covered_area=box(49.9, 36.2, 1.0), term_start=datetime(2022, 1, 1),
                            term_end=datetime(2023, 1, 1), credit_per_breach_hour=100.0)],
        **extra)


WINDOW = ("2022-10-01T00:00Z", "2022-10-02T00:00Z")


def test_preview_counts_hours_and_respects_contract_protection():
    current = base()
    fence = Geofence(id="kharkiv", geometry=box(49.97, 36.27, 0.2), action="deny",
                     valid_from=datetime(2022, 10, 1, 12), reason="front", author="ops")
    proposed = base(geofences=[fence])
    p = preview_change(current, proposed, WINDOW, step_s=3600)
    lost = p.terminals.set_index("terminal")["hours_lost"]
    assert lost["kh2"] == pytest.approx(13.0)  # 12:00 … 00:00 inclusive, hourly steps
    assert lost["kh1"] == 0  # protected by its contract
    assert lost["kv"] == 0
    assert p.skipped_terminals == ["nowhere"]
    assert p.breaches.empty
    guard(p, author="ops")  # nothing to approve


def test_override_breaches_the_contract_and_needs_a_second_approver():
    fence = Geofence(id="kharkiv", geometry=box(49.97, 36.27, 0.2), action="deny",
                     valid_from=datetime(2022, 10, 1, 12), reason="front", author="ops",
                     override_contracts=True)
    p = preview_change(base(), base(geofences=[fence]), WINDOW, step_s=3600)
    row = p.breaches.iloc[0]
    assert row["contract"] == "c-army" and row["before_pct"] == 100.0
    assert row["after_pct"] == pytest.approx(100 * 12 / 25)
    assert row["breach_hours"] == pytest.approx((0.99 - 12 / 25) * 25)
    assert row["credit_owed"] == pytest.approx(row["breach_hours"] * 100.0)
    with pytest.raises(ChangeRefused, match="no approval") as info:
        guard(p, author="ops")
    assert "BREACH contract c-army" in str(info.value)
    with pytest.raises(ChangeRefused, match="is the author"):
        guard(p, author="ops", approver="ops", approver_role="approver", approval_reason="x")
    with pytest.raises(ChangeRefused, match="not 'approver'"):
        guard(p, author="ops", approver="eve", approver_role="policy_editor",
              approval_reason="x")
    with pytest.raises(ChangeRefused, match="needs a reason"):
        guard(p, author="ops", approver="ann", approver_role="approver")
    guard(p, author="ops", approver="ann", approver_role="approver",
          approval_reason="front line moved; army informed")
