"""Control-plane domain: pydantic models, validated, with JSON Schema.

Ids are strings; countries are ISO 3166-1 alpha-3 codes as in Natural Earth's ``adm0_a3``
("UKR", "POL"). Times are timezone-aware or naive-UTC datetimes; a validity window is
``[valid_from, valid_to)`` and an open end means "unbounded".
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from .._common import FrozenModel, as_utc
from .errors import PolicyError

TerminalKind = Literal["fixed", "in_motion"]
TerminalStatus = Literal["active", "suspended", "standby"]
Action = Literal["deny", "allow", "throttle"]
Country = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 3166-1 alpha-3")]


_utc = as_utc
_Model = FrozenModel


class Window(_Model):
    """``[valid_from, valid_to)`` in UTC; ``None`` ends are open."""

    valid_from: datetime | None = None
    valid_to: datetime | None = None

    @field_validator("valid_from", "valid_to")
    @classmethod
    def _to_utc(cls, v):
        return _utc(v)

    @model_validator(mode="after")
    def _ordered(self):
        if self.valid_from and self.valid_to and self.valid_to <= self.valid_from:
            raise ValueError("valid_to must be after valid_from")
        return self


class Account(_Model):
    id: str = Field(min_length=1)
    name: str = ""
    country: Country
    registration_required: bool = Field(
        False, description="whitelist mode for this account: only registered terminals")


class Terminal(_Model):
    id: str = Field(min_length=1)
    account: str
    serial: str = ""
    kind: TerminalKind = "fixed"
    status: TerminalStatus = "active"
    plan: str | None = None
    registered: bool = True
    lat_deg: float | None = Field(None, ge=-90, le=90, description="service address")
    lon_deg: float | None = Field(None, ge=-180, le=180, description="service address")


class ServicePlan(_Model):
    name: str = Field(min_length=1)
    priority_quota_gb_month: float = Field(ge=0)
    min_mbps: float = Field(ge=0)
    max_mbps: float = Field(gt=0)
    fallback_mbps: float = Field(1.0, ge=0, description="rate once the priority quota is spent")
    mobility_allowed: bool = False
    price_per_month: float = Field(0.0, ge=0)
    price_per_gb: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _rates(self):
        if self.min_mbps > self.max_mbps:
            raise ValueError("min_mbps must not exceed max_mbps")
        return self


class ServiceArea(_Model):
    """Countries where service is licensed."""

    id: str = Field(min_length=1)
    countries: list[Country] = Field(min_length=1)


class Scope(_Model):
    """Who a geofence applies to; ``None`` in a field means everyone."""

    accounts: list[str] | None = None
    plans: list[str] | None = None
    terminal_kinds: list[TerminalKind] | None = None

    @property
    def specificity(self) -> int:
        """Accounts weigh most, then plans, then terminal kinds (see the precedence table)."""
        return (4 * (self.accounts is not None) + 2 * (self.plans is not None)
                + (self.terminal_kinds is not None))


class Geofence(Window):
    id: str = Field(min_length=1)
    geometry: dict
    action: Action
    max_mbps: float | None = Field(None, ge=0)
    scope: Scope = Scope()
    reason: str = ""
    author: str = ""
    override_contracts: bool = Field(
        False, description="set only when an approver allowed it to cut contracted service")

    @model_validator(mode="after")
    def _throttle_rate(self):
        if self.action == "throttle" and self.max_mbps is None:
            raise ValueError("a throttle geofence needs max_mbps")
        return self


class RegistrationRule(_Model):
    """Whitelist mode: in these countries / for these accounts only registered terminals."""

    id: str = Field(min_length=1)
    countries: list[Country] | None = None
    accounts: list[str] | None = None


class RoamingRule(_Model):
    id: str = Field(min_length=1)
    max_days_per_year: int = Field(ge=0)


class MotionRule(_Model):
    id: str = Field(min_length=1)
    speed_threshold_kmh: float = Field(10.0, ge=0)
    max_speed_kmh: float = Field(1000.0, gt=0)


class Contract(_Model):
    id: str = Field(min_length=1)
    account: str
    committed_availability_pct: float = Field(gt=0, le=100)
    covered_area: dict
    term_start: datetime
    term_end: datetime
    price: float = Field(0.0, ge=0)
    credit_per_breach_hour: float = Field(0.0, ge=0)

    @field_validator("term_start", "term_end")
    @classmethod
    def _to_utc(cls, v):
        return _utc(v)


class Policy(_Model):
    """Everything the decision engine needs, cross-checked on construction."""

    accounts: list[Account] = []
    terminals: list[Terminal] = []
    plans: list[ServicePlan] = []
    service_areas: list[ServiceArea] = []
    geofences: list[Geofence] = []
    contracts: list[Contract] = []
    registration_rules: list[RegistrationRule] = []
    roaming_rules: list[RoamingRule] = []
    motion_rules: list[MotionRule] = []

    @model_validator(mode="after")
    def _references(self):
        accounts = {a.id for a in self.accounts}
        plans = {p.name for p in self.plans}
        for field, items, key in (("accounts", self.accounts, "id"),
                                  ("terminals", self.terminals, "id"),
                                  ("plans", self.plans, "name"),
                                  ("geofences", self.geofences, "id"),
                                  ("contracts", self.contracts, "id")):
            seen: set[str] = set()
            for k, item in enumerate(items):
                v = getattr(item, key)
                if v in seen:
                    raise PolicyError(f"duplicate {key} {v!r}", source="policy", feature=k,
                                      field=f"{field}.{key}")
                seen.add(v)
        for k, t in enumerate(self.terminals):
            if t.account not in accounts:
                raise PolicyError(f"unknown account {t.account!r}", source="policy", feature=k,
                                  field="terminals.account")
            if t.plan is not None and t.plan not in plans:
                raise PolicyError(f"unknown plan {t.plan!r}", source="policy", feature=k,
                                  field="terminals.plan")
        for k, c in enumerate(self.contracts):
            if c.account not in accounts:
                raise PolicyError(f"unknown account {c.account!r}", source="policy", feature=k,
                                  field="contracts.account")
        for k, g in enumerate(self.geofences):
            for a in g.scope.accounts or []:
                if a not in accounts:
                    raise PolicyError(f"unknown account {a!r}", source="policy", feature=k,
                                      field="geofences.scope.accounts")
            for p in g.scope.plans or []:
                if p not in plans:
                    raise PolicyError(f"unknown plan {p!r}", source="policy", feature=k,
                                      field="geofences.scope.plans")
        return self

    def to_json(self) -> str:
        return self.model_dump_json(indent=1)


class PolicyVersion(_Model):
    """One recorded state of the policy: what the operator's system knew from ``recorded_at``."""

    version: int = Field(ge=1)
    recorded_at: datetime
    author: str
    reason: str
    policy: Policy

    @field_validator("recorded_at")
    @classmethod
    def _to_utc(cls, v):
        return _utc(v)


class PolicyHistory(_Model):
    """Policy versions in record time; ``at(as_of)`` is the version known at ``as_of``."""

    versions: list[PolicyVersion] = Field(min_length=1)

    @model_validator(mode="after")
    def _ordered(self):
        for a, b in zip(self.versions, self.versions[1:], strict=False):
            if b.recorded_at < a.recorded_at or b.version != a.version + 1:
                raise ValueError("versions must be numbered 1, 2, ... in recorded_at order")
        return self

    def at(self, as_of: datetime | None = None) -> PolicyVersion:
        if as_of is None:
            return self.versions[-1]
        as_of = _utc(as_of)
        known = [v for v in self.versions if v.recorded_at <= as_of]
        if not known:
            raise PolicyError(f"no policy version recorded at or before {as_of.isoformat()}",
                              source="history", field="as_of")
        return known[-1]

    def record(self, policy: Policy, *, author: str, reason: str,
               recorded_at: datetime) -> PolicyHistory:
        """A new history with ``policy`` appended as the next version."""
        nxt = PolicyVersion(version=self.versions[-1].version + 1, recorded_at=recorded_at,
                            author=author, reason=reason, policy=policy)
        return PolicyHistory(versions=[*self.versions, nxt])


def json_schemas() -> dict[str, dict]:
    """JSON Schema of every model (exported for clients and the REST service)."""
    models = (Account, Terminal, ServicePlan, ServiceArea, Geofence, Contract, RegistrationRule,
              RoamingRule, MotionRule, Policy, PolicyVersion, PolicyHistory)
    return {m.__name__: m.model_json_schema() for m in models}


def load_policy(source) -> Policy:
    """A :class:`Policy` from a JSON file path, JSON text or a dict; errors name the field."""
    from pathlib import Path

    from pydantic import ValidationError

    label = "<policy>"
    if isinstance(source, Path) or (isinstance(source, str) and not source.lstrip().startswith(
            "{")):
        label = str(source)
        try:
            source = Path(source).read_text(encoding="utf-8")
        except OSError as exc:
            raise PolicyError(f"cannot read: {exc.strerror}", source=label) from None
    if isinstance(source, str):
        try:
            source = json.loads(source)
        except json.JSONDecodeError as exc:
            raise PolicyError(f"invalid JSON at line {exc.lineno}: {exc.msg}",
                              source=label) from None
    try:
        return Policy.model_validate(source)
    except ValidationError as exc:
        err = exc.errors()[0]
        inner = (err.get("ctx") or {}).get("error")
        if isinstance(inner, PolicyError):  # a cross-reference check: keep its record and field
            raise PolicyError(inner.message, source=label, feature=inner.feature,
                              field=inner.field) from None
        loc = [str(x) for x in err["loc"]]
        index = next((int(x) for x in loc if x.isdigit()), None)
        field = ".".join(x for x in loc if not x.isdigit())
        raise PolicyError(err["msg"], source=label, feature=index, field=field) from None
