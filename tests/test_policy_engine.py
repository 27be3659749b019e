"""Decision engine: precedence (every pair), time windows, as-of replays, explanations."""

import itertools
from datetime import UTC, datetime

import numpy as np
import pytest

import leotwin.policy.engine as engine
from leotwin.policy.engine import DECISIONS, PRECEDENCE, check_overlaps, decide, explain
from leotwin.policy.errors import PolicyError
from leotwin.policy.models import (
    Account,
    Contract,
    Geofence,
    MotionRule,
    Policy,
    PolicyHistory,
    PolicyVersion,
    RegistrationRule,
    RoamingRule,
    Scope,
    ServiceArea,
    ServicePlan,
    Terminal,
)

KYIV = (50.45, 30.52)
TIMES = np.array(["2022-10-03T12:00", "2022-10-05T12:00", "2022-10-08T12:00"],
                 dtype="datetime64[ns]")


def box(lat, lon, half=0.5):
    ring = [[lon - half, lat - half], [lon + half, lat - half], [lon + half, lat + half],
            [lon - half, lat + half], [lon - half, lat - half]]
    return {"type": "Polygon", "coordinates": [ring]}


def build(active: set[str]) -> tuple[Policy, dict]:
    """A one-terminal policy at Kyiv in which exactly the rule kinds in ``active`` fire."""
    account_country = "POL" if "roaming" in active else "UKR"
    plan = ServicePlan(name="basic", priority_quota_gb_month=10, min_mbps=5, max_mbps=100,
                       fallback_mbps=1, mobility_allowed=False)
    kw = dict(
        accounts=[Account(id="army", country=account_country)],
        terminals=[Terminal(id="t1", account="army", plan="basic",
                            status="suspended" if "status" in active else "active",
                            registered="registration" not in active)],
        plans=[plan],
    )
    if "registration" in active:
        kw["registration_rules"] = [RegistrationRule(id="ua", countries=["UKR"])]
    if "service_area" in active:
        kw["service_areas"] = [ServiceArea(id="eu", countries=["POL", "DEU"])]
    if "motion" in active:
        kw["motion_rules"] = [MotionRule(id="m", speed_threshold_kmh=10, max_speed_kmh=500)]
    if "roaming" in active:
        kw["roaming_rules"] = [RoamingRule(id="r", max_days_per_year=0)]
    if "geofence" in active or "contract" in active:
        kw["geofences"] = [Geofence(id="g", geometry=box(*KYIV), action="deny",
                                    reason="restricted area", author="ops")]
    if "contract" in active:
        kw["contracts"] = [Contract(id="c", account="army", committed_availability_pct=99,
                                    covered_area=box(*KYIV, half=2),
                                    term_start=datetime(2022, 1, 1),
                                    term_end=datetime(2023, 1, 1))]
    extra = {"speed_kmh": np.full((TIMES.size, 1), 50.0) if "motion" in active else None,
             "used_gb": np.full((TIMES.size, 1), 20.0) if "quota" in active else None}
    return Policy(**kw), extra


def winner_kind(policy, extra):
    ds = decide(policy, ["t1"], TIMES, ([KYIV[0]], [KYIV[1]]), **extra)
    kinds = {str(ds["rule_kind"].to_numpy()[r]) for r in ds["rule"].to_numpy().ravel()}
    assert len(kinds) == 1
    return kinds.pop(), ds


def expected(a: str, b: str) -> str:
    hi, lo = sorted((a, b), key=PRECEDENCE.index)
    if hi == "contract" and lo == "quota":
        return "quota"  # a contract only cancels geofences; the plan's quota still applies
    return hi


PAIRS = [p for p in itertools.combinations(PRECEDENCE, 2) if "plan" not in p] + \
    [(k, "plan") for k in PRECEDENCE if k != "plan"]


@pytest.mark.parametrize("pair", PAIRS, ids=["+".join(p) for p in PAIRS])
def test_precedence_pair(pair):
    policy, extra = build(set(pair))
    kind, ds = winner_kind(policy, extra)
    assert kind == expected(*pair)
    decision = DECISIONS[int(ds["decision"].to_numpy()[0, 0])]
    assert decision == {"status": "deny", "registration": "deny", "service_area": "deny",
                        "motion": "deny", "roaming": "deny", "contract": "allow",
                        "geofence": "deny", "quota": "throttle", "plan": "allow"}[kind]


def test_each_rule_alone():
    for kind in PRECEDENCE:
        if kind in ("plan",):
            continue
        policy, extra = build({kind})
        got, _ = winner_kind(policy, extra)
        assert got == kind  # "contract" comes with a deny geofence it cancels


def test_geofence_time_window_and_throttle():
    fence = Geofence(id="kharkiv-oct", geometry=box(49.98, 36.25), action="deny",
                     valid_from=datetime(2022, 10, 1), valid_to=datetime(2022, 10, 7),
                     reason="front line", author="ops")
    slow = Geofence(id="slow", geometry=box(50.45, 30.52), action="throttle", max_mbps=5,
                    reason="capacity", author="ops")
    policy = Policy(accounts=[Account(id="a", country="UKR")],
                    terminals=[Terminal(id="kh", account="a"), Terminal(id="kv", account="a")],
                    geofences=[fence, slow])
    times = np.array(["2022-09-30T23:59", "2022-10-01T00:00", "2022-10-06T23:59",
                      "2022-10-07T00:00"], dtype="datetime64[ns]")
    ds = decide(policy, None, times, ([49.98, 50.45], [36.25, 30.52]))
    np.testing.assert_array_equal(ds["decision"].to_numpy()[:, 0], [0, 2, 2, 0])
    np.testing.assert_array_equal(ds["decision"].to_numpy()[:, 1], [1, 1, 1, 1])
    assert (ds["max_mbps"].to_numpy()[:, 1] == 5).all()
    assert (ds["max_mbps"].to_numpy()[1:3, 0] == 0).all()
    info = explain(ds, "kh", "2022-10-03T00:00Z")
    assert info["decision"] == "deny" and info["rule"] == "geofence:kharkiv-oct"
    assert info["author"] == "ops" and "front line" in info["reason"]


def test_as_of_replays_before_and_after_a_correction():
    wide = Geofence(id="east", geometry=box(49.5, 37.0, half=1.5), action="deny",
                    valid_from=datetime(2022, 10, 1), reason="east restricted", author="ops")
    narrow = wide.model_copy(update={"geometry": box(48.5, 38.5, half=0.5),
                                     "reason": "corrected: only the front"})
    base = dict(accounts=[Account(id="a", country="UKR")],
                terminals=[Terminal(id="izium", account="a")])
    v1 = PolicyVersion(version=1, recorded_at=datetime(2022, 9, 30), author="ops",
                       reason="initial", policy=Policy(**base, geofences=[wide]))
    history = PolicyHistory(versions=[v1]).record(
        Policy(**base, geofences=[narrow]), author="ops", reason="correction",
        recorded_at=datetime(2022, 10, 10, tzinfo=UTC))
    t = np.array(["2022-10-05T12:00"], dtype="datetime64[ns]")
    izium = ([49.21], [37.28])
    before = decide(history, None, t, izium, as_of=datetime(2022, 10, 8))
    after = decide(history, None, t, izium, as_of=datetime(2022, 10, 11))
    assert DECISIONS[int(before["decision"][0, 0])] == "deny"
    assert DECISIONS[int(after["decision"][0, 0])] == "allow"
    assert before.attrs["policy_version"] == 1 and after.attrs["policy_version"] == 2
    with pytest.raises(PolicyError, match="no policy version"):
        decide(history, None, t, izium, as_of=datetime(2022, 9, 1))


def test_more_specific_geofence_wins_and_contradictions_are_rejected():
    deny_all = Geofence(id="deny-all", geometry=box(*KYIV), action="deny")
    allow_army = Geofence(id="allow-army", geometry=box(*KYIV), action="allow",
                          scope=Scope(accounts=["army"]))
    policy = Policy(accounts=[Account(id="army", country="UKR"), Account(id="x", country="UKR")],
                    terminals=[Terminal(id="t1", account="army"), Terminal(id="t2", account="x")],
                    geofences=[deny_all, allow_army])
    check_overlaps(policy)
    ds = decide(policy, None, TIMES[:1], ([KYIV[0]] * 2, [KYIV[1]] * 2))
    assert [DECISIONS[int(c)] for c in ds["decision"].to_numpy()[0]] == ["allow", "deny"]
    clash = policy.model_copy(update={"geofences": [
        deny_all, Geofence(id="allow-all", geometry=box(KYIV[0] + 0.3, KYIV[1]),
                           action="allow")]})
    with pytest.raises(PolicyError, match="feature 1.*ambiguous"):
        check_overlaps(clash)
    until_2023 = deny_all.model_copy(update={"valid_to": datetime(2023, 1, 1, tzinfo=UTC)})
    apart = policy.model_copy(update={"geofences": [
        until_2023, Geofence(id="allow-later", geometry=box(*KYIV), action="allow",
                             valid_from=datetime(2023, 1, 1))]})
    check_overlaps(apart)  # same area, but the windows do not meet


def test_motion_from_positions_and_roaming_days():
    policy = Policy(accounts=[Account(id="a", country="UKR")],
                    plans=[ServicePlan(name="p", priority_quota_gb_month=1, min_mbps=1,
                                       max_mbps=10)],
                    terminals=[Terminal(id="car", account="a", kind="in_motion", plan="p")],
                    motion_rules=[MotionRule(id="m", speed_threshold_kmh=20)])
    times = np.array(["2022-10-05T12:00", "2022-10-05T12:01", "2022-10-05T12:02"],
                     dtype="datetime64[ns]")
    lat = np.array([[50.0], [50.0], [50.0]])
    lon = np.array([[30.0], [30.0], [30.02]])  # parked, then ~1.4 km in a minute (86 km/h)
    ds = decide(policy, None, times, (lat, lon))
    assert [DECISIONS[int(c)] for c in ds["decision"].to_numpy()[:, 0]] == \
        ["allow", "allow", "deny"]
    roam = Policy(accounts=[Account(id="a", country="POL")],
                  terminals=[Terminal(id="t", account="a")],
                  roaming_rules=[RoamingRule(id="r", max_days_per_year=2)])
    days = np.array([f"2022-10-0{d}T12:00" for d in range(1, 6)], dtype="datetime64[ns]")
    ds = decide(roam, None, days, ([KYIV[0]], [KYIV[1]]))  # in Ukraine, home is Poland
    assert [DECISIONS[int(c)] for c in ds["decision"].to_numpy()[:, 0]] == \
        ["allow", "allow", "deny", "deny", "deny"]


def test_unknown_terminal_and_bad_geometry():
    policy, _ = build(set())
    with pytest.raises(PolicyError, match="unknown terminal 'nope'"):
        decide(policy, ["nope"], TIMES, ([0.0], [0.0]))
    bad = Policy(accounts=[Account(id="a", country="UKR")],
                 terminals=[Terminal(id="t", account="a")],
                 geofences=[Geofence(id="g", action="deny", geometry={
                     "type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]})])
    with pytest.raises(PolicyError, match="feature 0"):
        decide(bad, None, TIMES, ([0.5], [0.5]))


def test_precedence_is_documented_in_one_place():
    doc = engine.__doc__
    positions = [doc.index(f"``{k}``") for k in PRECEDENCE]
    assert positions == sorted(positions)


# ----------------------------------------------------------------------------- carried state


def _roaming_case():
    """Two terminals of a Polish account crossing the Ukrainian border back and forth over
    New Year (home Poland: every step in Ukraine is outside)."""
    policy = Policy(accounts=[Account(id="a", country="POL")],
                    terminals=[Terminal(id="t1", account="a"), Terminal(id="t2", account="a")],
                    roaming_rules=[RoamingRule(id="r", max_days_per_year=3)])
    times = np.arange(np.datetime64("2022-12-26T00:00", "ns"), np.datetime64("2023-01-04T00:00",
                                                                             "ns"),
                      np.timedelta64(6, "h"))
    rng = np.random.default_rng(3)
    in_ua = rng.random((times.size, 2)) < 0.35
    lat = np.where(in_ua, KYIV[0], 52.23)
    lon = np.where(in_ua, KYIV[1], 21.01)    # Warsaw otherwise
    return policy, times, (lat, lon)


@pytest.mark.parametrize("cuts", [[5], [1, 2, 3], [7, 13, 21, 30], list(range(1, 36))])
def test_roaming_state_carried_across_windows_equals_one_window(cuts):
    policy, times, (lat, lon) = _roaming_case()
    whole, end = decide(policy, None, times, (lat, lon), return_state=True)
    state, parts = None, []
    for a, b in zip([0, *cuts], [*cuts, times.size], strict=True):
        window = (times[a:b], (lat[a:b], lon[a:b]))
        cheap = engine.advance_state(policy, None, *window, state)   # no decisions
        ds, state = decide(policy, None, *window, state=state, return_state=True)
        assert cheap.equals(state)
        parts.append(ds["decision"].to_numpy())
    np.testing.assert_array_equal(np.concatenate(parts), whole["decision"].to_numpy())
    assert state.equals(end)
    assert (whole["decision"].to_numpy() == 2).any()          # the rule did bite
    assert end.roaming_days.max() <= 3                       # counts restarted on 1 January


def test_quota_from_the_carried_state_and_its_month():
    policy, _ = build({"quota"})          # quota 10 GB, fallback 1 Mbit/s
    times = np.array(["2022-10-30T12:00", "2022-10-31T23:59", "2022-11-01T00:00"],
                     dtype="datetime64[ns]")
    pos = ([KYIV[0]], [KYIV[1]])
    state = engine.PolicyState(np.array(["t1"]), np.datetime64("2022-10-30T00:00", "ns"),
                               used_gb=np.array([12.0]))
    ds, end = decide(policy, ["t1"], times, pos, state=state, return_state=True)
    kinds = [str(ds["rule_kind"].to_numpy()[r]) for r in ds["rule"].to_numpy()[:, 0]]
    assert kinds == ["quota", "quota", "plan"]        # spent in October, fresh in November
    assert ds["max_mbps"].to_numpy()[0, 0] == 1
    assert end.used_gb[0] == 0 and str(end.last_step).startswith("2022-11-01T00:00")
    # the delivered volume of the window counts for its last month only (and metered ones)
    after = end.add_usage(times, np.array([[100.0], [100.0], [100.0]]), 60.0)
    assert after.used_gb[0] == pytest.approx(100e6 * 60 / 8e9)
    assert end.add_usage(times, np.ones((3, 1)), 60.0, metered=[False]).used_gb[0] == 0
    # without state nor used_gb the quota rule does not apply (as before)
    assert str(decide(policy, ["t1"], times, pos)["rule_kind"].to_numpy()[0]) == "plan"


def test_policy_state_round_trip_and_caller_mistakes():
    policy, _ = build({"quota"})
    pos = ([KYIV[0]], [KYIV[1]])
    _, state = decide(policy, ["t1"], TIMES, pos, return_state=True)
    state = state.add_usage(TIMES, np.array([[1.5], [2.5], [3.5]]), [10.0, 20.0, 30.0])
    again = engine.PolicyState.from_dict(state.to_dict())
    assert again.equals(state) and again.used_gb[0] == state.used_gb[0]
    with pytest.raises(ValueError, match="not both"):
        decide(policy, ["t1"], TIMES, pos, state=state, used_gb=np.zeros((3, 1)))
    with pytest.raises(ValueError, match="must start after"):
        decide(policy, ["t1"], TIMES, pos, state=state)
    with pytest.raises(ValueError, match="not the decided terminals"):
        decide(policy, ["t1"], TIMES, pos, state=engine.PolicyState.initial(["x"]))
    with pytest.raises(ValueError, match="end at the state's last_step"):
        state.add_usage(TIMES[:2], np.zeros((2, 1)), 60.0)


# ----------------------------------------------------------------------------- one-terminal path


def _with_version(policy: Policy) -> PolicyHistory:
    return PolicyHistory(versions=[PolicyVersion(
        version=3, recorded_at=datetime(2022, 9, 1, tzinfo=UTC), author="ops",
        reason="why it changed", policy=policy)])


@pytest.mark.parametrize("pair", PAIRS, ids=["+".join(p) for p in PAIRS])
def test_explain_at_equals_explain_of_decide(pair):
    """The one-terminal path gives the same dict as explain() over decide(), for every pair
    of rule kinds (motion and quota need speeds / data used, which one step has not)."""
    policy, _ = build(set(pair))
    history = _with_version(policy)
    for t in TIMES:
        want = explain(decide(history, ["t1"], [t], ([KYIV[0]], [KYIV[1]])), "t1", t)
        assert engine.explain_at(history, "t1", t, KYIV) == want


def test_explain_at_of_one_terminal_alone_equals_deciding_all():
    """What the service does: the version with only the asked terminal gives it the same
    answer as deciding every terminal of the version."""
    fence = Geofence(id="east", geometry=box(49.5, 37.0, half=1.5), action="throttle",
                     max_mbps=7, reason="east", author="ops")
    plan = ServicePlan(name="p", priority_quota_gb_month=1, min_mbps=1, max_mbps=50)
    terms = [Terminal(id=f"t{k}", account="a" if k % 2 else "b", plan="p" if k % 3 else None,
                      status="standby" if k == 4 else "active") for k in range(9)]
    lat = np.linspace(47.0, 51.0, 9)
    lon = np.linspace(33.0, 39.0, 9)
    policy = Policy(accounts=[Account(id="a", country="UKR"), Account(id="b", country="POL")],
                    plans=[plan], terminals=terms, geofences=[fence],
                    service_areas=[ServiceArea(id="ua", countries=["UKR"])])
    history = _with_version(policy)
    t = TIMES[1]
    full = decide(history, None, [t], (lat, lon))
    version = history.versions[0]
    for k, term in enumerate(terms):
        alone = version.model_copy(update={
            "policy": policy.model_copy(update={"terminals": [term]})})
        got = engine.explain_at(PolicyHistory(versions=[alone]), term.id, t, (lat[k], lon[k]))
        assert got == explain(full, term.id, t)


def test_compiled_zones_are_cached_by_content():
    """Zones are compiled once per content: equal geometries in new objects reuse them; a
    moved geofence gives the new answer; a bad geometry is not cached (the error again)."""
    policy, _ = build({"geofence"})
    t = TIMES[:1]
    pos = ([KYIV[0]], [KYIV[1]])
    assert DECISIONS[int(decide(policy, None, t, pos)["decision"][0, 0])] == "deny"
    n = len(engine._ZONES._items)
    same = Policy.model_validate_json(policy.model_dump_json())   # new objects, same content
    assert DECISIONS[int(decide(same, None, t, pos)["decision"][0, 0])] == "deny"
    assert len(engine._ZONES._items) == n
    moved = policy.model_copy(update={"geofences": [policy.geofences[0].model_copy(
        update={"geometry": box(KYIV[0] + 3, KYIV[1])})]})
    assert DECISIONS[int(decide(moved, None, t, pos)["decision"][0, 0])] == "allow"
    bad = policy.model_copy(update={"geofences": [policy.geofences[0].model_copy(update={
        "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]}})]})
    for _ in range(2):
        with pytest.raises(PolicyError, match="feature 0"):
            decide(bad, None, t, pos)


def test_shared_zones_from_many_threads():
    """The cached zones are shared between threads (the service's thread pool): concurrent
    decisions equal the sequential ones."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(5)
    lat, lon = rng.uniform(44.0, 53.0, 400), rng.uniform(22.0, 41.0, 400)
    fences = [Geofence(id=f"g{k}", geometry=box(46.0 + k, 25.0 + 2 * k, half=0.8),
                       action="deny") for k in range(6)]
    policy = Policy(accounts=[Account(id="a", country="UKR")],
                    terminals=[Terminal(id=f"t{k}", account="a") for k in range(400)],
                    geofences=fences, service_areas=[ServiceArea(id="s", countries=["UKR"])])
    want = decide(policy, None, TIMES[:1], (lat, lon))["rule"].to_numpy()
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda _: decide(policy, None, TIMES[:1], (lat, lon))[
            "rule"].to_numpy(), range(16)))
    for g in got:
        np.testing.assert_array_equal(g, want)
