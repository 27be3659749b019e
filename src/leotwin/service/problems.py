"""RFC 9457 problem details: one error shape for every route.

Every error is ``application/problem+json``::

    {"type": "about:blank", "title": "Unprocessable Content", "status": 422,
     "detail": "...", "errors": [{"loc": ["body", "lat_deg"], "row": null,
                                  "field": "lat_deg", "msg": "..."}]}

``row`` names the record of an upload (numbered from 1: the first record after a CSV header,
the first GeoJSON feature) or the index of a list item in a JSON body; ``field`` the dotted
field path. Extra members (``preview`` of a refused policy change) sit next to these.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..policy.errors import PolicyError
from ..scenario import ScenarioError

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


class ErrorItem(BaseModel):
    loc: list[str | int] = Field(default_factory=list, description="where: body/query/file path")
    row: int | None = Field(None, description="record of an upload (from 1) or list index")
    field: str | None = Field(None, description="dotted field path")
    msg: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    errors: list[ErrorItem] = Field(default_factory=list)


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class ProblemError(Exception):
    """Raise anywhere in a route to answer with problem details."""

    def __init__(self, status: int, detail: str | None = None, *,
                 errors: list[ErrorItem] | list[dict] | None = None, title: str | None = None,
                 type_: str = "about:blank", headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(detail or _title(status))
        self.status, self.detail, self.title, self.type = status, detail, title, type_
        self.errors = [e if isinstance(e, ErrorItem) else ErrorItem(**e) for e in errors or []]
        self.headers, self.extra = headers, extra


def problem_response(status: int, detail: str | None = None, *,
                     errors: list[ErrorItem] | None = None, title: str | None = None,
                     type_: str = "about:blank", headers: dict[str, str] | None = None,
                     **extra: Any) -> JSONResponse:
    body = Problem(type=type_, title=title or _title(status), status=status, detail=detail,
                   errors=errors or [], **extra)
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers,
                        media_type=PROBLEM_JSON)


def not_found(what: str) -> ProblemError:
    return ProblemError(404, f"{what} not found")


def _validation_items(errors) -> list[ErrorItem]:
    items = []
    for err in errors:
        loc = [x if isinstance(x, (int, str)) else str(x) for x in err.get("loc", ())]
        inner = loc[1:] if loc and loc[0] in ("body", "query", "path", "header", "cookie") \
            else loc
        row = next((x for x in inner if isinstance(x, int)), None)
        field = ".".join(str(x) for x in inner if not isinstance(x, int)) or None
        items.append(ErrorItem(loc=loc, row=row, field=field, msg=str(err.get("msg", ""))))
    return items


def policy_error_item(exc: PolicyError, *, loc_prefix: tuple = ("body",),
                      row_offset: int = 0) -> ErrorItem:
    row = None if exc.feature is None else exc.feature + row_offset
    loc = [*loc_prefix, *(exc.field.split(".") if exc.field else [])]
    return ErrorItem(loc=loc, row=row, field=exc.field, msg=exc.message)


def install_handlers(app: FastAPI) -> None:
    """Problem-details handlers for every error a route can raise."""

    @app.exception_handler(ProblemError)
    async def _problem(request: Request, exc: ProblemError):
        return problem_response(exc.status, exc.detail, errors=exc.errors, title=exc.title,
                                type_=exc.type, headers=exc.headers, **exc.extra)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        detail = exc.detail if isinstance(exc.detail, str) else None
        return problem_response(exc.status_code, detail, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        items = _validation_items(exc.errors())
        return problem_response(422, f"{len(items)} invalid field(s) in the request",
                                errors=items)

    @app.exception_handler(ValidationError)
    async def _model_validation(request: Request, exc: ValidationError):
        items = _validation_items([{**e, "loc": ("body", *e.get("loc", ()))}
                                   for e in exc.errors()])
        return problem_response(422, f"{len(items)} invalid field(s)", errors=items)

    @app.exception_handler(ScenarioError)
    async def _scenario(request: Request, exc: ScenarioError):
        items = [ErrorItem(loc=["scenario", *(loc.split(".") if loc else [])],
                           field=loc or None, msg=msg) for loc, msg in exc.errors]
        return problem_response(422, str(exc), errors=items)

    @app.exception_handler(PolicyError)
    async def _policy(request: Request, exc: PolicyError):
        return problem_response(422, str(exc), errors=[policy_error_item(exc)])

    @app.exception_handler(PermissionError)
    async def _forbidden(request: Request, exc: PermissionError):
        return problem_response(403, str(exc))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(500, "internal error; the server log has the details")


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "description": _title(code)}
    for code in (400, 401, 403, 404, 409, 413, 422)
}
