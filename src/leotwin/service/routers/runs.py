"""``/api/runs``: start runs (background jobs), progress, and their results.

A customer sees its own account's runs and the operator's shared runs (no account), and in
every result only its own account's terminals (Parquet reads filtered by account); a run of
another account is answered 404.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from fastapi import APIRouter, Query, Response
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse

from ...store import RunRecord, User
from ..deps import CurrentUser, IntId, RunCreator, StaffUser, StateDep, tenant
from ..problems import ERROR_RESPONSES, ErrorItem, ProblemError, not_found
from ..results import FramesTooLarge, RunData
from ..runs import load_for_run, rerun_without, scenario_path, window_of_manifest
from ..schemas import (
    AvailabilityPublic,
    CounterfactualPublic,
    CounterfactualRequest,
    FeatureCollection,
    FramesPublic,
    OutageInterval,
    RunCreate,
    RunPublic,
    SummaryPublic,
    TerminalTimeline,
    Time,
)
from ..security import private_dir
from ..state import ServiceState

router = APIRouter(prefix="/api/runs", tags=["runs"], responses=ERROR_RESPONSES)
PARQUET = "application/vnd.apache.parquet"


def _public(r: RunRecord, user: User | None = None) -> RunPublic:
    scenario = r.scenario
    if scenario and user is not None and tenant(user) is not None and (
            "/" in scenario or "\\" in scenario):
        scenario = Path(scenario).name  # a customer never sees the server's paths
    return RunPublic(id=r.id, name=r.name, status=r.status, progress=r.progress,
                     chunks_done=r.chunks_done, chunks_total=r.chunks_total,
                     created_at=r.created_at, created_by=r.created_by, account=r.account,
                     scenario=scenario, start=r.time_start, stop=r.time_stop,
                     step_s=r.step_s, n_terminals=r.n_terminals, error=r.error)


def _run(state: ServiceState, user: User, run_id: int) -> RunRecord:
    r = state.store.get_run(run_id, visible_to=tenant(user))
    if r is None:
        raise not_found(f"run {run_id}")
    return r


def _data(state: ServiceState, user: User, run_id: int) -> tuple[RunRecord, RunData]:
    r = _run(state, user, run_id)
    if r.status != "done":
        raise ProblemError(409, f"run {run_id} is {r.status}; results exist once it is done")
    try:
        return r, state.results.get(r.id, r.out_dir)
    except (OSError, ValueError) as exc:
        raise ProblemError(409, f"run {run_id}: its directory cannot be read ({exc})") from None


def _utc(v: datetime | None) -> datetime | None:
    return None if v is None else (v.replace(tzinfo=UTC) if v.tzinfo is None
                                   else v.astimezone(UTC))


@router.get("", response_model=list[RunPublic])
def list_runs(user: CurrentUser, state: StateDep,
              status: Literal["queued", "running", "done", "failed"] | None = None):
    return [_public(r, user)
            for r in state.store.runs(visible_to=tenant(user), status=status)]


@router.post("", response_model=RunPublic, status_code=202,
             responses={201: {"description": "a run directory registered (run_dir)"}})
def create_run(body: RunCreate, user: RunCreator, state: StateDep):
    """Start a run of a scenario in the background (202; poll ``GET /api/runs/{id}``), or
    (admin) register a finished run directory (``run_dir``)."""
    if body.run_dir is not None:
        return _register(body, user, state)
    if not body.scenario:
        raise ProblemError(422, "give a scenario (or, admin only, a run_dir)", errors=[
            ErrorItem(loc=["body", "scenario"], field="scenario", msg="required")])
    start, stop = _utc(body.start), _utc(body.stop)
    path = scenario_path(body.scenario, allow_path=user.role == "admin")
    sc = load_for_run(path, start, stop)  # ScenarioError → 422 before anything is queued
    times = sc.times()
    t0 = datetime.fromisoformat(str(np.datetime64(times[0], "s"))).replace(tzinfo=UTC)
    t1 = datetime.fromisoformat(str(np.datetime64(times[-1], "s"))).replace(tzinfo=UTC)
    n_chunks = -(-int(times.size) // int(sc.chunk_steps))
    cap = state.settings.max_active_runs_per_user
    active = [r for r in state.store.runs(status="queued") + state.store.runs(status="running")
              if r.created_by == user.name]
    if len(active) >= cap:
        raise ProblemError(429, f"{user.name} has {len(active)} runs queued or running; at "
                           f"most {cap} (LEOTWIN_MAX_ACTIVE_RUNS_PER_USER): wait, or cancel "
                           "one with DELETE /api/runs/{id}")
    runs_dir = state.settings.runs_dir
    private_dir(runs_dir)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    out_dir = runs_dir / f"run-{stamp}"
    record = state.store.create_run(
        name=body.name or f"{sc.name} {t0:%Y-%m-%d %H:%M}", out_dir=str(out_dir),
        created_by=user.name, account=tenant(user), scenario=body.scenario, time_start=t0,
        time_stop=t1, step_s=float(sc.spec.time.step_s), chunks_total=n_chunks)
    state.runs.submit(record, sc, report=body.report)
    return _public(record, user)


def _register(body: RunCreate, user: User, state: ServiceState) -> RunPublic:
    if user.role != "admin":
        raise ProblemError(403, "registering a run directory needs the admin role")
    root = Path(body.run_dir)
    if not root.is_absolute():
        raise ProblemError(422, "run_dir must be an absolute path", errors=[
            ErrorItem(loc=["body", "run_dir"], field="run_dir", msg="not absolute")])
    root = root.resolve()  # no .. or symlink escapes
    roots = [Path(x).resolve() for x in (state.settings.runs_dir, *state.settings.run_roots)]
    if not any(root.is_relative_to(x) for x in roots):
        raise ProblemError(422, "run_dir must be under the service's runs directory or a "
                           "directory of LEOTWIN_RUN_ROOTS", errors=[
            ErrorItem(loc=["body", "run_dir"], field="run_dir", msg="not an allowed root")])
    if any(Path(r.out_dir).resolve() == root for r in state.store.runs()):
        raise ProblemError(409, "this run directory is registered already", errors=[
            ErrorItem(loc=["body", "run_dir"], field="run_dir", msg="registered already")])
    try:
        manifest = RunData(root).manifest
    except (OSError, ValueError) as exc:
        raise ProblemError(422, f"not a finished run directory: {exc}", errors=[
            ErrorItem(loc=["body", "run_dir"], field="run_dir", msg=str(exc))]) from None
    scenario = body.scenario
    if scenario is None:
        try:
            scenario = json.loads((root / "chunks" / "progress.json").read_text()).get(
                "scenario")
        except (OSError, ValueError):
            scenario = None
    if scenario is not None:
        scenario_path(scenario, allow_path=True)
    start, stop, step, n_terms = window_of_manifest(manifest)
    record = state.store.create_run(
        name=body.name or root.name, out_dir=str(root), created_by=user.name, account=None,
        scenario=scenario, status="done", time_start=start, time_stop=stop, step_s=step,
        n_terminals=n_terms, chunks_done=1, chunks_total=1)
    return JSONResponse(_public(record).model_dump(mode="json"), status_code=201)


@router.delete("/{run_id}", response_model=RunPublic)
def cancel_run(run_id: IntId, user: CurrentUser, state: StateDep):
    """Cancel a queued run (its creator or an admin); a started run is not interrupted
    (409)."""
    r = _run(state, user, run_id)
    if user.role != "admin" and r.created_by != user.name:
        raise ProblemError(403, "only the run's creator or an admin may cancel it")
    if r.status != "queued" or not state.runs.cancel(r.id):
        raise ProblemError(409, f"run {r.id} is {r.status if r.status != 'queued' else 'starting'}"
                           "; only a queued run can be cancelled")
    state.store.update_run(r.id, status="failed", finished_at=datetime.now(UTC),
                           error=f"cancelled by {user.name}")
    return _public(state.store.get_run(r.id), user)


@router.get("/{run_id}", response_model=RunPublic)
def get_run(run_id: IntId, user: CurrentUser, state: StateDep):
    r = _run(state, user, run_id)
    out = _public(r, user)
    own = tenant(user)
    if own is not None and r.status == "done" and r.account is None:
        try:  # a shared run: count only the caller's terminals
            out.n_terminals = len(state.results.get(r.id, r.out_dir).terminals(own))
        except (OSError, ValueError):
            pass
    return out


@router.get("/{run_id}/terminals", response_model=FeatureCollection)
def run_terminals(run_id: IntId, user: CurrentUser, state: StateDep):
    """The run's terminals as Points; ``index`` is the terminal's column in ``/frames``."""
    _, data = _data(state, user, run_id)
    df = data.terminals(tenant(user))
    lon, lat = df["lon_deg"].to_numpy(float), df["lat_deg"].to_numpy(float)
    feats = [{"type": "Feature", "id": t,
              "geometry": None if not (np.isfinite(x) and np.isfinite(y))
              else {"type": "Point", "coordinates": [float(x), float(y)]},
              "properties": {"terminal": t, "account": a, "index": k}}
             for k, (t, a, x, y) in enumerate(zip(df["terminal"].astype(str),
                                                  df["account"].astype(str), lon, lat,
                                                  strict=True))]
    body = json.dumps({"type": "FeatureCollection", "features": feats}, separators=(",", ":"))
    return Response(body, media_type="application/json")


@router.get("/{run_id}/frames", response_model=FramesPublic)
def run_frames(run_id: IntId, user: CurrentUser, state: StateDep,
               every: Annotated[int, Query(ge=1, le=100_000)] = 1,
               start: Time | None = None, stop: Time | None = None):
    """State code per (time, terminal); ``every``/``start``/``stop`` thin the times."""
    _, data = _data(state, user, run_id)

    def t64(v):
        return None if v is None else np.datetime64(_utc(v).replace(tzinfo=None), "ns")

    try:
        body = data.frames_json(tenant(user), every=every, start=t64(start), stop=t64(stop))
    except FramesTooLarge as exc:
        raise ProblemError(413, str(exc), errors=[ErrorItem(
            loc=["query", "every"], field="every",
            msg=f"at least {exc.min_every} for this window")]) from None
    return Response(body, media_type="application/json")


@router.get("/{run_id}/availability", response_model=AvailabilityPublic)
def run_availability(run_id: IntId, user: CurrentUser, state: StateDep):
    _, data = _data(state, user, run_id)
    return data.availability(tenant(user))


@router.get("/{run_id}/terminals/{terminal}/timeline", response_model=TerminalTimeline)
def terminal_timeline(run_id: IntId, terminal: str, user: CurrentUser, state: StateDep):
    _, data = _data(state, user, run_id)
    account = data.has_terminal(terminal, tenant(user))
    if account is None:
        raise not_found(f"terminal {terminal!r} in run {run_id}")
    return data.terminal_timeline(terminal, account)


@router.get("/{run_id}/outages", response_model=list[OutageInterval],
            responses={200: {"content": {PARQUET: {}, "application/geo+json": {}}}})
def run_outages(run_id: IntId, user: CurrentUser, state: StateDep,
                format: Literal["json", "parquet", "geojson"] = "json",
                cause: str | None = None):
    """Outage intervals (terminal, start, end, duration_s, cause, rule) as JSON, Parquet or
    GeoJSON points at the terminals."""
    _, data = _data(state, user, run_id)
    own = tenant(user)
    terms = data.terminals(own)
    accounts = dict(zip(terms["terminal"].astype(str), terms["account"].astype(str),
                        strict=True))
    ids = list(accounts) if own is not None else None
    if format == "parquet":
        table = data.outage_table(ids, cause)
        acct = pa.array([accounts.get(str(t), "") for t in table.column("terminal").to_pylist()],
                        type=pa.string())
        table = table.append_column("account", acct).replace_schema_metadata(None)
        buf = io.BytesIO()
        pq.write_table(table, buf)
        return Response(buf.getvalue(), media_type=PARQUET, headers={
            "Content-Disposition": f'attachment; filename="run-{run_id}-outages.parquet"'})
    rows = data.outages(ids, cause, accounts)
    if format == "geojson":
        pos = terms.set_index(terms["terminal"].astype(str))
        feats = []
        for r in rows:
            x, y = pos.at[r["terminal"], "lon_deg"], pos.at[r["terminal"], "lat_deg"]
            geom = ({"type": "Point", "coordinates": [float(x), float(y)]}
                    if np.isfinite(x) and np.isfinite(y) else None)
            feats.append({"type": "Feature", "geometry": geom, "properties": r})
        return Response(json.dumps({"type": "FeatureCollection", "features": feats}),
                        media_type="application/geo+json")
    return rows


@router.get("/{run_id}/summary", response_model=SummaryPublic)
def run_summary(run_id: IntId, user: CurrentUser, state: StateDep):
    """Terminal-hours lost (and degraded) by cause, with what the dish showed, per account."""
    r, data = _data(state, user, run_id)
    return {"run_id": r.id, **data.summary(tenant(user))}


@router.get("/{run_id}/timeline",
            responses={200: {"content": {PARQUET: {}, "application/json": {}},
                             "description": "the (time, terminal) table, streamed by chunk"}})
def run_timeline(run_id: IntId, user: CurrentUser, state: StateDep,
                 format: Literal["parquet", "json"] = "parquet"):
    """The whole (time, terminal) timeline — a customer's rows only — streamed by chunk."""
    r, data = _data(state, user, run_id)
    own = tenant(user)
    if format == "parquet":
        name = f"run-{r.id}-timeline.parquet"
        if own is None:
            return FileResponse(data.path("timeline"), media_type=PARQUET, filename=name)
        return StreamingResponse(data.timeline_parquet(own), media_type=PARQUET, headers={
            "Content-Disposition": f'attachment; filename="{name}"'})
    return StreamingResponse(data.timeline_json(own), media_type="application/json")


@router.post("/{run_id}/counterfactual", response_model=CounterfactualPublic)
def run_counterfactual(run_id: IntId, body: CounterfactualRequest, user: StaffUser,
                       state: StateDep):
    """Rerun without some elements (``geofence:ID``, ``jammer:ID``, ``failure:SAT``,
    ``outage:ID``): terminal-hours restored by account and by area (H3 res. 3). Operator
    staff only (a rerun costs as much as the run); an element the run's scenario does not
    have is named in a 422."""
    r, data = _data(state, user, run_id)
    bad = [ErrorItem(loc=["body", "without", k], row=k, field="without",
                     msg=f"{item!r} is not geofence:ID, jammer:ID, failure:SAT or outage:ID")
           for k, item in enumerate(body.without)
           if item.partition(":")[0] not in ("geofence", "jammer", "failure", "outage")
           or not item.partition(":")[2]]
    if bad:
        raise ProblemError(422, "unknown elements to remove", errors=bad)
    key = tuple(sorted(set(body.without)))
    cf = data.cached_counterfactual(key)
    if cf is None:
        timeline = pq.read_table(data.path("timeline"),
                                 columns=["time", "terminal", "served"]).to_pandas()
        cf = rerun_without(r, timeline, list(key))
        data.store_counterfactual(key, cf)
    table = cf.terminals
    own = tenant(user)
    if own is not None:
        table = table[table["account"].astype(str) == own]
    cols = ["hours_restored", "hours_lost"]

    def rows(by: str) -> list[dict]:
        g = table.groupby(by, as_index=False)[cols].sum()
        return [{"key": str(k), "hours_restored": float(a), "hours_lost": float(b)}
                for k, a, b in zip(g[by], g["hours_restored"], g["hours_lost"], strict=True)]

    return {"run_id": r.id, "without": list(key),
            "hours_restored": float(table["hours_restored"].sum()),
            "hours_lost": float(table["hours_lost"].sum()),
            "by_account": rows("account"), "by_area": rows("area")}
