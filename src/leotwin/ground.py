"""The ground segment: user terminals, their tracks, gateways and PoPs, validated on load.

Every loader accepts a file path (``.csv``, ``.geojson``/``.json``, ``.parquet``), a
``pandas.DataFrame`` or a list of dicts, and either returns a complete, clean table or raises
:class:`GroundError` naming the source, the row and the column. Nothing is ever half-loaded: the
input is never modified and no partial table is returned.

Returned tables have a fresh ``RangeIndex`` and their canonical columns first, in the order of
``*_COLUMNS`` (``float64`` numbers, ``str`` ids; ``antennas`` is ``int64`` and track ``time`` is
UTC ``datetime64[ns]``), followed by any extra columns as given.

File conventions
----------------
* CSV: UTF-8 with a header line; only empty cells are missing values (``NA`` stays the text
  ``"NA"``, e.g. Namibia's ISO code). Rows are reported as 1-based file lines (``line 2`` is the
  first data row).
* GeoJSON: a ``FeatureCollection`` of ``Point`` features; ``coordinates`` are
  ``[lon_deg, lat_deg(, alt_m)]`` (RFC 7946 order, height in metres above the WGS84 ellipsoid) and
  ``properties`` hold the other columns. Rows are reported as ``feature N`` (0-based). The
  geometry wins over ``lat_deg``/``lon_deg``/``alt_m`` properties.
* Parquet and DataFrames: rows are reported as ``row N`` (0-based position).

Bundled data (see ``data/PROVENANCE.md``)
-----------------------------------------
``load_gateways()`` and ``load_pops()`` without a source read the StarPerf Starlink lists (about
late 2023; using them for 2022 is an assumption). Their names are not unique ids (Ka- and E-band
antenna groups of one site share a name, and "Des Moines" and "Hawthorne" are two sites each), so
the bundled gateway id is StarPerf's ``source_id`` (``GS1`` … ``GS261``) with the site name kept
in ``name``; the bundled PoP id is the short ``pop_code`` (``FRA``, ``LON/LHR``, …) with the full
StarPerf name (``FRA - FRNTDEU1``) kept in ``name``.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from importlib.resources import files
from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd

from .defaults import DEFAULTS, default
from .frames import ecef_to_geodetic, geodetic_to_ecef, great_circle_km
from .geometry.sites import ALT_RANGE_M, LAT_RANGE_DEG, LON_RANGE_DEG
from .timescale import to_utc_datetime64

logger = logging.getLogger(__name__)

TERMINAL_COLUMNS = ("terminal", "account", "lat_deg", "lon_deg", "alt_m", "kind", "demand_mbps",
                    "min_mbps")
TRACK_COLUMNS = ("terminal", "time", "lat_deg", "lon_deg", "alt_m")
GATEWAY_COLUMNS = ("gateway", "lat_deg", "lon_deg", "alt_m", "antennas", "min_elevation_deg",
                   "backhaul_gbps", "pop", "pop_distance_km")
POP_COLUMNS = ("pop", "lat_deg", "lon_deg", "alt_m")
TERMINAL_KINDS = ("fixed", "in_motion")

_ALIASES = {"lat_deg": ("lat", "latitude"), "lon_deg": ("lon", "lng", "long", "longitude"),
            "alt_m": ("alt", "altitude", "height")}


class GroundError(ValueError):
    """A ground table failed validation.

    ``source`` is the file path or table name; ``row`` is the 1-based file line for CSV files
    (header = line 1), the 0-based feature index for GeoJSON and the 0-based position otherwise
    (``None`` when the problem is not in one row); ``column`` is the column concerned, if any.
    """

    def __init__(self, message: str, *, source: str, row: int | None = None,
                 column: str | None = None):
        super().__init__(" ".join(str(message).split()))  # always one line
        self.source = source
        self.row = row
        self.column = column


# ----------------------------------------------------------------------------- sources


@dataclass
class _Source:
    """Where a table came from, to name rows the way the user sees them."""

    label: str
    kind: str  # "csv", "geojson" or "table"
    path: Path | None = None
    _lines: list[int] | None = field(default=None, repr=False)

    def row(self, pos: int) -> tuple[int, str]:
        """(row number as stored in ``GroundError.row``, text) of the 0-based data row ``pos``."""
        if self.kind == "csv":
            line = self._csv_lines()[pos] if pos < len(self._csv_lines()) else pos + 2
            return line, f"line {line}"
        if self.kind == "geojson":
            return pos, f"feature {pos}"
        return pos, f"row {pos}"

    def _csv_lines(self) -> list[int]:
        """First file line of each data record (pandas skips blank lines; quotes may span lines)."""
        if self._lines is None:
            starts = []
            with open(self.path, encoding="utf-8-sig", newline="") as fh:
                reader = csv.reader(fh)
                previous = 0
                for record in reader:
                    if record:
                        starts.append(previous + 1)
                    previous = reader.line_num
            self._lines = starts[1:]  # the first record is the header
        return self._lines

    def error(self, problem: str, pos: int | None = None, column: str | None = None,
              ) -> GroundError:
        parts = [self.label]
        row = None
        if pos is not None:
            row, text = self.row(pos)
            parts.append(text)
        if column is not None:
            parts.append(f"column {column!r}")
        return GroundError(", ".join(parts) + ": " + problem, source=self.label, row=row,
                           column=column)


def _read(source, what: str) -> tuple[pd.DataFrame, _Source]:
    """Read ``source`` into a raw DataFrame (no validation yet)."""
    if isinstance(source, pd.DataFrame):
        return source.copy(), _Source(f"{what} table", "table")
    if isinstance(source, (str, PathLike)):
        return _read_file(Path(source), what)
    if isinstance(source, (list, tuple)):
        src = _Source(f"{what} table", "table")
        for i, item in enumerate(source):
            if not isinstance(item, dict):
                raise src.error(f"expected a dict per row, got {type(item).__name__}", i)
        return pd.DataFrame(list(source)), src
    raise TypeError(f"{what}: expected a file path (.csv, .geojson, .json, .parquet), a "
                    f"DataFrame or a list of dicts, got {type(source).__name__}")


def _read_file(path: Path, what: str, label: str | None = None) -> tuple[pd.DataFrame, _Source]:
    label = label or str(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".geojson", ".json", ".parquet", ".pq"):
        raise GroundError(f"{label}: cannot read {what} from a {suffix or 'suffix-less'} file; "
                          f"expected .csv, .geojson, .json or .parquet", source=label)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {label}")
    if suffix == ".csv":
        src = _Source(label, "csv", path)
        _check_field_counts(path, label)
        try:
            # Only empty cells are missing: keep_default_na=False keeps ids such as "NA".
            # index_col=False: a row with more fields than the header is an error, never a
            # silent shift of every column into the index.
            frame = pd.read_csv(path, encoding="utf-8-sig", keep_default_na=False,
                                na_values=[""], dtype=dict.fromkeys(_STRING_COLUMNS, str),
                                index_col=False)
        except pd.errors.EmptyDataError:
            raise GroundError(f"{label}: the file is empty; expected a header line and rows",
                              source=label) from None
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise GroundError(f"{label}: not a readable UTF-8 CSV file ({exc})",
                              source=label) from None
        return frame, src
    if suffix in (".geojson", ".json"):
        return _read_geojson(path, label)
    src = _Source(label, "table", path)
    try:
        return pd.read_parquet(path), src
    except (ValueError, OSError) as exc:
        raise GroundError(f"{label}: not a readable Parquet file ({exc})", source=label) from None


_STRING_COLUMNS = ("terminal", "account", "kind", "gateway", "pop", "name")


def _check_field_counts(path: Path, label: str) -> None:
    """Every CSV record must have as many fields as the header (else pandas would shift the
    columns or drop the extra value silently)."""
    import csv

    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                return
            for row in reader:
                if row and len(row) != len(header):
                    raise GroundError(
                        f"{label}, line {reader.line_num}: {len(row)} fields but the header "
                        f"has {len(header)}; expected one value per column", source=label,
                        row=reader.line_num)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise GroundError(f"{label}: not a readable UTF-8 CSV file ({exc})",
                          source=label) from None


def _read_geojson(path: Path, label: str) -> tuple[pd.DataFrame, _Source]:
    src = _Source(label, "geojson", path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GroundError(f"{label}: not valid UTF-8 JSON ({exc})", source=label) from None
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection" or not isinstance(
            doc.get("features"), list):
        raise GroundError(f"{label}: expected a GeoJSON FeatureCollection with a 'features' list",
                          source=label)
    records = []
    for i, feature in enumerate(doc["features"]):
        if not isinstance(feature, dict) or feature.get("type") != "Feature":
            raise src.error("expected a GeoJSON Feature object", i)
        geometry = feature.get("geometry")
        gtype = geometry.get("type") if isinstance(geometry, dict) else None
        if gtype != "Point":
            raise src.error(f"geometry type is {gtype!r}; expected a Point "
                            f"([longitude, latitude(, height_m)])", i, "geometry")
        coords = geometry.get("coordinates")
        if not isinstance(coords, list) or len(coords) not in (2, 3):
            raise src.error(f"Point coordinates {coords!r} are not [longitude, latitude] or "
                            f"[longitude, latitude, height_m]", i, "geometry")
        props = feature.get("properties") or {}
        if not isinstance(props, dict):
            raise src.error("properties must be an object", i, "properties")
        record = dict(props)
        record["lon_deg"], record["lat_deg"] = coords[0], coords[1]
        if len(coords) == 3:
            record["alt_m"] = coords[2]
        records.append(record)
    return pd.DataFrame.from_records(records), src


# ----------------------------------------------------------------------------- validation


def _require(df: pd.DataFrame, src: _Source, required: tuple[str, ...], expected: str) -> None:
    if len(df) == 0:
        raise src.error(f"the table is empty; expected at least one row with columns {expected}")
    duplicated = df.columns[df.columns.duplicated()]
    if len(duplicated):
        raise src.error("the column appears more than once; expected unique column names",
                        column=str(duplicated[0]))
    missing = [c for c in required if c not in df.columns]
    if missing:
        hints = [f"{a!r} → {c!r}" for c in missing for a in _ALIASES.get(c, ()) if a in df.columns]
        hint = f" (rename {', '.join(hints)})" if hints else ""
        raise src.error(f"missing required column(s) {', '.join(map(repr, missing))}{hint}; "
                        f"expected columns {expected}", column=missing[0])


def _show(value) -> str:
    """``repr`` of a cell value, without numpy's ``np.float64(...)`` wrapper."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _blank(series: pd.Series) -> np.ndarray:
    """Missing cells: NaN/None or text that is empty after stripping."""
    isna = series.isna().to_numpy()
    if pd.api.types.is_numeric_dtype(series.dtype) or pd.api.types.is_datetime64_any_dtype(
            series.dtype):
        return isna
    if series.dtype == "str":
        return isna | series.str.strip().eq("").fillna(False).to_numpy(dtype=bool)
    text = series.astype(object).map(lambda v: isinstance(v, str) and not v.strip())
    return isna | text.to_numpy(dtype=bool)


def _ids(df: pd.DataFrame, column: str, src: _Source, what: str) -> pd.Series:
    """A required text column: no blanks; numbers become their text."""
    blank = _blank(df[column])
    if blank.any():
        pos = int(np.flatnonzero(blank)[0])
        raise src.error(f"missing {what}; expected a non-empty text id", pos, column)
    if df[column].dtype == "str":
        return df[column].copy()
    return df[column].astype(object).map(str).astype("str")


def _numbers(df: pd.DataFrame, column: str, src: _Source, *, expected: str,
             default_name: str | None = None, default_value: float | None = None,
             what: str = "rows") -> np.ndarray:
    """A numeric column as float64: blanks take the default (or are an error when required)."""
    fill = default(default_name) if default_name is not None else default_value
    if column not in df.columns:
        if default_name is not None:
            logger.info("%s: no %r column; assuming %g for all %d %s (default %r; %s)",
                        src.label, column, fill, len(df), what, default_name,
                        DEFAULTS[default_name].source)
        return np.full(len(df), fill, dtype=np.float64)
    series = df[column]
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    blank = _blank(series)
    if fill is None and blank.any():
        pos = int(np.flatnonzero(blank)[0])
        raise src.error(f"missing value; expected {expected}", pos, column)
    bad = ~blank & ~np.isfinite(values)
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        raise src.error(f"{_show(series.iloc[pos])} is not a finite number; expected "
                        f"{expected}", pos, column)
    if blank.any():
        if default_name is not None:
            logger.info("%s: %d %s without %r; assuming %g (default %r; %s)", src.label,
                        int(blank.sum()), what, column, fill, default_name,
                        DEFAULTS[default_name].source)
        values = np.where(blank, fill, values)
    return values


def _check_range(values: np.ndarray, column: str, src: _Source, lo: float, hi: float,
                 expected: str) -> None:
    bad = (values < lo) | (values > hi)
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        raise src.error(f"{_show(values[pos])} is outside [{lo:g}, {hi:g}]; expected "
                        f"{expected}", pos, column)


def _coordinates(df: pd.DataFrame, src: _Source) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lat = _numbers(df, "lat_deg", src, expected="latitude in degrees, -90 to 90")
    lon = _numbers(df, "lon_deg", src, expected="longitude in degrees, -180 to 180")
    bad = ((lat < LAT_RANGE_DEG[0]) | (lat > LAT_RANGE_DEG[1]) | (lon < LON_RANGE_DEG[0])
           | (lon > LON_RANGE_DEG[1]))
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        if abs(lat[pos]) > 90.0 and abs(lon[pos]) <= 90.0:
            order = (" (GeoJSON coordinates are [longitude, latitude])"
                     if src.kind == "geojson" else "")
            raise src.error(f"latitude {_show(lat[pos])} and longitude {_show(lon[pos])}: "
                            f"latitude and longitude look swapped{order}; expected latitude in "
                            f"[-90, 90] and longitude in [-180, 180]", pos, "lat_deg")
        if abs(lat[pos]) > 90.0:
            raise src.error(f"latitude {_show(lat[pos])} is outside [-90, 90]; expected degrees "
                            f"north in [-90, 90]", pos, "lat_deg")
        wrap = " (subtract 360 from longitudes above 180)" if 180.0 < lon[pos] <= 360.0 else ""
        raise src.error(f"longitude {_show(lon[pos])} is outside [-180, 180]; expected degrees "
                        f"east in [-180, 180]{wrap}", pos, "lon_deg")
    alt = _numbers(df, "alt_m", src, default_value=0.0,
                   expected=f"height above the WGS84 ellipsoid in metres, {ALT_RANGE_M[0]:g} "
                            f"to {ALT_RANGE_M[1]:g}")
    _check_range(alt, "alt_m", src, *ALT_RANGE_M, "height above the WGS84 ellipsoid in metres")
    return lat, lon, alt


def _unique(ids: pd.Series, column: str, src: _Source) -> None:
    dup = ids.duplicated().to_numpy()
    if dup.any():
        pos = int(np.flatnonzero(dup)[0])
        first = int(np.flatnonzero((ids == ids.iloc[pos]).to_numpy())[0])
        raise src.error(f"duplicate {column} {_show(ids.iloc[pos])} (also in {src.row(first)[1]}); "
                        f"expected unique ids", pos, column)


def _assemble(df: pd.DataFrame, canonical: dict[str, object], order: tuple[str, ...],
              ) -> pd.DataFrame:
    """Canonical columns in ``order`` first, then the extra columns of ``df`` as they were."""
    out = pd.DataFrame({c: canonical[c] for c in order})
    extras = [c for c in df.columns if c not in canonical]
    if extras:
        rest = df[extras].reset_index(drop=True)
        for c in extras:  # an all-empty column reads back from CSV as float NaN: be consistent
            if rest[c].dtype == object and rest[c].isna().all():
                rest[c] = rest[c].astype(np.float64)
        out = pd.concat([out, rest], axis=1)
    return out


# ----------------------------------------------------------------------------- loaders


def _terminals(source) -> tuple[pd.DataFrame, _Source]:
    raw, src = _read(source, "terminals")
    expected = ("terminal, account, lat_deg, lon_deg[, alt_m, kind (fixed|in_motion), "
                "demand_mbps, min_mbps]")
    _require(raw, src, ("terminal", "account", "lat_deg", "lon_deg"), expected)
    df = raw.reset_index(drop=True)
    ids = _ids(df, "terminal", src, "terminal id")
    account = _ids(df, "account", src, "account")
    lat, lon, alt = _coordinates(df, src)
    if "kind" in df.columns:
        blank = _blank(df["kind"])
        kind = df["kind"].astype(object).where(~blank, "fixed")
        bad = ~kind.isin(TERMINAL_KINDS).to_numpy()
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            raise src.error(f"kind {_show(kind.iloc[pos])} is not one of 'fixed', 'in_motion'", pos,
                            "kind")
        kind = kind.astype("str")
    else:
        kind = pd.Series(["fixed"] * len(df), dtype="str")
    demand = _numbers(df, "demand_mbps", src, default_name="terminal_demand_mbps",
                      expected="busy-hour demand in Mbit/s, >= 0", what="terminals")
    _check_range(demand, "demand_mbps", src, 0.0, np.inf, "busy-hour demand in Mbit/s, >= 0")
    minimum = _numbers(df, "min_mbps", src, default_name="terminal_min_mbps",
                       expected="minimum acceptable rate in Mbit/s, >= 0", what="terminals")
    _check_range(minimum, "min_mbps", src, 0.0, np.inf, "minimum acceptable rate in Mbit/s, >= 0")
    _unique(ids, "terminal", src)
    canonical = {"terminal": ids.to_numpy(), "account": account.to_numpy(), "lat_deg": lat,
                 "lon_deg": lon, "alt_m": alt, "kind": kind.to_numpy(), "demand_mbps": demand,
                 "min_mbps": minimum}
    out = _assemble(df, canonical, TERMINAL_COLUMNS)
    for c in ("terminal", "account", "kind"):
        out[c] = out[c].astype("str")
    return out, src


def load_terminals(source) -> pd.DataFrame:
    """Validated user-terminal table (columns :data:`TERMINAL_COLUMNS`, then extras).

    ``kind`` defaults to ``fixed``; ``demand_mbps``/``min_mbps`` default to the
    ``terminal_demand_mbps``/``terminal_min_mbps`` assumptions (logged) when absent or blank.
    """
    return _terminals(source)[0]


def _tracks(source) -> tuple[pd.DataFrame, _Source]:
    raw, src = _read(source, "tracks")
    _require(raw, src, ("terminal", "time", "lat_deg", "lon_deg"),
             "terminal, time (UTC ISO 8601), lat_deg, lon_deg[, alt_m]")
    df = raw.reset_index(drop=True)
    ids = _ids(df, "terminal", src, "terminal id")
    time = _times(df["time"], src)
    lat, lon, alt = _coordinates(df, src)
    key = pd.DataFrame({"terminal": ids, "time": time})
    dup = key.duplicated().to_numpy()
    if dup.any():
        pos = int(np.flatnonzero(dup)[0])
        first = int(np.flatnonzero(((key["terminal"] == ids.iloc[pos])
                                    & (key["time"] == time[pos])).to_numpy())[0])
        raise src.error(f"terminal {ids.iloc[pos]!r} has two track points at {time[pos]} (also "
                        f"{src.row(first)[1]}); expected one point per terminal and time", pos,
                        "time")
    canonical = {"terminal": ids.to_numpy(), "time": time, "lat_deg": lat, "lon_deg": lon,
                 "alt_m": alt}
    out = _assemble(df, canonical, TRACK_COLUMNS)
    out["terminal"] = out["terminal"].astype("str")
    return out, src


def _times(series: pd.Series, src: _Source) -> np.ndarray:
    """UTC ``datetime64[ns]`` from ISO 8601 text, datetimes or datetime64 (naive = UTC)."""
    expected = "a UTC ISO 8601 time such as '2022-10-07T12:00:00Z'"
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        parsed = series.dt.tz_convert("UTC").dt.tz_localize(None)
    elif pd.api.types.is_datetime64_dtype(series.dtype):
        parsed = series
    elif pd.api.types.is_numeric_dtype(series.dtype):
        raise src.error(f"{_show(series.iloc[0])} is a number; expected {expected}", 0, "time")
    else:
        blank = _blank(series)
        if blank.any():
            pos = int(np.flatnonzero(blank)[0])
            raise src.error(f"missing time; expected {expected}", pos, "time")
        try:
            parsed = pd.to_datetime(series, utc=True, format="ISO8601", errors="coerce")
        except (ValueError, TypeError, OverflowError) as exc:
            raise src.error(f"cannot read the times ({exc}); expected {expected}",
                            column="time") from None
        bad = parsed.isna().to_numpy()
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            raise src.error(f"cannot read time {_show(series.iloc[pos])}; expected {expected}", pos,
                            "time")
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    bad = parsed.isna().to_numpy()
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        raise src.error(f"missing time; expected {expected}", pos, "time")
    try:
        return parsed.to_numpy().astype("datetime64[ns]")
    except (ValueError, OverflowError) as exc:
        raise src.error(f"time out of range ({exc}); expected {expected}", column="time") from None


def load_tracks(source) -> pd.DataFrame:
    """Validated in-motion tracks: ``terminal, time, lat_deg, lon_deg[, alt_m]`` (then extras).

    ``time`` is read as UTC (a time without an offset is UTC) and returned as ``datetime64[ns]``.
    Rows keep their input order; one point per terminal and time.
    """
    return _tracks(source)[0]


def _bundled(name: str) -> Path:
    return Path(str(files("leotwin.data").joinpath(f"ground/{name}")))


def _pops(source) -> tuple[pd.DataFrame, _Source]:
    if source is None:
        raw, src = _read_file(_bundled("pops.csv"), "PoPs", "bundled ground/pops.csv")
        raw = raw.rename(columns={"pop": "name"})
        raw.insert(0, "pop", raw["pop_code"])
    else:
        raw, src = _read(source, "PoPs")
    _require(raw, src, ("pop", "lat_deg", "lon_deg"), "pop, lat_deg, lon_deg[, alt_m]")
    df = raw.reset_index(drop=True)
    ids = _ids(df, "pop", src, "PoP id")
    lat, lon, alt = _coordinates(df, src)
    _unique(ids, "pop", src)
    out = _assemble(df, {"pop": ids.to_numpy(), "lat_deg": lat, "lon_deg": lon, "alt_m": alt},
                    POP_COLUMNS)
    out["pop"] = out["pop"].astype("str")
    return out, src


def load_pops(source=None) -> pd.DataFrame:
    """Validated PoP table (``pop, lat_deg, lon_deg, alt_m``, then extras); ``None`` → bundled.

    The bundled PoPs (StarPerf, about late 2023) use the short ``pop_code`` as id.
    """
    return _pops(source)[0]


def load_gateways(source=None, pops=None) -> pd.DataFrame:
    """Validated gateway table (columns :data:`GATEWAY_COLUMNS`, then extras); ``None`` → bundled.

    * ``antennas`` (whole number >= 1; read from ``antenna_count`` when there is no
      ``antennas`` column): absent or blank → the ``gateway_antennas`` assumption (logged).
    * ``min_elevation_deg`` in [0, 90], default ``gateway_min_elevation_deg``.
    * ``backhaul_gbps`` >= 0, default ``gateway_backhaul_gbps`` (an assumption; logged).
    * ``pop``: the PoP the gateway's traffic enters the Internet at. Where it is absent or blank
      the gateway is mapped to the nearest PoP by great-circle distance; a ``pop`` that is not
      in ``pops`` (default: the bundled PoPs) is an error.
    * ``pop_distance_km``: great-circle gateway → PoP distance (always recomputed), which
      routing turns into fibre delay.
    """
    pops_df = load_pops(pops)
    bundled = source is None
    if bundled:
        raw, src = _read_file(_bundled("gateways.csv"), "gateways", "bundled ground/gateways.csv")
        raw = raw.rename(columns={"gateway": "name"})
        raw.insert(0, "gateway", raw["source_id"])
        logger.info("bundled gateway list is StarPerf's (about late 2023); using it for an "
                    "earlier date is an assumption")
    else:
        raw, src = _read(source, "gateways")
    if "antennas" not in raw.columns and "antenna_count" in raw.columns:
        raw = raw.rename(columns={"antenna_count": "antennas"})
    _require(raw, src, ("gateway", "lat_deg", "lon_deg"),
             "gateway, lat_deg, lon_deg[, alt_m, antennas, min_elevation_deg, backhaul_gbps, "
             "pop]")
    df = raw.reset_index(drop=True)
    ids = _ids(df, "gateway", src, "gateway id")
    lat, lon, alt = _coordinates(df, src)
    antennas = _numbers(df, "antennas", src, default_name="gateway_antennas", what="gateways",
                        expected="number of antennas, a whole number >= 1")
    bad = (antennas < 1) | (antennas != np.round(antennas))
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        raise src.error(f"{_show(antennas[pos])} antennas; expected a whole number >= 1", pos,
                        "antennas")
    elevation = _numbers(df, "min_elevation_deg", src, default_name="gateway_min_elevation_deg",
                         what="gateways", expected="minimum elevation in degrees, 0 to 90")
    _check_range(elevation, "min_elevation_deg", src, 0.0, 90.0, "minimum elevation in degrees")
    backhaul = _numbers(df, "backhaul_gbps", src, default_name="gateway_backhaul_gbps",
                        what="gateways", expected="backhaul capacity in Gbit/s, >= 0")
    _check_range(backhaul, "backhaul_gbps", src, 0.0, np.inf, "backhaul capacity in Gbit/s")
    _unique(ids, "gateway", src)
    pop, distance = _map_pops(df, src, lat, lon, pops_df)
    canonical = {"gateway": ids.to_numpy(), "lat_deg": lat, "lon_deg": lon, "alt_m": alt,
                 "antennas": antennas.astype(np.int64), "min_elevation_deg": elevation,
                 "backhaul_gbps": backhaul, "pop": pop, "pop_distance_km": distance}
    out = _assemble(df, canonical, GATEWAY_COLUMNS)
    for c in ("gateway", "pop"):
        out[c] = out[c].astype("str")
    return out


def _map_pops(df: pd.DataFrame, src: _Source, lat: np.ndarray, lon: np.ndarray,
              pops: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    pop_ids = pops["pop"].to_numpy(dtype=object)
    pop_lat = pops["lat_deg"].to_numpy()
    pop_lon = pops["lon_deg"].to_numpy()
    if "pop" in df.columns:
        blank = _blank(df["pop"])
        given = df["pop"].astype(object).where(~blank, None)
        index = pd.Index(pop_ids).get_indexer(given.astype(object))
        unknown = ~blank & (index < 0)
        if unknown.any():
            pos = int(np.flatnonzero(unknown)[0])
            known = ", ".join(map(repr, pop_ids[:12])) + (", …" if len(pop_ids) > 12 else "")
            raise src.error(f"unknown PoP {given.iloc[pos]!r}; expected one of the PoP table's "
                            f"ids ({known}) or blank for the nearest PoP", pos, "pop")
    else:
        blank = np.ones(len(df), dtype=bool)
        index = np.full(len(df), -1)
    if blank.any():
        d = great_circle_km(lat[blank, None], lon[blank, None], pop_lat[None, :],
                            pop_lon[None, :])
        index = np.asarray(index).copy()
        index[blank] = np.argmin(d, axis=1)
        logger.info("%s: %d of %d gateways mapped to the nearest PoP by great-circle distance",
                    src.label, int(blank.sum()), len(df))
    distance = great_circle_km(lat, lon, pop_lat[index], pop_lon[index])
    return pop_ids[index], np.asarray(distance, dtype=np.float64)


# ----------------------------------------------------------------------------- the segment


@dataclass(frozen=True, eq=False)
class Ground:
    """The validated ground segment. Build it with :meth:`Ground.load`."""

    terminals: pd.DataFrame
    gateways: pd.DataFrame
    pops: pd.DataFrame
    tracks: pd.DataFrame | None = None

    @classmethod
    def load(cls, terminals, gateways=None, pops=None, tracks=None) -> Ground:
        """Load and cross-check every table; raise :class:`GroundError` on the first problem.

        ``gateways``/``pops`` default to the bundled lists. Cross-checks: every gateway's PoP is
        in the PoP table; every track's terminal is in the terminal table with kind
        ``in_motion``; terminal ids are unique. An ``in_motion`` terminal without a track stays
        at its table position (logged).
        """
        pops_df = load_pops(pops)
        gateways_df = load_gateways(gateways, pops=pops_df)
        terminals_df, _ = _terminals(terminals)
        tracks_df = None
        if tracks is not None:
            tracks_df, src = _tracks(tracks)
            kinds = pd.Series(terminals_df["kind"].to_numpy(),
                              index=terminals_df["terminal"].to_numpy())
            kind = kinds.reindex(tracks_df["terminal"].to_numpy()).to_numpy(dtype=object)
            unknown = pd.isna(kind)
            if unknown.any():
                pos = int(np.flatnonzero(unknown)[0])
                raise src.error(f"track of unknown terminal {tracks_df['terminal'].iloc[pos]!r}; "
                                f"expected a terminal id from the terminal table", pos,
                                "terminal")
            fixed = kind == "fixed"
            if fixed.any():
                pos = int(np.flatnonzero(fixed)[0])
                raise src.error(f"terminal {tracks_df['terminal'].iloc[pos]!r} has a track but "
                                f"kind 'fixed'; expected kind 'in_motion' for tracked terminals",
                                pos, "terminal")
        moving = terminals_df.loc[terminals_df["kind"] == "in_motion", "terminal"]
        tracked = set() if tracks_df is None else set(tracks_df["terminal"])
        untracked = [t for t in moving if t not in tracked]
        if untracked:
            logger.warning("%d in_motion terminal(s) without a track stay at their table "
                           "position: %s", len(untracked), ", ".join(untracked[:10]))
        return cls(terminals=terminals_df, gateways=gateways_df, pops=pops_df, tracks=tracks_df)

    def terminal_positions(self, times) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``lat_deg, lon_deg, alt_m``, each shaped ``(n_time, n_terminal)``.

        Fixed terminals (and in-motion ones without a track) stay at their table position. A
        tracked terminal moves linearly in time between consecutive track points: the ECEF
        chord is interpolated, lifted radially back to the surface and converted to geodetic
        latitude/longitude (so the antimeridian and the poles need no special case; between
        points 0.1° apart the result is within 2 cm of the meridian midpoint, 1° apart within
        about 2 m), while the height is interpolated linearly. Before its first
        and after its last point a terminal is held there. ``times`` are UTC (ISO text,
        datetimes or ``datetime64``; a scalar gives ``n_time`` = 1). The arrays are read-only
        (the last answer of chunk size is kept and handed out again for the same times).
        """
        t_ns = np.atleast_1d(to_utc_datetime64(times)).astype("datetime64[ns]").astype(np.int64)
        # A chunk asks for the same times from several stages (policy, links, capacity,
        # jamming): the last answer is kept, read-only, and handed out again.
        memo = getattr(self, "_positions_memo", None)
        if memo is not None and np.array_equal(memo[0], t_ns):
            return memo[1]
        out = self._terminal_positions(t_ns)
        for a in out:
            a.flags.writeable = False
        if t_ns.size * len(self.terminals) <= _POSITIONS_MEMO_MAX:
            object.__setattr__(self, "_positions_memo", (t_ns, out))
        return out

    def __getstate__(self):  # the kept answer is not part of the ground
        state = dict(self.__dict__)
        state.pop("_positions_memo", None)
        return state

    def _terminal_positions(self, t_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n_time, n_term = len(t_ns), len(self.terminals)
        shape = (n_time, n_term)
        lat = np.broadcast_to(self.terminals["lat_deg"].to_numpy(np.float64), shape).copy()
        lon = np.broadcast_to(self.terminals["lon_deg"].to_numpy(np.float64), shape).copy()
        alt = np.broadcast_to(self.terminals["alt_m"].to_numpy(np.float64), shape).copy()
        if self.tracks is None or len(self.tracks) == 0:
            return lat, lon, alt
        tr = self.tracks
        column = pd.Index(self.terminals["terminal"]).get_indexer(tr["terminal"])
        if (column < 0).any():
            raise GroundError("tracks name terminals that are not in the terminal table",
                              source="tracks table", column="terminal")
        pt_ns = tr["time"].to_numpy().astype("datetime64[ns]").astype(np.int64)
        order = np.lexsort((pt_ns, column))
        track = _Track(
            ns=pt_ns[order],
            lat=tr["lat_deg"].to_numpy(np.float64)[order],
            lon=tr["lon_deg"].to_numpy(np.float64)[order],
            alt=tr["alt_m"].to_numpy(np.float64)[order],
            column=column[order])
        cols = track.cols
        step = max(1, _POSITION_CHUNK // len(cols))  # bound memory: chunks of times
        for a in range(0, n_time, step):
            b = min(a + step, n_time)
            lat[a:b, cols], lon[a:b, cols], alt[a:b, cols] = track.at(t_ns[a:b])
        return lat, lon, alt


_POSITION_CHUNK = 1_000_000  # (time, tracked terminal) pairs interpolated at once
#: Largest answer (time × terminal) of terminal_positions kept for the next call: a chunk's.
_POSITIONS_MEMO_MAX = 4_000_000


class _Track:
    """Track points sorted by terminal then time, interpolated over whole arrays."""

    def __init__(self, ns, lat, lon, alt, column):
        self.ns, self.lat, self.lon, self.alt = ns, lat, lon, alt
        self.r = geodetic_to_ecef(lat, lon, 0.0)
        self.cols, self.start, count = np.unique(column, return_index=True, return_counts=True)
        self.end = self.start + count

    def at(self, t_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Positions ``(n_time, n_tracked)`` at ``t_ns`` (int64 ns)."""
        shape = (len(t_ns), len(self.cols))
        # Vectorized binary search: first point of each terminal later than each time.
        lo = np.broadcast_to(self.start, shape).copy()
        hi = np.broadcast_to(self.end, shape).copy()
        tq = t_ns[:, None]
        last = len(self.ns) - 1
        while True:
            active = lo < hi
            if not active.any():
                break
            mid = (lo + hi) // 2
            right = self.ns[np.minimum(mid, last)] <= tq
            lo = np.where(active & right, mid + 1, lo)
            hi = np.where(active & ~right, mid, hi)
        i0 = np.maximum(lo - 1, self.start)  # held at the first point before the track starts
        i1 = np.minimum(lo, self.end - 1)  # held at the last point after it ends
        span = (self.ns[i1] - self.ns[i0]).astype(np.float64)
        w = np.where(span > 0, (tq - self.ns[i0]) / np.where(span > 0, span, 1.0), 0.0)
        r0, r1 = self.r[i0], self.r[i1]
        r = r0 + w[..., None] * (r1 - r0)
        # Lift the chord point radially back to the surface (keeps the conversion well
        # conditioned for far-apart points); a chord through the centre keeps the first point.
        norm = np.linalg.norm(r, axis=-1)
        lift = np.linalg.norm(r0, axis=-1) * (1.0 - w) + np.linalg.norm(r1, axis=-1) * w
        through_centre = norm < 1e-6
        r = np.where(through_centre[..., None], r0,
                     r * (lift / np.where(through_centre, 1.0, norm))[..., None])
        lat, lon, _ = ecef_to_geodetic(r)
        on_point = (w == 0.0) | through_centre  # the stored point, not a round trip via ECEF
        lat = np.where(on_point, self.lat[i0], lat)
        lon = np.where(on_point, self.lon[i0], lon)
        alt = self.alt[i0] + w * (self.alt[i1] - self.alt[i0])
        return lat, lon, alt
