"""``/api/service-areas``: licensed countries; GeoJSON out (country polygons), JSON in."""

from __future__ import annotations

import shapely
from fastapi import APIRouter

from ...policy.geofence import country_polygons
from ...policy.models import ServiceArea
from ..deps import EditorUser, StaffUser, StateDep
from ..problems import ERROR_RESPONSES, ProblemError
from ..schemas import (
    ChangeResult,
    Feature,
    FeatureCollection,
    ServiceAreaCreate,
    ServiceAreaUpdate,
)
from ._common import MetaDep, change, current_policy, find

router = APIRouter(prefix="/api/service-areas", tags=["service areas"],
                   responses=ERROR_RESPONSES)


def _feature(area: ServiceArea) -> dict:
    try:
        polys = country_polygons(area.countries)
        geometry = shapely.geometry.mapping(shapely.union_all(list(polys.values())))
    except (KeyError, ValueError):  # a code without a bundled border
        geometry = None
    return {"type": "Feature", "id": area.id, "geometry": geometry,
            "properties": {"id": area.id, "countries": list(area.countries)}}


def _check_countries(area: ServiceArea) -> None:
    try:
        country_polygons(area.countries)
    except (KeyError, ValueError) as exc:
        raise ProblemError(422, f"unknown country code: {exc}", errors=[
            {"loc": ["body", "countries"], "field": "countries",
             "msg": "not an ISO 3166-1 alpha-3 code with a bundled border"}]) from None


@router.get("", response_model=FeatureCollection)
def list_service_areas(user: StaffUser, state: StateDep):
    return {"type": "FeatureCollection",
            "features": [_feature(a) for a in current_policy(state).service_areas]}


@router.get("/{area_id}", response_model=Feature)
def get_service_area(area_id: str, user: StaffUser, state: StateDep):
    return _feature(find(current_policy(state).service_areas, "id", area_id, "service area"))


@router.post("", response_model=ChangeResult[ServiceAreaCreate], status_code=201)
def create_service_area(body: ServiceAreaCreate, user: EditorUser, state: StateDep,
                        meta: MetaDep):
    pol = current_policy(state)
    if any(a.id == body.id for a in pol.service_areas):
        raise ProblemError(409, f"service area {body.id!r} already exists")
    area = ServiceArea(**body.model_dump())
    _check_countries(area)
    return change(state, user, meta, f"add service area {area.id}", area.model_dump(),
                  service_areas=[*pol.service_areas, area])


@router.put("/{area_id}", response_model=ChangeResult[ServiceAreaCreate])
def update_service_area(area_id: str, body: ServiceAreaUpdate, user: EditorUser,
                        state: StateDep, meta: MetaDep):
    pol = current_policy(state)
    find(pol.service_areas, "id", area_id, "service area")
    area = ServiceArea(id=area_id, countries=body.countries)
    _check_countries(area)
    return change(state, user, meta, f"update service area {area_id}", area.model_dump(),
                  service_areas=[area if a.id == area_id else a for a in pol.service_areas])


@router.delete("/{area_id}", response_model=ChangeResult[ServiceAreaCreate])
def delete_service_area(area_id: str, user: EditorUser, state: StateDep, meta: MetaDep):
    pol = current_policy(state)
    find(pol.service_areas, "id", area_id, "service area")
    return change(state, user, meta, f"remove service area {area_id}",
                  service_areas=[a for a in pol.service_areas if a.id != area_id])
