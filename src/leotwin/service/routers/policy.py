"""``/api/policy``: the current policy, its versions and history, preview and apply."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import APIRouter

from ...policy.geofence import parse_geometry
from ...policy.models import Geofence, Policy, PolicyVersion
from ...policy.preview import preview_change
from ...store import User
from ..changes import apply_change, build_policy, check_window, current_or_empty, preview_public
from ..deps import EditorUser, IntId, StaffUser, StateDep
from ..problems import ERROR_RESPONSES, ErrorItem, ProblemError, not_found, policy_error_item
from ..schemas import AppliedPublic, PolicyApply, PolicyChange, PreviewPublic, Time, VersionPublic
from ..state import ServiceState

router = APIRouter(prefix="/api/policy", tags=["policy"], responses=ERROR_RESPONSES)


def _version(v: PolicyVersion) -> VersionPublic:
    p = v.policy
    return VersionPublic(version=v.version, recorded_at=v.recorded_at, author=v.author,
                         reason=v.reason, accounts=len(p.accounts), terminals=len(p.terminals),
                         geofences=[g.id for g in p.geofences],
                         contracts=[c.id for c in p.contracts])


def proposed_policy(state: ServiceState, change: PolicyChange, user: User
                    ) -> tuple[Policy, int | None, tuple[datetime, datetime]]:
    """The whole policy after ``change`` (added/removed geofences), its base version and the
    preview window."""
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
def apply(change: PolicyApply, user: EditorUser, state: StateDep):
    """Record the change as a new version; 409 with ``preview`` when it breaches a contract
    without the approval of a different user with role approver (or admin)."""
    proposed, version, window = proposed_policy(state, change, user)
    applied = apply_change(state, user, proposed, base_version=version, reason=change.reason,
                           window=window, step_s=change.step_s,
                           approver_token=change.approver_token,
                           approval_reason=change.approval_reason)
    v = applied.version
    return AppliedPublic(version=v.version, recorded_at=v.recorded_at, author=v.author,
                         reason=v.reason, approver=applied.approver,
                         preview=preview_public(applied.preview))
