"""A simulation run on disk: a directory of Parquet tables and a JSON manifest.

:func:`write_run` turns a :class:`~leotwin.analytics.simulate.SimulationRun` into a run
directory; :func:`read_run` and :func:`read_manifest` read one back. This module is an I/O edge:
every path comes from the caller (never the working directory), and nothing is printed.

Streaming: :class:`RunWriter` writes the same directory from a timeline given one window (a
run's chunk) at a time — ``timeline.parquet`` grows by one or more Parquet row groups per window
(``pyarrow.parquet.ParquetWriter``) while intervals, usage and contract availability are
accumulated with small carried state (:class:`~leotwin.analytics.intervals.IntervalAccumulator`
— which moves finished intervals to a spill file —,
:class:`~leotwin.analytics.sla.UsageAccumulator`,
:class:`~leotwin.analytics.sla.ContractAccumulator`), so memory is bounded by one window, not the
run. A window's string columns stay dictionary-encoded from end to end: a chunk file's
dictionaries are written to the timeline as they are, and the outage intervals are split on
their integer codes (:class:`~leotwin.analytics.intervals.CodedGrid`), so no string is built
per row. :func:`write_run` is one window through it. :func:`iter_timeline` reads the timeline
back one row group at a time.

Layout of a run directory (format version :data:`RUN_FORMAT_VERSION`):

``timeline.parquet``
    the long (time, terminal) table: ``time, terminal, account, served, throughput_mbps, rtt_ms,
    sat, gateway, cause, cause_bits, rule, dish_state`` — one row per step and terminal, in time
    order then terminal order (``time`` is the step start, UTC ``datetime64[ns]``); read back
    as :data:`TIMELINE_SCHEMA` (string columns as strings, dictionary-encoded in the file;
    column statistics for ``time`` only).
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
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..policy.models import PolicyHistory
from .intervals import CodedGrid, IntervalAccumulator, _step_durations_s, _utc_times
from .simulate import PRIMARY_ORDER, SimulationRun
from .sla import ContractAccumulator, UsageAccumulator

__all__ = ["RUN_FILES", "RUN_FORMAT_VERSION", "TIMELINE_COLUMNS", "TIMELINE_SCHEMA", "RunWriter",
           "iter_timeline", "read_manifest", "read_run", "run_step_hours", "timeline_rows",
           "write_run"]

log = logging.getLogger(__name__)

#: Version of the run-directory layout; bumped on incompatible changes.
RUN_FORMAT_VERSION = 1
MANIFEST = "manifest.json"
#: Table name → file name of the Parquet tables of a run directory.
RUN_FILES = {"timeline": "timeline.parquet", "terminals": "terminals.parquet",
             "intervals": "intervals.parquet", "contracts": "contracts.parquet",
             "usage": "usage.parquet"}
#: The report's timeline tables, folded window by window while the run is written (so a
#: report never has to read the timeline again): table name → file name.
AGGREGATE_FILES = {"availability": "timeline_availability.parquet",
                   "rules": "timeline_rules.parquet", "causes": "timeline_causes.parquet",
                   "dish_states": "timeline_dish_states.parquet"}
TIMELINE_COLUMNS = ("time", "terminal", "account", "served", "throughput_mbps", "rtt_ms", "sat",
                    "gateway", "cause", "cause_bits", "rule", "dish_state")
#: The timeline's string columns. They are written dictionary-encoded straight from the chunks'
#: dictionaries (:data:`_WRITE_SCHEMA`): no string is built or hashed per row, and Parquet
#: stores them dictionary-encoded anyway.
_STRING_COLUMNS = ("terminal", "account", "gateway", "cause", "rule", "dish_state")
_DICT = pa.dictionary(pa.int32(), pa.string())
#: Arrow schema of ``timeline.parquet`` as read back: the string columns are plain strings
#: (the file carries no Arrow schema, so readers never see them as dictionaries/categoricals).
TIMELINE_SCHEMA = pa.schema([
    ("time", pa.timestamp("ns")), ("terminal", pa.string()),
    ("account", pa.string()), ("served", pa.bool_()), ("throughput_mbps", pa.float64()),
    ("rtt_ms", pa.float64()), ("sat", pa.int64()), ("gateway", pa.string()),
    ("cause", pa.string()), ("cause_bits", pa.uint8()), ("rule", pa.string()),
    ("dish_state", pa.string())])
_WRITE_SCHEMA = pa.schema([pa.field(f.name, _DICT if f.name in _STRING_COLUMNS else f.type)
                           for f in TIMELINE_SCHEMA])
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


def _empty_contracts() -> pd.DataFrame:
    from .sla import CONTRACT_COLUMNS

    return pd.DataFrame({c: pd.Series([], dtype=t) for c, t in zip(
        CONTRACT_COLUMNS, (object, object, float, float, float, bool, float, float),
        strict=True)})


def _dictionary_table(window: pa.Table) -> pa.Table:
    """``window``'s :data:`TIMELINE_COLUMNS` in :data:`_WRITE_SCHEMA`, one chunk per column:
    dictionary string columns keep their dictionaries (only the index type is widened), plain
    string columns are dictionary-encoded."""
    missing = [c for c in TIMELINE_COLUMNS if c not in window.column_names]
    if missing:
        raise ValueError(f"window: lacks columns {missing}")
    cols = []
    for field in _WRITE_SCHEMA:   # over the 12 columns
        col = window.column(field.name)
        if field.name in _STRING_COLUMNS:
            if not pa.types.is_dictionary(col.type):
                col = pc.dictionary_encode(col.cast(pa.string()))
            col = col.cast(_DICT)
        else:
            col = col.cast(field.type)
        cols.append(col.combine_chunks())   # chunks' dictionaries unified into one
    return pa.Table.from_arrays(cols, schema=_WRITE_SCHEMA)


def _coded(column: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """``(names, codes)`` of a dictionary column (of one chunk, as :func:`_dictionary_table`
    makes it): names as an object array with None last for missing values (whose code is that
    last index)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    names = np.asarray(column.dictionary.to_pylist() + [None], dtype=object)
    codes = column.indices.fill_null(len(names) - 1).to_numpy().astype(np.int64, copy=False)
    return names, codes


class RunWriter:
    """Write a run directory from its timeline, one window of whole time steps at a time.

    ``terminals``: DataFrame ``terminal, account, lat_deg, lon_deg`` in the timeline's terminal
    order (every window holds, for each of its steps, one row per terminal in this order);
    ``contracts``: the policy's contracts. Call :meth:`add` for consecutive windows, then
    :meth:`close`; until then the directory holds a partial ``timeline.parquet`` (written to a
    temporary name, renamed on close) and no manifest. Layout: module docstring.
    """

    def __init__(self, out_dir: str | Path, terminals: pd.DataFrame,
                 contracts: Sequence = ()):
        out = Path(out_dir)
        if out.exists() and not out.is_dir():
            raise ValueError(f"{out}: exists and is not a directory; a run is written to a "
                             "directory")
        out.mkdir(parents=True, exist_ok=True)
        self.out = out
        self.terminals = pd.DataFrame({
            "terminal": terminals["terminal"].to_numpy().astype(str).astype(object),
            "account": terminals["account"].to_numpy().astype(str).astype(object),
            "lat_deg": terminals["lat_deg"].to_numpy(np.float64),
            "lon_deg": terminals["lon_deg"].to_numpy(np.float64)})
        ids = self.terminals["terminal"].to_numpy().astype(str)
        accounts = self.terminals["account"].to_numpy().astype(str)
        self._ids = ids
        self._id_index = pd.Index(ids)
        # finished intervals go to a spill file as the windows come, not kept until close()
        self._intervals = IntervalAccumulator(
            ids.astype(object), spill=out / (RUN_FILES["intervals"] + ".spill.tmp"))
        self._usage = UsageAccumulator(ids, accounts)
        self.contracts = list(contracts)
        self._contracts = ContractAccumulator(self.terminals["lat_deg"].to_numpy(),
                                              self.terminals["lon_deg"].to_numpy(), accounts,
                                              self.contracts) if self.contracts else None
        from .report import _AGG_COLUMNS, _TimelineAggregates  # report builds on runio

        self._report_columns = list(_AGG_COLUMNS)  # what the report's tables are folded from
        self._report = _TimelineAggregates(list(PRIMARY_ORDER))
        self._tmp = out / (RUN_FILES["timeline"] + ".tmp")
        # store_schema=False: readers get the string columns as strings (TIMELINE_SCHEMA),
        # not as the dictionaries they are written from. Dictionary pages only where values
        # repeat (strings, times, satellites, cause bits; rates and RTTs are nearly all
        # distinct: plain). Statistics for the time only: min/max of strings cost more than
        # the rest of the write together (measured 0.07 of 0.13 s per 576,000-row chunk) and
        # prune nothing — every row group holds every terminal and account.
        self._writer = pq.ParquetWriter(
            self._tmp, _WRITE_SCHEMA, store_schema=False,
            use_dictionary=[*_STRING_COLUMNS, "time", "sat", "cause_bits"],
            write_statistics=["time"])
        self._first: np.datetime64 | None = None
        self._last: np.datetime64 | None = None
        self._steps = 0
        self._step_s: float | None = None

    def add(self, window: pa.Table | pd.DataFrame, step_s: float) -> None:
        """Append one window: a table with :data:`TIMELINE_COLUMNS` (Arrow or pandas;
        dictionary/categorical string columns are taken as they are, plain ones encoded),
        ``n_steps × n_terminals`` rows in time then terminal order. ``step_s`` is the duration
        of its last step (the spacing to the next window's first step)."""
        if isinstance(window, pd.DataFrame):
            window = pa.Table.from_pandas(window, preserve_index=False)
        table = _dictionary_table(window)
        n_term = self._ids.size
        if table.num_rows == 0:
            return
        if n_term == 0 or table.num_rows % n_term:
            raise ValueError(f"window: {table.num_rows} rows is not whole steps of {n_term} "
                             "terminals")
        n_t = table.num_rows // n_term
        t_all = table.column("time").to_numpy().astype("datetime64[ns]").reshape(n_t, n_term)
        times = t_all[:, 0]
        names, codes = _coded(table.column("terminal"))
        # terminal order checked on integer codes: position of each row's terminal in the run
        pos = self._id_index.get_indexer(names.astype(str))
        if ((t_all != times[:, None]).any() or (codes < 0).any() or (pos[codes] < 0).any()
                or (pos[codes].reshape(n_t, n_term) != np.arange(n_term)[None, :]).any()):
            raise ValueError("window: rows must be in time order, then in the terminal order "
                             "of the run's terminals table")
        if self._last is not None and times[0] <= self._last:
            raise ValueError(f"window starts at {times[0]}, not after the previous window's "
                             f"last step {self._last}")
        dur_s = _step_durations_s(times, step_s)

        def grid(name: str) -> np.ndarray:
            return np.asarray(table.column(name).to_numpy()).reshape(n_t, n_term)

        def coded(name: str) -> CodedGrid:
            names, codes = _coded(table.column(name))
            return CodedGrid(names, codes.reshape(n_t, n_term))

        served = grid("served").astype(bool)
        self._intervals.add(times, ~served, cause=coded("cause"), rule=coded("rule"),
                            step_s=float(dur_s[-1]))
        self._usage.add(times, grid("throughput_mbps").astype(np.float64), dur_s)
        if self._contracts is not None:
            self._contracts.add(times, served, dur_s)
        self._report.add(table.select(self._report_columns).to_pandas(),
                         np.repeat(dur_s / 3600.0, n_term))
        self._writer.write_table(table)
        if self._first is None:
            self._first = times[0]
        self._last = times[-1]
        self._steps += n_t
        self._step_s = float(dur_s[-1])

    def abort(self) -> None:
        """Give up the directory being written: close and remove the temporary files."""
        self._writer.close()
        self._tmp.unlink(missing_ok=True)
        self._intervals.discard()

    def close(self) -> Path:
        """Finish the timeline and write the other tables and the manifest; returns the
        directory."""
        self._writer.close()
        if self._steps == 0:
            self._tmp.unlink(missing_ok=True)
            self._intervals.discard()
            raise ValueError("run: the result has no time steps; nothing to write")
        self._tmp.replace(self.out / RUN_FILES["timeline"])
        n_intervals = self._intervals.write(self.out / RUN_FILES["intervals"])
        tables = {"terminals": self.terminals,
                  "contracts": (self._contracts.table() if self._contracts is not None
                                else _empty_contracts()),
                  "usage": self._usage.table()}
        for name, frame in tables.items():
            frame.to_parquet(self.out / RUN_FILES[name], index=False)
        for name, frame in self._report.tables().items():
            frame.to_parquet(self.out / AGGREGATE_FILES[name], index=False)
        end = self._last + np.timedelta64(int(round(self._step_s * 1e9)), "ns")
        manifest = {
            "format": "leotwin-run",
            "format_version": RUN_FORMAT_VERSION,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00",
                                                                                   "Z"),
            "leotwin_version": _leotwin_version(),
            "time_start": f"{np.datetime_as_string(self._first, 's')}Z",
            "time_end": f"{np.datetime_as_string(end, 's')}Z",
            "step_s": self._step_s,
            "counts": {"steps": int(self._steps), "terminals": int(self._ids.size),
                       "accounts": int(pd.unique(self.terminals["account"]).size),
                       "intervals": n_intervals, "contracts": len(self.contracts)},
            "primary_order": list(PRIMARY_ORDER),
            "files": {**RUN_FILES},
            "aggregates": {**AGGREGATE_FILES},
        }
        (self.out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n",
                                         encoding="utf-8")
        log.info("wrote run %s (%d steps × %d terminals)", self.out, self._steps,
                 self._ids.size)
        return self.out


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
    step = float(_step_durations_s(times, step_s)[-1])
    terms = result["terminal"].to_numpy().astype(str)
    ground_terms = run.ground.terminals.set_index(
        run.ground.terminals["terminal"].astype(str))
    terminals = pd.DataFrame({
        "terminal": terms, "account": result["account"].to_numpy().astype(str),
        "lat_deg": ground_terms["lat_deg"].reindex(terms).to_numpy(np.float64),
        "lon_deg": ground_terms["lon_deg"].reindex(terms).to_numpy(np.float64)})
    policy = _latest_policy(run.policy)
    writer = RunWriter(out, terminals, list(policy.contracts) if policy is not None else [])
    writer.add(_timeline(result), step)
    return writer.close()


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


def read_run(run_dir: str | Path, *, timeline: bool = True) -> dict[str, pd.DataFrame]:
    """The tables of the run directory ``run_dir`` by name (``timeline``, ``terminals``,
    ``intervals``, ``contracts``, ``usage``); the manifest comes from :func:`read_manifest`,
    which this calls first to validate the directory. A missing table raises
    FileNotFoundError naming the file; an unreadable one ValueError naming the file.

    ``timeline=False`` leaves the (large) timeline out — its columns are still checked from the
    file's schema; read it with :func:`iter_timeline`."""
    read_manifest(run_dir)
    root = Path(run_dir)
    tables = {}
    for name, file in RUN_FILES.items():
        path = root / file
        if not path.is_file():
            raise FileNotFoundError(errno.ENOENT, f"run table {name!r} missing", str(path))
        try:
            if name == "timeline" and not timeline:
                columns = pq.read_schema(path).names
            else:
                tables[name] = pd.read_parquet(path)
                columns = tables[name].columns
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise ValueError(f"{path}: cannot read run table {name!r} ({exc})") from None
        if name == "timeline":
            missing = [c for c in TIMELINE_COLUMNS if c not in columns]
            if missing:
                raise ValueError(f"{path}: lacks columns {missing}")
    return tables


def iter_timeline(run_dir: str | Path, columns: Sequence[str] | None = None, *,
                  dictionary: bool = False) -> Iterator[pd.DataFrame]:
    """The run's timeline one Parquet row group at a time (``columns``: a subset), in file
    order — memory bounded by a row group (a run's chunk), not the run. With ``dictionary``
    the string columns come as categoricals (no string per row: several times faster to
    read, for readers that count by value)."""
    path = Path(run_dir) / RUN_FILES["timeline"]
    try:
        f = pq.ParquetFile(path)
        if dictionary:
            strings = [fld.name for fld in f.schema_arrow
                       if pa.types.is_string(fld.type) or pa.types.is_large_string(fld.type)
                       or pa.types.is_dictionary(fld.type)]
            f = pq.ParquetFile(path, read_dictionary=strings)
    except (OSError, pa.ArrowException) as exc:
        raise ValueError(f"{path}: cannot read run table 'timeline' ({exc})") from None
    for i in range(f.num_row_groups):   # over row groups (chunks), not rows
        yield f.read_row_group(i, columns=list(columns) if columns else None).to_pandas()


def timeline_rows(run_dir: str | Path) -> int:
    """Number of rows of the run's timeline, from the Parquet footer."""
    return int(pq.ParquetFile(Path(run_dir) / RUN_FILES["timeline"]).metadata.num_rows)


def run_step_hours(timeline: pd.DataFrame, step_s: float) -> np.ndarray:
    """Duration in hours of the step of every row of ``timeline`` (the spacing to the next step
    time, ``step_s`` for the last step), as in :mod:`leotwin.analytics.intervals`."""
    times = np.unique(timeline["time"].to_numpy(dtype="datetime64[ns]"))
    if times.size == 0:
        return np.zeros(len(timeline))
    dur_h = _step_durations_s(times, step_s) / 3600.0
    return dur_h[np.searchsorted(times, timeline["time"].to_numpy(dtype="datetime64[ns]"))]
