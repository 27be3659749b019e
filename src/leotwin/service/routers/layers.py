"""``/api/layers/{name}``: the bundled public map layers as GeoJSON (no token needed)."""

from __future__ import annotations

import functools
import json
from importlib import resources

import numpy as np
from fastapi import APIRouter, Response

from ...ground import load_gateways, load_pops
from ..problems import ERROR_RESPONSES, not_found
from ..schemas import FeatureCollection

router = APIRouter(prefix="/api/layers", tags=["layers"], responses=ERROR_RESPONSES)

LAYERS = ("countries", "oblasts", "gateways", "pops")
_FILES = {"countries": "ne_110m_admin0_world.geojson", "oblasts": "ukraine_oblasts.geojson"}


def _points(frame, key: str, props: list[str]) -> dict:
    lon = frame["lon_deg"].to_numpy(float)
    lat = frame["lat_deg"].to_numpy(float)
    features = []
    for k in np.flatnonzero(np.isfinite(lon) & np.isfinite(lat)):  # a few hundred sites
        row = frame.iloc[k]
        properties = {key: str(row[key])}
        for p in props:
            v = row.get(p)
            properties[p] = None if v is None or (isinstance(v, float) and not np.isfinite(v)) \
                else (v.item() if hasattr(v, "item") else v)
        features.append({"type": "Feature", "id": str(row[key]),
                         "geometry": {"type": "Point", "coordinates": [float(lon[k]),
                                                                       float(lat[k])]},
                         "properties": properties})
    return {"type": "FeatureCollection", "features": features}


@functools.cache
def layer_bytes(name: str) -> bytes:
    if name in _FILES:
        path = resources.files("leotwin.data").joinpath("borders", _FILES[name])
        doc = json.loads(path.read_text(encoding="utf-8"))
        return json.dumps(doc, separators=(",", ":")).encode("utf-8")
    if name == "gateways":
        doc = _points(load_gateways(), "gateway", ["name", "pop", "country", "antennas"])
    else:
        doc = _points(load_pops(), "pop", ["name", "pop_code", "country"])
    return json.dumps(doc, separators=(",", ":")).encode("utf-8")


@router.get("/{name}", response_model=FeatureCollection)
def get_layer(name: str):
    """``countries`` (Natural Earth 1:110m), ``oblasts`` (Ukraine), ``gateways``, ``pops``."""
    if name not in LAYERS:
        raise not_found(f"layer {name!r} (layers: {', '.join(LAYERS)})")
    return Response(layer_bytes(name), media_type="application/json",
                    headers={"Cache-Control": "public, max-age=3600"})
