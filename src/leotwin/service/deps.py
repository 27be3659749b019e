"""``Annotated`` dependencies: the store, the settings, the caller and role checks.

Roles: ``admin`` holds every right; ``policy_editor`` changes the policy; ``approver``
approves changes that breach a contract; ``auditor`` reads the policy and the audit log;
``customer`` sees and changes only its own account's terminals and runs.

Tenancy (customers): resources of another account are answered 404 when addressed by id
(the same answer as for an id that does not exist, so existence does not leak); an explicit
``account`` naming another account (list filter, body field, import row) is refused with 403
whatever that account is. Every customer list is filtered in the SQL query or the Parquet read.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import OAuth2PasswordBearer
from starlette.concurrency import run_in_threadpool

from ..config import Settings
from ..store import Store, User
from ..store.repository import API_TOKEN_PREFIX
from .problems import ProblemError
from .security import access_token_claims
from .state import ServiceState

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/auth/token", auto_error=False,
                                     description="a JWT from /api/auth/token or an API token")


# Dependencies without I/O are ``async def`` (no thread-pool hop); any that touches the store
# is a plain ``def``, which FastAPI runs in the thread pool: a database call on the event loop
# would stall every other request.
async def get_state(request: Request) -> ServiceState:
    return request.app.state.leotwin


async def get_store(request: Request) -> Store:
    return request.app.state.leotwin.store


async def get_settings_dep(request: Request) -> Settings:
    return request.app.state.leotwin.settings


StateDep = Annotated[ServiceState, Depends(get_state)]
#: A numeric id in a path (within the databases' 32-bit integer range).
IntId = Annotated[int, Path(ge=1, le=2_147_483_647)]
StoreDep = Annotated[Store, Depends(get_store)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]

_UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}
AUTH_CACHE_S = 2.0


def _remembered_user(state: ServiceState, token: str) -> User | None:
    hit = state.auth_cache.get(token)
    return hit[1] if hit is not None and hit[0] > time.monotonic() else None


def user_of_token(state: ServiceState, token: str) -> User | None:
    """The user a bearer token (access JWT or API token) stands for, or None.

    A valid answer is remembered for ``AUTH_CACHE_S`` seconds (the token itself is checked
    again after that: expiry, revocation, the user); this process forgets it at once when a
    token is revoked through it, another process within ``AUTH_CACHE_S``."""
    if not token:
        return None
    now = time.monotonic()
    hit = _remembered_user(state, token)
    if hit is not None:
        return hit
    if token.startswith(API_TOKEN_PREFIX):
        user = state.store.api_token_user(token)
    else:
        claims = access_token_claims(token, state.key)
        user = None if claims is None else state.store.user(claims[0])
        if user is not None and user.token_version != claims[1]:
            user = None  # the password changed (or the user was disabled) since it was issued
    if user is not None and user.disabled:
        user = None
    if user is not None:
        if len(state.auth_cache) > 10_000:
            state.auth_cache.clear()
        state.auth_cache[token] = (now + AUTH_CACHE_S, user)
    return user


async def get_current_user(state: StateDep,
                           token: Annotated[str | None, Depends(oauth2_scheme)]) -> User:
    """The caller: a remembered token on the event loop (a dictionary look-up, no thread-pool
    hop on every request), any other in the thread pool (it may query the store)."""
    if not token:
        raise ProblemError(401, "not authenticated: send Authorization: Bearer <token>",
                           headers=_UNAUTHORIZED)
    user = _remembered_user(state, token)
    if user is None:
        user = await run_in_threadpool(user_of_token, state, token)
    if user is None:
        raise ProblemError(401, "invalid, expired or revoked token", headers=_UNAUTHORIZED)
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


def require_roles(*roles: str):
    """A dependency admitting ``admin`` and ``roles``; 403 for any other role."""
    allowed = {"admin", *roles}

    async def check(user: CurrentUser) -> User:
        if user.role not in allowed:
            raise ProblemError(403, f"role {user.role!r} may not do this; it needs "
                               f"{' or '.join(sorted(allowed))}")
        return user

    return check


AdminUser = Annotated[User, Depends(require_roles())]
EditorUser = Annotated[User, Depends(require_roles("policy_editor"))]
StaffUser = Annotated[User, Depends(require_roles("policy_editor", "approver", "auditor"))]
AuditReader = Annotated[User, Depends(require_roles("auditor"))]
TerminalWriter = Annotated[User, Depends(require_roles("policy_editor", "customer"))]
RunCreator = Annotated[User, Depends(require_roles("policy_editor", "customer"))]


def tenant(user: User) -> str | None:
    """The account a caller is confined to (customers), or None (operator staff)."""
    return user.account if user.role == "customer" else None


def check_account_filter(user: User, account: str | None) -> str | None:
    """The account to filter on: a customer's own (403 if it names another), else ``account``."""
    own = tenant(user)
    if own is None:
        return account
    if account is not None and account != own:
        raise ProblemError(403, "a customer may only use its own account")
    return own
