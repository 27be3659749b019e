"""OMM (CelesTrak JSON and CSV) parsing: agreement with the TLE path, and every error path."""

from __future__ import annotations

import csv
import io
import json
import math
from importlib.resources import as_file, files
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sgp4.api import Satrec

from leotwin.orbits.omm import REQUIRED_KEYS, parse_omm
from leotwin.orbits.tle import ElementSet, TLEError, parse_tle

# sgp4.omm's unit conversions, inverted: rad/min^2 (and /min^3) back to OMM's rev/day^2 (/day^3).
NDOT_UNITS = 1036800.0 / math.pi
NDDOT_UNITS = 2985984000.0 / 2.0 / math.pi
CSV_COLUMNS = ["OBJECT_NAME", "OBJECT_ID", "EPOCH", "MEAN_MOTION", "ECCENTRICITY", "INCLINATION",
               "RA_OF_ASC_NODE", "ARG_OF_PERICENTER", "MEAN_ANOMALY", "EPHEMERIS_TYPE",
               "CLASSIFICATION_TYPE", "NORAD_CAT_ID", "ELEMENT_SET_NO", "REV_AT_EPOCH", "BSTAR",
               "MEAN_MOTION_DOT", "MEAN_MOTION_DDOT"]  # CelesTrak's FORMAT=csv column order


def tle_sets(count: int = 5) -> list[ElementSet]:
    with as_file(files("leotwin") / "data" / "starlink-2022-10-24.tle") as path:
        sets, _ = parse_tle(Path(path))
    return sets[:: len(sets) // count][:count]


def omm_record(element_set: ElementSet) -> dict[str, Any]:
    """An OMM record carrying exactly the elements of a TLE-initialised satrec (as CelesTrak's
    JSON: numbers as numbers, EPOCH as naive ISO UTC)."""
    satrec = element_set.satrec
    return {
        "OBJECT_NAME": element_set.name,
        "OBJECT_ID": "2019-074A",
        "EPOCH": np.datetime_as_string(element_set.epoch, unit="us"),
        "MEAN_MOTION": satrec.no_kozai * 720.0 / math.pi,
        "ECCENTRICITY": satrec.ecco,
        "INCLINATION": math.degrees(satrec.inclo),
        "RA_OF_ASC_NODE": math.degrees(satrec.nodeo),
        "ARG_OF_PERICENTER": math.degrees(satrec.argpo),
        "MEAN_ANOMALY": math.degrees(satrec.mo),
        "EPHEMERIS_TYPE": 0,
        "CLASSIFICATION_TYPE": "U",
        "NORAD_CAT_ID": element_set.satnum,
        "ELEMENT_SET_NO": 999,
        "REV_AT_EPOCH": satrec.revnum,
        "BSTAR": satrec.bstar,
        "MEAN_MOTION_DOT": satrec.ndot * NDOT_UNITS,
        "MEAN_MOTION_DDOT": satrec.nddot * NDDOT_UNITS,
    }


def to_csv(records: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    for record in records:
        writer.writerow({key: repr(value) if isinstance(value, float) else value
                         for key, value in record.items()})
    return buffer.getvalue()


def max_distance_km(a: Satrec, b: Satrec, days_after_epoch: float) -> float:
    jd, fr = b.jdsatepoch, b.jdsatepochF + days_after_epoch
    error_a, position_a_km, _ = a.sgp4(jd, fr)
    error_b, position_b_km, _ = b.sgp4(jd, fr)
    assert error_a == error_b == 0
    return float(np.linalg.norm(np.subtract(position_a_km, position_b_km)))


SETS = tle_sets()
RECORDS = [omm_record(s) for s in SETS]
GOOD = RECORDS[0]


# ---------------------------------------------------------------------------------------------
# Agreement with the TLE-initialised satrec
# ---------------------------------------------------------------------------------------------

# The OMM carries the TLE satrec's own element values (float64 through degrees and back), so
# the orbits differ only by float rounding and by how sgp4 stores the epoch: from the TLE as
# a split Julian date, from OMM as float64 days since 1949-12-31 (about 0.3 us resolution,
# i.e. a few mm along-track at 7.6 km/s). 1 m is therefore a generous bound.
TOLERANCE_KM = 1e-3


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_omm_propagates_like_the_tle(fmt: str) -> None:
    text = json.dumps(RECORDS, indent=1) if fmt == "json" else to_csv(RECORDS)
    sets, rejected = parse_omm(text)
    assert rejected == [] and len(sets) == len(SETS)
    for omm_set, tle_set in zip(sets, SETS, strict=True):
        assert omm_set.name == tle_set.name
        assert omm_set.satnum == tle_set.satnum == omm_set.satrec.satnum
        assert omm_set.epoch == tle_set.epoch  # TLE epochs are whole microseconds (864 us grid)
        assert omm_set.epoch.dtype == np.dtype("datetime64[ns]")
        assert omm_set.source == "<string>"
        for days in (0.0, 1.0):
            assert max_distance_km(omm_set.satrec, tle_set.satrec, days) < TOLERANCE_KM


def test_record_locations_json_index_and_csv_line() -> None:
    json_sets, _ = parse_omm(json.dumps(RECORDS))
    assert [s.line for s in json_sets] == [1, 2, 3, 4, 5]
    csv_sets, _ = parse_omm(to_csv(RECORDS))
    assert [s.line for s in csv_sets] == [2, 3, 4, 5, 6]  # line 1 is the header


def test_files_and_format_detection(tmp_path: Path) -> None:
    json_path = tmp_path / "gp.json"
    json_path.write_text("\n\n  " + json.dumps(RECORDS))
    csv_path = tmp_path / "gp.csv"
    csv_path.write_text(to_csv(RECORDS))
    odd_name = tmp_path / "gp.txt"  # no telling suffix: content decides
    odd_name.write_bytes(b"\xef\xbb\xbf" + json.dumps(RECORDS).encode())
    for path in (json_path, csv_path, odd_name, str(csv_path)):
        sets, _ = parse_omm(path)
        assert len(sets) == len(RECORDS) and sets[0].source == str(path)
    bad_json = tmp_path / "broken.json"  # suffix says JSON, content does not: JSON error
    bad_json.write_text("OBJECT_NAME,NORAD_CAT_ID\n")
    with pytest.raises(TLEError, match=r"broken.json, line 1: invalid JSON"):
        parse_omm(bad_json)


def test_single_object_and_optional_fields() -> None:
    minimal = {key: GOOD[key] for key in REQUIRED_KEYS}
    (element_set,), _ = parse_omm(json.dumps(minimal))
    assert element_set.satnum == GOOD["NORAD_CAT_ID"]
    assert element_set.satrec.classification == "U"
    assert max_distance_km(element_set.satrec, SETS[0].satrec, 1.0) < TOLERANCE_KM


def test_values_as_strings_names_empty_and_null() -> None:
    record = {key: str(value) for key, value in GOOD.items()}
    record["OBJECT_NAME"] = None
    record["EPOCH"] += "Z"
    (element_set,), _ = parse_omm(json.dumps([record]))
    assert element_set.name == ""
    assert element_set.epoch == SETS[0].epoch


def test_epoch_forms() -> None:
    def epoch_of(text: str) -> np.datetime64:
        return parse_omm(json.dumps([{**GOOD, "EPOCH": text}]))[0][0].epoch

    assert epoch_of("2022-10-24T01:29:29") == np.datetime64("2022-10-24T01:29:29", "ns")
    assert epoch_of("2022-10-24 01:29:29.5+00:00") == np.datetime64("2022-10-24T01:29:29.5")
    # nanoseconds are rounded to the microsecond sgp4.omm can carry, across a minute boundary
    assert epoch_of("2022-10-24T01:29:59.9999996") == np.datetime64("2022-10-24T01:30:00")


def test_alpha5_range_catalog_number() -> None:
    (element_set,), _ = parse_omm(json.dumps([{**GOOD, "NORAD_CAT_ID": 270000}]))
    assert element_set.satnum == element_set.satrec.satnum == 270000


# ---------------------------------------------------------------------------------------------
# Error paths
# ---------------------------------------------------------------------------------------------

def without(record: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != key}


# (description, bad record, field, words in the message)
JSON_ERROR_CASES = [
    ("missing key", without(GOOD, "MEAN_MOTION"), "MEAN_MOTION", "missing required key"),
    ("missing name key", without(GOOD, "OBJECT_NAME"), "OBJECT_NAME", "missing required key"),
    ("text for number", {**GOOD, "ECCENTRICITY": "0.0002x"}, "ECCENTRICITY", "finite number"),
    ("boolean", {**GOOD, "BSTAR": True}, "BSTAR", "finite number"),
    ("null number", {**GOOD, "INCLINATION": None}, "INCLINATION", "finite number"),
    ("nan", {**GOOD, "MEAN_ANOMALY": "nan"}, "MEAN_ANOMALY", "finite number"),
    ("eccentricity 1", {**GOOD, "ECCENTRICITY": 1.0}, "ECCENTRICITY", "[0, 1)"),
    ("inclination range", {**GOOD, "INCLINATION": 181.0}, "INCLINATION", "[0, 180]"),
    ("negative raan", {**GOOD, "RA_OF_ASC_NODE": -1.0}, "RA_OF_ASC_NODE", "[0, 360]"),
    ("mean motion zero", {**GOOD, "MEAN_MOTION": 0}, "MEAN_MOTION", "> 0"),
    ("catalog text", {**GOOD, "NORAD_CAT_ID": "44713A"}, "NORAD_CAT_ID", "integer"),
    ("catalog too big", {**GOOD, "NORAD_CAT_ID": 340000}, "NORAD_CAT_ID", "0..339999"),
    ("epoch date", {**GOOD, "EPOCH": "2022-13-24T01:29:29.419584"}, "EPOCH", "month"),
    ("epoch text", {**GOOD, "EPOCH": "yesterday"}, "EPOCH", "ISO 8601"),
    ("epoch number", {**GOOD, "EPOCH": 22298.06}, "EPOCH", "ISO 8601"),
    ("epoch offset", {**GOOD, "EPOCH": "2022-10-24T01:29:29+02:00"}, "EPOCH", "ISO 8601 UTC"),
    ("epoch too early", {**GOOD, "EPOCH": "1949-01-01T00:00:00"}, "EPOCH", "1950"),
    ("classification", {**GOOD, "CLASSIFICATION_TYPE": "UU"}, "CLASSIFICATION_TYPE", "letter"),
    ("element set no", {**GOOD, "ELEMENT_SET_NO": "9.5"}, "ELEMENT_SET_NO", "integer"),
    ("name is a list", {**GOOD, "OBJECT_NAME": ["A"]}, "OBJECT_NAME", "text"),
    ("not an object", ["OBJECT_NAME", "X"], None, "expected a JSON object"),
]


@pytest.mark.parametrize(("record", "field", "words"), [c[1:] for c in JSON_ERROR_CASES],
                         ids=[c[0] for c in JSON_ERROR_CASES])
def test_json_error_names_record_and_field(record: Any, field: str | None, words: str) -> None:
    text = json.dumps([RECORDS[1], record, RECORDS[2]])
    with pytest.raises(TLEError) as info:
        parse_omm(text)
    error = info.value
    assert (error.line, error.field) == (2, field)
    location = "<string>, record 2" + (f", field '{field}'" if field else "")
    assert str(error).startswith(location + ": ")
    assert words in str(error) and "\n" not in str(error)
    # not strict: the good records on both sides are kept
    sets, rejected = parse_omm(text, strict=False)
    assert [s.line for s in sets] == [1, 3]
    assert [r.line for r in rejected] == [2] and rejected[0].reason == str(error)


@pytest.mark.parametrize(("column", "value", "words"), [
    ("MEAN_MOTION", "fifteen", "finite number"),
    ("EPOCH", "2022-10-24", "ISO 8601"),
    ("NORAD_CAT_ID", "", "integer"),
    ("BSTAR", "inf", "finite number"),
])
def test_csv_error_names_file_line_and_field(column: str, value: str, words: str) -> None:
    bad = {**RECORDS[1], column: value}
    text = to_csv([RECORDS[0], bad, RECORDS[2]])
    with pytest.raises(TLEError) as info:
        parse_omm(text)
    assert (info.value.line, info.value.field) == (3, column)
    assert str(info.value).startswith(f"<string>, line 3, field '{column}': ")
    assert words in str(info.value)
    sets, rejected = parse_omm(text, strict=False)
    assert [s.line for s in sets] == [2, 4] and [r.line for r in rejected] == [3]


def test_csv_missing_column_is_a_header_error_in_both_modes() -> None:
    text = to_csv(RECORDS).replace("MEAN_ANOMALY", "MEAN_ANOMALIE")
    for strict in (True, False):
        with pytest.raises(TLEError) as info:
            parse_omm("\n" + text, strict=strict)
        assert (info.value.line, info.value.field) == (2, "MEAN_ANOMALY")
        assert "missing required CSV column" in str(info.value)


def test_csv_wrong_number_of_cells() -> None:
    lines = to_csv(RECORDS[:3]).splitlines()
    lines[2] += ",extra"
    with pytest.raises(TLEError, match=r"line 3: expected 17 columns as in the header \(line 1\), "
                                       r"found 18"):
        parse_omm("\n".join(lines))
    sets, rejected = parse_omm("\n".join(lines) + "\n\n", strict=False)
    assert [s.line for s in sets] == [2, 4] and [r.line for r in rejected] == [3]


def test_invalid_json_reports_the_json_line() -> None:
    text = json.dumps(RECORDS[:2], indent=2)
    broken = text.replace('"BSTAR":', '"BSTAR"', 1)
    expected_line = broken[: broken.index('"BSTAR"')].count("\n") + 1
    with pytest.raises(TLEError) as info:
        parse_omm(broken, strict=False)
    assert info.value.line == expected_line
    assert str(info.value).startswith(f"<string>, line {expected_line}: invalid JSON: ")


@pytest.mark.parametrize("text", ["", "  \n", "[]", "\n[ ]\n"])
@pytest.mark.parametrize("strict", [True, False])
def test_empty_input(text: str, strict: bool) -> None:
    with pytest.raises(TLEError, match="no element sets found"):
        parse_omm(text, strict=strict)


def test_header_only_csv_is_empty() -> None:
    with pytest.raises(TLEError, match="no element sets found"):
        parse_omm(",".join(CSV_COLUMNS) + "\n", strict=False)


@pytest.mark.parametrize(("data", "words"), [
    (b"42\n", "missing required CSV column"),  # not JSON-looking, so read as CSV
    (b"<?xml version='1.0'?>\n<ndm></ndm>", "found XML/HTML"),
    (b"<!DOCTYPE html><html></html>", "found XML/HTML"),
])
def test_not_omm_at_all(data: bytes, words: str) -> None:
    with pytest.raises(TLEError, match=words):
        parse_omm(data)


def test_json_top_level_scalar_via_suffix(tmp_path: Path) -> None:
    path = tmp_path / "gp.json"
    path.write_text("42")
    with pytest.raises(TLEError, match="found int"):
        parse_omm(path)


def test_binary_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(TLEError, match="binary data"):
        parse_omm(b"[\x00]")
    with pytest.raises(TLEError, match="not UTF-8"):
        parse_omm(b'[{"OBJECT_NAME": "\xff"}]')
    with pytest.raises(TLEError, match="no such file"):
        parse_omm(tmp_path / "gp.json")


# ---------------------------------------------------------------------------------------------
# Property: no input value escapes as anything but TLEError
# ---------------------------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5),
                                                                        children, max_size=3),
    max_leaves=5)


@settings(max_examples=300, deadline=None)
@given(key=st.sampled_from([*REQUIRED_KEYS, "EPHEMERIS_TYPE", "CLASSIFICATION_TYPE",
                            "ELEMENT_SET_NO", "REV_AT_EPOCH", "OBJECT_ID"]),
       value=JSON_VALUES, as_csv=st.booleans())
def test_any_field_value_gives_a_set_or_tle_error(key: str, value: Any, as_csv: bool) -> None:
    record = {**GOOD, key: value}
    if as_csv and isinstance(value, (list, dict)):
        return  # not representable in a CSV cell
    text = to_csv([record]) if as_csv else json.dumps([record])  # NaN/Infinity included
    try:
        sets, _ = parse_omm(text)
    except TLEError as error:
        assert "\n" not in str(error)
        return
    assert len(sets) == 1 and sets[0].satnum >= 0
