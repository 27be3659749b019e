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


def test_run_step_and_partition_terminals(capsys, tmp_path, monkeypatch):
    """``leotwin run --step`` overrides time.step_s; ``--partition-terminals`` wins over
    LEOTWIN_PARTITION_TERMINALS, which wins over the scenario's outputs.partition_terminals."""
    import logging

    from leotwin import runs
    from test_run_partitions import Chunks, make

    sc = make(tmp_path / "s", capacity=True)
    sc.write_text(sc.read_text().replace("report: false}", "report: false, "
                                         "partition_terminals: 6}"))
    handler, logger = Chunks(), logging.getLogger("leotwin.runs")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        monkeypatch.setenv(runs.PARTITION_ENV, "4")
        code, out, _ = run(capsys, "run", str(sc), "--out", str(tmp_path / "a"), "--step",
                           "30", "--stop", "2022-10-05T12:04:00Z", "--partition-terminals", "7")
        assert code == 0 and "run complete: 2/2 chunks" in out
        assert [c.partitions for c in handler.done] == [2, 2]  # ⌈13/7⌉, the flag
        times = pd.read_parquet(tmp_path / "a" / "timeline.parquet")["time"].unique()
        assert len(times) == 9 and (pd.Series(times).diff().dropna()
                                    == pd.Timedelta(30, "s")).all()
        handler.done.clear()
        assert main(["run", str(sc), "--out", str(tmp_path / "b"), "--stop",
                     "2022-10-05T12:04:00Z"]) == 0
        assert [c.partitions for c in handler.done] == [4]  # ⌈13/4⌉, the environment
        handler.done.clear()
        monkeypatch.delenv(runs.PARTITION_ENV)
        assert main(["run", str(sc), "--out", str(tmp_path / "c"), "--stop",
                     "2022-10-05T12:04:00Z"]) == 0
        assert [c.partitions for c in handler.done] == [3]  # ⌈13/6⌉, the scenario
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    code, _, err = run(capsys, "run", str(sc), "--out", str(tmp_path / "d"),
                       "--partition-terminals", "0")
    assert code == 2 and "partition_terminals must be >= 1" in err
    code, _, err = run(capsys, "run", str(sc), "--out", str(tmp_path / "d"), "--step", "7")
    assert code == 2 and "time" in err and "step_s" in err


def test_run_takes_a_bundled_scenario_name():
    from leotwin.cli import _scenario_path
    from leotwin.scenarios import bundled_scenario

    assert _scenario_path("ukraine-2022-10") == bundled_scenario("ukraine-2022-10")
    assert _scenario_path("elsewhere/scenario.yaml") == Path("elsewhere/scenario.yaml")
