"""Small array helpers shared by the vectorized cores."""

from __future__ import annotations

import numpy as np


def run_starts(*keys: np.ndarray) -> np.ndarray:
    """Boolean mask: True where a run of equal consecutive ``keys`` (compared together)
    begins. Works for empty arrays (returns an empty mask)."""
    n = len(keys[0])
    out = np.zeros(n, dtype=bool)
    if n:
        out[0] = True
        for k in keys:
            k = np.asarray(k)
            out[1:] |= k[1:] != k[:-1]
    return out
