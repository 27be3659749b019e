"""SGP4 propagation of whole constellations to ECEF, chunked over time.

The hot path is ``SatrecArray.sgp4`` (C++, holds the GIL) followed by one vectorized GMST
rotation; nothing loops over satellites or time steps in Python. ``workers=N`` splits the
satellites across forked processes that write into shared memory, so results are never pickled.
"""

from __future__ import annotations

import logging
import mmap
import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd
import xarray as xr

from ..defaults import default
from ..frames import gmst82_rad, rotate_teme_to_ecef
from ..timescale import split_julian_date, to_utc_datetime64
from .constellation import Constellation

log = logging.getLogger(__name__)

SGP4_ERRORS = {
    0: "ok",
    1: "mean eccentricity out of range 0 <= e < 1",
    2: "mean motion below zero",
    3: "perturbed eccentricity out of range",
    4: "semi-latus rectum below zero",
    5: "(unused)",
    6: "orbit decayed",
}


# --------------------------------------------------------------------------- array core
def nearest_elset_index(constellation: Constellation, times: np.ndarray,
                        sats: slice | np.ndarray = slice(None)) -> np.ndarray:
    """Per (time, sat), the index into ``constellation.satrecs`` of the nearest-epoch element set.

    The choice switches at the midpoint between consecutive epochs of a satellite, so a
    satellite known only from a later snapshot is propagated backwards from it.
    """
    sat_ids = np.arange(len(constellation))[sats]
    elset_sat = constellation.elset_sat
    first = np.searchsorted(elset_sat, sat_ids, side="left")
    count = np.searchsorted(elset_sat, sat_ids, side="right") - first
    idx = np.broadcast_to(first, (len(times), sat_ids.size)).copy()
    max_count = int(count.max()) if count.size else 0
    if max_count > 1:
        t_ns = np.asarray(times, "datetime64[ns]").astype("int64")[:, None]
        ep = constellation.elset_epoch.astype("int64")
        for k in range(1, max_count):  # over history depth (2–3), not satellites or steps
            has = count > k
            j = np.where(has, first + k, first)
            mid = (ep[np.where(has, j - 1, first)] // 2) + (ep[j] // 2)
            idx += (has[None, :] & (t_ns >= mid[None, :])).astype(np.int64)
    return idx


_SAT_TILE = 128  # satellites per cache-sized tile of the transpose+rotation


def _propagate_block(constellation: Constellation, sats: slice, jd: np.ndarray, fr: np.ndarray,
                     times: np.ndarray, cos_t: np.ndarray, sin_t: np.ndarray,
                     out: tuple[np.ndarray, ...], band_km: float) -> None:
    """Propagate satellites ``sats`` over one time chunk into the ``out`` views.

    ``out`` = ``(r_ecef_km, v_ecef_km_s, error, operational, elset_age_s)``, time-major.
    """
    out_r, out_v, out_e, out_op, out_age = (o[:, sats] for o in out)
    sat_ids = np.arange(len(constellation))[sats]
    if constellation.n_elsets == len(constellation):  # a single snapshot: no choice to make
        idx = None
        per_sat = np.searchsorted(constellation.elset_sat, sat_ids)
    else:
        idx = nearest_elset_index(constellation, times, sats)
        per_sat = idx[0] if (idx == idx[0]).all() else None
    n_t, n_s = len(times), sat_ids.size
    if per_sat is not None:  # the usual case: one element set per satellite in this chunk
        e, r, v = constellation.satrec_array(per_sat).sgp4(jd, fr)
        # SGP4 gives (sat, time, xyz); rotate and transpose tile by tile to stay in cache.
        for a in range(0, n_s, _SAT_TILE):
            b = min(a + _SAT_TILE, n_s)
            rotate_teme_to_ecef(r[a:b].transpose(1, 0, 2), v[a:b].transpose(1, 0, 2), cos_t,
                                sin_t, out_r[:, a:b], out_v[:, a:b])
        out_e[...] = e.T
        used = per_sat[None, :]  # broadcasts over time below
    else:  # some satellite switches element set inside the chunk: gather per step
        used_sets, col = np.unique(idx, return_inverse=True)
        col = col.reshape(idx.shape)
        e, r, v = constellation.satrec_array(used_sets).sgp4(jd, fr)
        t_idx = np.arange(n_t)[:, None]
        rotate_teme_to_ecef(r[col, t_idx], v[col, t_idx], cos_t, sin_t, out_r, out_v)
        out_e[...] = e[col, t_idx]
        used = idx
    bad = out_e != 0
    if bad.any():
        out_r[bad] = np.nan
        out_v[bad] = np.nan
    out_op[...] = operational_mask(constellation, used, out_e, band_km=band_km, sats=sats)
    ns = np.asarray(times, "datetime64[ns]").astype("int64")[:, None]
    out_age[...] = (ns - constellation.elset_epoch.astype("int64")[used]) / 1e9


# --------------------------------------------------------------------------- parallel plumbing
#: Per-chunk outputs: name, dtype, trailing shape (after time, sat).
_OUTPUTS = (("r_ecef_km", np.float64, (3,)), ("v_ecef_km_s", np.float64, (3,)),
            ("error", np.int8, ()), ("operational", np.bool_, ()),
            ("elset_age_s", np.float32, ()))


def _empty_outputs(n_t: int, n_s: int, *, shared: bool = False) -> tuple[np.ndarray, ...]:
    """Output arrays; ``shared`` puts them in anonymous shared memory (``MAP_SHARED``), which
    processes forked afterwards write into directly — no names, no copies, no pickling, and
    the memory is freed with the last array that refers to it."""
    arrays = []
    for _, dtype, tail in _OUTPUTS:
        shape = (n_t, n_s, *tail)
        if shared:
            nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
            buf = mmap.mmap(-1, max(nbytes, 1))
            arrays.append(np.frombuffer(buf, dtype=dtype, count=int(np.prod(shape))).reshape(
                shape))
        else:
            arrays.append(np.empty(shape, dtype))
    return tuple(arrays)


_FORKED: dict = {}  # what forked workers inherit: the constellation and the output arrays


def _worker_block(args) -> None:
    rows, sats, jd, fr, times, cos_t, sin_t, band_km = args
    out = tuple(o[rows] for o in _FORKED["out"])
    _propagate_block(_FORKED["constellation"], sats, jd, fr, times, cos_t, sin_t, out, band_km)


class _Engine:
    """Propagates time chunks into ``out`` (arrays ``(rows, n_sat, ...)``).

    With ``workers=N`` this process computes one share of the satellites and N−1 forked
    processes the others, all writing straight into ``out``, which must then come from
    ``_empty_outputs(..., shared=True)``. The constellation reaches the children by fork
    (sgp4's Satrec cannot be pickled), so nothing large is ever pickled.
    """

    def __init__(self, constellation: Constellation, workers: int, band_km: float | None,
                 out: tuple[np.ndarray, ...]):
        self.con = constellation
        self.out = out
        self.band_km = default("operational_band_km") if band_km is None else float(band_km)
        self.workers = max(1, int(workers))
        self.pool = None
        if self.workers > 1:
            try:
                ctx = multiprocessing.get_context("fork")
            except ValueError:  # no fork (Windows): fall back to one process
                log.warning("workers=%d needs the 'fork' start method; using 1", self.workers)
                self.workers = 1
                return
            _FORKED.update(constellation=constellation, out=out)
            self.pool = ProcessPoolExecutor(self.workers - 1, mp_context=ctx)

    def run(self, times: np.ndarray, rows: slice) -> None:
        """Propagate ``times`` into ``out[rows]``."""
        jd, fr = split_julian_date(times)
        theta = gmst82_rad(jd, fr)
        cos_t, sin_t = np.cos(theta), np.sin(theta)
        target = tuple(o[rows] for o in self.out)
        if self.pool is None:
            _propagate_block(self.con, slice(None), jd, fr, times, cos_t, sin_t, target,
                             self.band_km)
            return
        bounds = np.linspace(0, len(self.con), self.workers + 1).astype(int)
        futures = [self.pool.submit(_worker_block, (rows, slice(a, b), jd, fr, times, cos_t,
                                                    sin_t, self.band_km))
                   for a, b in zip(bounds[1:-1], bounds[2:], strict=True)]
        _propagate_block(self.con, slice(0, bounds[1]), jd, fr, times, cos_t, sin_t, target,
                         self.band_km)
        for f in futures:
            f.result()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
            _FORKED.clear()


# --------------------------------------------------------------------------- public API
def operational_mask(constellation: Constellation, elset_index: np.ndarray,
                     error: np.ndarray, *, band_km: float | None = None,
                     sats: slice | np.ndarray = slice(None)) -> np.ndarray:
    """Per (time, sat): the satellite may serve.

    True when SGP4 succeeded and the mean altitude of the element set in use is within
    ``band_km`` (default ``operational_band_km``, FCC 21-48's ±30 km) of the satellite's shell
    centre; orbit-raising and deorbiting satellites fall outside and are excluded.
    ``elset_index`` comes from :func:`nearest_elset_index` (for the satellites ``sats``).
    """
    band = default("operational_band_km") if band_km is None else float(band_km)
    alt = constellation.elset_mean_altitude_km[elset_index]
    centre = constellation.shell_altitude_km[sats][None, :]
    with np.errstate(invalid="ignore"):
        return (np.asarray(error) == 0) & (np.abs(alt - centre) <= band)


def _as_times(times) -> np.ndarray:
    t = to_utc_datetime64(times)
    t = np.atleast_1d(np.asarray(t, dtype="datetime64[ns]"))
    if t.ndim != 1 or t.size == 0:
        raise ValueError("times must be a non-empty 1-D sequence of UTC times")
    return t


_ATTRS = {
    "r_ecef_km": {"units": "km", "frame": "ECEF (PEF)"},
    "v_ecef_km_s": {"units": "km/s", "frame": "ECEF (PEF)"},
    "error": {"description": "SGP4 error code, 0 = ok", "codes": str(SGP4_ERRORS)},
    "operational": {"description": "satellite may serve: SGP4 ok and mean altitude within the "
                                   "operational band of its shell"},
    "elset_age_s": {"units": "s", "description": "time minus epoch of the element set used"},
}


def _dataset(con: Constellation, times: np.ndarray, out: tuple[np.ndarray, ...]) -> xr.Dataset:
    data = {}
    for (name, _, tail), arr in zip(_OUTPUTS, out, strict=True):
        dims = ("time", "sat", "xyz") if tail else ("time", "sat")
        data[name] = (dims, arr, _ATTRS[name])
    return xr.Dataset(
        data,
        coords={
            "time": ("time", times),
            "sat": ("sat", con.satnum, {"description": "catalog number"}),
            "name": ("sat", con.names.astype(str)),
            "shell": ("sat", con.shell.astype(str)),
            "xyz": ("xyz", np.array(["x", "y", "z"])),
        },
        attrs={
            "frame_convention": "TEME→ECEF by GMST 1982 (Vallado 2006), UT1=UTC, no polar motion",
            "time_scale": "UTC",
        },
    )


def _chunk_steps(chunk_steps: int | None) -> int:
    step = int(chunk_steps or default("propagation_chunk_steps"))
    if step < 1:
        raise ValueError(f"chunk_steps must be >= 1, got {chunk_steps!r}")
    return step


def propagate_chunks(constellation: Constellation, times, *, chunk_steps: int | None = None,
                     workers: int = 1, band_km: float | None = None) -> Iterator[xr.Dataset]:
    """Yield :func:`propagate` results for consecutive chunks of ``times``.

    Memory stays bounded by ``chunk_steps × n_sat`` whatever the length of the run.
    """
    times = _as_times(times)
    step = _chunk_steps(chunk_steps)
    rows = min(step, times.size)
    buffers = _empty_outputs(rows, len(constellation), shared=workers > 1)
    engine = _Engine(constellation, workers, band_km, buffers)
    try:
        for a in range(0, times.size, step):
            t = times[a:a + step]
            engine.run(t, slice(0, t.size))
            # The buffers are reused for the next chunk: hand out copies.
            yield _dataset(constellation, t, tuple(b[:t.size].copy() for b in buffers))
    finally:
        engine.close()


def propagate(constellation: Constellation, times, *, chunk_steps: int | None = None,
              workers: int = 1, band_km: float | None = None) -> xr.Dataset:
    """Positions and velocities of every satellite at every time, in ECEF.

    Returns a Dataset with ``r_ecef_km`` and ``v_ecef_km_s`` (``time, sat, xyz``), ``error``
    (SGP4 error code, 0 = ok; positions are NaN where non-zero), ``operational`` (see
    :func:`operational_mask`) and ``elset_age_s`` (``time, sat``); coordinates ``time`` (UTC),
    ``sat`` (catalog number), ``name`` and ``shell``. Units are in each variable's ``attrs``.

    Frames: SGP4 gives TEME; ECEF here is Vallado's ``teme2ecef``: rotation by GMST 1982 with
    UT1 taken as UTC and no polar motion (see :mod:`leotwin.frames`).
    Each satellite uses, per time step, its element set with the nearest epoch. Work is done
    in chunks of ``chunk_steps``; ``workers=N`` splits satellites across N processes (fork).
    """
    times = _as_times(times)
    out = _empty_outputs(times.size, len(constellation), shared=workers > 1)
    step = _chunk_steps(chunk_steps)
    engine = _Engine(constellation, workers, band_km, out)
    try:
        for a in range(0, times.size, step):
            engine.run(times[a:a + step], slice(a, a + step))
    finally:
        engine.close()
    return _dataset(constellation, times, out)


def positions_table(positions: xr.Dataset) -> pd.DataFrame:
    """Long table of a propagation result: one row per (time, sat) with
    ``x_ecef_km, y_ecef_km, z_ecef_km, vx_ecef_km_s, vy_ecef_km_s, vz_ecef_km_s, error,
    operational, elset_age_s`` — the layout written to Parquet."""
    n_t, n_s = positions.sizes["time"], positions.sizes["sat"]
    r = positions["r_ecef_km"].to_numpy().reshape(-1, 3)
    v = positions["v_ecef_km_s"].to_numpy().reshape(-1, 3)
    return pd.DataFrame({
        "time": np.repeat(positions["time"].to_numpy(), n_s),
        "sat": np.tile(positions["sat"].to_numpy(), n_t),
        "name": np.tile(positions["name"].to_numpy(), n_t),
        "x_ecef_km": r[:, 0], "y_ecef_km": r[:, 1], "z_ecef_km": r[:, 2],
        "vx_ecef_km_s": v[:, 0], "vy_ecef_km_s": v[:, 1], "vz_ecef_km_s": v[:, 2],
        "error": positions["error"].to_numpy().reshape(-1),
        "operational": positions["operational"].to_numpy().reshape(-1),
        "elset_age_s": positions["elset_age_s"].to_numpy().reshape(-1),
    })
