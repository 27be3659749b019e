"""``/api/geofences``: the current policy's geofences as GeoJSON (in and out)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import APIRouter

from ...policy.geofence import parse_geometry
from ...policy.models import Geofence
from ...store import User
from ..deps import EditorUser, StaffUser, StateDep
from ..problems import ERROR_RESPONSES, ProblemError
from ..schemas import ChangeResult, Feature, FeatureCollection, GeofenceFeatureIn
from ._common import MetaDep, change, current_policy, find

router = APIRouter(prefix="/api/geofences", tags=["geofences"], responses=ERROR_RESPONSES)


def geofence_feature(g: Geofence) -> dict:
    return {"type": "Feature", "id": g.id, "geometry": g.geometry, "properties": {
        "id": g.id, "action": g.action, "max_mbps": g.max_mbps,
        "valid_from": g.valid_from.isoformat().replace("+00:00", "Z") if g.valid_from else None,
        "valid_to": g.valid_to.isoformat().replace("+00:00", "Z") if g.valid_to else None,
        "scope": g.scope.model_dump(), "reason": g.reason, "author": g.author,
        "override_contracts": g.override_contracts}}


def _geofence(body: GeofenceFeatureIn, user: User, ident: str | None = None) -> Geofence:
    feature = {"type": "Feature", "geometry": body.geometry}
    if body.crs is not None:
        feature["crs"] = body.crs
    parse_geometry(feature, source="geofence")
    p = body.properties
    if ident is not None and p.id != ident:
        raise ProblemError(422, f"properties.id {p.id!r} differs from the URL's {ident!r}",
                           errors=[{"loc": ["body", "properties", "id"],
                                    "field": "properties.id", "msg": "must match the URL"}])
    return Geofence(id=p.id, geometry=body.geometry, action=p.action, max_mbps=p.max_mbps,
                    scope=p.scope, valid_from=p.valid_from, valid_to=p.valid_to,
                    reason=p.reason, author=user.name, override_contracts=p.override_contracts)


def _window(g: Geofence) -> tuple[datetime, datetime]:
    start = g.valid_from or datetime.now(UTC).replace(microsecond=0)
    return start, start + timedelta(days=7)


@router.get("", response_model=FeatureCollection)
def list_geofences(user: StaffUser, state: StateDep):
    return {"type": "FeatureCollection",
            "features": [geofence_feature(g) for g in current_policy(state).geofences]}


@router.get("/{geofence_id}", response_model=Feature)
def get_geofence(geofence_id: str, user: StaffUser, state: StateDep):
    return geofence_feature(find(current_policy(state).geofences, "id", geofence_id,
                                 "geofence"))


@router.post("", response_model=ChangeResult[Feature], status_code=201)
def create_geofence(body: GeofenceFeatureIn, user: EditorUser, state: StateDep, meta: MetaDep):
    """Add a geofence (a Feature whose properties are the rule); 409 with the preview when it
    breaches or weakens a contract without an approval (``X-Approval-Id``)."""
    pol = current_policy(state)
    g = _geofence(body, user)
    if any(x.id == g.id for x in pol.geofences):
        raise ProblemError(409, f"geofence {g.id!r} already exists")
    return change(state, user, meta, g.reason or f"add geofence {g.id}", geofence_feature(g),
                  window=_window(g), geofences=[*pol.geofences, g])


@router.put("/{geofence_id}", response_model=ChangeResult[Feature])
def replace_geofence(geofence_id: str, body: GeofenceFeatureIn, user: EditorUser,
                     state: StateDep, meta: MetaDep):
    pol = current_policy(state)
    find(pol.geofences, "id", geofence_id, "geofence")
    g = _geofence(body, user, geofence_id)
    return change(state, user, meta, g.reason or f"replace geofence {g.id}", geofence_feature(g),
                  window=_window(g),
                  geofences=[g if x.id == geofence_id else x for x in pol.geofences])


@router.delete("/{geofence_id}", response_model=ChangeResult[Feature])
def delete_geofence(geofence_id: str, user: EditorUser, state: StateDep, meta: MetaDep):
    pol = current_policy(state)
    old = find(pol.geofences, "id", geofence_id, "geofence")
    return change(state, user, meta, f"remove geofence {geofence_id}", window=_window(old),
                  geofences=[x for x in pol.geofences if x.id != geofence_id])
