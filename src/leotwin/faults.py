"""Fault model: satellite failures (explicit and random), gateway and PoP outages, jammers.

Everything becomes arrays over the run's time grid: ``failed`` ``(n_time, n_sat)``,
``gateway_down`` ``(n_time, n_gateway)`` and jammer states ``(n_time, n_jammer)``. A failed
satellite neither serves terminals nor relays laser traffic; a gateway is down when it is
out or its PoP is (a backhaul cut).
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
from pydantic import Field, model_validator

from ._common import FrozenModel
from .frames import geodetic_to_ecef
from .timescale import to_utc_datetime64

_Model = FrozenModel


class SatelliteFailure(_Model):
    """Satellite ``sat`` (catalog number) failed from ``start`` to ``end`` (None: for good)."""

    sat: int
    start: datetime
    end: datetime | None = None


class RandomFailures(_Model):
    """Failures as a renewal process per satellite: up-times exponential with mean
    ``mtbf_h``, repair times exponential with mean ``repair_h``; ``seed`` makes it repeatable."""

    mtbf_h: float = Field(gt=0)
    repair_h: float = Field(gt=0)
    seed: int = 0


class GatewayOutage(_Model):
    """A gateway out, or a PoP cut (then every gateway homed on it loses backhaul)."""

    id: str
    gateway: str | None = None
    pop: str | None = None
    start: datetime
    end: datetime | None = None

    @model_validator(mode="after")
    def _one_target(self):
        if (self.gateway is None) == (self.pop is None):
            raise ValueError("an outage names exactly one of gateway or pop")
        return self


class TrackPoint(_Model):
    time: datetime
    lat_deg: float = Field(ge=-90, le=90)
    lon_deg: float = Field(ge=-180, le=180)


class Jammer(_Model):
    """A ground jammer: position (or a track), EIRP, bandwidth and centre of its band, window."""

    id: str
    lat_deg: float = Field(ge=-90, le=90)
    lon_deg: float = Field(ge=-180, le=180)
    alt_m: float = 0.0
    eirp_dbw: float
    bandwidth_mhz: float = Field(gt=0)
    center_ghz: float = Field(gt=0)
    start: datetime | None = None
    end: datetime | None = None
    track: list[TrackPoint] | None = None


class Faults(_Model):
    failures: list[SatelliteFailure] = []
    random: RandomFailures | None = None
    outages: list[GatewayOutage] = []
    jammers: list[Jammer] = []


def _ns(dt: datetime | None, default: int) -> int:
    if dt is None:
        return default
    return int(to_utc_datetime64(dt.replace(tzinfo=None) if dt.tzinfo is None else
                                 dt.isoformat()).astype("int64"))


_FOREVER = np.iinfo(np.int64).max


def random_failure_windows(sat_ids: np.ndarray, start, stop, spec: RandomFailures):
    """(sat, start_ns, end_ns) arrays of random outages in ``[start, stop]``, vectorized over
    satellites (enough draws per satellite to cover the window with overwhelming
    probability; the count is topped up until every satellite's renewal process passes
    ``stop``)."""
    rng = np.random.default_rng(spec.seed)
    t0 = int(to_utc_datetime64(start).astype("int64"))
    t1 = int(to_utc_datetime64(stop).astype("int64"))
    span_h = (t1 - t0) / 3.6e12
    n = sat_ids.size
    k = int(np.ceil(span_h / (spec.mtbf_h + spec.repair_h) * 2 + 8))
    while True:
        up = rng.exponential(spec.mtbf_h, size=(n, k))
        down = rng.exponential(spec.repair_h, size=(n, k))
        # Stationary start: the first up-time is a residual life (memoryless: same law).
        ends_up = np.cumsum(up + down, axis=1) - down
        if (ends_up[:, -1] > span_h).all():
            break
        k *= 2
    fail_start_h = ends_up
    fail_end_h = ends_up + down
    keep = fail_start_h < span_h
    s_idx = np.broadcast_to(np.arange(n)[:, None], keep.shape)[keep]
    return (sat_ids[s_idx], t0 + (fail_start_h[keep] * 3.6e12).astype(np.int64),
            t0 + (fail_end_h[keep] * 3.6e12).astype(np.int64))


def failed_mask(faults: Faults | None, sat_ids: np.ndarray, times: np.ndarray, *,
                window=None) -> np.ndarray:
    """``(n_time, n_sat)``: satellite failed at that time (explicit or random failures).

    Random failures are drawn over ``window`` (start, stop; default the span of ``times``), so
    that evaluating a run chunk by chunk gives the same failures as evaluating it at once."""
    t = np.asarray(times, "datetime64[ns]").astype("int64")
    out = np.zeros((t.size, sat_ids.size), bool)
    if faults is None:
        return out
    col = {int(s): k for k, s in enumerate(sat_ids)}
    sats, starts, ends = [], [], []
    for f in faults.failures:  # over listed failures
        if f.sat in col:
            sats.append(col[f.sat])
            starts.append(_ns(f.start, 0))
            ends.append(_ns(f.end, _FOREVER))
    if faults.random is not None and t.size:
        w0, w1 = window if window is not None else (times[0], times[-1])
        s, a, b = random_failure_windows(np.asarray(sat_ids), w0, w1, faults.random)
        sats.extend(np.searchsorted(sat_ids, s) if np.all(np.diff(sat_ids) > 0)
                    else [col[int(x)] for x in s])
        starts.extend(a)
        ends.extend(b)
    if sats:
        sats, starts, ends = (np.asarray(x, np.int64) for x in (sats, starts, ends))
        hit = (t[:, None] >= starts[None, :]) & (t[:, None] < ends[None, :])
        ti, wi = np.nonzero(hit)
        out[ti, sats[wi]] = True
    return out


def gateway_down_mask(faults: Faults | None, gateway_ids, gateway_pops,
                      times: np.ndarray) -> np.ndarray:
    """``(n_time, n_gateway)``: gateway out, or its PoP cut."""
    t = np.asarray(times, "datetime64[ns]").astype("int64")
    gws = np.asarray(gateway_ids).astype(str)
    pops = np.asarray(gateway_pops).astype(str)
    out = np.zeros((t.size, gws.size), bool)
    for o in (faults.outages if faults else []):  # over outages
        active = (t >= _ns(o.start, 0)) & (t < _ns(o.end, _FOREVER))
        target = gws == o.gateway if o.gateway is not None else pops == o.pop
        out |= active[:, None] & target[None, :]
    return out


def jammer_state(faults: Faults | None, times: np.ndarray):
    """Jammer ECEF positions ``(n_time, n_jam, 3)`` (tracks interpolated, held outside),
    ``active`` ``(n_time, n_jam)``, and ``eirp_dbw``, ``bandwidth_mhz``, ``center_ghz``
    ``(n_jam,)``."""
    t = np.asarray(times, "datetime64[ns]").astype("int64")
    jams = faults.jammers if faults else []
    n = len(jams)
    lat = np.zeros((t.size, n))
    lon = np.zeros((t.size, n))
    alt = np.zeros((t.size, n))
    active = np.zeros((t.size, n), bool)
    for k, j in enumerate(jams):  # over jammers (few)
        if j.track:
            tt = np.array([_ns(p.time, 0) for p in j.track])
            order = np.argsort(tt)
            la = np.array([p.lat_deg for p in j.track])[order]
            lo = np.unwrap(np.radians([p.lon_deg for p in j.track]))[order]
            lat[:, k] = np.interp(t, tt[order], la)
            lon[:, k] = (np.degrees(np.interp(t, tt[order], lo)) + 180.0) % 360.0 - 180.0
        else:
            lat[:, k], lon[:, k] = j.lat_deg, j.lon_deg
        alt[:, k] = j.alt_m
        active[:, k] = (t >= _ns(j.start, 0)) & (t < _ns(j.end, _FOREVER))
    ecef = geodetic_to_ecef(lat, lon, alt) if n else np.zeros((t.size, 0, 3))
    return (ecef, active, np.array([j.eirp_dbw for j in jams], float),
            np.array([j.bandwidth_mhz for j in jams], float),
            np.array([j.center_ghz for j in jams], float))
