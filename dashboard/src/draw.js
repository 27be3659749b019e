// A small polygon drawing tool on the map (no external library, works offline): click to add
// vertices, double-click or "Finish" to close the ring, Escape or "Clear" to discard. An uploaded
// GeoJSON polygon is shown the same way.
import { emptyFC } from "./map.js";

const PIXEL_TOLERANCE = 4; // a double-click's two clicks land on (almost) the same pixel

export class PolygonDrawer {
  constructor(map, { onChange } = {}) {
    this.map = map;
    this.onChange = onChange;
    this.active = false;
    this.vertices = []; // [lon, lat]
    this.cursor = null;
    this.geometry = null; // finished Polygon / MultiPolygon
    map.addSource("draft", { type: "geojson", data: emptyFC() });
    map.addLayer({
      id: "draft-fill",
      type: "fill",
      source: "draft",
      filter: ["==", ["geometry-type"], "Polygon"],
      paint: { "fill-color": "#5e3c99", "fill-opacity": 0.18 },
    });
    map.addLayer({
      id: "draft-line",
      type: "line",
      source: "draft",
      filter: ["in", ["geometry-type"], ["literal", ["Polygon", "LineString"]]],
      paint: { "line-color": "#5e3c99", "line-width": 2 },
    });
    map.addLayer({
      id: "draft-vertex",
      type: "circle",
      source: "draft",
      filter: ["==", ["geometry-type"], "Point"],
      paint: {
        "circle-radius": 4,
        "circle-color": "#ffffff",
        "circle-stroke-color": "#5e3c99",
        "circle-stroke-width": 2,
      },
    });
    map.on("click", (e) => {
      if (!this.active) return;
      this.addVertex([e.lngLat.lng, e.lngLat.lat], e.point);
    });
    map.on("dblclick", (e) => {
      if (!this.active) return;
      e.preventDefault();
      this.finish();
    });
    map.on("mousemove", (e) => {
      if (!this.active || this.vertices.length === 0) return;
      this.cursor = [e.lngLat.lng, e.lngLat.lat];
      this.render();
    });
    window.addEventListener("keydown", (e) => {
      if (e.key === "Escape" && this.active) this.clear();
    });
  }

  start() {
    this.clear(false);
    this.active = true;
    this.map.doubleClickZoom.disable();
    this.map.getCanvas().style.cursor = "crosshair";
    this.changed();
  }

  addVertex(lonlat, point) {
    const last = this.vertices[this.vertices.length - 1];
    if (last && point) {
      const p = this.map.project(last);
      if (Math.hypot(p.x - point.x, p.y - point.y) <= PIXEL_TOLERANCE) return;
    }
    this.vertices.push(lonlat);
    this.render();
    this.changed();
  }

  /** Close the ring. False (and still drawing) with fewer than three vertices. */
  finish() {
    if (this.vertices.length < 3) return false;
    const ring = this.vertices.map(([x, y]) => [round6(x), round6(y)]);
    ring.push(ring[0].slice());
    this.geometry = { type: "Polygon", coordinates: [ring] };
    this.stopDrawing();
    this.render();
    this.changed();
    return true;
  }

  stopDrawing() {
    this.active = false;
    this.cursor = null;
    this.map.getCanvas().style.cursor = "";
    // re-enable after the current dblclick has been handled
    setTimeout(() => this.map.doubleClickZoom.enable(), 0);
  }

  clear(notify = true) {
    if (this.active) this.stopDrawing();
    this.vertices = [];
    this.geometry = null;
    this.render();
    if (notify) this.changed();
  }

  /** Show an uploaded geometry (Polygon or MultiPolygon) as the drawn one. */
  setGeometry(geometry) {
    this.clear(false);
    this.geometry = geometry;
    this.render();
    this.changed();
    const b = bounds(geometry);
    if (b) this.map.fitBounds(b, { padding: 60, maxZoom: 9, duration: 0 });
  }

  render() {
    const features = [];
    if (this.geometry) {
      const polys =
        this.geometry.type === "MultiPolygon"
          ? this.geometry.coordinates
          : [this.geometry.coordinates];
      for (const coords of polys) {
        features.push({
          type: "Feature",
          geometry: { type: "Polygon", coordinates: coords },
          properties: {},
        });
      }
    } else if (this.vertices.length) {
      const line = this.cursor ? [...this.vertices, this.cursor] : this.vertices;
      if (line.length >= 2) {
        features.push({
          type: "Feature",
          geometry: { type: "LineString", coordinates: line },
          properties: {},
        });
      }
      for (const v of this.vertices) {
        features.push({ type: "Feature", geometry: { type: "Point", coordinates: v }, properties: {} });
      }
    }
    this.map.getSource("draft")?.setData({ type: "FeatureCollection", features });
  }

  changed() {
    this.onChange?.(this);
  }
}

function round6(x) {
  return Math.round(x * 1e6) / 1e6;
}

function bounds(geometry) {
  let minX = Infinity;
  let minY = Infinity;
  let maxX = -Infinity;
  let maxY = -Infinity;
  const walk = (c) => {
    if (typeof c[0] === "number") {
      minX = Math.min(minX, c[0]);
      maxX = Math.max(maxX, c[0]);
      minY = Math.min(minY, c[1]);
      maxY = Math.max(maxY, c[1]);
    } else c.forEach(walk);
  };
  walk(geometry.coordinates);
  return Number.isFinite(minX) ? [[minX, minY], [maxX, maxY]] : null;
}

/**
 * The first Polygon/MultiPolygon in an uploaded GeoJSON text (a geometry, a Feature or a
 * FeatureCollection) and that feature's properties. Throws an Error with a readable message.
 */
export function polygonFromGeoJSON(text) {
  let obj;
  try {
    obj = JSON.parse(text);
  } catch (err) {
    throw new Error(`not valid JSON: ${err.message}`);
  }
  const candidates = [];
  const visit = (o) => {
    if (!o || typeof o !== "object") return;
    if (o.type === "FeatureCollection" && Array.isArray(o.features)) o.features.forEach(visit);
    else if (o.type === "Feature") candidates.push([o.geometry, o.properties || {}]);
    else if (o.type === "Polygon" || o.type === "MultiPolygon") candidates.push([o, {}]);
  };
  visit(obj);
  const hit = candidates.find(([g]) => g && (g.type === "Polygon" || g.type === "MultiPolygon"));
  if (!hit) throw new Error("no Polygon or MultiPolygon found in the file");
  return { geometry: hit[0], properties: hit[1] };
}
