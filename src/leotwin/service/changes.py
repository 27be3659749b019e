"""Every policy change through the API: preview, guard, record — the CLI's sequence.

A change builds the whole proposed :class:`~leotwin.policy.models.Policy` from the latest
version and previews it with :func:`leotwin.policy.preview.preview_change` over windows the
server chooses (:func:`~leotwin.policy.preview.guard_windows`: from max(now, the change's
earliest valid_from) to the latest contract term end, at most 90 days, availability per 30-day
period; a caller's window is checked too, never instead). A change that causes or deepens a
breach, or deletes or weakens a contract, is stored as a *pending change* (proposed policy's
SHA-256, base version, author, reason, preview; 24 h) and refused with 409 (``preview``,
``change_id``); after a second user (approver or admin) approves it, its author retries with
``approval_id`` and :meth:`leotwin.store.Store.record_policy` uses the approval up in the same
transaction as the new version (refused if another version was recorded meanwhile).

One user holds at most ``max_pending_changes_per_user`` pending changes (not yet approved, not
expired; setting ``LEOTWIN_MAX_PENDING_CHANGES_PER_USER``, default 5): each costs an
approver's attention and a stored preview, so a script retrying breaching changes must not
flood the approval queue.
Beyond it the change is refused with 409 ``urn:leotwin:problem:too-many-pending-changes``
naming the limit and the pending change ids. Retrying the very same change (same proposed
policy, same base version) reuses its pending change instead of adding one.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

import numpy as np
from fastapi import Header
from pydantic import ValidationError

from .._common import as_utc
from ..policy.engine import check_overlaps
from ..policy.errors import PolicyError
from ..policy.models import Policy, PolicyVersion
from ..policy.preview import Preview
from ..policy.preview import guarded_preview as domain_guarded_preview
from ..store import ApprovalError, StaleVersion, TooManyPendingChanges, User
from .deps import tenant
from .problems import ErrorItem, ProblemError, policy_error_item
from .schemas import PreviewPublic
from .state import ServiceState

log = logging.getLogger(__name__)

WEEK = timedelta(days=7)
#: Resource changes (terminals, accounts, plans...) are previewed over a week at this step.
RESOURCE_STEP_S = 3600.0
MAX_PREVIEW_STEPS = 20_000
#: A pending change may be approved and used within this time.
APPROVAL_TTL = timedelta(hours=24)


def _dt(value: np.datetime64) -> datetime:
    return datetime.fromisoformat(str(np.datetime64(value, "us"))).replace(tzinfo=UTC)


def preview_public(p: Preview, *, account: str | None = None) -> PreviewPublic:
    """The contract's ``PreviewPublic`` from a :class:`~leotwin.policy.preview.Preview`;
    with ``account`` (a customer's) only that account's terminals, accounts and contracts,
    and totals over them (nothing about other tenants)."""
    terms = p.terminals
    accounts = p.accounts
    contracts = p.contracts
    weakened = p.weakened
    skipped = list(p.skipped_terminals)
    if account is not None:
        terms = terms[terms["account"] == account]
        accounts = accounts[accounts["account"] == account]
        contracts = contracts[contracts["account"] == account]
        weakened = weakened[weakened["account"] == account]
        skipped = []
    own_breaches = p.breaches if account is None else p.breaches[
        p.breaches["account"] == account]
    changed = terms[(terms["hours_lost"] > 0) | (terms["hours_gained"] > 0)].sort_values(
        ["hours_lost", "terminal"], ascending=[False, True])
    touched = contracts[(contracts["before_pct"] != contracts["after_pct"]) | contracts["breach"]]

    def num(x) -> float | None:
        x = float(x)
        return None if np.isnan(x) else x

    return PreviewPublic(
        window_start=_dt(p.window[0]), window_end=_dt(p.window[1]),
        terminals_affected=len(changed),
        accounts_affected=sorted(accounts.loc[accounts["terminals_affected"] > 0, "account"]
                                 .astype(str)),
        contracts_affected=touched["contract"].astype(str).tolist(),
        terminal_hours_lost=float(terms["hours_lost"].sum()),
        terminal_hours_gained=float(terms["hours_gained"].sum()),
        credits_owed=float(contracts.loc[contracts["breach"], "credit_owed"].sum()),
        # the change causes or deepens a breach, or weakens a contract: needs an approver
        breach=(p.needs_approval if account is None
                else not (own_breaches.empty and weakened.empty)),
        terminals=[{"terminal": str(r.terminal), "account": str(r.account),
                    "hours_lost": float(r.hours_lost), "hours_gained": float(r.hours_gained)}
                   for r in changed.itertuples()],
        accounts=[{"account": str(r.account), "terminals_affected": int(r.terminals_affected),
                   "hours_lost": float(r.hours_lost), "hours_gained": float(r.hours_gained)}
                  for r in accounts.itertuples()],
        contracts=[{"contract": str(r.contract), "account": str(r.account),
                    "committed_pct": float(r.committed_pct), "before_pct": num(r.before_pct),
                    "after_pct": num(r.after_pct), "breach": bool(r.breach),
                    "breach_hours": float(r.breach_hours), "credit_owed": float(r.credit_owed)}
                   for r in contracts.itertuples()],
        skipped_terminals=skipped,
        weakened_contracts=[{"contract": str(r.contract), "account": str(r.account),
                             "change": str(r.change)} for r in weakened.itertuples()])


def check_window(start: datetime, end: datetime, step_s: float) -> None:
    if end <= start:
        raise ProblemError(422, "the preview window must end after it starts", errors=[
            ErrorItem(loc=["body", "window_end"], field="window_end",
                      msg="must be after window_start")])
    steps = (end - start).total_seconds() / step_s
    if steps > MAX_PREVIEW_STEPS:
        raise ProblemError(422, f"the preview window has {steps:.0f} steps; at most "
                           f"{MAX_PREVIEW_STEPS} (widen step_s or shorten the window)", errors=[
            ErrorItem(loc=["body", "step_s"], field="step_s", msg="too many preview steps")])


def build_policy(base: Policy | None, **update) -> Policy:
    """``base`` with some lists replaced, cross-checked like any Policy (PolicyError → 422)."""
    fields = {name: getattr(base, name) for name in Policy.model_fields} if base else {}
    fields.update(update)
    try:
        return Policy(**fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        inner = (err.get("ctx") or {}).get("error")
        if isinstance(inner, PolicyError):
            raise inner from None
        loc = [str(x) for x in err["loc"]]
        raise PolicyError(err["msg"], source="policy", field=".".join(loc) or None) from None


@dataclass
class ChangeMeta:
    """Why a resource change is made, and an optional approval (request headers)."""

    reason: str | None
    approval_id: str | None


async def change_meta(
    x_change_reason: Annotated[str | None, Header(
        max_length=2000, description="reason recorded with the new policy version")] = None,
    x_approval_id: Annotated[str | None, Header(
        max_length=64, description="the change_id of an approved pending change (a 409 "
        "answer's change_id, approved by a second user)")] = None,
) -> ChangeMeta:
    return ChangeMeta(x_change_reason, x_approval_id)


@dataclass
class Applied:
    version: PolicyVersion
    preview: Preview
    approver: str | None


def policy_sha256(policy: Policy) -> str:
    """The SHA-256 of a proposed policy's canonical JSON (what an approval is bound to)."""
    return hashlib.sha256(policy.model_dump_json().encode("utf-8")).hexdigest()


def guarded_preview(current: Policy | None, proposed: Policy,
                    window: tuple[datetime, datetime] | None, step_s: float) -> Preview:
    """:func:`leotwin.policy.preview.guarded_preview` after checking the caller's window."""
    if window is not None:
        check_window(*window, step_s)
    return domain_guarded_preview(current, proposed, window, step_s=step_s)


def apply_change(state: ServiceState, user: User, proposed: Policy, *, base_version: int | None,
                 reason: str, window: tuple[datetime, datetime] | None = None,
                 step_s: float = RESOURCE_STEP_S, approval_id: str | None = None) -> Applied:
    """Preview ``proposed`` against version ``base_version``, guard it, record it.

    A change that breaches or weakens a contract is recorded only with ``approval_id``, an
    approved pending change of this author for exactly this policy and base version; else it
    is stored as a pending change and refused with 409 (``preview``, ``change_id``)."""
    check_overlaps(proposed)
    current = state.policy.current()
    if (None if current is None else current.version) != base_version:
        raise ProblemError(409, "the policy changed while this change was prepared; retry")
    cur_policy = None if current is None else current.policy
    p = guarded_preview(cur_policy, proposed, window, step_s)
    sha = policy_sha256(proposed)
    approver = None
    try:
        if not p.needs_approval:
            v = state.store.record_policy(proposed, author=user.name, reason=reason,
                                          expected_version=base_version)
        elif approval_id:
            v = state.store.record_policy(proposed, author=user.name, reason=reason,
                                          expected_version=base_version,
                                          approval_id=approval_id, policy_sha256=sha)
            ch = state.store.policy_change(approval_id)
            approver = None if ch is None else ch.approver
        else:
            raise _refuse(state, user, p, sha, base_version, reason,
                          "it breaches or weakens a contract and needs the approval of a "
                          "second user (approver or admin)")
    except StaleVersion as exc:
        raise ProblemError(409, str(exc)) from None
    except ApprovalError as exc:
        raise _refuse(state, user, p, sha, base_version, reason,
                      f"the approval is not valid for this change: {exc}") from None
    return Applied(v, p, approver)


def max_pending_changes(state: ServiceState) -> int:
    """The per-user limit on pending changes (``max_pending_changes_per_user``)."""
    return int(state.settings.max_pending_changes_per_user)


def _refuse(state: ServiceState, user: User, p: Preview, sha: str, base_version: int | None,
            reason: str, why: str) -> ProblemError:
    """Store the change as pending (or reuse the same pending change) and build its 409
    answer; 409 ``too-many-pending-changes`` when the author holds the limit already."""
    public = preview_public(p)
    shown = public if tenant(user) is None else preview_public(p, account=tenant(user))
    limit = max_pending_changes(state)
    try:
        same = state.store.create_policy_change(
            author=user.name, base_version=base_version, policy_sha256=sha, reason=reason,
            preview_json=public.model_dump_json(), ttl=APPROVAL_TTL, max_pending=limit).id
    except TooManyPendingChanges as exc:
        ids = exc.pending
        log.info("change by %s refused: %d pending changes (limit %d)", user.name,
                 len(ids), limit)
        return ProblemError(
            409, f"change refused: {why}; and {user.name!r} already has {len(ids)} "
            f"pending changes awaiting approval, at most {limit} per user "
            "(max_pending_changes_per_user, LEOTWIN_MAX_PENDING_CHANGES_PER_USER): wait "
            f"until one is approved or expires ({APPROVAL_TTL.total_seconds() / 3600:g} h "
            f"after its creation). Pending: {', '.join(ids)}",
            title="Too many pending changes",
            type_="urn:leotwin:problem:too-many-pending-changes", limit=limit,
            pending=len(ids), pending_change_ids=ids,
            preview=shown.model_dump(mode="json"))
    log.info("change by %s needs an approval: pending change %s", user.name, same)
    return ProblemError(
        409, f"change refused: {why}; a second user may approve pending change {same} "
        f"(POST /api/policy/changes/{same}/approve), then retry with approval_id. "
        f"{p.summary()}", title="Change breaches a contract",
        type_="urn:leotwin:problem:contract-breach", change_id=same,
        preview=shown.model_dump(mode="json"))


def change_result(applied: Applied, item=None, *, account: str | None = None) -> dict:
    """A resource route's answer; ``account`` (a customer's) confines the preview to it."""
    v = applied.version
    return {"version": v.version, "recorded_at": v.recorded_at, "author": v.author,
            "reason": v.reason, "approver": applied.approver, "item": item,
            "preview": preview_public(applied.preview, account=account)}


def current_or_empty(state: ServiceState) -> tuple[Policy | None, int | None]:
    cur = state.policy.current()
    return (None, None) if cur is None else (cur.policy, cur.version)


def utc(value: datetime | None) -> datetime | None:
    return as_utc(value)


def policy_row_errors(exc: PolicyError, *, loc_prefix=("body",)) -> list[ErrorItem]:
    return [policy_error_item(exc, loc_prefix=loc_prefix)]
