"""``/api/terminals``: the current terminals (listed from the store's ``current_terminals``
table, filtered by account in SQL), changes, and bulk import from CSV or GeoJSON."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Query, UploadFile
from fastapi.responses import JSONResponse

from ...policy.models import Terminal
from ..deps import CurrentUser, StateDep, TerminalWriter, check_account_filter, tenant
from ..imports import detect_format, parse_csv, parse_geojson, row_numbers, validate_rows
from ..problems import ERROR_RESPONSES, ErrorItem, ProblemError, not_found
from ..schemas import ChangeResult, ImportResult, TerminalCreate, TerminalPublic, TerminalUpdate
from ._common import MetaDep, change, current_policy

router = APIRouter(prefix="/api/terminals", tags=["terminals"], responses=ERROR_RESPONSES)


@router.get("", response_model=list[TerminalPublic])
def list_terminals(user: CurrentUser, state: StateDep, account: str | None = None,
                   plan: str | None = None,
                   status: Annotated[str | None, Query(pattern="^(active|suspended|standby)$")]
                   = None,
                   limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
                   offset: Annotated[int, Query(ge=0)] = 0):
    """Terminals of the latest policy version; a customer gets only its own account's (one
    indexed query, ``WHERE account = :acct``, in the thread pool)."""
    acct = check_account_filter(user, account)
    rows = state.store.terminal_rows(account=acct, plan=plan, status=status, limit=limit,
                                     offset=offset)
    return JSONResponse(rows)  # the rows are the schema's fields already: no re-validation


@router.get("/{terminal_id}", response_model=TerminalPublic)
def get_terminal(terminal_id: str, user: CurrentUser, state: StateDep):
    t = state.store.terminal(terminal_id, account=tenant(user))
    if t is None:
        raise not_found(f"terminal {terminal_id!r}")
    return t


#: The terminal fields a customer may write (its own account's terminals); status, plan,
#: registration and the service address are the operator's (policy_editor).
CUSTOMER_FIELDS = frozenset({"id", "account", "serial", "kind"})


def _customer_fields(user, fields, *, row: int | None = None, loc=("body",)) -> list[ErrorItem]:
    if tenant(user) is None:
        return []
    return [ErrorItem(loc=[*loc, f], row=row, field=f,
                      msg=f"a customer may not set {f!r}; an operator (policy_editor) does")
            for f in sorted(set(fields) - CUSTOMER_FIELDS)]


def _refuse_fields(errors: list[ErrorItem]) -> None:
    if errors:
        raise ProblemError(403, "a customer may write only the terminal fields "
                           f"{', '.join(sorted(CUSTOMER_FIELDS))}", errors=errors)


def _id_taken(user) -> ProblemError:
    if tenant(user) is not None:  # the same answer as a foreign id: no existence oracle
        return ProblemError(403, "this terminal id is not available to the caller's account",
                            errors=[ErrorItem(loc=["body", "id"], field="id",
                                              msg="not available")])
    return ProblemError(409, "the terminal id is already in use")


def _own_account(user, account: str) -> None:
    own = tenant(user)
    if own is not None and account != own:
        raise ProblemError(403, "a customer may only add or change terminals of its own "
                           "account", errors=[ErrorItem(loc=["body", "account"],
                                                        field="account",
                                                        msg="not the caller's account")])


def _check_refs(pol, t: Terminal, row: int | None = None, loc=("body",)) -> list[ErrorItem]:
    errors = []
    if t.account not in {a.id for a in pol.accounts}:
        errors.append(ErrorItem(loc=[*loc, "account"], row=row, field="account",
                                msg=f"unknown account {t.account!r}"))
    if t.plan is not None and t.plan not in {p.name for p in pol.plans}:
        errors.append(ErrorItem(loc=[*loc, "plan"], row=row, field="plan",
                                msg=f"unknown plan {t.plan!r}"))
    return errors


@router.post("", response_model=ChangeResult[TerminalPublic], status_code=201)
def create_terminal(body: TerminalCreate, user: TerminalWriter, state: StateDep,
                    meta: MetaDep):
    _own_account(user, body.account)
    _refuse_fields(_customer_fields(user, body.model_fields_set))
    pol = current_policy(state)
    if any(t.id == body.id for t in pol.terminals):
        raise _id_taken(user)
    fields = body.model_dump()
    if tenant(user) is not None:  # a customer's new terminal waits for the operator
        fields.update(status="standby", registered=False)
    t = Terminal(**fields)
    errors = _check_refs(pol, t)
    if errors:
        raise ProblemError(422, "the terminal refers to unknown records", errors=errors)
    return change(state, user, meta, f"add terminal {t.id}", t.model_dump(),
                  terminals=[*pol.terminals, t])


@router.patch("/{terminal_id}", response_model=ChangeResult[TerminalPublic])
def update_terminal(terminal_id: str, body: TerminalUpdate, user: TerminalWriter,
                    state: StateDep, meta: MetaDep):
    if state.store.terminal(terminal_id, account=tenant(user)) is None:
        raise not_found(f"terminal {terminal_id!r}")
    pol = current_policy(state)
    old = next((t for t in pol.terminals if t.id == terminal_id), None)
    if old is None:
        raise not_found(f"terminal {terminal_id!r}")
    upd = body.model_dump(exclude_unset=True)
    if upd.get("account") is None:
        upd.pop("account", None)
    _own_account(user, upd.get("account", old.account))
    _refuse_fields(_customer_fields(user, upd))
    new = Terminal(**{**old.model_dump(), **upd})
    errors = _check_refs(pol, new)
    if errors:
        raise ProblemError(422, "the terminal refers to unknown records", errors=errors)
    return change(state, user, meta, f"update terminal {terminal_id}", new.model_dump(),
                  terminals=[new if t.id == terminal_id else t for t in pol.terminals])


@router.delete("/{terminal_id}", response_model=ChangeResult[TerminalPublic])
def delete_terminal(terminal_id: str, user: TerminalWriter, state: StateDep, meta: MetaDep):
    if state.store.terminal(terminal_id, account=tenant(user)) is None:
        raise not_found(f"terminal {terminal_id!r}")
    pol = current_policy(state)
    return change(state, user, meta, f"remove terminal {terminal_id}",
                  terminals=[t for t in pol.terminals if t.id != terminal_id])


@router.post("/import", response_model=ImportResult, status_code=201,
             responses={413: {"description": "upload larger than LEOTWIN_MAX_UPLOAD_BYTES"}})
def import_terminals(file: Annotated[UploadFile, File(description="CSV or GeoJSON")],
                     user: TerminalWriter, state: StateDep, meta: MetaDep):
    """Create or update terminals from a CSV or GeoJSON file, all or nothing: any bad row
    refuses the whole file (422, every bad row and field named) and the store is unchanged.
    A customer may import only terminals of its own account (403 otherwise)."""
    limit = state.settings.max_upload_bytes
    data = file.file.read(limit + 1)
    if len(data) > limit:
        raise ProblemError(413, f"the upload is larger than {limit} bytes")
    fmt = detect_format(file.filename, file.content_type, data)
    parsed = parse_csv(data) if fmt == "csv" else parse_geojson(data)
    own = tenant(user)
    terminals, errors = validate_rows(parsed, fmt=fmt, default_account=own)
    if errors:
        raise ProblemError(422, f"{len(errors)} error(s) in the {fmt} upload; nothing was "
                           "imported", errors=errors)
    if not terminals:
        raise ProblemError(422, "the upload holds no terminal", errors=[
            ErrorItem(loc=["file"], msg="no records")])
    rows = row_numbers(parsed)
    pol = current_policy(state)
    existing = {t.id: t for t in pol.terminals}
    foreign = []
    for t in terminals:
        if own is not None and (t.account != own or (t.id in existing
                                                     and existing[t.id].account != own)):
            foreign.append(ErrorItem(loc=["file", rows.get(t.id, 0)], row=rows.get(t.id),
                                     field="account" if t.account != own else "id",
                                     msg="not a terminal of the caller's account"))
    if foreign:
        raise ProblemError(403, "a customer may import only its own account's terminals; "
                           "nothing was imported", errors=foreign)
    if own is not None:
        written = []
        for k, record in enumerate(parsed.rows):
            if record is not None:
                given = {f for f, v in record.items() if v not in ("", None)}
                if fmt == "geojson" and ("lat_deg" in record or "lon_deg" in record):
                    given |= {"lat_deg", "lon_deg"}
                written += _customer_fields(user, given, row=k + 1, loc=("file", k + 1))
        if written:
            raise ProblemError(403, "a customer may import only the terminal fields "
                               f"{', '.join(sorted(CUSTOMER_FIELDS))}; nothing was imported",
                               errors=written)
    for t in terminals:
        errors += _check_refs(pol, t, rows.get(t.id), loc=("file", rows.get(t.id, 0)))
    if errors:
        raise ProblemError(422, f"{len(errors)} error(s) in the {fmt} upload; nothing was "
                           "imported", errors=errors)
    if own is None:
        new = {t.id: Terminal(**t.model_dump()) for t in terminals}
    else:  # a customer: serial and kind of its own terminals; new ones wait for the operator
        new = {t.id: Terminal(**{**existing[t.id].model_dump(), "serial": t.serial,
                                 "kind": t.kind}) if t.id in existing
               else Terminal(**{**t.model_dump(), "status": "standby", "registered": False})
               for t in terminals}
    merged = [new.pop(t.id, t) for t in pol.terminals] + list(new.values())
    n_updated = sum(1 for t in terminals if t.id in existing)
    out = change(state, user, meta, f"import {len(terminals)} terminals ({fmt})",
                 terminals=merged)
    return ImportResult(version=out["version"], recorded_at=out["recorded_at"],
                        created=len(terminals) - n_updated, updated=n_updated,
                        terminals=len(terminals), preview=out["preview"])
