"""Validated reading of two-line element sets (TLE).

Why not just call ``sgp4.api.Satrec.twoline2rv`` on every pair of lines: it reads fixed columns
and trusts them. It does not verify checksums, does not notice a name line without elements or
a missing line 2, and a stray character in a field is silently read as some other number (an
eccentricity of ``18x9667`` becomes 0.18). The result is a plausible but wrong orbit, found far
from its cause. This module checks every record first -- layout, every numeric field, the mod-10
checksums, the catalog numbers on both lines -- and every problem is reported as a
:class:`TLEError` that names the source, the 1-based line and the field, on one line of text.

Only after a record has passed is it handed to ``Satrec.twoline2rv`` (WGS72, as the element sets
are fitted with it), so the orbit is exactly what sgp4 itself would produce.
"""

from __future__ import annotations

import codecs
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sgp4.api import Satrec

from ..timescale import NS_PER_DAY as _NS_PER_DAY

__all__ = ["ElementSet", "Rejected", "TLEError", "parse_tle", "read_text"]

logger = logging.getLogger(__name__)

_LINE_COLUMNS = 69
_STRING_LABEL = "<string>"
_FOUND_MAX_CHARS = 40


class TLEError(ValueError):
    """Bad element-set input (TLE or OMM).

    Attributes: ``source`` (file path or ``'<string>'``), ``line`` (1-based line number in the
    source, or for OMM JSON the 1-based record number; ``None`` when the problem concerns the
    whole input), ``field`` (name of the offending field or ``None``) and ``message`` (what was
    expected and what was found). ``str(err)`` is a single line such as
    ``"starlink.tle, line 12, field 'checksum': expected 7, found 3"`` so it can go straight into
    a log or a CLI error without losing the location.
    """

    def __init__(self, message: str, source: str = _STRING_LABEL, line: int | None = None,
                 field: str | None = None, location: str = "line") -> None:
        self.message = " ".join(str(message).splitlines())  # one line, whatever came in
        self.source = source
        self.line = line
        self.field = field
        self.location = location  # "line" or "record" (OMM JSON): only changes the wording
        super().__init__(self._text())

    def _text(self) -> str:
        where = self.source
        if self.line is not None:
            where += f", {self.location} {self.line}"
        if self.field is not None:
            where += f", field '{self.field}'"
        return f"{where}: {self.message}"

    def __str__(self) -> str:
        return self._text()

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep the attributes when the error crosses a process boundary (multiprocessing).
        return (type(self), (self.message, self.source, self.line, self.field, self.location))


@dataclass(frozen=True)
class ElementSet:
    """One validated element set, ready to propagate.

    ``line`` is where the record starts in ``source`` (the name line if there is one, else
    line 1; for OMM the record number in JSON or the file line in CSV) so that later problems
    -- say, a propagation error -- can still be traced back to the input.
    """

    name: str
    satnum: int
    epoch: np.datetime64  # UTC, datetime64[ns]
    satrec: Satrec
    line: int
    source: str


@dataclass(frozen=True)
class Rejected:
    """A record skipped by a non-strict parse; ``reason`` is the text a TLEError would carry."""

    line: int
    reason: str


class _FieldError(Exception):
    """Internal: a field failed validation; the caller adds source and line number."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _show(text: str) -> str:
    """Quote a found value for a message: repr (escapes control characters), bounded length."""
    if len(text) > _FOUND_MAX_CHARS:
        text = text[:_FOUND_MAX_CHARS] + "..."
    return repr(text)


# --------------------------------------------------------------------------------------------
# Reading the input
# --------------------------------------------------------------------------------------------

def _binary_error(label: str, what: str, line: int, detail: str) -> TLEError:
    return TLEError(f"binary data ({detail}): expected a {what} text file in ASCII/UTF-8",
                    source=label, line=line)


def _decode(data: bytes, label: str, what: str) -> str:
    """bytes -> str, refusing anything that is not plain text (why: garbage in must not reach
    the column parser, where it would produce confusing field errors or worse)."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise _binary_error(label, what, 1, "UTF-16 byte-order mark")
    nul = data.find(b"\x00")
    if nul >= 0:
        raise _binary_error(label, what, data.count(b"\n", 0, nul) + 1,
                            f"NUL byte at byte offset {nul}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _binary_error(label, what, data.count(b"\n", 0, exc.start) + 1,
                            f"byte 0x{data[exc.start]:02x} at byte offset {exc.start} "
                            "is not UTF-8") from None
    return text.removeprefix("\ufeff")


def _check_str(text: str, label: str, what: str) -> str:
    nul = text.find("\x00")
    if nul >= 0:
        raise _binary_error(label, what, text.count("\n", 0, nul) + 1,
                            f"NUL character at offset {nul}")
    return text.removeprefix("\ufeff")


def _looks_like_text(value: str) -> bool:
    head = value.lstrip("\ufeff \t")
    return (not value.strip() or "\n" in value or "\r" in value
            or head.startswith(("1 ", "{", "[")))


def read_text(source: Any, *, what: str = "TLE") -> tuple[str, str]:
    """Return ``(text, source_label)`` for a path, text or bytes.

    ``source`` may be a :class:`pathlib.Path` (or other ``os.PathLike``), a ``str`` path, a
    ``str`` holding the data itself, ``bytes``, or an open file object. A ``str`` is data when
    it contains a line break, is blank, or starts with ``'1 '``, ``'{'`` or ``'['``; otherwise
    it is a path -- element data always spans lines, and file names practically never start
    with those characters. The label is the path as given, or ``'<string>'``.

    Non-text input (NUL bytes, invalid UTF-8, UTF-16) raises :class:`TLEError` saying
    ``binary data`` with the line it was found on; a missing file raises :class:`TLEError`
    naming the path. A UTF-8 BOM is dropped; CRLF, LF and CR line ends are all left to the
    parsers, which accept each.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _decode(bytes(source), _STRING_LABEL, what), _STRING_LABEL
    if isinstance(source, str) and _looks_like_text(source):
        return _check_str(source, _STRING_LABEL, what), _STRING_LABEL
    if isinstance(source, (str, os.PathLike)):
        label = os.fspath(source)
        if isinstance(label, bytes):
            label = os.fsdecode(label)
        if "\x00" in label:
            raise _binary_error(_STRING_LABEL, what, 1, "NUL character in a path-like string")
        try:
            data = Path(label).read_bytes()
        except FileNotFoundError:
            raise TLEError(f"no such file: expected a readable {what} file (a str without a "
                           "line break is taken as a path)", source=label) from None
        except OSError as exc:
            raise TLEError(f"cannot read the {what} file: {exc.strerror or exc}",
                           source=label) from None
        return _decode(data, label, what), label
    if hasattr(source, "read"):
        label = str(getattr(source, "name", "<stream>"))
        data = source.read()
        if isinstance(data, str):
            return _check_str(data, label, what), label
        return _decode(bytes(data), label, what), label
    raise TypeError(f"cannot read {what} input from {type(source).__name__}: expected a path, "
                    "str, bytes or file object")


def split_lines(text: str) -> list[str]:
    """Split on CRLF, LF or CR so that line numbers match what an editor shows."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


# --------------------------------------------------------------------------------------------
# Field validation
# --------------------------------------------------------------------------------------------

_CATNUM_RE = re.compile(r" *\d+|[A-HJ-NP-Z]\d{4}")
_YEAR_RE = re.compile(r"\d\d")
_DAY_RE = re.compile(r" *\d{1,3}\.\d+ *")
_SIGNED_DECIMAL_RE = re.compile(r" *[+-]?(?:\d+\.?\d*|\.\d+) *")
_UNSIGNED_DECIMAL_RE = re.compile(r" *(?:\d+\.?\d*|\.\d+) *")
_IMPLIED_EXP_RE = re.compile(r"([ +-])(\d{5})([ +-])(\d)")
_ECC_RE = re.compile(r"[ \d]*\d[ \d]*")
_OPT_INT_RE = re.compile(r" *\d* *")

# 1-based columns that hold the blank between two fields.
_LINE1_BLANK_COLUMNS = (2, 9, 18, 33, 44, 53, 62, 64)
_LINE2_BLANK_COLUMNS = (2, 8, 17, 26, 34, 43, 52)

_ALPHA5_DIGITS = "ABCDEFGHJKLMNPQRSTUVWXYZ"  # A=10 ... Z=33, skipping I and O (as sgp4)


def checksum(line: str) -> int:
    """Mod-10 TLE checksum of columns 1-68: digits count their value, '-' counts 1."""
    total = 0
    for char in line[:68]:
        if "0" <= char <= "9":
            total += ord(char) - 48
        elif char == "-":
            total += 1
    return total % 10


def _catalog_number(text: str) -> int:
    if not _CATNUM_RE.fullmatch(text):
        raise _FieldError("catalog number", "expected 5 digits or Alpha-5 (a letter other than "
                          f"I or O, then 4 digits) in columns 3-7, found {_show(text)}")
    if text[0].isalpha():
        return (_ALPHA5_DIGITS.index(text[0]) + 10) * 10_000 + int(text[1:])
    return int(text)


def _check_layout(text: str, number: int, blanks: tuple[int, ...]) -> None:
    for column in blanks:
        if text[column - 1] != " ":
            raise _FieldError(f"column {column}", f"expected a blank between fields on line "
                              f"{number} of the element set, found {_show(text[column - 1])}")


def _check_checksum(text: str) -> None:
    given = text[68]
    if not given.isdigit():
        raise _FieldError("checksum", f"expected a digit in column 69, found {_show(given)}")
    expected = checksum(text)
    if int(given) != expected:
        raise _FieldError("checksum", f"expected {expected}, found {given}")


def _decimal(text: str, field: str, low: float, high: float | None, *, unit: str,
             signed: bool = False, low_open: bool = False) -> float:
    pattern = _SIGNED_DECIMAL_RE if signed else _UNSIGNED_DECIMAL_RE
    rng = (f"{'>' if low_open else '>='} {low:g}" if high is None
           else f"in {low:g}..{high:g}")
    expected = f"expected a decimal number{unit} {rng}"
    if not pattern.fullmatch(text):
        raise _FieldError(field, f"{expected}, found {_show(text)}")
    value = float(text)
    if value < low or (low_open and value == low) or (high is not None and value > high):
        raise _FieldError(field, f"{expected}, found {text.strip()}")
    return value


def _implied_exponent(text: str, field: str) -> float:
    """Decode the TLE 'implied decimal point' format: ' 12345-6' == 0.12345e-6."""
    match = _IMPLIED_EXP_RE.fullmatch(text)
    if match is None:
        raise _FieldError(field, "expected sign, 5 digits, exponent sign and digit (implied "
                          f"decimal point, e.g. ' 12345-4'), found {_show(text)}")
    sign, mantissa, exp_sign, exponent = match.groups()
    return float(f"{'-' if sign == '-' else ''}0.{mantissa}e{'-' if exp_sign == '-' else ''}"
                 f"{exponent}")


def _epoch(year_text: str, day_text: str) -> np.datetime64:
    """yyddd.dddddddd -> datetime64[ns] UTC, in exact integer arithmetic (why: the day
    fraction has 8 decimals = 864 us steps; going through float would blur the last digit)."""
    if not _YEAR_RE.fullmatch(year_text):
        raise _FieldError("epoch year", f"expected 2 digits in columns 19-20, found "
                          f"{_show(year_text)}")
    if not _DAY_RE.fullmatch(day_text):
        raise _FieldError("epoch day", "expected day of year as ddd.dddddddd in columns 21-32, "
                          f"found {_show(day_text)}")
    yy = int(year_text)
    year = 2000 + yy if yy < 57 else 1900 + yy
    whole_text, _, frac_text = day_text.strip().partition(".")
    whole = int(whole_text)
    if not 1 <= whole <= 366:
        raise _FieldError("epoch day", f"expected day of year in 1..366, found {day_text.strip()}")
    scale = 10 ** len(frac_text)
    frac_ns = (int(frac_text) * _NS_PER_DAY * 2 + scale) // (2 * scale)  # round half up
    offset_ns = (whole - 1) * _NS_PER_DAY + frac_ns
    return _year_start(year) + np.timedelta64(offset_ns, "ns")


_YEAR_STARTS: dict[int, np.datetime64] = {}


def _year_start(year: int) -> np.datetime64:
    start = _YEAR_STARTS.get(year)
    if start is None:
        start = _YEAR_STARTS[year] = np.datetime64(f"{year:04d}-01-01T00:00", "ns")
    return start


def _check_line1(text: str, verify_checksum: bool) -> tuple[int, np.datetime64]:
    """Validate line 1; return (catalog number, epoch)."""
    if len(text) != _LINE_COLUMNS:
        raise _FieldError("line length", f"expected {_LINE_COLUMNS} columns on line 1, found "
                          f"{len(text)}")
    _check_layout(text, 1, _LINE1_BLANK_COLUMNS)
    if verify_checksum:
        _check_checksum(text)
    satnum = _catalog_number(text[2:7])
    if not (text[7].isalpha() or text[7] == " "):
        raise _FieldError("classification", "expected a letter (U, C or S) in column 8, found "
                          f"{_show(text[7])}")
    epoch = _epoch(text[18:20], text[20:32])
    _decimal(text[33:43], "ndot", -1.0, 1.0, unit=" (rev/day^2 / 2)", signed=True)
    _implied_exponent(text[44:52], "nddot")
    _implied_exponent(text[53:61], "bstar")
    if not (text[62].isdigit() or text[62] == " "):
        raise _FieldError("ephemeris type", "expected a digit or blank in column 63, found "
                          f"{_show(text[62])}")
    if not _OPT_INT_RE.fullmatch(text[64:68]):
        raise _FieldError("element set number", "expected up to 4 digits in columns 65-68, "
                          f"found {_show(text[64:68])}")
    return satnum, epoch


def _check_line2(text: str, verify_checksum: bool) -> int:
    """Validate line 2 (extra text after column 69 allowed); return the catalog number."""
    if len(text) < _LINE_COLUMNS:
        raise _FieldError("line length", f"expected {_LINE_COLUMNS} columns on line 2, found "
                          f"{len(text)}")
    if len(text) > _LINE_COLUMNS and not text[_LINE_COLUMNS].isspace():
        raise _FieldError("line length", f"expected {_LINE_COLUMNS} columns on line 2 (text "
                          "after column 69 must be separated by a blank), found "
                          f"{_show(text[60:72])} around column 69")
    text = text[:_LINE_COLUMNS]
    _check_layout(text, 2, _LINE2_BLANK_COLUMNS)
    if verify_checksum:
        _check_checksum(text)
    satnum = _catalog_number(text[2:7])
    _decimal(text[8:16], "inclination", 0.0, 180.0, unit=" of degrees")
    _decimal(text[17:25], "RAAN", 0.0, 360.0, unit=" of degrees")
    if not _ECC_RE.fullmatch(text[26:33]):
        raise _FieldError("eccentricity", "expected 7 digits (implied leading '0.') in columns "
                          f"27-33, found {_show(text[26:33])}")
    _decimal(text[34:42], "argument of perigee", 0.0, 360.0, unit=" of degrees")
    _decimal(text[43:51], "mean anomaly", 0.0, 360.0, unit=" of degrees")
    _decimal(text[52:63], "mean motion", 0.0, None, unit=" of rev/day", low_open=True)
    if not _OPT_INT_RE.fullmatch(text[63:68]):
        raise _FieldError("revolution number", "expected up to 5 digits in columns 64-68, found "
                          f"{_show(text[63:68])}")
    return satnum


# --------------------------------------------------------------------------------------------
# Record assembly
# --------------------------------------------------------------------------------------------

def _is_line1(text: str) -> bool:
    return text.startswith("1 ")


def _is_line2(text: str) -> bool:
    return text.startswith("2 ")


def _clean_name(text: str) -> str:
    name = text.strip()
    if name.startswith("0 "):  # space-track 3LE style
        name = name[2:].strip()
    return name


def _build(name: str, first_line: int, l1: tuple[int, str], l2: tuple[int, str], label: str,
           verify_checksum: bool) -> ElementSet:
    (l1_number, l1_text), (l2_number, l2_text) = l1, l2
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise TLEError(f"expected printable text in the name line, found {_show(name)}",
                       source=label, line=first_line, field="name")
    try:
        satnum, epoch = _check_line1(l1_text, verify_checksum)
    except _FieldError as exc:
        raise TLEError(exc.message, source=label, line=l1_number, field=exc.field) from None
    try:
        satnum2 = _check_line2(l2_text, verify_checksum)
    except _FieldError as exc:
        raise TLEError(exc.message, source=label, line=l2_number, field=exc.field) from None
    if satnum2 != satnum:
        raise TLEError(f"expected {l1_text[2:7]} as on line 1 (line {l1_number}), found "
                       f"{l2_text[2:7]}", source=label, line=l2_number, field="catalog number")
    try:
        satrec = Satrec.twoline2rv(l1_text, l2_text[:_LINE_COLUMNS])
    except Exception as exc:  # whatever sgp4 raises becomes a located TLEError
        raise TLEError(f"sgp4 could not initialise the element set: {exc}", source=label,
                       line=l1_number) from None
    if satrec.error:
        # Not a parse problem: sgp4 flags some valid but odd orbits at epoch (e.g. the Vallado
        # verification cases). Propagation reports the same code, so it is left to it.
        logger.debug("%s, line %d: sgp4 error code %d at epoch", label, l1_number, satrec.error)
    return ElementSet(name=name, satnum=satnum, epoch=epoch, satrec=satrec, line=first_line,
                      source=label)


def _resync(content: list[tuple[int, str]], index: int) -> int:
    """Index of the next plausible record start: a line 1, or a name line followed by one."""
    count = len(content)
    while index < count:
        text = content[index][1]
        if _is_line1(text):
            break
        if not _is_line2(text) and index + 1 < count and _is_line1(content[index + 1][1]):
            break
        index += 1
    return index


def _following(content: list[tuple[int, str]], index: int) -> str:
    if index >= len(content):
        return "found end of input"
    number, text = content[index]
    return f"found {_show(text)} (line {number})"


def parse_tle(source: Any, *, strict: bool = True,
              verify_checksum: bool = True) -> tuple[list[ElementSet], list[Rejected]]:
    """Parse 2-line and 3-line element sets (mixed) from a path, text or bytes.

    Blank lines and ``#`` comment lines are skipped; a name line may carry space-track's
    ``"0 "`` prefix; line 2 may carry extra blank-separated text after column 69 (as Vallado's
    ``SGP4-VER.TLE`` does). With ``strict`` the first bad record raises :class:`TLEError`;
    otherwise bad records are listed in the returned ``rejected`` list and parsing resumes at
    the next line 1 (or name line followed by a line 1). Input without a single valid element
    set raises ``TLEError("no element sets found")`` in both modes -- an empty or wrong file
    (an HTML error page, say) must not pass as an empty constellation.

    ``verify_checksum=False`` skips only the mod-10 checksum test, for hand-edited files.
    """
    text, label = read_text(source, what="TLE")
    content = [(number, line.rstrip()) for number, line in enumerate(split_lines(text), 1)
               if line.strip() and not line.lstrip().startswith("#")]
    sets: list[ElementSet] = []
    rejected: list[Rejected] = []
    index, count = 0, len(content)
    while index < count:
        start = index
        number, line = content[index]
        try:
            if _is_line2(line):
                index += 1
                raise TLEError("a line 2 without line 1: expected a line starting with '1 ' "
                               "before it", source=label, line=number, field="line 1 start")
            if _is_line1(line):
                name, first_line = "", number
            else:
                index += 1
                if index >= count or not _is_line1(content[index][1]):
                    raise TLEError(f"a name line without elements: expected a line starting "
                                   f"with '1 ' after {_show(line.strip())}, "
                                   f"{_following(content, index)}",
                                   source=label, line=number, field="line 1 start")
                name, first_line = _clean_name(line), number
            l1 = content[index]
            index += 1
            if index >= count or not _is_line2(content[index][1]):
                raise TLEError("a line 1 without line 2: expected a line starting with '2 ' "
                               f"next, {_following(content, index)}", source=label,
                               line=l1[0], field="line 2 start")
            l2 = content[index]
            index += 1
            sets.append(_build(name, first_line, l1, l2, label, verify_checksum))
        except TLEError as exc:
            if strict:
                raise
            rejected.append(Rejected(line=exc.line if exc.line is not None else number,
                                     reason=str(exc)))
            index = _resync(content, max(index, start + 1))
    return finish_parse(sets, rejected, label, "element sets")


def finish_parse(sets: list[ElementSet], rejected: list[Rejected], label: str,
                 what: str) -> tuple[list[ElementSet], list[Rejected]]:
    """Common end of every parser: nothing valid is an error in any mode; log what was kept."""
    if not sets:
        detail = f" ({len(rejected)} rejected; first: {rejected[0].reason})" if rejected else ""
        raise TLEError(f"no element sets found{detail}", source=label)
    if rejected:
        logger.warning("%s: kept %d %s, rejected %d (first: %s)", label, len(sets), what,
                       len(rejected), rejected[0].reason)
    else:
        logger.debug("%s: parsed %d %s", label, len(sets), what)
    return sets, rejected
