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
  (``np.add.reduceat``, group-by over accounts), never in a Python loop over terminals or steps.
  Loops run only over contracts and plans (a handful). Caller mistakes (shapes, unsorted times,
  negative throughput, unknown accounts) raise ValueError naming the argument.

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


def usage_by_account_day(times: Any, terminals: Any, accounts: Any, throughput_mbps: Any, *,
                         step_s: float | None = None) -> pd.DataFrame:
    """Served volume per account and UTC day, in decimal GB.

    ``terminals`` (n_term,) unique ids; ``accounts`` (n_term,) the account of each terminal;
    ``throughput_mbps`` (n_time, n_term) the served (delivered) rate during each step, 0 when not
    served; it must be finite and non-negative. Each step's volume is its rate × its duration.

    Returns columns ``account, day, gb`` (``day`` = UTC midnight, datetime64[ns]) with one row for
    every account and every day touched by ``times`` (zero-usage days included), sorted by
    account, then day.
    """
    t = _utc_times(times)
    ids = _ids(terminals, "terminals", unique=True)
    acc = _ids(accounts, "accounts")
    if acc.size != ids.size:
        raise ValueError(f"accounts must have one entry per terminal ({ids.size}), got {acc.size}")
    thr = _grid(throughput_mbps, "throughput_mbps", (t.size, ids.size))
    if not np.issubdtype(thr.dtype, np.number) or thr.dtype == bool:
        raise ValueError(f"throughput_mbps must be numeric, got dtype {thr.dtype}")
    thr = thr.astype(np.float64, copy=False)
    if not np.isfinite(thr).all():
        raise ValueError("throughput_mbps must be finite (use 0 for unserved steps)")
    if (thr < 0).any():
        i, j = np.argwhere(thr < 0)[0]
        raise ValueError(f"throughput_mbps must be non-negative; throughput_mbps[{i}, {j}] = "
                         f"{thr[i, j]} (terminal {ids[j]!r})")
    if t.size == 0 or ids.size == 0:
        return pd.DataFrame({"account": pd.Series([], dtype=object),
                             "day": pd.Series([], dtype="datetime64[ns]"),
                             "gb": pd.Series([], dtype=np.float64)})
    dur_s = _step_durations_s(t, step_s)
    day_idx = t.astype("int64") // NS_PER_DAY            # floor: also before 1970
    day_first = np.flatnonzero(run_starts(day_idx))      # times sorted → days contiguous
    gb_day_term = np.add.reduceat(thr * (dur_s * 1e6 / BITS_PER_GB)[:, None], day_first, axis=0)
    codes, names = pd.factorize(acc, sort=True)
    by_acc = np.argsort(codes, kind="stable")
    acc_first = np.flatnonzero(run_starts(codes[by_acc]))
    gb_day_acc = np.add.reduceat(gb_day_term[:, by_acc], acc_first, axis=1)   # (n_day, n_acc)
    days = (day_idx[day_first] * NS_PER_DAY).astype("datetime64[ns]")
    return pd.DataFrame({"account": np.repeat(np.asarray(names, dtype=object), days.size),
                         "day": np.tile(days, len(names)),
                         "gb": gb_day_acc.T.ravel()}, columns=list(USAGE_COLUMNS))


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
    area = parse_geometry(contract.covered_area, source="contracts", feature=feature,
                          field="contracts.covered_area")
    lat = np.asarray(terminal_lat_deg, dtype=float)
    lon = np.asarray(terminal_lon_deg, dtype=float)
    inside = (np.asarray(terminal_account) == contract.account) & ZoneIndex([area]).contains(
        lat, lon)[:, 0]
    t_ns = np.asarray(times, dtype="datetime64[ns]").astype("int64")
    start = to_utc_datetime64(contract.term_start).astype("int64")
    end = to_utc_datetime64(contract.term_end).astype("int64")
    return (t_ns >= start) & (t_ns < end), inside


def availability_terms(committed_pct: float, ok_in_scope: np.ndarray, step_h: np.ndarray,
                       credit_per_breach_hour: float = 0.0) -> dict[str, float | bool]:
    """Availability arithmetic for one contract.

    ``ok_in_scope`` bool (n_step_in_scope, n_term_in_scope): available pairs in scope;
    ``step_h`` (n_step_in_scope,) step durations in hours. Returns ``achieved_pct`` (NaN when
    nothing is in scope), ``in_scope_terminal_hours``, ``breach``, ``breach_hours`` and
    ``credit_owed``.
    """
    ok = np.asarray(ok_in_scope, dtype=bool)
    step_h = np.asarray(step_h, dtype=float)
    total_h = float(step_h.sum()) * ok.shape[1] if ok.ndim == 2 else 0.0
    if total_h <= 0:
        return {"achieved_pct": float("nan"), "in_scope_terminal_hours": 0.0, "breach": False,
                "breach_hours": 0.0, "credit_owed": 0.0}
    served_h = float(step_h @ ok.sum(axis=1))
    achieved = 100.0 * served_h / total_h
    breach = achieved < committed_pct - _PCT_TOL
    breach_hours = (committed_pct - achieved) / 100.0 * total_h if breach else 0.0
    return {"achieved_pct": achieved, "in_scope_terminal_hours": total_h, "breach": bool(breach),
            "breach_hours": breach_hours, "credit_owed": breach_hours * credit_per_breach_hour}


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
    """
    t = _utc_times(times)
    lat = np.asarray(terminal_lat_deg, dtype=float)
    if lat.ndim != 1:
        raise ValueError(f"terminal_lat_deg must be 1-D, got shape {lat.shape}")
    lon = np.asarray(terminal_lon_deg, dtype=float)
    acc = _ids(terminal_account, "terminal_account")
    for name, arr in (("terminal_lon_deg", lon), ("terminal_account", acc)):
        if arr.shape != lat.shape:
            raise ValueError(f"{name} must have one entry per terminal ({lat.size}), "
                             f"got shape {arr.shape}")
    ok = _bool_grid(served, "served", (t.size, lat.size))
    step_h = _step_durations_s(t, step_s) / 3600.0 if t.size else np.zeros(0)
    rows = []
    for k, c in enumerate(contracts):          # over contracts (a handful)
        c = c if isinstance(c, Contract) else Contract.model_validate(c)
        in_term, inside = contract_scope(c, t, lat, lon, acc, feature=k)
        terms = availability_terms(c.committed_availability_pct, ok[np.ix_(in_term, inside)],
                                   step_h[in_term], c.credit_per_breach_hour)
        rows.append({"contract": c.id, "account": c.account,
                     "committed_pct": c.committed_availability_pct, **terms})
    out = pd.DataFrame(rows, columns=list(CONTRACT_COLUMNS))
    out["breach"] = out["breach"].astype(bool)
    return out
