import numpy as np
import pytest

from leotwin import time_grid
from leotwin.timescale import julian_date_to_datetime64, split_julian_date, to_utc_datetime64


def test_time_grid_includes_stop_on_step():
    t = time_grid("2022-10-07T12:00:00Z", "2022-10-07T13:00:00Z", 15)
    assert t.dtype == np.dtype("datetime64[ns]")
    assert t.size == 241
    assert t[-1] == np.datetime64("2022-10-07T13:00:00")


def test_time_grid_excludes_stop_off_step():
    t = time_grid("2022-10-07T12:00:00Z", "2022-10-07T12:01:10Z", 30)
    assert t[-1] == np.datetime64("2022-10-07T12:01:00")


def test_offsets_and_naive_strings_are_utc():
    assert to_utc_datetime64("2022-10-07T15:00:00+03:00") == np.datetime64("2022-10-07T12:00")
    assert to_utc_datetime64("2022-10-07T12:00:00") == np.datetime64("2022-10-07T12:00")
    assert to_utc_datetime64("2022-10-07T12:00:00Z") == np.datetime64("2022-10-07T12:00")


@pytest.mark.parametrize("start,stop,step,match", [
    ("2022-10-07", "2022-10-06", 10, "before start"),
    ("2022-10-07", "2022-10-08", 0, "positive"),
    ("2022-10-07", "2022-10-08", float("nan"), "positive"),
    ("yesterday-ish", "2022-10-08", 10, "cannot read time"),
    ("", "2022-10-08", 10, "cannot read time"),
])
def test_time_grid_bad_input(start, stop, step, match):
    with pytest.raises(ValueError, match=match):
        time_grid(start, stop, step)


def test_julian_date_round_trip_to_microsecond():
    t = time_grid("1999-12-31T23:59:59.5Z", "2030-01-01", 86400 * 37.3)
    jd, fr = split_julian_date(t)
    assert np.all((fr >= 0) & (fr < 1))
    # J2000.0 in UTC is JD 2451545.0 minus the TT-UTC offset; check a plain calendar date.
    jd0, fr0 = split_julian_date(np.array(["2000-01-01T12:00:00"], dtype="datetime64[ns]"))
    assert jd0[0] + fr0[0] == 2451545.0
    back = julian_date_to_datetime64(jd, fr)
    assert np.max(np.abs((back - t).astype("int64"))) < 1000  # ns
