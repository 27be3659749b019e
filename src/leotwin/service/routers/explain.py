"""``/api/explain/{terminal}``: why a terminal was allowed or cut at a time, as known at a
record time — :func:`leotwin.explain` over :func:`leotwin.decide`, as ``leotwin explain``.

Deciding is vectorised over terminals, and one step of one terminal depends only on that
terminal and the rules; so the first request for a (policy version, time) decides that step
for every terminal of the version at once (about the cost of deciding one: the zones are
compiled either way), and later requests at that time — the dashboard's clicks at a slider
time — only read the answer (:func:`leotwin.explain` on the cached decisions). Concurrent
first requests for the same key wait for the one computation.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from datetime import UTC, datetime

import numpy as np
from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from ...policy.engine import decide, explain
from ...policy.models import PolicyHistory, PolicyVersion
from ...timescale import to_utc_datetime64
from ..deps import CurrentUser, StateDep, tenant
from ..problems import ERROR_RESPONSES, ProblemError, not_found
from ..schemas import ExplainPublic, Time
from ..state import ServiceState

router = APIRouter(prefix="/api/explain", tags=["explain"], responses=ERROR_RESPONSES)

_STEPS_KEPT = 64  # decided (version, time) steps kept


class _Located:
    """The terminals of one version with a service address, for deciding all at once."""

    def __init__(self, version: PolicyVersion) -> None:
        self.by_id = {t.id: t for t in version.policy.terminals}
        located = [t for t in version.policy.terminals
                   if t.lat_deg is not None and t.lon_deg is not None]
        self.ids = [t.id for t in located]
        self.lat = np.array([t.lat_deg for t in located], dtype=float)
        self.lon = np.array([t.lon_deg for t in located], dtype=float)


class ExplainCache:
    """Decided steps by (version, time), and the located terminals per version."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._located: OrderedDict[int, _Located] = OrderedDict()
        self._steps: OrderedDict[tuple, asyncio.Future] = OrderedDict()

    def located(self, version: PolicyVersion) -> _Located:
        with self._lock:
            hit = self._located.get(version.version)
        if hit is None:
            hit = _Located(version)
            with self._lock:
                self._located[version.version] = hit
                while len(self._located) > 4:
                    self._located.popitem(last=False)
        return hit

    async def step(self, version: PolicyVersion, located: _Located, t64: np.datetime64):
        key = (version.version, int(t64.astype("int64")))
        fut = self._steps.get(key)
        if fut is None:
            fut = asyncio.ensure_future(run_in_threadpool(_decide_step, version, located, t64))
            self._steps[key] = fut
            while len(self._steps) > _STEPS_KEPT:
                self._steps.popitem(last=False)
        else:
            self._steps.move_to_end(key)
        try:
            return await asyncio.shield(fut)
        except Exception:
            if self._steps.get(key) is fut:
                del self._steps[key]
            raise


def _decide_step(version: PolicyVersion, located: _Located, t64: np.datetime64):
    history = PolicyHistory(versions=[version])
    return decide(history, located.ids, np.array([t64], dtype="datetime64[ns]"),
                  (located.lat, located.lon))


def _cache(state: ServiceState) -> ExplainCache:
    cache = state.explain_cache.get("steps")
    if cache is None:
        cache = state.explain_cache.setdefault("steps", ExplainCache())
    return cache


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@router.get("/{terminal}", response_model=ExplainPublic, response_model_exclude_unset=True)
async def explain_terminal(terminal: str, user: CurrentUser, state: StateDep,
                           at: Time | None = None, as_of: Time | None = None):
    """Decision, rule, its reason and author for ``terminal`` at ``at`` (default now) under
    the policy version known at ``as_of`` (record time; default the latest). Customers only
    for their own terminals (404 otherwise), and without the version's author and reason
    (those describe the whole policy change, other tenants included). Every store call runs
    in the thread pool (never on the event loop)."""
    own = tenant(user)
    if own is not None and await run_in_threadpool(state.store.terminal, terminal,
                                                   account=own) is None:
        raise not_found(f"terminal {terminal!r}")
    at = _utc(at) or datetime.now(UTC)
    as_of = _utc(as_of)
    history = state.policy.cached_history(await run_in_threadpool(state.store.latest_version))
    if history is None:
        history = await run_in_threadpool(state.policy.history)
    if history is None:
        raise not_found("policy (no version recorded yet)")
    version = history.at(as_of)  # PolicyError (422, field as_of) before the first version
    cache = _cache(state)
    located = cache.located(version)
    term = located.by_id.get(terminal)
    if term is None or (own is not None and term.account != own):
        raise not_found(f"terminal {terminal!r} in policy version {version.version}")
    if term.lat_deg is None or term.lon_deg is None:
        raise ProblemError(422, f"terminal {terminal!r} has no service address", errors=[
            {"loc": ["path", "terminal"], "field": "terminal", "msg": "no service address"}])
    t64 = np.datetime64(to_utc_datetime64(at.replace(tzinfo=None)), "ns")
    decisions = await cache.step(version, located, t64)
    info = explain(decisions, term.id, t64)
    rate = info["max_mbps"]
    out = {"terminal": terminal, "account": term.account, "at": at, "as_of": as_of,
           "version": version.version, "version_recorded_at": version.recorded_at,
           "decision": info["decision"], "rule_id": info["rule"], "rule_kind": info["kind"],
           "rule_reason": info["reason"], "rule_author": info["author"],
           "max_mbps": None if not np.isfinite(rate) else float(rate)}
    if own is None:
        out.update(version_author=version.author, version_reason=version.reason)
    return out
