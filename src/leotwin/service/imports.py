"""Terminal uploads: CSV or GeoJSON to validated terminals, every bad row named.

CSV: a header line then one terminal per line; columns ``id`` (or ``terminal``), ``account``,
``serial``, ``kind``, ``status``, ``plan``, ``registered``, ``lat_deg``, ``lon_deg`` — unknown
columns are refused. GeoJSON: a FeatureCollection of Point features (``[lon, lat]``, WGS84;
a ``crs`` other than WGS84/CRS84 is refused; a null geometry is a terminal without a service
address) whose properties are the same fields (``id`` may be the Feature's ``id``).

Rows are numbered from 1: the first record after the CSV header, the first feature. Parsing
never stops at the first bad row: every error is collected, and nothing is imported unless
every row is good.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass

from pydantic import ValidationError

from ..policy.geofence import WGS84_CRS_NAMES
from .problems import ErrorItem
from .schemas import TerminalCreate

FIELDS = ("id", "account", "serial", "kind", "status", "plan", "registered", "lat_deg",
          "lon_deg")
_ALIASES = {"terminal": "id"}
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}
MAX_ERRORS = 200


@dataclass
class Parsed:
    rows: list[dict]  # raw field dicts, one per record
    errors: list[ErrorItem]


def _err(errors: list, row: int | None, field: str | None, msg: str, *loc) -> None:
    if len(errors) < MAX_ERRORS:
        errors.append(ErrorItem(loc=["file", *loc], row=row, field=field, msg=msg))


def detect_format(filename: str | None, content_type: str | None, data: bytes) -> str:
    name = (filename or "").lower()
    if name.endswith((".geojson", ".json")) or "json" in (content_type or ""):
        return "geojson"
    if name.endswith(".csv") or "csv" in (content_type or ""):
        return "csv"
    return "geojson" if data.lstrip()[:1] in (b"{", b"[") else "csv"


def _decode(data: bytes, errors: list) -> str | None:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        _err(errors, None, None, f"not UTF-8 text (byte {exc.start})")
        return None


def parse_csv(data: bytes) -> Parsed:
    errors: list[ErrorItem] = []
    text = _decode(data, errors)
    if text is None:
        return Parsed([], errors)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        _err(errors, None, None, "empty file: a header line is needed")
        return Parsed([], errors)
    except csv.Error as exc:
        _err(errors, None, None, f"malformed CSV header: {exc}")
        return Parsed([], errors)
    cols = [_ALIASES.get(h.strip(), h.strip()) for h in header]
    for k, c in enumerate(cols):
        if c not in FIELDS:
            _err(errors, None, c or f"column {k + 1}",
                 f"unknown column {header[k]!r}; allowed: {', '.join(FIELDS)}", "header", k)
    if len(set(cols)) != len(cols):
        _err(errors, None, None, "a column appears twice in the header", "header")
    if "id" not in cols:
        _err(errors, None, "id", "the header needs an id (or terminal) column", "header")
    if errors:
        return Parsed([], errors)
    rows = []
    try:
        for values in reader:
            row = len(rows) + 1
            if not values or all(not v.strip() for v in values):
                rows.append(None)  # blank line: skipped, but numbered
                continue
            if len(values) != len(cols):
                _err(errors, row, None, f"{len(values)} values for {len(cols)} columns", row)
                rows.append(None)
                continue
            rows.append({c: v.strip() for c, v in zip(cols, values, strict=True)})
    except csv.Error as exc:
        _err(errors, len(rows) + 1, None, f"malformed CSV: {exc}", len(rows) + 1)
    return Parsed(rows, errors)


def parse_geojson(data: bytes) -> Parsed:
    errors: list[ErrorItem] = []
    text = _decode(data, errors)
    if text is None:
        return Parsed([], errors)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        _err(errors, None, None, f"not valid JSON: {exc.msg} at line {exc.lineno} column "
             f"{exc.colno}")
        return Parsed([], errors)
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        got = doc.get("type") if isinstance(doc, dict) else type(doc).__name__
        _err(errors, None, "type", f"expected a GeoJSON FeatureCollection, got {got!r}", "type")
        return Parsed([], errors)
    unknown = set(doc) - {"type", "features", "crs", "bbox", "name"}
    for key in sorted(unknown):
        _err(errors, None, key, f"unknown member {key!r} of the FeatureCollection", key)
    crs = doc.get("crs")
    if crs is not None:
        name = crs
        if isinstance(crs, dict):
            props = crs.get("properties")
            name = props.get("name") if crs.get("type") == "name" and isinstance(props, dict) \
                else None
        if not isinstance(name, str) or name.strip().lower() not in WGS84_CRS_NAMES:
            _err(errors, None, "crs", f"coordinate reference system {json.dumps(crs)} is not "
                 "WGS84; positions must be WGS84 [longitude, latitude] (omit crs, or use "
                 "urn:ogc:def:crs:OGC:1.3:CRS84)", "crs")
    features = doc.get("features")
    if not isinstance(features, list):
        _err(errors, None, "features", "features must be an array", "features")
        return Parsed([], errors)
    if errors:
        return Parsed([], errors)
    rows: list[dict | None] = []
    for k, feat in enumerate(features):
        row = k + 1
        loc = ("features", k)
        rows.append(None)
        if not isinstance(feat, dict) or feat.get("type") != "Feature":
            _err(errors, row, "type", "expected a GeoJSON Feature", *loc, "type")
            continue
        for key in sorted(set(feat) - {"type", "id", "geometry", "properties", "bbox"}):
            _err(errors, row, key, f"unknown member {key!r} of the feature", *loc, key)
        props = feat.get("properties") or {}
        if not isinstance(props, dict):
            _err(errors, row, "properties", "properties must be an object", *loc, "properties")
            continue
        record = {str(k2): v for k2, v in props.items()}
        record = {_ALIASES.get(k2, k2): v for k2, v in record.items()}
        if "id" not in record and feat.get("id") is not None:
            record["id"] = feat["id"]
        geom = feat.get("geometry")
        if geom is not None:
            if not isinstance(geom, dict) or geom.get("type") != "Point":
                got = geom.get("type") if isinstance(geom, dict) else type(geom).__name__
                _err(errors, row, "geometry", f"a terminal is a Point, got {got!r}", *loc,
                     "geometry")
                continue
            c = geom.get("coordinates")
            if (not isinstance(c, list) or len(c) < 2
                    or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                               for x in c[:2])
                    or not all(math.isfinite(x) for x in c[:2])):
                _err(errors, row, "geometry.coordinates", "coordinates must be finite numbers "
                     "[longitude, latitude]", *loc, "geometry", "coordinates")
                continue
            if "lat_deg" in record or "lon_deg" in record:
                _err(errors, row, "properties", "give the position as the geometry or as "
                     "lat_deg/lon_deg, not both", *loc, "properties")
                continue
            record["lon_deg"], record["lat_deg"] = c[0], c[1]
        rows[-1] = record
    return Parsed(rows, errors)


def _coerce_csv(record: dict) -> dict:
    out: dict = {}
    for key, value in record.items():
        if value == "" and key not in ("id", "account"):
            continue  # empty cell: the field's default
        if key == "registered":
            low = value.lower()
            out[key] = True if low in _TRUE else False if low in _FALSE else value
        else:
            out[key] = value
    return out


def validate_rows(parsed: Parsed, *, fmt: str, default_account: str | None
                  ) -> tuple[list[TerminalCreate], list[ErrorItem]]:
    """Every row as a :class:`TerminalCreate`; errors name the row and the field."""
    errors = list(parsed.errors)
    terminals: list[TerminalCreate] = []
    seen: dict[str, int] = {}
    for k, record in enumerate(parsed.rows):
        row = k + 1
        if record is None:
            continue
        loc = ("features", k, "properties") if fmt == "geojson" else (row,)
        unknown = sorted(set(record) - set(FIELDS))
        for key in unknown:
            _err(errors, row, key, f"unknown field {key!r}; allowed: {', '.join(FIELDS)}",
                 *loc, key)
        if unknown:
            continue
        data = _coerce_csv(record) if fmt == "csv" else dict(record)
        if default_account is not None and not data.get("account"):
            data["account"] = default_account
        if isinstance(data.get("id"), int) and not isinstance(data.get("id"), bool):
            data["id"] = str(data["id"])
        try:
            t = TerminalCreate.model_validate(data)
        except ValidationError as exc:
            for e in exc.errors():
                field = ".".join(str(x) for x in e["loc"]) or None
                _err(errors, row, field, e["msg"], *loc, *e["loc"])
            continue
        if t.id in seen:
            _err(errors, row, "id", f"terminal {t.id!r} already in row {seen[t.id]}", *loc, "id")
            continue
        seen[t.id] = row
        terminals.append(t)
    return terminals, errors


def row_numbers(parsed: Parsed) -> dict[str, int]:
    """Terminal id → row number (for errors found after validation)."""
    out = {}
    for k, record in enumerate(parsed.rows):
        if record is not None and record.get("id") is not None:
            out.setdefault(str(record["id"]), k + 1)
    return out
