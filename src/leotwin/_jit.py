"""Compiled loops for the per-element passes numpy cannot fuse.

A few hot paths touch every candidate (time, site, satellite) pair of a step, ~10^5 of
them at 15 s steps over a whole theatre: written as a dozen numpy passes (gathers, masks,
sorts) each pair is read from memory a dozen times. Numba compiles one loop that reads it
once. Kernels are compiled on first use and cached on disk next to their module (or in
Numba's user cache where that is read-only), so Dask workers and later runs load them.
Kernels take and return plain arrays; the numpy-level functions around them keep the
labelled interfaces.
"""

from __future__ import annotations

from numba import njit


def kernel(fn):
    """Compile ``fn`` in nopython mode, cached, releasing the GIL (Dask threads can overlap)."""
    return njit(cache=True, nogil=True)(fn)
