"""The :class:`Constellation`: satellites and their element-set history, as arrays.

A constellation is a table of satellites (catalog number, name, shell) plus a table of element
sets (which satellite, epoch, an initialised SGP4 record). Several element sets of one satellite
form its history; propagation picks, per time step, the one whose epoch is nearest. Nothing here
creates a Python object per satellite in a hot path: propagation works on ``SatrecArray``.
"""

from __future__ import annotations

import fnmatch
import functools
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from sgp4.api import Satrec, SatrecArray

from ..constants import WGS72_RADIUS_KM
from ..defaults import default
from .tle import ElementSet, Rejected

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShellSpec:
    """A filed orbital shell: centre altitude, inclination, and label."""

    label: str
    altitude_km: float
    inclination_deg: float


@dataclass(eq=False)
class Constellation:
    """Satellites and element sets as parallel arrays.

    Per satellite (length ``n_sat``): ``satnum``, ``names``, ``shell``, ``shell_altitude_km``.
    Per element set (length ``n_elset``): ``elset_sat`` (index into satellites), ``elset_epoch``
    (UTC ``datetime64[ns]``), ``satrecs``. ``rejected`` lists records skipped while loading and
    ``filtered`` counts objects dropped by name pattern.
    """

    satnum: np.ndarray
    names: np.ndarray
    shell: np.ndarray
    shell_altitude_km: np.ndarray
    elset_sat: np.ndarray
    elset_epoch: np.ndarray
    satrecs: list[Satrec]
    rejected: list[Rejected] = field(default_factory=list)
    filtered: dict[str, int] = field(default_factory=dict)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_element_sets(
        cls,
        element_sets: Sequence[ElementSet],
        *,
        shells: Sequence[ShellSpec] | None = None,
        shell_labels: Sequence[str] | None = None,
        rejected: Iterable[Rejected] = (),
        filtered: dict[str, int] | None = None,
    ) -> Constellation:
        """Group element sets by catalog number into satellites with histories.

        ``shell_labels`` (one per element set) assigns shells explicitly (synthetic shells);
        otherwise shells are inferred from inclination and mean altitude against ``shells``
        (default: the Gen1 filing) — see :func:`infer_shells`.
        """
        if len(element_sets) == 0:
            raise ValueError("a constellation needs at least one element set")
        satnum_all = np.array([e.satnum for e in element_sets], dtype=np.int64)
        epoch_all = np.array([e.epoch for e in element_sets], dtype="datetime64[ns]")
        # Drop exact duplicates (same satellite, same epoch) keeping the first.
        order = np.lexsort((epoch_all.astype("int64"), satnum_all))
        keep = np.ones(order.size, dtype=bool)
        keep[1:] = (np.diff(satnum_all[order]) != 0) | (
            np.diff(epoch_all[order].astype("int64")) != 0
        )
        order = order[keep]
        satnum_sorted = satnum_all[order]
        satnum, first_idx, elset_sat = np.unique(
            satnum_sorted, return_index=True, return_inverse=True
        )
        # The name of a satellite is the one on its latest element set.
        last_idx = np.r_[first_idx[1:], satnum_sorted.size] - 1
        names = np.array([element_sets[order[i]].name for i in last_idx], dtype=object)
        satrecs = [element_sets[i].satrec for i in order]
        if shell_labels is not None:
            labels = np.asarray(shell_labels, dtype=object)[order][last_idx]
            spec = {s.label: s for s in (shells or [])}
            shell_alt = np.array([spec[lbl].altitude_km if lbl in spec else np.nan
                                  for lbl in labels])
            shell = labels.astype(object)
        else:
            inc = np.array([satrecs[i].inclo for i in last_idx]) * (180.0 / np.pi)
            alt = _mean_altitude_km(satrecs)[last_idx]
            shell, shell_alt = infer_shells(inc, alt, shells)
        return cls(
            satnum=satnum,
            names=names,
            shell=np.asarray(shell, dtype=object),
            shell_altitude_km=np.asarray(shell_alt, dtype=np.float64),
            elset_sat=elset_sat.astype(np.int64),
            elset_epoch=epoch_all[order],
            satrecs=satrecs,
            rejected=list(rejected),
            filtered=dict(filtered or {}),
        )

    # ------------------------------------------------------------------ views
    def __len__(self) -> int:
        return int(self.satnum.size)

    def __repr__(self) -> str:
        shells = ", ".join(f"{k}: {v}" for k, v in self.shell_counts().items())
        return (f"Constellation({len(self)} satellites, {self.n_elsets} element sets, "
                f"epochs {self.epochs.min()}..{self.epochs.max()}; shells {shells})")

    @property
    def n_elsets(self) -> int:
        return len(self.satrecs)

    @property
    def epochs(self) -> np.ndarray:
        """Per satellite, the epoch of its latest element set."""
        last = np.r_[np.flatnonzero(np.diff(self.elset_sat)), self.elset_sat.size - 1]
        return self.elset_epoch[last]

    @functools.cached_property
    def elset_mean_altitude_km(self) -> np.ndarray:
        """Per element set, the mean altitude (semi-major axis − WGS72 equatorial radius)."""
        return _mean_altitude_km(self.satrecs)

    @functools.cached_property
    def elset_inclination_deg(self) -> np.ndarray:
        return np.array([s.inclo for s in self.satrecs]) * (180.0 / np.pi)

    def shell_counts(self) -> dict[str, int]:
        labels, counts = np.unique(self.shell.astype(str), return_counts=True)
        return dict(zip(labels.tolist(), counts.tolist(), strict=True))

    # ------------------------------------------------------------------ algebra
    def __add__(self, other: Constellation) -> Constellation:
        """Union of two constellations; a satellite in both gains both element-set histories.

        Shell labels are kept from the inputs (the right-hand side wins for a shared satellite).
        """
        if not isinstance(other, Constellation):
            return NotImplemented
        sets = self._element_sets() + other._element_sets()
        labels = [self.shell[i] for i in self.elset_sat] + [other.shell[i] for i in other.elset_sat]
        alt = {**dict(zip(self.shell, self.shell_altitude_km, strict=True)),
               **dict(zip(other.shell, other.shell_altitude_km, strict=True))}
        specs = [ShellSpec(str(k), float(v), np.nan) for k, v in alt.items()]
        filtered = dict(self.filtered)
        for k, v in other.filtered.items():
            filtered[k] = filtered.get(k, 0) + v
        return Constellation.from_element_sets(
            sets, shells=specs, shell_labels=labels,
            rejected=self.rejected + other.rejected, filtered=filtered,
        )

    def select(self, *, names: str | Sequence[str] | None = None,
               shell: str | Sequence[str] | None = None,
               satnums: Sequence[int] | None = None) -> Constellation:
        """Subset by name (exact or ``fnmatch`` patterns), shell label, or catalog number."""
        mask = np.ones(len(self), dtype=bool)
        if names is not None:
            patterns = [names] if isinstance(names, str) else list(names)
            mask &= np.array([any(fnmatch.fnmatchcase(str(n), p) for p in patterns)
                              for n in self.names], dtype=bool)
        if shell is not None:
            shells = [shell] if isinstance(shell, str) else list(shell)
            mask &= np.isin(self.shell.astype(str), shells)
        if satnums is not None:
            mask &= np.isin(self.satnum, np.asarray(satnums, dtype=np.int64))
        return self._take(np.flatnonzero(mask))

    def satrec_array(self, elset_index: np.ndarray) -> SatrecArray:
        """``SatrecArray`` of the given element sets, cached: successive time chunks of a run
        reuse it instead of rebuilding it from Python objects."""
        key = np.asarray(elset_index, dtype=np.int64).tobytes()
        cache = self.__dict__.setdefault("_satrec_arrays", {})
        arr = cache.get(key)
        if arr is None:
            if len(cache) >= 8:
                cache.pop(next(iter(cache)))
            arr = cache[key] = SatrecArray([self.satrecs[i] for i in elset_index])
        return arr

    def _take(self, sat_idx: np.ndarray) -> Constellation:
        new_index = np.full(len(self), -1, dtype=np.int64)
        new_index[sat_idx] = np.arange(sat_idx.size)
        keep = np.flatnonzero(new_index[self.elset_sat] >= 0)
        return Constellation(
            satnum=self.satnum[sat_idx], names=self.names[sat_idx], shell=self.shell[sat_idx],
            shell_altitude_km=self.shell_altitude_km[sat_idx],
            elset_sat=new_index[self.elset_sat[keep]], elset_epoch=self.elset_epoch[keep],
            satrecs=[self.satrecs[i] for i in keep], rejected=list(self.rejected),
            filtered=dict(self.filtered),
        )

    def _element_sets(self) -> list[ElementSet]:
        return [
            ElementSet(name=str(self.names[s]), satnum=int(self.satnum[s]), epoch=ep, satrec=rec,
                       line=0, source="<constellation>")
            for s, ep, rec in zip(self.elset_sat, self.elset_epoch, self.satrecs, strict=True)
        ]


def _mean_altitude_km(satrecs: Sequence[Satrec]) -> np.ndarray:
    # Satrec.a is the Brouwer mean semi-major axis in Earth radii (WGS72 radius).
    return np.array([s.a for s in satrecs], dtype=np.float64) * WGS72_RADIUS_KM - WGS72_RADIUS_KM


def infer_shells(inclination_deg: np.ndarray, mean_altitude_km: np.ndarray,
                 shells: Sequence[ShellSpec] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Assign each satellite to a filed shell by inclination, else to an inferred shell.

    A satellite whose inclination is within ``shell_inclination_tolerance_deg`` of a filed
    shell belongs to it (shells with the same inclination are merged, e.g. Gen1 4 and 5 as
    ``gen1-4/5``, since TLEs cannot tell them apart by orbit alone). Others are grouped in bins
    of ``unknown_shell_inclination_bin_deg``; each group is a shell labelled ``i<inc>`` whose
    centre altitude is the median mean altitude of its members. Returns ``(label, centre_km)``.
    """
    from .shells import gen1_shell_specs

    inc = np.asarray(inclination_deg, dtype=np.float64)
    alt = np.asarray(mean_altitude_km, dtype=np.float64)
    specs = list(shells) if shells is not None else _merge_same_inclination(gen1_shell_specs())
    labels = np.empty(inc.size, dtype=object)
    centre = np.full(inc.size, np.nan)
    assigned = np.zeros(inc.size, dtype=bool)
    if specs:
        spec_inc = np.array([s.inclination_deg for s in specs])
        dist = np.abs(inc[:, None] - spec_inc[None, :])
        best = np.argmin(dist, axis=1)
        assigned = dist[np.arange(inc.size), best] <= default("shell_inclination_tolerance_deg")
        for k, s in enumerate(specs):
            m = assigned & (best == k)
            labels[m] = s.label
            centre[m] = s.altitude_km
    width = default("unknown_shell_inclination_bin_deg")
    bins = np.round(inc[~assigned] / width) * width
    rest = np.flatnonzero(~assigned)
    for b in np.unique(bins):
        members = rest[bins == b]
        labels[members] = f"i{b:.1f}"
        centre[members] = np.median(alt[members])
    return labels, centre


def _merge_same_inclination(specs: Sequence[ShellSpec]) -> list[ShellSpec]:
    merged: dict[tuple[float, float], list[ShellSpec]] = {}
    for s in specs:
        merged.setdefault((s.inclination_deg, s.altitude_km), []).append(s)
    out = []
    for (inc, alt), group in merged.items():
        if len(group) == 1:
            out.append(group[0])
        else:
            prefix = group[0].label.rsplit("-", 1)[0]
            suffix = "/".join(g.label.rsplit("-", 1)[-1] for g in group)
            out.append(ShellSpec(f"{prefix}-{suffix}", alt, inc))
    return out
