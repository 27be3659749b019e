"""The command line, run in-process (main) and once as a real subprocess."""

import subprocess
import sys
from importlib import resources
from pathlib import Path

import pandas as pd
import pytest
import xarray as xr

from leotwin.cli import main

OCT = Path(str(resources.files("leotwin.data"))) / "starlink-2022-10-24.tle"


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_demo_prints_the_city_table(capsys):
    code, out, _ = run(capsys, "demo", "--stop", "2022-10-07T12:10:00Z", "--no-flagship")
    assert code == 0
    for city in ("Kyiv", "Kharkiv", "Kherson", "Lviv", "Bakhmut"):
        assert city in out
    assert "Satellites visible above 25°" in out
    assert "min" in out and "mean" in out and "max" in out
    assert "Round-trip time terminal → PoP" in out and "median RTT ms" in out
    assert "bent pipe" in out and "FRA" in out


@pytest.mark.parametrize("suffix", [".parquet", ".nc"])
def test_propagate_writes_file(capsys, tmp_path, suffix):
    small = tmp_path / "small.tle"
    small.write_text("".join(OCT.read_text().splitlines(keepends=True)[:30]))
    out_file = tmp_path / f"pos{suffix}"
    code, out, _ = run(capsys, "propagate", str(small), "--start", "2022-10-24T00:00Z",
                       "--stop", "2022-10-24T00:10Z", "--step", "60", "--out", str(out_file))
    assert code == 0 and out_file.exists()
    if suffix == ".parquet":
        df = pd.read_parquet(out_file)
        assert len(df) == 10 * 11
        assert {"time", "sat", "x_ecef_km", "vz_ecef_km_s", "error", "operational"} <= set(df)
    else:
        ds = xr.open_dataset(out_file, engine="h5netcdf")
        assert ds["r_ecef_km"].shape == (11, 10, 3)
        ds.close()


def test_bad_tle_file_is_one_line_exit_2(capsys, tmp_path):
    lines = OCT.read_text().splitlines(keepends=True)[:9]
    lines[4] = lines[4][:-2] + "0\n"  # break line 1's checksum of the second satellite
    bad = tmp_path / "bad.tle"
    bad.write_text("".join(lines))
    code, _, err = run(capsys, "propagate", str(bad), "--start", "2022-10-24", "--stop",
                       "2022-10-24T00:01Z", "--out", str(tmp_path / "x.parquet"))
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "bad.tle" in err and "line 5" in err and "checksum" in err
    assert not (tmp_path / "x.parquet").exists()


@pytest.mark.parametrize("argv,needle", [
    (["propagate", "missing.tle", "--start", "2022-10-24", "--stop", "2022-10-25",
      "--out", "x.parquet"], "missing.tle"),
    (["propagate", str(OCT), "--start", "soon", "--stop", "2022-10-25", "--out", "x.parquet"],
     "cannot read time"),
    (["propagate", str(OCT), "--start", "2022-10-24", "--stop", "2022-10-25",
      "--out", "x.csv"], ".parquet or .nc"),
    (["passes", str(OCT), "--lat", "95", "--lon", "0", "--start", "2022-10-24",
      "--stop", "2022-10-24T01:00Z"], "lat_deg"),
])
def test_errors_exit_2(capsys, argv, needle):
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert needle in err
    assert "Traceback" not in err


def test_passes_table(capsys):
    code, out, _ = run(capsys, "passes", str(OCT), "--lat", "50.45", "--lon", "30.52",
                       "--start", "2022-10-24T12:00Z", "--stop", "2022-10-24T12:30Z",
                       "--limit", "5")
    assert code == 0
    assert "STARLINK-" in out and "Passes over" in out


def test_version_and_module_entry_point():
    res = subprocess.run([sys.executable, "-m", "leotwin"], capture_output=True, text=True,
                         check=True)
    assert "sgp4" in res.stdout and "starlink-2022-10-24.tle" in res.stdout
    assert "2022-08-31" in res.stdout
    res = subprocess.run([sys.executable, "-m", "leotwin.cli", "--version"], capture_output=True,
                         text=True, check=True)
    assert res.stdout.startswith("leotwin ")
