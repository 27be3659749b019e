"""Each outage cause in isolation and in combination, on a small synthetic scenario."""

from datetime import datetime

import numpy as np
import pandas as pd
import pytest

import leotwin
from leotwin.analytics.simulate import counterfactual, simulate, simulate_run
from leotwin.faults import Faults, GatewayOutage, Jammer, SatelliteFailure
from leotwin.policy.models import Account, Geofence, Policy, Terminal
from leotwin.routing.network import CAUSE_BIT, NetworkConfig

KHARKIV = (49.98, 36.25)
START, STOP = "2022-10-05T12:00Z", "2022-10-05T12:03Z"


@pytest.fixture(scope="module")
def positions():
    shell = leotwin.walker_shell(altitude_km=550, inclination_deg=53, planes=72,
                                 sats_per_plane=22, phasing=17, epoch="2022-10-05", name="s1")
    return leotwin.propagate(shell, leotwin.time_grid(START, STOP, 30))


def ground(lat=KHARKIV[0], lon=KHARKIV[1], **term):
    terminals = pd.DataFrame({"terminal": ["t1"], "account": ["army"], "lat_deg": [lat],
                              "lon_deg": [lon], **{k: [v] for k, v in term.items()}})
    gateways = pd.DataFrame({"gateway": ["GW-KYIV"], "lat_deg": [50.4], "lon_deg": [30.6],
                             "pop": ["KBP"]})
    pops = pd.DataFrame({"pop": ["KBP"], "lat_deg": [50.35], "lon_deg": [30.9]})
    return leotwin.Ground.load(terminals, gateways=gateways, pops=pops)


def box(lat, lon, half=0.5):
    ring = [[lon - half, lat - half], [lon + half, lat - half], [lon + half, lat + half],
            [lon - half, lat + half], [lon - half, lat - half]]
    return {"type": "Polygon", "coordinates": [ring]}


def policy(*fences):
    return Policy(accounts=[Account(id="army", country="UKR")],
                  terminals=[Terminal(id="t1", account="army")], geofences=list(fences))


FENCE = Geofence(id="G-EAST", geometry=box(*KHARKIV), action="deny", reason="front",
                 author="ops")


def test_baseline_is_served(positions):
    out = simulate(positions, ground(), policy=policy())
    assert out["served"].all() and (out["cause"] == "").all()
    assert (out["dish_state"] == "CONNECTED").all()


def test_geofence_is_policy_with_rule(positions):
    out = simulate(positions, ground(), policy=policy(FENCE))
    assert not out["served"].any()
    assert (out["cause"] == "policy").all() and (out["rule"] == "geofence:G-EAST").all()
    assert (out["dish_state"] == "SEARCHING").all()  # what the dish showed in the field


def test_all_satellites_failed_is_satellite_failure(positions):
    faults = Faults(failures=[SatelliteFailure(sat=int(s), start=datetime(2022, 10, 1))
                              for s in positions["sat"].to_numpy()])
    out = simulate(positions, ground(), faults=faults)
    assert (out["cause"] == "satellite_failure").all()
    assert (out["dish_state"] == "SEARCHING").all()


def test_gateway_down_is_no_backhaul(positions):
    faults = Faults(outages=[GatewayOutage(id="cut", pop="KBP", start=datetime(2022, 10, 5))])
    out = simulate(positions, ground(), faults=faults)
    assert (out["cause"] == "no_backhaul").all() and (out["dish_state"] == "NO_PINGS").all()


def test_demand_over_capacity_is_congestion(positions):
    cfg = NetworkConfig(beam_capacity_mbps=10.0)
    out = simulate(positions, ground(demand_mbps=100.0, min_mbps=25.0), config=cfg)
    assert out["served"].all() and (out["cause"] == "congestion").all()
    assert (out["throughput_mbps"] == 10.0).all()


def test_polar_gap_is_no_coverage(positions):
    out = simulate(positions, ground(lat=85.0, lon=30.0))
    assert (out["cause"] == "no_coverage").all() and (out["dish_state"] == "NO_SATS").all()


def jammer(lat, lon, **kw):
    # 30 dBW in band: jams out to ~2 km at the horizon side-lobe floor (see test_budget.py).
    return Jammer(id="J1", lat_deg=lat, lon_deg=lon, eirp_dbw=kw.get("eirp_dbw", 30.0),
                  bandwidth_mhz=250.0, center_ghz=11.7)


def test_jammer_next_to_the_terminal_and_500_km_away(positions):
    near = simulate(positions, ground(), faults=Faults(jammers=[jammer(49.99, 36.25)]))
    assert (near["cause"] == "jamming").all() and (near["dish_state"] == "NO_DOWNLINK").all()
    far = simulate(positions, ground(), faults=Faults(jammers=[jammer(45.5, 36.25)]))
    assert far["served"].all() and (far["cause"] == "").all()


def test_geofence_and_jammer_together_and_the_counterfactual(positions):
    run = simulate_run(positions, ground(), policy=policy(FENCE),
                       faults=Faults(jammers=[jammer(49.99, 36.25)]))
    bits = run.result["cause_bits"].to_numpy()
    assert ((bits & CAUSE_BIT["policy"]) > 0).all() and ((bits & CAUSE_BIT["jamming"]) > 0).all()
    assert (run.result["cause"] == "policy").all()  # primary by the documented order
    cf = counterfactual(run, ["geofence:G-EAST"])
    assert (cf.run.result["cause"] == "jamming").all()
    assert cf.terminals["hours_restored"].sum() == 0  # still jammed without the geofence
    both = counterfactual(run, ["geofence:G-EAST", "jammer:J1"])
    assert both.terminals["hours_restored"].iloc[0] > 0
    assert both.by_account["hours_restored"].iloc[0] == both.terminals["hours_restored"].sum()
    with pytest.raises(ValueError, match="without"):
        counterfactual(run, ["satellite 5"])


def test_outage_table_and_api(positions):
    out = simulate(positions, ground(), policy=policy(FENCE))
    table = leotwin.outage_table(out)
    assert len(table) == 1
    row = table.iloc[0]
    assert row["cause"] == "policy" and row["rule"] == "geofence:G-EAST"
    assert row["duration_s"] == pytest.approx(7 * 30)  # 7 steps of 30 s, through the end


def test_a_jammer_that_does_not_cut_can_slow_a_terminal_down(positions):
    # 20 dBW 0.8 km away: SINR drops to a few dB (a lower MODCOD) but stays above the
    # lowest threshold, so the terminal is served more slowly (see test_budget.py).
    faults = Faults(jammers=[jammer(49.9872, 36.25, eirp_dbw=20.0)])
    clear = simulate(positions, ground(demand_mbps=100.0, min_mbps=90.0))
    slowed = simulate(positions, ground(demand_mbps=100.0, min_mbps=90.0), faults=faults)
    assert slowed["served"].all()
    assert (slowed["throughput_mbps"] < clear["throughput_mbps"]).all()
    assert (slowed["cause"] == "jamming").all()
    far = simulate(positions, ground(demand_mbps=100.0, min_mbps=90.0),
                   faults=Faults(jammers=[jammer(45.5, 36.25, eirp_dbw=20.0)]))
    np.testing.assert_allclose(far["throughput_mbps"], clear["throughput_mbps"])


def rich_scenario(positions):
    """60 terminals around Kharkiv (one moving), failures (some satellites relaying for
    others), a PoP cut, jammers near and far, a geofence west of the city:
    ``(ground, policy, faults)``."""
    rng = np.random.default_rng(5)
    n = 60
    lat = KHARKIV[0] + rng.uniform(-2.0, 2.0, n)
    lon = KHARKIV[1] + rng.uniform(-3.0, 3.0, n)
    terminals = pd.DataFrame({"terminal": [f"t{i}" for i in range(n)], "account": "army",
                              "lat_deg": lat, "lon_deg": lon})
    terminals["demand_mbps"] = 100.0
    terminals["kind"] = np.where(terminals["terminal"] == "t5", "in_motion", "fixed")
    gateways = pd.DataFrame({"gateway": ["GW-KYIV", "GW-LVIV", "GW-DNIPRO"],
                             "lat_deg": [50.4, 49.8, 48.45], "lon_deg": [30.6, 24.0, 35.0],
                             "pop": ["KBP", "WAW", "KBP"]})
    pops = pd.DataFrame({"pop": ["KBP", "WAW"], "lat_deg": [50.35, 52.2],
                         "lon_deg": [30.9, 21.0]})
    track = {"t5": [(datetime(2022, 10, 5, 12), 49.5, 35.0), (datetime(2022, 10, 5, 12, 3),
                                                               50.5, 37.0)]}
    tracks = pd.DataFrame([{"terminal": t, "time": ts, "lat_deg": la, "lon_deg": lo}
                           for t, pts in track.items() for ts, la, lo in pts])
    g = leotwin.Ground.load(terminals, gateways=gateways, pops=pops, tracks=tracks)
    sats = positions["sat"].to_numpy()
    faults = Faults(
        failures=[SatelliteFailure(sat=int(s), start=datetime(2022, 10, 5)) for s in sats[::9]],
        outages=[GatewayOutage(id="waw", pop="WAW", start=datetime(2022, 10, 5, 12, 1))],
        jammers=[Jammer(id="near", lat_deg=lat[0] + 0.05, lon_deg=lon[0], eirp_dbw=38.0,
                        bandwidth_mhz=250.0, center_ghz=11.7),
                 Jammer(id="far", lat_deg=46.0, lon_deg=33.0, eirp_dbw=40.0,
                        bandwidth_mhz=250.0, center_ghz=11.7)])
    fence = Geofence(id="G-WEST", geometry=box(KHARKIV[0], KHARKIV[1] - 2.0, 1.0),
                     action="deny", reason="test", author="ops")
    pol = Policy(accounts=[Account(id="army", country="UKR")],
                 terminals=[Terminal(id=t, account="army") for t in terminals["terminal"]],
                 geofences=[fence])
    return g, pol, faults



@pytest.mark.parametrize("slot_s", [60.0, 30.0])  # slots carried over; every step a slot
def test_fast_paths_equal_the_reference_path(positions, monkeypatch, slot_s):
    """The shortcuts of the per-step pipeline (reused route variants, variants rerouted
    below the failures only, user links a few steps at a time, the compiled schedule and
    cause pass, jamming tests of many steps in one call, jammer pruning by radio horizon, the
    clear-sky bound) and the run without string variables change no result: the same
    scenario — failures (some satellites relaying for others), a PoP cut, jammers near
    and far, a geofence, moving terminals, slot carry — rerun with every shortcut disabled is
    identical, variable by variable and bit for bit."""
    import leotwin.routing.network as network
    from leotwin.links import budget
    from leotwin.routing.graph import SatRoutes

    g, pol, faults = rich_scenario(positions)
    cfg = NetworkConfig(slot_s=slot_s, beam_capacity_mbps=400.0)
    fast = simulate(positions, g, policy=pol, faults=faults, config=cfg)
    assert {"policy", "jamming", ""} <= set(np.unique(fast["cause"].to_numpy()))
    # Without the string variables (what leotwin.run writes): the same, with codes for them.
    lean = simulate_run(positions, g, policy=pol, faults=faults, config=cfg, strings=False)
    for name, (names, codes) in lean.codes.items():
        assert name not in lean.result
        np.testing.assert_array_equal(np.asarray(names, dtype=object)[codes].astype(str),
                                      fast[name].to_numpy().astype(str))
    for name in lean.result.data_vars:
        assert lean.result[name].equals(fast[name]), name
    # Without attribution (the benchmark's baseline): the same service, only no causes.
    plain = simulate_run(positions, g, policy=pol, faults=faults, config=cfg,
                         attribution=False).result
    assert not {"cause", "cause_bits", "rule", "dish_state"} & set(plain.data_vars)
    for name in plain.data_vars:
        assert plain[name].equals(fast[name]), name

    # Reference: every route variant computed in full, one step of user links at a time,
    # one jamming test per step, every jammer evaluated at every terminal, every link budget
    # evaluated one by one.
    monkeypatch.setattr(SatRoutes, "uses", lambda self, sats, gateways: True)
    monkeypatch.setattr(network, "_REROUTE", False)  # every variant by a full Dijkstra
    monkeypatch.setattr(network, "_BATCH_JAM", False)  # one jamming test per step
    monkeypatch.setattr(network, "_FUSED_STEP", False)  # schedule and causes by numpy
    monkeypatch.setattr(network, "_USER_PAIRS_PER_CHUNK", 1)
    monkeypatch.setattr(budget, "_BOUND_MARGIN_DB", np.inf)
    monkeypatch.setattr(budget, "jammer_reach",
                        lambda term, jam, active: np.ones(np.shape(term)[:-1], bool))
    ref = simulate(positions, g, policy=pol, faults=faults, config=cfg)
    for name in fast.data_vars:
        a, b = fast[name].to_numpy(), ref[name].to_numpy()
        assert a.dtype == b.dtype, name
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), name


def test_terminal_partitions_joined_equal_the_whole_run(positions):
    """simulate_run = shared_phase(terminal_phase(all terminals)); the per-terminal phase of
    terminal partitions (saved and loaded; one with its rules in another order), joined,
    gives the same result: capacity is shared among terminals of different partitions (small
    beams: congestion), and only the shared phase allocates it."""
    import io
    from dataclasses import replace

    from leotwin.analytics.simulate import TerminalPhase, shared_phase, terminal_phase
    from leotwin.runs import _ground_part

    g, pol, faults = rich_scenario(positions)
    g = replace(g, terminals=g.terminals.sort_values("lon_deg").reset_index(drop=True))
    cfg = NetworkConfig(beam_capacity_mbps=150.0, beams_per_satellite=2)
    whole = simulate_run(positions, g, policy=pol, faults=faults, config=cfg)
    assert (whole.result["cause_bits"].to_numpy() & CAUSE_BIT["congestion"]).any()
    assert (whole.result["cause"] == "policy").any()
    phases = []
    for a, b in ((0, 10), (10, 40), (40, 60)):   # west (the geofence) to east
        phase = terminal_phase(positions, _ground_part(g, a, b), policy=pol, faults=faults,
                               config=cfg)
        buf = io.BytesIO()
        phase.save(buf)
        buf.seek(0)
        phases.append(TerminalPhase.load(buf))
    # the same rules listed in another order (as when a partition meets them in another
    # order): the join maps every partition's indices onto one list
    last = phases[0]   # the west: its steps denied by the geofence show their rule
    assert len(last.rule_ids) > 1
    last.rule = np.where(last.rule >= 0, len(last.rule_ids) - 1 - last.rule, -1)
    last.rule_ids = last.rule_ids[::-1]
    result, _ = shared_phase(TerminalPhase.join(phases), g, config=cfg)
    for name in whole.result.data_vars:
        a, b = result[name].to_numpy(), whole.result[name].to_numpy()
        assert a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), name
    alone = simulate_run(positions, _ground_part(g, 40, 60), policy=pol, faults=faults,
                         config=cfg).result
    assert not alone["throughput_mbps"].equals(whole.result["throughput_mbps"][:, 40:])
