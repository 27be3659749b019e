"""What one app instance holds: settings, store, signing key, caches and the run worker."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from ..config import Settings
from ..policy.models import PolicyHistory, PolicyVersion
from ..store import Store


class PolicyCache:
    """The latest policy version and the whole history, parsed once per recorded version.

    A policy snapshot with 10,000 terminals takes tens of milliseconds to parse; the cache is
    checked against ``Store.latest_version()`` (one indexed query) on every use, so a version
    recorded by another process is seen at once.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._current: PolicyVersion | None = None
        self._history: PolicyHistory | None = None

    def current(self) -> PolicyVersion | None:
        latest = self.store.latest_version()
        with self._lock:
            cur = self._current
            if latest is None:
                return None
            if cur is None or cur.version != latest:
                cur = self.store.current_version()
                self._current = cur
            return cur

    def cached_history(self, latest: int | None) -> PolicyHistory | None:
        """The cached history if it ends at version ``latest`` (no parsing), else None."""
        h = self._history
        return h if h is not None and latest is not None and h.versions[-1].version == latest \
            else None

    def history(self) -> PolicyHistory | None:
        latest = self.store.latest_version()
        with self._lock:
            if latest is None:
                return None
            h = self._history
            if h is None or h.versions[-1].version != latest:
                h = self.store.history()
                self._history = h
            return h


@dataclass
class ServiceState:
    settings: Settings
    store: Store
    key: bytes
    policy: PolicyCache
    runs: object  # leotwin.service.runs.RunManager (import cycle avoided)
    results: object  # leotwin.service.results.ResultCache
    explain_cache: dict = field(default_factory=dict)
    auth_cache: dict = field(default_factory=dict)  # token -> (valid until, User)
