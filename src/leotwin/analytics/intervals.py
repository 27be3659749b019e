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
open interval per terminal.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

__all__ = ["INTERVAL_COLUMNS", "IntervalAccumulator", "intervals_to_mask", "outage_intervals"]

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


def _codes(flat: np.ndarray) -> np.ndarray:
    """Integer codes equal where ``flat`` values are equal (None/NaN all equal to each other)."""
    if flat.dtype == bool or np.issubdtype(flat.dtype, np.integer):
        return flat                              # already codes: skip hashing
    codes, _ = pd.factorize(flat, use_na_sentinel=True)
    return codes


def outage_intervals(times: Any, terminals: Any, unserved: Any, *, cause: Any = None,
                     rule: Any = None, step_s: float | None = None) -> pd.DataFrame:
    """Merge consecutive unserved steps of each terminal into intervals.

    Parameters
    ----------
    times : (n_time,) datetime64[ns] UTC, strictly increasing — step start instants.
    terminals : (n_term,) unique terminal ids.
    unserved : (n_time, n_term) bool.
    cause, rule : optional (n_time, n_term) arrays (str or int codes); a change of either inside
        a run of unserved steps starts a new interval. Values at served steps are ignored.
    step_s : duration of the last step in seconds; default the median spacing of ``times``.

    Returns
    -------
    DataFrame with columns ``terminal, start, end, duration_s, cause, rule`` (see the module
    docstring for ``end``), sorted by terminal id, then start. ``cause``/``rule`` are None when
    not given; missing values come out as NA (test with ``pd.isna``). Raises ValueError, naming
    the argument, for wrong shapes, dtypes or unsorted times.
    """
    t = _utc_times(times)
    ids = _ids(terminals, "terminals", unique=True)
    shape = (t.size, ids.size)
    u = _bool_grid(unserved, "unserved", shape)
    keys = {name: _grid(v, name, shape) for name, v in (("cause", cause), ("rule", rule))
            if v is not None}
    dur_s = _step_durations_s(t, step_s) if t.size else np.zeros(0)

    # (terminal, time) order with terminals sorted by id: flat order is the output order
    order = np.argsort(ids, kind="stable")
    n_time = t.size
    row = max(n_time, 1)
    u_flat = np.ascontiguousarray(u.T[order]).ravel()
    # split[k]: an interval cannot continue from flat position k-1 into k (new terminal's row,
    # or a change of cause/rule)
    split = np.zeros(u_flat.size + 1, dtype=bool)
    split[::row] = True
    split[-1] = True
    key_flat = {}
    for name, grid in keys.items():             # at most two keys, not a loop over data
        flat = np.ascontiguousarray(grid.T[order]).ravel()
        key_flat[name] = flat
        c = _codes(flat)
        split[1:-1] |= c[1:] != c[:-1]
    padded = np.concatenate([[False], u_flat, [False]])
    starts = np.flatnonzero(u_flat & (split[:-1] | ~padded[:-2]))
    lasts = np.flatnonzero(u_flat & (split[1:] | ~padded[2:]))
    term_idx = order[starts // row]
    i0 = starts % row
    i1 = lasts % row
    t_start = t[i0]
    if n_time:      # the instant each step ends: the next time, or last time + last step
        last_end = t[-1] + np.timedelta64(int(round(dur_s[-1] * 1e9)), "ns")
        t_end = np.concatenate([t[1:], [last_end]])
    else:
        t_end = t
    end = t_end[i1]
    duration_s = (end - t_start).astype("int64") / 1e9

    def col(name: str) -> Any:
        if name not in key_flat:
            return np.full(starts.size, None, dtype=object)
        return key_flat[name][starts]

    return pd.DataFrame({
        "terminal": ids[term_idx],
        "start": t_start.astype("datetime64[ns]"),
        "end": end.astype("datetime64[ns]"),
        "duration_s": duration_s.astype(np.float64),
        "cause": col("cause"),
        "rule": col("rule"),
    }, columns=list(INTERVAL_COLUMNS))


def _same(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Element-wise equality where missing values (None, NaN) are equal to each other."""
    na_a, na_b = pd.isna(a), pd.isna(b)
    with np.errstate(invalid="ignore"):
        eq = np.asarray(a == b, dtype=bool) if a.size else np.zeros(0, bool)
    return (eq & ~na_a & ~na_b) | (na_a & na_b)


class IntervalAccumulator:
    """:func:`outage_intervals` fed one window of steps at a time (module docstring,
    "Streaming"); :meth:`table` gives the same table as one call over the whole timeline.

    :meth:`add` takes the arguments of :func:`outage_intervals` for one window except the
    terminals (fixed at construction) and ``step_s``, the duration of the window's last step
    (the spacing to the next window's first step; for the last window, the run's last step).
    """

    def __init__(self, terminals: Any):
        self.terminals = _ids(terminals, "terminals", unique=True)
        self._done: list[pd.DataFrame] = []
        self._open: pd.DataFrame | None = None      # intervals ending at the last window's end
        self._end: np.datetime64 | None = None      # end instant of the last window

    def add(self, times: Any, unserved: Any, *, cause: Any = None, rule: Any = None,
            step_s: float) -> None:
        t = _utc_times(times)
        if t.size == 0:
            return
        iv = outage_intervals(t, self.terminals, unserved, cause=cause, rule=rule,
                              step_s=step_s)
        end = t[-1] + np.timedelta64(int(round(float(step_s) * 1e9)), "ns")
        if self._open is not None and len(self._open):
            old = self._open
            if self._end == t[0]:
                first = iv[iv["start"].to_numpy() == t[0]]
                pair = old.reset_index().merge(first.reset_index(), on="terminal",
                                               suffixes=("_old", "_new"))
                same = (_same(pair["cause_old"].to_numpy(object),
                              pair["cause_new"].to_numpy(object))
                        & _same(pair["rule_old"].to_numpy(object),
                                pair["rule_new"].to_numpy(object)))
                pair = pair[same]
                idx_new = pair["index_new"].to_numpy()
                start = pd.Series(pair["start_old"].to_numpy(), index=idx_new)
                iv.loc[idx_new, "start"] = start
                iv.loc[idx_new, "duration_s"] = ((iv.loc[idx_new, "end"].to_numpy()
                                                  - start.to_numpy()).astype("int64") / 1e9)
                old = old.drop(index=pair["index_old"].to_numpy())
            self._done.append(old)
        still = iv["end"].to_numpy() == end
        self._done.append(iv[~still])
        self._open = iv[still]
        self._end = end

    def table(self) -> pd.DataFrame:
        """The intervals so far (open ones included), sorted as :func:`outage_intervals`."""
        parts = [p for p in [*self._done, self._open] if p is not None and len(p)]
        if not parts:
            return outage_intervals(np.zeros(0, "datetime64[ns]"), self.terminals,
                                    np.zeros((0, self.terminals.size), bool),
                                    cause=None, rule=None)
        out = pd.concat(parts, ignore_index=True)
        rank = pd.Index(np.sort(self.terminals, kind="stable")).get_indexer(
            out["terminal"].to_numpy())
        order = np.lexsort((out["start"].to_numpy(), rank))
        # rebuilt from plain arrays as outage_intervals builds it (same dtype inference)
        return pd.DataFrame({c: out[c].to_numpy(dtype=object if c in ("terminal", "cause",
                                                                       "rule") else None)[order]
                             for c in INTERVAL_COLUMNS}, columns=list(INTERVAL_COLUMNS))


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
