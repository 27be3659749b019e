"""Rise / culmination / set table of every satellite for one site."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from ..defaults import default
from ..frames import look_angles
from ..orbits.constellation import Constellation
from ..orbits.propagate import propagate_chunks
from ..timescale import time_grid
from .sites import validate_sites


def passes(constellation: Constellation, site, start, stop, *,
           min_elevation_deg: float | None = None, step_s: float = 10.0,
           chunk_steps: int = 720,
           progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """Passes of every satellite over one site between ``start`` and ``stop``.

    ``site`` is ``(lat_deg, lon_deg[, alt_m])`` or a mapping with those keys. Elevations are
    sampled every ``step_s`` (all satellites at once); rise and set times are interpolated
    linearly between samples where the elevation crosses the mask and the culmination by a
    parabola through the three samples around the maximum (errors well below a second for
    LEO at the default 10 s). A pass already under way at ``start`` or still under way at
    ``stop`` has ``NaT`` for the missing end and ``complete == False``.

    ``progress(done_steps, total_steps)`` is called after each chunk, e.g. for a progress bar.

    Columns: ``sat, name, rise_time, rise_azimuth_deg, culmination_time, max_elevation_deg,
    set_time, set_azimuth_deg, duration_s, complete``; sorted by rise (or culmination) time.
    """
    lat, lon, alt = _site_tuple(site)
    mask = default("terminal_min_elevation_deg") if min_elevation_deg is None else float(
        min_elevation_deg)
    times = time_grid(start, stop, step_s)
    el_parts, az_parts = [], []
    for ds in propagate_chunks(constellation, times, chunk_steps=chunk_steps):
        az, el, _ = look_angles(ds["r_ecef_km"].to_numpy(), lat, lon, alt)
        el_parts.append(el)
        az_parts.append(az)
        if progress is not None:
            progress(sum(p.shape[0] for p in el_parts), times.size)
    el = np.concatenate(el_parts)  # (n_time, n_sat); NaN where SGP4 failed
    az = np.concatenate(az_parts)
    above = np.nan_to_num(el, nan=-90.0) >= mask
    n_t, n_sat = el.shape
    t_s = (times - times[0]).astype("int64") / 1e9

    # Edges of each above-mask run, per satellite (time-major diff over a padded array).
    padded = np.zeros((n_t + 2, n_sat), dtype=np.int8)
    padded[1:-1] = above
    edge = np.diff(padded, axis=0)  # +1 rise between k-1 and k, −1 set between k-1 and k
    rise_t, rise_s = np.nonzero(edge == 1)
    set_t, set_s = np.nonzero(edge == -1)
    # Both arrays come out ordered by (time, sat); order by (sat, time) to pair them up.
    ro = np.lexsort((rise_t, rise_s))
    so = np.lexsort((set_t, set_s))
    rise_t, sat = rise_t[ro], rise_s[ro]
    set_t = set_t[so]  # first index after the run ends
    last = set_t - 1

    def crossing_time(k_before, k_after, s):
        e0, e1 = el[k_before, s], el[k_after, s]
        with np.errstate(invalid="ignore", divide="ignore"):  # k_before == k_after at the edges
            frac = np.nan_to_num(np.clip((mask - e0) / (e1 - e0), 0.0, 1.0))
        return t_s[k_before] + frac * (t_s[k_after] - t_s[k_before])

    if sat.size == 0:
        return pd.DataFrame({c: pd.Series(dtype=d) for c, d in _EMPTY_COLUMNS.items()})
    has_rise = rise_t > 0
    has_set = set_t < n_t
    rise_s_val = np.where(has_rise, crossing_time(np.maximum(rise_t - 1, 0), rise_t, sat), np.nan)
    set_s_val = np.where(has_set, crossing_time(last, np.minimum(set_t, n_t - 1), sat), np.nan)

    # Culmination: argmax of elevation within each run, refined by a parabola.
    run_len = set_t - rise_t
    run_id = np.repeat(np.arange(sat.size), run_len)
    k_all = np.arange(run_len.sum()) - np.repeat(np.cumsum(run_len) - run_len, run_len) + \
        np.repeat(rise_t, run_len)
    el_run = el[k_all, sat[run_id]]
    order = np.lexsort((-el_run, run_id))
    first = np.r_[0, np.flatnonzero(np.diff(run_id[order])) + 1]
    k_max = k_all[order[first]]
    km = np.clip(k_max, 1, max(n_t - 2, 1))  # no parabola on grids of fewer than 3 steps
    y0, y1, y2 = el[km - 1, sat], el[km, sat], el[km + 1, sat]
    denom = y0 - 2 * y1 + y2
    fit = (denom < 0) & (k_max == km) & (n_t >= 3)
    with np.errstate(invalid="ignore", divide="ignore"):
        offset = np.where(fit, 0.5 * (y0 - y2) / denom, 0.0)
        peak = np.where(fit, y1 - 0.25 * (y0 - y2) * offset, el[k_max, sat])
    step = float(step_s)
    culm_s = t_s[k_max] + offset * step

    t0 = times[0]
    to_time = lambda secs: t0 + np.round(secs * 1e9).astype("int64").astype(  # noqa: E731
        "timedelta64[ns]")
    rise_time = np.where(has_rise, to_time(np.nan_to_num(rise_s_val)), np.datetime64("NaT"))
    set_time = np.where(has_set, to_time(np.nan_to_num(set_s_val)), np.datetime64("NaT"))
    table = pd.DataFrame({
        "sat": constellation.satnum[sat],
        "name": constellation.names[sat].astype(str),
        "rise_time": rise_time,
        "rise_azimuth_deg": np.where(has_rise, az[rise_t, sat], np.nan),
        "culmination_time": to_time(culm_s),
        "max_elevation_deg": peak,
        "culmination_azimuth_deg": az[k_max, sat],
        "set_time": set_time,
        "set_azimuth_deg": np.where(has_set, az[last, sat], np.nan),
        "duration_s": set_s_val - rise_s_val,
        "complete": has_rise & has_set,
    })
    key = table["rise_time"].fillna(table["culmination_time"])
    return table.iloc[np.argsort(key.to_numpy(), kind="stable")].reset_index(drop=True)


_EMPTY_COLUMNS = {"sat": "int64", "name": "object", "rise_time": "datetime64[ns]",
                  "rise_azimuth_deg": "float64", "culmination_time": "datetime64[ns]",
                  "max_elevation_deg": "float64", "culmination_azimuth_deg": "float64",
                  "set_time": "datetime64[ns]", "set_azimuth_deg": "float64",
                  "duration_s": "float64", "complete": "bool"}


def _site_tuple(site) -> tuple[float, float, float]:
    if isinstance(site, dict):
        vals = (site.get("lat_deg"), site.get("lon_deg"), site.get("alt_m", 0.0))
    else:
        vals = tuple(site) + (0.0,) * (3 - len(tuple(site)))
    if len(vals) < 3:
        raise ValueError(f"site must be (lat_deg, lon_deg[, alt_m]) numbers, got {site!r}")
    row = validate_sites({"site": ["site"], "lat_deg": [vals[0]], "lon_deg": [vals[1]],
                          "alt_m": [vals[2]]}).iloc[0]
    return float(row["lat_deg"]), float(row["lon_deg"]), float(row["alt_m"])
