"""Seeded, vectorized generators of user terminals (and the tracks of in-motion ones).

A generator spec (:class:`TerminalGenerator`, the items of a scenario's
``ground.terminals.generate`` list) samples ``n`` points inside an area (Ukrainian oblasts by
ISO 3166-2 code from the bundled ``borders/ukraine_oblasts.geojson``, or a GeoJSON file), minus
optional excluded areas, with a density that may decay with the distance to the boundary of a
"near" polygon (e.g. the occupied area: units cluster along the front)::

    weight = floor + (1 - floor) * exp(-d_km / scale_km)

How: batches of candidate points uniform in (lon, lat) over the area's bounding box are kept
when inside the area (:class:`leotwin.policy.geofence.ZoneIndex`), outside every excluded area,
and with probability ``weight * cos(lat) / max cos(lat)`` (the cosine makes the sampling uniform
per unit *area*, not per square degree). The first ``n`` kept points win, so the same seed gives
the same table. Distances are ``shapely.distance`` from ``shapely.points`` to the polygon's
boundary in a plane where longitudes are scaled by ``cos(lat0)`` (``lat0``: the middle latitude
of the area), times 111.195 km per degree: about 5 % accurate over Ukraine's 8° of latitude —
a density shape, not a measurement. The boundary is the whole polygon outline: for the occupied
area it includes its coast and its stretches of the Russian border, not only the front line.

File paths in a spec are resolved against ``base_dir`` (the scenario file's directory).
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import shapely
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .policy.geofence import ZoneIndex, read_zones

__all__ = ["Area", "Near", "TerminalGenerator", "area_geometry", "generate_terminals",
           "generate_tracks", "oblast_codes", "resolve"]

KM_PER_DEG = 111.195  # mean Earth radius 6371.0 km × π/180: a density scale, not geodesy
_BATCH_MIN = 4096


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Area(_Model):
    """Exactly one of ``oblasts`` (ISO 3166-2 codes such as ``UA-63``) or ``geojson`` (a file
    of Polygon/MultiPolygon features, all used); ``exclude``: GeoJSON files of areas to leave
    out (e.g. the occupied area on the scenario's date)."""

    oblasts: list[str] | None = Field(None, min_length=1)
    geojson: str | None = None
    exclude: list[str] = []

    @model_validator(mode="after")
    def _one_source(self):
        if (self.oblasts is None) == (self.geojson is None):
            raise ValueError("give exactly one of oblasts or geojson")
        return self


class Near(_Model):
    """Density ``floor + (1 - floor)·exp(-d/scale_km)``, ``d`` the distance to the boundary of
    the union of the file's polygons."""

    geojson: str
    scale_km: float = Field(30.0, gt=0)
    floor: float = Field(0.0, ge=0, le=1)


class TerminalGenerator(_Model):
    """``n`` terminals ``{prefix}-{k:04d}`` of ``account`` sampled in ``within``."""

    prefix: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    account: str = Field(min_length=1)
    n: int = Field(ge=1, le=1_000_000)
    within: Area
    near: Near | None = None
    in_motion_fraction: float = Field(0.0, ge=0, le=1)
    speed_kmh: float = Field(40.0, gt=0, description="speed of in-motion terminals (assumption)")
    leg_km: float = Field(40.0, gt=0, description="in-motion terminals shuttle along a straight "
                                                  "segment this long, centred on their point")
    plan: str | None = None
    demand_mbps: float | None = Field(None, ge=0)
    seed: int = 0


def resolve(path: str | Path, base_dir: Path) -> Path:
    """``path`` if absolute, else relative to ``base_dir`` (never the working directory)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (Path(base_dir) / p)


def _oblasts_path() -> Path:
    return Path(str(resources.files("leotwin.data").joinpath("borders",
                                                             "ukraine_oblasts.geojson")))


@functools.cache
def oblast_codes() -> tuple[str, ...]:
    """ISO 3166-2 codes of the bundled Ukrainian oblasts (27: 24 oblasts, UA-43, UA-30, UA-40)."""
    doc = json.loads(_oblasts_path().read_text("utf-8"))
    return tuple(f["properties"]["iso_3166_2"] for f in doc["features"])


@functools.cache
def _oblast_geometries() -> dict[str, shapely.Geometry]:
    return {zid: geom for zid, _, geom in read_zones(_oblasts_path(), id_property="iso_3166_2")}


@functools.cache
def _file_union(path: str) -> shapely.Geometry:
    """Union of the polygonal features of a GeoJSON file (validated by ``read_zones``)."""
    doc = json.loads(Path(path).read_text("utf-8"))
    for k, feat in enumerate(doc.get("features") or []):  # read_zones wants an id: give one
        if isinstance(feat, dict) and feat.get("id") is None:
            feat["id"] = k
    geoms = [g for _, _, g in read_zones(doc, id_property="\0no-such-property")]
    return shapely.union_all(geoms)


def area_geometry(area: Area, *, base_dir: Path) -> shapely.Geometry:
    """The area to sample in (before exclusions)."""
    if area.oblasts is not None:
        table = _oblast_geometries()
        unknown = [c for c in area.oblasts if c not in table]
        if unknown:
            raise ValueError(f"unknown oblast code {unknown[0]!r}; expected ISO 3166-2 codes of "
                             f"the bundled oblasts such as 'UA-63'")
        return shapely.union_all([table[c] for c in area.oblasts])
    return _file_union(str(resolve(area.geojson, base_dir)))


def _distance_km(boundary: shapely.Geometry, lat: np.ndarray, lon: np.ndarray,
                 lat0: float) -> np.ndarray:
    """Distance (km) from points to ``boundary`` in a plane with longitudes × cos(lat0)."""
    c = float(np.cos(np.radians(lat0)))
    scaled = shapely.transform(boundary, lambda xy: xy * [c, 1.0])
    pts = shapely.points(lon * c, lat)
    return shapely.distance(scaled, pts) * KM_PER_DEG


def _sample(spec: TerminalGenerator, base_dir: Path,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    area = area_geometry(spec.within, base_dir=base_dir)
    inside = ZoneIndex([area])
    excluded = [_file_union(str(resolve(p, base_dir))) for p in spec.within.exclude]
    outside = ZoneIndex(excluded) if excluded else None
    x0, y0, x1, y1 = area.bounds
    lat0 = 0.5 * (y0 + y1)
    cos_max = float(np.cos(np.radians(min(abs(y0), abs(y1)) if y0 * y1 > 0 else 0.0)))
    boundary = None
    if spec.near is not None:
        boundary = shapely.boundary(_file_union(str(resolve(spec.near.geojson, base_dir))))
    lats, lons, have = [], [], 0
    batch = max(_BATCH_MIN, 4 * spec.n)
    for _ in range(10_000):  # batches of candidates until n are kept
        lon = rng.uniform(x0, x1, batch)
        lat = rng.uniform(y0, y1, batch)
        u = rng.uniform(0.0, 1.0, batch)
        weight = np.cos(np.radians(lat)) / cos_max
        keep = inside.contains(lat, lon)[:, 0]
        if outside is not None:
            keep &= ~outside.contains(lat, lon).any(axis=1)
        if boundary is not None and keep.any():
            d = np.full(batch, np.inf)
            d[keep] = _distance_km(boundary, lat[keep], lon[keep], lat0)
            weight = weight * (spec.near.floor
                               + (1.0 - spec.near.floor) * np.exp(-d / spec.near.scale_km))
        keep &= u < weight
        lats.append(lat[keep])
        lons.append(lon[keep])
        have += int(keep.sum())
        if have >= spec.n:
            break
    else:
        raise ValueError(f"could not place {spec.n} terminals in the area (kept {have}); is it "
                         f"empty after the exclusions?")
    return np.concatenate(lats)[: spec.n], np.concatenate(lons)[: spec.n]


def generate_terminals(spec: TerminalGenerator | dict, *, base_dir: Path) -> pd.DataFrame:
    """A terminal table for :meth:`leotwin.ground.Ground.load`: ``terminal``, ``account``,
    ``lat_deg``, ``lon_deg``, ``alt_m`` (0), ``kind`` (``fixed``/``in_motion``; the first
    ``round(n·in_motion_fraction)`` of a random permutation move), then ``demand_mbps`` and
    ``plan`` when the spec gives them. Same spec (seed included) → same table."""
    if isinstance(spec, dict):
        spec = TerminalGenerator.model_validate(spec)
    rng = np.random.default_rng(spec.seed)
    lat, lon = _sample(spec, Path(base_dir), rng)
    n_move = int(round(spec.n * spec.in_motion_fraction))
    kind = np.full(spec.n, "fixed", dtype=object)
    kind[rng.permutation(spec.n)[:n_move]] = "in_motion"
    table = pd.DataFrame({
        "terminal": [f"{spec.prefix}-{k:04d}" for k in range(spec.n)],
        "account": spec.account,
        "lat_deg": np.round(lat, 6),
        "lon_deg": np.round(lon, 6),
        "alt_m": 0.0,
        "kind": kind,
    })
    if spec.demand_mbps is not None:
        table["demand_mbps"] = float(spec.demand_mbps)
    if spec.plan is not None:
        table["plan"] = spec.plan
    return table


def generate_tracks(terminals: pd.DataFrame, times_start, times_stop, speed_kmh: float = 40.0,
                    seed: int = 0, *, leg_km: float = 40.0) -> pd.DataFrame:
    """Tracks of the ``in_motion`` rows of ``terminals``: each shuttles at ``speed_kmh`` along a
    straight segment ``leg_km`` long with a random heading, centred on its table position,
    from ``times_start`` to ``times_stop`` (a point at every turn and at both ends).

    Positions use a local flat-Earth step (``KM_PER_DEG``, longitudes / cos(lat)), so the
    ground speed between points equals ``speed_kmh`` to well under 1 % for legs of tens of km.
    Returns ``terminal, time (datetime64[ns] UTC), lat_deg, lon_deg, alt_m``.
    """
    from .timescale import to_utc_datetime64

    moving = terminals[terminals["kind"] == "in_motion"]
    t0 = to_utc_datetime64(times_start)
    t1 = to_utc_datetime64(times_stop)
    columns = ["terminal", "time", "lat_deg", "lon_deg", "alt_m"]
    if len(moving) == 0:
        return pd.DataFrame({c: [] for c in columns})
    if not speed_kmh > 0 or not leg_km > 0:
        raise ValueError("speed_kmh and leg_km must be positive")
    leg_ns = int(round(leg_km / speed_kmh * 3.6e12))
    span_ns = int((t1 - t0).astype("int64"))
    n_turns = span_ns // leg_ns if leg_ns > 0 else 0
    offsets = np.unique(np.r_[np.arange(n_turns + 1, dtype=np.int64) * leg_ns, span_ns])
    rng = np.random.default_rng(seed)
    heading = rng.uniform(0.0, 2.0 * np.pi, len(moving))
    # distance along the segment from its start: 0, L, 0, L, ... and the partial last leg
    legs = offsets // leg_ns
    frac = (offsets - legs * leg_ns) / leg_ns
    along = np.where(legs % 2 == 0, frac, 1.0 - frac) * leg_km - 0.5 * leg_km  # centred
    lat_c = moving["lat_deg"].to_numpy(np.float64)
    lon_c = moving["lon_deg"].to_numpy(np.float64)
    north = np.cos(heading)[:, None] * along[None, :] / KM_PER_DEG
    east = np.sin(heading)[:, None] * along[None, :] / KM_PER_DEG
    # longitude step at the segment's own latitude (mid-point of the step, to second order)
    lat = lat_c[:, None] + north
    lon = lon_c[:, None] + east / np.cos(np.radians(lat_c[:, None] + 0.5 * north))
    n_pts = offsets.size
    return pd.DataFrame({
        "terminal": np.repeat(moving["terminal"].to_numpy(dtype=object), n_pts),
        "time": np.tile(t0 + offsets.astype("timedelta64[ns]"), len(moving)),
        "lat_deg": lat.ravel(),
        "lon_deg": lon.ravel(),
        "alt_m": 0.0,
    })
