"""The decision engine: for every terminal and time step, allow / throttle / deny, and why.

Precedence (highest first; the first rule that decides wins — the one place it is defined):

1. ``status``        a suspended or standby terminal gets no service
2. ``registration``  where whitelist mode is on (a registration rule's countries/accounts, or an
                     account with ``registration_required``) only registered terminals
3. ``service_area``  service only inside a licensed country (when service areas are defined)
4. ``motion``        above the speed threshold only with a mobility plan; never above max speed
5. ``roaming``       at most N days per calendar year outside the account's country
6. ``contract``      inside its covered area and term, a contracted account is not cut by a
                     geofence — unless that geofence was approved to ``override_contracts``;
                     it cancels geofences only (quota still applies) and explains the allow
7. ``geofence``      among geofences covering the point, active at t and in scope, the most
                     specific scope wins (accounts > plans > terminal kinds); at equal
                     specificity deny > throttle > allow (overlapping contradictory rules of
                     equal specificity are rejected when the policy is checked)
8. ``quota``         priority data spent (``used_gb`` ≥ plan quota) → throttle to the fallback
9. ``plan``          otherwise allow, up to the plan's maximum rate

Each decision carries a rule id (``status:suspended``, ``geofence:<id>``, ``plan:<name>``…)
and every rule id has a human reason, an author and the change reason of the policy version.

Vectorized: memberships are computed once per distinct position (fixed terminals: once per
terminal) with :class:`~leotwin.policy.geofence.ZoneIndex`, compiled once per zone content
and reused across calls; rules are applied as boolean masks over (time, terminal) blocks,
looping only over rules. :func:`explain_at` is the one-terminal, one-instant path (no Dataset).

State across windows (:class:`PolicyState`): two rules depend on what happened before the
decided window — ``roaming`` (distinct UTC calendar days outside the account's country so far
this calendar year) and ``quota`` (priority data used so far this UTC calendar month). ``decide(...,
state=S, return_state=True)`` starts from ``S`` (the state at the start of the window) and also
returns the state at its end, so that consecutive windows decided one after the other give the
same decisions as one long window. Roaming is causal and advances per step: a day counts from
its first step outside the home country (and it stays counted for the rest of that day).
``decide`` knows nothing about the data actually delivered, so the quota state it returns has
only been reset at month changes; the caller adds the window's delivered volume with
:meth:`PolicyState.add_usage` — quota therefore advances per window (a run: per chunk; inside
one window ``used_gb`` is the value at its start, in the month of its start, and 0 for steps in
a later month).
"""

from __future__ import annotations

import json
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import xarray as xr

from .._arrays import run_starts
from ..frames import great_circle_km
from ..timescale import NS_PER_DAY, to_utc_datetime64
from .errors import PolicyError
from .geofence import ZoneIndex, country_polygons, parse_geometry
from .models import Geofence, Policy, PolicyHistory, PolicyVersion

DECISIONS = ("allow", "throttle", "deny")
ALLOW, THROTTLE, DENY = 0, 1, 2
PRECEDENCE = ("status", "registration", "service_area", "motion", "roaming", "contract",
              "geofence", "quota", "plan")
_SEVERITY = {"allow": 0, "throttle": 1, "deny": 2}


@dataclass
class _Rules:
    """Rule table built while deciding: id → kind, reason, author."""

    ids: list[str]
    kind: list[str]
    reason: list[str]
    author: list[str]

    def add(self, rule_id: str, kind: str, reason: str, author: str = "") -> int:
        if rule_id in self._index:
            return self._index[rule_id]
        self._index[rule_id] = len(self.ids)
        for lst, v in ((self.ids, rule_id), (self.kind, kind), (self.reason, reason),
                       (self.author, author)):
            lst.append(v)
        return self._index[rule_id]

    def __post_init__(self):
        self._index: dict[str, int] = {}


def _to_ns(dt) -> int | None:
    return None if dt is None else int(to_utc_datetime64(dt.replace(tzinfo=None)).astype(
        "int64"))


def _in_window(t_ns: np.ndarray, start, end) -> np.ndarray:
    ok = np.ones(t_ns.shape, bool)
    if start is not None:
        ok &= t_ns >= _to_ns(start)
    if end is not None:
        ok &= t_ns < _to_ns(end)
    return ok


def check_overlaps(policy: Policy) -> None:
    """Reject overlapping contradictory geofences of equal specificity (ambiguous precedence).

    Two geofences conflict when their actions differ, their scopes have the same specificity
    and can match the same terminal, their validity windows overlap and their areas overlap
    (more than touching). Raises :class:`PolicyError` naming the later geofence."""
    fences = policy.geofences
    geoms = [parse_geometry(g.geometry, source="policy", feature=k, field="geofences.geometry")
             for k, g in enumerate(fences)]
    for j in range(len(fences)):  # over pairs of rules (tens), a policy check, not a hot path
        for i in range(j):
            a, b = fences[i], fences[j]
            if a.action == b.action or a.scope.specificity != b.scope.specificity:
                continue
            if not (_scopes_meet(a, b) and _windows_meet(a, b)):
                continue
            if geoms[i].intersection(geoms[j]).area > 0:
                raise PolicyError(
                    f"geofence {b.id!r} ({b.action}) overlaps geofence {a.id!r} ({a.action}) "
                    "with the same scope specificity and validity: precedence would be "
                    "ambiguous; narrow one's scope, window or area", source="policy",
                    feature=j, field="geofences")


def _scopes_meet(a: Geofence, b: Geofence) -> bool:
    for field in ("accounts", "plans", "terminal_kinds"):
        x, y = getattr(a.scope, field), getattr(b.scope, field)
        if x is not None and y is not None and not set(x) & set(y):
            return False
    return True


def _windows_meet(a: Geofence, b: Geofence) -> bool:
    lo = max(a.valid_from or b.valid_from, b.valid_from or a.valid_from) if (
        a.valid_from or b.valid_from) else None
    hi = min(a.valid_to or b.valid_to, b.valid_to or a.valid_to) if (
        a.valid_to or b.valid_to) else None
    return lo is None or hi is None or lo < hi


class _SharedZones:
    """A compiled :class:`ZoneIndex` shared between calls (and threads).

    GEOS prepared geometries initialise their internal indexes lazily and are not thread-safe
    (libgeos/geos#825) while shapely releases the GIL in ``intersects_xy``: queries of one
    shared index are serialised by its lock (a query of one point takes microseconds)."""

    def __init__(self, index: ZoneIndex) -> None:
        self.index = index
        self._lock = threading.Lock()

    def contains(self, lat_deg, lon_deg) -> np.ndarray:
        with self._lock:
            return self.index.contains(lat_deg, lon_deg)


class _ZoneCache:
    """Compiled zone indexes by the content of their zones, least recently used dropped.

    Compiling a zone (validity check, prepared geometry, fine grid) costs milliseconds per
    zone and ~0.5 s for the first country borders, while deciding one terminal at one step
    costs far less: without this cache every ``decide`` call paid the compile again (the
    service's one-terminal explanations, a run's every chunk). The key is the zones' content
    (canonical JSON of the GeoJSON, or the country codes), not the policy object, so a changed
    policy can never be answered from another policy's zones; a failed compile is not cached
    (the error is raised again, naming the same feature)."""

    def __init__(self, max_entries: int = 16) -> None:
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._building: dict[tuple, threading.Lock] = {}
        self._items: OrderedDict[tuple, _SharedZones] = OrderedDict()

    def get(self, key: tuple, build: Callable[[], list]) -> _SharedZones:
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                return hit
            building = self._building.setdefault(key, threading.Lock())
        try:
            with building:  # concurrent first calls for one key compile it once
                with self._lock:
                    hit = self._items.get(key)
                if hit is None:
                    hit = _SharedZones(ZoneIndex(build()))
                    with self._lock:
                        self._items[key] = hit
                        while len(self._items) > self.max_entries:
                            self._items.popitem(last=False)
        finally:
            with self._lock:
                self._building.pop(key, None)
        return hit

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


_ZONES = _ZoneCache()
# Canonical JSON of a frozen model's geometry, by the model (weakly referenced): serialising
# a 70 kB frontline polygon costs milliseconds, more than a one-terminal decision. Geofences
# and contracts are frozen models; their GeoJSON is treated as a value (never edited in place:
# a changed geometry is a new model, e.g. ``model_copy(update=...)``, hence a new key).
_GEOMETRY_KEYS: dict[int, tuple[weakref.ref, str]] = {}


def _geometry_key(model, geometry) -> str:
    """Canonical JSON of ``geometry`` (a field of the frozen ``model``), memoised per model."""
    hit = _GEOMETRY_KEYS.get(id(model))
    if hit is not None and hit[0]() is model:
        return hit[1]
    key = geometry if isinstance(geometry, str) else json.dumps(
        geometry, sort_keys=True, separators=(",", ":"), allow_nan=True)
    ident = id(model)
    _GEOMETRY_KEYS[ident] = (weakref.ref(model, lambda _, k=ident: _GEOMETRY_KEYS.pop(k, None)),
                             key)
    return key


def _country_zones(countries: list[str]) -> _SharedZones:
    def build():
        polys = country_polygons(countries)
        return [polys[c] for c in countries]
    return _ZONES.get(("countries", tuple(countries)), build)


def _zones(items: Sequence, attr: str, field: str) -> _SharedZones:
    """The compiled zones of ``items``' geometry attribute ``attr`` (geofences' ``geometry``,
    contracts' ``covered_area``; ``field``: its name in errors), shared by content."""
    key = (field.partition(".")[0], tuple(_geometry_key(x, getattr(x, attr)) for x in items))
    return _ZONES.get(key, lambda: [
        parse_geometry(getattr(x, attr), source="policy", feature=k, field=field)
        for k, x in enumerate(items)])


def _positions(positions, times, n_term):
    """(lat, lon) arrays shaped (n_time, n_term) from a Ground, a pair of arrays or a table."""
    if hasattr(positions, "terminal_positions"):
        lat, lon, _ = positions.terminal_positions(times)
    else:
        lat, lon = (np.asarray(x, dtype=np.float64) for x in positions)
    lat = np.broadcast_to(lat, (times.size, n_term))
    lon = np.broadcast_to(lon, (times.size, n_term))
    return lat, lon


#: Decimal gigabyte in bits (as in :mod:`leotwin.analytics.sla`).
BITS_PER_GB = 8e9


def _month_of_day(day: np.ndarray | int) -> np.ndarray:
    """Calendar month (months since 1970-01) of UTC day numbers (days since 1970-01-01)."""
    return np.asarray(day, dtype="int64").astype("datetime64[D]").astype(
        "datetime64[M]").astype(np.int64)


def _year_of_day(day: np.ndarray | int) -> np.ndarray:
    return np.asarray(day, dtype="int64").astype("datetime64[D]").astype(
        "datetime64[Y]").astype(np.int64)


@dataclass(frozen=True)
class PolicyState:
    """Policy state that accumulates over time, per terminal, after the step ``last_step``.

    ``terminal`` (n_term,) ids in the order of the decided terminals; ``last_step`` the start
    instant (UTC ``datetime64[ns]``) of the last step taken into account, None before any step;
    ``roaming_days`` distinct UTC days outside the account's country in the calendar year of
    ``last_step`` up to and including its day; ``outside_today`` whether that day is already
    counted; ``used_gb`` priority data (decimal GB) used in the calendar month of ``last_step``
    — only for terminals with a plan (a quota), 0 for the others. Small: written next to every
    run chunk (:meth:`to_dict` is JSON-ready and round-trips exactly).
    """

    terminal: np.ndarray
    last_step: np.datetime64 | None = None
    roaming_days: np.ndarray | None = None
    outside_today: np.ndarray | None = None
    used_gb: np.ndarray | None = None

    def __post_init__(self):
        ids = np.asarray(self.terminal, dtype=str)
        n = ids.size
        object.__setattr__(self, "terminal", ids)
        for name, dtype in (("roaming_days", np.int64), ("outside_today", bool),
                            ("used_gb", np.float64)):
            v = getattr(self, name)
            v = np.zeros(n, dtype) if v is None else np.asarray(v, dtype=dtype)
            if v.shape != (n,):
                raise ValueError(f"PolicyState.{name} must have one entry per terminal ({n}), "
                                 f"got shape {v.shape}")
            object.__setattr__(self, name, v)
        if self.last_step is not None:
            object.__setattr__(self, "last_step", np.datetime64(self.last_step, "ns"))

    @classmethod
    def initial(cls, terminals: Sequence[str]) -> PolicyState:
        """The state before any step: no roaming day, no priority data used."""
        return cls(np.asarray(terminals, dtype=str))

    @property
    def day(self) -> int | None:
        """UTC day number (days since 1970-01-01) of ``last_step``."""
        if self.last_step is None:
            return None
        return int(self.last_step.astype(np.int64) // NS_PER_DAY)

    def add_usage(self, times, throughput_mbps: np.ndarray, step_s: np.ndarray | float,
                  metered: np.ndarray | None = None) -> PolicyState:
        """This state (as returned by :func:`decide` for the window ``times``) plus the volume
        delivered in that window: ``throughput_mbps`` (n_time, n_term) × the step durations
        ``step_s`` (seconds, scalar or (n_time,)), counted for the steps in the month of
        ``last_step`` and for the ``metered`` terminals (default: all)."""
        t_ns = np.atleast_1d(to_utc_datetime64(times)).astype("datetime64[ns]").astype(np.int64)
        if t_ns.size == 0:
            return self
        if self.last_step is None or int(self.last_step.astype(np.int64)) != int(t_ns[-1]):
            raise ValueError("add_usage: times must end at the state's last_step (the window "
                             "the state was returned for)")
        thr = np.asarray(throughput_mbps, dtype=np.float64)
        if thr.shape != (t_ns.size, self.terminal.size):
            raise ValueError(f"throughput_mbps must have shape {(t_ns.size, self.terminal.size)}"
                             f", got {thr.shape}")
        dur_s = np.broadcast_to(np.asarray(step_s, dtype=np.float64), t_ns.shape)
        this_month = _month_of_day(t_ns // NS_PER_DAY) == _month_of_day(self.day)
        gb = (dur_s * this_month * (1e6 / BITS_PER_GB)) @ thr
        if metered is not None:
            gb = np.where(np.asarray(metered, bool), gb, 0.0)
        return replace(self, used_gb=self.used_gb + gb)

    def to_dict(self) -> dict:
        """JSON-ready; exact round trip through :meth:`from_dict`."""
        last = (None if self.last_step is None
                else f"{np.datetime_as_string(self.last_step, 'ns')}Z")
        return {"terminal": self.terminal.tolist(), "last_step": last,
                "roaming_days": self.roaming_days.tolist(),
                "outside_today": self.outside_today.tolist(),
                "used_gb": self.used_gb.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> PolicyState:
        last = data.get("last_step")
        return cls(np.asarray(data["terminal"], dtype=str),
                   None if last is None else to_utc_datetime64(last),
                   np.asarray(data["roaming_days"], np.int64),
                   np.asarray(data["outside_today"], bool),
                   np.asarray(data["used_gb"], np.float64))

    def equals(self, other: PolicyState) -> bool:
        return self.to_dict() == other.to_dict()


def _resolve(policy: Policy | PolicyHistory, as_of) -> tuple[Policy, PolicyVersion | None]:
    if isinstance(policy, PolicyHistory):
        version = policy.at(as_of)
        return version.policy, version
    return policy, None


def _terminals(pol: Policy, terminals: Sequence[str] | None) -> tuple[list[str], list]:
    by_id = {t.id: t for t in pol.terminals}
    ids = [t.id for t in pol.terminals] if terminals is None else [str(t) for t in terminals]
    for k, tid in enumerate(ids):
        if tid not in by_id:
            raise PolicyError(f"unknown terminal {tid!r}", source="decide", feature=k,
                              field="terminals")
    return ids, [by_id[t] for t in ids]


def metered_terminals(policy: Policy | PolicyHistory, terminals: Sequence[str] | None = None,
                      *, as_of=None) -> np.ndarray:
    """Bool per terminal: its plan has a priority quota, so the ``quota`` rule depends on the
    data it used (:attr:`PolicyState.used_gb` is counted for these terminals only)."""
    pol, _ = _resolve(policy, as_of)
    plans = {p.name for p in pol.plans}
    _, terms = _terminals(pol, terminals)
    return np.array([bool(t.plan) and t.plan in plans for t in terms], dtype=bool)


@dataclass
class _Points:
    """Distinct positions of a (time, terminal) block and their country memberships."""

    lat: np.ndarray
    lon: np.ndarray
    moving: np.ndarray
    pidx: np.ndarray
    p_lat: np.ndarray
    p_lon: np.ndarray
    countries: list[str]
    c_member: np.ndarray
    c_col: dict[str, int]


def _points(pol: Policy, positions_of_terminals, times: np.ndarray, n_term: int) -> _Points:
    n_t = times.size
    lat, lon = _positions(positions_of_terminals, times, n_term)
    # Distinct points: fixed terminals once, moving ones per step.
    moving = np.flatnonzero((np.ptp(lat, axis=0) > 0) | (np.ptp(lon, axis=0) > 0))
    fixed_mask = np.ones(n_term, bool)
    fixed_mask[moving] = False
    pidx = np.empty((n_t, n_term), np.int64)
    pidx[:, fixed_mask] = np.arange(n_term)[fixed_mask][None, :]
    pidx[:, moving] = n_term + np.arange(n_t * moving.size).reshape(n_t, moving.size)
    p_lat = np.r_[lat[0], lat[:, moving].ravel()]
    p_lon = np.r_[lon[0], lon[:, moving].ravel()]
    # Country memberships for every country any rule mentions.
    countries = sorted({a.country for a in pol.accounts}
                       | {c for s in pol.service_areas for c in s.countries}
                       | {c for r in pol.registration_rules for c in (r.countries or [])})
    c_member = np.zeros((p_lat.size, 0), bool)
    if countries:
        c_member = _country_zones(countries).contains(p_lat, p_lon)
    return _Points(lat, lon, moving, pidx, p_lat, p_lon, countries, c_member,
                   {c: k for k, c in enumerate(countries)})


def _outside_home(pol: Policy, terms: list, pts: _Points) -> np.ndarray:
    """Bool (n_time, n_terminal): outside the account's country (roaming rules only)."""
    outside = np.zeros(pts.pidx.shape, bool)
    if pol.roaming_rules and pts.countries:
        accounts = {a.id: a for a in pol.accounts}
        home_col = np.array([pts.c_col[accounts[t.account].country] for t in terms])
        outside = ~pts.c_member[pts.pidx, home_col[None, :]]
    return outside


def _check_state(state: PolicyState, ids: list[str], t_ns: np.ndarray) -> None:
    if state.terminal.size != len(ids) or not np.array_equal(state.terminal, np.asarray(ids,
                                                                                     str)):
        raise ValueError("state: its terminals are not the decided terminals (same ids, same "
                         "order)")
    if state.last_step is not None and t_ns.size and t_ns[0] <= int(
            state.last_step.astype(np.int64)):
        raise ValueError(f"state: it is the state after {state.last_step}; the window must "
                         "start after it")


def _quota_used_gb(state: PolicyState, t_ns: np.ndarray) -> np.ndarray:
    """Per (time, terminal): priority data used this month — the state's value in its month,
    0 in any later month (quota state advances per window)."""
    month = _month_of_day(t_ns // NS_PER_DAY)
    same = month == (_month_of_day(state.day) if state.day is not None else -(1 << 62))
    return np.where(same[:, None], state.used_gb[None, :], 0.0)


def _end_state(state: PolicyState, t_ns: np.ndarray, roaming: tuple | None) -> PolicyState:
    """``state`` advanced to the last step of ``t_ns`` (roaming counts from ``roaming``,
    used_gb reset when the month changed)."""
    if t_ns.size == 0:
        return state
    last = np.datetime64(int(t_ns[-1]), "ns")
    used = state.used_gb
    if state.day is None or _month_of_day(state.day) != _month_of_day(t_ns[-1] // NS_PER_DAY):
        used = np.zeros_like(used)
    if roaming is None:     # no roaming rule: nothing counted
        days, today = np.zeros_like(state.roaming_days), np.zeros_like(state.outside_today)
    else:
        days, today = roaming
    return PolicyState(state.terminal, last, days, today, used)


def advance_state(policy: Policy | PolicyHistory, terminals: Sequence[str] | None, times,
                  positions_of_terminals, state: PolicyState | None = None, *,
                  as_of=None) -> PolicyState:
    """The state :func:`decide` would return for this window (before
    :meth:`PolicyState.add_usage`), without deciding: cheap when the policy has no roaming rule
    (time bookkeeping only), otherwise the country memberships of the positions."""
    pol, _ = _resolve(policy, as_of)
    ids, terms = _terminals(pol, terminals)
    times = np.atleast_1d(to_utc_datetime64(times)).astype("datetime64[ns]")
    t_ns = times.astype("int64")
    state = PolicyState.initial(ids) if state is None else state
    _check_state(state, ids, t_ns)
    roaming = None
    if pol.roaming_rules and t_ns.size:
        pts = _points(pol, positions_of_terminals, times, len(terms))
        _, *roaming = _roaming_days(_outside_home(pol, terms, pts), t_ns, state)
    return _end_state(state, t_ns, roaming)


def decide(policy: Policy | PolicyHistory, terminals: Sequence[str] | None, times,
           positions_of_terminals, *, as_of=None, used_gb: np.ndarray | None = None,
           speed_kmh: np.ndarray | None = None, chunk_steps: int = 720,
           state: PolicyState | None = None, return_state: bool = False
           ) -> xr.Dataset | tuple[xr.Dataset, PolicyState]:
    """Decision, rule and rate per (time, terminal).

    ``policy`` is a :class:`Policy` or a :class:`PolicyHistory` (then the version known at
    ``as_of`` — record time — is used; default the latest); every rule applies only inside its
    own validity window at each ``time``. ``terminals`` are ids of ``policy.terminals`` (None:
    all). ``positions_of_terminals`` is a :class:`leotwin.ground.Ground`, or ``(lat_deg,
    lon_deg)`` arrays shaped ``(n_terminal,)`` or ``(n_time, n_terminal)``. ``speed_kmh``
    defaults to the ground speed between steps; ``used_gb`` (same shape) is priority data used
    this month. Returns ``decision`` (int8 codes, ``DECISIONS``), ``rule`` (index into the
    ``rule_id`` dimension, whose ``rule_kind``, ``rule_reason`` and ``rule_author`` explain it)
    and ``max_mbps``.

    ``state`` (a :class:`PolicyState` for the same terminals, after a step before ``times``)
    carries roaming days and priority data used in from an earlier window: the roaming count
    continues from it, and the quota rule uses its ``used_gb`` (give ``used_gb`` or ``state``,
    not both; without either the quota rule does not apply). With ``return_state=True`` the
    result is ``(dataset, state at the end of the window)`` (module docstring: "State across
    windows").
    """
    d = _decide(policy, terminals, times, positions_of_terminals, as_of=as_of,
                used_gb=used_gb, speed_kmh=speed_kmh, chunk_steps=chunk_steps, state=state,
                return_state=return_state)
    rules, version = d.rules, d.version
    ds = xr.Dataset(
        {
            "decision": (("time", "terminal"), d.decision,
                         {"flag_values": list(range(len(DECISIONS))),
                          "flag_meanings": " ".join(DECISIONS)}),
            "rule": (("time", "terminal"), d.rule, {"description": "index into rule_id"}),
            "max_mbps": (("time", "terminal"), d.max_mbps, {"units": "Mbit/s",
                                                            "description": "0 when denied"}),
            "rule_kind": (("rule_id",), np.array(rules.kind, dtype=str)),
            "rule_reason": (("rule_id",), np.array(rules.reason, dtype=str)),
            "rule_author": (("rule_id",), np.array(rules.author, dtype=str)),
        },
        coords={"time": d.times, "terminal": np.array(d.ids, dtype=str),
                "account": ("terminal", d.term_account.astype(str)),
                "rule_id": np.array(rules.ids, dtype=str)},
        attrs={"policy_version": version.version if version else 0,
               "policy_recorded_at": version.recorded_at.isoformat() if version else "",
               "precedence": " > ".join(PRECEDENCE)},
    )
    if return_state:
        return ds, d.end_state
    return ds


@dataclass
class _Decided:
    """What :func:`decide` computes, before it is wrapped in a Dataset."""

    times: np.ndarray
    ids: list[str]
    term_account: np.ndarray
    decision: np.ndarray
    rule: np.ndarray
    max_mbps: np.ndarray
    rules: _Rules
    version: PolicyVersion | None
    end_state: PolicyState | None


def _decide(policy, terminals, times, positions_of_terminals, *, as_of, used_gb, speed_kmh,
            chunk_steps, state, return_state) -> _Decided:
    """:func:`decide`'s arrays (see there)."""
    pol, version = _resolve(policy, as_of)
    ids, terms = _terminals(pol, terminals)
    times = np.atleast_1d(to_utc_datetime64(times)).astype("datetime64[ns]")
    n_t, n_term = times.size, len(terms)
    t_ns = times.astype("int64")
    if state is not None:
        if used_gb is not None:
            raise ValueError("give used_gb or state (which carries used_gb), not both")
        _check_state(state, ids, t_ns)
        used_gb = _quota_used_gb(state, t_ns)
    elif return_state:
        state = PolicyState.initial(ids)
    pts = _points(pol, positions_of_terminals, times, n_term)
    lat, lon, moving, pidx = pts.lat, pts.lon, pts.moving, pts.pidx
    p_lat, p_lon, c_member, c_col = pts.p_lat, pts.p_lon, pts.c_member, pts.c_col

    rules = _Rules([], [], [], [])
    change = f" (policy v{version.version}: {version.reason})" if version else ""
    plans = {p.name: p for p in pol.plans}
    term_plan = [plans.get(t.plan) if t.plan else None for t in terms]
    plan_max = np.array([p.max_mbps if p else np.inf for p in term_plan])
    term_account = np.array([t.account for t in terms], dtype=object)
    term_kind = np.array([t.kind for t in terms], dtype=object)
    term_plan_name = np.array([t.plan or "" for t in terms], dtype=object)

    def in_countries(codes) -> np.ndarray:  # per point
        if not codes:
            return np.zeros(p_lat.size, bool)
        return c_member[:, [c_col[c] for c in codes]].any(axis=1)

    fences = pol.geofences
    f_member = (_zones(fences, "geometry", "geofences.geometry").contains(p_lat, p_lon)
                if fences else np.zeros((p_lat.size, 0), bool))
    contracts = pol.contracts
    k_member = (_zones(contracts, "covered_area", "contracts.covered_area").contains(p_lat, p_lon)
                if contracts else np.zeros((p_lat.size, 0), bool))

    # Speeds from positions when not given (ground speed between steps).
    if speed_kmh is None:
        speed_kmh = np.zeros((n_t, n_term))
        if moving.size and n_t > 1:
            d_km = great_circle_km(lat[:-1, moving], lon[:-1, moving], lat[1:, moving],
                                   lon[1:, moving])
            dt_h = (np.diff(t_ns) / 3.6e12)[:, None]
            v = d_km / dt_h
            speed_kmh[1:, moving] = v
            speed_kmh[0, moving] = v[0]
    speed_kmh = np.broadcast_to(np.asarray(speed_kmh, float), (n_t, n_term))

    # Roaming: distinct calendar days outside the home country, counted per calendar year.
    decision = np.zeros((n_t, n_term), np.int8)
    rule = np.full((n_t, n_term), -1, np.int16)
    max_mbps = np.broadcast_to(plan_max, (n_t, n_term)).astype(np.float32)
    roam_days, roam_end = None, None
    if pol.roaming_rules and n_t:
        start = state if state is not None else PolicyState.initial(ids)
        roam_days, *roam_end = _roaming_days(_outside_home(pol, terms, pts), t_ns, start)

    for a in range(0, n_t, max(1, chunk_steps)):  # bounded memory; rules loop inside
        b = min(a + chunk_steps, n_t)
        sl = slice(a, b)
        _decide_block(
            sl, pol, terms, rules, change, pidx[sl], t_ns[sl], in_countries, c_col, c_member,
            f_member, k_member, fences, contracts, plans, term_plan, term_account, term_kind,
            term_plan_name, speed_kmh[sl], roam_days[sl] if roam_days is not None else None,
            None if used_gb is None else np.broadcast_to(used_gb, (n_t, n_term))[sl],
            decision[sl], rule[sl], max_mbps[sl])
    end_state = _end_state(state, t_ns, roam_end) if return_state else None
    return _Decided(times, ids, term_account, decision, rule, max_mbps, rules, version,
                    end_state)


def _roaming_days(outside: np.ndarray, t_ns: np.ndarray, start: PolicyState
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per (time, terminal): distinct UTC calendar days outside the home country so far this
    calendar year, continuing from ``start`` — causal: a day counts from its first step outside.
    Also returns the count and the "today counted" flags after the last step."""
    day = t_ns // NS_PER_DAY
    first_of_day = run_starts(day)
    first_idx = np.flatnonzero(first_of_day)
    day_id = np.cumsum(first_of_day) - 1
    # outside at some step of the day so far (cumulative OR inside each day)
    cum = np.cumsum(outside, axis=0, dtype=np.int64)
    before = np.concatenate([np.zeros((1, outside.shape[1]), np.int64), cum])[first_idx]
    so_far = (cum - before[day_id]) > 0
    carried = start.day is not None and int(day[0]) == start.day
    if carried:                       # the window continues the state's day
        so_far[day_id == 0] |= start.outside_today[None, :]
    any_day = so_far[np.r_[first_idx[1:] - 1, day.size - 1]]          # (n_days, n_term)
    counted = np.cumsum(any_day, axis=0) - any_day                    # earlier days
    day_year = _year_of_day(day[first_idx])
    base = np.zeros(outside.shape[1], np.int64)
    if start.day is not None and int(_year_of_day(start.day)) == int(day_year[0]):
        base = start.roaming_days - (start.outside_today if carried else 0)
    counted += base[None, :]
    for s in np.flatnonzero(run_starts(day_year))[1:]:  # over new calendar years (0 or 1)
        counted[s:] -= counted[s].copy()
    counts = counted[day_id] + so_far
    return counts, counts[-1].copy(), so_far[-1].copy()


def _decide_block(sl, pol, terms, rules, change, pidx, t_ns, in_countries, c_col, c_member,
                  f_member, k_member, fences, contracts, plans, term_plan, term_account,
                  term_kind, term_plan_name, speed, roam_days, used_gb, decision, rule,
                  max_mbps):
    n, n_term = pidx.shape
    undecided = np.ones((n, n_term), bool)

    def apply(mask, code, rid, rate=None):
        m = mask & undecided
        decision[m] = code
        rule[m] = rid
        if code == DENY:
            max_mbps[m] = 0.0
        elif rate is not None:
            max_mbps[m] = np.minimum(max_mbps[m], rate if np.ndim(rate) == 0 else rate[m])
        undecided[m] = False

    # 1. status
    for status in ("suspended", "standby"):
        mask = np.array([t.status == status for t in terms])
        if mask.any():
            rid = rules.add(f"status:{status}", "status", f"terminal is {status}" + change)
            apply(np.broadcast_to(mask, (n, n_term)), DENY, rid)
    # 2. registration (whitelist)
    unregistered = np.array([not t.registered for t in terms])
    if unregistered.any():
        for r in pol.registration_rules:
            acc_ok = np.ones(n_term, bool) if r.accounts is None else np.isin(term_account,
                                                                              r.accounts)
            where = (np.ones(n, bool)[:, None] if r.countries is None
                     else in_countries(r.countries)[pidx])
            rid = rules.add(f"registration:{r.id}", "registration",
                            "whitelist mode: terminal not registered" + change)
            apply(where & (acc_ok & unregistered)[None, :], DENY, rid)
        required = {a.id: a.registration_required for a in pol.accounts}
        req = np.array([required[x] for x in term_account], dtype=bool)
        if req.any():
            rid = rules.add("registration:account", "registration",
                            "account requires registered terminals" + change)
            apply(np.broadcast_to(req & unregistered, (n, n_term)), DENY, rid)
    # 3. service area
    if pol.service_areas:
        licensed = in_countries(sorted({c for s in pol.service_areas for c in s.countries}))
        names = ", ".join(sorted({c for s in pol.service_areas for c in s.countries}))
        rid = rules.add("service_area", "service_area",
                        f"outside the licensed countries ({names})" + change)
        apply(~licensed[pidx], DENY, rid)
    # 4. motion
    mobile = np.array([bool(p and p.mobility_allowed) for p in term_plan])
    for r in pol.motion_rules:
        rid = rules.add(f"motion:{r.id}:max", "motion",
                        f"faster than {r.max_speed_kmh:g} km/h" + change)
        apply(speed > r.max_speed_kmh, DENY, rid)
        rid = rules.add(f"motion:{r.id}", "motion",
                        f"moving above {r.speed_threshold_kmh:g} km/h without a mobility plan"
                        + change)
        apply((speed > r.speed_threshold_kmh) & ~mobile[None, :], DENY, rid)
    # 5. roaming
    for r in pol.roaming_rules:
        rid = rules.add(f"roaming:{r.id}", "roaming",
                        f"more than {r.max_days_per_year} days this year outside the account's "
                        "country" + change)
        apply(roam_days > r.max_days_per_year, DENY, rid)
    # 6. contract protection (decides only where a geofence would otherwise cut)
    protected = np.full((n, n_term), -1, np.int64)
    for k, c in enumerate(contracts):
        active = _in_window(t_ns, c.term_start, c.term_end)
        mask = active[:, None] & k_member[pidx, k] & (term_account == c.account)[None, :]
        protected[mask & (protected < 0)] = k
    # 7. geofences: ascending priority so that the strongest one is written last.
    shield = np.zeros((n, n_term), bool)
    if fences:
        order = sorted(range(len(fences)), key=lambda k: (fences[k].scope.specificity,
                                                          _SEVERITY[fences[k].action]))
        best = np.full((n, n_term), -1, np.int64)
        for k in order:  # over rules
            g = fences[k]
            scope = np.ones(n_term, bool)
            if g.scope.accounts is not None:
                scope &= np.isin(term_account, g.scope.accounts)
            if g.scope.plans is not None:
                scope &= np.isin(term_plan_name, g.scope.plans)
            if g.scope.terminal_kinds is not None:
                scope &= np.isin(term_kind, g.scope.terminal_kinds)
            active = _in_window(t_ns, g.valid_from, g.valid_to)
            if not (scope.any() and active.any()):
                continue
            mask = active[:, None] & scope[None, :] & f_member[pidx, k]
            best[mask] = k
        has = best >= 0
        if has.any():
            codes = np.array([_SEVERITY[g.action] for g in fences])
            override = np.array([g.override_contracts for g in fences])
            cut = has & (codes[np.maximum(best, 0)] > ALLOW)
            shield = cut & (protected >= 0) & ~override[np.maximum(best, 0)]
            # A shielded geofence is cancelled; quota and plan still apply after it, and an
            # otherwise plain "allow" is explained by the contract (see the plan step).
            best[shield] = -1
            has = best >= 0
            for k in np.unique(best[has]):
                g = fences[k]
                rid = rules.add(f"geofence:{g.id}", "geofence",
                                (g.reason or f"geofence {g.id}") + change, g.author)
                rate = None if g.max_mbps is None else np.float32(g.max_mbps)
                apply(best == k, {"allow": ALLOW, "throttle": THROTTLE, "deny": DENY}[g.action],
                      rid, rate)
    # 8. quota
    if used_gb is not None:
        quota = np.array([p.priority_quota_gb_month if p else np.inf for p in term_plan])
        fallback = np.array([p.fallback_mbps if p else np.inf for p in term_plan])
        spent = np.asarray(used_gb, float) >= quota[None, :]
        for name in sorted({p.name for p in term_plan if p}):
            rid = rules.add(f"quota:{name}", "quota",
                            f"priority data of plan {name} spent: fallback rate" + change)
            mask = spent & (term_plan_name == name)[None, :]
            apply(mask, THROTTLE, rid, np.broadcast_to(fallback[None, :], (n, n_term)))
    # 9. plan (where a contract shielded a geofence, the contract explains the allow)
    if fences and contracts:
        for k in np.unique(protected[shield]):
            c = contracts[k]
            rid = rules.add(f"contract:{c.id}", "contract",
                            f"contract {c.id} protects account {c.account} in its covered area "
                            f"({c.committed_availability_pct:g}% committed)" + change)
            apply(shield & (protected == k), ALLOW, rid)
    for name in sorted({t.plan or "" for t in terms}):
        rid = rules.add(f"plan:{name}" if name else "default", "plan",
                        (f"allowed by plan {name}" if name else "allowed (no plan limits)")
                        + change)
        apply((term_plan_name == name)[None, :] & np.ones((n, 1), bool), ALLOW, rid)


def explain(decisions: xr.Dataset, terminal: str, at) -> dict:
    """Decision, rule id, kind, reason and author for one terminal at one time (nearest step
    at or before ``at``)."""
    t = np.datetime64(to_utc_datetime64(at), "ns")
    times = decisions["time"].to_numpy()
    k = int(np.searchsorted(times, t, side="right")) - 1
    if k < 0:
        raise PolicyError(f"{t} is before the first decided time {times[0]}", source="explain",
                          field="at")
    terms = decisions["terminal"].to_numpy()
    hits = np.flatnonzero(terms == terminal)
    if hits.size == 0:
        raise PolicyError(f"unknown terminal {terminal!r}", source="explain", field="terminal")
    j = int(hits[0])
    r = int(decisions["rule"].to_numpy()[k, j])
    return {
        "terminal": terminal,
        "time": str(times[k]),
        "decision": DECISIONS[int(decisions["decision"].to_numpy()[k, j])],
        "max_mbps": float(decisions["max_mbps"].to_numpy()[k, j]),
        "rule": str(decisions["rule_id"].to_numpy()[r]),
        "kind": str(decisions["rule_kind"].to_numpy()[r]),
        "reason": str(decisions["rule_reason"].to_numpy()[r]),
        "author": str(decisions["rule_author"].to_numpy()[r]),
        "policy_version": int(decisions.attrs.get("policy_version", 0)),
    }


def explain_at(policy: Policy | PolicyHistory, terminal: str, at, position, *,
               as_of=None) -> dict:
    """:func:`explain` of ``decide(policy, [terminal], [at], position, as_of=as_of)`` — the
    same dict, without building a Dataset: the cheap path for one terminal at one instant (the
    service's ``/api/explain``). ``position`` is ``(lat_deg, lon_deg)``. Deciding one terminal
    gives it the same decision and rule as deciding it among others (rules are per terminal;
    the roaming count starts at this step, as in any one-step ``decide``)."""
    lat, lon = (np.atleast_1d(np.asarray(x, dtype=np.float64)) for x in position)
    d = _decide(policy, [terminal], at, (lat, lon), as_of=as_of, used_gb=None,
                speed_kmh=None, chunk_steps=1, state=None, return_state=False)
    if d.times.size != 1:
        raise PolicyError("explain_at decides one instant", source="explain", field="at")
    r = int(d.rule[0, 0])
    rules = d.rules
    # through numpy string arrays, exactly as decide's Dataset stores them
    return {
        "terminal": terminal,
        "time": str(d.times[0]),
        "decision": DECISIONS[int(d.decision[0, 0])],
        "max_mbps": float(d.max_mbps[0, 0]),
        "rule": str(np.array(rules.ids, dtype=str)[r]),
        "kind": str(np.array(rules.kind, dtype=str)[r]),
        "reason": str(np.array(rules.reason, dtype=str)[r]),
        "author": str(np.array(rules.author, dtype=str)[r]),
        "policy_version": int(d.version.version if d.version else 0),
    }


def decision_table(decisions: xr.Dataset) -> pd.DataFrame:
    """Long table (time, terminal, decision, rule, max_mbps) with labels instead of codes."""
    n_t, n_term = decisions.sizes["time"], decisions.sizes["terminal"]
    return pd.DataFrame({
        "time": np.repeat(decisions["time"].to_numpy(), n_term),
        "terminal": np.tile(decisions["terminal"].to_numpy(), n_t),
        "decision": np.array(DECISIONS)[decisions["decision"].to_numpy().ravel()],
        "rule": decisions["rule_id"].to_numpy()[decisions["rule"].to_numpy().ravel()],
        "max_mbps": decisions["max_mbps"].to_numpy().ravel(),
    })


__all__ = ["DECISIONS", "PRECEDENCE", "PolicyState", "PolicyVersion", "advance_state",
           "check_overlaps", "decide", "decision_table", "explain", "explain_at",
           "metered_terminals"]
