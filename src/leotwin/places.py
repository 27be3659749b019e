"""Bundled Ukrainian places (GeoNames, see ``data/PROVENANCE.md``) as site tables."""

from __future__ import annotations

import functools
import io
from collections.abc import Sequence
from importlib import resources

import pandas as pd


@functools.cache
def _key_cities() -> pd.DataFrame:
    text = resources.files("leotwin.data").joinpath("key_cities.csv").read_text("utf-8")
    df = pd.read_csv(io.StringIO(text))
    df.insert(0, "site", df["name"])
    df["alt_m"] = 0.0
    return df


def key_cities(names: Sequence[str] | None = None) -> pd.DataFrame:
    """Key Ukrainian cities as a site table (``site, lat_deg, lon_deg, alt_m`` + attributes),
    in the order of ``names`` when given (unknown names raise ``KeyError`` listing the known)."""
    df = _key_cities()
    if names is None:
        return df.copy()
    known = set(df["site"])
    unknown = [n for n in names if n not in known]
    if unknown:
        raise KeyError(f"unknown city {unknown}; known: {sorted(known)}")
    return df.set_index("site", drop=False).loc[list(names)].reset_index(drop=True)
