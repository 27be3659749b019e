"""Service timeline per (time, terminal) with the cause of every outage, and counterfactuals.

``simulate`` joins the physical network (:func:`leotwin.network_state`), the control plane
(:func:`leotwin.decide`) and the fault model (:mod:`leotwin.faults`, link budget with jammers)
and attributes every unserved or degraded step.

Attribution is counterfactual: a cause bit is set when that factor *alone* — every other
factor removed — would cut the terminal at that step (see ``network_state(attribution=True)``;
policy: the decision denies although the healthy network could serve; congestion: served
below the plan's minimum rate). Several factors can each suffice (a geofence and a jammer at
the same place): all are recorded in ``cause_bits`` and ``cause`` is the first of
:data:`PRIMARY_ORDER`. When only a combination cuts the terminal (no factor suffices alone),
every factor present at that step is recorded.

``dish_state`` is what the terminal itself would have shown: the user terminal reports states
such as SEARCHING, NO_SATS, OBSTRUCTED, NO_DOWNLINK and NO_PINGS and has none for "denied by
policy" — a policy cut looks like an endless SEARCHING from the ground, exactly like a
satellite failure, which is why units in the field could not tell them apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import xarray as xr

from ..faults import Faults, failed_mask, gateway_down_mask, jammer_state
from ..policy.engine import DENY, THROTTLE, decide
from ..policy.models import Policy, PolicyHistory
from ..routing.network import (
    CAUSE_BIT,
    CAUSES,
    NetworkConfig,
    _allocate,
    _network_state,
    code_strings,
)

#: Which cause is primary when several are recorded (documented choice: physics first, then
#: the operator's deliberate decisions, then faults, then load).
PRIMARY_ORDER = ("no_coverage", "policy", "satellite_failure", "no_backhaul", "jamming",
                 "congestion")
#: What the dish shows for each primary cause.
DISH_STATE = {"": "CONNECTED", "no_coverage": "NO_SATS", "policy": "SEARCHING",
              "satellite_failure": "SEARCHING", "no_backhaul": "NO_PINGS",
              "jamming": "NO_DOWNLINK", "congestion": "CONNECTED"}


@dataclass
class SimulationRun:
    """Inputs of a simulation and its result, so that it can be rerun counterfactually."""

    positions: xr.Dataset
    ground: object
    policy: Policy | PolicyHistory | None
    faults: Faults | None
    config: NetworkConfig | None
    as_of: object
    result: xr.Dataset
    #: The string columns of ``result`` as codes: ``{name: (names, codes)}`` with
    #: ``result[name] == names[codes]`` (``gateway``, ``cause``, ``rule``, ``dish_state``), so
    #: that tables can be built without re-encoding strings; None when not known.
    codes: dict | None = None


@dataclass
class _Jamming:
    """Jammer states over the run and the terminal geometry both jamming tests use."""

    jam_ecef: np.ndarray  # (n_time, n_jam, 3)
    active: np.ndarray  # (n_time, n_jam)
    eirp_dbw: np.ndarray
    bandwidth_mhz: np.ndarray
    center_ghz: np.ndarray
    term_ecef: np.ndarray  # (n_time, n_term, 3)
    term_up: np.ndarray  # (n_time, n_term, 3) geodetic zenith
    reach: np.ndarray  # (n_time, n_term): some active jammer within its radio horizon


def _jamming_inputs(ground, faults: Faults | None, times: np.ndarray) -> _Jamming | None:
    """Jammer states and terminal geometry over the run, computed once for both the outage
    test and the slowdown factor; None without jammers."""
    if faults is None or not faults.jammers:
        return None
    from ..frames import geodetic_to_ecef
    from ..links.budget import jammer_reach, terminal_up_vectors

    lat, lon, alt = ground.terminal_positions(times)
    term_ecef = geodetic_to_ecef(lat, lon, alt)
    # Zenith vectors once per terminal that does not move, per step for the others.
    still = ((lat == lat[:1]) & (lon == lon[:1]) & (alt == alt[:1])).all(axis=0)
    term_up = np.empty_like(term_ecef)
    term_up[:, still] = terminal_up_vectors(term_ecef[0, still])[None]
    term_up[:, ~still] = terminal_up_vectors(term_ecef[:, ~still])
    jam_ecef, active, eirp, bw, freq = jammer_state(faults, times)
    return _Jamming(jam_ecef, active, eirp, bw, freq, term_ecef, term_up,
                    jammer_reach(term_ecef, jam_ecef, active))


def _jammer_fn(positions: xr.Dataset, jamming: _Jamming | None):
    """``jammed(step, terminal_idx, sat_idx)`` for :func:`network_state`, or None."""
    if jamming is None:
        return None
    from ..links import budget

    j = jamming
    r = positions["r_ecef_km"].to_numpy()

    def jammed(step, term_idx: np.ndarray, sat_idx: np.ndarray) -> np.ndarray:
        """``step``: one step for all links, or one per link (many steps in one call)."""
        if np.ndim(step) == 0:
            if not j.active[step].any():
                return np.zeros(term_idx.size, bool)
            return budget.jammed_links(j.term_ecef[step, term_idx], r[step, sat_idx],
                                       j.jam_ecef[step], j.eirp_dbw, j.bandwidth_mhz,
                                       j.center_ghz, j.active[step],
                                       terminal_up=j.term_up[step, term_idx],
                                       in_reach=j.reach[step, term_idx])
        out = np.zeros(term_idx.size, bool)
        rows = np.flatnonzero(j.active[step].any(axis=1))  # no active jammer: not jammed
        if rows.size:
            st, te = step[rows], term_idx[rows]
            out[rows] = budget.jammed_links(j.term_ecef[st, te], r[st, sat_idx[rows]],
                                            j.jam_ecef, j.eirp_dbw, j.bandwidth_mhz,
                                            j.center_ghz, j.active,
                                            terminal_up=j.term_up[st, te],
                                            in_reach=j.reach[st, te], step=st)
        return out

    jammed.steps_as_array = True  # network_state may test many steps in one call
    return jammed


def _jamming_rate_factor(positions, jamming, serving: np.ndarray,
                         served: np.ndarray) -> np.ndarray:
    """Per (time, terminal): spectral efficiency with the jammers ÷ without them, on the link
    actually used (1 where unserved). Adaptive coding drops to a lower MODCOD under
    interference, so a jammer that does not cut a terminal can still slow it down.

    Only served steps within some active jammer's radio horizon are evaluated: elsewhere the
    interference is exactly zero and the factor exactly 1."""
    from ..links import budget

    factor = np.ones(served.shape)
    j = jamming
    if not served.any() or not j.active.any():
        return factor
    t, k = np.nonzero(served & j.reach)
    if t.size == 0:
        return factor
    sat_ecef = positions["r_ecef_km"].to_numpy()[t, serving[t, k]][:, None]  # one "time" per link
    term, up = j.term_ecef[t, k][:, None], j.term_up[t, k][:, None]
    with_jam = budget.sinr_db(term, sat_ecef, j.jam_ecef[t], j.eirp_dbw, j.bandwidth_mhz,
                              j.center_ghz, j.active[t], terminal_up=up)[:, 0]
    clear = budget.sinr_db(term, sat_ecef, terminal_up=up)[:, 0]
    eff_j = budget.spectral_efficiency(with_jam)
    eff_0 = budget.spectral_efficiency(clear)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(eff_0 > 0, eff_j / eff_0, 1.0)
    factor[t, k] = np.clip(np.nan_to_num(ratio, nan=1.0), 0.0, 1.0)
    return factor


def simulate(positions: xr.Dataset, ground, *, policy: Policy | PolicyHistory | None = None,
             faults: Faults | None = None, config: NetworkConfig | None = None,
             as_of=None) -> xr.Dataset:
    """Per (time, terminal): ``served``, ``throughput_mbps``, ``rtt_ms``, ``sat``,
    ``gateway``, ``cause`` (primary, "" when fine), ``cause_bits``, ``rule`` (the policy rule
    when the cause is policy) and ``dish_state``."""
    return simulate_run(positions, ground, policy=policy, faults=faults, config=config,
                        as_of=as_of).result


def simulate_run(positions, ground, *, policy=None, faults=None, config=None,
                 as_of=None, window=None, decisions: xr.Dataset | None = None,
                 strings: bool = True, attribution: bool = True) -> SimulationRun:
    """:func:`simulate`, keeping the inputs for :func:`counterfactual`. ``window`` (start,
    stop) is the whole run's span when ``positions`` is one chunk of it (random failures are
    drawn over the whole run). ``decisions`` is a :func:`leotwin.decide` result for exactly
    these times and terminals, when the caller computed it (e.g. with policy state carried in
    from an earlier chunk); otherwise ``policy`` is decided here. With ``strings=False`` the
    string variables (``gateway``, ``cause``, ``rule``, ``dish_state``) are left out of
    ``result`` and given only as codes (:attr:`SimulationRun.codes`), for writers that encode
    them anyway (:func:`leotwin.run`). With ``attribution=False`` the same run is simulated
    without attributing causes (no ``cause``, ``cause_bits``, ``rule``, ``dish_state``): the
    baseline against which the cost of attribution is measured (``bench/run.py``).

    It runs in two phases: :func:`terminal_phase`, per terminal (any subset of the terminals
    gives the same values for them), then :func:`shared_phase` on all terminals together
    (capacity, which couples them, and what depends on it) — so that :func:`leotwin.run` can
    compute the first one in terminal partitions and the second one on the whole chunk."""
    phase = terminal_phase(positions, ground, policy=policy, faults=faults, config=config,
                           as_of=as_of, window=window, decisions=decisions,
                           attribution=attribution)
    result, codes = shared_phase(phase, ground, config=config, strings=strings)
    return SimulationRun(positions, ground, policy, faults, config, as_of, result, codes)


@dataclass
class TerminalPhase:
    """The per-terminal part of :func:`simulate_run` (:func:`terminal_phase`): each terminal's
    values depend on that terminal only, so partitions of the terminals can be computed apart
    and joined (:meth:`join`). Arrays are ``(time, terminal)`` unless told."""

    times: np.ndarray  # (time,)
    terminal: np.ndarray  # (terminal,) ids
    sat_ids: np.ndarray  # (sat,) catalog numbers of the positions' satellites
    serving: np.ndarray  # serving satellite, index into sat_ids; -1: none
    gateway: np.ndarray  # index into the ground's gateways; -1: none
    rtt_ms: np.ndarray
    max_mbps: np.ndarray  # the decision's rate cap (inf: none)
    rule_ids: list[str]
    rule: np.ndarray  # the decision's rule, index into rule_ids; -1: none
    #: Cause bits before capacity (no ``congestion``, no jamming slowdown); None: the run is
    #: not attributed.
    cause_bits: np.ndarray | None
    throttled: np.ndarray  # the decision throttles
    #: Spectral efficiency with the jammers ÷ without them on the link used; None: no jammers.
    rate_factor: np.ndarray | None

    _ARRAYS = ("times", "terminal", "sat_ids", "serving", "gateway", "rtt_ms", "max_mbps",
               "rule", "cause_bits", "throttled", "rate_factor")

    def save(self, file) -> None:
        """Write to ``file`` (a path or binary file) as an uncompressed ``.npz``, exactly."""
        arrays = {k: getattr(self, k) for k in self._ARRAYS if getattr(self, k) is not None}
        arrays["terminal"] = np.asarray(self.terminal).astype(str)  # not an object array
        np.savez(file, rule_ids=np.array(self.rule_ids, dtype=str), **arrays)

    @classmethod
    def load(cls, file) -> TerminalPhase:
        with np.load(file, allow_pickle=False) as z:
            values = {k: (z[k] if k in z.files else None) for k in cls._ARRAYS}
            return cls(rule_ids=[str(x) for x in z["rule_ids"]], **values)

    @classmethod
    def join(cls, parts: Sequence[TerminalPhase]) -> TerminalPhase:
        """The phase of all the parts' terminals side by side (parts in terminal order, same
        times and satellites). Rule indices are mapped onto the union of the parts' rules."""
        first = parts[0]
        for p in parts[1:]:
            if not (np.array_equal(p.times, first.times)
                    and np.array_equal(p.sat_ids, first.sat_ids)):
                raise ValueError("terminal phases to join cover different times or satellites")
        rule_ids = list(dict.fromkeys(r for p in parts for r in p.rule_ids))
        rules = pd.Index(rule_ids)

        def side_by_side(name, values=None):
            arrays = [getattr(p, name) if values is None else values(p) for p in parts]
            return None if arrays[0] is None else np.concatenate(arrays, axis=1)

        return cls(first.times, np.concatenate([p.terminal for p in parts]), first.sat_ids,
                   side_by_side("serving"), side_by_side("gateway"), side_by_side("rtt_ms"),
                   side_by_side("max_mbps"), rule_ids,
                   side_by_side("rule", lambda p: np.r_[rules.get_indexer(p.rule_ids),
                                                        -1][p.rule]),  # -1: no rule
                   side_by_side("cause_bits"), side_by_side("throttled"),
                   side_by_side("rate_factor"))


def terminal_phase(positions, ground, *, policy=None, faults=None, config=None, as_of=None,
                   window=None, decisions: xr.Dataset | None = None,
                   attribution: bool = True) -> TerminalPhase:
    """The first phase of :func:`simulate_run` (same arguments): decisions, the network
    without capacity (schedule, routes, RTT), failures, outages and jamming, cause bits —
    everything that is computed terminal by terminal."""
    times = positions["time"].to_numpy()
    terms = ground.terminals["terminal"].astype(str).to_numpy()
    n_t, n_term = times.size, terms.size
    sat_ids = positions["sat"].to_numpy()
    failed = failed_mask(faults, sat_ids, times, window=window)
    gw_down = gateway_down_mask(faults, ground.gateways["gateway"], ground.gateways["pop"],
                                times)
    decision = np.zeros((n_t, n_term), np.int8)
    rule_ids, rule_idx = [""], np.zeros((n_t, n_term), np.int64)  # rule id = rule_ids[idx]
    max_mbps = np.full((n_t, n_term), np.inf)
    if decisions is not None or policy is not None:
        dec = decisions if decisions is not None else decide(policy, list(terms), times,
                                                             ground, as_of=as_of)
        if dec.sizes.get("time") != n_t or dec.sizes.get("terminal") != n_term:
            raise ValueError(f"decisions cover {dict(dec.sizes)}; this run has {n_t} times "
                             f"and {n_term} terminals")
        decision = dec["decision"].to_numpy()
        rule_ids = [str(x) for x in dec["rule_id"].to_numpy()]
        rule_idx = dec["rule"].to_numpy()
        max_mbps = dec["max_mbps"].to_numpy().astype(float)
    jamming = _jamming_inputs(ground, faults, times)
    # Capacity couples terminals: it is allocated in shared_phase.
    net, gw_idx = _network_state(positions, ground,
                                 config=replace(config or NetworkConfig(), capacity=False),
                                 failed=failed, gateway_down=gw_down,
                                 allowed=decision != DENY,
                                 jammed=_jammer_fn(positions, jamming),
                                 attribution=attribution, strings=False)
    served = net["served"].to_numpy()
    # Satellite index of the serving catalog number (sat_ids: sorted, Constellation order).
    serving = np.where(served, np.searchsorted(sat_ids, net["serving_sat"].to_numpy()), -1)
    throttled = decision == THROTTLE
    bits = None
    if attribution:
        bits = net["cause_bits"].to_numpy().copy()
        # Unserved with no single sufficient factor: record every factor present at the step.
        joint = ~served & (bits == 0)
        if joint.any():
            present = np.zeros((n_t, n_term), np.uint8)
            present |= np.where(failed.any(axis=1), CAUSE_BIT["satellite_failure"], 0).astype(
                np.uint8)[:, None]
            present |= np.where(gw_down.any(axis=1), CAUSE_BIT["no_backhaul"], 0).astype(
                np.uint8)[:, None]
            present |= np.where(decision == DENY, CAUSE_BIT["policy"], 0).astype(np.uint8)
            bits[joint] = present[joint]
        bits[throttled & served] |= CAUSE_BIT["policy"]
    factor = (None if jamming is None
              else _jamming_rate_factor(positions, jamming, serving, served))
    return TerminalPhase(times, terms, sat_ids, serving, gw_idx, net["rtt_ms"].to_numpy(),
                         max_mbps, rule_ids, rule_idx, bits, throttled, factor)


def shared_phase(phase: TerminalPhase, ground, *, config=None, strings: bool = True
                 ) -> tuple[xr.Dataset, dict]:
    """The second phase of :func:`simulate_run`, on all the terminals of ``ground`` (those of
    ``phase``, in order): capacity (each satellite's beams and each cell's capacity shared by
    the terminals it serves), congestion, throughput, the jamming slowdown, the primary cause
    and the codes. Returns ``(result, codes)`` of :class:`SimulationRun`."""
    cfg = (config or NetworkConfig()).resolved()
    terms = ground.terminals
    ids = terms["terminal"].astype(str).to_numpy()
    if not np.array_equal(phase.terminal.astype(str), ids.astype(str)):
        raise ValueError("the terminal phase covers other terminals than the ground")
    times, serving = phase.times, phase.serving
    n_t, n_term = serving.shape
    served = serving >= 0
    bits = None if phase.cause_bits is None else phase.cause_bits.copy()
    demand = terms["demand_mbps"].to_numpy(float)[None, :]
    if cfg.capacity:
        lat_t, lon_t, _ = ground.terminal_positions(times)
        alloc = _allocate(serving, terms, lat_t, lon_t, cfg, phase.sat_ids.size)
        if bits is not None:
            bits[alloc.congested] |= CAUSE_BIT["congestion"]
        throughput = np.minimum(alloc.throughput_mbps, phase.max_mbps)
    else:
        throughput = np.minimum(demand, phase.max_mbps)
    throughput = np.where(served, throughput, 0.0)
    if phase.rate_factor is not None:
        throughput = throughput * phase.rate_factor
        if bits is not None:
            floor = np.minimum(terms["min_mbps"].to_numpy(float)[None, :], demand)
            slowed = served & (phase.rate_factor < 1.0) & (throughput < floor)
            bits[slowed] |= CAUSE_BIT["jamming"]
    gw_names = ground.gateways["gateway"].astype(str).to_numpy()
    codes = {"gateway": ([""] + gw_names.tolist(), phase.gateway + 1)}
    data = {
        "served": (("time", "terminal"), served),
        "throughput_mbps": (("time", "terminal"), throughput, {"units": "Mbit/s"}),
        "rtt_ms": (("time", "terminal"), phase.rtt_ms, {"units": "ms"}),
        "sat": (("time", "terminal"), np.where(served, phase.sat_ids[np.maximum(serving, 0)],
                                               -1),
                {"description": "catalog number of the serving satellite, -1: none"}),
        "gateway": (("time", "terminal"), None),
    }
    attrs = {}
    if bits is not None:
        # Only unserved or degraded steps carry a cause.
        degraded = ~served | phase.throttled | (bits & (CAUSE_BIT["congestion"]
                                                        | CAUSE_BIT["jamming"])).astype(bool)
        bits = np.where(degraded, bits, 0).astype(np.uint8)
        # Primary cause as a code into ("",) + PRIMARY_ORDER; strings only at the end.
        primary = np.zeros((n_t, n_term), np.int8)
        for k in range(len(PRIMARY_ORDER), 0, -1):  # over causes: the first in the order wins
            primary[(bits & CAUSE_BIT[PRIMARY_ORDER[k - 1]]).astype(bool)] = k
        names = ("",) + PRIMARY_ORDER
        is_policy = primary == names.index("policy")
        codes.update({"cause": (names, primary),
                      "rule": ([""] + phase.rule_ids, np.where(is_policy, phase.rule + 1, 0)),
                      "dish_state": ([DISH_STATE[c] for c in names], primary)})
        data.update({
            "cause": (("time", "terminal"), codes["cause"],
                      {"primary_order": " > ".join(PRIMARY_ORDER)}),
            "cause_bits": (("time", "terminal"), bits,
                           {"flag_masks": [CAUSE_BIT[c] for c in CAUSES],
                            "flag_meanings": " ".join(CAUSES)}),
            "rule": (("time", "terminal"), codes["rule"]),
            "dish_state": (("time", "terminal"), codes["dish_state"]),
        })
        attrs = {"primary_order": " > ".join(PRIMARY_ORDER)}
    for name, spec in list(data.items()):  # the string variables, from their codes
        if name in codes:
            if strings:
                text = (np.where(phase.gateway >= 0, gw_names[np.maximum(phase.gateway, 0)],
                                 "") if name == "gateway" else code_strings(*codes[name]))
                data[name] = (spec[0], text) + spec[2:]
            else:
                del data[name]
    result = xr.Dataset(
        data,
        coords={"time": times, "terminal": ids,
                "account": ("terminal", terms["account"].astype(str).to_numpy())},
        attrs=attrs,
    )
    return result, codes


def _without_policy_items(policy, geofences: set[str]):
    def strip(p: Policy) -> Policy:
        return p.model_copy(update={"geofences": [g for g in p.geofences
                                                  if g.id not in geofences]})
    if policy is None or not geofences:
        return policy
    if isinstance(policy, PolicyHistory):
        return PolicyHistory(versions=[v.model_copy(update={"policy": strip(v.policy)})
                                       for v in policy.versions])
    return strip(policy)


@dataclass
class Counterfactual:
    """Difference between a run and its rerun without some elements (terminal-hours)."""

    terminals: pd.DataFrame  # terminal, account, area, hours_restored, hours_lost
    by_account: pd.DataFrame
    by_area: pd.DataFrame
    run: SimulationRun  # the rerun


def counterfactual(run: SimulationRun, without: Sequence[str]) -> Counterfactual:
    """Rerun ``run`` with elements removed — ``geofence:ID``, ``jammer:ID``, ``failure:SAT``,
    ``outage:ID`` — and return per terminal the terminal-hours restored (and lost), summed by
    account and by area (the H3 resolution-3 cell of the terminal, ~12,000 km²)."""
    from ..capacity import terminal_cells

    fences, jammers, sats, outages = set(), set(), set(), set()
    for item in without:
        kind, _, ident = item.partition(":")
        if not ident or kind not in ("geofence", "jammer", "failure", "outage"):
            raise ValueError(f"without: {item!r} is not geofence:ID, jammer:ID, failure:SAT "
                             "or outage:ID")
        {"geofence": fences, "jammer": jammers, "failure": sats, "outage": outages}[kind].add(
            ident)
    faults = run.faults
    if faults is not None:
        faults = faults.model_copy(update={
            "jammers": [j for j in faults.jammers if j.id not in jammers],
            "failures": [f for f in faults.failures if str(f.sat) not in sats],
            "outages": [o for o in faults.outages if o.id not in outages]})
    other = simulate_run(run.positions, run.ground,
                         policy=_without_policy_items(run.policy, fences), faults=faults,
                         config=run.config, as_of=run.as_of)
    base, alt = run.result, other.result
    times = base["time"].to_numpy()
    step_h = float(np.median(np.diff(times)).astype("int64") / 3.6e12) if times.size > 1 else 0
    restored = (alt["served"].to_numpy() & ~base["served"].to_numpy()).sum(axis=0) * step_h
    lost = (~alt["served"].to_numpy() & base["served"].to_numpy()).sum(axis=0) * step_h
    terms = run.ground.terminals
    area = terminal_cells(terms["lat_deg"].to_numpy(float), terms["lon_deg"].to_numpy(float), 3)
    table = pd.DataFrame({"terminal": base["terminal"].to_numpy(),
                          "account": base["account"].to_numpy(),
                          "area": [f"{int(c):x}" for c in area],
                          "hours_restored": restored, "hours_lost": lost})
    cols = ["hours_restored", "hours_lost"]
    return Counterfactual(table, table.groupby("account", as_index=False)[cols].sum(),
                          table.groupby("area", as_index=False)[cols].sum(), other)


__all__ = ["DISH_STATE", "PRIMARY_ORDER", "Counterfactual", "SimulationRun", "counterfactual",
           "outage_table", "simulate", "simulate_run"]



def outage_table(result: xr.Dataset) -> pd.DataFrame:
    """Outage intervals of a :func:`simulate` result: ``terminal, start, end, duration_s,
    cause, rule`` (a change of cause or rule starts a new interval)."""
    from .intervals import outage_intervals

    return outage_intervals(result["time"].to_numpy(), result["terminal"].to_numpy(),
                            ~result["served"].to_numpy(), cause=result["cause"].to_numpy(),
                            rule=result["rule"].to_numpy())
