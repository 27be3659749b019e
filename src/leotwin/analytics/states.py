"""The state of every (time, terminal) step of a run — one definition for the report, the
REST API and the dashboard.

``served``: served with no cause; ``degraded``: served but with a cause (throttled by policy,
congestion, a jamming slowdown); otherwise the primary cause of the outage
(:data:`leotwin.analytics.simulate.PRIMARY_ORDER`); ``unattributed``: unserved without a
recorded (known) cause — never silently counted as no coverage.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .simulate import PRIMARY_ORDER

__all__ = ["STATES", "UNATTRIBUTED", "availability_by_state", "cause_labels",
           "timeline_states"]

UNATTRIBUTED = "unattributed"
#: Every state, in code order (a state's code is its index; new states are only appended).
STATES = ("served", "degraded", *PRIMARY_ORDER, UNATTRIBUTED)
_CODE = {s: k for k, s in enumerate(STATES)}


def cause_labels(cause: Any) -> np.ndarray:
    """Causes as labels: an empty or missing cause is ``unattributed`` (object array)."""
    c = np.asarray(cause, dtype=object)
    return np.where((c == "") | (c == None), UNATTRIBUTED, c).astype(object)  # noqa: E711


def timeline_states(served: Any, cause: Any) -> np.ndarray:
    """The state code (index of :data:`STATES`, int8) of every step from its ``served`` flag
    and recorded ``cause`` ("" or None: none)."""
    served = np.asarray(served, dtype=bool)
    c = np.asarray(cause, dtype=object)
    names, inverse = np.unique(np.where(c == None, "", c).astype(str),  # noqa: E711
                               return_inverse=True)
    has = np.array([bool(n) for n in names], dtype=bool)
    outage = np.array([_CODE.get(n, _CODE[UNATTRIBUTED]) if n in PRIMARY_ORDER
                       else _CODE[UNATTRIBUTED] for n in names], dtype=np.int8)
    inverse = inverse.reshape(served.shape)
    if names.size == 0:
        return np.zeros(served.shape, dtype=np.int8)
    return np.where(served, np.where(has[inverse], _CODE["degraded"], _CODE["served"]),
                    outage[inverse]).astype(np.int8)


def availability_by_state(codes: np.ndarray) -> np.ndarray:
    """Per row (time) of ``codes[time, terminal]``: the fraction of terminals in each state,
    ``[time, state]`` in :data:`STATES` order (rows of zero terminals are all zero)."""
    codes = np.asarray(codes)
    n = max(codes.shape[1], 1) if codes.ndim == 2 else 1
    counts = np.stack([(codes == k).sum(axis=1) for k in range(len(STATES))], axis=1)
    return counts / n
