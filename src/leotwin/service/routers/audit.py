"""``/api/audit``: the hash-chained audit log and its verification (admin and auditor).

Customers get 403 here: audit rows are operator records (policy versions of every account,
users, tokens), not filtered by account.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from ..deps import AuditReader, IntId, StateDep
from ..problems import ERROR_RESPONSES, not_found
from ..schemas import AuditEntryPublic, AuditVerifyPublic

router = APIRouter(prefix="/api/audit", tags=["audit"], responses=ERROR_RESPONSES)


def _public(r) -> dict:
    return {k: getattr(r, k) for k in AuditEntryPublic.model_fields}


@router.get("", response_model=list[AuditEntryPublic])
def list_audit(user: AuditReader, state: StateDep, actor: str | None = None,
               action: str | None = None, entity: str | None = None,
               entity_id: str | None = None,
               limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
               offset: Annotated[int, Query(ge=0)] = 0):
    """Audit rows in chain order, filtered and paged in the query."""
    return [_public(r) for r in state.store.audit_rows(actor=actor, action=action, entity=entity,
                                                       entity_id=entity_id, limit=limit,
                                                       offset=offset)]


@router.get("/verify", response_model=AuditVerifyPublic)
def verify(user: AuditReader, state: StateDep):
    """Re-hash the whole chain (as ``leotwin audit verify``)."""
    r = state.store.verify_audit()
    return AuditVerifyPublic(ok=r.ok, rows=r.rows, bad_row=r.bad_row, message=r.message)


@router.get("/{row_id}", response_model=AuditEntryPublic)
def get_audit_row(row_id: IntId, user: AuditReader, state: StateDep):
    rows = state.store.audit_rows(row_id=row_id)
    if not rows:
        raise not_found(f"audit row {row_id}")
    return _public(rows[0])
