"""The app factory: ``create_app(settings) -> FastAPI``.

One store (:class:`leotwin.store.Store`, migrated on open) per app; one router per resource
under ``/api``; problem-details handlers for every error; a body-size limit; CORS for the
configured origins; the dashboard's built files from ``static/`` at ``/`` when present.
"""

from __future__ import annotations

import gc
import logging
import time
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..config import Settings, get_settings
from ..store import Store
from .problems import PROBLEM_JSON, ProblemError, install_handlers, problem_response
from .results import ResultCache
from .routers import (
    accounts,
    audit,
    auth,
    contracts,
    explain,
    geofences,
    layers,
    plans,
    policy,
    runs,
    service_areas,
    terminals,
    users,
)
from .runs import RunManager
from .schemas import Health
from .security import signing_key
from .state import PolicyCache, ServiceState

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
ROUTERS = (auth, users, accounts, terminals, plans, service_areas, geofences, contracts, policy,
           explain, audit, runs, layers)


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413 (declared or streamed)."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                return await problem_response(400, "invalid Content-Length")(scope, receive, send)
            if size > self.limit:
                return await problem_response(
                    413, f"the request body is {size} bytes; at most {self.limit} "
                    "(LEOTWIN_MAX_UPLOAD_BYTES)")(scope, receive, send)
        total = 0

        async def limited():
            nonlocal total
            message = await receive()
            if message["type"] == "http.request":
                total += len(message.get("body", b""))
                if total > self.limit:
                    raise StarletteHTTPException(413, f"the request body exceeds {self.limit} "
                                                 "bytes (LEOTWIN_MAX_UPLOAD_BYTES)")
            return message

        await self.app(scope, limited, send)


def _openapi(app: FastAPI):
    """The OpenAPI document, with error responses typed ``application/problem+json``."""
    def build():
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes,
                             description=app.description)
        for item in schema.get("paths", {}).values():
            for op in item.values():
                for code, resp in op.get("responses", {}).items():
                    content = resp.get("content")
                    if code[:1] in "45" and content and "application/json" in content:
                        content[PROBLEM_JSON] = content.pop("application/json")
        app.openapi_schema = schema
        return schema
    return build


def warm_up(state: ServiceState) -> None:
    """Pay the one-time costs before the first request instead of in it: parse the policy
    history and compile the latest version's zones (country borders, geofences, contracts:
    ~0.5 s cold) by explaining one of its terminals now, the way a request does
    (:meth:`~leotwin.service.state.ExplainCache.answer`; its one answer, for this instant,
    is as valid as any). A failure is logged, never fatal (the first request then pays, or
    reports the problem)."""
    t0 = time.perf_counter()
    try:
        history = state.policy.history()
        if history is None:
            return
        version = history.versions[-1]
        term = next((t for t in version.policy.terminals
                     if t.lat_deg is not None and t.lon_deg is not None), None)
        state.explain.terminals(version)
        if term is not None:
            state.explain.answer(version, term,
                                 np.datetime64(datetime.now(UTC).replace(tzinfo=None), "ns"))
    except Exception:
        log.warning("warming the policy caches failed", exc_info=True)
        return
    log.info("policy caches warm in %.0f ms", 1e3 * (time.perf_counter() - t0))


def create_app(settings: Settings | None = None, *, freeze_heap: bool = False) -> FastAPI:
    """The leotwin REST service on ``settings`` (default: the environment's).

    ``freeze_heap`` (for a process that only serves, as ``leotwin serve``): after the warm-up,
    collect once and freeze the heap (``gc.freeze``). The imported libraries and the parsed
    policy are a few hundred thousand long-lived objects; without this the cycle collector's
    full passes traverse all of them now and then under load, stalling every request in
    flight for ~100 ms (measured with ``bench/service_bench.py``). Frozen objects are still
    freed by reference counting; only the cycle collector skips them."""
    settings = settings or get_settings()
    store = Store.open(settings.database_url)
    state = ServiceState(settings=settings, store=store, key=signing_key(settings),
                         policy=PolicyCache(store), runs=RunManager(store),
                         results=ResultCache())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await run_in_threadpool(warm_up, state)
        if freeze_heap:
            gc.collect()
            gc.freeze()
        yield
        state.runs.shutdown()
        store.close()

    app = FastAPI(title="leotwin", version=__version__, lifespan=lifespan,
                  description="Digital twin and control plane of a Starlink-like LEO system: "
                              "policy, explanations, audit, runs and their outages.")
    app.state.leotwin = state
    install_handlers(app)
    app.add_middleware(BodyLimit, limit=settings.max_upload_bytes)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                           allow_credentials=False, allow_methods=["*"],
                           allow_headers=["*"])
    for module in ROUTERS:
        app.include_router(module.router)

    @app.get("/api/health", response_model=Health, tags=["health"])
    def health():
        return Health(status="ok", version=__version__, database=store.dialect)

    api_routes = [r for r in app.routes if isinstance(r, APIRoute)]

    @app.api_route("/api/{rest:path}", methods=["GET", "HEAD", "POST", "PUT", "PATCH",
                                               "DELETE", "OPTIONS"], include_in_schema=False)
    async def unknown_api(rest: str):
        """Any other ``/api`` path: 404 problem details (405 for a known path with another
        method), never the dashboard's static files."""
        path = f"/api/{rest}"
        allowed = sorted({m for r in api_routes if r.path_regex.match(path)
                          for m in (r.methods or ())})
        if allowed:
            raise ProblemError(405, f"{path} allows {', '.join(allowed)}",
                               headers={"Allow": ", ".join(allowed)})
        raise ProblemError(404, f"no API route {path}")

    if (STATIC_DIR / "index.html").is_file():
        app.mount("/", StaticFiles(directory=STATIC_DIR, html=True), name="dashboard")
    else:
        @app.get("/", response_class=HTMLResponse, include_in_schema=False)
        def no_dashboard():
            return HTMLResponse(
                "<!doctype html><title>leotwin</title><p>The leotwin API is at "
                "<a href='/docs'>/docs</a>. The dashboard is not built into this "
                f"installation ({STATIC_DIR} has no index.html).</p>")

    app.openapi = _openapi(app)
    log.info("leotwin service on %s", store.engine.url.render_as_string(hide_password=True))
    return app
