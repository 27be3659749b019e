"""Outage intervals: per terminal, consecutive unserved steps merged into one table row.

Time semantics
--------------
``times`` are the start instants of the simulation steps, ``datetime64[ns]`` UTC (naive values
are UTC; tz-aware ones are converted), strictly increasing. Step ``i`` is taken to hold from
``times[i]`` until ``times[i + 1]``; the last step holds for ``step_s`` seconds, or, when
``step_s`` is not given, for the median spacing of ``times``. An interval's ``end`` is therefore
the instant the outage ended — the start of the first served step after it — or
``times[-1] + step`` for an outage still running at the end of the window, and ``duration_s`` is
``end - start``, i.e. the sum of the durations of its steps.

Causes and rules
----------------
When ``cause`` and/or ``rule`` are given, a change of cause (or of rule) inside a run of
unserved steps **starts a new interval**: every interval has exactly one ``cause`` and one
``rule``, those of all its steps. Missing values (None, NaN) compare equal to each other.

Everything is computed on the flattened (terminal, time) array with ``diff``-style comparisons and
``flatnonzero``; there is no Python loop over terminals or steps.

Streaming
---------
:class:`IntervalAccumulator` computes the same table window by window (a run's chunks): each
window's intervals come from :func:`outage_intervals`; an interval still open at the end of a
window (it ends at the window's end) is held back and, when the next window starts right there
with an interval of the same terminal, cause and rule, merged with it — so an outage spanning a
seam comes out as one interval, exactly as over the whole timeline. Carried state: at most one
open interval per terminal. Finished intervals (those that can no longer grow) go to a spill
file in row groups when one is given, and :meth:`IntervalAccumulator.write` sorts them into the
final table a bounded number at a time, so a long run never holds all its intervals in memory.

Labels as codes: ``cause`` and ``rule`` may be given as :class:`CodedGrid` (integer codes into a
few names, e.g. a dictionary-encoded Parquet column): intervals are split on the codes and only
the intervals' labels are looked up, with no string per step.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["INTERVAL_COLUMNS", "INTERVAL_SCHEMA", "CodedGrid", "IntervalAccumulator",
           "intervals_to_mask", "outage_intervals"]

#: Columns of the table returned by :func:`outage_intervals`, in order.
INTERVAL_COLUMNS = ("terminal", "start", "end", "duration_s", "cause", "rule")


# ----------------------------------------------------------------------------- input checks
# (shared with :mod:`leotwin.analytics.sla`)


def _utc_times(times: Any, name: str = "times") -> np.ndarray:
    """1-D strictly increasing UTC ``datetime64[ns]`` from ``times``; ValueError naming ``name``."""
    arr = np.asarray(times) if not isinstance(times, (pd.Index, pd.Series)) else times
    if np.ndim(arr) != 1:
        raise ValueError(f"{name} must be 1-D (one instant per step), got shape {np.shape(arr)}")
    try:
        idx = pd.DatetimeIndex(arr)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be UTC datetimes (datetime64[ns]): {exc}") from None
    if idx.tz is not None:
        idx = idx.tz_convert("UTC").tz_localize(None)
    if idx.hasnans:
        raise ValueError(f"{name} contains NaT")
    out = idx.as_unit("ns").to_numpy()
    if out.size > 1 and not np.all(np.diff(out.astype("int64")) > 0):
        bad = int(np.flatnonzero(np.diff(out.astype("int64")) <= 0)[0]) + 1
        raise ValueError(f"{name} must be strictly increasing; {name}[{bad}] = {out[bad]} does "
                         f"not come after {name}[{bad - 1}] = {out[bad - 1]}")
    return out


def _step_durations_s(times_ns: np.ndarray, step_s: float | None) -> np.ndarray:
    """Duration of every step in seconds (float64, shape of ``times_ns``): the spacing to the next
    time, and ``step_s`` (or the median spacing) for the last one."""
    if step_s is not None:
        step = float(step_s)
        if not np.isfinite(step) or step <= 0:
            raise ValueError(f"step_s must be a positive number of seconds, got {step_s!r}")
    n = times_ns.size
    if n == 0:
        return np.zeros(0)
    gaps_s = np.diff(times_ns.astype("int64")) / 1e9
    if step_s is None:
        if n < 2:
            raise ValueError("step_s is needed when times holds a single instant (the duration "
                             "of the last step cannot be inferred)")
        step = float(np.median(gaps_s))
    return np.concatenate([gaps_s, [step]])


def _ids(values: Any, name: str, *, unique: bool = False) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one id per terminal), got shape {arr.shape}")
    if unique and arr.size and pd.Index(arr).has_duplicates:
        dup = pd.Index(arr)[pd.Index(arr).duplicated()][0]
        raise ValueError(f"{name} must be unique; {dup!r} appears more than once")
    return arr


def _grid(values: Any, name: str, shape: tuple[int, int]) -> np.ndarray:
    arr = np.asarray(values)
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape (n_time, n_terminal) = {shape}, "
                         f"got {arr.shape}")
    return arr


def _bool_grid(values: Any, name: str, shape: tuple[int, int]) -> np.ndarray:
    arr = _grid(values, name, shape)
    if arr.dtype != bool:
        raise ValueError(f"{name} must be boolean, got dtype {arr.dtype}")
    return arr


# ----------------------------------------------------------------------------- intervals


@dataclass(frozen=True)
class CodedGrid:
    """A (n_time, n_term) grid of labels given as integer ``codes`` into ``names`` (``label =
    names[code]``), e.g. a dictionary-encoded Parquet column or the ``(names, codes)`` pairs of
    :attr:`~leotwin.analytics.simulate.SimulationRun.codes`. :func:`outage_intervals` splits
    on the codes (no hashing of strings per step) and looks the names up only for the
    intervals it returns. ``names`` may hold None (a missing label) and repeated names (equal
    labels are equal, whatever their code)."""

    names: Any
    codes: Any


def _codes(flat: np.ndarray) -> np.ndarray:
    """Integer codes equal where ``flat`` values are equal (None/NaN all equal to each other)."""
    if flat.dtype == bool or np.issubdtype(flat.dtype, np.integer):
        return flat                              # already codes: skip hashing
    codes, _ = pd.factorize(flat, use_na_sentinel=True)
    return codes


def _key(value: Any, name: str, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
    """``(codes or values grid, names)``: a :class:`CodedGrid` as canonical codes (equal
    labels, equal code) and its names; anything else as the checked grid and None."""
    if not isinstance(value, CodedGrid):
        return _grid(value, name, shape), None
    names = np.asarray(value.names, dtype=object)
    codes = _grid(value.codes, f"{name}.codes", shape)
    if not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"{name}.codes must be integers, got dtype {codes.dtype}")
    if codes.size and (codes.min() < 0 or codes.max() >= names.size):
        raise ValueError(f"{name}.codes must index {name}.names (0..{names.size - 1})")
    canon, uniq = pd.factorize(names, use_na_sentinel=False)   # a few names, not the grid
    return canon[codes], np.asarray(uniq, dtype=object)


@dataclass
class _Found:
    """Intervals as arrays: terminal index (into the ids), start and end (int64 ns UTC) and
    the cause and rule of each (values; None when not given)."""

    term: np.ndarray
    start_ns: np.ndarray
    end_ns: np.ndarray
    cause: np.ndarray
    rule: np.ndarray

    @classmethod
    def empty(cls) -> _Found:
        z = np.zeros(0, np.int64)
        return cls(z, z, z, np.zeros(0, object), np.zeros(0, object))

    def __len__(self) -> int:
        return self.term.size

    def take(self, idx: np.ndarray) -> _Found:
        return _Found(self.term[idx], self.start_ns[idx], self.end_ns[idx], self.cause[idx],
                      self.rule[idx])

    @classmethod
    def concat(cls, parts: list[_Found]) -> _Found:
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                     ("term", "start_ns", "end_ns", "cause", "rule")))


def _find(t: np.ndarray, ids: np.ndarray, u: np.ndarray, keys: dict, dur_s: np.ndarray,
          order: np.ndarray | None = None) -> _Found:
    """The core of :func:`outage_intervals` on checked inputs (``keys``: name → (grid,
    names) from :func:`_key`), sorted by terminal id then start (``order``: the terminals
    sorted by id, ``np.argsort(ids, kind="stable")``, when the caller has it)."""
    order = np.argsort(ids, kind="stable") if order is None else order
    n_time = t.size
    row = max(n_time, 1)
    # (terminal, time) order with terminals sorted by id: flat order is the output order
    u_flat = np.ascontiguousarray(u.T[order]).ravel()
    # split[k]: an interval cannot continue from flat position k-1 into k (new terminal's row,
    # or a change of cause/rule)
    split = np.zeros(u_flat.size + 1, dtype=bool)
    split[::row] = True
    split[-1] = True
    key_flat = {}
    for name, (grid, _) in keys.items():        # at most two keys, not a loop over data
        flat = np.ascontiguousarray(grid.T[order]).ravel()
        key_flat[name] = flat
        c = _codes(flat)
        split[1:-1] |= c[1:] != c[:-1]
    padded = np.concatenate([[False], u_flat, [False]])
    starts = np.flatnonzero(u_flat & (split[:-1] | ~padded[:-2]))
    lasts = np.flatnonzero(u_flat & (split[1:] | ~padded[2:]))
    t_ns = t.astype("int64")
    if n_time:      # the instant each step ends: the next time, or last time + last step
        t_end = np.concatenate([t_ns[1:], [t_ns[-1] + int(round(dur_s[-1] * 1e9))]])
    else:
        t_end = t_ns

    def col(name: str) -> np.ndarray:
        if name not in key_flat:
            return np.full(starts.size, None, dtype=object)
        values = key_flat[name][starts]
        names = keys[name][1]
        return values if names is None else names[values]

    return _Found(order[starts // row], t_ns[starts % row], t_end[lasts % row], col("cause"),
                  col("rule"))


def _checked(times: Any, ids: np.ndarray, unserved: Any, cause: Any, rule: Any,
             step_s: float | None) -> tuple[np.ndarray, np.ndarray, dict, np.ndarray]:
    t = _utc_times(times)
    shape = (t.size, ids.size)
    u = _bool_grid(unserved, "unserved", shape)
    keys = {name: _key(v, name, shape) for name, v in (("cause", cause), ("rule", rule))
            if v is not None}
    dur_s = _step_durations_s(t, step_s) if t.size else np.zeros(0)
    return t, u, keys, dur_s


def _frame(ids: np.ndarray, found: _Found, *, objects: bool = False) -> pd.DataFrame:
    """The intervals table of ``found`` (already in output order). ``objects``: the string
    columns as object arrays (as :class:`IntervalAccumulator` has always built them)."""
    start = found.start_ns.astype("datetime64[ns]")
    end = found.end_ns.astype("datetime64[ns]")
    terminal = ids[found.term]
    cause, rule = found.cause, found.rule
    if objects:
        terminal, cause, rule = (np.asarray(x, dtype=object) for x in (terminal, cause, rule))
    return pd.DataFrame({
        "terminal": terminal,
        "start": start,
        "end": end,
        "duration_s": ((found.end_ns - found.start_ns) / 1e9).astype(np.float64),
        "cause": cause,
        "rule": rule,
    }, columns=list(INTERVAL_COLUMNS))


def outage_intervals(times: Any, terminals: Any, unserved: Any, *, cause: Any = None,
                     rule: Any = None, step_s: float | None = None) -> pd.DataFrame:
    """Merge consecutive unserved steps of each terminal into intervals.

    Parameters
    ----------
    times : (n_time,) datetime64[ns] UTC, strictly increasing — step start instants.
    terminals : (n_term,) unique terminal ids.
    unserved : (n_time, n_term) bool.
    cause, rule : optional (n_time, n_term) arrays (str or int codes), or :class:`CodedGrid`
        (labels as codes into names); a change of either inside a run of unserved steps starts
        a new interval. Values at served steps are ignored.
    step_s : duration of the last step in seconds; default the median spacing of ``times``.

    Returns
    -------
    DataFrame with columns ``terminal, start, end, duration_s, cause, rule`` (see the module
    docstring for ``end``), sorted by terminal id, then start. ``cause``/``rule`` are None when
    not given; missing values come out as NA (test with ``pd.isna``). Raises ValueError, naming
    the argument, for wrong shapes, dtypes or unsorted times.
    """
    ids = _ids(terminals, "terminals", unique=True)
    t, u, keys, dur_s = _checked(times, ids, unserved, cause, rule, step_s)
    return _frame(ids, _find(t, ids, u, keys, dur_s))


def _same(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Element-wise equality where missing values (None, NaN) are equal to each other."""
    na_a, na_b = pd.isna(a), pd.isna(b)
    with np.errstate(invalid="ignore"):
        eq = np.asarray(a == b, dtype=bool) if a.size else np.zeros(0, bool)
    return (eq & ~na_a & ~na_b) | (na_a & na_b)


#: Arrow schema of ``intervals.parquet`` (what :meth:`IntervalAccumulator.write` writes).
INTERVAL_SCHEMA = pa.schema([
    ("terminal", pa.large_string()), ("start", pa.timestamp("ns")),
    ("end", pa.timestamp("ns")), ("duration_s", pa.float64()), ("cause", pa.large_string()),
    ("rule", pa.large_string())])
#: Schema of the spill file of finished intervals: the terminal as its rank in id order.
_SPILL_SCHEMA = pa.schema([
    ("rank", pa.int64()), ("start", pa.int64()), ("end", pa.int64()),
    ("cause", pa.large_string()), ("rule", pa.large_string())])
#: Finished intervals held in memory before they are written to the spill file.
SPILL_ROWS = 65_536
#: Intervals sorted in memory at once when the final table is written (a row group each).
WRITE_ROWS = 1_000_000


def _labels(values: np.ndarray) -> pa.Array:
    """Interval labels (strings, None/NaN missing) as an Arrow string array."""
    obj = np.asarray(values, dtype=object)
    missing = pd.isna(obj)
    return pa.array(np.where(missing, None, obj).astype(object), type=pa.large_string(),
                    from_pandas=True)


class IntervalAccumulator:
    """:func:`outage_intervals` fed one window of steps at a time (module docstring,
    "Streaming"); :meth:`table` gives the same table as one call over the whole timeline.

    :meth:`add` takes the arguments of :func:`outage_intervals` for one window except the
    terminals (fixed at construction) and ``step_s``, the duration of the window's last step
    (the spacing to the next window's first step; for the last window, the run's last step).

    ``spill``: a file to which finished intervals (those that can no longer grow) are written
    in row groups of :data:`SPILL_ROWS`, so that memory holds only the open intervals (at most
    one per terminal) and a bounded buffer, not every interval of a long run; :meth:`write`
    then sorts them into the final table :data:`WRITE_ROWS` at a time and removes the file.
    Without ``spill`` everything stays in memory (small runs, tests). With it, ``cause`` and
    ``rule`` must be string labels (missing: None/NaN), as in a run's timeline.
    """

    def __init__(self, terminals: Any, *, spill: str | Path | None = None):
        self.terminals = _ids(terminals, "terminals", unique=True)
        # rank of every terminal in id order: the output order, and the spill's terminal key
        self._by_rank = np.argsort(self.terminals, kind="stable")   # rank → terminal index
        self._rank = np.empty(self.terminals.size, np.int64)
        self._rank[self._by_rank] = np.arange(self.terminals.size)
        self._done: list[_Found] = []                # finished, not yet spilled
        self._done_rows = 0
        self._open = _Found.empty()                  # intervals ending at the last window's end
        self._end: int | None = None                 # end instant (ns) of the last window
        self._count = np.zeros(self.terminals.size, np.int64)   # finished intervals per terminal
        self._spill_path = None if spill is None else Path(spill)
        self._spill: pq.ParquetWriter | None = None
        self._spill_closed = False

    def add(self, times: Any, unserved: Any, *, cause: Any = None, rule: Any = None,
            step_s: float) -> None:
        t, u, keys, dur_s = _checked(times, self.terminals, unserved, cause, rule, step_s)
        if t.size == 0:
            return
        iv = _find(t, self.terminals, u, keys, dur_s, self._by_rank)
        end = int(t[-1].astype("int64")) + int(round(float(step_s) * 1e9))
        old = self._open
        if len(old) and self._end == int(t[0].astype("int64")):
            # an interval open at the seam continues into this window when the same terminal
            # is out from its first step with the same cause and rule: one interval
            slot = np.full(self.terminals.size, -1, np.int64)
            slot[old.term] = np.arange(len(old))
            first = np.flatnonzero(iv.start_ns == self._end)
            j = slot[iv.term[first]]
            first, j = first[j >= 0], j[j >= 0]
            same = _same(old.cause[j], iv.cause[first]) & _same(old.rule[j], iv.rule[first])
            iv.start_ns[first[same]] = old.start_ns[j[same]]
            keep = np.ones(len(old), bool)
            keep[j[same]] = False
            old = old.take(np.flatnonzero(keep))
        still = iv.end_ns == end
        self._finished(old)
        self._finished(iv.take(np.flatnonzero(~still)))
        self._open = iv.take(np.flatnonzero(still))
        self._end = end

    def _finished(self, found: _Found) -> None:
        if not len(found):
            return
        np.add.at(self._count, found.term, 1)
        self._done.append(found)
        self._done_rows += len(found)
        if self._spill_path is not None and self._done_rows >= SPILL_ROWS:
            self._flush()

    def _close_spill(self) -> None:
        """Make the spill file readable (its footer written); the accumulation ends there."""
        if self._spill is not None and not self._spill_closed:
            self._spill.close()
            self._spill_closed = True

    def _flush(self) -> None:
        """Write the finished intervals held in memory to the spill file (one row group)."""
        if self._spill_closed:
            raise RuntimeError("intervals: add() after table() or write() with a spill file")
        found = _Found.concat(self._done)
        self._done, self._done_rows = [], 0
        if not len(found):
            return
        if self._spill is None:
            self._spill = pq.ParquetWriter(self._spill_path, _SPILL_SCHEMA, compression="none")
        self._spill.write_table(pa.table(
            [pa.array(self._rank[found.term]), pa.array(found.start_ns),
             pa.array(found.end_ns), _labels(found.cause), _labels(found.rule)],
            schema=_SPILL_SCHEMA))

    def __len__(self) -> int:
        """Number of intervals so far (open ones included)."""
        return int(self._count.sum()) + len(self._open)

    def _batch(self, lo: int, hi: int) -> _Found:
        """The intervals so far of the terminals of rank ``lo ≤ rank < hi``, in output order
        (terminal id, then start): spilled ones read back one row group at a time."""
        parts = []
        if self._spill is not None:
            for rg in pq.ParquetFile(self._spill_path).iter_batches():   # row groups, bounded
                rank = rg.column(0).to_numpy()
                sel = np.flatnonzero((rank >= lo) & (rank < hi))
                if sel.size == 0:
                    continue
                rg = rg.take(pa.array(sel))
                term = self._by_rank[rg.column(0).to_numpy()]
                parts.append(_Found(term, rg.column(1).to_numpy(), rg.column(2).to_numpy(),
                                    np.asarray(rg.column(3).to_pylist(), dtype=object),
                                    np.asarray(rg.column(4).to_pylist(), dtype=object)))
        for found in [*self._done, self._open]:
            r = self._rank[found.term]
            parts.append(found.take(np.flatnonzero((r >= lo) & (r < hi))))
        out = _Found.concat(parts)
        return out.take(np.lexsort((out.start_ns, self._rank[out.term])))

    def table(self) -> pd.DataFrame:
        """The intervals so far (open ones included), sorted as :func:`outage_intervals`."""
        self._close_spill()
        if len(self) == 0:     # the dtypes outage_intervals gives an empty table
            return outage_intervals(np.zeros(0, "datetime64[ns]"), self.terminals,
                                    np.zeros((0, self.terminals.size), bool))
        return _frame(self.terminals, self._batch(0, self.terminals.size), objects=True)

    def write(self, path: str | Path) -> int:
        """Write :meth:`table` to the Parquet file ``path`` (:data:`INTERVAL_SCHEMA`), sorting
        at most about :data:`WRITE_ROWS` intervals at a time (whole terminals: one row group
        each), remove the spill file and return the number of intervals. Ends the
        accumulation."""
        self._close_spill()
        counts = self._count.copy()
        np.add.at(counts, self._open.term, 1)
        total = int(counts.sum())
        if total == 0:     # an empty table keeps the dtypes outage_intervals gives it
            self.table().to_parquet(path, index=False)
        else:
            per_rank = np.zeros(self.terminals.size, np.int64)
            per_rank[self._rank] = counts
            cum = np.cumsum(per_rank)
            # batch boundaries between terminals, about WRITE_ROWS intervals apart
            cuts = np.unique(np.searchsorted(cum, np.arange(WRITE_ROWS, total, WRITE_ROWS),
                                             side="right"))
            edges = [0, *[int(c) for c in cuts if 0 < c < per_rank.size], per_rank.size]
            writer = None
            try:
                for lo, hi in zip(edges[:-1], edges[1:], strict=True):   # over batches
                    frame = _frame(self.terminals, self._batch(lo, hi), objects=True)
                    table = pa.Table.from_pandas(frame, schema=INTERVAL_SCHEMA,
                                                 preserve_index=False)
                    if writer is None:
                        writer = pq.ParquetWriter(path, table.schema)
                    writer.write_table(table)
            finally:
                if writer is not None:
                    writer.close()
        self.discard()
        return total

    def discard(self) -> None:
        """Remove the spill file (after :meth:`write`, or when a run is abandoned)."""
        self._close_spill()
        self._spill = None
        self._done, self._done_rows = [], 0
        if self._spill_path is not None:
            self._spill_path.unlink(missing_ok=True)


def intervals_to_mask(intervals: pd.DataFrame, times: Any, terminals: Any) -> np.ndarray:
    """Inverse of :func:`outage_intervals`: bool ``(n_time, n_term)``, True at every step whose
    start instant lies in ``[start, end)`` of an interval of that terminal."""
    t = _utc_times(times)
    ids = _ids(terminals, "terminals", unique=True)
    missing = [c for c in ("terminal", "start", "end") if c not in intervals.columns]
    if missing:
        raise ValueError(f"intervals lacks columns {missing}")
    col = pd.Index(ids).get_indexer(intervals["terminal"].to_numpy())
    if (col < 0).any():
        bad = intervals["terminal"].to_numpy()[col < 0][0]
        raise ValueError(f"intervals names terminal {bad!r}, which is not in terminals")
    s = np.searchsorted(t, intervals["start"].to_numpy(dtype="datetime64[ns]"), side="left")
    e = np.searchsorted(t, intervals["end"].to_numpy(dtype="datetime64[ns]"), side="left")
    diff = np.zeros((ids.size, t.size + 1), dtype=np.int64)
    np.add.at(diff, (col, s), 1)
    np.add.at(diff, (col, e), -1)
    return (np.cumsum(diff[:, :-1], axis=1) > 0).T
