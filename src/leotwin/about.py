"""Versions and bundled-data facts, for ``python -m leotwin`` and ``leotwin --version``."""

from __future__ import annotations

from importlib import resources
from importlib.metadata import PackageNotFoundError, version

_DEPENDENCIES = ("leotwin", "numpy", "scipy", "pandas", "xarray", "pyarrow", "sgp4")


def dependency_versions() -> dict[str, str]:
    out = {}
    for name in _DEPENDENCIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    import sgp4.api

    out["sgp4"] += " (C++ accelerated)" if sgp4.api.accelerated else " (pure Python, slow)"
    return out


def api_version_info() -> str:
    return "leotwin " + dependency_versions()["leotwin"]


def bundled_data_info() -> list[str]:
    """One line per bundled data file: name, size and what it is (from PROVENANCE.md)."""
    from .orbits.catalog import BUNDLED_TLE

    data = resources.files("leotwin.data")
    lines = []
    for key, fname in BUNDLED_TLE.items():
        text = data.joinpath(fname).read_text("utf-8")
        n_sets = sum(1 for line in text.splitlines() if line.startswith("1 "))
        lines.append(f"{fname}: {n_sets} element sets, snapshot {key[-10:]} (TLE)")
    lines.append("starlink-gen1.csv: FCC 21-48 Gen1 shells (4,408 satellites)")
    lines.append("key_cities.csv: 34 Ukrainian cities (GeoNames), occupation status per date, "
                 "2022-08-31..11-15")
    lines.append("ground/gateways.csv, ground/pops.csv: 261 gateways and 23 PoPs, a public list of "
                 "about late 2023 (StarPerf_Simulator); used for 2022 as an assumption")
    lines.append("borders/: Natural Earth 1:50m/1:110m v4.0.0 (de facto borders) and Ukraine's "
                 "oblasts (geoBoundaries), for service areas and maps")
    lines.append("provenance: leotwin/data/PROVENANCE.md")
    return lines
