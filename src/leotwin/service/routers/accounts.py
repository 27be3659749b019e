"""``/api/accounts``: customer accounts of the policy (operator staff)."""

from __future__ import annotations

from fastapi import APIRouter

from ...policy.models import Account
from ..deps import EditorUser, StaffUser, StateDep
from ..problems import ERROR_RESPONSES, ProblemError
from ..schemas import AccountCreate, AccountPublic, AccountUpdate, ChangeResult
from ._common import MetaDep, change, current_policy, find, refuse_if_used

router = APIRouter(prefix="/api/accounts", tags=["accounts"], responses=ERROR_RESPONSES)


@router.get("", response_model=list[AccountPublic])
def list_accounts(user: StaffUser, state: StateDep):
    return [a.model_dump() for a in current_policy(state).accounts]


@router.get("/{account_id}", response_model=AccountPublic)
def get_account(account_id: str, user: StaffUser, state: StateDep):
    return find(current_policy(state).accounts, "id", account_id, "account").model_dump()


@router.post("", response_model=ChangeResult[AccountPublic], status_code=201)
def create_account(body: AccountCreate, user: EditorUser, state: StateDep, meta: MetaDep):
    pol = current_policy(state)
    if any(a.id == body.id for a in pol.accounts):
        raise ProblemError(409, f"account {body.id!r} already exists")
    acc = Account(**body.model_dump())
    return change(state, user, meta, f"add account {acc.id}", acc.model_dump(),
                  accounts=[*pol.accounts, acc])


@router.patch("/{account_id}", response_model=ChangeResult[AccountPublic])
def update_account(account_id: str, body: AccountUpdate, user: EditorUser, state: StateDep,
                   meta: MetaDep):
    pol = current_policy(state)
    old = find(pol.accounts, "id", account_id, "account")
    new = Account(**{**old.model_dump(), **body.model_dump(exclude_unset=True,
                                                           exclude_none=True)})
    return change(state, user, meta, f"update account {account_id}", new.model_dump(),
                  accounts=[new if a.id == account_id else a for a in pol.accounts])


@router.delete("/{account_id}", response_model=ChangeResult[AccountPublic])
def delete_account(account_id: str, user: EditorUser, state: StateDep, meta: MetaDep):
    pol = current_policy(state)
    find(pol.accounts, "id", account_id, "account")
    refuse_if_used("account", account_id,
                   [f"terminal {t.id}" for t in pol.terminals if t.account == account_id]
                   + [f"contract {c.id}" for c in pol.contracts if c.account == account_id]
                   + [f"geofence {g.id}" for g in pol.geofences
                      if account_id in (g.scope.accounts or [])])
    return change(state, user, meta, f"remove account {account_id}",
                  accounts=[a for a in pol.accounts if a.id != account_id])
