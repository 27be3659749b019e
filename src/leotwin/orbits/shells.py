"""Synthetic Walker-delta shells and the FCC-filed Starlink Gen1 constellation."""

from __future__ import annotations

import functools
import io
from importlib import resources

import numpy as np
import pandas as pd
from sgp4.api import WGS72, Satrec

from ..constants import JD_SGP4INIT_EPOCH0, WGS72_MU_KM3_S2, WGS72_RADIUS_KM
from ..timescale import split_julian_date, to_utc_datetime64
from .constellation import Constellation, ShellSpec
from .tle import ElementSet


@functools.cache
def gen1_shells_table() -> pd.DataFrame:
    """The five Gen1 shells (bundled ``starlink-gen1.csv``, FCC 21-48; see PROVENANCE.md)."""
    text = resources.files("leotwin.data").joinpath("starlink-gen1.csv").read_text("utf-8")
    return pd.read_csv(io.StringIO(text))


def gen1_shell_specs() -> list[ShellSpec]:
    t = gen1_shells_table()
    return [ShellSpec(f"gen1-{int(r.shell)}", float(r.altitude_km), float(r.inclination_deg))
            for r in t.itertuples()]


def walker_shell(*, altitude_km: float, inclination_deg: float, planes: int,
                 sats_per_plane: int, phasing: int, epoch, raan0_deg: float = 0.0,
                 name: str | None = None, first_satnum: int = 1) -> Constellation:
    """A Walker-delta shell i:T/P/F of circular orbits, initialised with ``sgp4init``.

    Plane ``p`` has RAAN ``raan0 + 360·p/P``; slot ``s`` in it has mean anomaly
    ``360·s/S + 360·F·p/T``. The mean motion is Keplerian for ``a = R_WGS72 + altitude_km``
    (the J2 offset between Kozai and Brouwer mean motion shifts the mean altitude by < 10 km).
    Zero drag, so the shell keeps its geometry. Catalog numbers run from ``first_satnum``.
    """
    for label, value in (("planes", planes), ("sats_per_plane", sats_per_plane)):
        if int(value) != value or value < 1:
            raise ValueError(f"{label} must be a positive integer, got {value!r}")
    if not 0 <= phasing < planes:
        raise ValueError(f"phasing must be in 0..planes-1 ({planes - 1}), got {phasing!r}")
    if not altitude_km > 0:
        raise ValueError(f"altitude_km must be positive, got {altitude_km!r}")
    if not 0 <= inclination_deg <= 180:
        raise ValueError(f"inclination_deg must be in 0..180, got {inclination_deg!r}")
    total = planes * sats_per_plane
    if first_satnum < 1 or first_satnum + total - 1 > 339999:
        raise ValueError("catalog numbers must stay within 1..339999 (Alpha-5 range)")
    label = name or f"walker-{altitude_km:g}km-{inclination_deg:g}deg"
    epoch64 = to_utc_datetime64(epoch)
    jd, fr = split_julian_date(np.array([epoch64]))
    epoch_days = float(jd[0] - JD_SGP4INIT_EPOCH0 + fr[0])
    a_km = WGS72_RADIUS_KM + altitude_km
    no_rad_min = np.sqrt(WGS72_MU_KM3_S2 / a_km**3) * 60.0
    p_idx, s_idx = np.divmod(np.arange(total), sats_per_plane)
    raan = np.radians((raan0_deg + 360.0 * p_idx / planes) % 360.0)
    mean_anomaly = np.radians((360.0 * s_idx / sats_per_plane
                               + 360.0 * phasing * p_idx / total) % 360.0)
    inc = np.radians(inclination_deg)
    sets = []
    for k in range(total):  # one-off construction, not a hot path
        rec = Satrec()
        rec.sgp4init(WGS72, "i", first_satnum + k, epoch_days, 0.0, 0.0, 0.0, 0.0, 0.0, inc,
                     mean_anomaly[k], no_rad_min, raan[k])
        sets.append(ElementSet(name=f"{label}-P{p_idx[k]:02d}-S{s_idx[k]:02d}",
                               satnum=first_satnum + k, epoch=epoch64, satrec=rec, line=0,
                               source=label))
    spec = ShellSpec(label, float(altitude_km), float(inclination_deg))
    return Constellation.from_element_sets(sets, shells=[spec], shell_labels=[label] * total)


def starlink_gen1(epoch, *, phasing: int | None = None) -> Constellation:
    """The five FCC-filed Starlink Gen1 shells (4,408 satellites) as Walker-delta shells.

    The filing gives altitude, inclination, planes and satellites per plane but not the phasing
    factor or RAANs; we use F = 1 and RAAN origin 0 for every shell (**assumption**). Shell ``k``
    gets consecutive catalog numbers starting at 1 (shell 1 first).
    """
    parts = []
    first = 1
    for r in gen1_shells_table().itertuples():
        f = 1 if phasing is None else phasing
        parts.append(walker_shell(
            altitude_km=float(r.altitude_km), inclination_deg=float(r.inclination_deg),
            planes=int(r.planes), sats_per_plane=int(r.sats_per_plane), phasing=f % int(r.planes),
            epoch=epoch, name=f"gen1-{int(r.shell)}", first_satnum=first))
        first += int(r.total)
    out = parts[0]
    for p in parts[1:]:
        out = out + p
    return out
