"""Change-impact preview and the guard that refuses changes breaching a contract.

The preview runs the same :func:`~leotwin.policy.engine.decide` on the current and on the
proposed policy over a time window, for every terminal with a service address, and compares:
terminal-hours lost and gained (per terminal and per account), and for every contract active
in the window its availability before and after over its covered area.

Contract arithmetic (documented assumption): availability is the share of (step, terminal)
pairs of the contract's account inside its covered area that are not denied; a breach is an
availability below the commitment; breach hours are the shortfall times the terminal-hours
in scope, ``(committed − achieved) × terminal_hours``; the credit owed is breach hours times
``credit_per_breach_hour``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..analytics.sla import availability_terms, contract_scope
from ..timescale import time_grid, to_utc_datetime64
from .engine import DENY, decide
from .errors import PolicyError
from .models import Policy


@dataclass
class Preview:
    """What a proposed change does over ``window`` (UTC start, stop)."""

    window: tuple[np.datetime64, np.datetime64]
    terminals: pd.DataFrame  # terminal, account, hours_lost, hours_gained
    accounts: pd.DataFrame  # account, terminals_affected, hours_lost, hours_gained
    contracts: pd.DataFrame  # contract, account, committed_pct, before_pct, after_pct, breach,
    #                          breach_hours, credit_owed
    skipped_terminals: list[str]  # without a service address: not previewed

    @property
    def breaches(self) -> pd.DataFrame:
        """Contracts this change puts in breach or deepens the breach of. A contract already in
        breach that the change leaves as it was is not the change's doing: it does not need
        an approval again for every later, unrelated change."""
        c = self.contracts
        return c[c["breach"] & (c["after_pct"] < c["before_pct"])]

    def summary(self) -> str:
        lost = float(self.terminals["hours_lost"].sum())
        gained = float(self.terminals["hours_gained"].sum())
        lines = [f"window {self.window[0]} … {self.window[1]}: {lost:.1f} terminal-hours lost, "
                 f"{gained:.1f} gained, {int((self.terminals['hours_lost'] > 0).sum())} "
                 "terminals cut"]
        for row in self.breaches.itertuples():
            lines.append(f"BREACH contract {row.contract} ({row.account}): availability "
                         f"{row.after_pct:.2f}% < committed {row.committed_pct:g}% — "
                         f"{row.breach_hours:.1f} breach hours, credit owed "
                         f"{row.credit_owed:.2f}")
        return "\n".join(lines)


class ChangeRefused(PolicyError):
    """A change would breach a contract and has no valid approval; ``preview`` explains it."""

    def __init__(self, message: str, preview: Preview):
        super().__init__(message, source="policy apply")
        self.preview = preview


def preview_change(current: Policy | None, proposed: Policy, window, *,
                   step_s: float = 900.0) -> Preview:
    """Preview ``proposed`` against ``current`` (None: an empty policy) over ``window``."""
    start, stop = (to_utc_datetime64(w) for w in window)
    times = time_grid(start, stop, step_s)
    dt_h = step_s / 3600.0
    located = [t for t in proposed.terminals if t.lat_deg is not None and t.lon_deg is not None]
    skipped = [t.id for t in proposed.terminals if t.lat_deg is None or t.lon_deg is None]
    ids = [t.id for t in located]
    lat = np.array([t.lat_deg for t in located], dtype=float)
    lon = np.array([t.lon_deg for t in located], dtype=float)
    after = decide(proposed, ids, times, (lat, lon))["decision"].to_numpy()
    if current is None or not current.terminals:
        before = np.zeros_like(after)
    else:
        known = {t.id for t in current.terminals}
        keep = np.array([i in known for i in ids], dtype=bool)
        before = np.zeros_like(after)
        if keep.any():
            before[:, keep] = decide(current, [i for i in ids if i in known], times,
                                     (lat[keep], lon[keep]))["decision"].to_numpy()
    lost = ((before != DENY) & (after == DENY)).sum(axis=0) * dt_h
    gained = ((before == DENY) & (after != DENY)).sum(axis=0) * dt_h
    accounts = np.array([t.account for t in located], dtype=object)
    per_term = pd.DataFrame({"terminal": ids, "account": accounts, "hours_lost": lost,
                             "hours_gained": gained})
    per_account = per_term.assign(affected=(per_term["hours_lost"] > 0)
                                  | (per_term["hours_gained"] > 0)).groupby(
        "account", as_index=False).agg(terminals_affected=("affected", "sum"),
                                       hours_lost=("hours_lost", "sum"),
                                       hours_gained=("hours_gained", "sum"))
    rows = []
    step_h = np.full(times.size, dt_h)
    for k, c in enumerate(proposed.contracts):  # over contracts (a handful)
        in_term, inside = contract_scope(c, times, lat, lon, accounts, feature=k)
        if not (in_term.any() and inside.any()):
            continue
        scope = np.ix_(in_term, inside)
        old = availability_terms(c.committed_availability_pct, before[scope] != DENY,
                                 step_h[in_term])
        new = availability_terms(c.committed_availability_pct, after[scope] != DENY,
                                 step_h[in_term], c.credit_per_breach_hour)
        rows.append({"contract": c.id, "account": c.account,
                     "committed_pct": c.committed_availability_pct,
                     "before_pct": old["achieved_pct"], "after_pct": new["achieved_pct"],
                     "breach": new["breach"], "breach_hours": new["breach_hours"],
                     "credit_owed": new["credit_owed"]})
    contracts = pd.DataFrame(rows, columns=["contract", "account", "committed_pct", "before_pct",
                                            "after_pct", "breach", "breach_hours",
                                            "credit_owed"])
    contracts["breach"] = contracts["breach"].astype(bool)
    return Preview((times[0], times[-1]), per_term, per_account, contracts, skipped)


def guard(preview: Preview, *, author: str, approver: str | None = None,
          approver_role: str | None = None, approval_reason: str | None = None) -> None:
    """Refuse (raise :class:`ChangeRefused`) a change that breaches a contract unless a second
    user with role ``approver``, not the author, approves it with a reason."""
    if preview.breaches.empty:
        return
    problem = None
    if approver is None:
        problem = "it breaches a contract and has no approval"
    elif approver == author:
        problem = f"the approver {approver!r} is the author; a second person must approve"
    elif approver_role != "approver":
        problem = f"{approver!r} has role {approver_role!r}, not 'approver'"
    elif not approval_reason:
        problem = "an approval needs a reason"
    if problem:
        raise ChangeRefused(f"change refused: {problem}. {preview.summary()}", preview)


def preview(store, change: Policy, window, *, step_s: float = 900.0) -> Preview:
    """``leotwin.preview(store, change, window)``: the impact of making ``change`` the policy.

    ``store`` is anything holding the current policy: a :class:`leotwin.store.Store` (its
    ``current()``), a :class:`~leotwin.policy.models.PolicyHistory` (latest version) or a
    :class:`~leotwin.policy.models.Policy`.
    """
    if hasattr(store, "current"):
        current = store.current()
    elif hasattr(store, "at"):
        current = store.at().policy
    else:
        current = store
    return preview_change(current, change, window, step_s=step_s)
