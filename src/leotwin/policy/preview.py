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

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from ..analytics.sla import availability_terms, contract_scope
from ..timescale import time_grid, to_utc_datetime64
from .engine import DENY, decide
from .errors import PolicyError
from .geofence import parse_geometry
from .models import Contract, Policy

#: The guard checks a change from max(now, its earliest valid_from) over at most this horizon
#: (and not past the latest term end of the contracts involved) ...
GUARD_HORIZON = timedelta(days=90)
#: ... in periods of this length (availability is a per-period commitment: a short cut must not
#: be diluted by a long window) ...
GUARD_PERIOD = timedelta(days=30)
#: ... at this step (10,000 terminals over 90 days: ~1.7 s on a 2-core machine).
GUARD_STEP_S = 3600.0
#: At most this many distinct change start times are checked (each over the horizon).
GUARD_MAX_STARTS = 8
_WEAKENED_COLUMNS = ["contract", "account", "change"]


@dataclass
class Preview:
    """What a proposed change does over ``window`` (UTC start, stop)."""

    window: tuple[np.datetime64, np.datetime64]
    terminals: pd.DataFrame  # terminal, account, hours_lost, hours_gained
    accounts: pd.DataFrame  # account, terminals_affected, hours_lost, hours_gained
    contracts: pd.DataFrame  # contract, account, committed_pct, before_pct, after_pct, breach,
    #                          breach_hours, credit_owed
    skipped_terminals: list[str]  # without a service address: not previewed
    #: contracts this change deletes or weakens (contract, account, change): needs approval
    weakened: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=_WEAKENED_COLUMNS))

    @property
    def needs_approval(self) -> bool:
        """The change causes or deepens a breach, or deletes or weakens a contract."""
        return not self.breaches.empty or not self.weakened.empty

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
        for row in self.weakened.itertuples():
            lines.append(f"CONTRACT {row.contract} ({row.account}) weakened: {row.change}")
        return "\n".join(lines)


class ChangeRefused(PolicyError):
    """A change would breach a contract and has no valid approval; ``preview`` explains it."""

    def __init__(self, message: str, preview: Preview):
        super().__init__(message, source="policy apply")
        self.preview = preview


def preview_change(current: Policy | None, proposed: Policy, window, *,
                   step_s: float = 900.0, period_s: float | None = None) -> Preview:
    """Preview ``proposed`` against ``current`` (None: an empty policy) over ``window``.

    With ``period_s`` each contract's availability is measured per period of that length
    (from the window start) and its row is the period the change hurts most (a breach it
    causes or deepens first): a short cut is not diluted by a long window."""
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
    weakened = contract_weakenings(current, proposed, at=_as_datetime(times[0]))
    if period_s is None:
        period = np.zeros(times.size, dtype=int)
    else:
        period = ((times - times[0]) // np.timedelta64(int(period_s * 1e9), "ns")).astype(int)
    for k, c in enumerate(obligations(current, proposed, weakened)):  # a handful
        in_term, inside = contract_scope(c, times, lat, lon, accounts, feature=k)
        if not (in_term.any() and inside.any()):
            continue
        best, best_key = None, None
        for q in np.unique(period[in_term]):
            sel = in_term & (period == q)
            scope = np.ix_(sel, inside)
            old = availability_terms(c.committed_availability_pct, before[scope] != DENY,
                                     step_h[sel])
            new = availability_terms(c.committed_availability_pct, after[scope] != DENY,
                                     step_h[sel], c.credit_per_breach_hour)
            drop = old["achieved_pct"] - new["achieved_pct"]
            key = (bool(new["breach"]) and drop > 0, bool(new["breach"]), drop)
            if best_key is None or key > best_key:
                best_key = key
                best = {"contract": c.id, "account": c.account,
                        "committed_pct": c.committed_availability_pct,
                        "before_pct": old["achieved_pct"], "after_pct": new["achieved_pct"],
                        "breach": new["breach"], "breach_hours": new["breach_hours"],
                        "credit_owed": new["credit_owed"]}
        rows.append(best)
    contracts = pd.DataFrame(rows, columns=["contract", "account", "committed_pct", "before_pct",
                                            "after_pct", "breach", "breach_hours",
                                            "credit_owed"])
    contracts["breach"] = contracts["breach"].astype(bool)
    return Preview((times[0], times[-1]), per_term, per_account, contracts, skipped, weakened)


def _as_datetime(t) -> datetime:
    return datetime.fromisoformat(str(np.datetime64(t, "us"))).replace(tzinfo=UTC)


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def contract_weakenings(current: Policy | None, proposed: Policy, *,
                        at: datetime | None = None) -> pd.DataFrame:
    """Contracts of ``current`` (still in term at ``at``) that ``proposed`` deletes or weakens:
    a lower commitment or credit, a smaller covered area, a shorter term, another account.
    Each is a change that needs an approval like a breach (``contract, account, change``)."""
    rows = []
    new = {c.id: c for c in proposed.contracts}
    for c in (current.contracts if current is not None else []):
        if at is not None and _aware(c.term_end) <= at:
            continue  # over: nothing left to weaken
        n = new.get(c.id)
        why = []
        if n is None:
            why.append("deleted")
        else:
            if n.account != c.account:
                why.append(f"account {c.account!r} → {n.account!r}")
            if n.committed_availability_pct < c.committed_availability_pct:
                why.append(f"commitment {c.committed_availability_pct:g}% → "
                           f"{n.committed_availability_pct:g}%")
            if n.credit_per_breach_hour < c.credit_per_breach_hour:
                why.append("credit per breach hour lowered")
            if _aware(n.term_start) > _aware(c.term_start) or \
                    _aware(n.term_end) < _aware(c.term_end):
                why.append("term shortened")
            if n.covered_area != c.covered_area and _area_shrinks(c, n):
                why.append("covered area shrunk")
        if why:
            rows.append({"contract": c.id, "account": c.account, "change": ", ".join(why)})
    return pd.DataFrame(rows, columns=_WEAKENED_COLUMNS)


def _area_shrinks(old: Contract, new: Contract) -> bool:
    a = parse_geometry(old.covered_area, source="contract", field="covered_area")
    b = parse_geometry(new.covered_area, source="contract", field="covered_area")
    return a.difference(b).area > 1e-9 * max(a.area, 1e-12)


def obligations(current: Policy | None, proposed: Policy,
                weakened: pd.DataFrame | None = None) -> list[Contract]:
    """The contracts a change is checked against: the union of the current and the proposed
    ones, each weakened or deleted contract by its current (stronger) terms."""
    if weakened is None:
        weakened = contract_weakenings(current, proposed)
    old = {c.id: c for c in (current.contracts if current is not None else [])}
    hit = set(weakened["contract"])
    out = [old[c.id] if c.id in hit else c for c in proposed.contracts]
    kept = {c.id for c in proposed.contracts}
    out += [c for cid, c in old.items() if cid not in kept and cid in hit]
    return out


def guard_windows(current: Policy | None, proposed: Policy, *, now: datetime | None = None,
                  horizon: timedelta = GUARD_HORIZON, period: timedelta | None = GUARD_PERIOD
                  ) -> list[tuple[datetime, datetime]]:
    """The windows the guard checks ``proposed`` over, chosen by the caller of the guard (the
    server), never by the author of the change: from max(now, each changed geofence's
    valid_from) to the latest term end of the contracts involved, at most ``horizon``, cut
    into ``period``-long pieces (None: uncut; preview those with ``period_s``). Each piece is
    checked on its own (a breach in any is a breach)."""
    now = _aware(now or datetime.now(UTC)).replace(microsecond=0)
    old = {g.id: g for g in (current.geofences if current is not None else [])}
    new = {g.id: g for g in proposed.geofences}
    changed = [g for gid, g in new.items() if old.get(gid) != g]
    changed += [g for gid, g in old.items() if gid not in new]
    starts = sorted({max(now, _aware(g.valid_from)) if g.valid_from else now for g in changed}
                    | {now})[:GUARD_MAX_STARTS]
    contracts = [*(current.contracts if current is not None else []), *proposed.contracts]
    last_end = max((_aware(c.term_end) for c in contracts), default=None)
    spans: list[list[datetime]] = []
    for s in starts:
        e = s + horizon if last_end is None else min(s + horizon, last_end)
        if e <= s:
            continue
        if spans and s <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], e)
        else:
            spans.append([s, e])
    if not spans:  # no contract in term after the change starts: nothing to breach
        return [(now, now + timedelta(seconds=GUARD_STEP_S))]
    if period is None:
        return [(s, max(e, s + timedelta(seconds=GUARD_STEP_S))) for s, e in spans]
    windows = []
    for s, e in spans:
        t = s
        while t < e:
            u = min(t + period, e)
            if (u - t).total_seconds() < GUARD_STEP_S:
                u = t + timedelta(seconds=GUARD_STEP_S)
            windows.append((t, u))
            t = u
    return windows


def guard(preview: Preview, *, author: str, approver: str | None = None,
          approver_role: str | None = None, approval_reason: str | None = None) -> None:
    """Refuse (raise :class:`ChangeRefused`) a change that breaches a contract unless a second
    user with role ``approver``, not the author, approves it with a reason."""
    if not preview.needs_approval:
        return
    problem = None
    if approver is None:
        problem = ("it breaches or weakens a contract and has no approval")
    elif approver == author:
        problem = f"the approver {approver!r} is the author; a second person must approve"
    elif approver_role != "approver":
        problem = f"{approver!r} has role {approver_role!r}, not 'approver'"
    elif not approval_reason:
        problem = "an approval needs a reason"
    if problem:
        raise ChangeRefused(f"change refused: {problem}. {preview.summary()}", preview)


def guarded_preview(current: Policy | None, proposed: Policy, window=None, *,
                    step_s: float = 900.0) -> Preview:
    """The preview a change is guarded with, by the service and the CLI alike: over the
    guard's own windows (:func:`guard_windows`: from max(now, the change's earliest
    valid_from) to the latest contract term end, capped, period by period) and, when the
    caller gave one, over the caller's ``window`` too — a caller can add a window, never
    choose the guarded one. The first preview that needs an approval wins; else the caller's,
    else the first guard window's."""
    previews = []
    if window is not None:
        previews.append(preview_change(current, proposed, window, step_s=step_s))
    for w in guard_windows(current, proposed, period=None):
        previews.append(preview_change(current, proposed, w, step_s=GUARD_STEP_S,
                                       period_s=GUARD_PERIOD.total_seconds()))
    return next((p for p in previews if p.needs_approval), previews[0])


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
