"""A simulation run on disk: a directory of Parquet tables and a JSON manifest.

:func:`write_run` turns a :class:`~leotwin.analytics.simulate.SimulationRun` into a run
directory; :func:`read_run` and :func:`read_manifest` read one back. This module is an I/O edge:
every path comes from the caller (never the working directory), and nothing is printed.

Layout of a run directory (format version :data:`RUN_FORMAT_VERSION`):

``timeline.parquet``
    the long (time, terminal) table: ``time, terminal, account, served, throughput_mbps, rtt_ms,
    sat, gateway, cause, cause_bits, rule, dish_state`` — one row per step and terminal, in time
    order then terminal order (``time`` is the step start, UTC ``datetime64[ns]``).
``terminals.parquet``
    ``terminal, account, lat_deg, lon_deg`` — the terminals' positions as loaded in the ground
    segment (for an in-motion terminal: its registered position, tracks are not stored).
``intervals.parquet``
    the outage intervals (:func:`~leotwin.analytics.simulate.outage_table`).
``contracts.parquet``
    :func:`~leotwin.analytics.sla.contract_availability` for the policy's contracts (the latest
    version of a :class:`~leotwin.policy.models.PolicyHistory`); no rows without a policy.
``usage.parquet``
    :func:`~leotwin.analytics.sla.usage_by_account_day`.
``manifest.json``
    format version, creation time, time range, step, counts, the causes' primary order and the
    leotwin version.
"""

from __future__ import annotations

import errno
import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..policy.models import PolicyHistory
from .intervals import _step_durations_s, _utc_times, outage_intervals
from .simulate import PRIMARY_ORDER, SimulationRun
from .sla import CONTRACT_COLUMNS, contract_availability, usage_by_account_day

__all__ = ["RUN_FILES", "RUN_FORMAT_VERSION", "TIMELINE_COLUMNS", "read_manifest", "read_run",
           "run_step_hours", "write_run"]

log = logging.getLogger(__name__)

#: Version of the run-directory layout; bumped on incompatible changes.
RUN_FORMAT_VERSION = 1
MANIFEST = "manifest.json"
#: Table name → file name of the Parquet tables of a run directory.
RUN_FILES = {"timeline": "timeline.parquet", "terminals": "terminals.parquet",
             "intervals": "intervals.parquet", "contracts": "contracts.parquet",
             "usage": "usage.parquet"}
TIMELINE_COLUMNS = ("time", "terminal", "account", "served", "throughput_mbps", "rtt_ms", "sat",
                    "gateway", "cause", "cause_bits", "rule", "dish_state")
_VARS = ("served", "throughput_mbps", "rtt_ms", "sat", "gateway", "cause", "cause_bits", "rule",
         "dish_state")


def _leotwin_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("leotwin")
    except PackageNotFoundError:
        return "0+unknown"


def _timeline(result) -> pd.DataFrame:
    times = result["time"].to_numpy().astype("datetime64[ns]")
    terms = result["terminal"].to_numpy().astype(str)
    accounts = result["account"].to_numpy().astype(str)
    n_t, n_term = times.size, terms.size
    cols: dict[str, Any] = {"time": np.repeat(times, n_term),
                            "terminal": np.tile(terms.astype(object), n_t),
                            "account": np.tile(accounts.astype(object), n_t)}
    for name in _VARS:
        arr = result[name].transpose("time", "terminal").to_numpy()
        if arr.dtype.kind in "UO":
            arr = arr.astype(str).astype(object)
        cols[name] = arr.reshape(-1)
    return pd.DataFrame(cols, columns=list(TIMELINE_COLUMNS))


def _latest_policy(policy):
    if isinstance(policy, PolicyHistory):
        return policy.versions[-1].policy
    return policy


def write_run(run: SimulationRun, out_dir: str | Path, *, step_s: float | None = None) -> Path:
    """Write ``run`` as a run directory ``out_dir`` (created if needed; existing run files are
    overwritten) and return its path. Layout: module docstring.

    ``step_s`` is the duration of the last step in seconds (default: the median spacing of the
    run's times; required when the run has a single step).
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: exists and is not a directory; a run is written to a directory")
    result = run.result
    times = _utc_times(result["time"].to_numpy())
    if times.size == 0:
        raise ValueError("run: the result has no time steps; nothing to write")
    durations_s = _step_durations_s(times, step_s)
    step = float(durations_s[-1])
    terms = result["terminal"].to_numpy().astype(str)
    accounts = result["account"].to_numpy().astype(str)
    served = result["served"].transpose("time", "terminal").to_numpy().astype(bool)
    throughput = result["throughput_mbps"].transpose("time", "terminal").to_numpy()

    ground_terms = run.ground.terminals.set_index(
        run.ground.terminals["terminal"].astype(str))
    terminals = pd.DataFrame({
        "terminal": terms.astype(object), "account": accounts.astype(object),
        "lat_deg": ground_terms["lat_deg"].reindex(terms).to_numpy(np.float64),
        "lon_deg": ground_terms["lon_deg"].reindex(terms).to_numpy(np.float64)})
    intervals = _outage_table(result, step)
    policy = _latest_policy(run.policy)
    contracts = list(policy.contracts) if policy is not None else []
    if contracts:
        contract_table = contract_availability(times, terminals["lat_deg"].to_numpy(),
                                               terminals["lon_deg"].to_numpy(), accounts, served,
                                               contracts, step_s=step)
    else:
        contract_table = pd.DataFrame({c: pd.Series([], dtype=t) for c, t in zip(
            CONTRACT_COLUMNS, (object, object, float, float, float, bool, float, float),
            strict=True)})
    usage = usage_by_account_day(times, terms, accounts, throughput, step_s=step)
    tables = {"timeline": _timeline(result), "terminals": terminals, "intervals": intervals,
              "contracts": contract_table, "usage": usage}

    out.mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        frame.to_parquet(out / RUN_FILES[name], index=False)
    end = times[-1] + np.timedelta64(int(round(step * 1e9)), "ns")
    manifest = {
        "format": "leotwin-run",
        "format_version": RUN_FORMAT_VERSION,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "leotwin_version": _leotwin_version(),
        "time_start": f"{np.datetime_as_string(times[0], 's')}Z",
        "time_end": f"{np.datetime_as_string(end, 's')}Z",
        "step_s": step,
        "counts": {"steps": int(times.size), "terminals": int(terms.size),
                   "accounts": int(pd.unique(accounts).size), "intervals": int(len(intervals)),
                   "contracts": len(contracts)},
        "primary_order": list(PRIMARY_ORDER),
        "files": {**RUN_FILES},
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    log.info("wrote run %s (%d steps × %d terminals)", out, times.size, terms.size)
    return out


def _outage_table(result, step: float) -> pd.DataFrame:
    """:func:`~leotwin.analytics.simulate.outage_table` with the run's last-step duration."""
    return outage_intervals(result["time"].to_numpy(), result["terminal"].to_numpy(),
                            ~result["served"].to_numpy(), cause=result["cause"].to_numpy(),
                            rule=result["rule"].to_numpy(), step_s=step)


def read_manifest(run_dir: str | Path) -> dict[str, Any]:
    """The manifest of the run directory ``run_dir``. FileNotFoundError when ``run_dir`` or its
    manifest is missing, ValueError (naming the file) when the manifest is not a leotwin run
    manifest of a supported format version."""
    root = Path(run_dir)
    if not root.is_dir():
        raise FileNotFoundError(errno.ENOENT, "no such run directory", str(root))
    path = root / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(errno.ENOENT, "not a leotwin run directory (manifest.json "
                                "missing; write one with write_run)", str(path))
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != "leotwin-run":
        raise ValueError(f"{path}: not a leotwin run manifest (no \"format\": \"leotwin-run\")")
    version = manifest.get("format_version")
    if version != RUN_FORMAT_VERSION:
        raise ValueError(f"{path}: run format version {version!r} is not supported (this "
                         f"leotwin reads version {RUN_FORMAT_VERSION})")
    for key in ("step_s", "time_start", "time_end", "primary_order"):
        if key not in manifest:
            raise ValueError(f"{path}: manifest lacks {key!r}")
    return manifest


def read_run(run_dir: str | Path) -> dict[str, pd.DataFrame]:
    """The tables of the run directory ``run_dir`` by name (``timeline``, ``terminals``,
    ``intervals``, ``contracts``, ``usage``); the manifest comes from :func:`read_manifest`,
    which this calls first to validate the directory. A missing table raises
    FileNotFoundError naming the file; an unreadable one ValueError naming the file."""
    read_manifest(run_dir)
    root = Path(run_dir)
    tables = {}
    for name, file in RUN_FILES.items():
        path = root / file
        if not path.is_file():
            raise FileNotFoundError(errno.ENOENT, f"run table {name!r} missing", str(path))
        try:
            tables[name] = pd.read_parquet(path)
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: cannot read run table {name!r} ({exc})") from None
    missing = [c for c in TIMELINE_COLUMNS if c not in tables["timeline"].columns]
    if missing:
        raise ValueError(f"{root / RUN_FILES['timeline']}: lacks columns {missing}")
    return tables


def run_step_hours(timeline: pd.DataFrame, step_s: float) -> np.ndarray:
    """Duration in hours of the step of every row of ``timeline`` (the spacing to the next step
    time, ``step_s`` for the last step), as in :mod:`leotwin.analytics.intervals`."""
    times = np.unique(timeline["time"].to_numpy(dtype="datetime64[ns]"))
    if times.size == 0:
        return np.zeros(len(timeline))
    dur_h = _step_durations_s(times, step_s) / 3600.0
    return dur_h[np.searchsorted(times, timeline["time"].to_numpy(dtype="datetime64[ns]"))]
