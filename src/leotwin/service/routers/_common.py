"""Helpers shared by the policy-resource routers (accounts, plans, contracts...)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Depends

from ...policy.models import Policy
from ...store import User
from ..changes import ChangeMeta, apply_change, change_meta, change_result, current_or_empty
from ..deps import tenant
from ..problems import ProblemError
from ..state import ServiceState

MetaDep = Annotated[ChangeMeta, Depends(change_meta)]


def current_policy(state: ServiceState) -> Policy:
    policy, _ = current_or_empty(state)
    return policy if policy is not None else Policy()


def find(items, key: str, value: str, what: str):
    for item in items:
        if getattr(item, key) == value:
            return item
    raise ProblemError(404, f"{what} {value!r} not found")


def change(state: ServiceState, user: User, meta: ChangeMeta, reason: str, item=None, *,
           window: tuple[datetime, datetime] | None = None, **lists) -> dict:
    """Record the current policy with ``lists`` replaced; the resource routes' one path."""
    base, version = current_or_empty(state)
    from ..changes import build_policy

    proposed = build_policy(base, **lists)
    applied = apply_change(state, user, proposed, base_version=version,
                           reason=meta.reason or reason, window=window,
                           approval_id=meta.approval_id)
    return change_result(applied, item, account=tenant(user))


def refuse_if_used(what: str, ident: str, users: list[str]) -> None:
    if users:
        more = f" and {len(users) - 5} more" if len(users) > 5 else ""
        raise ProblemError(409, f"{what} {ident!r} is still used by {', '.join(users[:5])}"
                           f"{more}; change those first")
