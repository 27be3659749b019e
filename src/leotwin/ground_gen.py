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

In-motion terminals (:func:`generate_tracks`) shuttle along a straight leg centred on their
point. Given the generator's area (as :meth:`leotwin.scenario.Scenario.ground` does), the leg
stays inside it, exclusions included: of 16 random headings the first whose whole leg fits is
used, else the leg is halved (down to ``leg_km / 32``) and the headings tried again; a terminal
that fits no leg (a point tens of metres from the area's edge) gets no track and
``Scenario.ground`` marks it ``fixed``.

File paths in a spec are resolved against ``base_dir`` (the scenario file's directory).
"""

from __future__ import annotations

import functools
import json
import logging
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import shapely
from pydantic import Field, model_validator

from ._common import FrozenModel
from .frames import ecef_to_geodetic, geodetic_to_ecef, great_circle_km
from .policy.geofence import ZoneIndex, read_zones

__all__ = ["Area", "Near", "TerminalGenerator", "area_geometry", "generate_terminals",
           "generate_tracks", "oblast_codes", "resolve"]

logger = logging.getLogger(__name__)

KM_PER_DEG = 111.195  # mean Earth radius 6371.0 km × π/180: a density scale, not geodesy
_BATCH_MIN = 4096
_HEADINGS = 16         # candidate headings drawn per in-motion terminal
_HALVINGS = 5          # legs tried: leg_km / 2**k, k = 0.._HALVINGS (40 km → 1.25 km)
_CHECK_KM = 1.0        # spacing (at most) of the points checked along a candidate leg
_CHECK_POINTS = 2_000_000  # candidate points tested at once (bounds memory)


_Model = FrozenModel


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
                                                  "segment this long, centred on their point, "
                                                  "inside the area (shorter where it must be; "
                                                  "see generate_tracks)")
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


@functools.lru_cache(maxsize=32)
def _area_indexes(area_json: str, base_dir: str) -> tuple[ZoneIndex, ZoneIndex | None]:
    """Compiled (area, exclusions) of an :class:`Area` (given as JSON, to be hashable)."""
    area = Area.model_validate_json(area_json)
    inside = ZoneIndex([area_geometry(area, base_dir=Path(base_dir))])
    excluded = [_file_union(str(resolve(p, Path(base_dir)))) for p in area.exclude]
    return inside, (ZoneIndex(excluded) if excluded else None)


def _in_area(area: Area, base_dir: Path, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Boolean mask: point inside ``area`` and outside every one of its exclusions."""
    inside, outside = _area_indexes(area.model_dump_json(), str(base_dir))
    keep = inside.contains(lat, lon)[:, 0]
    if outside is not None:
        keep &= ~outside.contains(lat, lon).any(axis=1)
    return keep


def _sample(spec: TerminalGenerator, base_dir: Path,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    area = area_geometry(spec.within, base_dir=base_dir)
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
        keep = _in_area(spec.within, base_dir, lat, lon)
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


def _offset(lat_c, lon_c, heading, along_km):
    """Points ``along_km`` from ``(lat_c, lon_c)`` on ``heading`` (radians from north), by a
    local flat-Earth step with the longitude step at the mid-latitude; inputs broadcast."""
    north = np.cos(heading) * along_km / KM_PER_DEG
    east = np.sin(heading) * along_km / KM_PER_DEG
    return lat_c + north, lon_c + east / np.cos(np.radians(lat_c + 0.5 * north))


def _chord(lat0, lon0, lat1, lon1, w):
    """Points a fraction ``w`` of the way between two surface points, interpolated the way
    :meth:`leotwin.ground.Ground.terminal_positions` interpolates a track (ECEF chord lifted
    radially); inputs broadcast."""
    r0, r1 = geodetic_to_ecef(lat0, lon0, 0.0), geodetic_to_ecef(lat1, lon1, 0.0)
    w = np.asarray(w, dtype=np.float64)[..., None]
    r = r0 + w * (r1 - r0)
    lift = np.linalg.norm(r0, axis=-1) * (1.0 - w[..., 0]) + np.linalg.norm(r1, axis=-1) * w[..., 0]
    r = r * (lift / np.linalg.norm(r, axis=-1))[..., None]
    lat, lon, _ = ecef_to_geodetic(r)
    return lat, lon


@functools.lru_cache(maxsize=32)
def _allowed_geometry(area_json: str, base_dir: str) -> shapely.Geometry:
    """The area of an :class:`Area` minus its exclusions, prepared."""
    area = Area.model_validate_json(area_json)
    geom = area_geometry(area, base_dir=Path(base_dir))
    excluded = [_file_union(str(resolve(p, Path(base_dir)))) for p in area.exclude]
    if excluded:
        geom = shapely.difference(geom, shapely.union_all(excluded))
    shapely.prepare(geom)
    return geom


def _legs_inside(within: Area, base_dir: Path, lat0, lon0, lat1, lon1) -> np.ndarray:
    """Whether each leg, as the track will draw it (see :func:`_chord`), lies in ``within``
    minus its exclusions: vertices at most ``_CHECK_KM`` apart are tested with the area's
    ``ZoneIndex``, then the legs whose vertices all pass are tested exactly as polylines
    (``shapely.covers``; the polyline is within centimetres of the drawn path)."""
    n = np.size(lat0)
    length = float(np.max(great_circle_km(lat0, lon0, lat1, lon1), initial=0.0))
    w = np.linspace(0.0, 1.0, max(3, int(np.ceil(length / _CHECK_KM)) + 1))
    lat, lon = _chord(np.ravel(lat0)[:, None], np.ravel(lon0)[:, None],
                      np.ravel(lat1)[:, None], np.ravel(lon1)[:, None], w[None, :])
    ok = _in_area(within, base_dir, lat.ravel(), lon.ravel()).reshape(n, w.size).all(axis=1)
    if ok.any():
        lines = shapely.linestrings(np.stack([lon[ok], lat[ok]], axis=-1))
        allowed = _allowed_geometry(within.model_dump_json(), str(base_dir))
        ok[ok] = shapely.covers(allowed, lines)
    return ok


def _fit_legs(lat_c: np.ndarray, lon_c: np.ndarray, headings: np.ndarray, leg_km: float,
              within: Area, base_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Per terminal, the first candidate heading (``headings``: ``(k, n)``) whose leg, centred
    on the terminal, stays in ``within`` (exclusions included), trying ``leg_km`` then halves
    of it; returns ``(heading, level)``, the leg being ``leg_km / 2**level`` (-1: none fits).
    No Python loop over terminals: whole arrays per (leg length, chunk of terminals)."""
    k, n = headings.shape
    heading = headings[0].copy()
    level = np.full(n, -1, dtype=np.int64)
    todo = np.arange(n)
    for h in range(_HALVINGS + 1):
        if todo.size == 0:
            break
        length = leg_km / 2**h
        chunk = max(1, _CHECK_POINTS // (k * (int(np.ceil(length / _CHECK_KM)) + 2)))
        fits = []
        for a in range(0, todo.size, chunk):
            idx = todo[a:a + chunk]
            ends = _offset(lat_c[idx][None, :, None], lon_c[idx][None, :, None],
                           headings[:, idx][:, :, None], np.array([-0.5, 0.5]) * length)
            lat, lon = ends                                    # (k, chunk, 2): both ends
            ok = _legs_inside(within, base_dir, lat[..., 0], lon[..., 0], lat[..., 1],
                              lon[..., 1]).reshape(k, idx.size)
            fit = ok.any(axis=0)
            first = ok.argmax(axis=0)                          # first fitting candidate
            heading[idx[fit]] = headings[first[fit], idx[fit]]
            level[idx[fit]] = h
            fits.append(fit)
        todo = todo[~np.concatenate(fits)]
    return heading, level


def _shuttle(lat_c: np.ndarray, lon_c: np.ndarray, heading: np.ndarray, leg_km: float,
             speed_kmh: float, span_ns: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Turn-time offsets (ns) and ``(n, n_points)`` positions of terminals shuttling along
    their centred leg: a point at every turn (an end of the leg) and at both ends of the time
    span; a point between the leg's ends (the partial last leg) lies on the path that
    :meth:`leotwin.ground.Ground.terminal_positions` draws between them (:func:`_chord`)."""
    leg_ns = int(round(leg_km / speed_kmh * 3.6e12))
    n_turns = span_ns // leg_ns if leg_ns > 0 else 0
    leg_ns = max(leg_ns, 1)
    offsets = np.unique(np.r_[np.arange(n_turns + 1, dtype=np.int64) * leg_ns, span_ns])
    # fraction of the way from end A to end B: 0, 1, 0, 1, ... and the partial last leg
    legs = offsets // leg_ns
    frac = (offsets - legs * leg_ns) / leg_ns
    w = np.where(legs % 2 == 0, frac, 1.0 - frac)
    lat_a, lon_a = _offset(lat_c, lon_c, heading, -0.5 * leg_km)
    lat_b, lon_b = _offset(lat_c, lon_c, heading, 0.5 * leg_km)
    lat, lon = _chord(lat_a[:, None], lon_a[:, None], lat_b[:, None], lon_b[:, None],
                      w[None, :])
    at_a, at_b = w == 0.0, w == 1.0                            # the ends themselves, exactly
    lat = np.where(at_a, lat_a[:, None], np.where(at_b, lat_b[:, None], lat))
    lon = np.where(at_a, lon_a[:, None], np.where(at_b, lon_b[:, None], lon))
    return offsets, lat, lon


def generate_tracks(terminals: pd.DataFrame, times_start, times_stop, speed_kmh: float = 40.0,
                    seed: int = 0, *, leg_km: float = 40.0, within: Area | dict | None = None,
                    base_dir: str | Path | None = None) -> pd.DataFrame:
    """Tracks of the ``in_motion`` rows of ``terminals``: each shuttles at ``speed_kmh`` along a
    straight segment ``leg_km`` long with a random heading, centred on its table position,
    from ``times_start`` to ``times_stop`` (a point at every turn and at both ends).

    With ``within`` (an :class:`Area`, normally the generator's own, file paths resolved against
    ``base_dir``) every track stays in the area minus its exclusions: ``_HEADINGS`` (16)
    candidate headings are drawn per terminal at once and the first whose whole leg fits wins
    (the path :class:`~leotwin.ground.Ground` draws between the leg's ends: vertices at most
    1 km apart tested with the area's :class:`~leotwin.policy.geofence.ZoneIndex`, then the
    polyline exactly with ``shapely.covers``); when none fits the leg is halved and the same
    headings are tried again, down to ``leg_km / 32``. A terminal that fits no leg at all (its
    point within about a kilometre of the area's edge on every side) gets **no track**: it
    stays at its table position, like any ``in_motion`` terminal without a track in
    :meth:`leotwin.ground.Ground.load`; its id is listed in the result's
    ``attrs["stationary"]`` (and logged) so that a caller can mark it ``fixed``. Without
    ``within`` the first candidate heading is used as is (the table's area is not known).

    The leg's ends use a local flat-Earth step (``KM_PER_DEG``, longitudes / cos(lat)), so the
    ground speed between points equals ``speed_kmh`` to well under 1 % for legs of tens of km;
    the partial last leg ends on the path ``Ground`` interpolates between them. Same
    inputs (seed included) → same tracks. Returns ``terminal, time (datetime64[ns] UTC),
    lat_deg, lon_deg, alt_m``, sorted by terminal (table order) then time.
    """
    from .timescale import to_utc_datetime64

    moving = terminals[terminals["kind"] == "in_motion"]
    t0 = to_utc_datetime64(times_start)
    t1 = to_utc_datetime64(times_stop)
    columns = ["terminal", "time", "lat_deg", "lon_deg", "alt_m"]
    empty = pd.DataFrame({c: [] for c in columns})
    empty.attrs["stationary"] = []
    if len(moving) == 0:
        return empty
    if not speed_kmh > 0 or not leg_km > 0:
        raise ValueError("speed_kmh and leg_km must be positive")
    span_ns = int((t1 - t0).astype("int64"))
    rng = np.random.default_rng(seed)
    # (k, n): row 0 is the single heading per terminal drawn before areas were checked
    headings = rng.uniform(0.0, 2.0 * np.pi, (_HEADINGS, len(moving)))
    lat_c = moving["lat_deg"].to_numpy(np.float64)
    lon_c = moving["lon_deg"].to_numpy(np.float64)
    ids = moving["terminal"].to_numpy(dtype=object)
    if within is None:
        heading, level = headings[0], np.zeros(len(moving), dtype=np.int64)
    else:
        if base_dir is None:
            raise ValueError("base_dir is needed with within (file paths resolve against it)")
        if isinstance(within, dict):
            within = Area.model_validate(within)
        heading, level = _fit_legs(lat_c, lon_c, headings, leg_km, within, Path(base_dir))
    stationary = [str(t) for t in ids[level < 0]]
    if stationary:
        logger.warning("%d in_motion terminal(s) fit no leg inside their area and stay at their "
                       "table position: %s", len(stationary), ", ".join(stationary[:10]))
    frames = []
    for h in np.unique(level[level >= 0]):  # one group per leg length (at most _HALVINGS + 1)
        sel = np.flatnonzero(level == h)
        offsets, lat, lon = _shuttle(lat_c[sel], lon_c[sel], heading[sel], leg_km / 2**int(h),
                                     speed_kmh, span_ns)
        n_pts = offsets.size
        frames.append(pd.DataFrame({
            "_row": np.repeat(sel, n_pts),
            "terminal": np.repeat(ids[sel], n_pts),
            "time": np.tile(t0 + offsets.astype("timedelta64[ns]"), sel.size),
            "lat_deg": lat.ravel(),
            "lon_deg": lon.ravel(),
            "alt_m": 0.0,
        }))
    if not frames:
        empty.attrs["stationary"] = stationary
        return empty
    out = (pd.concat(frames, ignore_index=True).sort_values("_row", kind="stable")
           .drop(columns="_row").reset_index(drop=True))
    out.attrs["stationary"] = stationary
    return out
