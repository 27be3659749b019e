"""Scenario runs: time chunks streamed through the whole pipeline, resumable, optionally on Dask.

Each chunk (a slice of the time grid starting on a scheduling-slot boundary) is propagated,
decided, routed and attributed on its own and written as ``chunks/chunk-NNNNN.parquet``, next
to the policy state at its end, ``chunks/state-NNNNN.json`` (both atomically: a temporary file
renamed into place). ``chunks/progress.json`` records the scenario's hash and every finished
chunk with the SHA-256 of its chunk file (``chunks``) and of its state file (``states``); a chunk
counts as done only when both files match, so the same command killed mid-run resumes from the
finished chunks and ends with byte-identical chunk and state files.

State carried across chunks
---------------------------
* **Policy state** (:class:`~leotwin.policy.engine.PolicyState`): roaming days outside the
  account's country per calendar year, and priority data used per calendar month against the
  plan's quota. Chunk ``k`` is decided from the state at the end of chunk ``k − 1`` (chunk 0:
  no roaming day, no data used — the run starts with a fresh count) with
  ``decide(..., state=S, return_state=True)``; roaming advances per step inside the chunk. The
  data used is what the terminal was actually delivered: chunk ``k``'s served
  ``throughput_mbps`` × step duration, added after its simulation
  (:meth:`~leotwin.policy.engine.PolicyState.add_usage`, for terminals with a plan) — so the
  **quota state advances per chunk**: inside a chunk the quota rule sees the data used up to
  the chunk's start (reset to 0 at a month change). Per-step quota would need the throughput of
  the step before deciding the next one, i.e. a step-by-step simulation.
* **Scheduling**: a chunk starts on a slot boundary, where the scheduler chooses afresh, so the
  schedule does not depend on the previous chunk; random satellite failures are drawn over the
  whole run window.
* **Outage intervals, usage, contract availability** are accumulated while the chunks are read
  back one at a time at the end (:class:`~leotwin.analytics.runio.RunWriter`): an outage
  spanning a chunk seam is carried as an open interval and comes out as one interval.

Dependencies and Dask
---------------------
With ``dask=`` the chunks are submitted as tasks to a Dask cluster (an address, or "local" for a
``LocalCluster``); each worker loads the scenario from its file, so nothing large is pickled —
only the small state travels. Which chunks depend on which:

* When some terminal has a plan (a quota), chunk ``k`` needs the *simulated* usage of chunk
  ``k − 1``: the chunks are submitted as a chain, each task receiving its predecessor's result
  future (its end state), so they run one after the other (the network of a chunk depends on
  who is denied, and roaming denials depend on the state, so the expensive part cannot start
  early either).
* Otherwise the state does not depend on any simulation: the driver first computes every
  chunk's start state in a cheap pass (:func:`~leotwin.policy.engine.advance_state`: time
  bookkeeping, plus country memberships of the positions when there are roaming rules), then
  submits all the chunks at once, in parallel; each chunk still writes the state it computes
  itself, checked against the pass.

Either way the files are the same as in a single-process run.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import xarray as xr

from ._common import sha256_file
from .analytics.intervals import _step_durations_s
from .analytics.simulate import simulate_run
from .orbits.propagate import propagate
from .policy.engine import PolicyState, advance_state, decide, metered_terminals

log = logging.getLogger(__name__)

PROGRESS_FILE = "progress.json"
CHUNK_DIR = "chunks"
CHUNK_FILE = "chunk-{k:05d}.parquet"
STATE_FILE = "state-{k:05d}.json"
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
        """All chunks in one table — for small runs; large ones: ``timeline.parquet`` by row
        group (:func:`leotwin.analytics.runio.iter_timeline`)."""
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


@dataclass(frozen=True)
class ChunkDone:
    """A written chunk: its index, the SHA-256 of its chunk and state files, and the state at
    its end (``PolicyState.to_dict()``, small: what a Dask task hands to the next one)."""

    k: int
    chunk_sha256: str
    state_sha256: str
    state: dict
    #: How the chunk ran (not part of the result): wall and CPU seconds of
    #: :func:`run_chunk`, the process that ran it and that process's peak RSS so far.
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    pid: int = 0
    peak_rss_mib: float = 0.0


def _peak_rss_mib() -> float:
    """This process's peak resident set size (MiB): VmHWM, or ru_maxrss where there is no
    /proc."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
    except (OSError, StopIteration, ValueError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _state_text(state: PolicyState) -> str:
    return json.dumps(state.to_dict(), sort_keys=True, separators=(",", ":")) + "\n"


def _write_atomic(target: Path, write: Callable[[Path], None]) -> None:
    tmp = target.with_name(target.name + ".tmp")
    write(tmp)
    os.replace(tmp, target)  # atomic: a killed run never leaves a half file behind


def _start_state(start, ids: np.ndarray) -> PolicyState:
    if start is None:
        return PolicyState.initial(ids)
    if isinstance(start, ChunkDone):
        start = start.state
    if isinstance(start, dict):
        start = PolicyState.from_dict(start)
    return start


def _advance(policy, ids, times: np.ndarray, ground, state: PolicyState, as_of) -> PolicyState:
    """State after ``times`` without deciding (:func:`advance_state`; no policy: bookkeeping)."""
    if policy is None:
        return PolicyState(state.terminal, times[-1])
    return advance_state(policy, list(ids), times, ground, state, as_of=as_of)


def run_chunk(scenario_path: str, document_json: str, digest: str, k: int, out_dir: str,
              start: ChunkDone | dict | PolicyState | None = None) -> ChunkDone:
    """Compute chunk ``k`` from the policy state at its start (``start``: the previous chunk's
    :class:`ChunkDone`, a state, or None for chunk 0) and write it and its end state. Runs in
    any process."""
    t0, cpu0 = time.perf_counter(), time.process_time()
    sc, con, ground, policy, faults = _worker_inputs(scenario_path, document_json, digest)
    times = sc.times()
    bounds = chunk_bounds(times.size, sc.chunk_steps)
    a, b = bounds[k]
    ids = ground.terminals["terminal"].astype(str).to_numpy()
    if start is None and k > 0:
        raise ValueError(f"chunk {k}: the policy state at its start (chunk {k - 1}'s) is needed")
    state = _start_state(start, ids)
    window = times[a:b]
    decisions = None
    if policy is not None:
        decisions, state = decide(policy, list(ids), window, ground, as_of=sc.as_of(),
                                  state=state, return_state=True)
    else:
        state = _advance(None, ids, window, ground, state, None)
    positions = propagate(con, window)
    sim = simulate_run(positions, ground, policy=policy, faults=faults,
                       config=sc.network_config(), as_of=sc.as_of(),
                       window=(times[0], times[-1]), decisions=decisions, strings=False)
    if policy is not None:
        dur_s = _step_durations_s(times, float(sc.spec.time.step_s))[a:b]
        state = state.add_usage(window, sim.result["throughput_mbps"].transpose(
            "time", "terminal").to_numpy(), dur_s,
            metered_terminals(policy, list(ids), as_of=sc.as_of()))
    table = _long_table(sim.result, sim.codes)
    chunks = Path(out_dir) / CHUNK_DIR
    text = _state_text(state)
    _write_atomic(chunks / STATE_FILE.format(k=k),
                  lambda p: p.write_text(text, encoding="utf-8"))
    _write_atomic(chunks / CHUNK_FILE.format(k=k), lambda p: table.to_parquet(p, index=False))
    return ChunkDone(k, _sha256(chunks / CHUNK_FILE.format(k=k)),
                     _sha256(chunks / STATE_FILE.format(k=k)), state.to_dict(),
                     time.perf_counter() - t0, time.process_time() - cpu0, os.getpid(),
                     _peak_rss_mib())


def _long_table(result: xr.Dataset, codes: dict | None = None) -> pd.DataFrame:
    """One row per (time, terminal); the string columns as categoricals (compact on disk and
    in memory). ``codes`` (:attr:`SimulationRun.codes`): the string columns as codes, turned
    into categoricals directly — the same table as encoding the strings, without them."""
    n_t, n_term = result.sizes["time"], result.sizes["terminal"]
    codes = codes or {}
    data = {"time": np.repeat(result["time"].to_numpy(), n_term)}
    for name in ("terminal", "account"):   # per terminal: encode once, repeat the codes
        cat = _categorical(*_encode(result[name].to_numpy()))
        data[name] = pd.Categorical.from_codes(np.tile(cat.codes, n_t), dtype=cat.dtype)
    for name in _CHUNK_COLUMNS[3:]:
        if name in codes:
            data[name] = _categorical(codes[name][0], np.asarray(codes[name][1]).reshape(-1))
        else:
            data[name] = result[name].to_numpy().reshape(-1)
    frame = pd.DataFrame(data)
    for name in ("gateway", "cause", "rule", "dish_state"):
        if name not in codes:
            frame[name] = frame[name].astype("category")
    return frame


def _encode(values: np.ndarray) -> tuple[list[str], np.ndarray]:
    uniq, inverse = np.unique(values.astype(str), return_inverse=True)
    return [str(x) for x in uniq], inverse.reshape(-1)


def _categorical(names, codes: np.ndarray) -> pd.Categorical:
    """``pd.Categorical(names[codes])`` — categories the sorted distinct names present, as
    ``astype("category")`` makes them — from the codes, without building the strings."""
    present = np.flatnonzero(np.bincount(codes, minlength=len(names)))
    labels = [str(names[k]) for k in present]
    categories = sorted(set(labels))
    lookup = np.full(len(names), -1, np.int64)
    lookup[present] = [categories.index(x) for x in labels]
    return pd.Categorical.from_codes(lookup[codes], dtype=pd.CategoricalDtype(
        pd.Index(categories, dtype="str")))


def _read_progress(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def _write_progress(path: Path, progress: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(progress, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _chunk_ok(chunks: Path, k: int, prog: dict) -> bool:
    """Chunk ``k`` is done: its chunk and state files exist and match progress.json."""
    want_c, want_s = prog.get("chunks", {}).get(str(k)), prog.get("states", {}).get(str(k))
    fc, fs = chunks / CHUNK_FILE.format(k=k), chunks / STATE_FILE.format(k=k)
    return bool(want_c and want_s and fc.exists() and fs.exists()
                and _sha256(fc) == want_c and _sha256(fs) == want_s)


def _read_state(chunks: Path, k: int) -> dict:
    return json.loads((chunks / STATE_FILE.format(k=k)).read_text(encoding="utf-8"))


def run(scenario, out_dir: str | Path, *, resume: bool = True, dask: str | None = None,
        report: bool | None = None, progress: Callable[[int, int], None] | None = None,
        max_chunks: int | None = None) -> Run:
    """``leotwin.run(scenario) -> Run``: run a scenario (object or YAML path) into ``out_dir``.

    Finished chunks recorded in ``chunks/progress.json`` for the same scenario hash are kept
    (``resume``); a different scenario in the same directory is refused. ``max_chunks`` stops
    after that many new chunks (for tests and partial runs). The policy state is carried from
    chunk to chunk (module docstring). At the end the run directory
    (:func:`leotwin.analytics.runio.write_run` layout, written chunk by chunk) and, if
    ``report``, the HTML report are written.
    """
    sc = _load(scenario)
    out = Path(out_dir)
    chunks = out / CHUNK_DIR
    chunks.mkdir(parents=True, exist_ok=True)
    digest = sc.scenario_hash()
    prog_path = chunks / PROGRESS_FILE
    prog = _read_progress(prog_path) if resume else {}
    if prog and prog.get("scenario_hash") != digest:
        raise ValueError(f"{out}: holds a run of a different scenario (hash "
                         f"{prog.get('scenario_hash', '?')[:12]}…); use another --out directory")
    times = sc.times()
    bounds = chunk_bounds(times.size, sc.chunk_steps)
    done = [k for k in range(len(bounds)) if _chunk_ok(chunks, k, prog)]
    prog = {"scenario_hash": digest, "scenario": str(sc.source_path), "n_chunks": len(bounds),
            "chunk_steps": sc.chunk_steps,
            "chunks": {str(k): prog["chunks"][str(k)] for k in done},
            "states": {str(k): prog["states"][str(k)] for k in done}}
    _write_progress(prog_path, prog)
    done_set = set(done)
    todo = [k for k in range(len(bounds)) if k not in done_set]
    if max_chunks is not None:
        todo = todo[:max_chunks]
    if progress:
        progress(len(done), len(bounds))

    def record(c: ChunkDone) -> None:
        log.debug("chunk %d: %.2f s, %.2f s CPU, process %d, peak RSS %.0f MiB", c.k,
                  c.seconds, c.cpu_seconds, c.pid, c.peak_rss_mib, extra={"chunk_done": c})
        prog["chunks"][str(c.k)] = c.chunk_sha256
        prog["states"][str(c.k)] = c.state_sha256
        _write_progress(prog_path, prog)
        if progress:
            progress(len(prog["chunks"]), len(bounds))

    args = (str(sc.source_path), json.dumps(sc.document, sort_keys=True, default=str), digest)
    if dask:
        _run_on_dask(dask, sc, args, todo, done_set, str(out), record)
    else:
        last: ChunkDone | None = None
        for k in todo:  # over time chunks, in order: each starts from its predecessor's state
            start = (None if k == 0 else last.state if last is not None and last.k == k - 1
                     else _read_state(chunks, k - 1))
            last = run_chunk(*args, k, str(out), start)
            record(last)
    result = Run(out, sc, len(prog["chunks"]), len(bounds))
    if result.complete:
        t0 = time.perf_counter()
        _finish(result, sc, report if report is not None else sc.report)
        log.debug("run directory assembled in %.1f s", time.perf_counter() - t0,
                  extra={"finish_s": time.perf_counter() - t0})
    return result


def _state_pass(sc, todo: list[int], done: set[int], chunks: Path) -> dict[int, dict | None]:
    """Start state of every chunk in ``todo`` without simulating (valid when no terminal is
    metered: then the state depends on time and positions only)."""
    ground, policy = sc.ground(), sc.policy()
    ids = ground.terminals["terminal"].astype(str).to_numpy()
    times = sc.times()
    bounds = chunk_bounds(times.size, sc.chunk_steps)
    starts: dict[int, dict | None] = {}
    state = PolicyState.initial(ids)
    want = set(todo)
    for k in range(max(todo, default=-1)):   # over chunks: a cheap pass, no simulation
        if k in done:
            state = PolicyState.from_dict(_read_state(chunks, k))
        else:
            a, b = bounds[k]
            state = _advance(policy, ids, times[a:b], ground, state, sc.as_of())
        if k + 1 in want:
            starts[k + 1] = state.to_dict()
    if 0 in want:
        starts[0] = None
    return starts


def _run_on_dask(address: str, sc, args, todo: list[int], done: set[int], out_dir: str,
                 record) -> None:
    from dask.distributed import Client, as_completed

    if not todo:
        return
    ground, policy = sc.ground(), sc.policy()
    ids = ground.terminals["terminal"].astype(str).to_numpy()
    chained = policy is not None and bool(metered_terminals(policy, list(ids),
                                                            as_of=sc.as_of()).any())
    chunks = Path(out_dir) / CHUNK_DIR
    starts = {} if chained else _state_pass(sc, todo, done, chunks)
    cluster = None
    if address == "local":
        cluster = _local_cluster()
        client = Client(cluster)
    else:
        client = Client(address)
    try:
        futures, previous = [], {}
        for k in todo:   # over chunks: submit (a chain when usage feeds the next chunk's quota)
            if chained:
                start = (None if k == 0 else previous[k - 1] if k - 1 in previous
                         else _read_state(chunks, k - 1))
            else:
                start = starts[k]
            fut = client.submit(run_chunk, *args, k, out_dir, start, pure=False)
            previous[k] = fut
            futures.append(fut)
        for fut in as_completed(futures):
            c = fut.result()
            if not chained and c.k + 1 in starts and starts[c.k + 1] != c.state:
                raise RuntimeError(f"chunk {c.k}: its end state differs from the state pass; "
                                   "the chunks' policy state is not independent of the "
                                   "simulation")
            record(c)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _local_cluster():
    """A ``LocalCluster`` of 2 single-threaded worker processes, spawned without the
    ``MALLOC_TRIM_THRESHOLD_`` Dask sets for its workers by default: any fixed value turns
    off glibc's adaptive mmap threshold, so every temporary array above 128 KiB is mapped
    and unmapped afresh, page faults included — measured 2.5x slower per chunk here."""
    import dask
    from dask.distributed import LocalCluster

    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        return LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                            dashboard_address=None)


def write_assumptions(scenario, out_dir: Path) -> None:
    """The scenario's labelled assumptions, for the report's "assumptions" section."""
    from .analytics.report import ASSUMPTIONS_FILE

    (Path(out_dir) / ASSUMPTIONS_FILE).write_text(
        json.dumps(scenario.assumptions(), indent=1) + "\n", encoding="utf-8")


def _finish(result: Run, sc, report: bool) -> None:
    """Write the run directory tables from the chunk files, one chunk at a time (the timeline
    is appended as row groups; intervals, usage and contract availability carry small state
    from chunk to chunk — :class:`~leotwin.analytics.runio.RunWriter`), then the report."""
    from .analytics.runio import RunWriter, _latest_policy

    ground = sc.ground()
    terms = ground.terminals
    terminals = pd.DataFrame({"terminal": terms["terminal"].astype(str).to_numpy(),
                              "account": terms["account"].astype(str).to_numpy(),
                              "lat_deg": terms["lat_deg"].to_numpy(np.float64),
                              "lon_deg": terms["lon_deg"].to_numpy(np.float64)})
    policy = _latest_policy(sc.policy())
    writer = RunWriter(result.out_dir, terminals,
                       list(policy.contracts) if policy is not None else [])
    times = sc.times()
    dur_s = _step_durations_s(times, float(sc.spec.time.step_s))
    for k, (_, b) in enumerate(chunk_bounds(times.size, sc.chunk_steps)):  # over chunks
        table = pq.read_table(result.out_dir / CHUNK_DIR / CHUNK_FILE.format(k=k))
        writer.add(table, float(dur_s[b - 1]))
    writer.close()
    write_assumptions(sc, result.out_dir)
    if report:
        from .analytics.report import write_report

        result.report_path = write_report(result.out_dir)
