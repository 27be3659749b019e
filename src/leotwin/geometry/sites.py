"""Validation of ground-site tables (``site, lat_deg, lon_deg, alt_m``)."""

from __future__ import annotations

import numpy as np
import pandas as pd

#: The one definition of a valid ground position, shared by every site and ground table
#: (degrees north, degrees east, metres above the WGS84 ellipsoid).
LAT_RANGE_DEG = (-90.0, 90.0)
LON_RANGE_DEG = (-180.0, 180.0)
ALT_RANGE_M = (-500.0, 100_000.0)


def validate_sites(sites, *, id_column: str = "site") -> pd.DataFrame:
    """Return a clean copy of a site table or raise ``ValueError`` naming the row and column.

    Accepts a DataFrame or anything ``pandas.DataFrame`` accepts (list of dicts, dict of lists).
    ``alt_m`` defaults to 0 when the column is absent.
    """
    df = pd.DataFrame(sites).copy()
    missing = [c for c in (id_column, "lat_deg", "lon_deg") if c not in df.columns]
    if missing:
        raise ValueError(f"site table is missing column(s) {missing}; "
                         f"expected {id_column}, lat_deg, lon_deg[, alt_m]")
    if "alt_m" not in df.columns:
        df["alt_m"] = 0.0
    if df.empty:
        raise ValueError("site table is empty")
    for col, (lo, hi) in (("lat_deg", LAT_RANGE_DEG), ("lon_deg", LON_RANGE_DEG),
                          ("alt_m", ALT_RANGE_M)):
        values = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values) | (values < lo) | (values > hi)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(f"site row {row} ({id_column}={df[id_column].iloc[row]!r}), column "
                             f"{col!r}: {df[col].iloc[row]!r} is not a number in [{lo}, {hi}]")
        df[col] = values
    dup = df[id_column].duplicated()
    if dup.any():
        row = int(np.flatnonzero(dup.to_numpy())[0])
        raise ValueError(f"site row {row}: duplicate {id_column} {df[id_column].iloc[row]!r}")
    return df.reset_index(drop=True)
