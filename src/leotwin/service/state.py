"""What one app instance holds: settings, store, signing key, caches and the run worker."""

from __future__ import annotations

import gc
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from ..config import Settings
from ..policy.engine import explain_at
from ..policy.models import PolicyHistory, PolicyVersion, Terminal
from ..store import Store

#: Policies with at least this many terminals freeze the heap after parsing (PolicyCache).
FREEZE_MIN_TERMINALS = 1_000


def _freeze_if_large(version: PolicyVersion | None) -> None:
    if version is not None and len(version.policy.terminals) >= FREEZE_MIN_TERMINALS:
        gc.freeze()


class PolicyCache:
    """The latest policy version and the whole history, parsed once per recorded version.

    A policy snapshot with 10,000 terminals takes tens of milliseconds to parse; the cache is
    checked against ``Store.latest_version()`` (one indexed query) on every use, so a version
    recorded by another process is seen at once.

    A parsed history of a large policy is hundreds of thousands of long-lived objects; the
    garbage collector's full (generation 2) passes traversed all of them every few seconds
    under load, stalling every request for up to ~150 ms (the service benchmark's p99 with
    10,000 terminals). After parsing a policy of at least :data:`FREEZE_MIN_TERMINALS`
    terminals the live heap is frozen (``gc.freeze``: objects are still freed by reference
    counting when dropped, only no longer traversed by the cycle collector). Small policies
    (tests, demos) are not worth it: a freeze also keeps whatever cyclic garbage-to-be is
    alive at that moment (other tests' fixtures) from ever being collected.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._current: PolicyVersion | None = None
        self._history: PolicyHistory | None = None

    def current(self) -> PolicyVersion | None:
        latest = self.store.latest_version()
        with self._lock:
            if latest is None:
                return None
            h = self._history
            if h is not None and h.versions[-1].version == latest:
                return h.versions[-1]  # the same version, not parsed a second time
            cur = self._current
            if cur is None or cur.version != latest:
                cur = self.store.current_version()
                self._current = cur
                _freeze_if_large(cur)
            return cur

    def history(self) -> PolicyHistory | None:
        latest = self.store.latest_version()
        with self._lock:
            if latest is None:
                return None
            h = self._history
            if h is None or h.versions[-1].version != latest:
                h = self.store.history()
                self._history = h
                self._current = None  # the history's last version serves current()
                _freeze_if_large(h.versions[-1])
            return h


class ExplainCache:
    """Explanations by (policy version, its record time, instant, terminal), and each
    version's terminals by id.

    A miss decides only the asked terminal at the asked instant
    (:func:`leotwin.policy.engine.explain_at` on the version with just that terminal: well
    under a millisecond once the version's zones are compiled), never a whole step of every
    terminal: a burst of clicks at new slider times no longer queues behind decisions for
    10,000 terminals nobody asked about. A recorded version never changes (the audit chain
    binds it); a policy change is a new version and therefore a new key, so an answer of an
    older version is only ever served for an ``as_of`` that selects that version.
    """

    def __init__(self, max_answers: int = 20_000, max_versions: int = 4) -> None:
        self.max_answers, self.max_versions = max_answers, max_versions
        self._lock = threading.Lock()
        self._terminals: OrderedDict[tuple, dict[str, Terminal]] = OrderedDict()
        self._answers: OrderedDict[tuple, dict] = OrderedDict()

    @staticmethod
    def _version_key(version: PolicyVersion) -> tuple:
        return version.version, version.recorded_at

    def terminals(self, version: PolicyVersion) -> dict[str, Terminal]:
        """The version's terminals by id (built once per version)."""
        key = self._version_key(version)
        with self._lock:
            hit = self._terminals.get(key)
            if hit is not None:
                self._terminals.move_to_end(key)
                return hit
        hit = {t.id: t for t in version.policy.terminals}
        with self._lock:
            self._terminals[key] = hit
            while len(self._terminals) > self.max_versions:
                self._terminals.popitem(last=False)
        return hit

    def answer(self, version: PolicyVersion, terminal: Terminal, t64: np.datetime64) -> dict:
        """:func:`~leotwin.policy.engine.explain` of ``terminal`` (located) at ``t64``."""
        key = (*self._version_key(version), int(t64.astype("int64")), terminal.id)
        with self._lock:
            hit = self._answers.get(key)
            if hit is not None:
                self._answers.move_to_end(key)
                return hit
        alone = version.model_copy(update={
            "policy": version.policy.model_copy(update={"terminals": [terminal]})})
        hit = explain_at(PolicyHistory(versions=[alone]), terminal.id, t64,
                         (terminal.lat_deg, terminal.lon_deg))
        with self._lock:
            self._answers[key] = hit
            while len(self._answers) > self.max_answers:
                self._answers.popitem(last=False)
        return hit


@dataclass
class ServiceState:
    settings: Settings
    store: Store
    key: bytes
    policy: PolicyCache
    runs: object  # leotwin.service.runs.RunManager (import cycle avoided)
    results: object  # leotwin.service.results.ResultCache
    explain: ExplainCache = field(default_factory=ExplainCache)
    auth_cache: dict = field(default_factory=dict)  # token -> (valid until, User)
