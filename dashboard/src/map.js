// The map: an offline MapLibre style (no tiles, glyphs, sprites or fonts: only GeoJSON sources
// drawn with background/fill/line/circle layers) over the bundled layers the API serves, plus
// the run's terminals coloured by state through feature-state.
import maplibregl from "maplibre-gl";
import "maplibre-gl/dist/maplibre-gl.css";
import { apiBase } from "./api.js";
import { colorOf, UNKNOWN_COLOR } from "./palette.js";

const STYLE = {
  version: 8,
  name: "leotwin offline",
  sources: {},
  layers: [{ id: "background", type: "background", paint: { "background-color": "#c8d8e4" } }],
};

export const LAYER_NAMES = ["countries", "oblasts", "gateways", "pops"];

export function createMap(container) {
  const map = new maplibregl.Map({
    container,
    style: STYLE,
    center: [32.0, 48.6],
    zoom: 4.7,
    minZoom: 1,
    maxZoom: 14,
    fadeDuration: 0,
    renderWorldCopies: false,
    attributionControl: {
      compact: true,
      customAttribution:
        "Borders: Natural Earth · Oblasts: geoBoundaries (Runfola et al.) / © OpenStreetMap " +
        "contributors · Gateways/PoPs: StarPerf lists",
    },
  });
  map.addControl(new maplibregl.NavigationControl({ showCompass: false }), "top-right");
  map.addControl(new maplibregl.ScaleControl({ unit: "metric" }), "bottom-right");
  return map;
}

export function whenLoaded(map) {
  return new Promise((resolve) => {
    if (map.loaded() && map.isStyleLoaded()) resolve();
    else map.once("load", () => resolve());
  });
}

/**
 * Add the bundled layers below everything else. They are public (no token), so MapLibre's
 * worker fetches and parses them off the main thread; a failed layer shows as a map error.
 */
export function addBaseLayers(map) {
  for (const name of LAYER_NAMES) {
    // borders are tiled up to zoom 8 and over-zoomed beyond: a jump to street level does not
    // re-tile hundreds of kilobytes of polygons
    map.addSource(name, { type: "geojson", data: `${apiBase()}/layers/${name}`, maxzoom: 8 });
  }
  map.addLayer({
    id: "countries-fill",
    type: "fill",
    source: "countries",
    paint: { "fill-color": "#f4f1ea", "fill-opacity": 1 },
  });
  map.addLayer({
    id: "oblasts-line",
    type: "line",
    source: "oblasts",
    paint: { "line-color": "#a09a8c", "line-width": 0.6 },
  });
  map.addLayer({
    id: "countries-line",
    type: "line",
    source: "countries",
    paint: { "line-color": "#6e6a60", "line-width": 1.1 },
  });
  map.addLayer({
    id: "gateways",
    type: "circle",
    source: "gateways",
    paint: {
      "circle-radius": ["interpolate", ["linear"], ["zoom"], 3, 2.5, 8, 5],
      "circle-color": "#ffffff",
      "circle-stroke-color": "#333333",
      "circle-stroke-width": 1.2,
    },
  });
  map.addLayer({
    id: "pops",
    type: "circle",
    source: "pops",
    paint: {
      "circle-radius": ["interpolate", ["linear"], ["zoom"], 3, 4, 8, 7],
      "circle-color": "#333333",
      "circle-stroke-color": "#ffffff",
      "circle-stroke-width": 1.5,
    },
  });
  map.addSource("geofences", { type: "geojson", data: emptyFC() });
  map.addLayer({
    id: "geofences-fill",
    type: "fill",
    source: "geofences",
    paint: {
      "fill-color": [
        "match",
        ["get", "action"],
        "deny",
        "#D55E00",
        "throttle",
        "#E69F00",
        "allow",
        "#009E73",
        "#888888",
      ],
      "fill-opacity": 0.12,
    },
  });
  map.addLayer({
    id: "geofences-line",
    type: "line",
    source: "geofences",
    paint: { "line-color": "#7a3300", "line-width": 1.2, "line-dasharray": [3, 2] },
  });
}

export function emptyFC() {
  return { type: "FeatureCollection", features: [] };
}

/**
 * The terminals of a run as one GeoJSON source whose feature ids are the `/frames` column
 * indices; the colour comes from feature-state `c` (a code into `states`), so a time step is
 * drawn by setting only the feature states that changed — no re-tiling of the source.
 */
export class TerminalLayer {
  constructor(map) {
    this.map = map;
    this.n = 0;
    this.drawn = new Int16Array(0);
    this.states = [];
  }

  /** Replace the terminals (a GeoJSON FeatureCollection from `/runs/{id}/terminals`). */
  setTerminals(fc, states) {
    const map = this.map;
    this.states = states;
    const features = fc.features.map((f, k) => ({
      type: "Feature",
      id: Number.isInteger(f.properties?.index) ? f.properties.index : k,
      geometry: f.geometry,
      properties: { terminal: f.properties?.terminal, account: f.properties?.account },
    }));
    this.n = features.length;
    this.drawn = new Int16Array(this.n).fill(-1);
    const data = { type: "FeatureCollection", features };
    if (map.getLayer("terminals")) map.removeLayer("terminals");
    if (map.getLayer("terminal-selected")) map.removeLayer("terminal-selected");
    if (map.getSource("terminals")) map.removeSource("terminals");
    map.addSource("terminals", { type: "geojson", data, buffer: 16, tolerance: 0 });
    const colorMatch = ["match", ["coalesce", ["feature-state", "c"], -1]];
    states.forEach((s, k) => colorMatch.push(k, colorOf(s)));
    colorMatch.push(UNKNOWN_COLOR);
    const before = map.getLayer("draft-fill") ? "draft-fill" : undefined;
    map.addLayer(
      {
        id: "terminals",
        type: "circle",
        source: "terminals",
        paint: {
          "circle-color": colorMatch,
          // only the colour reads the feature state: every feature-state-dependent paint
          // property is re-evaluated for each changed terminal on a redraw
          "circle-radius": ["interpolate", ["linear"], ["zoom"], 3, 2.3, 7, 5, 11, 8.5],
          "circle-stroke-color": "#ffffff",
          "circle-stroke-width": ["interpolate", ["linear"], ["zoom"], 3, 0.4, 8, 1.2],
        },
      },
      before,
    );
    map.addLayer(
      {
        id: "terminal-selected",
        type: "circle",
        source: "terminals",
        filter: ["==", ["id"], -1],
        paint: {
          "circle-radius": ["interpolate", ["linear"], ["zoom"], 3, 7, 8, 12],
          "circle-color": "rgba(0,0,0,0)",
          "circle-stroke-color": "#000000",
          "circle-stroke-width": 2.5,
        },
      },
      before,
    );
  }

  select(index) {
    if (this.map.getLayer("terminal-selected")) {
      this.map.setFilter("terminal-selected", ["==", ["id"], index ?? -1]);
    }
  }

  /** Draw one time step: `row[i]` is the state code of terminal column i. Returns #changed. */
  apply(row) {
    const map = this.map;
    const drawn = this.drawn;
    const target = { source: "terminals", id: 0 };
    const value = { c: 0 }; // MapLibre copies the state, so one object serves every call
    let changed = 0;
    for (let i = 0; i < this.n; i++) {
      const c = row[i];
      if (drawn[i] !== c) {
        target.id = i;
        value.c = c;
        map.setFeatureState(target, value);
        drawn[i] = c;
        changed++;
      }
    }
    return changed;
  }

  /** The state drawn for column `index` (read back from the map's feature state). */
  stateOf(index) {
    if (!this.map.getSource("terminals")) return null;
    const fs = this.map.getFeatureState({ source: "terminals", id: index });
    return fs && fs.c !== undefined ? (this.states[fs.c] ?? null) : null;
  }
}
