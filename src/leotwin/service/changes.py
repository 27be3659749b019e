"""Every policy change through the API: preview, guard, record — the CLI's sequence.

A change builds the whole proposed :class:`~leotwin.policy.models.Policy` from the latest
version, previews it with :func:`leotwin.policy.preview.preview_change` over a window, lets
:func:`leotwin.policy.preview.guard` refuse a contract breach without a second user's approval
(409 with the preview), and records it with :meth:`leotwin.store.Store.record_policy` (author:
the caller; the approval gets its own audit row), refusing it if another version was recorded
meanwhile.
"""

from __future__ import annotations

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
from ..policy.preview import ChangeRefused, Preview, guard, preview_change
from ..store import StaleVersion, User
from .deps import user_of_token
from .problems import ErrorItem, ProblemError, policy_error_item
from .schemas import PreviewPublic
from .state import ServiceState

log = logging.getLogger(__name__)

WEEK = timedelta(days=7)
#: Resource changes (terminals, accounts, plans...) are previewed over a week at this step.
RESOURCE_STEP_S = 3600.0
MAX_PREVIEW_STEPS = 20_000


def _dt(value: np.datetime64) -> datetime:
    return datetime.fromisoformat(str(np.datetime64(value, "us"))).replace(tzinfo=UTC)


def preview_public(p: Preview) -> PreviewPublic:
    """The contract's ``PreviewPublic`` from a :class:`~leotwin.policy.preview.Preview`."""
    terms = p.terminals
    changed = terms[(terms["hours_lost"] > 0) | (terms["hours_gained"] > 0)].sort_values(
        ["hours_lost", "terminal"], ascending=[False, True])
    accounts = p.accounts
    contracts = p.contracts
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
        breach=not p.breaches.empty,  # the change causes or deepens one: needs an approver
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
        skipped_terminals=list(p.skipped_terminals))


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
    approver_token: str | None
    approval_reason: str | None


async def change_meta(
    x_change_reason: Annotated[str | None, Header(
        max_length=2000, description="reason recorded with the new policy version")] = None,
    x_approver_token: Annotated[str | None, Header(
        description="token of a second user (approver or admin) approving a breach")] = None,
    x_approval_reason: Annotated[str | None, Header(max_length=2000)] = None,
) -> ChangeMeta:
    return ChangeMeta(x_change_reason, x_approver_token, x_approval_reason)


@dataclass
class Applied:
    version: PolicyVersion
    preview: Preview
    approver: str | None


def apply_change(state: ServiceState, user: User, proposed: Policy, *, base_version: int | None,
                 reason: str, window: tuple[datetime, datetime] | None = None,
                 step_s: float = RESOURCE_STEP_S, approver_token: str | None = None,
                 approval_reason: str | None = None) -> Applied:
    """Preview ``proposed`` against version ``base_version``, guard it, record it."""
    check_overlaps(proposed)
    if window is None:
        start = datetime.now(UTC).replace(microsecond=0)
        window = (start, start + WEEK)
    check_window(*window, step_s)
    current = state.policy.current()
    if (None if current is None else current.version) != base_version:
        raise ProblemError(409, "the policy changed while this change was prepared; retry")
    p = preview_change(None if current is None else current.policy, proposed, window,
                       step_s=step_s)
    approver = user_of_token(state, approver_token) if approver_token else None
    if approver_token and approver is None:
        log.info("approval token of a change by %s is not valid", user.name)
    # admin holds every role's rights, so it may approve like an approver
    role = None if approver is None else ("approver" if approver.role in ("approver", "admin")
                                          else approver.role)
    try:
        guard(p, author=user.name, approver=None if approver is None else approver.name,
              approver_role=role, approval_reason=approval_reason or reason)
    except ChangeRefused as exc:
        detail = exc.message
        if approver_token and approver is None:
            detail = "the approver token is invalid, expired or revoked; " + detail
        raise ProblemError(409, detail, title="Change breaches a contract",
                           type_="urn:leotwin:problem:contract-breach",
                           preview=preview_public(p).model_dump(mode="json")) from None
    approved = not p.breaches.empty
    try:
        v = state.store.record_policy(
            proposed, author=user.name, reason=reason,
            approver=approver.name if approved and approver else None,
            approval_reason=(approval_reason or reason) if approved else None,
            expected_version=base_version)
    except StaleVersion as exc:
        raise ProblemError(409, str(exc)) from None
    return Applied(v, p, approver.name if approved and approver else None)


def change_result(applied: Applied, item=None) -> dict:
    v = applied.version
    return {"version": v.version, "recorded_at": v.recorded_at, "author": v.author,
            "reason": v.reason, "approver": applied.approver, "item": item,
            "preview": preview_public(applied.preview)}


def current_or_empty(state: ServiceState) -> tuple[Policy | None, int | None]:
    cur = state.policy.current()
    return (None, None) if cur is None else (cur.policy, cur.version)


def utc(value: datetime | None) -> datetime | None:
    return as_utc(value)


def policy_row_errors(exc: PolicyError, *, loc_prefix=("body",)) -> list[ErrorItem]:
    return [policy_error_item(exc, loc_prefix=loc_prefix)]
