"""``/api/policy``: the current policy, its versions and history, preview and apply."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Header

from ...policy.geofence import parse_geometry
from ...policy.models import Geofence, Policy, PolicyVersion
from ...policy.preview import preview_change
from ...store import ApprovalError, User
from ..changes import apply_change, build_policy, check_window, current_or_empty, preview_public
from ..deps import CurrentUser, EditorUser, IntId, StaffUser, StateDep, require_roles, tenant
from ..problems import ERROR_RESPONSES, ErrorItem, ProblemError, not_found, policy_error_item
from ..schemas import (
    AppliedPublic,
    ApproveIn,
    PolicyApply,
    PolicyChange,
    PolicyChangePublic,
    PreviewPublic,
    Time,
    VersionPublic,
)
from ..state import ServiceState

router = APIRouter(prefix="/api/policy", tags=["policy"], responses=ERROR_RESPONSES)


def _version(v: PolicyVersion) -> VersionPublic:
    p = v.policy
    return VersionPublic(version=v.version, recorded_at=v.recorded_at, author=v.author,
                         reason=v.reason, accounts=len(p.accounts), terminals=len(p.terminals),
                         geofences=[g.id for g in p.geofences],
                         contracts=[c.id for c in p.contracts])


def proposed_policy(state: ServiceState, change: PolicyChange, user: User, *,
                    explicit: bool = False
                    ) -> tuple[Policy, int | None, tuple[datetime, datetime] | None]:
    """The whole policy after ``change`` (added/removed geofences), its base version and the
    preview window (with ``explicit``: the caller's window, None when it gave none — the
    guard then uses only the server's windows)."""
    base, version = current_or_empty(state)
    fences = list(base.geofences) if base else []
    known = {g.id for g in fences}
    errors = [ErrorItem(loc=["body", "remove_geofences", k], row=k, field="remove_geofences",
                        msg=f"unknown geofence {gid!r}")
              for k, gid in enumerate(change.remove_geofences) if gid not in known]
    fences = [g for g in fences if g.id not in set(change.remove_geofences)]
    kept = {g.id for g in fences}
    added = []
    seen: set[str] = set()
    for k, g in enumerate(change.add_geofences):
        if g.id in kept or g.id in seen:
            errors.append(ErrorItem(loc=["body", "add_geofences", k, "id"], row=k,
                                    field="add_geofences.id",
                                    msg=f"geofence {g.id!r} exists; list it in "
                                        "remove_geofences to replace it"))
            continue
        seen.add(g.id)
        try:
            parse_geometry(g.geometry, source="change", feature=k, field="geometry")
        except ValueError as exc:  # PolicyError
            errors.append(policy_error_item(exc, loc_prefix=("body", "add_geofences", k)))
            continue
        added.append(Geofence(id=g.id, geometry=g.geometry, action=g.action,
                              max_mbps=g.max_mbps, scope=g.scope or {},
                              valid_from=g.valid_from, valid_to=g.valid_to, reason=g.reason,
                              author=user.name, override_contracts=g.override_contracts))
    if errors:
        raise ProblemError(422, "the policy change is not valid", errors=errors)
    proposed = build_policy(base, geofences=[*fences, *added])
    if explicit and change.window_start is None and change.window_end is None:
        return proposed, version, None
    start = change.window_start
    if start is None:
        starts = [g.valid_from for g in added if g.valid_from]
        start = min(starts) if starts else datetime.now(UTC).replace(microsecond=0)
    start = start if start.tzinfo else start.replace(tzinfo=UTC)
    end = change.window_end or start + timedelta(days=7)
    end = end if end.tzinfo else end.replace(tzinfo=UTC)
    check_window(start, end, change.step_s)
    return proposed, version, (start, end)


@router.get("", response_model=Policy)
def current_policy_document(user: StaffUser, state: StateDep):
    """The whole latest policy (the snapshot the CLI and the decision engine use)."""
    cur = state.policy.current()
    return (Policy() if cur is None else cur.policy).model_dump(mode="json")


@router.get("/versions", response_model=list[VersionPublic])
def list_versions(user: StaffUser, state: StateDep):
    h = state.policy.history()
    return [] if h is None else [_version(v) for v in h.versions]


@router.get("/versions/{version}", response_model=Policy)
def get_version(version: IntId, user: StaffUser, state: StateDep):
    h = state.policy.history()
    v = None if h is None else next((x for x in h.versions if x.version == version), None)
    if v is None:
        raise not_found(f"policy version {version}")
    return v.policy.model_dump(mode="json")


@router.get("/history", response_model=list[VersionPublic])
def history(user: StaffUser, state: StateDep, as_of: Time | None = None):
    """Versions in record time; with ``as_of`` only those known then (as-of replay)."""
    h = state.policy.history()
    if h is None:
        return []
    if as_of is not None:
        as_of = as_of if as_of.tzinfo else as_of.replace(tzinfo=UTC)
        return [_version(v) for v in h.versions if v.recorded_at <= as_of]
    return [_version(v) for v in h.versions]


@router.post("/preview", response_model=PreviewPublic)
def preview(change: PolicyChange, user: StaffUser, state: StateDep):
    """The change-impact preview (``leotwin.preview``, as ``leotwin policy preview``)."""
    proposed, _, window = proposed_policy(state, change, user)
    base, _ = current_or_empty(state)
    return preview_public(preview_change(base, proposed, window, step_s=change.step_s))


@router.post("/apply", response_model=AppliedPublic, status_code=201)
def apply(change: PolicyApply, user: EditorUser, state: StateDep,
          x_approval_id: Annotated[str | None, Header(max_length=64)] = None):
    """Record the change as a new version. A change that breaches or weakens a contract
    (checked over the server's own windows and the caller's) is stored as a pending change
    and answered 409 with ``preview`` and ``change_id``; after a second user (approver or
    admin) approves it, retry the same change with ``approval_id`` (or ``X-Approval-Id``)."""
    proposed, version, window = proposed_policy(state, change, user, explicit=True)
    applied = apply_change(state, user, proposed, base_version=version, reason=change.reason,
                           window=window, step_s=change.step_s,
                           approval_id=change.approval_id or x_approval_id)
    v = applied.version
    return AppliedPublic(version=v.version, recorded_at=v.recorded_at, author=v.author,
                         reason=v.reason, approver=applied.approver,
                         preview=preview_public(applied.preview))


def _change_public(ch, user: User) -> PolicyChangePublic:
    preview = PreviewPublic.model_validate_json(ch.preview_json)
    own = tenant(user)
    if own is not None:  # a customer author: only its own account's part of the preview
        preview = preview.model_copy(update={
            "terminals": [t for t in preview.terminals if t.account == own],
            "accounts": [a for a in preview.accounts if a.account == own],
            "contracts": [c for c in preview.contracts if c.account == own],
            "weakened_contracts": [w for w in preview.weakened_contracts if w.account == own],
            "accounts_affected": [a for a in preview.accounts_affected if a == own],
            "contracts_affected": [c.contract for c in preview.contracts if c.account == own
                                   and c.contract in preview.contracts_affected],
            "skipped_terminals": []})
        preview.terminals_affected = len(preview.terminals)
        preview.terminal_hours_lost = sum(t.hours_lost for t in preview.terminals)
        preview.terminal_hours_gained = sum(t.hours_gained for t in preview.terminals)
        preview.credits_owed = sum(c.credit_owed for c in preview.contracts if c.breach)
    return PolicyChangePublic(change_id=ch.id, author=ch.author, created_at=ch.created_at,
                              expires_at=ch.expires_at, base_version=ch.base_version,
                              reason=ch.reason, preview=preview, status=ch.status(),
                              approver=ch.approver, approval_reason=ch.approval_reason)


def _visible_change(state: ServiceState, change_id: str, user: User):
    ch = state.store.policy_change(change_id)
    if ch is None or (user.role not in ("admin", "approver") and ch.author != user.name):
        raise not_found(f"policy change {change_id!r}")  # the same answer: no existence leak
    return ch


@router.get("/changes/{change_id}", response_model=PolicyChangePublic)
def get_change(change_id: str, user: CurrentUser, state: StateDep):
    """A pending change (approver, admin, or its author)."""
    return _change_public(_visible_change(state, change_id, user), user)


Approver = Annotated[User, Depends(require_roles("approver"))]


@router.post("/changes/{change_id}/approve", response_model=PolicyChangePublic)
def approve_change(change_id: str, body: ApproveIn, user: Approver, state: StateDep):
    """Approve a pending change with the approver's own reason (approver or admin, not its
    author). Its author then retries the same change with ``approval_id``."""
    _visible_change(state, change_id, user)
    try:
        ch = state.store.approve_policy_change(change_id, approver=user.name,
                                               reason=body.reason)
    except ApprovalError as exc:
        raise ProblemError(409, str(exc)) from None
    except LookupError:
        raise not_found(f"policy change {change_id!r}") from None
    return _change_public(ch, user)
