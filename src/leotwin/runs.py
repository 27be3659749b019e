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
  back one at a time, in chunk order (:class:`~leotwin.analytics.runio.RunWriter`): an outage
  spanning a chunk seam is carried as an open interval and comes out as one interval.

Assembly while the chunks run
-----------------------------
When a call can finish the run (no ``max_chunks`` cut), the driver appends every chunk to the
run directory as soon as it and all chunks before it are done (:class:`_Assembler`): the
timeline grows by the chunk's row group (its dictionary-encoded string columns written as they
are), the outage intervals, usage and contract counts advance, and finished intervals are
spilled to disk; after the last chunk only that chunk and the small tables are left to write.
The chunk files are read back for this, finished earlier or just now alike, so a resumed, an
uninterrupted and a Dask run assemble the same bytes.

Terminal partitions
-------------------
``partition_terminals=N`` (or ``LEOTWIN_PARTITION_TERMINALS``, or the scenario's
``outputs.partition_terminals``): when the scenario has more than ``N`` terminals, every chunk
is computed as ⌈n/N⌉ partitions of consecutive terminals (:func:`run_partition`, separate Dask
tasks) that :func:`merge_partitions` joins into the chunk's file and state — byte-identical to
the whole chunk. The simulation has two phases (:func:`~leotwin.analytics.simulate.simulate_run`):
a partition computes the per-terminal one (decisions, visibility, the ``max_elevation``
schedule, routes, failures, outages, jamming and its rate factor, cause bits), written as
``chunks/part-KKKKK-PPPP.npz``; the merge joins them and runs the shared one on the whole chunk
— **capacity** (each satellite's beams shared among the cells it serves and each cell's
capacity among its terminals, so a terminal's throughput depends on the others), congestion,
throughput, the jamming slowdown, the primary cause — then the chunk's quota usage. The policy
state is split per terminal and merged. A partition repeats the parts that do not depend on
terminals (propagation, laser and feeder links, routes: about 40 % of a flagship chunk), so
partitions pay off for large terminal sets on more workers than chunks in flight, or to bound
a task's memory.

One setting couples terminals inside the per-terminal phase itself: **``least_loaded``
scheduling** caps the terminals per satellite, so one terminal's choice depends on the
others'. With it, ``partition_terminals`` is ignored (logged) and chunks run whole.

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
* With terminal partitions, a chunk is its partition tasks plus a merge task that depends on
  them; the next chunk's partitions depend on the merge (chained) or on the state pass.

Either way the files are the same as in a single-process run.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import xarray as xr

from ._common import sha256_file
from .analytics.intervals import _step_durations_s
from .analytics.simulate import TerminalPhase, shared_phase, terminal_phase
from .policy.engine import PolicyState, advance_state, decide, metered_terminals

log = logging.getLogger(__name__)

PROGRESS_FILE = "progress.json"
CHUNK_DIR = "chunks"
CHUNK_FILE = "chunk-{k:05d}.parquet"
STATE_FILE = "state-{k:05d}.json"
_CHUNK_COLUMNS = ("time", "terminal", "account", "served", "throughput_mbps", "rtt_ms", "sat",
                  "gateway", "cause", "cause_bits", "rule", "dish_state")
#: How chunk (and partition) files are written: dictionary pages where values repeat (not the
#: nearly all distinct rates and RTTs), statistics for the time only — min/max of the string
#: columns cost a third of the write and prune nothing (every chunk holds every terminal).
_CHUNK_PARQUET = {"index": False, "write_statistics": ["time"],
                  "use_dictionary": ["time", "terminal", "account", "sat", "gateway", "cause",
                                     "cause_bits", "rule", "dish_state"]}


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
    """Per process: the scenario (the caller's whole document, overrides included, with paths
    relative to the scenario file) and its expensive parts, loaded once (cached)."""
    from .scenario import Scenario

    sc = Scenario.from_document(json.loads(document_json), path)
    if sc.scenario_hash() != digest:
        raise RuntimeError(f"{path}: a file the scenario reads changed while the run was in "
                           "progress")
    return sc, sc.constellation(), sc.ground(), sc.policy(), sc.faults()


def chunk_bounds(n_steps: int, chunk_steps: int) -> list[tuple[int, int]]:
    return [(a, min(a + chunk_steps, n_steps)) for a in range(0, n_steps, chunk_steps)]


_sha256 = sha256_file


@dataclass(frozen=True, kw_only=True)
class _Timed:
    """How a task ran (not part of the result): its wall and CPU seconds, the process that
    ran it and that process's peak RSS so far."""

    seconds: float = 0.0
    cpu_seconds: float = 0.0
    pid: int = 0
    peak_rss_mib: float = 0.0


def _timed(t0: float, cpu0: float) -> dict:
    """:class:`_Timed` fields of a task started at ``perf_counter() == t0`` and
    ``process_time() == cpu0``."""
    return {"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - cpu0,
            "pid": os.getpid(), "peak_rss_mib": _peak_rss_mib()}


@dataclass(frozen=True)
class ChunkDone(_Timed):
    """A written chunk: its index, the SHA-256 of its chunk and state files, and the state at
    its end (``PolicyState.to_dict()``, small: what a Dask task hands to the next one), and
    how :func:`run_chunk` (or the merge) ran."""

    k: int
    chunk_sha256: str
    state_sha256: str
    state: dict
    #: Terminal partitions the chunk was computed in (1: whole); then the timings above are
    #: the merge's, each partition's are in ``part_seconds``.
    partitions: int = 1
    part_seconds: tuple[float, ...] = ()


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


def _start_state(start, ids: np.ndarray, k: int) -> PolicyState:
    """Chunk ``k``'s start state from what a task was given (see :func:`run_chunk`)."""
    if start is None and k > 0:
        raise ValueError(f"chunk {k}: the policy state at its start (chunk {k - 1}'s) is needed")
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


def _simulate_window(sc, con, ground, policy, faults, k: int, state: PolicyState):
    """The per-terminal phase of chunk ``k`` (:func:`~leotwin.analytics.simulate.terminal_phase`)
    for the terminals of ``ground`` from the policy state at its start: ``(phase, state at its
    end before the chunk's usage, the chunk's times)``."""
    times = sc.times()
    a, b = chunk_bounds(times.size, sc.chunk_steps)[k]
    ids = ground.terminals["terminal"].astype(str).to_numpy()
    window = times[a:b]
    decisions = None
    if policy is not None:
        decisions, state = decide(policy, list(ids), window, ground, as_of=sc.as_of(),
                                  state=state, return_state=True)
    else:
        state = _advance(None, ids, window, ground, state, None)
    positions = sc.positions(window, con)
    phase = terminal_phase(positions, ground, policy=policy, faults=faults,
                           config=sc.network_config(), as_of=sc.as_of(),
                           window=(times[0], times[-1]), decisions=decisions)
    return phase, state, window


def _finish_chunk(sc, ground, policy, k: int, out_dir: str, phase, state: PolicyState,
                  window) -> tuple[str, str, PolicyState]:
    """Chunk ``k`` from its per-terminal phase for all terminals: the shared phase
    (capacity and what depends on it, :func:`~leotwin.analytics.simulate.shared_phase`), the
    chunk's usage added to ``state``, the chunk and state files written. Returns their
    SHA-256 and the end state."""
    result, codes = shared_phase(phase, ground, config=sc.network_config(), strings=False)
    if policy is not None:
        ids = ground.terminals["terminal"].astype(str).to_numpy()
        state = _add_usage(sc, policy, ids, k, state, window, result[
            "throughput_mbps"].transpose("time", "terminal").to_numpy())
    return *_write_chunk(out_dir, k, _long_table(result, codes), state), state


def _add_usage(sc, policy, ids, k: int, state: PolicyState, window,
               throughput_mbps: np.ndarray) -> PolicyState:
    """The chunk's delivered volume (``throughput_mbps`` (time, terminal)) added to the
    quota state of the metered terminals (module docstring)."""
    if policy is None:
        return state
    times = sc.times()
    a, b = chunk_bounds(times.size, sc.chunk_steps)[k]
    dur_s = _step_durations_s(times, float(sc.spec.time.step_s))[a:b]
    return state.add_usage(window, throughput_mbps, dur_s,
                           metered_terminals(policy, list(ids), as_of=sc.as_of()))


def _write_chunk(out_dir: str, k: int, table: pd.DataFrame, state: PolicyState
                 ) -> tuple[str, str]:
    """Chunk ``k``'s table and end state, each written atomically; their SHA-256."""
    chunks = Path(out_dir) / CHUNK_DIR
    text = _state_text(state)
    _write_atomic(chunks / STATE_FILE.format(k=k),
                  lambda p: p.write_text(text, encoding="utf-8"))
    _write_atomic(chunks / CHUNK_FILE.format(k=k), lambda p: table.to_parquet(p,
                                                                              **_CHUNK_PARQUET))
    return _sha256(chunks / CHUNK_FILE.format(k=k)), _sha256(chunks / STATE_FILE.format(k=k))


def run_chunk(scenario_path: str, document_json: str, digest: str, k: int, out_dir: str,
              start: ChunkDone | dict | PolicyState | None = None) -> ChunkDone:
    """Compute chunk ``k`` from the policy state at its start (``start``: the previous chunk's
    :class:`ChunkDone`, a state, or None for chunk 0) and write it and its end state. Runs in
    any process."""
    t0, cpu0 = time.perf_counter(), time.process_time()
    sc, con, ground, policy, faults = _worker_inputs(scenario_path, document_json, digest)
    ids = ground.terminals["terminal"].astype(str).to_numpy()
    phase, state, window = _simulate_window(sc, con, ground, policy, faults, k,
                                            _start_state(start, ids, k))
    *sums, state = _finish_chunk(sc, ground, policy, k, out_dir, phase, state, window)
    return ChunkDone(k, *sums, state.to_dict(), **_timed(t0, cpu0))


# ----------------------------------------------------------------------------- partitions

PART_FILE = "part-{k:05d}-{p:04d}.npz"
#: Environment variable read when ``run(partition_terminals=None)``.
PARTITION_ENV = "LEOTWIN_PARTITION_TERMINALS"


@dataclass(frozen=True)
class PartDone(_Timed):
    """A computed terminal partition of a chunk: its file holds the partition's per-terminal
    phase (:class:`~leotwin.analytics.simulate.TerminalPhase`); ``state`` its terminals'
    policy state at the chunk's end, before the chunk's usage."""

    k: int
    p: int
    state: dict


def partition_bounds(n_term: int, partition_terminals: int | None) -> list[tuple[int, int]]:
    """Consecutive terminal ranges of at most ``partition_terminals`` (as even as possible);
    one range (no partitioning) when ``n_term`` does not exceed it or it is None."""
    if not partition_terminals or n_term <= partition_terminals:
        return [(0, n_term)]
    n = -(-n_term // int(partition_terminals))
    edges = [n_term * i // n for i in range(n + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))


def coupling(sc) -> str | None:
    """Why the scenario's terminals cannot be simulated in separate partitions (None: they
    can) — see the module docstring, "Terminal partitions"."""
    cfg = sc.network_config().resolved()
    if cfg.policy == "least_loaded":
        return "network.policy least_loaded balances terminals across satellites"
    return None


def _ground_part(ground, a: int, b: int):
    """The ground segment with terminals ``a:b`` only (their tracks; every gateway, PoP)."""
    terms = ground.terminals.iloc[a:b].reset_index(drop=True)
    tracks = ground.tracks
    if tracks is not None:
        tracks = tracks[tracks["terminal"].isin(terms["terminal"])].reset_index(drop=True)
    return replace(ground, terminals=terms, tracks=tracks)


def _state_part(state: PolicyState, a: int, b: int) -> PolicyState:
    return PolicyState(state.terminal[a:b], state.last_step, state.roaming_days[a:b],
                       state.outside_today[a:b], state.used_gb[a:b])


def run_partition(scenario_path: str, document_json: str, digest: str, k: int, p: int,
                  partition_terminals: int, out_dir: str,
                  start: ChunkDone | dict | PolicyState | None = None) -> PartDone:
    """Partition ``p`` of chunk ``k`` (terminals :func:`partition_bounds` ``[p]``) from the
    chunk's start state (all terminals, as for :func:`run_chunk`): its per-terminal phase,
    written as ``chunks/part-KKKKK-PPPP.npz``. Runs in any process."""
    t0, cpu0 = time.perf_counter(), time.process_time()
    sc, con, ground, policy, faults = _worker_inputs(scenario_path, document_json, digest)
    ids = ground.terminals["terminal"].astype(str).to_numpy()
    a, b = partition_bounds(ids.size, partition_terminals)[p]
    phase, state, _ = _simulate_window(sc, con, _ground_part(ground, a, b), policy, faults, k,
                                       _state_part(_start_state(start, ids, k), a, b))

    def save(path: Path) -> None:
        with open(path, "wb") as f:
            phase.save(f)

    _write_atomic(Path(out_dir) / CHUNK_DIR / PART_FILE.format(k=k, p=p), save)
    return PartDone(k, p, state.to_dict(), **_timed(t0, cpu0))


def merge_partitions(scenario_path: str, document_json: str, digest: str, k: int,
                     out_dir: str, parts: list[PartDone]) -> ChunkDone:
    """Join chunk ``k``'s partitions (in terminal order) and finish the chunk on all its
    terminals as :func:`run_chunk` does (the shared phase: capacity, congestion, throughput,
    the jamming slowdown, causes; the usage) — the same chunk and state files, byte for byte —
    and remove the partition files."""
    t0, cpu0 = time.perf_counter(), time.process_time()
    sc, _, ground, policy, _ = _worker_inputs(scenario_path, document_json, digest)
    parts = sorted(parts, key=lambda d: d.p)
    chunks = Path(out_dir) / CHUNK_DIR
    files = [chunks / PART_FILE.format(k=k, p=d.p) for d in parts]
    phase = TerminalPhase.join([TerminalPhase.load(f) for f in files])
    states = [PolicyState.from_dict(d.state) for d in parts]
    state = PolicyState(np.concatenate([x.terminal for x in states]), states[0].last_step,
                        np.concatenate([x.roaming_days for x in states]),
                        np.concatenate([x.outside_today for x in states]),
                        np.concatenate([x.used_gb for x in states]))
    times = sc.times()
    a, b = chunk_bounds(times.size, sc.chunk_steps)[k]
    *sums, state = _finish_chunk(sc, ground, policy, k, out_dir, phase, state, times[a:b])
    for f in files:
        f.unlink(missing_ok=True)
    return ChunkDone(k, *sums, state.to_dict(), len(parts), tuple(d.seconds for d in parts),
                     **_timed(t0, cpu0))


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


def _partition_setting(partition_terminals: int | None, sc) -> int | None:
    """The partition size asked for: ``partition_terminals``, else
    ``LEOTWIN_PARTITION_TERMINALS``, else the scenario's ``outputs.partition_terminals``."""
    if partition_terminals is None:
        env = os.environ.get(PARTITION_ENV, "").strip()
        if not env:
            return sc.partition_terminals
        try:
            partition_terminals = int(env)
        except ValueError:
            raise ValueError(f"{PARTITION_ENV}={env!r}: expected a number of terminals"
                             ) from None
    if int(partition_terminals) < 1:
        raise ValueError(f"partition_terminals must be >= 1, got {partition_terminals!r}")
    return int(partition_terminals)


def run(scenario, out_dir: str | Path, *, resume: bool = True, dask: str | None = None,
        report: bool | None = None, progress: Callable[[int, int], None] | None = None,
        max_chunks: int | None = None, partition_terminals: int | None = None) -> Run:
    """``leotwin.run(scenario) -> Run``: run a scenario (object or YAML path) into ``out_dir``.

    Finished chunks recorded in ``chunks/progress.json`` for the same scenario hash are kept
    (``resume``); a different scenario in the same directory is refused. ``max_chunks`` stops
    after that many new chunks (for tests and partial runs). The policy state is carried from
    chunk to chunk (module docstring). The run directory
    (:func:`leotwin.analytics.runio.write_run` layout) is written chunk by chunk while the
    chunks run, and at the end, if ``report``, the HTML report. ``partition_terminals``
    (default: ``LEOTWIN_PARTITION_TERMINALS``, else the scenario's
    ``outputs.partition_terminals``, else none): split chunks of more terminals than that into
    terminal partitions (module docstring, "Terminal partitions"); the files are the same
    either way.
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
    remaining = [k for k in range(len(bounds)) if k not in done_set]
    todo = remaining if max_chunks is None else remaining[:max_chunks]
    parts = _partitions(sc, _partition_setting(partition_terminals, sc))
    if progress:
        progress(len(done), len(bounds))
    # This call can finish the run: assemble the directory while the chunks run.
    asm = _Assembler(sc, out) if len(todo) == len(remaining) else None

    def record(c: ChunkDone) -> None:
        log.debug("chunk %d: %.2f s, %.2f s CPU, process %d, peak RSS %.0f MiB, %d "
                  "partition(s)", c.k, c.seconds, c.cpu_seconds, c.pid, c.peak_rss_mib,
                  c.partitions, extra={"chunk_done": c})
        prog["chunks"][str(c.k)] = c.chunk_sha256
        prog["states"][str(c.k)] = c.state_sha256
        _write_progress(prog_path, prog)
        if progress:
            progress(len(prog["chunks"]), len(bounds))
        if asm is not None:
            asm.ready(c.k)

    def resumed() -> None:   # chunks finished by an earlier call, into the directory first
        if asm is not None:
            for k in done:
                asm.ready(k)

    args = (str(sc.source_path), json.dumps(sc.document, sort_keys=True, default=str), digest)
    try:
        if dask:
            _run_on_dask(dask, sc, args, todo, done_set, str(out), record, resumed, parts)
        else:
            resumed()
            last: ChunkDone | None = None
            for k in todo:  # over time chunks, in order: each starts from its predecessor's
                start = (None if k == 0 else last.state if last is not None and last.k == k - 1
                         else _read_state(chunks, k - 1))
                last = _chunk_in_process(args, k, str(out), start, parts)
                record(last)
    except BaseException:
        if asm is not None:
            asm.abort()
        raise
    result = Run(out, sc, len(prog["chunks"]), len(bounds))
    if result.complete:
        t0 = time.perf_counter()
        _finish(result, sc, report if report is not None else sc.report, asm)
        log.debug("run directory finished %.1f s after the last chunk",
                  time.perf_counter() - t0, extra={"finish_s": time.perf_counter() - t0})
    elif asm is not None:
        asm.abort()
    return result


def _partitions(sc, partition_terminals: int | None) -> int | None:
    """The partition size to use: None when not asked for, not needed (few terminals) or not
    exact for this scenario (:func:`coupling`, logged)."""
    n_term = len(sc.ground().terminals)
    if partition_terminals is None or n_term <= partition_terminals:
        return None
    why = coupling(sc)
    if why is not None:
        log.warning("terminal partitions not used: %s, so partitions would not give the same "
                    "result; chunks run whole", why)
        return None
    return partition_terminals


def _chunk_in_process(args, k: int, out_dir: str, start, parts: int | None) -> ChunkDone:
    if parts is None:
        return run_chunk(*args, k, out_dir, start)
    sc = _worker_inputs(*args)[0]
    n = len(partition_bounds(len(sc.ground().terminals), parts))
    done = [run_partition(*args, k, p, parts, out_dir, start) for p in range(n)]
    return merge_partitions(*args, k, out_dir, done)


class _Assembler:
    """The run directory written from the chunk files in chunk order, each chunk as soon as it
    and every chunk before it are done (:meth:`ready`); :meth:`close` writes the rest."""

    def __init__(self, sc, out: Path):
        from .analytics.runio import RunWriter, _latest_policy

        terms = sc.ground().terminals
        terminals = pd.DataFrame({"terminal": terms["terminal"].astype(str).to_numpy(),
                                  "account": terms["account"].astype(str).to_numpy(),
                                  "lat_deg": terms["lat_deg"].to_numpy(np.float64),
                                  "lon_deg": terms["lon_deg"].to_numpy(np.float64)})
        policy = _latest_policy(sc.policy())
        self.out = out
        self.writer = RunWriter(out, terminals,
                                list(policy.contracts) if policy is not None else [])
        times = sc.times()
        self.bounds = chunk_bounds(times.size, sc.chunk_steps)
        self.dur_s = _step_durations_s(times, float(sc.spec.time.step_s))
        self.next = 0
        self.waiting: set[int] = set()

    def ready(self, k: int) -> None:
        self.waiting.add(k)
        while self.next in self.waiting:   # over the chunks now in order
            self.waiting.discard(self.next)
            t0, cpu0 = time.perf_counter(), time.process_time()
            table = pq.read_table(self.out / CHUNK_DIR / CHUNK_FILE.format(k=self.next))
            self.writer.add(table, float(self.dur_s[self.bounds[self.next][1] - 1]))
            log.debug("chunk %d assembled: %.3f s, %.3f s CPU", self.next,
                      time.perf_counter() - t0, time.process_time() - cpu0,
                      extra={"assembled": (self.next, time.perf_counter() - t0,
                                           time.process_time() - cpu0)})
            self.next += 1

    def close(self) -> None:
        if self.next != len(self.bounds):
            raise RuntimeError(f"run directory: chunk {self.next} was never assembled")
        self.writer.close()

    def abort(self) -> None:
        self.writer.abort()


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
                 record, submitted: Callable[[], None] = lambda: None,
                 parts: int | None = None) -> None:
    from dask.distributed import Client, as_completed

    if not todo:
        submitted()
        return
    ground, policy = sc.ground(), sc.policy()
    ids = ground.terminals["terminal"].astype(str).to_numpy()
    chained = policy is not None and bool(metered_terminals(policy, list(ids),
                                                            as_of=sc.as_of()).any())
    chunks = Path(out_dir) / CHUNK_DIR
    starts = {} if chained else _state_pass(sc, todo, done, chunks)
    n_parts = len(partition_bounds(ids.size, parts)) if parts else 1
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
            if parts is None:
                fut = client.submit(run_chunk, *args, k, out_dir, start, pure=False)
            else:   # the chunk's partitions, then their merge
                pieces = [client.submit(run_partition, *args, k, p, parts, out_dir, start,
                                        pure=False) for p in range(n_parts)]
                fut = client.submit(merge_partitions, *args, k, out_dir, pieces, pure=False)
            previous[k] = fut
            futures.append(fut)
        submitted()   # the driver's own work (assembling resumed chunks) while workers run
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


def _finish(result: Run, sc, report: bool, asm: _Assembler | None = None) -> None:
    """Finish the run directory (:class:`_Assembler`; from the chunk files when none was
    assembling during the run), then the assumptions and the report."""
    if asm is None:
        asm = _Assembler(sc, result.out_dir)
        for k in range(len(asm.bounds)):   # over chunks, in order
            asm.ready(k)
    try:
        asm.close()
    except BaseException:
        asm.abort()
        raise
    for stale in (result.out_dir / CHUNK_DIR).glob("part-*"):   # of a killed call
        stale.unlink(missing_ok=True)
    write_assumptions(sc, result.out_dir)
    if report:
        from .analytics.report import write_report

        result.report_path = write_report(result.out_dir)
