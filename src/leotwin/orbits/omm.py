"""Validated reading of CCSDS OMM mean elements as CelesTrak serves them (JSON and CSV).

Why OMM next to TLE: CelesTrak's GP data in OMM form carries the same SGP4 mean elements without
the fixed-column limits (no 5-digit catalog number ceiling, full-precision numbers). The orbit is
built with sgp4's own ``sgp4.omm.initialize`` so that it matches what sgp4 users get elsewhere;
this module only adds validation in front of it -- sgp4 would otherwise raise a bare ``KeyError``
or ``ValueError`` from deep inside, without saying which record of which file was bad.

Errors are :class:`~leotwin.orbits.tle.TLEError` (the same class as for TLE, so callers handle
one error type) naming the record -- the 1-based index in a JSON list, or the 1-based file line
in CSV -- and the field.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from sgp4 import omm
from sgp4.api import Satrec

from .tle import ElementSet, Rejected, TLEError, finish_parse, read_text, split_lines

__all__ = ["parse_omm"]

logger = logging.getLogger(__name__)

REQUIRED_KEYS = (
    "OBJECT_NAME", "NORAD_CAT_ID", "EPOCH", "MEAN_MOTION", "ECCENTRICITY", "INCLINATION",
    "RA_OF_ASC_NODE", "ARG_OF_PERICENTER", "MEAN_ANOMALY", "BSTAR", "MEAN_MOTION_DOT",
    "MEAN_MOTION_DDOT",
)
_MAX_SATNUM = 339_999  # largest number sgp4 can store (Alpha-5 'Z9999')

_NUMBER_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_INT_RE = re.compile(r"[+-]?\d+")
_EPOCH_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]00:?00)?")

# (key, low, high, low_open, unit) for the range-checked numbers
_ANGLES_AND_SHAPE = (
    ("INCLINATION", 0.0, 180.0, False, "degrees"),
    ("RA_OF_ASC_NODE", 0.0, 360.0, False, "degrees"),
    ("ARG_OF_PERICENTER", 0.0, 360.0, False, "degrees"),
    ("MEAN_ANOMALY", 0.0, 360.0, False, "degrees"),
    ("ECCENTRICITY", 0.0, 1.0, False, ""),
)


class _RecordError(Exception):
    """Internal: one field of one record is bad; the caller adds source and location."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 42 else text[:40] + "..."


def _number(fields: dict[str, Any], key: str) -> float:
    value = fields[key]
    if isinstance(value, bool):
        ok = False
    elif isinstance(value, (int, float)):
        ok = True
    elif isinstance(value, str) and _NUMBER_RE.fullmatch(value.strip()):
        ok, value = True, value.strip()
    else:
        ok = False
    number = float(value) if ok else math.nan
    if not math.isfinite(number):
        raise _RecordError(key, f"expected a finite number, found {_show(value)}")
    return number


def _integer(fields: dict[str, Any], key: str, default: int | None = None) -> int:
    value = fields.get(key)
    if default is not None and (value is None or (isinstance(value, str) and not value.strip())):
        return default
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INT_RE.fullmatch(value.strip()):
        return int(value.strip())
    raise _RecordError(key, f"expected an integer, found {_show(value)}")


def _text(fields: dict[str, Any], key: str, default: str = "") -> str:
    value = fields.get(key)
    if value is None:
        return default
    if isinstance(value, (dict, list)):
        raise _RecordError(key, f"expected text, found {_show(value)}")
    return str(value).strip() or default


def _epoch(value: Any) -> np.datetime64:
    """ISO 8601 UTC -> datetime64[ns], rounded to the microsecond (why: sgp4.omm reads at most
    microseconds; rounding here keeps ``ElementSet.epoch`` identical to the satrec's epoch)."""
    expected = "expected ISO 8601 UTC like '2022-10-24T01:29:29.419584'"
    match = _EPOCH_RE.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise _RecordError("EPOCH", f"{expected}, found {_show(value)}")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    try:
        datetime(year, month, day, hour, minute, second)
    except ValueError as exc:
        raise _RecordError("EPOCH", f"{expected}, found {_show(value)} ({exc})") from None
    if year < 1950:
        raise _RecordError("EPOCH", f"expected a date from 1950 on (sgp4 counts days from "
                           f"1949-12-31), found {_show(value)}")
    fraction = match.group(7) or ""
    frac_ns = int(fraction.ljust(9, "0")) if fraction else 0
    whole = np.datetime64(f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:"
                          f"{second:02d}", "ns")
    return whole + np.timedelta64((frac_ns + 500) // 1000 * 1000, "ns")


def _build(fields: dict[str, Any], line: int, label: str) -> ElementSet:
    """Validate one OMM record and initialise its Satrec with ``sgp4.omm.initialize``."""
    for key in REQUIRED_KEYS:
        if key not in fields:
            raise _RecordError(key, "missing required key")
    name = _text(fields, "OBJECT_NAME")
    satnum = _integer(fields, "NORAD_CAT_ID")
    if not 0 <= satnum <= _MAX_SATNUM:
        raise _RecordError("NORAD_CAT_ID", f"expected 0..{_MAX_SATNUM} (the most sgp4 can "
                           f"store), found {satnum}")
    epoch = _epoch(fields["EPOCH"])
    numbers = {key: _number(fields, key) for key in REQUIRED_KEYS[3:]}
    for key, low, high, _, unit in _ANGLES_AND_SHAPE:
        value = numbers[key]
        too_high = value >= high if key == "ECCENTRICITY" else value > high
        if value < low or too_high:
            bracket = ")" if key == "ECCENTRICITY" else "]"
            raise _RecordError(key, f"expected a value in [{low:g}, {high:g}{bracket}"
                               f"{' ' + unit if unit else ''}, found {value!r}")
    if numbers["MEAN_MOTION"] <= 0:
        raise _RecordError("MEAN_MOTION", f"expected rev/day > 0, found "
                           f"{numbers['MEAN_MOTION']!r}")
    classification = _text(fields, "CLASSIFICATION_TYPE", "U")
    if len(classification) != 1:
        raise _RecordError("CLASSIFICATION_TYPE", "expected one letter (U, C or S), found "
                           f"{_show(classification)}")
    init_fields = {
        "CLASSIFICATION_TYPE": classification,
        "OBJECT_ID": _text(fields, "OBJECT_ID"),
        "EPHEMERIS_TYPE": str(_integer(fields, "EPHEMERIS_TYPE", 0)),
        "ELEMENT_SET_NO": str(_integer(fields, "ELEMENT_SET_NO", 0)),
        "REV_AT_EPOCH": str(_integer(fields, "REV_AT_EPOCH", 0)),
        "EPOCH": np.datetime_as_string(epoch, unit="us"),
        "NORAD_CAT_ID": str(satnum),
        # repr() round-trips a float exactly through sgp4's float() call
        **{key: repr(value) for key, value in numbers.items()},
    }
    satrec = Satrec()
    try:
        omm.initialize(satrec, init_fields)
    except Exception as exc:  # whatever sgp4 raises becomes a located TLEError
        raise _RecordError(None, f"sgp4 could not initialise the element set: {exc}") from None
    if satrec.error:
        logger.debug("%s, record at %d: sgp4 error code %d at epoch", label, line, satrec.error)
    return ElementSet(name=name, satnum=satnum, epoch=epoch, satrec=satrec, line=line,
                      source=label)


def _json_records(text: str, label: str) -> tuple[list[tuple[int, Any]], str]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TLEError(f"invalid JSON: {exc.msg} (column {exc.colno})", source=label,
                       line=exc.lineno) from None
    except RecursionError:
        raise TLEError("invalid JSON: nested too deeply for OMM", source=label) from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise TLEError(f"expected a JSON list of OMM objects, found {type(data).__name__}",
                       source=label)
    return list(enumerate(data, 1)), "record"


def _csv_records(text: str, label: str) -> tuple[list[tuple[int, Any]], str]:
    reader = csv.reader(split_lines(text))
    header: list[str] | None = None
    header_line = 0
    records: list[tuple[int, Any]] = []
    try:
        while True:
            start = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                break
            if not any(cell.strip() for cell in row):
                continue
            if header is None:
                header = [cell.strip().upper() for cell in row]
                header_line = start
                missing = [key for key in REQUIRED_KEYS if key not in header]
                if missing:
                    # A file-level problem: no row could be read, so fail in both modes.
                    raise TLEError(f"missing required CSV column(s) {', '.join(missing)} in the "
                                   "header row", source=label, line=header_line,
                                   field=missing[0])
                continue
            if len(row) != len(header):
                records.append((start, _RecordError(
                    None, f"expected {len(header)} columns as in the header (line "
                          f"{header_line}), found {len(row)}")))
            else:
                records.append((start, dict(zip(header, row, strict=True))))
    except csv.Error as exc:
        raise TLEError(f"invalid CSV: {exc}", source=label, line=reader.line_num) from None
    return records, "line"


def _detect_json(text: str, label: str) -> bool:
    head = text.lstrip()[:1]
    if head in ("[", "{"):
        return True
    if head == "<":
        raise TLEError("found XML/HTML: expected OMM as JSON or CSV", source=label, line=1)
    return label != "<string>" and Path(label).suffix.lower() == ".json" and bool(head)


def parse_omm(source: Any, *, strict: bool = True) -> tuple[list[ElementSet], list[Rejected]]:
    """Parse CelesTrak OMM in JSON (a list of objects) or CSV (a header row) into element sets.

    The format is taken from the content (first non-blank ``[`` or ``{`` means JSON), then from a
    ``.json`` suffix; anything else is read as CSV. ``ElementSet.line`` and error locations are
    the 1-based record index in JSON and the 1-based file line in CSV. ``strict`` and the
    empty-input rule work as in :func:`~leotwin.orbits.tle.parse_tle`: the first bad record
    raises unless ``strict=False``, and input without any valid record always raises.
    """
    text, label = read_text(source, what="OMM")
    if _detect_json(text, label):
        records, location = _json_records(text, label)
    else:
        records, location = _csv_records(text, label)
    sets: list[ElementSet] = []
    rejected: list[Rejected] = []
    for number, record in records:
        try:
            if isinstance(record, _RecordError):
                raise record
            if not isinstance(record, dict):
                raise _RecordError(None, "expected a JSON object of OMM fields, found "
                                   f"{type(record).__name__}")
            fields = {str(key).strip().upper(): value for key, value in record.items()}
            sets.append(_build(fields, number, label))
        except _RecordError as exc:
            error = TLEError(exc.message, source=label, line=number, field=exc.field,
                             location=location)
            if strict:
                raise error from None
            rejected.append(Rejected(line=number, reason=str(error)))
    return finish_parse(sets, rejected, label, "OMM records")
