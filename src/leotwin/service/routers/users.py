"""``/api/users``: the caller, and user management (admin)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from ..deps import AdminUser, CurrentUser, StateDep
from ..problems import ERROR_RESPONSES, ProblemError, not_found
from ..schemas import PasswordUpdate, UserCreate, UserPublic, UserUpdate

router = APIRouter(prefix="/api/users", tags=["users"], responses=ERROR_RESPONSES)


def _public(u) -> UserPublic:
    return UserPublic(name=u.name, role=u.role, account=u.account, disabled=u.disabled)


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
    """Set a password: one's own (with the current password), or anyone's as admin. Every
    access token issued before is void afterwards (the user's token version changes)."""
    if user.role != "admin" and name != user.name:
        raise not_found(f"user {name!r}")
    if state.store.user(name) is None:
        raise not_found(f"user {name!r}")
    if name == user.name and (not body.current_password or state.store.authenticate(
            name, body.current_password) is None):
        raise ProblemError(403, "changing one's own password needs the current password",
                           errors=[{"loc": ["body", "current_password"],
                                    "field": "current_password", "msg": "wrong or missing"}])
    state.store.set_password(name, body.password, actor=user.name)
    state.auth_cache.clear()
    return Response(status_code=204)


@router.patch("/{name}", response_model=UserPublic)
def update_user(name: str, body: UserUpdate, admin: AdminUser, state: StateDep):
    """Change a user's role or account, or disable it (admin). A disabled user's tokens
    (access and API) are refused at once."""
    fields = body.model_dump(exclude_unset=True)
    kw = {}
    if "account" in fields:
        kw["account"] = fields["account"]
    try:
        u = state.store.update_user(name, actor=admin.name, role=fields.get("role"),
                                    disabled=fields.get("disabled"), reason=body.reason, **kw)
    except ValueError as exc:
        if str(exc).startswith("unknown user"):
            raise not_found(f"user {name!r}") from None
        raise ProblemError(422, str(exc)) from None
    state.auth_cache.clear()
    return _public(u)


@router.delete("/{name}", response_model=UserPublic)
def disable_user(name: str, admin: AdminUser, state: StateDep):
    """Disable a user (kept for the audit log; its tokens stop working)."""
    return update_user(name, UserUpdate(disabled=True, reason=f"disable {name}"), admin, state)
