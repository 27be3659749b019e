"""The flagship replay, "Ukraine, October 2022", and the answer it prints.

Runs the bundled ``ukraine-2022-10`` scenario on a window with the same API as every other run
(:func:`leotwin.analytics.simulate.simulate_run`), then answers from the computed results only:
terminal-hours lost by cause; inside the areas retaken between 2022-08-31 and 2022-10-07, the
share of outage hours due to policy (with the geofence's rule id) versus jamming, satellite
failure and the rest; the counterfactual without the geofence; the army contract's breach hours
and credits; and the audit entry of the rule, read back from a policy store in which the
scenario's policy history was recorded.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import shapely

from .analytics.runio import write_run
from .analytics.simulate import SimulationRun, counterfactual, simulate_run
from .analytics.sla import contract_availability
from .policy.geofence import ZoneIndex, read_zones
from .runs import write_assumptions
from .scenario import Scenario, load_scenario

FLAGSHIP = "ukraine-2022-10"
DEMO_WINDOW = ("2022-10-05T10:00:00Z", "2022-10-05T12:00:00Z")


def flagship_path() -> Path:
    return Path(str(resources.files("leotwin.scenarios").joinpath(FLAGSHIP, "scenario.yaml")))


@functools.cache
def retaken_area() -> shapely.Geometry:
    """Occupied on 2022-08-31 and no longer on 2022-10-07 (DeepStateMap polygons, bundled)."""
    def union(name: str) -> shapely.Geometry:
        path = Path(str(resources.files("leotwin.data").joinpath("frontline", name)))
        return shapely.union_all([g for _, _, g in read_zones(path, id_property="category")])

    return shapely.difference(union("occupied-2022-08-31.geojson"),
                              union("occupied-2022-10-07.geojson"))


@dataclass
class Answer:
    hours_by_cause: pd.DataFrame  # cause, dish_state, terminal_hours
    retaken: pd.DataFrame  # cause, rule, terminal_hours, share
    counterfactual_hours: float  # restored without the geofence, all terminals
    counterfactual_retaken_hours: float
    retaken_outage_hours: float
    contracts: pd.DataFrame
    audit: dict
    geofence_id: str
    run_dir: Path | None
    report_path: Path | None

    def text(self) -> str:
        lines = ["Terminal-hours lost by cause (and what the dish showed):"]
        for r in self.hours_by_cause.itertuples():
            lines.append(f"  {r.cause:<18} {r.terminal_hours:9.1f} h   dish: {r.dish_state}")
        lines.append(f"Inside the areas retaken by 2022-10-07 "
                     f"({self.retaken_outage_hours:.1f} outage terminal-hours):")
        for r in self.retaken.itertuples():
            rule = f" [{r.rule}]" if r.rule else ""
            lines.append(f"  {r.share:6.1%}  {r.cause}{rule}")
        share = (self.counterfactual_retaken_hours / self.retaken_outage_hours
                 if self.retaken_outage_hours else 0.0)
        lines.append(f"Without geofence {self.geofence_id}: {self.counterfactual_hours:.1f} "
                     f"terminal-hours restored, {self.counterfactual_retaken_hours:.1f} of them "
                     f"in retaken areas ({share:.0%} of the outage there).")
        for r in self.contracts.itertuples():
            lines.append(f"Contract {r.contract} ({r.account}): availability "
                         f"{r.achieved_pct:.2f}% vs {r.committed_pct:g}% committed — "
                         f"{r.breach_hours:.1f} breach hours, credits owed {r.credit_owed:,.0f}")
        a = self.audit
        if a:
            lines.append(f"Audit log: the rule came with policy version {a['entity_id']}, in force "
                         f"from {a['recorded_at']}, recorded by {a['actor']} "
                         f"(\"{a['reason']}\"; audit row {a['id']}, hash chain verified: "
                         f"{a['chain_ok']})")
        return "\n".join(lines)


def _geofence_of_interest(run: SimulationRun) -> str:
    version = run.policy.at(run.as_of) if hasattr(run.policy, "at") else None
    policy = version.policy if version else run.policy
    deny = [g for g in policy.geofences if g.action == "deny"]
    return deny[0].id


def _audit_entry(scenario: Scenario, store_url: str, geofence_id: str) -> dict:
    """Record the scenario's policy history in a store and read back the rule's audit row."""
    from .store.repository import Store

    history = scenario.policy()
    with Store.open(store_url) as store:
        if store.current() is None:
            for v in history.versions:
                store.record_policy(v.policy, author=v.author, reason=v.reason,
                                    recorded_at=v.recorded_at)
        rows = store.audit_rows()
        ok = store.verify_audit().ok
    first = next(v.version for v in history.versions
                 if any(g.id == geofence_id for g in v.policy.geofences))
    row = next(r for r in rows if r.action == "policy.record" and r.entity_id == str(first))
    recorded = history.versions[first - 1].recorded_at
    return {"id": row.id, "at": row.at.isoformat(), "actor": row.actor, "action": row.action,
            "entity_id": row.entity_id, "reason": row.reason, "chain_ok": ok,
            "recorded_at": recorded.isoformat()}


def answer(run: SimulationRun, *, scenario: Scenario | None = None,
           store_url: str | None = None, run_dir: Path | None = None) -> Answer:
    """Compute the flagship answer from a simulated run (see module docstring)."""
    res = run.result
    times = res["time"].to_numpy()
    step_h = float(np.median(np.diff(times)).astype("int64") / 3.6e12) if times.size > 1 else 0
    unserved = ~res["served"].to_numpy()
    cause = res["cause"].to_numpy()
    dish = res["dish_state"].to_numpy()
    lost = pd.DataFrame({"cause": cause[unserved], "dish_state": dish[unserved]})
    by_cause = (lost.groupby(["cause", "dish_state"]).size() * step_h).rename(
        "terminal_hours").reset_index().sort_values("terminal_hours", ascending=False)
    lat, lon, _ = run.ground.terminal_positions(times)
    inside = ZoneIndex([retaken_area()]).contains(lat.ravel(), lon.ravel())[:, 0].reshape(
        lat.shape)
    sel = unserved & inside
    rule = res["rule"].to_numpy()
    retaken = pd.DataFrame({"cause": cause[sel], "rule": rule[sel]})
    total = float(sel.sum() * step_h)
    retaken = (retaken.groupby(["cause", "rule"]).size() * step_h).rename(
        "terminal_hours").reset_index().sort_values("terminal_hours", ascending=False)
    retaken["share"] = retaken["terminal_hours"] / total if total else 0.0
    fence = _geofence_of_interest(run)
    cf = counterfactual(run, [f"geofence:{fence}"])
    restored = cf.run.result["served"].to_numpy() & ~res["served"].to_numpy()
    version = run.policy.at(run.as_of) if hasattr(run.policy, "at") else None
    policy = version.policy if version else run.policy
    terms = run.ground.terminals
    contracts = contract_availability(
        times, terms["lat_deg"].to_numpy(float), terms["lon_deg"].to_numpy(float),
        terms["account"].astype(str).to_numpy(), res["served"].to_numpy(), policy.contracts,
        step_s=step_h * 3600) if policy.contracts else pd.DataFrame()
    audit = _audit_entry(scenario, store_url, fence) if scenario and store_url else {}
    return Answer(by_cause, retaken, float(restored.sum() * step_h),
                  float((restored & inside).sum() * step_h), total, contracts, audit, fence,
                  run_dir, None)


def run_flagship(out_dir: Path, *, window=DEMO_WINDOW, report: bool = True) -> Answer:
    """The flagship on ``window``: simulate, write the run directory and report, answer."""
    scenario = load_scenario(flagship_path(), overrides={"time": {"start": window[0],
                                                                  "stop": window[1]}})
    times = scenario.times()
    positions = scenario.positions(times)
    run = simulate_run(positions, scenario.ground(), policy=scenario.policy(),
                       faults=scenario.faults(), config=scenario.network_config(),
                       as_of=scenario.as_of())
    out = Path(out_dir)
    write_run(run, out)
    write_assumptions(scenario, out)
    store = out / "policy-store.sqlite"
    result = answer(run, scenario=scenario, store_url=f"sqlite:///{store.resolve()}",
                    run_dir=out)
    if report:
        from .analytics.report import write_report

        result.report_path = write_report(out)
    return result
