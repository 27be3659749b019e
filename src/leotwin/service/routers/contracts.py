"""``/api/contracts``: service-level contracts (operator staff; a breach needs an approver)."""

from __future__ import annotations

from fastapi import APIRouter

from ...policy.geofence import parse_geometry
from ...policy.models import Contract
from ..deps import EditorUser, StaffUser, StateDep
from ..problems import ERROR_RESPONSES, ProblemError
from ..schemas import ChangeResult, ContractCreate, ContractPublic, ContractUpdate
from ._common import MetaDep, change, current_policy, find

router = APIRouter(prefix="/api/contracts", tags=["contracts"], responses=ERROR_RESPONSES)


def _checked(c: Contract) -> Contract:
    parse_geometry(c.covered_area, source="contract", field="covered_area")
    if c.term_end <= c.term_start:
        raise ProblemError(422, "term_end must be after term_start", errors=[
            {"loc": ["body", "term_end"], "field": "term_end", "msg": "before term_start"}])
    return c


@router.get("", response_model=list[ContractPublic])
def list_contracts(user: StaffUser, state: StateDep, account: str | None = None):
    return [c.model_dump() for c in current_policy(state).contracts
            if account is None or c.account == account]


@router.get("/{contract_id}", response_model=ContractPublic)
def get_contract(contract_id: str, user: StaffUser, state: StateDep):
    return find(current_policy(state).contracts, "id", contract_id, "contract").model_dump()


@router.post("", response_model=ChangeResult[ContractPublic], status_code=201)
def create_contract(body: ContractCreate, user: EditorUser, state: StateDep, meta: MetaDep):
    pol = current_policy(state)
    if any(c.id == body.id for c in pol.contracts):
        raise ProblemError(409, f"contract {body.id!r} already exists")
    c = _checked(Contract(**body.model_dump()))
    return change(state, user, meta, f"add contract {c.id}", c.model_dump(),
                  contracts=[*pol.contracts, c])


@router.patch("/{contract_id}", response_model=ChangeResult[ContractPublic])
def update_contract(contract_id: str, body: ContractUpdate, user: EditorUser, state: StateDep,
                    meta: MetaDep):
    pol = current_policy(state)
    old = find(pol.contracts, "id", contract_id, "contract")
    new = _checked(Contract(**{**old.model_dump(), **body.model_dump(exclude_unset=True,
                                                                     exclude_none=True)}))
    return change(state, user, meta, f"update contract {contract_id}", new.model_dump(),
                  contracts=[new if c.id == contract_id else c for c in pol.contracts])


@router.delete("/{contract_id}", response_model=ChangeResult[ContractPublic])
def delete_contract(contract_id: str, user: EditorUser, state: StateDep, meta: MetaDep):
    pol = current_policy(state)
    find(pol.contracts, "id", contract_id, "contract")
    return change(state, user, meta, f"remove contract {contract_id}",
                  contracts=[c for c in pol.contracts if c.id != contract_id])
