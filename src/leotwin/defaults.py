"""Every assumed number in leotwin, with its unit and a source or the word "assumption".

Code reads values from :data:`DEFAULTS` by name so that a number lives in exactly one place and
its provenance travels with it (``leotwin defaults`` would print this table).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class Default:
    name: str
    value: float
    unit: str
    source: str


_FCC_21_48 = (
    "FCC 21-48, Order and Authorization, IBFS SAT-MOD-20200417-00037 (2021-04-27): "
)

DEFAULTS: dict[str, Default] = {
    d.name: d
    for d in [
        Default("terminal_min_elevation_deg", 25.0, "deg",
                _FCC_21_48 + "25 deg minimum elevation for user terminals"),
        Default("gateway_min_elevation_deg", 25.0, "deg",
                _FCC_21_48 + "25 deg for gateways (5 deg for polar gateways)"),
        Default("operational_band_km", 30.0, "km",
                _FCC_21_48 + "'operations occurring with a range of 30 km around that [centre] "
                "altitude'; applied to the element set's mean altitude (semi-major axis minus "
                "the WGS72 equatorial radius)"),
        Default("shell_inclination_tolerance_deg", 0.12, "deg",
                "assumption: half the 53.0/53.2 deg separation of Gen1 shells 1 and 2, so real "
                "TLE inclinations (53.05, 53.22) fall in the right shell"),
        Default("unknown_shell_inclination_bin_deg", 0.5, "deg",
                "assumption: satellites outside the filed shells are grouped by inclination in "
                "bins of this width; the group's median mean altitude is its shell centre"),
        Default("propagation_chunk_steps", 240.0, "steps",
                "assumption: 240 steps x 4,408 satellites keeps a chunk near 50 MB"),
    ]
}


def default(name: str) -> float:
    """Value of the named default (raises ``KeyError`` naming the known defaults)."""
    try:
        return DEFAULTS[name].value
    except KeyError:
        raise KeyError(f"unknown default {name!r}; known: {sorted(DEFAULTS)}") from None


def defaults_table() -> pd.DataFrame:
    """All defaults as a table (name, value, unit, source)."""
    return pd.DataFrame([vars(d) for d in DEFAULTS.values()])
