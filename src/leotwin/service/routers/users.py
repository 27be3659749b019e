"""``/api/users``: the caller, and user management (admin)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from ..deps import AdminUser, CurrentUser, StateDep
from ..problems import ERROR_RESPONSES, ProblemError, not_found
from ..schemas import PasswordUpdate, UserCreate, UserPublic

router = APIRouter(prefix="/api/users", tags=["users"], responses=ERROR_RESPONSES)


def _public(u) -> UserPublic:
    return UserPublic(name=u.name, role=u.role, account=u.account)


@router.get("/me", response_model=UserPublic)
def me(user: CurrentUser):
    return _public(user)


@router.get("", response_model=list[UserPublic])
def list_users(admin: AdminUser, state: StateDep, account: str | None = None):
    return [_public(u) for u in state.store.users(account=account)]


@router.post("", response_model=UserPublic, status_code=201)
def create_user(body: UserCreate, admin: AdminUser, state: StateDep):
    if body.role == "customer" and not body.account:
        raise ProblemError(422, "a customer needs the account it belongs to", errors=[
            {"loc": ["body", "account"], "field": "account", "msg": "required for a customer"}])
    if body.role != "customer" and body.account:
        raise ProblemError(422, "only customers belong to an account", errors=[
            {"loc": ["body", "account"], "field": "account", "msg": "only for customers"}])
    if state.store.user(body.name) is not None:
        raise ProblemError(409, f"user {body.name!r} already exists")
    try:
        u = state.store.add_user(body.name, body.role, account=body.account, actor=admin.name,
                                 password=body.password)
    except ValueError as exc:
        raise ProblemError(422, str(exc)) from None
    return _public(u)


@router.get("/{name}", response_model=UserPublic)
def get_user(name: str, user: CurrentUser, state: StateDep):
    """A user: admins see anyone, other callers only themselves (404 otherwise)."""
    if user.role != "admin" and name != user.name:
        raise not_found(f"user {name!r}")
    u = state.store.user(name)
    if u is None:
        raise not_found(f"user {name!r}")
    return _public(u)


@router.put("/{name}/password", status_code=204, response_class=Response)
def set_password(name: str, body: PasswordUpdate, user: CurrentUser, state: StateDep):
    """Set a password: one's own, or anyone's as admin."""
    if user.role != "admin" and name != user.name:
        raise not_found(f"user {name!r}")
    if state.store.user(name) is None:
        raise not_found(f"user {name!r}")
    state.store.set_password(name, body.password, actor=user.name)
    return Response(status_code=204)
