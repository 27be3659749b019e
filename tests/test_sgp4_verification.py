"""Vallado's SGP4 verification set, replayed through leotwin's own loader and propagator.

``reference/SGP4-VER.TLE`` holds 33 test objects; ``reference/tcppver.out`` is the output of
Vallado's C++ ``testcpp`` for them: per object a header ``<satnum> xx`` and rows of
``tsince (min), TEME r (km), TEME v (km/s)`` (see ``reference/PROVENANCE.md``). The test mirrors
python-sgp4's own ``run_satellite_against_tcppver`` (sgp4/tests.py):

* the time schedule of an object is t = 0, then ``start, start+step, ... <= stop`` from the
  three extra columns after column 69 of line 2, then ``stop`` if the loop missed it;
* when SGP4 returns a non-zero error code the C++ driver stops printing that object, so a block
  shorter than its schedule ends in an error at the first missing time; python-sgp4 expects the
  codes ``[1, 1, 6, 6, 4, 3, 6]`` in file order;
* an object whose propagation fails already at epoch (33334, code 3) has a single row at t = 0
  that merely repeats the previous object's last row (the C++ driver prints stale variables);
  python-sgp4 calls it "(Use previous data line)". It carries no reference data.

Here the records come from ``leotwin.load_tle``. SGP4 in TEME is checked through
``sgp4.api.SatrecArray`` on ``constellation.satrecs`` (exactly what ``leotwin.propagate`` runs
before its GMST rotation), and ``leotwin.propagate`` itself end to end by undoing that rotation.
Tolerances: 1e-6 km and 1e-8 km/s; tcppver prints r to 1e-8 km and v to 1e-9 km/s, and the
largest difference seen is ~1.6e-7 km, for 20413 at ~1.8e6 min (3.5 years) after epoch.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from sgp4.api import SatrecArray

import leotwin
from leotwin.constants import EARTH_ROTATION_RAD_S
from leotwin.frames import gmst82_rad
from leotwin.orbits.tle import parse_tle
from leotwin.timescale import split_julian_date

REFERENCE = Path(__file__).parent / "reference"
TLE_PATH = REFERENCE / "SGP4-VER.TLE"
TCPPVER_PATH = REFERENCE / "tcppver.out"

SHA256 = {
    "SGP4-VER.TLE": "d246d1d9d768ace445a38a965713fa9ba52d80fd8a41a0502ff83d7acffe2881",
    "tcppver.out": "687bf28dbe52df86e8e60ab5cb4a08d1aa3dbcaf4e63b1f7ab95f044fbe3833b",
}

R_TOL_KM = 1e-6
V_TOL_KM_S = 1e-8
#: Error codes python-sgp4's test expects, in file order (test_satrec_against_tcppver_*).
EXPECTED_ERRORS = [1, 1, 6, 6, 4, 3, 6]
#: The three deliberately corrupted checksums: 33333 (both lines), 33334 and 33335 (line 1).
BAD_CHECKSUM_SATNUMS = {33333, 33334, 33335}
BAD_CHECKSUM_LINE1_NUMBERS = [100, 103, 106]  # 1-based line numbers of their line 1 in the file

_NS_PER_DAY = 86_400_000_000_000
_JD_UNIX_EPOCH = 2440587.5


@dataclass(frozen=True)
class Case:
    """One object of the verification set: its schedule and its block of tcppver.out."""

    index: int  # position in the file, 0..32
    satnum: int
    start_min: float
    stop_min: float
    step_min: float
    rows: np.ndarray  # (n, 7): tsince, r xyz (km), v xyz (km/s)
    stale: bool = False  # the t=0 row repeats the previous row: error at epoch, no data
    error_tsince: float | None = None  # first scheduled time tcppver did not print

    @property
    def schedule(self) -> list[float]:
        """Times printed by testcpp / python-sgp4 if no error occurred (same loop)."""
        times = [0.0]
        tsince = self.start_min
        while tsince <= self.stop_min:
            if not (tsince == self.start_min == 0.0):
                times.append(tsince)
            tsince += self.step_min
        if tsince - self.stop_min < self.step_min - 1e-6:  # "do not miss last line!"
            times.append(self.stop_min)
        return times

    @property
    def ok_rows(self) -> np.ndarray:
        return self.rows[:0] if self.stale else self.rows

    @property
    def id(self) -> str:
        return f"{self.index:02d}-{self.satnum}"


def _read_cases() -> list[Case]:
    tle_lines = TLE_PATH.read_bytes().decode("ascii").splitlines()
    schedules = []
    for i, line in enumerate(tle_lines):
        if line.startswith("1 "):
            line2 = tle_lines[i + 1]
            start, stop, step = (float(x) for x in line2[69:].split())
            schedules.append((int(line[2:7]), start, stop, step))
    blocks: list[tuple[int, list[list[float]]]] = []
    for line in TCPPVER_PATH.read_text(encoding="ascii").splitlines():
        fields = line.split()
        if not fields:
            continue
        if fields[-1] == "xx":
            blocks.append((int(fields[0]), []))
        else:
            blocks[-1][1].append([float(x) for x in fields[:7]])
    assert len(schedules) == len(blocks) == 33
    cases = []
    previous_row = None
    for index, ((satnum, start, stop, step), (head, rows)) in enumerate(
            zip(schedules, blocks, strict=True)):
        assert satnum == head, f"object {index}: TLE {satnum} but tcppver header {head}"
        rows_a = np.array(rows, dtype=np.float64)
        stale = bool(len(rows) == 1 and previous_row is not None
                     and np.array_equal(rows_a[0, 1:], previous_row[1:]))
        case = Case(index, satnum, start, stop, step, rows_a, stale)
        schedule = case.schedule
        if stale:
            error_tsince = 0.0
        elif len(rows) < len(schedule):
            error_tsince = schedule[len(rows)]
        else:
            error_tsince = None
        cases.append(Case(index, satnum, start, stop, step, rows_a, stale, error_tsince))
        previous_row = rows_a[-1]
    return cases


CASES = _read_cases()
ERROR_CASES = [c for c in CASES if c.error_tsince is not None]


@pytest.fixture(scope="module")
def constellation() -> leotwin.Constellation:
    return leotwin.load_tle(TLE_PATH, verify_checksum=False)


def _satrec_of(con: leotwin.Constellation, satnum: int):
    (sat,) = np.flatnonzero(con.satnum == satnum)
    (elset,) = np.flatnonzero(con.elset_sat == sat)
    return con.satrecs[elset]


def _split_tsince(satrec, tsince_min: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Julian date pair at tsince minutes after the element-set epoch, as python-sgp4 does."""
    whole, fraction = np.divmod(np.asarray(tsince_min, dtype=np.float64) / 1440.0, 1.0)
    return satrec.jdsatepoch + whole, satrec.jdsatepochF + fraction


def _utc_times(satrec, tsince_min: np.ndarray) -> np.ndarray:
    """datetime64[ns] of epoch + tsince, in integer nanoseconds (no float JD sum: a float
    Julian date near 2.45e6 only resolves 40 us, i.e. 0.3 m at 7.5 km/s)."""
    days = satrec.jdsatepoch - _JD_UNIX_EPOCH
    assert days == round(days)  # sgp4 keeps jdsatepoch on a day boundary (ends in .5)
    epoch_ns = round(days) * _NS_PER_DAY + round(satrec.jdsatepochF * _NS_PER_DAY)
    offset_ns = np.round(np.asarray(tsince_min, dtype=np.float64) * 60e9).astype(np.int64)
    return (epoch_ns + offset_ns).astype("datetime64[ns]")


def _ecef_to_teme(r_ecef: np.ndarray, v_ecef: np.ndarray, times: np.ndarray):
    """Undo Vallado's teme2ecef: add back ω×r, then rotate by +GMST82 (UT1 = UTC).

    ``r_ecef``, ``v_ecef``: shape ``(n_time, 3)``."""
    theta = gmst82_rad(*split_julian_date(times))
    c, s = np.cos(theta), np.sin(theta)
    w = EARTH_ROTATION_RAD_S
    ex, ey = r_ecef[..., 0], r_ecef[..., 1]
    # PEF velocity before the -ω×r term, i.e. the rotated TEME velocity.
    ux = v_ecef[..., 0] - w * ey
    uy = v_ecef[..., 1] + w * ex
    r = np.stack([c * ex - s * ey, s * ex + c * ey, r_ecef[..., 2]], axis=-1)
    v = np.stack([c * ux - s * uy, s * ux + c * uy, v_ecef[..., 2]], axis=-1)
    return r, v


# --------------------------------------------------------------------------- reference files
def test_reference_files_are_the_documented_copies():
    for name, digest in SHA256.items():
        assert hashlib.sha256((REFERENCE / name).read_bytes()).hexdigest() == digest, name
    raw = TLE_PATH.read_bytes()
    assert raw.count(b"\r\n") == raw.count(b"\n")  # CRLF kept, as in the sgp4 sdist


def test_reference_layout_is_understood():
    assert len(CASES) == 33
    assert sum(len(c.rows) for c in CASES) == 667
    for case in CASES:
        # Every printed tsince is the scheduled one (printed to 1e-8 min).
        printed = case.rows[:, 0]
        np.testing.assert_allclose(printed, case.schedule[:len(printed)], rtol=0, atol=1e-7)
    # Exactly python-sgp4's seven error stops, one of them at epoch (33334).
    assert len(ERROR_CASES) == len(EXPECTED_ERRORS) == 7
    assert [c.satnum for c in CASES if c.stale] == [33334]


# --------------------------------------------------------------------------- the loader
def test_verify_checksum_false_keeps_all_33_records():
    sets, rejected = parse_tle(TLE_PATH, verify_checksum=False)
    assert rejected == []
    assert [s.satnum for s in sets] == [c.satnum for c in CASES]
    con = leotwin.load_tle(TLE_PATH, verify_checksum=False)
    assert con.rejected == []
    # 20413 appears twice with the identical element set (two time windows), so the
    # constellation holds 32 satellites with one element set each.
    assert sorted(con.satnum.tolist()) == sorted({c.satnum for c in CASES})
    assert len(con) == con.n_elsets == 32


def test_strict_false_rejects_exactly_the_bad_checksum_objects():
    con = leotwin.load_tle(TLE_PATH, strict=False)
    assert [r.line for r in con.rejected] == BAD_CHECKSUM_LINE1_NUMBERS
    for r in con.rejected:
        assert "checksum" in r.reason and "SGP4-VER.TLE" in r.reason
    assert set(con.satnum.tolist()) == {c.satnum for c in CASES} - BAD_CHECKSUM_SATNUMS
    assert len(con) == 29


def test_strict_default_stops_at_the_first_bad_checksum():
    with pytest.raises(leotwin.TLEError) as info:
        leotwin.load_tle(TLE_PATH)
    assert info.value.line == BAD_CHECKSUM_LINE1_NUMBERS[0]
    assert info.value.field == "checksum"


def test_loaded_epochs_agree_with_sgp4_epochs(constellation):
    """leotwin's datetime64 epoch (used to pick element sets) is the satrec's epoch."""
    for k, satrec in enumerate(constellation.satrecs):
        t_sgp4 = _utc_times(satrec, np.zeros(1))[0]
        diff_ns = abs(int((constellation.elset_epoch[k] - t_sgp4).astype("int64")))
        assert diff_ns <= 1_000, (constellation.satnum[constellation.elset_sat[k]], diff_ns)


# --------------------------------------------------------------------------- TEME, SatrecArray
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_loaded_satrecs_reproduce_tcppver_in_teme(constellation, case):
    satrec = _satrec_of(constellation, case.satnum)
    rows = case.ok_rows
    tsince = rows[:, 0]
    if case.error_tsince is not None:
        tsince = np.r_[tsince, case.error_tsince]
    jd, fr = _split_tsince(satrec, tsince)
    e, r, v = SatrecArray([satrec]).sgp4(jd, fr)
    e, r, v = e[0], r[0], v[0]
    n = len(rows)
    assert np.all(e[:n] == 0)
    assert np.max(np.abs(r[:n] - rows[:, 1:4]), initial=0.0) < R_TOL_KM
    assert np.max(np.abs(v[:n] - rows[:, 4:7]), initial=0.0) < V_TOL_KM_S
    if case.error_tsince is not None:
        expected = EXPECTED_ERRORS[ERROR_CASES.index(case)]
        assert e[n] == expected, f"{case.satnum}: SGP4 error at t={case.error_tsince} min"


# --------------------------------------------------------------------------- leotwin.propagate
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_propagate_reproduces_tcppver_after_undoing_the_gmst_rotation(constellation, case):
    con = constellation.select(satnums=[case.satnum])
    satrec = con.satrecs[0]
    rows = case.ok_rows
    tsince = rows[:, 0]
    if case.error_tsince is not None:
        tsince = np.r_[tsince, case.error_tsince]
    times = _utc_times(satrec, tsince)
    ds = leotwin.propagate(con, times)
    assert ds["sat"].values.tolist() == [case.satnum]
    r_ecef = ds["r_ecef_km"].values[:, 0, :]
    v_ecef = ds["v_ecef_km_s"].values[:, 0, :]
    error = ds["error"].values[:, 0]
    n = len(rows)
    r_teme, v_teme = _ecef_to_teme(r_ecef, v_ecef, times)
    assert np.all(error[:n] == 0)
    assert np.max(np.abs(r_teme[:n] - rows[:, 1:4]), initial=0.0) < R_TOL_KM
    assert np.max(np.abs(v_teme[:n] - rows[:, 4:7]), initial=0.0) < V_TOL_KM_S
    if case.error_tsince is not None:
        assert error[n] == EXPECTED_ERRORS[ERROR_CASES.index(case)]
        assert np.all(np.isnan(r_ecef[n])) and np.all(np.isnan(v_ecef[n]))
        assert not bool(ds["operational"].values[n, 0])


def test_propagate_handles_all_objects_at_once(constellation):
    """One call for the whole set at the epoch of object 5: every ECEF is finite or flagged."""
    times = _utc_times(_satrec_of(constellation, 5), np.array([0.0, 360.0]))
    ds = leotwin.propagate(constellation, times)
    error = ds["error"].values
    r = ds["r_ecef_km"].values
    assert np.array_equal(np.isnan(r).any(axis=-1), error != 0)
    assert np.isfinite(r[error == 0]).all()
    # 33334 (mean motion 1e-5 rev/day) fails at every time, not only at its epoch.
    col = int(np.flatnonzero(constellation.satnum == 33334)[0])
    assert np.all(error[:, col] != 0)
