"""Time grids and conversions.

At the edges leotwin uses ``numpy.datetime64[ns]`` in UTC. Inside, SGP4 and the sidereal
rotation need split Julian dates (whole part + fraction) to keep sub-microsecond precision.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd

from .constants import JD_UNIX_EPOCH, SECONDS_PER_DAY

NS_PER_DAY = 86_400_000_000_000


def to_utc_datetime64(value) -> np.ndarray | np.datetime64:
    """Convert ISO strings, datetimes or datetime64 values to UTC ``datetime64[ns]``.

    A string or datetime without an offset is taken as UTC; ``Z`` or ``+hh:mm`` offsets are
    honoured. Arrays in give arrays out.
    """
    if isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.datetime64):
        return value.astype("datetime64[ns]")
    if isinstance(value, np.datetime64):
        return value.astype("datetime64[ns]")
    if isinstance(value, (list, tuple, np.ndarray, pd.Index, pd.Series)):
        return np.array([to_utc_datetime64(v) for v in value], dtype="datetime64[ns]")
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"cannot read time {value!r}: expected ISO 8601, e.g. "
                         f"'2022-10-07T12:00:00Z' ({exc})") from None
    if ts is pd.NaT:
        raise ValueError(f"cannot read time {value!r}: it is empty or NaT")
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts.to_datetime64().astype("datetime64[ns]")


def time_grid(start: str | datetime | np.datetime64, stop: str | datetime | np.datetime64,
              step_s: float) -> np.ndarray:
    """Regular UTC grid from ``start`` to ``stop`` every ``step_s`` seconds.

    ``stop`` is included when it falls on a step. Strings are ISO 8601; a naive string is UTC.
    Returns ``numpy.ndarray`` of ``datetime64[ns]``.
    """
    if not np.isfinite(step_s) or step_s <= 0:
        raise ValueError(f"step_s must be a positive number of seconds, got {step_s!r}")
    t0 = to_utc_datetime64(start)
    t1 = to_utc_datetime64(stop)
    if t1 < t0:
        raise ValueError(f"stop {t1} is before start {t0}")
    step_ns = int(round(step_s * 1e9))
    if step_ns <= 0:
        raise ValueError(f"step_s {step_s!r} is below one nanosecond")
    n = (t1 - t0).astype("int64") // step_ns + 1
    return t0 + np.arange(n, dtype="int64").astype("timedelta64[ns]") * step_ns


def split_julian_date(times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """UTC ``datetime64`` → (whole Julian date ending in .5, fraction of day), float64 each."""
    ns = np.asarray(times, dtype="datetime64[ns]").astype("int64")
    days, rem_ns = np.divmod(ns, NS_PER_DAY)
    return JD_UNIX_EPOCH + days.astype(np.float64), rem_ns.astype(np.float64) / NS_PER_DAY


def julian_date_to_datetime64(jd: np.ndarray, fraction: np.ndarray | float = 0.0) -> np.ndarray:
    """Inverse of :func:`split_julian_date` (to the nanosecond up to float rounding)."""
    days = np.asarray(jd, dtype=np.float64) - JD_UNIX_EPOCH
    ns = np.round((days + np.asarray(fraction, dtype=np.float64)) * SECONDS_PER_DAY * 1e9)
    return ns.astype("int64").astype("datetime64[ns]")


def seconds_between(t0: np.ndarray, t1: np.ndarray) -> np.ndarray:
    """``t1 - t0`` in seconds (float64), broadcasting."""
    return (np.asarray(t1, "datetime64[ns]") - np.asarray(t0, "datetime64[ns]")).astype(
        "int64") / 1e9
