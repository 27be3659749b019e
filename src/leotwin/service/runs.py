"""Background runs: one worker thread calling :func:`leotwin.runs.run` with a progress
callback that updates the store's ``runs`` table; counterfactual reruns of finished runs."""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import pandas as pd
import xarray as xr

from ..analytics.runio import read_manifest
from ..analytics.simulate import SimulationRun, counterfactual
from ..runs import run as run_scenario
from ..scenario import Scenario, load_scenario
from ..store import RunRecord, Store
from .problems import ErrorItem, ProblemError

log = logging.getLogger(__name__)


def bundled_scenarios() -> dict[str, Path]:
    """Name → scenario.yaml of the scenarios shipped in ``leotwin.scenarios``."""
    root = resources.files("leotwin.scenarios")
    out = {}
    for entry in root.iterdir():
        if entry.is_dir() and entry.joinpath("scenario.yaml").is_file():
            out[entry.name] = Path(str(entry.joinpath("scenario.yaml")))
    return out


def _iso(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def scenario_path(name: str, *, allow_path: bool) -> Path:
    """A bundled scenario by name or (``allow_path``) an absolute scenario file path."""
    bundled = bundled_scenarios()
    if name in bundled:
        return bundled[name]
    if not allow_path:
        raise ProblemError(422, f"unknown scenario {name!r}; bundled scenarios: "
                           f"{', '.join(sorted(bundled))} (a file path needs the admin role)",
                           errors=[ErrorItem(loc=["body", "scenario"], field="scenario",
                                             msg="not a bundled scenario")])
    path = Path(name)
    if not path.is_absolute() or not path.is_file():
        raise ProblemError(422, f"scenario {name!r} is neither a bundled scenario nor an "
                           "absolute path of an existing file", errors=[ErrorItem(
                               loc=["body", "scenario"], field="scenario",
                               msg="no such scenario")])
    return path


def load_for_run(path: Path, start: datetime | None, stop: datetime | None) -> Scenario:
    overrides = {k: v for k, v in (("start", _iso(start)), ("stop", _iso(stop))) if v}
    return load_scenario(path, overrides={"time": overrides} if overrides else None)


class RunManager:
    """Runs scenarios one at a time on a worker thread (the machine's cores go to the
    vectorised chunks); status and progress live in the store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="leotwin-run")
        self.futures: dict[int, Future] = {}

    def cancel(self, run_id: int) -> bool:
        """Cancel a queued run (True), not one that started (False)."""
        fut = self.futures.get(run_id)
        return fut is not None and fut.cancel()

    def submit(self, record: RunRecord, scenario: Scenario, *, report: bool) -> Future:
        fut = self._pool.submit(self._work, record.id, scenario, Path(record.out_dir), report)
        self.futures[record.id] = fut
        return fut

    def _work(self, run_id: int, scenario: Scenario, out_dir: Path, report: bool) -> None:
        store = self.store
        store.update_run(run_id, status="running", started_at=datetime.now(UTC))

        def progress(done: int, total: int) -> None:
            store.update_run(run_id, chunks_done=int(done), chunks_total=int(total),
                             progress=0.0 if total <= 0 else min(1.0, done / total) * 0.99)

        try:
            result = run_scenario(scenario, out_dir, report=report, progress=progress)
            if not result.complete:
                raise RuntimeError(f"{result.chunks_done}/{result.chunks_total} chunks done")
            manifest = read_manifest(out_dir)
            store.update_run(run_id, status="done", progress=1.0,
                             chunks_done=result.chunks_done, chunks_total=result.chunks_total,
                             step_s=float(manifest["step_s"]),
                             n_terminals=int(manifest["counts"]["terminals"]),
                             finished_at=datetime.now(UTC))
            log.info("run %d done: %s", run_id, out_dir)
        except Exception as exc:  # a failed run is data (status failed + error), not a crash
            log.exception("run %d failed", run_id)
            store.update_run(run_id, status="failed", error=f"{type(exc).__name__}: {exc}"[:4000],
                             finished_at=datetime.now(UTC))

    def interrupted(self) -> None:
        """Mark runs left queued or running by a previous process as failed. Called by
        ``leotwin serve`` at start (one server per store); not by ``create_app``, since
        several apps may share a store (tests, tools)."""
        for r in self.store.runs():
            if r.status in ("queued", "running") and r.id not in self.futures:
                self.store.update_run(r.id, status="failed", finished_at=datetime.now(UTC),
                                      error="interrupted: the service stopped before the run "
                                            "finished; start it again")

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def rerun_without(record: RunRecord, timeline: pd.DataFrame, without: list[str]):
    """:func:`leotwin.counterfactual` of a finished run: its scenario is reloaded on the run's
    window (the same inputs), the recorded result is the base and the rerun drops ``without``."""
    if not record.scenario:
        raise ProblemError(409, f"run {record.id} has no scenario recorded, so it cannot be "
                           "rerun (register it with its scenario)")
    path = scenario_path(record.scenario, allow_path=True)
    sc = load_for_run(path, record.time_start, record.time_stop)
    check_elements(sc, without)  # before the (expensive) propagation
    times = sc.times()
    positions = sc.positions(times)
    ground = sc.ground()
    order = ground.terminals["terminal"].astype(str).to_numpy()
    served = (timeline.assign(terminal=timeline["terminal"].astype(str))
              .pivot_table(index="time", columns="terminal", values="served", aggfunc="first")
              .reindex(index=times, columns=order))
    if served.isna().to_numpy().any():
        raise ProblemError(409, f"run {record.id}: its timeline does not match its scenario "
                           "(times or terminals differ); it cannot be rerun")
    accounts = ground.terminals.set_index(ground.terminals["terminal"].astype(str))["account"]
    base = xr.Dataset({"served": (("time", "terminal"), served.to_numpy().astype(bool))},
                      coords={"time": times, "terminal": order,
                              "account": ("terminal",
                                          accounts.reindex(order).astype(str).to_numpy())})
    sim = SimulationRun(positions, ground, sc.policy(), sc.faults(), sc.network_config(),
                        sc.as_of(), base)
    return counterfactual(sim, without)


def check_elements(sc: Scenario, without: list[str]) -> None:
    """422 naming every ``kind:ID`` of ``without`` that the run's scenario does not have."""
    policy = sc.policy()
    versions = getattr(policy, "versions", None)
    policies = [v.policy for v in versions] if versions is not None else [policy]
    faults = sc.faults()
    known = {"geofence": {g.id for p in policies for g in p.geofences},
             "jammer": set() if faults is None else {j.id for j in faults.jammers},
             "failure": set() if faults is None else {str(f.sat) for f in faults.failures},
             "outage": set() if faults is None else {o.id for o in faults.outages}}
    bad = [ErrorItem(loc=["body", "without", k], row=k, field="without",
                     msg=f"{item!r}: the run's scenario has no such {item.partition(':')[0]}")
           for k, item in enumerate(without)
           if item.partition(":")[2] not in known.get(item.partition(":")[0], set())]
    if bad:
        raise ProblemError(422, "unknown elements to remove: "
                           + ", ".join(repr(without[e.row]) for e in bad), errors=bad)


def window_of_manifest(manifest: dict) -> tuple[datetime, datetime, float, int]:
    step = float(manifest["step_s"])
    start = datetime.fromisoformat(manifest["time_start"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(manifest["time_end"].replace("Z", "+00:00"))
    stop = end - pd.Timedelta(seconds=step).to_pytimedelta()
    return start, stop, step, int(manifest.get("counts", {}).get("terminals", 0))


__all__ = ["RunManager", "bundled_scenarios", "load_for_run", "rerun_without", "scenario_path",
           "window_of_manifest"]
