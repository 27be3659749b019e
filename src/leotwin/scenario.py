"""Scenario files: one YAML document describing a run, validated by pydantic.

Layout (every model forbids unknown keys, so a typo is an error, never silently ignored)::

    name: ukraine-2022-10
    description: ...
    time: {start: 2022-10-01T00:00:00Z, stop: 2022-10-11T00:00:00Z, step_s: 60, slot_s: 15}
    constellation:            # exactly one source
      starlink_2022: true     # or starlink_gen1: true (epoch = time.start)
                              # or tle: [a.tle, b.tle] (+ include / exclude name patterns)
                              # or omm: catalog.json (+ include / exclude)
                              # or shells: [{altitude_km, inclination_deg, planes,
                              #              sats_per_plane, phasing, raan0_deg?, name?}]
    ground:
      terminals: {file: terminals.csv}   # or {generate: [leotwin.ground_gen specs]}
      tracks: tracks.csv                 # optional; generated in-motion terminals get tracks
      gateways: bundled                  # or a path
      pops: bundled                      # or a path
    policy:                   # optional
      file: policy.yaml       # one Policy (JSON or YAML)
      # or versions: [{file, recorded_at, author, reason}] -> PolicyHistory
      as_of: null             # record time for PolicyHistory.at (None: latest)
      terminals_from_ground: true
    faults: {failures: [], random: null, outages: [], jammers: []}   # leotwin.faults.Faults
    network: {mode: isl, policy: max_elevation, ...}                  # NetworkConfig fields
    outputs: {chunk_steps: 240, report: true}   # + partition_terminals: N (optional)

Paths inside the file (and inside policy files) resolve against the directory of the file that
names them, never the working directory. Policy files may replace a GeoJSON geometry (a
geofence's ``geometry`` or a contract's ``covered_area``) by ``{"$ref": "path.geojson"}``: the
union of that file's Polygon/MultiPolygon features, validated by
:func:`leotwin.policy.geofence.parse_geometry`. Policies listing no terminals get the scenario's
ground terminals (id, account, kind, plan, position) when ``terminals_from_ground`` is true, since
the decision engine only decides for terminals it knows.

Slots and chunks: the network keeps a terminal's satellite within a slot of ``slot_s`` seconds
counted from the first step of each call. When ``step_s >= slot_s`` every step starts a slot.
Otherwise ``slot_s`` must be a whole multiple of ``step_s`` and ``outputs.chunk_steps`` a
multiple of ``slot_s / step_s``, so that chunk boundaries fall on slot starts and a chunked run
equals an unchunked one.

Every error is a :class:`ScenarioError` whose one-line message names the file and the path in
it, e.g. ``scenario.yaml: faults.jammers[2].eirp_dbw: must be a number``.
"""

from __future__ import annotations

import copy
import difflib
import functools
import hashlib
import json
import typing
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import shapely
import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from ._common import FrozenModel, as_utc, sha256_file
from .faults import Faults
from .ground_gen import (
    TerminalGenerator,
    generate_terminals,
    generate_tracks,
    oblast_codes,
    resolve,
)

__all__ = ["Scenario", "ScenarioError", "ScenarioSpec", "load_scenario", "scenario_json_schema"]

BUNDLED = "bundled"


class ScenarioError(ValueError):
    """A scenario file failed validation. ``path``: the scenario file; ``location``: the dotted
    path in it (``faults.jammers[2].eirp_dbw``; ``""`` for the whole document); ``errors``: every
    ``(location, message)`` found (the message shows the first and counts the rest)."""

    def __init__(self, path: Path | str, location: str, message: str,
                 errors: list[tuple[str, str]] | None = None):
        self.path = Path(path)
        self.location = location
        self.errors = errors or [(location, message)]
        text = f"{path}: {location + ': ' if location else ''}{message}"
        if len(self.errors) > 1:
            more = "; ".join(f"{loc}: {msg}" for loc, msg in self.errors[1:4])
            extra = f" …and {len(self.errors) - 4} more" if len(self.errors) > 4 else ""
            text += f" (also {more}{extra})"
        super().__init__(" ".join(text.split()))  # always one line


_utc = as_utc
_Model = FrozenModel


# ----------------------------------------------------------------------------- sections


class TimeSpec(_Model):
    """UTC window ``[start, stop]`` (stop included when on a step), step and network slot."""

    start: datetime
    stop: datetime
    step_s: float = Field(gt=0)
    slot_s: float = Field(15.0, gt=0, description="network scheduling slot, seconds")

    @field_validator("start", "stop")
    @classmethod
    def _to_utc(cls, v):
        return _utc(v)

    @model_validator(mode="after")
    def _check(self):
        if self.stop <= self.start:
            raise ValueError("stop must be after start")
        if self.step_s < self.slot_s:
            ratio = self.slot_s / self.step_s
            if abs(ratio - round(ratio)) > 1e-9:
                raise ValueError(f"slot_s ({self.slot_s:g}) must be a whole multiple of step_s "
                                 f"({self.step_s:g}) when step_s < slot_s")
        return self

    @property
    def steps_per_slot(self) -> int:
        return max(1, int(round(self.slot_s / self.step_s)))


class ShellSpec(_Model):
    altitude_km: float = Field(gt=0)
    inclination_deg: float = Field(ge=0, le=180)
    planes: int = Field(ge=1)
    sats_per_plane: int = Field(ge=1)
    phasing: int = Field(0, ge=0)
    raan0_deg: float = 0.0
    name: str | None = None

    @model_validator(mode="after")
    def _phasing(self):
        if self.phasing >= self.planes:
            raise ValueError(f"phasing must be in 0..planes-1 ({self.planes - 1})")
        return self


_SOURCES = ("tle", "omm", "starlink_gen1", "starlink_2022", "shells")


class ConstellationSpec(_Model):
    """Exactly one source; ``include``/``exclude`` (name patterns) only with ``tle``/``omm``."""

    tle: list[str] | None = Field(None, min_length=1)
    omm: str | None = None
    include: list[str] | None = None
    exclude: list[str] | None = None
    starlink_gen1: Literal[True] | None = None
    starlink_2022: Literal[True] | None = None
    shells: list[ShellSpec] | None = Field(None, min_length=1)

    @field_validator("tle", "include", "exclude", mode="before")
    @classmethod
    def _listify(cls, v):
        return [v] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _one_source(self):
        given = [s for s in _SOURCES if getattr(self, s) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one constellation source of {', '.join(_SOURCES)}; "
                             f"got {', '.join(given) if given else 'none'}")
        if (self.include is not None or self.exclude is not None) and given[0] not in (
                "tle", "omm"):
            raise ValueError("include/exclude apply only to tle or omm")
        return self


class TerminalsSpec(_Model):
    file: str | None = None
    generate: list[TerminalGenerator] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _one_source(self):
        if (self.file is None) == (self.generate is None):
            raise ValueError("give exactly one of file or generate")
        return self


class GroundSpec(_Model):
    terminals: TerminalsSpec
    tracks: str | None = None
    gateways: str = BUNDLED
    pops: str = BUNDLED


class PolicyVersionSpec(_Model):
    file: str
    recorded_at: datetime
    author: str = Field(min_length=1)
    reason: str = Field(min_length=1)

    @field_validator("recorded_at")
    @classmethod
    def _to_utc(cls, v):
        return _utc(v)


class PolicySpec(_Model):
    file: str | None = None
    versions: list[PolicyVersionSpec] | None = Field(None, min_length=1)
    as_of: datetime | None = None
    terminals_from_ground: bool = True

    @field_validator("as_of")
    @classmethod
    def _to_utc(cls, v):
        return _utc(v)

    @model_validator(mode="after")
    def _one_source(self):
        if (self.file is None) == (self.versions is None):
            raise ValueError("give exactly one of file or versions")
        if self.versions:
            for a, b in zip(self.versions, self.versions[1:], strict=False):
                if b.recorded_at < a.recorded_at:
                    raise ValueError("versions must be in recorded_at order")
        return self


class NetworkSpec(_Model):
    """Fields of :class:`leotwin.routing.network.NetworkConfig` (``slot_s`` is ``time.slot_s``);
    ``null`` means the value in ``leotwin.DEFAULTS``."""

    mode: Literal["isl", "bent_pipe"] = "isl"
    policy: Literal["max_elevation", "least_loaded"] = "max_elevation"
    terminal_min_elevation_deg: float | None = Field(None, ge=0, le=90)
    capacity: bool = True
    capacity_policy: Literal["greedy", "proportional"] = "greedy"
    beams_per_satellite: int | None = Field(None, ge=1)
    beam_capacity_mbps: float | None = Field(None, gt=0)


class OutputsSpec(_Model):
    chunk_steps: int = Field(240, ge=1, description="time steps per output chunk")
    report: bool = True
    partition_terminals: int | None = Field(
        None, ge=1, description="compute each chunk in partitions of at most this many "
        "terminals (separate Dask tasks; the same files as whole chunks); overridden by "
        "LEOTWIN_PARTITION_TERMINALS and by leotwin run --partition-terminals. Not part of "
        "the scenario hash: a run can be resumed with another setting")


class ScenarioSpec(_Model):
    """The validated scenario document (see the module docstring for the layout)."""

    name: str = Field(min_length=1)
    description: str = ""
    time: TimeSpec
    constellation: ConstellationSpec
    ground: GroundSpec
    policy: PolicySpec | None = None
    faults: Faults | None = None
    network: NetworkSpec = NetworkSpec()
    outputs: OutputsSpec = OutputsSpec()

    @model_validator(mode="after")
    def _chunks(self):
        k = self.time.steps_per_slot if self.time.step_s < self.time.slot_s else 1
        if self.outputs.chunk_steps % k:
            raise _LocatedError(("outputs", "chunk_steps"),
                                f"must be a multiple of slot_s/step_s = {k} so that chunks "
                                f"start on slot boundaries")
        return self


class _LocatedError(ValueError):
    """A model-level check that knows the field it is about."""

    def __init__(self, loc: tuple, message: str):
        super().__init__(message)
        self.loc = loc
        self.message = message


def scenario_json_schema() -> dict:
    """JSON Schema of the scenario document."""
    schema = ScenarioSpec.model_json_schema()
    schema["title"] = "leotwin scenario"
    return schema


# ----------------------------------------------------------------------------- errors


def _loc_text(loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _fields_at(loc) -> list[str] | None:
    """Allowed keys of the model at ``loc`` (best effort, for 'did you mean')."""
    model: Any = ScenarioSpec
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        info = model.model_fields.get(part)
        if info is None:
            return None
        model = _model_in(info.annotation)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return None


def _model_in(annotation) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


_MESSAGES = {
    "float_parsing": "must be a number", "float_type": "must be a number",
    "int_parsing": "must be a whole number", "int_type": "must be a whole number",
    "int_from_float": "must be a whole number", "bool_parsing": "must be true or false",
    "bool_type": "must be true or false", "string_type": "must be text",
    "list_type": "must be a list", "model_type": "must be a mapping of keys to values",
    "dict_type": "must be a mapping of keys to values", "missing": "required key is missing",
    "datetime_parsing": "must be a UTC time such as 2022-10-01T00:00:00Z",
    "datetime_type": "must be a UTC time such as 2022-10-01T00:00:00Z",
    "datetime_from_date_parsing": "must be a UTC time such as 2022-10-01T00:00:00Z",
}


def _message(err: dict) -> tuple[tuple, str]:
    loc = tuple(err["loc"])
    kind = err["type"]
    inner = (err.get("ctx") or {}).get("error")
    if isinstance(inner, _LocatedError):
        return inner.loc, inner.message
    if kind == "extra_forbidden":
        key = str(loc[-1])
        allowed = _fields_at(loc[:-1])
        hint = ""
        if allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = (f" (did you mean {close[0]!r}?)" if close else "") + \
                f"; allowed: {', '.join(allowed)}"
        return loc, f"unknown key{hint}"
    if kind in _MESSAGES:
        return loc, _MESSAGES[kind]
    msg = err["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        msg = msg.replace("Input should be", "must be")
    return loc, msg


def _validation_error(path, exc: ValidationError) -> ScenarioError:
    errors = []
    for err in exc.errors():
        loc, msg = _message(err)
        errors.append((_loc_text(loc), msg))
    first_loc, first_msg = errors[0]
    return ScenarioError(path, first_loc, first_msg, errors)


# ----------------------------------------------------------------------------- loading


def _read_yaml(path: Path, label: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError(label, "", "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(label, "", f"cannot read the file ({exc})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ScenarioError(label, "", f"{where}not valid YAML ({problem})") from None


def _referenced_files(spec: ScenarioSpec) -> list[tuple[str, str]]:
    """(location, path as written) of every file the scenario names."""
    refs: list[tuple[str, str]] = []
    c = spec.constellation
    for i, p in enumerate(c.tle or []):
        refs.append((f"constellation.tle[{i}]", p))
    if c.omm is not None:
        refs.append(("constellation.omm", c.omm))
    g = spec.ground
    if g.terminals.file is not None:
        refs.append(("ground.terminals.file", g.terminals.file))
    for i, gen in enumerate(g.terminals.generate or []):
        where = f"ground.terminals.generate[{i}]"
        if gen.within.geojson is not None:
            refs.append((f"{where}.within.geojson", gen.within.geojson))
        for j, p in enumerate(gen.within.exclude):
            refs.append((f"{where}.within.exclude[{j}]", p))
        if gen.near is not None:
            refs.append((f"{where}.near.geojson", gen.near.geojson))
    if g.tracks is not None:
        refs.append(("ground.tracks", g.tracks))
    for name in ("gateways", "pops"):
        if getattr(g, name) != BUNDLED:
            refs.append((f"ground.{name}", getattr(g, name)))
    if spec.policy is not None:
        if spec.policy.file is not None:
            refs.append(("policy.file", spec.policy.file))
        for i, v in enumerate(spec.policy.versions or []):
            refs.append((f"policy.versions[{i}].file", v.file))
    return refs


def _validate(doc: Any, label: str, source: Path) -> ScenarioSpec:
    if not isinstance(doc, dict):
        got = "an empty file" if doc is None else type(doc).__name__
        raise ScenarioError(label, "", f"expected a mapping of sections (name, time, "
                                       f"constellation, ground, ...), got {got}")
    try:
        spec = ScenarioSpec.model_validate(doc)
    except ValidationError as exc:
        raise _validation_error(label, exc) from None
    base = source.parent
    for loc, p in _referenced_files(spec):
        full = resolve(p, base)
        if not full.is_file():
            raise ScenarioError(label, loc, f"file not found: {full} (paths are relative to the "
                                            f"scenario file's directory)")
    known = set(oblast_codes())
    for i, gen in enumerate(spec.ground.terminals.generate or []):
        for j, code in enumerate(gen.within.oblasts or []):
            if code not in known:
                raise ScenarioError(label, f"ground.terminals.generate[{i}].within.oblasts[{j}]",
                                    f"unknown oblast {code!r}; expected an ISO 3166-2 code of "
                                    f"the bundled oblasts such as 'UA-63'")
    return spec


def load_scenario(path: str | Path, overrides: dict | None = None) -> Scenario:
    """Read and validate a scenario YAML file; raise :class:`ScenarioError` on the first
    problem (all pydantic errors are listed in ``errors``). ``overrides`` is merged into the
    document before validation, key by key (e.g. ``{"time": {"stop": "2022-10-01T01:00Z"}}``);
    a list or scalar replaces the value and None removes the key (e.g. to switch the
    constellation source: ``{"constellation": {"starlink_2022": None, "starlink_gen1":
    True}}``)."""
    label = str(path)
    source = Path(path).expanduser().resolve()
    doc = _read_yaml(source, label)
    if overrides:
        doc = _merge(doc if isinstance(doc, dict) else {}, overrides)
    spec = _validate(doc, label, source)
    return Scenario(spec=spec, source_path=source, label=label, document=doc)


def _merge(doc: dict, overrides: dict) -> dict:
    out = copy.deepcopy(doc)
    for key, value in overrides.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# ----------------------------------------------------------------------------- policy files


def _read_policy_doc(path: Path, label: str, loc: str) -> dict:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ScenarioError(label, loc, f"{path}: cannot read the policy file ({exc})") from None
    if not isinstance(doc, dict):
        raise ScenarioError(label, loc, f"{path}: expected a mapping (a Policy document)")
    return doc


def _policy_refs(doc: dict) -> list[tuple[str, str]]:
    """(path in the policy document, referenced file) of every ``{"$ref": ...}`` geometry."""
    refs = []
    for key, attr in (("geofences", "geometry"), ("contracts", "covered_area")):
        for k, item in enumerate(doc.get(key) or []):
            value = item.get(attr) if isinstance(item, dict) else None
            if isinstance(value, dict) and "$ref" in value:
                refs.append((f"{key}[{k}].{attr}", str(value["$ref"])))
    return refs


@functools.cache
def _ref_geometry(path: str) -> dict:
    """GeoJSON geometry dict of the union of a file's polygonal features (validated)."""
    from .policy.geofence import parse_geometry, read_zones

    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    for k, feat in enumerate(doc.get("features") or []):
        if isinstance(feat, dict) and feat.get("id") is None:
            feat["id"] = k
    geoms = [g for _, _, g in read_zones(doc, id_property="\0no-such-property")]
    union = geoms[0] if len(geoms) == 1 else shapely.union_all(geoms)
    geometry = json.loads(shapely.to_geojson(union))
    parse_geometry(geometry, source=path)  # the engine will parse it: fail here, not later
    return geometry


def _load_policy_file(path: Path, label: str, loc: str):
    from .policy.errors import PolicyError
    from .policy.models import Policy

    doc = _read_policy_doc(path, label, loc)
    for where, ref in _policy_refs(doc):
        full = resolve(ref, path.parent)
        if not full.is_file():
            raise ScenarioError(label, loc, f"{path}: {where}.$ref: file not found: {full}")
        try:
            geometry = _ref_geometry(str(full))
        except (PolicyError, ValueError, OSError) as exc:
            raise ScenarioError(label, loc, f"{path}: {where}.$ref: {exc}") from None
        key, rest = where.split("[", 1)
        index, attr = int(rest.split("]")[0]), where.rsplit(".", 1)[1]
        doc[key][index] = {**doc[key][index], attr: geometry}
    try:
        return Policy.model_validate(doc)
    except ValidationError as exc:
        err = exc.errors()[0]
        inner = (err.get("ctx") or {}).get("error")
        if isinstance(inner, PolicyError):
            where = inner.field or ""
            if inner.feature is not None:
                head, _, tail = where.partition(".")
                where = f"{head}[{inner.feature}]" + (f".{tail}" if tail else "")
            raise ScenarioError(label, loc, f"{path}: {where}: {inner.message}") from None
        loc_in, msg = _message(err)
        raise ScenarioError(label, loc, f"{path}: {_loc_text(loc_in)}: {msg}") from None


def _with_ground_terminals(policy, ground, label: str, loc: str):
    """``policy`` with the ground's terminals appended (those it does not list)."""
    from .policy.models import Terminal

    known = {t.id for t in policy.terminals}
    accounts = {a.id for a in policy.accounts}
    plans = {p.name for p in policy.plans}
    t = ground.terminals
    plan_col = t["plan"] if "plan" in t.columns else pd.Series([None] * len(t))
    added = []
    for tid, acc, kind, plan, lat, lon in zip(t["terminal"], t["account"], t["kind"], plan_col,
                                              t["lat_deg"], t["lon_deg"], strict=True):
        if tid in known:
            continue
        if acc not in accounts:
            raise ScenarioError(label, loc, f"terminal {tid!r} belongs to account {acc!r}, which "
                                            f"the policy does not define; add it to accounts")
        plan = None if plan is None or (isinstance(plan, float) and np.isnan(plan)) else str(plan)
        if plan is not None and plan not in plans:
            raise ScenarioError(label, loc, f"terminal {tid!r} has plan {plan!r}, which the "
                                            f"policy does not define; add it to plans")
        added.append(Terminal.model_construct(
            id=str(tid), account=str(acc), serial="", kind=str(kind), status="active",
            plan=plan, registered=True, lat_deg=float(lat), lon_deg=float(lon)))
    if not added:
        return policy
    return policy.model_copy(update={"terminals": [*policy.terminals, *added]})


# ----------------------------------------------------------------------------- the scenario


_sha256_file = sha256_file


@dataclass(frozen=True, eq=False)
class Scenario:
    """A validated scenario: the document (``spec``) plus where it came from. Build it with
    :func:`load_scenario`; every path resolves against ``source_path.parent``."""

    spec: ScenarioSpec
    source_path: Path
    label: str = ""
    document: Any = None
    _cache: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_document(cls, document: dict, source_path: str | Path) -> Scenario:
        """The scenario a whole ``document`` (:attr:`document`) describes, its paths
        resolving against ``source_path``'s folder as if it were that file's content (how a
        run's worker gets exactly the caller's scenario, overrides included)."""
        source = Path(source_path).expanduser().resolve()
        return cls(spec=_validate(document, str(source_path), source), source_path=source,
                   label=str(source_path), document=document)

    # -- plain values
    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def base_dir(self) -> Path:
        return self.source_path.parent

    @property
    def chunk_steps(self) -> int:
        return self.spec.outputs.chunk_steps

    @property
    def report(self) -> bool:
        return self.spec.outputs.report

    @property
    def partition_terminals(self) -> int | None:
        return self.spec.outputs.partition_terminals

    def path(self, value: str) -> Path:
        """A path as written in the scenario, resolved against its directory."""
        return resolve(value, self.base_dir)

    def override(self, overrides: dict) -> Scenario:
        """A new scenario with ``overrides`` merged into the document and validated again
        (as in :func:`load_scenario`: None removes a key)."""
        doc = _merge(self.document if isinstance(self.document, dict) else
                     self.spec.model_dump(mode="json", exclude_none=True), overrides)
        spec = _validate(doc, self.label or str(self.source_path), self.source_path)
        return Scenario(spec=spec, source_path=self.source_path, label=self.label, document=doc)

    def times(self) -> np.ndarray:
        """The run's UTC grid, ``datetime64[ns]``."""
        from .timescale import time_grid

        t = self.spec.time
        return time_grid(t.start, t.stop, t.step_s)

    def positions(self, times=None, constellation=None):
        """:func:`leotwin.propagate` of ``constellation`` (default: :meth:`constellation`) at
        ``times`` (default: :meth:`times`), the way every run of this scenario propagates:
        with steps finer than ``propagation_node_step_s`` (defaults table), SGP4 runs on that
        node grid and is interpolated in between
        (:func:`~leotwin.orbits.propagate.sgp4_hermite`, within 1.3 m of SGP4)."""
        from .defaults import default
        from .orbits.propagate import propagate

        node_s = default("propagation_node_step_s")
        return propagate(self.constellation() if constellation is None else constellation,
                         self.times() if times is None else times,
                         node_step_s=node_s if self.spec.time.step_s < node_s else None)

    # -- building blocks
    def constellation(self):
        """A :class:`leotwin.Constellation` from the one configured source."""
        from .orbits.catalog import NON_SATELLITE_PATTERNS, load_omm, load_tle, starlink_2022
        from .orbits.shells import starlink_gen1, walker_shell

        c = self.spec.constellation
        exclude = NON_SATELLITE_PATTERNS if c.exclude is None else c.exclude
        if c.tle is not None:
            return load_tle([self.path(p) for p in c.tle], include=c.include, exclude=exclude)
        if c.omm is not None:
            return load_omm(self.path(c.omm), include=c.include, exclude=exclude)
        epoch = np.datetime64(self.spec.time.start.replace(tzinfo=None), "ns")
        if c.starlink_gen1:
            return starlink_gen1(epoch)
        if c.starlink_2022:
            return starlink_2022()
        out, first = None, 1
        for s in c.shells:
            part = walker_shell(altitude_km=s.altitude_km, inclination_deg=s.inclination_deg,
                                planes=s.planes, sats_per_plane=s.sats_per_plane,
                                phasing=s.phasing, epoch=epoch, raan0_deg=s.raan0_deg,
                                name=s.name, first_satnum=first)
            first += s.planes * s.sats_per_plane
            out = part if out is None else out + part
        return out

    def terminals_table(self) -> pd.DataFrame:
        """The raw terminal table (file or generated), before :meth:`Ground.load` checks."""
        from .ground import load_terminals

        spec = self.spec.ground.terminals
        if spec.file is not None:
            return load_terminals(self.path(spec.file))
        tables = [generate_terminals(g, base_dir=self.base_dir) for g in spec.generate]
        table = pd.concat(tables, ignore_index=True)
        dup = table["terminal"].duplicated()
        if dup.any():
            raise ScenarioError(self.label, "ground.terminals.generate",
                                f"two generators make terminal {table['terminal'][dup].iloc[0]!r}"
                                f"; give each a distinct prefix")
        return table

    def ground(self):
        """The ground segment (:class:`leotwin.Ground`), generated terminals and their tracks
        included; cached, and deterministic given the generators' seeds."""
        if "ground" in self._cache:
            return self._cache["ground"]
        from .ground import Ground, load_tracks

        g = self.spec.ground
        terminals = self.terminals_table()
        tracks = [load_tracks(self.path(g.tracks))] if g.tracks is not None else []
        t = self.spec.time
        for k, gen in enumerate(g.terminals.generate or []):
            own = terminals[terminals["terminal"].str.startswith(f"{gen.prefix}-")]
            tr = generate_tracks(own, t.start.replace(tzinfo=None), t.stop.replace(tzinfo=None),
                                 gen.speed_kmh, seed=gen.seed + 1_000_003 * (k + 1),
                                 leg_km=gen.leg_km, within=gen.within, base_dir=self.base_dir)
            # terminals that fit no leg inside their area stay put: mark them fixed
            terminals.loc[terminals["terminal"].isin(tr.attrs["stationary"]), "kind"] = "fixed"
            if len(tr):
                tracks.append(tr)
        ground = Ground.load(
            terminals,
            gateways=None if g.gateways == BUNDLED else self.path(g.gateways),
            pops=None if g.pops == BUNDLED else self.path(g.pops),
            tracks=pd.concat(tracks, ignore_index=True) if tracks else None)
        self._cache["ground"] = ground
        return ground

    def policy(self):
        """``Policy`` (``policy.file``), ``PolicyHistory`` (``policy.versions``) or ``None``;
        cached. With ``terminals_from_ground`` every version also lists the ground terminals."""
        if "policy" in self._cache:
            return self._cache["policy"]
        from .policy.models import PolicyHistory, PolicyVersion

        p = self.spec.policy
        label = self.label or str(self.source_path)
        result = None
        if p is not None:
            ground = self.ground() if p.terminals_from_ground else None
            if p.file is not None:
                result = _load_policy_file(self.path(p.file), label, "policy.file")
                if ground is not None:
                    result = _with_ground_terminals(result, ground, label, "policy.file")
            else:
                versions = []
                for i, v in enumerate(p.versions):
                    loc = f"policy.versions[{i}].file"
                    pol = _load_policy_file(self.path(v.file), label, loc)
                    if ground is not None:
                        pol = _with_ground_terminals(pol, ground, label, loc)
                    versions.append(PolicyVersion(version=i + 1, recorded_at=v.recorded_at,
                                                  author=v.author, reason=v.reason, policy=pol))
                result = PolicyHistory(versions=versions)
        self._cache["policy"] = result
        return result

    def as_of(self) -> datetime | None:
        return None if self.spec.policy is None else self.spec.policy.as_of

    def faults(self) -> Faults | None:
        return self.spec.faults

    def network_config(self):
        from .routing.network import NetworkConfig

        n = self.spec.network
        return NetworkConfig(mode=n.mode, policy=n.policy,
                             terminal_min_elevation_deg=n.terminal_min_elevation_deg,
                             slot_s=self.spec.time.slot_s, capacity=n.capacity,
                             capacity_policy=n.capacity_policy,
                             beams_per_satellite=n.beams_per_satellite,
                             beam_capacity_mbps=n.beam_capacity_mbps)

    # -- identity
    def referenced_files(self) -> list[tuple[str, Path]]:
        """(location, resolved path) of every input file, bundled data included, in a fixed
        order; policy files' ``$ref`` geometries are listed after their policy file."""
        from importlib import resources

        from .orbits.catalog import BUNDLED_TLE, bundled_tle_path

        files = [(loc, self.path(p)) for loc, p in _referenced_files(self.spec)]
        out = []
        for loc, path in files:
            out.append((loc, path))
            if loc.startswith("policy."):
                doc = _read_policy_doc(path, self.label, loc)
                out += [(f"{loc}:{where}.$ref", resolve(ref, path.parent))
                        for where, ref in _policy_refs(doc)]
        data = Path(str(resources.files("leotwin.data")))
        if self.spec.constellation.starlink_2022:
            out += [(f"bundled:{k}", bundled_tle_path(k)) for k in BUNDLED_TLE]
        if self.spec.constellation.starlink_gen1:
            out.append(("bundled:starlink-gen1", data / "starlink-gen1.csv"))
        if self.spec.ground.gateways == BUNDLED:
            out.append(("bundled:gateways", data / "ground" / "gateways.csv"))
        if self.spec.ground.pops == BUNDLED or self.spec.ground.gateways == BUNDLED:
            out.append(("bundled:pops", data / "ground" / "pops.csv"))
        if any(g.within.oblasts for g in self.spec.ground.terminals.generate or []):
            out.append(("bundled:oblasts", data / "borders" / "ukraine_oblasts.geojson"))
        return out

    def assumptions(self) -> list[dict]:
        """Lines labelled "assumption" in the scenario file and the files it references
        (``file``, ``line``, ``assumption``), for reports."""
        out = []
        files = [("scenario", self.source_path)] + [
            (loc, p) for loc, p in self.referenced_files()
            if p.suffix.lower() in (".yaml", ".yml")]
        seen = set()
        for _, path in files:
            if path in seen or not path.exists():
                continue
            seen.add(path)
            for k, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                if "assumption" in line.lower():
                    out.append({"file": path.name, "line": k, "assumption": line.strip()})
        return out

    def scenario_hash(self) -> str:
        """sha256 over the canonical JSON of the validated document and the sha256 of every
        referenced file (:meth:`referenced_files`). Equal hashes: the same run inputs.
        ``outputs.partition_terminals`` is left out: it changes how chunks are computed, not
        what they hold."""
        spec = self.spec.model_dump(mode="json", exclude={"outputs": {"partition_terminals"}})
        canonical = json.dumps(spec, sort_keys=True,
                               separators=(",", ":"), ensure_ascii=True)
        h = hashlib.sha256(canonical.encode("utf-8"))
        for loc, path in self.referenced_files():
            h.update(f"\n{loc}={_sha256_file(path)}".encode())
        return h.hexdigest()
