"""Loading constellations from TLE / OMM catalogs, and the bundled 2022 Starlink snapshots."""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from .constellation import Constellation
from .omm import parse_omm
from .tle import ElementSet, Rejected, TLEError, parse_tle

log = logging.getLogger(__name__)

#: Name patterns of catalog objects that are not satellites: rocket bodies and debris.
NON_SATELLITE_PATTERNS: tuple[str, ...] = ("* DEB", "* DEB *", "*DEBRIS*", "* R/B", "* R/B *",
                                           "* AKM", "* PKM", "OBJECT *")

#: Bundled snapshots (file name, what it is) — see ``leotwin/data/PROVENANCE.md``.
BUNDLED_TLE = {
    "starlink-2022-08-31": "starlink-2022-08-31-supgp.tle",
    "starlink-2022-10-24": "starlink-2022-10-24.tle",
}


def _filter(sets: list[ElementSet], include, exclude) -> tuple[list[ElementSet], dict[str, int]]:
    inc = [include] if isinstance(include, str) else list(include or [])
    exc = [exclude] if isinstance(exclude, str) else list(exclude or [])
    kept, counts = [], {}
    for s in sets:
        name = s.name.upper()
        if exc and any(fnmatch.fnmatchcase(name, p.upper()) for p in exc):
            counts["non_satellite"] = counts.get("non_satellite", 0) + 1
        elif inc and not any(fnmatch.fnmatchcase(name, p.upper()) for p in inc):
            counts["not_included"] = counts.get("not_included", 0) + 1
        else:
            kept.append(s)
    return kept, counts


def _build(parsed: list[tuple[list[ElementSet], list[Rejected]]], include, exclude,
           label: str) -> Constellation:
    sets = [s for p in parsed for s in p[0]]
    rejected = [r for p in parsed for r in p[1]]
    kept, counts = _filter(sets, include, exclude)
    if counts:
        log.info("%s: filtered out %s", label, ", ".join(f"{v} {k}" for k, v in counts.items()))
    if not kept:
        raise TLEError(f"{label}: no satellites left after filtering "
                       f"(include={include!r}, exclude={exclude!r}; {counts})")
    return Constellation.from_element_sets(kept, rejected=rejected, filtered=counts)


def _sources(source) -> list:
    if isinstance(source, (list, tuple)):
        if not source:
            raise TLEError("no source given: the list of files is empty")
        return list(source)
    return [source]


def load_tle(source, *, strict: bool = True, verify_checksum: bool = True,
             include: str | Sequence[str] | None = None,
             exclude: str | Sequence[str] | None = NON_SATELLITE_PATTERNS) -> Constellation:
    """Load a constellation from TLE text, a path, or a list of them (an element-set history).

    2-line and 3-line sets are accepted. ``strict=True`` raises :class:`TLEError` at the first
    bad record (message: file, line, field, what was expected); ``strict=False`` skips bad
    records and lists them in ``constellation.rejected``. Objects whose name matches
    ``exclude`` (debris, rocket bodies by default) or not ``include`` are dropped and counted
    in ``constellation.filtered``. Several snapshots of the same satellites merge into one
    history: propagation uses the nearest epoch per satellite and time step.
    """
    parsed = [parse_tle(s, strict=strict, verify_checksum=verify_checksum)
              for s in _sources(source)]
    return _build(parsed, include, exclude, _label(source))


def load_omm(source, *, strict: bool = True, include: str | Sequence[str] | None = None,
             exclude: str | Sequence[str] | None = NON_SATELLITE_PATTERNS) -> Constellation:
    """Load CelesTrak OMM (JSON or CSV); same error, filtering and history rules as
    :func:`load_tle`."""
    parsed = [parse_omm(s, strict=strict) for s in _sources(source)]
    return _build(parsed, include, exclude, _label(source))


def load_catalog(source, **kwargs) -> Constellation:
    """TLE or OMM by file suffix (``.json``/``.csv`` → OMM, anything else → TLE)."""
    first = _sources(source)[0]
    if isinstance(first, (str, Path)) and Path(str(first)).suffix.lower() in (".json", ".csv") \
            and "\n" not in str(first):
        return load_omm(source, **kwargs)
    return load_tle(source, **kwargs)


def _label(source) -> str:
    srcs = _sources(source)
    names = [Path(s).name if isinstance(s, Path) or (isinstance(s, str) and "\n" not in s)
             else "<text>" for s in srcs]
    return "+".join(names)


def bundled_tle_path(name: str) -> Path:
    """Path of a bundled TLE snapshot (keys of :data:`BUNDLED_TLE`)."""
    try:
        fname = BUNDLED_TLE[name]
    except KeyError:
        raise KeyError(f"unknown bundled snapshot {name!r}; known: {sorted(BUNDLED_TLE)}") from None
    return Path(str(resources.files("leotwin.data").joinpath(fname)))


def starlink_2022() -> Constellation:
    """The bundled real Starlink element sets of autumn 2022 as one element-set history.

    Both snapshots (2022-08-31 supplemental GP and 2022-10-24 GP) bracket early October 2022;
    only objects named ``STARLINK-*`` are kept (debris and other operators filtered).
    """
    return load_tle([bundled_tle_path(k) for k in BUNDLED_TLE], include="STARLINK-*")
