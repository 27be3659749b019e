"""``/api/auth``: OAuth2 password flow (signed, expiring JWTs) and revocable API tokens."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Response
from fastapi.security import OAuth2PasswordRequestForm

from ..deps import CurrentUser, IntId, StateDep
from ..problems import ERROR_RESPONSES, ProblemError, not_found
from ..schemas import ApiTokenCreate, ApiTokenCreated, ApiTokenPublic, TokenPublic
from ..security import create_access_token

#: An API token's lifetime when the request names none (at most 365 days, schema-checked).
DEFAULT_TOKEN_DAYS = 90

router = APIRouter(prefix="/api/auth", tags=["auth"], responses=ERROR_RESPONSES)


@router.post("/token", response_model=TokenPublic)
def login(state: StateDep, form: Annotated[OAuth2PasswordRequestForm, Depends()]):
    """Exchange a user name and password for a signed access token."""
    user = state.store.authenticate(form.username, form.password)
    if user is None:
        raise ProblemError(401, "wrong user name or password",
                           headers={"WWW-Authenticate": "Bearer"})
    token, expires_in = create_access_token(user.name, state.key,
                                            state.settings.access_token_minutes,
                                            token_version=user.token_version)
    return TokenPublic(access_token=token, expires_in=expires_in)


@router.post("/api-tokens", response_model=ApiTokenCreated, status_code=201)
def create_api_token(body: ApiTokenCreate, user: CurrentUser, state: StateDep):
    """A revocable token for scripts; the token text is shown only in this response."""
    expires = datetime.now(UTC) + timedelta(days=body.expires_days or DEFAULT_TOKEN_DAYS)
    record, token = state.store.create_api_token(user.name, body.name, expires_at=expires)
    return ApiTokenCreated(id=record.id, name=record.name, created_at=record.created_at,
                           expires_at=record.expires_at, token=token)


@router.get("/api-tokens", response_model=list[ApiTokenPublic])
def list_api_tokens(user: CurrentUser, state: StateDep, all_users: bool = False):
    """The caller's tokens; an admin with ``all_users=true``: everyone's."""
    if all_users and user.role != "admin":
        raise ProblemError(403, "only an admin may list every user's tokens")
    tokens = state.store.all_api_tokens() if all_users else state.store.api_tokens(user.name)
    return [ApiTokenPublic(id=t.id, name=t.name, created_at=t.created_at,
                           expires_at=t.expires_at, revoked_at=t.revoked_at, user=t.user)
            for t in tokens]


@router.delete("/api-tokens/{token_id}", status_code=204, response_class=Response)
def revoke_api_token(token_id: IntId, user: CurrentUser, state: StateDep):
    """Revoke one of the caller's own tokens (404 for any other id); an admin: anyone's."""
    owner = None if user.role == "admin" else user.name
    if not state.store.revoke_api_token(owner, token_id, actor=user.name):
        raise not_found(f"API token {token_id}")
    state.auth_cache.clear()
    return Response(status_code=204)
