"""``/api/plans``: service plans (readable by every role: a public price list)."""

from __future__ import annotations

from fastapi import APIRouter

from ...policy.models import ServicePlan
from ..deps import CurrentUser, EditorUser, StateDep
from ..problems import ERROR_RESPONSES, ProblemError
from ..schemas import ChangeResult, PlanCreate, PlanPublic, PlanUpdate
from ._common import MetaDep, change, current_policy, find, refuse_if_used

router = APIRouter(prefix="/api/plans", tags=["plans"], responses=ERROR_RESPONSES)


@router.get("", response_model=list[PlanPublic])
def list_plans(user: CurrentUser, state: StateDep):
    return [p.model_dump() for p in current_policy(state).plans]


@router.get("/{name}", response_model=PlanPublic)
def get_plan(name: str, user: CurrentUser, state: StateDep):
    return find(current_policy(state).plans, "name", name, "plan").model_dump()


@router.post("", response_model=ChangeResult[PlanPublic], status_code=201)
def create_plan(body: PlanCreate, user: EditorUser, state: StateDep, meta: MetaDep):
    pol = current_policy(state)
    if any(p.name == body.name for p in pol.plans):
        raise ProblemError(409, f"plan {body.name!r} already exists")
    plan = ServicePlan(**body.model_dump())
    return change(state, user, meta, f"add plan {plan.name}", plan.model_dump(),
                  plans=[*pol.plans, plan])


@router.patch("/{name}", response_model=ChangeResult[PlanPublic])
def update_plan(name: str, body: PlanUpdate, user: EditorUser, state: StateDep, meta: MetaDep):
    pol = current_policy(state)
    old = find(pol.plans, "name", name, "plan")
    new = ServicePlan(**{**old.model_dump(), **body.model_dump(exclude_unset=True,
                                                               exclude_none=True)})
    return change(state, user, meta, f"update plan {name}", new.model_dump(),
                  plans=[new if p.name == name else p for p in pol.plans])


@router.delete("/{name}", response_model=ChangeResult[PlanPublic])
def delete_plan(name: str, user: EditorUser, state: StateDep, meta: MetaDep):
    pol = current_policy(state)
    find(pol.plans, "name", name, "plan")
    refuse_if_used("plan", name,
                   [f"terminal {t.id}" for t in pol.terminals if t.plan == name]
                   + [f"geofence {g.id}" for g in pol.geofences if name in (g.scope.plans or [])])
    return change(state, user, meta, f"remove plan {name}",
                  plans=[p for p in pol.plans if p.name != name])
