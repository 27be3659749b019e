"""Request and response schemas: Create / Update / Public per resource.

Create schemas subclass the control plane's own models (:mod:`leotwin.policy.models`), so a
terminal, plan, account, contract or geofence is validated by exactly one implementation;
Update schemas list the changeable fields, all optional (a PATCH changes what it names).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from .._common import FrozenModel
from ..policy.models import (
    Account,
    Action,
    Contract,
    Country,
    Scope,
    ServiceArea,
    ServicePlan,
    Terminal,
    TerminalKind,
    TerminalStatus,
)

Role = Literal["admin", "policy_editor", "approver", "auditor", "customer"]
RunStatus = Literal["queued", "running", "done", "failed"]
T = TypeVar("T")
_EARLIEST, _LATEST = datetime(1900, 1, 1), datetime(2200, 1, 1)


def in_time_range(value: datetime | None) -> datetime | None:
    """Times the engine can represent (datetime64[ns]); 1900 … 2200 is plenty."""
    if value is not None and not _EARLIEST <= value.replace(tzinfo=None) <= _LATEST:
        raise ValueError("must be between 1900-01-01 and 2200-01-01")
    return value


Time = Annotated[datetime, AfterValidator(in_time_range)]


class _In(BaseModel):
    """Request bodies: unknown fields are errors."""

    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------- auth and users
class TokenPublic(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="seconds")


class ApiTokenCreate(_In):
    name: str = Field(min_length=1, max_length=200)
    expires_days: int | None = Field(
        90, ge=1, le=365, description="lifetime in days (default 90, at most 365; null: 90)")


class ApiTokenPublic(BaseModel):
    id: int
    name: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None = None
    user: str | None = None


class ApiTokenCreated(ApiTokenPublic):
    token: str = Field(description="shown once; the store keeps only its hash")


class UserPublic(BaseModel):
    name: str
    role: Role
    account: str | None = None
    disabled: bool = False


class UserUpdate(_In):
    """An admin's change of a user: role, account (customers), disabled."""

    role: Role | None = None
    account: str | None = Field(None, min_length=1, max_length=200)
    disabled: bool | None = None
    reason: str = Field("", max_length=2000)


class UserCreate(_In):
    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.@-]+$")
    role: Role
    account: str | None = Field(None, min_length=1, max_length=200)
    password: str | None = Field(None, min_length=8, max_length=1024)


class PasswordUpdate(_In):
    password: str = Field(min_length=8, max_length=1024)
    current_password: str | None = Field(
        None, max_length=1024, description="required when changing one's own password")


# --------------------------------------------------------------------------- policy resources
class AccountCreate(Account):
    pass


class AccountUpdate(_In):
    name: str | None = None
    country: Country | None = None
    registration_required: bool | None = None


class AccountPublic(Account):
    pass


class TerminalCreate(Terminal):
    pass


class TerminalUpdate(_In):
    account: str | None = Field(None, min_length=1)
    serial: str | None = None
    kind: TerminalKind | None = None
    status: TerminalStatus | None = None
    plan: str | None = None
    registered: bool | None = None
    lat_deg: float | None = Field(None, ge=-90, le=90)
    lon_deg: float | None = Field(None, ge=-180, le=180)


class TerminalPublic(Terminal):
    pass


class PlanCreate(ServicePlan):
    pass


class PlanUpdate(_In):
    priority_quota_gb_month: float | None = Field(None, ge=0)
    min_mbps: float | None = Field(None, ge=0)
    max_mbps: float | None = Field(None, gt=0)
    fallback_mbps: float | None = Field(None, ge=0)
    mobility_allowed: bool | None = None
    price_per_month: float | None = Field(None, ge=0)
    price_per_gb: float | None = Field(None, ge=0)


class PlanPublic(ServicePlan):
    pass


class ServiceAreaCreate(ServiceArea):
    pass


class ServiceAreaUpdate(_In):
    countries: list[Country] = Field(min_length=1)


class ContractCreate(Contract):
    @field_validator("term_start", "term_end")
    @classmethod
    def _range(cls, v):
        return in_time_range(v)


class ContractUpdate(_In):
    committed_availability_pct: float | None = Field(None, gt=0, le=100)
    covered_area: dict | None = None
    term_start: Time | None = None
    term_end: Time | None = None
    price: float | None = Field(None, ge=0)
    credit_per_breach_hour: float | None = Field(None, ge=0)


class ContractPublic(Contract):
    pass


# --------------------------------------------------------------------------- GeoJSON
class Feature(BaseModel):
    type: Literal["Feature"] = "Feature"
    id: str | int | None = None
    geometry: dict[str, Any] | None
    properties: dict[str, Any] = Field(default_factory=dict)


class FeatureCollection(BaseModel):
    type: Literal["FeatureCollection"] = "FeatureCollection"
    features: list[Feature] = Field(default_factory=list)


class GeofenceProperties(FrozenModel):
    """The properties of a geofence Feature (its geometry is the Feature's)."""

    id: str = Field(min_length=1, max_length=200)
    action: Action
    max_mbps: float | None = Field(None, ge=0)
    scope: Scope = Scope()
    valid_from: Time | None = None
    valid_to: Time | None = None
    reason: str = ""
    override_contracts: bool = Field(
        False, description="cut contracted service too; a breach then needs an approver")


class GeofenceFeatureIn(_In):
    """A geofence as a GeoJSON Feature (Polygon or MultiPolygon, WGS84 lon/lat)."""

    type: Literal["Feature"]
    geometry: dict[str, Any]
    properties: GeofenceProperties
    id: str | int | None = None
    bbox: list[float] | None = None
    crs: dict[str, Any] | None = None


class GeofenceIn(_In):
    """One geofence of a policy change (the dashboard's editor)."""

    id: str = Field(min_length=1, max_length=200)
    action: Action
    max_mbps: float | None = Field(None, ge=0)
    geometry: dict[str, Any] = Field(description="GeoJSON Polygon/MultiPolygon, WGS84 lon/lat")
    scope: Scope | None = None
    valid_from: Time | None = None
    valid_to: Time | None = None
    reason: str = ""
    override_contracts: bool = False


class PolicyChange(_In):
    add_geofences: list[GeofenceIn] = Field(default_factory=list, max_length=1000)
    remove_geofences: list[str] = Field(default_factory=list, max_length=1000)
    window_start: Time | None = Field(
        None, description="default: the earliest valid_from of the added geofences, or now")
    window_end: Time | None = Field(None, description="default: a week after window_start")
    step_s: float = Field(900.0, ge=60, le=86400)


class PolicyApply(PolicyChange):
    reason: str = Field(min_length=1, max_length=2000)
    approval_id: str | None = Field(
        None, max_length=64, description="the change_id of an approved pending change (the "
        "409 answer's ``change_id``, approved by a second user)")


class ApproveIn(_In):
    reason: str = Field(min_length=1, max_length=2000, description="the approver's own reason")


# --------------------------------------------------------------------------- preview / versions
class PreviewTerminal(BaseModel):
    terminal: str
    account: str
    hours_lost: float
    hours_gained: float


class PreviewAccount(BaseModel):
    account: str
    terminals_affected: int
    hours_lost: float
    hours_gained: float


class PreviewContract(BaseModel):
    contract: str
    account: str
    committed_pct: float
    before_pct: float | None
    after_pct: float | None
    breach: bool
    breach_hours: float
    credit_owed: float


class PreviewWeakened(BaseModel):
    contract: str
    account: str
    change: str


class PreviewPublic(BaseModel):
    window_start: datetime
    window_end: datetime
    terminals_affected: int
    accounts_affected: list[str]
    contracts_affected: list[str]
    terminal_hours_lost: float
    terminal_hours_gained: float
    credits_owed: float
    breach: bool
    terminals: list[PreviewTerminal] = Field(
        description="the terminals whose hours change (lost or gained), most lost first")
    accounts: list[PreviewAccount]
    contracts: list[PreviewContract]
    skipped_terminals: list[str] = Field(default_factory=list,
                                         description="without a service address")
    weakened_contracts: list[PreviewWeakened] = Field(
        default_factory=list, description="contracts the change deletes or weakens (a "
        "lower commitment, a smaller area, a shorter term): each needs an approval")


class PolicyChangePublic(BaseModel):
    """A policy change that needs (or holds) a second user's approval."""

    change_id: str
    author: str
    created_at: datetime
    expires_at: datetime
    base_version: int | None
    reason: str
    preview: PreviewPublic
    status: Literal["pending", "approved", "used", "expired"]
    approver: str | None = None
    approval_reason: str | None = None


class AppliedPublic(BaseModel):
    version: int
    recorded_at: datetime
    author: str
    reason: str
    approver: str | None = None
    preview: PreviewPublic


class ChangeResult(BaseModel, Generic[T]):
    """A change through a resource route: the new policy version and the changed item."""

    version: int
    recorded_at: datetime
    author: str
    reason: str
    approver: str | None = None
    item: T | None = None
    preview: PreviewPublic


class VersionPublic(BaseModel):
    version: int
    recorded_at: datetime
    author: str
    reason: str
    accounts: int
    terminals: int
    geofences: list[str]
    contracts: list[str]


class ImportResult(BaseModel):
    version: int
    recorded_at: datetime
    created: int
    updated: int
    terminals: int
    preview: PreviewPublic


# --------------------------------------------------------------------------- explain / audit
class ExplainPublic(BaseModel):
    terminal: str
    account: str
    at: datetime = Field(description="the decided step (the request's time)")
    as_of: datetime | None
    version: int
    version_recorded_at: datetime
    version_author: str | None = Field(None, description="staff only (omitted for customers)")
    version_reason: str | None = Field(None, description="staff only (omitted for customers)")
    decision: Literal["allow", "throttle", "deny"]
    rule_id: str
    rule_kind: str
    rule_reason: str
    rule_author: str
    max_mbps: float | None = Field(description="null: unlimited")


class AuditEntryPublic(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    entity: str
    entity_id: str
    reason: str
    before_json: str | None
    after_json: str | None
    prev_hash: str
    hash: str


class AuditVerifyPublic(BaseModel):
    ok: bool
    rows: int
    bad_row: int | None
    message: str


# --------------------------------------------------------------------------- runs
class RunCreate(_In):
    scenario: str | None = Field(
        None, description="a bundled scenario name (ukraine-2022-10) or, admin only, the "
                          "absolute path of a scenario file")
    start: Time | None = None
    stop: Time | None = None
    name: str | None = Field(None, max_length=200)
    run_dir: str | None = Field(None, description="admin only: register a finished run "
                                                  "directory instead of running")
    report: bool = Field(False, description="also write the HTML report")


class RunPublic(BaseModel):
    id: int
    name: str
    status: RunStatus
    progress: float = Field(ge=0, le=1)
    chunks_done: int
    chunks_total: int
    created_at: datetime
    created_by: str
    account: str | None = None
    scenario: str | None = None
    start: datetime | None
    stop: datetime | None
    step_s: float | None
    n_terminals: int | None
    error: str | None


class FramesPublic(BaseModel):
    times: list[str]
    terminals: list[str]
    states: list[str]
    codes: list[list[int]]


class AvailabilityPublic(BaseModel):
    times: list[str]
    states: list[str]
    fractions: dict[str, list[float]]


class TimelineStep(BaseModel):
    time: str
    served: bool
    state: str
    cause: str
    rule: str
    dish_state: str
    throughput_mbps: float | None
    rtt_ms: float | None


class OutageInterval(BaseModel):
    terminal: str
    account: str
    start: str
    end: str
    duration_s: float
    cause: str
    rule: str


class TerminalTimeline(BaseModel):
    terminal: str
    account: str
    steps: list[TimelineStep]
    intervals: list[OutageInterval]


class CauseHours(BaseModel):
    cause: str
    terminal_hours: float
    dish_state: str


class AccountCauseHours(BaseModel):
    account: str
    cause: str
    terminal_hours: float


class SummaryPublic(BaseModel):
    run_id: int
    terminals: int
    steps: int
    terminal_hours: float
    served_hours: float
    lost_hours: float
    availability_pct: float | None
    lost_by_cause: list[CauseHours]
    degraded_by_cause: list[CauseHours]
    by_account: list[AccountCauseHours]


class CounterfactualRequest(_In):
    without: list[str] = Field(min_length=1, max_length=100,
                               description="geofence:ID, jammer:ID, failure:SAT, outage:ID")


class RestoredRow(BaseModel):
    key: str
    hours_restored: float
    hours_lost: float


class CounterfactualPublic(BaseModel):
    run_id: int
    without: list[str]
    hours_restored: float
    hours_lost: float
    by_account: list[RestoredRow]
    by_area: list[RestoredRow] = Field(description="H3 resolution-3 cells (hex)")


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    database: str
