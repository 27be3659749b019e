"""Scenario runs: time chunks streamed through the whole pipeline, resumable, optionally on Dask.

Each chunk (a slice of the time grid starting on a scheduling-slot boundary) is propagated,
decided, routed and attributed on its own and written as ``chunks/chunk-NNNNN.parquet``
(atomically: a temporary file renamed into place). ``chunks/progress.json`` records the
scenario's hash and every finished chunk with its SHA-256, so that the same command killed
mid-run resumes from the last complete chunk and ends with byte-identical chunk files.

State across chunks: a chunk starts on a slot boundary, where the scheduler chooses afresh, so
the schedule does not depend on the previous chunk; random satellite failures are drawn over
the whole run window; outage intervals, usage and contract availability are computed from the
assembled timeline at the end (:mod:`leotwin.analytics.runio`). Policy state that accumulates
over time (roaming days, data quotas) restarts at every chunk — a known limitation.

With ``dask=`` the chunks are submitted as tasks to a Dask cluster (an address, or "local" for
a ``LocalCluster``); each worker loads the scenario from its file, so nothing large is
pickled, and the chunk files are the same as in a single-process run.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from ._common import sha256_file
from .analytics.simulate import SimulationRun, simulate_run
from .orbits.propagate import propagate

log = logging.getLogger(__name__)

PROGRESS_FILE = "progress.json"
CHUNK_DIR = "chunks"
_CHUNK_COLUMNS = ("time", "terminal", "account", "served", "throughput_mbps", "rtt_ms", "sat",
                  "gateway", "cause", "cause_bits", "rule", "dish_state")


@dataclass
class Run:
    """A finished (or partly finished) run directory."""

    out_dir: Path
    scenario: object
    chunks_done: int
    chunks_total: int
    report_path: Path | None = None

    @property
    def complete(self) -> bool:
        return self.chunks_done == self.chunks_total

    def timeline(self) -> pd.DataFrame:
        files = sorted((self.out_dir / CHUNK_DIR).glob("chunk-*.parquet"))
        return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def _load(scenario_or_path):
    from .scenario import load_scenario

    if isinstance(scenario_or_path, (str, Path)):
        return load_scenario(Path(scenario_or_path))
    return scenario_or_path


@functools.lru_cache(maxsize=2)
def _worker_inputs(path: str, document_json: str, digest: str):
    """Per process: the scenario (file plus the caller's overrides, as its full document) and
    its expensive parts, loaded once (cached)."""
    from .scenario import load_scenario

    sc = load_scenario(Path(path), overrides=json.loads(document_json))
    if sc.scenario_hash() != digest:
        raise RuntimeError(f"{path}: the scenario file changed while the run was in progress")
    return sc, sc.constellation(), sc.ground(), sc.policy(), sc.faults()


def chunk_bounds(n_steps: int, chunk_steps: int) -> list[tuple[int, int]]:
    return [(a, min(a + chunk_steps, n_steps)) for a in range(0, n_steps, chunk_steps)]


_sha256 = sha256_file


def run_chunk(scenario_path: str, document_json: str, digest: str, k: int,
              out_dir: str) -> tuple[int, str]:
    """Compute chunk ``k`` and write it; returns (k, sha256 of the file). Runs in any process."""
    sc, con, ground, policy, faults = _worker_inputs(scenario_path, document_json, digest)
    times = sc.times()
    a, b = chunk_bounds(times.size, sc.chunk_steps)[k]
    positions = propagate(con, times[a:b])
    sim = simulate_run(positions, ground, policy=policy, faults=faults,
                       config=sc.network_config(), as_of=sc.as_of(),
                       window=(times[0], times[-1]))
    table = _long_table(sim.result)
    target = Path(out_dir) / CHUNK_DIR / f"chunk-{k:05d}.parquet"
    tmp = target.with_suffix(".parquet.tmp")
    table.to_parquet(tmp, index=False)
    os.replace(tmp, target)  # atomic: a killed run never leaves a half chunk behind
    return k, _sha256(target)


def _long_table(result: xr.Dataset) -> pd.DataFrame:
    n_t, n_term = result.sizes["time"], result.sizes["terminal"]
    data = {"time": np.repeat(result["time"].to_numpy(), n_term),
            "terminal": np.tile(result["terminal"].to_numpy(), n_t),
            "account": np.tile(result["account"].to_numpy(), n_t)}
    for name in _CHUNK_COLUMNS[3:]:
        data[name] = result[name].to_numpy().reshape(-1)
    frame = pd.DataFrame(data)
    for name in ("terminal", "account", "gateway", "cause", "rule", "dish_state"):
        frame[name] = frame[name].astype("category")  # compact on disk and in memory
    return frame


def _read_progress(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def _write_progress(path: Path, progress: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(progress, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def run(scenario, out_dir: str | Path, *, resume: bool = True, dask: str | None = None,
        report: bool | None = None, progress: Callable[[int, int], None] | None = None,
        max_chunks: int | None = None) -> Run:
    """``leotwin.run(scenario) -> Run``: run a scenario (object or YAML path) into ``out_dir``.

    Finished chunks recorded in ``chunks/progress.json`` for the same scenario hash are kept
    (``resume``); a different scenario in the same directory is refused. ``max_chunks`` stops
    after that many new chunks (for tests and partial runs). At the end the run directory
    (:func:`leotwin.analytics.runio.write_run` layout) and, if ``report``, the HTML report are
    written.
    """
    sc = _load(scenario)
    out = Path(out_dir)
    (out / CHUNK_DIR).mkdir(parents=True, exist_ok=True)
    digest = sc.scenario_hash()
    prog_path = out / CHUNK_DIR / PROGRESS_FILE
    prog = _read_progress(prog_path) if resume else {}
    if prog and prog.get("scenario_hash") != digest:
        raise ValueError(f"{out}: holds a run of a different scenario (hash "
                         f"{prog.get('scenario_hash', '?')[:12]}…); use another --out directory")
    times = sc.times()
    bounds = chunk_bounds(times.size, sc.chunk_steps)
    done = {int(k): h for k, h in prog.get("chunks", {}).items()
            if (out / CHUNK_DIR / f"chunk-{int(k):05d}.parquet").exists()
            and _sha256(out / CHUNK_DIR / f"chunk-{int(k):05d}.parquet") == h}
    prog = {"scenario_hash": digest, "scenario": str(sc.source_path), "n_chunks": len(bounds),
            "chunk_steps": sc.chunk_steps, "chunks": {str(k): h for k, h in done.items()}}
    _write_progress(prog_path, prog)
    todo = [k for k in range(len(bounds)) if k not in done]
    if max_chunks is not None:
        todo = todo[:max_chunks]
    if progress:
        progress(len(done), len(bounds))

    def record(k: int, sha: str) -> None:
        prog["chunks"][str(k)] = sha
        _write_progress(prog_path, prog)
        if progress:
            progress(len(prog["chunks"]), len(bounds))

    args = (str(sc.source_path), json.dumps(sc.document, sort_keys=True, default=str), digest)
    if dask:
        _run_on_dask(dask, args, todo, str(out), record)
    else:
        for k in todo:  # over time chunks: each streams to its own file
            record(*run_chunk(*args, k, str(out)))
    result = Run(out, sc, len(prog["chunks"]), len(bounds))
    if result.complete:
        _finish(result, sc, report if report is not None else sc.report)
    return result


def _run_on_dask(address: str, args, todo: list[int], out_dir: str, record) -> None:
    from dask.distributed import Client, LocalCluster, as_completed

    cluster = None
    if address == "local":
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    else:
        client = Client(address)
    try:
        futures = [client.submit(run_chunk, *args, k, out_dir, pure=False) for k in todo]
        for fut in as_completed(futures):
            k, sha = fut.result()
            record(k, sha)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def write_assumptions(scenario, out_dir: Path) -> None:
    """The scenario's labelled assumptions, for the report's "assumptions" section."""
    from .analytics.report import ASSUMPTIONS_FILE

    (Path(out_dir) / ASSUMPTIONS_FILE).write_text(
        json.dumps(scenario.assumptions(), indent=1) + "\n", encoding="utf-8")


def _finish(result: Run, sc, report: bool) -> None:
    """Assemble the chunks into the run directory tables (and the report)."""
    from .analytics.runio import write_run

    table = result.timeline()
    ground = sc.ground()
    order = ground.terminals["terminal"].astype(str).to_numpy()
    times = np.unique(table["time"].to_numpy())
    frame = table.assign(terminal=table["terminal"].astype(str)).set_index(["time", "terminal"])
    data = {}
    for name in _CHUNK_COLUMNS[3:]:
        col = frame[name]
        if isinstance(col.dtype, pd.CategoricalDtype):
            col = col.astype(str)
        data[name] = (("time", "terminal"), col.unstack("terminal").reindex(
            index=times, columns=order).to_numpy())
    accounts = ground.terminals.set_index(ground.terminals["terminal"].astype(str))["account"]
    ds = xr.Dataset(data, coords={"time": times, "terminal": order,
                                  "account": ("terminal", accounts.reindex(order).astype(str)
                                              .to_numpy())})
    ds["served"] = ds["served"].astype(bool)
    sim = SimulationRun(None, ground, sc.policy(), sc.faults(), sc.network_config(),
                        sc.as_of(), ds)
    step = float(np.median(np.diff(times)).astype("int64") / 1e9) if times.size > 1 else None
    write_run(sim, result.out_dir, step_s=step)
    write_assumptions(sc, result.out_dir)
    if report:
        from .analytics.report import write_report

        result.report_path = write_report(result.out_dir)
