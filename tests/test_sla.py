"""Metering and SLA: hand-computed usage, bill and contract availability; input checks."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from leotwin.analytics.sla import (
    availability_terms,
    bill,
    contract_availability,
    contract_scope,
    usage_by_account_day,
)
from leotwin.policy.models import Contract, ServicePlan


def hours(start: str, n: int, step_h: float = 1.0) -> np.ndarray:
    return np.datetime64(start, "ns") + np.arange(n) * np.timedelta64(int(step_h * 3600), "s")


def box(lat, lon, half=0.5):
    ring = [[lon - half, lat - half], [lon + half, lat - half], [lon + half, lat + half],
            [lon - half, lat + half], [lon - half, lat - half]]
    return {"type": "Polygon", "coordinates": [ring]}


# ----------------------------------------------------------------------------- usage


def test_usage_100_mbps_for_one_hour_is_45_gb():
    times = hours("2022-10-01T00:00", 4, 0.25)            # four 15-min steps = one hour
    usage = usage_by_account_day(times, ["t1"], ["army"], np.full((4, 1), 100.0))
    assert usage.shape == (1, 3)
    assert usage["gb"].iloc[0] == pytest.approx(45.0)      # 100e6 b/s × 3600 s / 8e9 b/GB
    assert usage["day"].iloc[0] == pd.Timestamp("2022-10-01")


def test_usage_sums_terminals_per_account_and_splits_utc_days():
    times = hours("2022-10-01T22:00", 4)                   # 22, 23 | 00, 01 UTC
    thr = np.array([[100.0, 0.0, 8.0],
                    [100.0, 50.0, 8.0],
                    [0.0, 50.0, 8.0],
                    [0.0, 0.0, 8.0]])
    usage = usage_by_account_day(times, ["a1", "n1", "a2"], ["army", "ngo", "army"], thr)
    got = usage.set_index(["account", "day"])["gb"]
    d1, d2 = pd.Timestamp("2022-10-01"), pd.Timestamp("2022-10-02")
    assert got[("army", d1)] == pytest.approx(2 * 45.0 + 2 * 3.6)
    assert got[("army", d2)] == pytest.approx(2 * 3.6)
    assert got[("ngo", d1)] == pytest.approx(22.5)
    assert got[("ngo", d2)] == pytest.approx(22.5)
    assert usage["account"].tolist() == ["army", "army", "ngo", "ngo"]   # zero days kept, sorted
    assert usage["gb"].sum() == pytest.approx(thr.sum() * 3600 / 8000)


def test_usage_last_step_uses_step_s():
    times = hours("2022-10-01T00:00", 2)
    usage = usage_by_account_day(times, ["t"], ["a"], np.array([[0.0], [100.0]]), step_s=1800)
    assert usage["gb"].iloc[0] == pytest.approx(22.5)


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"throughput_mbps": np.full((3, 2), -1.0)}, "throughput_mbps"),
    ({"throughput_mbps": np.full((3, 2), np.nan)}, "throughput_mbps"),
    ({"throughput_mbps": np.ones((2, 3))}, "throughput_mbps"),
    ({"accounts": ["a"]}, "accounts"),
    ({"times": hours("2022-10-01", 3)[::-1]}, "times"),
    ({"terminals": ["t", "t"]}, "terminals"),
])
def test_usage_bad_input_names_the_argument(kwargs, name):
    args = {"times": hours("2022-10-01", 3), "terminals": ["t", "u"], "accounts": ["a", "a"],
            "throughput_mbps": np.ones((3, 2))}
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        usage_by_account_day(**args)


# ----------------------------------------------------------------------------- bill


PLAN = ServicePlan(name="business", priority_quota_gb_month=40.0, min_mbps=10, max_mbps=200,
                   price_per_month=250.0, price_per_gb=2.0)
CHEAP = ServicePlan(name="residential", priority_quota_gb_month=0.0, min_mbps=5, max_mbps=100,
                    price_per_month=110.0, price_per_gb=0.0)


def test_bill_charges_fee_per_terminal_and_gb_beyond_pooled_quota():
    usage = pd.DataFrame({
        "account": ["army", "army", "army", "ngo"],
        "day": pd.to_datetime(["2022-10-30", "2022-10-31", "2022-11-01", "2022-10-31"]),
        "gb": [60.0, 45.0, 10.0, 500.0],
    })
    b = bill(usage, {"army": PLAN, "ngo": CHEAP}, ["army", "army", "ngo"])   # per terminal
    rows = b.set_index(["account", "month"])
    oct_, nov = pd.Timestamp("2022-10-01"), pd.Timestamp("2022-11-01")
    army_oct = rows.loc[("army", oct_)]
    assert army_oct["terminals"] == 2
    assert army_oct["gb"] == pytest.approx(105.0)
    assert army_oct["quota_gb"] == pytest.approx(80.0)           # 2 terminals × 40 GB, pooled
    assert army_oct["billable_gb"] == pytest.approx(25.0)
    assert army_oct["fee"] == pytest.approx(500.0)               # 2 × 250
    assert army_oct["usage_charge"] == pytest.approx(50.0)       # 25 GB × 2
    assert army_oct["total"] == pytest.approx(550.0)
    army_nov = rows.loc[("army", nov)]                           # within quota: fee only
    assert (army_nov["billable_gb"], army_nov["total"]) == (0.0, 500.0)
    ngo = rows.loc[("ngo", oct_)]
    assert (ngo["plan"], ngo["terminals"], ngo["total"]) == ("residential", 1, 110.0)
    assert b["account"].tolist() == ["army", "army", "ngo"]


def test_bill_from_usage_and_terminal_count_mapping():
    times = hours("2022-10-01T00:00", 2)
    usage = usage_by_account_day(times, ["t"], ["a"], np.full((2, 1), 100.0))   # 90 GB
    b = bill(usage, {"a": PLAN}, {"a": 1})
    assert b["billable_gb"].iloc[0] == pytest.approx(50.0)
    assert b["total"].iloc[0] == pytest.approx(250.0 + 100.0)


def test_bill_bad_input_names_the_argument():
    usage = pd.DataFrame({"account": ["a"], "day": pd.to_datetime(["2022-10-01"]), "gb": [1.0]})
    with pytest.raises(ValueError, match="plans_by_account"):
        bill(usage, {}, {"a": 1})
    with pytest.raises(ValueError, match="terminals_per_account"):
        bill(usage, {"a": PLAN}, {"b": 1})
    with pytest.raises(ValueError, match="usage"):
        bill(usage.drop(columns="gb"), {"a": PLAN}, {"a": 1})
    with pytest.raises(ValueError, match="usage.gb"):
        bill(usage.assign(gb=-1.0), {"a": PLAN}, {"a": 1})


# ----------------------------------------------------------------------------- availability


def contract(**kw) -> Contract:
    base = {"id": "c-army", "account": "army", "committed_availability_pct": 99.0,
            "covered_area": box(50.0, 36.0), "term_start": datetime(2022, 10, 1),
            "term_end": datetime(2022, 10, 5, 4), "credit_per_breach_hour": 50.0}
    return Contract(**(base | kw))


def scenario():
    # terminals: army inside, army outside the area, ngo inside
    lat = np.array([50.0, 45.0, 50.1])
    lon = np.array([36.0, 30.0, 36.1])
    acc = np.array(["army", "army", "ngo"])
    times = hours("2022-09-30T20:00", 112)               # 09-30 20:00 … 10-05 11:00, hourly
    served = np.ones((112, 3), bool)
    return times, lat, lon, acc, served


def test_availability_with_one_breach_and_its_credit():
    times, lat, lon, acc, served = scenario()
    c = contract()      # term 10-01 00:00 (index 4) … 10-05 04:00 (index 104): 100 hours
    served[10:13, 0] = False            # 3 h out for the in-scope terminal, inside the term
    served[0:4, 0] = False              # before the term: not counted
    served[:, 1] = False                # out of the area: not counted
    served[:, 2] = False                # other account: not counted
    ok = contract(id="c-ok", committed_availability_pct=97.0)     # met exactly: no breach
    out = contract_availability(times, lat, lon, acc, served, [c, ok])
    row = out.set_index("contract").loc["c-army"]
    assert row["in_scope_terminal_hours"] == pytest.approx(100.0)
    assert row["achieved_pct"] == pytest.approx(97.0)
    assert bool(row["breach"])
    assert row["breach_hours"] == pytest.approx(2.0)        # (99 − 97) % × 100 h
    assert row["credit_owed"] == pytest.approx(100.0)       # 2 h × 50
    other = out.set_index("contract").loc["c-ok"]
    assert other["achieved_pct"] == pytest.approx(97.0)
    assert not other["breach"]
    assert other["breach_hours"] == 0.0 and other["credit_owed"] == 0.0
    assert list(out.columns) == ["contract", "account", "committed_pct", "achieved_pct",
                                 "in_scope_terminal_hours", "breach", "breach_hours",
                                 "credit_owed"]
    assert out["breach"].dtype == bool


def test_term_beyond_the_window_counts_only_simulated_steps():
    times, lat, lon, acc, served = scenario()
    c = contract(term_start=datetime(2022, 10, 2), term_end=datetime(2022, 10, 9))
    served[50, 0] = False                # 10-02 00:00 (index 28) … 10-05 11:00 (111): 84 h
    row = contract_availability(times, lat, lon, acc, served, [c]).iloc[0]
    assert row["in_scope_terminal_hours"] == pytest.approx(84.0)
    assert row["achieved_pct"] == pytest.approx(100.0 * 83 / 84)
    assert bool(row["breach"])           # 98.81 % < 99 %
    assert row["breach_hours"] == pytest.approx((99.0 - 100.0 * 83 / 84) / 100 * 84)
    assert row["credit_owed"] == pytest.approx(row["breach_hours"] * 50.0)


def test_contract_with_nothing_in_scope():
    times, lat, lon, acc, served = scenario()
    row = contract_availability(times, lat, lon, acc, served,
                                [contract(account="nobody")]).iloc[0]
    assert np.isnan(row["achieved_pct"]) and row["in_scope_terminal_hours"] == 0.0
    assert not row["breach"]


def test_shared_helpers_match_the_preview_definition():
    times, lat, lon, acc, _ = scenario()
    in_term, inside = contract_scope(contract(), times, lat, lon, acc)
    assert inside.tolist() == [True, False, False]
    assert int(in_term.sum()) == 100
    terms = availability_terms(99.0, np.array([[True], [False]]), np.array([1.0, 1.0]), 10.0)
    assert terms == {"achieved_pct": 50.0, "in_scope_terminal_hours": 2.0, "breach": True,
                     "breach_hours": pytest.approx(0.98), "credit_owed": pytest.approx(9.8)}


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"served": np.ones((112, 2), bool)}, "served"),
    ({"served": np.ones((112, 3))}, "served"),
    ({"terminal_lon_deg": np.zeros(2)}, "terminal_lon_deg"),
    ({"terminal_account": ["army"]}, "terminal_account"),
])
def test_availability_bad_input_names_the_argument(kwargs, name):
    times, lat, lon, acc, served = scenario()
    args = {"times": times, "terminal_lat_deg": lat, "terminal_lon_deg": lon,
            "terminal_account": acc, "served": served, "contracts": [contract()]}
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        contract_availability(**args)


def test_availability_rejects_unsorted_times():
    times, lat, lon, acc, served = scenario()
    with pytest.raises(ValueError, match="times"):
        contract_availability(times[::-1], lat, lon, acc, served, [contract()])


def test_availability_agrees_with_the_policy_preview():
    """Same definition as leotwin.policy.preview: feed the engine's 'not denied' as served."""
    from leotwin.policy.engine import DENY, decide
    from leotwin.policy.models import Account, Geofence, Policy, Terminal
    from leotwin.policy.preview import preview_change
    from leotwin.timescale import time_grid

    fence = Geofence(id="cut", geometry=box(49.97, 36.27, 0.2), action="deny",
                     valid_from=datetime(2022, 10, 1, 12), override_contracts=True)
    c = Contract(id="c", account="army", committed_availability_pct=99.0,
                 covered_area=box(49.9, 36.2, 1.0), term_start=datetime(2022, 1, 1),
                 term_end=datetime(2023, 1, 1), credit_per_breach_hour=100.0)
    policy = Policy(accounts=[Account(id="army", country="UKR")],
                    terminals=[Terminal(id="kh1", account="army", lat_deg=49.98, lon_deg=36.25),
                               Terminal(id="kv", account="army", lat_deg=50.45, lon_deg=30.52),
                               Terminal(id="kh2", account="army", lat_deg=49.5, lon_deg=35.9)],
                    geofences=[fence], contracts=[c])
    window = ("2022-10-01T00:00Z", "2022-10-02T00:00Z")
    expected = preview_change(None, policy, window, step_s=3600).contracts.iloc[0]
    times = time_grid(*window, 3600)
    lat = np.array([t.lat_deg for t in policy.terminals])
    lon = np.array([t.lon_deg for t in policy.terminals])
    served = decide(policy, None, times, (lat, lon))["decision"].to_numpy() != DENY
    got = contract_availability(times, lat, lon, ["army"] * 3, served, [c], step_s=3600).iloc[0]
    assert got["achieved_pct"] == pytest.approx(expected["after_pct"])
    assert got["achieved_pct"] < 99.0
    for col in ("breach", "breach_hours", "credit_owed"):
        assert got[col] == pytest.approx(expected[col])


def test_accumulators_window_by_window_equal_the_whole_exactly():
    from leotwin.analytics.intervals import _step_durations_s
    from leotwin.analytics.sla import ContractAccumulator, UsageAccumulator

    rng = np.random.default_rng(7)
    times = np.datetime64("2022-10-05T20:00", "ns") + np.arange(700) * np.timedelta64(37, "s")
    terms, accounts = ["a1", "n1", "a2", "a3"], ["army", "ngo", "army", "army"]
    thr = rng.random((times.size, 4)) * 300.0
    served = rng.random((times.size, 4)) < 0.9
    contract = Contract(id="c", account="army", committed_availability_pct=99.9,
                        covered_area=box(50.0, 30.0, 3.0), term_start=datetime(2022, 10, 5, 22),
                        term_end=datetime(2022, 10, 6, 3), credit_per_breach_hour=7.0)
    lat, lon = [50.1, 50.2, 49.9, 45.0], [30.1, 30.2, 29.9, 30.0]
    whole_u = usage_by_account_day(times, terms, accounts, thr, step_s=37)
    whole_c = contract_availability(times, lat, lon, accounts, served, [contract], step_s=37)
    dur_s = _step_durations_s(times, 37)
    u, c = UsageAccumulator(terms, accounts), ContractAccumulator(lat, lon, accounts, [contract])
    cuts = np.r_[0, np.sort(rng.choice(np.arange(1, times.size), 9, replace=False)), times.size]
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):     # windows across midnight and term
        u.add(times[a:b], thr[a:b], dur_s[a:b])
        c.add(times[a:b], served[a:b], dur_s[a:b])
    pd.testing.assert_frame_equal(u.table(), whole_u, check_exact=True)
    pd.testing.assert_frame_equal(c.table(), whole_c, check_exact=True)
    assert len(whole_u) == 4 and whole_c["breach"].iloc[0]
    with pytest.raises(ValueError, match="continue after"):
        u.add(times[:2], thr[:2], dur_s[:2])
