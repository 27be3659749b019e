"""``/api/explain/{terminal}``: why a terminal was allowed or cut at a time, as known at a
record time — :func:`leotwin.explain` over :func:`leotwin.decide`, as ``leotwin explain``.

A miss decides only the asked terminal at the asked instant
(:meth:`leotwin.service.state.ExplainCache.answer`, sub-millisecond once the version's zones
are compiled — the app compiles the latest version's at start-up); repeats, such as the
dashboard's clicks at a slider time, read the answer from the cache of that policy version.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
from fastapi import APIRouter

from ...timescale import to_utc_datetime64
from ..deps import CurrentUser, StateDep, tenant
from ..problems import ERROR_RESPONSES, ProblemError, not_found
from ..schemas import ExplainPublic, Time

router = APIRouter(prefix="/api/explain", tags=["explain"], responses=ERROR_RESPONSES)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@router.get("/{terminal}", response_model=ExplainPublic, response_model_exclude_unset=True)
def explain_terminal(terminal: str, user: CurrentUser, state: StateDep,
                     at: Time | None = None, as_of: Time | None = None):
    """Decision, rule, its reason and author for ``terminal`` at ``at`` (default now) under
    the policy version known at ``as_of`` (record time; default the latest). Customers only
    for their own terminals (404 otherwise), and without the version's author and reason
    (those describe the whole policy change, other tenants included). A plain ``def``: the
    whole answer (store look-ups and the decision) runs in one thread-pool call, never on the
    event loop."""
    own = tenant(user)
    if own is not None and state.store.terminal(terminal, account=own) is None:
        raise not_found(f"terminal {terminal!r}")
    at = _utc(at) or datetime.now(UTC)
    as_of = _utc(as_of)
    # One indexed query per request: a version recorded by another process is seen at once.
    history = state.policy.history()
    if history is None:
        raise not_found("policy (no version recorded yet)")
    version = history.at(as_of)  # PolicyError (422, field as_of) before the first version
    term = state.explain.terminals(version).get(terminal)
    if term is None or (own is not None and term.account != own):
        raise not_found(f"terminal {terminal!r} in policy version {version.version}")
    if term.lat_deg is None or term.lon_deg is None:
        raise ProblemError(422, f"terminal {terminal!r} has no service address", errors=[
            {"loc": ["path", "terminal"], "field": "terminal", "msg": "no service address"}])
    t64 = np.datetime64(to_utc_datetime64(at.replace(tzinfo=None)), "ns")
    info = state.explain.answer(version, term, t64)
    rate = info["max_mbps"]
    out = {"terminal": terminal, "account": term.account, "at": at, "as_of": as_of,
           "version": version.version, "version_recorded_at": version.recorded_at,
           "decision": info["decision"], "rule_id": info["rule"], "rule_kind": info["kind"],
           "rule_reason": info["reason"], "rule_author": info["author"],
           "max_mbps": None if not np.isfinite(rate) else float(rate)}
    if own is None:
        out.update(version_author=version.author, version_reason=version.reason)
    return out
