"""Metering and SLA: usage per account and day, monthly bills, contract availability.

Conventions
-----------
* ``times`` are step start instants, ``datetime64[ns]`` UTC, strictly increasing; step ``i``
  lasts until ``times[i + 1]`` and the last step ``step_s`` seconds (default: the median spacing),
  exactly as in :mod:`leotwin.analytics.intervals`.
* Volumes are **decimal gigabytes**: 1 GB = 1e9 bytes = 8e9 bits, so
  ``gb = throughput_mbps × 1e6 × duration_s / 8e9`` (100 Mbit/s for one hour = 45 GB).
* A step is counted in the UTC calendar day (and month) in which it *starts*.
* Array arguments are (time, terminal) grids; the arithmetic runs over whole arrays
  (cumulative sums, ``np.add.reduceat``, group-by over accounts), never in a Python loop over
  terminals or steps. Loops run only over contracts, plans and the UTC days of a window (a
  handful). Caller mistakes (shapes, unsorted times, negative throughput, unknown accounts)
  raise ValueError naming the argument.

Streaming: :class:`UsageAccumulator` and :class:`ContractAccumulator` compute the same tables
window by window (a run's chunks, read one at a time) with small carried state, and give
**exactly** the same numbers as :func:`usage_by_account_day` and :func:`contract_availability`
over the whole timeline — which are themselves one window fed to them. Exactness is by
construction: a terminal's volume per day is summed sequentially in time (``np.cumsum``, the
day's running sum carried across a window seam), and contract availability is kept as integer
served counts per step in scope until the end.

Contract availability (the definition of :mod:`leotwin.policy.preview`, shared here through
:func:`contract_scope` and :func:`availability_terms`): the pairs in scope of a contract are the
(step, terminal) pairs whose terminal belongs to the contract's account and lies inside its
``covered_area`` (boundary included; NaN positions are inside nothing), and whose step *starts* in
``[term_start, term_end)``. Availability is the served share of those pairs, each weighted by its
step duration — on a regular time grid, the plain share of pairs as in the preview. A breach is an
availability below the commitment; breach hours are the shortfall times the terminal-hours in
scope, ``(committed − achieved) / 100 × terminal_hours``; the credit owed is breach hours ×
``credit_per_breach_hour``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .._arrays import run_starts
from ..policy.geofence import ZoneIndex, parse_geometry
from ..policy.models import Contract, ServicePlan
from ..timescale import NS_PER_DAY, to_utc_datetime64
from .intervals import _bool_grid, _grid, _ids, _step_durations_s, _utc_times

__all__ = [
    "BITS_PER_GB",
    "ContractAccumulator",
    "UsageAccumulator",
    "availability_terms",
    "bill",
    "contract_availability",
    "contract_scope",
    "usage_by_account_day",
]

#: Decimal gigabyte in bits (1e9 bytes × 8).
BITS_PER_GB = 8e9

#: Tolerance (percentage points) below which achieved and committed availability count as equal,
#: so that floating-point rounding of a share never creates a breach.
_PCT_TOL = 1e-9

USAGE_COLUMNS = ("account", "day", "gb")
BILL_COLUMNS = ("account", "month", "plan", "terminals", "gb", "quota_gb", "billable_gb", "fee",
                "usage_charge", "total")
CONTRACT_COLUMNS = ("contract", "account", "committed_pct", "achieved_pct",
                    "in_scope_terminal_hours", "breach", "breach_hours", "credit_owed")


# ----------------------------------------------------------------------------- usage


def _check_throughput(thr: np.ndarray, ids: np.ndarray) -> np.ndarray:
    if not np.issubdtype(thr.dtype, np.number) or thr.dtype == bool:
        raise ValueError(f"throughput_mbps must be numeric, got dtype {thr.dtype}")
    thr = thr.astype(np.float64, copy=False)
    if not np.isfinite(thr).all():
        raise ValueError("throughput_mbps must be finite (use 0 for unserved steps)")
    if (thr < 0).any():
        i, j = np.argwhere(thr < 0)[0]
        raise ValueError(f"throughput_mbps must be non-negative; throughput_mbps[{i}, {j}] = "
                         f"{thr[i, j]} (terminal {ids[j]!r})")
    return thr


class UsageAccumulator:
    """:func:`usage_by_account_day` fed one window of steps at a time (same result, exactly).

    ``terminals`` (n_term,) unique ids, ``accounts`` their accounts. :meth:`add` takes the
    window's step start ``times``, ``throughput_mbps`` (n_time, n_term) and the steps'
    durations ``step_s`` (n_time,) — the last one the spacing to the next window's first step;
    windows must follow each other in time. Carried state: the volume per terminal of the UTC
    day still open at the end of the last window, plus one (n_term,) row per finished day.
    """

    def __init__(self, terminals: Any, accounts: Any):
        self.terminals = _ids(terminals, "terminals", unique=True)
        self.accounts = _ids(accounts, "accounts")
        if self.accounts.size != self.terminals.size:
            raise ValueError(f"accounts must have one entry per terminal "
                             f"({self.terminals.size}), got {self.accounts.size}")
        self._days: list[int] = []                 # UTC day numbers, increasing
        self._gb: list[np.ndarray] = []            # per day: (n_term,) GB
        self._last_ns: int | None = None

    def add(self, times: Any, throughput_mbps: Any, step_s: Any) -> None:
        t = _utc_times(times)
        if t.size == 0:
            return
        if self._last_ns is not None and int(t[0].astype("int64")) <= self._last_ns:
            raise ValueError("times must continue after the previous window's last step")
        thr = _check_throughput(_grid(throughput_mbps, "throughput_mbps",
                                      (t.size, self.terminals.size)), self.terminals)
        dur_s = np.broadcast_to(np.asarray(step_s, dtype=np.float64), t.shape)
        gb = thr * (dur_s * 1e6 / BITS_PER_GB)[:, None]
        day_idx = t.astype("int64") // NS_PER_DAY            # floor: also before 1970
        starts = np.flatnonzero(run_starts(day_idx))           # times sorted → days contiguous
        for a, b in zip(starts, [*starts[1:], t.size], strict=True):   # over days (1–2)
            day = int(day_idx[a])
            seg = gb[a:b]
            if self._days and self._days[-1] == day:       # the day continues: carry its sum
                seg = np.concatenate([self._gb[-1][None, :], seg])
                self._days.pop()
                self._gb.pop()
            self._days.append(day)
            self._gb.append(np.cumsum(seg, axis=0)[-1])   # sequential in time: seam-exact
        self._last_ns = int(t[-1].astype("int64"))

    def table(self) -> pd.DataFrame:
        """``account, day, gb`` as :func:`usage_by_account_day` returns it."""
        if not self._days or self.terminals.size == 0:
            return pd.DataFrame({"account": pd.Series([], dtype=object),
                                 "day": pd.Series([], dtype="datetime64[ns]"),
                                 "gb": pd.Series([], dtype=np.float64)})
        gb_day_term = np.stack(self._gb)                       # (n_day, n_term)
        codes, names = pd.factorize(self.accounts, sort=True)
        by_acc = np.argsort(codes, kind="stable")
        acc_first = np.flatnonzero(run_starts(codes[by_acc]))
        gb_day_acc = np.add.reduceat(gb_day_term[:, by_acc], acc_first, axis=1)  # (day, acc)
        days = (np.asarray(self._days, np.int64) * NS_PER_DAY).astype("datetime64[ns]")
        return pd.DataFrame({"account": np.repeat(np.asarray(names, dtype=object), days.size),
                             "day": np.tile(days, len(names)),
                             "gb": gb_day_acc.T.ravel()}, columns=list(USAGE_COLUMNS))


def usage_by_account_day(times: Any, terminals: Any, accounts: Any, throughput_mbps: Any, *,
                         step_s: float | None = None) -> pd.DataFrame:
    """Served volume per account and UTC day, in decimal GB.

    ``terminals`` (n_term,) unique ids; ``accounts`` (n_term,) the account of each terminal;
    ``throughput_mbps`` (n_time, n_term) the served (delivered) rate during each step, 0 when not
    served; it must be finite and non-negative. Each step's volume is its rate × its duration;
    a terminal's volumes are summed in time order (sequentially), then over the account's
    terminals.

    Returns columns ``account, day, gb`` (``day`` = UTC midnight, datetime64[ns]) with one row for
    every account and every day touched by ``times`` (zero-usage days included), sorted by
    account, then day. :class:`UsageAccumulator` gives the same table window by window.
    """
    t = _utc_times(times)
    acc = UsageAccumulator(terminals, accounts)
    thr = _check_throughput(_grid(throughput_mbps, "throughput_mbps",
                                  (t.size, acc.terminals.size)), acc.terminals)
    if t.size and acc.terminals.size:
        acc.add(t, thr, _step_durations_s(t, step_s))
    return acc.table()


# ----------------------------------------------------------------------------- bill


def bill(usage: pd.DataFrame, plans_by_account: Mapping[str, ServicePlan],
         terminals_per_account: Mapping[str, int] | Sequence[str]) -> pd.DataFrame:
    """Bill per account and UTC calendar month from ``usage`` (as from
    :func:`usage_by_account_day`).

    Reading of the plan's prices (documented assumption):

    * **fee** = ``price_per_month`` × number of the account's terminals, for every calendar month
      that appears in ``usage`` — a full month's fee even when the usage window covers only part
      of the month (no proration).
    * **usage charge** = ``price_per_gb`` × GB *beyond the priority quota*; the quota is
      ``priority_quota_gb_month`` per terminal per month, **pooled over the account's terminals**
      (usage is metered per account): ``billable_gb = max(0, gb − terminals × quota)``. GB within
      the quota are covered by the monthly fee.

    ``plans_by_account`` maps each account to its :class:`~leotwin.policy.models.ServicePlan` (one
    plan per account). ``terminals_per_account`` maps each account to its number of terminals, or
    is the sequence of the account of every terminal (counted). Every account in ``usage`` needs
    both (ValueError otherwise).

    Returns columns ``account, month, plan, terminals, gb, quota_gb, billable_gb, fee,
    usage_charge, total`` (``month`` = first instant of the month, datetime64[ns]; money in the
    plans' currency), sorted by account, then month.
    """
    missing = [c for c in USAGE_COLUMNS if c not in getattr(usage, "columns", ())]
    if missing:
        raise ValueError(f"usage must be a DataFrame with columns {list(USAGE_COLUMNS)}; "
                         f"missing {missing}")
    gb = pd.to_numeric(usage["gb"], errors="coerce").to_numpy(dtype=np.float64)
    if not np.isfinite(gb).all() or (gb < 0).any():
        raise ValueError("usage.gb must be finite and non-negative")
    if isinstance(terminals_per_account, Mapping):
        counts = dict(terminals_per_account)
    else:
        counts = pd.Series(_ids(terminals_per_account, "terminals_per_account")).value_counts()
        counts = {k: int(v) for k, v in counts.items()}
    try:
        day = pd.DatetimeIndex(usage["day"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"usage.day must be UTC datetimes: {exc}") from None
    if day.tz is not None:
        day = day.tz_convert("UTC").tz_localize(None)
    if day.hasnans:
        raise ValueError("usage.day contains NaT")
    month = day.as_unit("ns").to_numpy().astype("datetime64[M]")
    monthly = (pd.DataFrame({"account": usage["account"].to_numpy(dtype=object),
                             "month": month.astype("datetime64[ns]"), "gb": gb})
               .groupby(["account", "month"], as_index=False, sort=True)["gb"].sum())
    accounts = monthly["account"].unique()
    no_plan = [a for a in accounts if a not in plans_by_account]
    if no_plan:
        raise ValueError(f"plans_by_account has no plan for account(s) {no_plan}")
    no_count = [a for a in accounts if a not in counts]
    if no_count:
        raise ValueError(f"terminals_per_account has no terminal count for account(s) "
                         f"{no_count}")
    plan_of = {a: plans_by_account[a] for a in accounts}          # loop over accounts only
    n_term = monthly["account"].map({a: int(counts[a]) for a in accounts}).to_numpy(np.int64)
    if (n_term < 0).any():
        raise ValueError("terminals_per_account must not hold negative counts")

    def attr(name: str) -> np.ndarray:
        return monthly["account"].map({a: getattr(p, name) for a, p in plan_of.items()}
                                      ).to_numpy()

    quota = n_term * attr("priority_quota_gb_month").astype(np.float64)
    billable = np.maximum(0.0, monthly["gb"].to_numpy() - quota)
    fee = n_term * attr("price_per_month").astype(np.float64)
    usage_charge = billable * attr("price_per_gb").astype(np.float64)
    return pd.DataFrame({"account": monthly["account"], "month": monthly["month"],
                         "plan": attr("name"), "terminals": n_term, "gb": monthly["gb"],
                         "quota_gb": quota, "billable_gb": billable, "fee": fee,
                         "usage_charge": usage_charge, "total": fee + usage_charge},
                        columns=list(BILL_COLUMNS))


# ----------------------------------------------------------------------------- contracts


def contract_scope(contract: Contract, times: Any, terminal_lat_deg: Any, terminal_lon_deg: Any,
                   terminal_account: Any, *, feature: int | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Where ``contract`` applies: ``(in_term, inside)``, bool ``(n_time,)`` — the step starts in
    ``[term_start, term_end)`` — and bool ``(n_term,)`` — the terminal is the contract account's
    and inside ``covered_area``. The scope is ``in_term[:, None] & inside[None, :]``.

    ``times`` must already be UTC ``datetime64[ns]``. ``feature`` labels geometry errors
    (:class:`~leotwin.policy.errors.PolicyError`, field ``contracts.covered_area``).
    """
    return (_contract_in_term(contract, times),
            _contract_inside(contract, terminal_lat_deg, terminal_lon_deg, terminal_account,
                             feature=feature))


def _contract_inside(contract: Contract, terminal_lat_deg: Any, terminal_lon_deg: Any,
                     terminal_account: Any, *, feature: int | None = None) -> np.ndarray:
    area = parse_geometry(contract.covered_area, source="contracts", feature=feature,
                          field="contracts.covered_area")
    lat = np.asarray(terminal_lat_deg, dtype=float)
    lon = np.asarray(terminal_lon_deg, dtype=float)
    return (np.asarray(terminal_account) == contract.account) & ZoneIndex([area]).contains(
        lat, lon)[:, 0]


def _contract_in_term(contract: Contract, times: Any) -> np.ndarray:
    t_ns = np.asarray(times, dtype="datetime64[ns]").astype("int64")
    start = to_utc_datetime64(contract.term_start).astype("int64")
    end = to_utc_datetime64(contract.term_end).astype("int64")
    return (t_ns >= start) & (t_ns < end)


def availability_terms(committed_pct: float, ok_in_scope: np.ndarray, step_h: np.ndarray,
                       credit_per_breach_hour: float = 0.0) -> dict[str, float | bool]:
    """Availability arithmetic for one contract.

    ``ok_in_scope`` bool (n_step_in_scope, n_term_in_scope): available pairs in scope;
    ``step_h`` (n_step_in_scope,) step durations in hours. Returns ``achieved_pct`` (NaN when
    nothing is in scope), ``in_scope_terminal_hours``, ``breach``, ``breach_hours`` and
    ``credit_owed``.
    """
    ok = np.asarray(ok_in_scope, dtype=bool)
    if ok.ndim != 2:
        return _availability_from_counts(committed_pct, np.zeros(0, np.int64), 0,
                                         np.zeros(0), credit_per_breach_hour)
    return _availability_from_counts(committed_pct, ok.sum(axis=1), ok.shape[1], step_h,
                                     credit_per_breach_hour)


def _availability_from_counts(committed_pct: float, served_count: np.ndarray, n_inside: int,
                              step_h: np.ndarray, credit_per_breach_hour: float
                              ) -> dict[str, float | bool]:
    """:func:`availability_terms` from the number of available terminals in scope at every
    step in scope (``served_count``, integers) and the number of terminals in scope."""
    step_h = np.asarray(step_h, dtype=float)
    total_h = float(step_h.sum()) * n_inside
    if total_h <= 0:
        return {"achieved_pct": float("nan"), "in_scope_terminal_hours": 0.0, "breach": False,
                "breach_hours": 0.0, "credit_owed": 0.0}
    served_h = float(step_h @ np.asarray(served_count))
    achieved = 100.0 * served_h / total_h
    breach = achieved < committed_pct - _PCT_TOL
    breach_hours = (committed_pct - achieved) / 100.0 * total_h if breach else 0.0
    return {"achieved_pct": achieved, "in_scope_terminal_hours": total_h, "breach": bool(breach),
            "breach_hours": breach_hours, "credit_owed": breach_hours * credit_per_breach_hour}


class ContractAccumulator:
    """:func:`contract_availability` fed one window of steps at a time (same result, exactly).

    Terminal positions, accounts and contracts as for :func:`contract_availability`; each
    contract's covered area is tested once. :meth:`add` takes the window's ``times``, ``served``
    (n_time, n_term) and the steps' durations ``step_s`` (n_time,). Carried state per contract:
    the number of served terminals in scope at every step in its term (integers) and those
    steps' durations — a few numbers per step, not per terminal.
    """

    def __init__(self, terminal_lat_deg: Any, terminal_lon_deg: Any, terminal_account: Any,
                 contracts: Sequence[Contract]):
        lat = np.asarray(terminal_lat_deg, dtype=float)
        if lat.ndim != 1:
            raise ValueError(f"terminal_lat_deg must be 1-D, got shape {lat.shape}")
        lon = np.asarray(terminal_lon_deg, dtype=float)
        acc = _ids(terminal_account, "terminal_account")
        for name, arr in (("terminal_lon_deg", lon), ("terminal_account", acc)):
            if arr.shape != lat.shape:
                raise ValueError(f"{name} must have one entry per terminal ({lat.size}), "
                                 f"got shape {arr.shape}")
        self.n_term = lat.size
        self.contracts = [c if isinstance(c, Contract) else Contract.model_validate(c)
                          for c in contracts]
        self._inside = [_contract_inside(c, lat, lon, acc, feature=k)     # over contracts
                        for k, c in enumerate(self.contracts)]
        self._counts: list[list[np.ndarray]] = [[] for _ in self.contracts]
        self._hours: list[list[np.ndarray]] = [[] for _ in self.contracts]

    def add(self, times: Any, served: Any, step_s: Any) -> None:
        t = _utc_times(times)
        ok = _bool_grid(served, "served", (t.size, self.n_term))
        step_h = np.broadcast_to(np.asarray(step_s, dtype=np.float64), t.shape) / 3600.0
        for k, c in enumerate(self.contracts):          # over contracts (a handful)
            in_term = _contract_in_term(c, t)
            self._counts[k].append(ok[np.ix_(in_term, self._inside[k])].sum(axis=1))
            self._hours[k].append(step_h[in_term])

    def table(self) -> pd.DataFrame:
        """One row per contract, as :func:`contract_availability` returns it."""
        rows = []
        for k, c in enumerate(self.contracts):
            counts = np.concatenate(self._counts[k]) if self._counts[k] else np.zeros(0, int)
            hours = np.concatenate(self._hours[k]) if self._hours[k] else np.zeros(0)
            terms = _availability_from_counts(c.committed_availability_pct, counts,
                                              int(self._inside[k].sum()), hours,
                                              c.credit_per_breach_hour)
            rows.append({"contract": c.id, "account": c.account,
                         "committed_pct": c.committed_availability_pct, **terms})
        out = pd.DataFrame(rows, columns=list(CONTRACT_COLUMNS))
        out["breach"] = out["breach"].astype(bool)
        return out


def contract_availability(times: Any, terminal_lat_deg: Any, terminal_lon_deg: Any,
                          terminal_account: Any, served: Any, contracts: Sequence[Contract], *,
                          step_s: float | None = None) -> pd.DataFrame:
    """Availability of every contract over its covered area and term versus its commitment.

    ``terminal_lat_deg``, ``terminal_lon_deg``, ``terminal_account``: (n_term,) position (WGS84
    degrees; NaN = unknown, in no area) and account of each terminal; ``served`` bool
    (n_time, n_term); ``contracts`` :class:`~leotwin.policy.models.Contract` objects (or dicts
    validated into them). Definition: module docstring.

    Returns one row per contract, in the given order: ``contract, account, committed_pct,
    achieved_pct, in_scope_terminal_hours, breach, breach_hours, credit_owed``. A contract with
    nothing in scope has ``achieved_pct`` NaN, zero hours and no breach.
    :class:`ContractAccumulator` gives the same table window by window.
    """
    t = _utc_times(times)
    acc = ContractAccumulator(terminal_lat_deg, terminal_lon_deg, terminal_account, contracts)
    ok = _bool_grid(served, "served", (t.size, acc.n_term))
    acc.add(t, ok, _step_durations_s(t, step_s) if t.size else np.zeros(0))
    return acc.table()
