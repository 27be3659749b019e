// leotwin dashboard: login, run view (map + time slider + availability chart + terminal panel)
// and the geofence editor. Test hooks live on `window.leotwin` (see dashboard/README.md).
import "./style.css";
import { api, ApiError, getToken, requestToken, setToken, setUnauthorizedHandler } from "./api.js";
import { AvailabilityChart, shortTime } from "./chart.js";
import { PolygonDrawer } from "./draw.js";
import { GeofenceEditor } from "./editor.js";
import { addBaseLayers, createMap, LAYER_NAMES, TerminalLayer, whenLoaded } from "./map.js";
import { COLORS, LABELS, STATES } from "./palette.js";
import { TerminalPanel } from "./terminal.js";

const $ = (id) => document.getElementById(id);

const hooks = window.leotwin || {};
window.leotwin = hooks;
Object.assign(hooks, {
  firstRenderMs: null, // page start → first map idle with a run's terminals drawn
  mapLoadMs: null, // page start → map `load` (base layers style ready)
  lastRedrawMs: null, // slider move → next rendered map frame showing the new states
  lastUpdateMs: null, // the synchronous part of that: feature-state updates only
  lastChanged: 0, // terminals whose state changed on the last redraw
  redrawCount: 0,
  timeIndex: 0,
  runId: null,
  ready: false, // base map and layers loaded
  runLoaded: false, // the selected run's terminals are drawn
  user: null,
  lastPreviewBody: null,
  lastPreview: null,
  framesEvery: 1, // `/frames?every=` of the loaded run (1: every step)
});

const state = {
  user: null,
  run: null,
  frames: null,
  indexById: new Map(),
  timeIndex: 0,
  playing: null,
  loadSeq: 0,
  pollTimer: null,
  requestedId: null,
  every: 1, // `/frames` thinning of the loaded run: slider step i is the run's step i × every
};

function status(msg) {
  $("status").textContent = msg || "";
}

// ---------------------------------------------------------------- frames of large runs
// `/frames` is a JSON matrix of (time step × terminal) codes. Up to MAX_FRAME_CELLS cells
// (10,000 terminals × 200 steps) it is fetched whole; a larger run is thinned to every k-th
// step (`?every=k`) from the counts in its RunPublic, so the browser never parses more than
// about 4 MB and the server is not asked for more than it serves. Should the server still
// refuse (a limit of its own), k is raised until it answers.
const MAX_FRAME_CELLS = 2_000_000;

/** Number of time steps of a run (start and stop inclusive), or null when unknown. */
function runSteps(run) {
  const t0 = Date.parse(run?.start);
  const t1 = Date.parse(run?.stop);
  const step = Number(run?.step_s);
  if (!Number.isFinite(t0) || !Number.isFinite(t1) || !(step > 0) || t1 < t0) return null;
  return Math.floor((t1 - t0) / 1000 / step + 1e-9) + 1;
}

/** The `every` that keeps steps × terminals of `run` within MAX_FRAME_CELLS (or the test
 * hook `window.leotwin.maxFrameCells`, set before the page loads). */
function framesEvery(run, maxCells = hooks.maxFrameCells || MAX_FRAME_CELLS) {
  const steps = runSteps(run);
  const n = Number(run?.n_terminals);
  if (!steps || !(n > 0)) return 1;
  return Math.max(1, Math.ceil((steps * n) / maxCells));
}

function refusedAsTooLarge(err) {
  return (
    err instanceof ApiError &&
    [400, 413, 422].includes(err.status) &&
    /every|too large|too many|limit/i.test(err.describe())
  );
}

/** `/frames` of `run`, thinned as needed; resolves to {frames, every}. */
async function fetchFrames(base, run) {
  let every = framesEvery(run);
  for (let attempt = 0; ; attempt++) {
    try {
      const frames = await api(`${base}/frames${every > 1 ? `?every=${every}` : ""}`);
      return { frames, every };
    } catch (err) {
      if (!refusedAsTooLarge(err) || attempt >= 8) throw err;
      // the server's 413 names the least `every` that fits ("every >= 12", "at least 12")
      const m = /(?:every\s*>=|at least)\s*(\d+)/i.exec(err.describe());
      const hint = Number(err.problem?.min_every ?? m?.[1]);
      every = Number.isInteger(hint) && hint > every ? hint : every * 2;
    }
  }
}

// ---------------------------------------------------------------- early fetches
// With a token and `#run=<id>` already there, ask for the run's data before building the map,
// so that the server works while the browser sets up WebGL.
const prefetched = new Map();
function fetchRunData(id) {
  const base = `/runs/${encodeURIComponent(id)}`;
  const quiet = (p) => {
    p.catch(() => {}); // errors are handled where the promise is awaited
    return p;
  };
  const run = quiet(api(base));
  return {
    run,
    terminals: quiet(api(`${base}/terminals`)),
    // the run's counts decide the thinning; frames of an unfinished run are not asked for
    frames: quiet(run.then((r) => (r.status === "done" ? fetchFrames(base, r) : null))),
    availability: quiet(api(`${base}/availability`)),
  };
}
{
  const id = /(?:^|[#&])run=([^&]+)/.exec(location.hash)?.[1];
  if (getToken() && id) prefetched.set(decodeURIComponent(id), fetchRunData(decodeURIComponent(id)));
}

// ---------------------------------------------------------------- map and components
const map = createMap($("map"));
const terminals = new TerminalLayer(map);
// the chart has every step of the run; the slider the (possibly thinned) steps of `/frames`
const chart = new AvailabilityChart($("availability-chart"), $("chart-readout"), (i) =>
  setTime(Math.round(i / state.every), { fromUser: true }),
);
const panel = new TerminalPanel({ onClose: () => terminals.select(null) });
let drawer = null;
let editor = null;

map.on("error", (e) => {
  const src = e.sourceId ?? e.source?.id;
  if (src && LAYER_NAMES.includes(src)) status(`layer ${src}: ${e.error?.message ?? "failed"}`);
  else console.error(e.error ?? e); // what MapLibre prints when nobody listens
});
const mapReady = (async () => {
  await whenLoaded(map);
  hooks.mapLoadMs = performance.now();
  addBaseLayers(map);
  drawer = new PolygonDrawer(map, { onChange: () => editor?.drawerChanged() });
  editor = new GeofenceEditor({ drawer, status, onApplied: () => loadGeofences() });
  map.on("click", "terminals", (e) => {
    if (drawer.active) return;
    const f = e.features?.[0];
    if (!f || !state.frames) return;
    terminals.select(f.id);
    panel.open(state.run.id, f.properties.terminal, f.properties.account, currentTime(), f.id);
    panel.setState(terminals.stateOf(f.id));
  });
  map.on("mouseenter", "terminals", () => {
    if (!drawer.active) map.getCanvas().style.cursor = "pointer";
  });
  map.on("mouseleave", "terminals", () => {
    if (!drawer.active) map.getCanvas().style.cursor = "";
  });
  hooks.ready = true;
})();

// ---------------------------------------------------------------- legend
function buildLegend() {
  const ul = $("legend");
  ul.replaceChildren();
  for (const s of STATES) {
    const li = document.createElement("li");
    const sw = document.createElement("span");
    sw.className = "swatch";
    sw.style.background = COLORS[s];
    li.dataset.state = s;
    li.append(sw, LABELS[s]);
    ul.append(li);
  }
  for (const [cls, text] of [
    ["gateway", "gateway"],
    ["pop", "PoP"],
    ["fence", "geofence (current policy)"],
    ["draft", "drawn geofence"],
  ]) {
    const li = document.createElement("li");
    const sw = document.createElement("span");
    sw.className = `swatch ${cls}`;
    li.append(sw, text);
    ul.append(li);
  }
}
buildLegend();

// ---------------------------------------------------------------- auth
function showLogin(message) {
  $("login-view").hidden = false;
  const err = document.querySelector("[data-testid=login-error]");
  err.hidden = !message;
  err.textContent = message || "";
  document.querySelector("[data-testid=login-username]").focus();
}

setUnauthorizedHandler(() => {
  setToken(null);
  showLogin("Your session has ended; sign in again.");
});

$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const form = ev.target;
  const err = document.querySelector("[data-testid=login-error]");
  err.hidden = true;
  try {
    const token = await requestToken(form.elements.username.value.trim(), form.elements.password.value);
    setToken(token);
    form.elements.password.value = "";
    $("login-view").hidden = true;
    await startSession();
  } catch (e) {
    err.hidden = false;
    err.textContent = e instanceof ApiError ? e.describe() : String(e.message ?? e);
  }
});

$("logout").addEventListener("click", () => {
  setToken(null);
  stopPlaying();
  state.user = null;
  hooks.user = null;
  $("user").textContent = "";
  clearRun();
  $("run-select").replaceChildren(new Option("— choose a run —", ""));
  showLogin();
});

async function startSession() {
  try {
    const me = await api("/users/me");
    state.user = me;
    hooks.user = me;
    $("user").textContent = `${me.name} · ${me.role}${me.account ? ` · ${me.account}` : ""}`;
    $("editor").hidden = me.role === "customer" || me.role === "auditor";
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return; // handler shows the login
    status(`who am I: ${e.message}`);
    return;
  }
  selectFromHash(); // `#run=<id>` starts loading at once, in parallel with the run list
  await Promise.all([loadRuns(), mapReady.then(loadGeofences)]);
  selectFromHash();
}

// ---------------------------------------------------------------- geofences of the policy
async function loadGeofences() {
  if (!state.user || state.user.role === "customer") return;
  try {
    const fc = await api("/geofences");
    map.getSource("geofences")?.setData(fc);
    editor?.setExisting(fc);
  } catch (e) {
    if (!(e instanceof ApiError && (e.status === 403 || e.status === 404))) {
      status(`geofences: ${e.message}`);
    }
  }
}

// ---------------------------------------------------------------- runs
async function loadRuns() {
  let runs = [];
  try {
    runs = await api("/runs");
  } catch (e) {
    status(`runs: ${e instanceof ApiError ? e.describe() : e.message}`);
    return;
  }
  const sel = $("run-select");
  const keep = sel.value;
  sel.replaceChildren(new Option("— choose a run —", ""));
  for (const r of runs) {
    const opt = new Option(
      `#${r.id} ${r.name}${r.status === "done" ? "" : ` (${r.status})`}`,
      String(r.id),
    );
    sel.append(opt);
  }
  if (keep) sel.value = keep;
}

$("run-select").addEventListener("change", (ev) => {
  const id = ev.target.value;
  if (id) location.hash = `run=${id}`;
  else {
    history.replaceState(null, "", location.pathname + location.search);
    clearRun();
  }
});

window.addEventListener("hashchange", () => selectFromHash());

function hashRunId() {
  const m = /(?:^|[#&])run=([^&]+)/.exec(location.hash);
  return m ? decodeURIComponent(m[1]) : null;
}

function selectFromHash() {
  if (!state.user) return;
  const id = hashRunId();
  if (!id) return;
  const sel = $("run-select");
  if (![...sel.options].some((o) => o.value === id)) sel.append(new Option(`#${id}`, id));
  sel.value = id;
  if (state.requestedId === id) return; // already loading or loaded
  loadRun(id);
}

function clearRun() {
  clearTimeout(state.pollTimer);
  state.requestedId = null;
  state.run = null;
  state.frames = null;
  state.every = 1;
  state.indexById = new Map();
  hooks.runId = null;
  hooks.framesEvery = 1;
  hooks.runLoaded = false;
  if (map.getLayer("terminals")) map.removeLayer("terminals");
  if (map.getLayer("terminal-selected")) map.removeLayer("terminal-selected");
  if (map.getSource("terminals")) map.removeSource("terminals");
  chart.setData(null);
  panel.close();
  $("time-slider").disabled = true;
  $("play").disabled = true;
  $("time-label").textContent = "—";
  $("run-title").textContent = "";
  $("run-status").textContent = "";
  $("drawn-count").textContent = "";
}

async function loadRun(id) {
  const seq = ++state.loadSeq;
  stopPlaying();
  clearRun();
  state.requestedId = id;
  status(`loading run ${id}…`);
  const pre = prefetched.get(id);
  prefetched.delete(id);
  const base = `/runs/${encodeURIComponent(id)}`;
  let run;
  try {
    run = await (pre?.run ?? api(base));
  } catch (e) {
    status(`run ${id}: ${e instanceof ApiError ? e.describe() : e.message}`);
    return;
  }
  if (seq !== state.loadSeq) return;
  state.run = run;
  hooks.runId = run.id;
  $("run-title").textContent = `#${run.id} ${run.name}`;
  if (run.status !== "done") {
    const pct = Math.round(100 * (run.progress ?? 0));
    $("run-status").textContent =
      run.status === "failed"
        ? `failed: ${run.error ?? "unknown error"}`
        : `${run.status} ${pct}% (${run.chunks_done ?? 0}/${run.chunks_total ?? "?"} chunks)`;
    status("");
    if (run.status === "queued" || run.status === "running") {
      state.pollTimer = setTimeout(() => {
        if (seq === state.loadSeq) loadRun(id);
      }, 2000);
    }
    return;
  }
  $("run-status").textContent =
    `${shortTime(run.start)} → ${shortTime(run.stop)}, step ${run.step_s} s, ${run.n_terminals} terminals`;
  try {
    const [fc, { frames, every }, avail] = await Promise.all([
      pre?.terminals ?? api(`${base}/terminals`),
      (pre?.frames ?? Promise.resolve(null)).then((f) => f ?? fetchFrames(base, run)),
      (pre?.availability ?? api(`${base}/availability`)).catch((e) => {
        status(`availability: ${e.message}`);
        return null;
      }),
    ]);
    if (seq !== state.loadSeq) return;
    await mapReady;
    state.frames = frames;
    state.every = every;
    hooks.framesEvery = every;
    state.indexById = new Map();
    fc.features.forEach((f, k) => {
      const idx = Number.isInteger(f.properties?.index) ? f.properties.index : k;
      state.indexById.set(String(f.properties?.terminal), idx);
    });
    terminals.setTerminals(fc, frames.states);
    fitTo(fc);
    chart.setData(avail);
    editor?.setDefaultWindow(run.start, run.stop);
    const slider = $("time-slider");
    slider.max = String(Math.max(0, frames.times.length - 1));
    slider.value = "0";
    slider.disabled = frames.times.length === 0;
    $("play").disabled = frames.times.length < 2;
    if (frames.times.length) setTime(0);
    map.once("idle", () => {
      if (seq !== state.loadSeq) return;
      hooks.runLoaded = true;
      if (hooks.firstRenderMs === null) hooks.firstRenderMs = performance.now();
    });
    status(
      `${fc.features.length} terminals, ${frames.times.length} steps` +
        (every > 1 ? ` (1 in ${every} of the run's steps)` : ""),
    );
  } catch (e) {
    if (seq === state.loadSeq) status(`run ${id}: ${e instanceof ApiError ? e.describe() : e.message}`);
  }
}

function fitTo(fc) {
  let minX = Infinity;
  let minY = Infinity;
  let maxX = -Infinity;
  let maxY = -Infinity;
  for (const f of fc.features) {
    const [x, y] = f.geometry?.coordinates ?? [];
    if (!Number.isFinite(x) || !Number.isFinite(y)) continue;
    if (x < minX) minX = x;
    if (x > maxX) maxX = x;
    if (y < minY) minY = y;
    if (y > maxY) maxY = y;
  }
  if (!Number.isFinite(minX)) return;
  map.fitBounds([[minX, minY], [maxX, maxY]], { padding: 50, maxZoom: 9, duration: 0 });
}

// ---------------------------------------------------------------- time
function currentTime() {
  return state.frames?.times?.[state.timeIndex] ?? null;
}

function setTime(i, { fromUser = false } = {}) {
  const fr = state.frames;
  if (!fr || !fr.times.length) return;
  i = Math.max(0, Math.min(fr.times.length - 1, i | 0));
  const t0 = performance.now();
  state.timeIndex = i;
  hooks.timeIndex = i;
  const changed = terminals.apply(fr.codes[i]);
  const t1 = performance.now();
  hooks.lastUpdateMs = t1 - t0;
  hooks.lastChanged = changed;
  const seq = ++redrawSeq;
  map.once("render", () => {
    if (seq !== redrawSeq) return; // superseded by a later move before this frame
    hooks.lastRedrawMs = performance.now() - t0;
    hooks.redrawCount += 1;
  });
  map.triggerRepaint();
  if (fromUser || $("time-slider").value !== String(i)) $("time-slider").value = String(i);
  $("time-label").textContent = shortTime(fr.times[i]);
  chart.setIndex(i * state.every);
  if (panel.terminal) {
    const idx = state.indexById.get(panel.terminal);
    if (idx !== undefined) panel.setState(terminals.stateOf(idx));
    panel.explainSoon(fr.times[i]);
  }
}
let redrawSeq = 0;

$("time-slider").addEventListener("input", (ev) => setTime(Number(ev.target.value)));

function stopPlaying() {
  if (state.playing) clearInterval(state.playing);
  state.playing = null;
  $("play").textContent = "▶ Play";
}

$("play").addEventListener("click", () => {
  if (state.playing) {
    stopPlaying();
    return;
  }
  const n = state.frames?.times?.length ?? 0;
  if (n < 2) return;
  if (state.timeIndex >= n - 1) setTime(0);
  $("play").textContent = "❚❚ Pause";
  state.playing = setInterval(() => {
    if (state.timeIndex >= n - 1) stopPlaying();
    else setTime(state.timeIndex + 1);
  }, 300);
});

// ---------------------------------------------------------------- test hooks
Object.assign(hooks, {
  map,
  /** The state drawn now for terminal id `terminal` (read back from the map's feature state). */
  stateAt(terminal) {
    const idx = state.indexById.get(String(terminal));
    return idx === undefined ? null : terminals.stateOf(idx);
  },
  /** {state: count} of the terminals as drawn now. */
  drawnCounts() {
    const out = {};
    for (const idx of state.indexById.values()) {
      const s = terminals.stateOf(idx);
      out[s] = (out[s] ?? 0) + 1;
    }
    return out;
  },
  /** Pixel position of [lon, lat] relative to the map container (for clicking in tests). */
  project(lonlat) {
    const p = map.project(lonlat);
    return { x: p.x, y: p.y };
  },
  /** The palette: {state: "#rrggbb"} (the colour a terminal in that state is drawn with). */
  palette: { ...COLORS },
  setTime: (i) => setTime(i, { fromUser: true }),
  currentTime,
  times: () => state.frames?.times ?? [],
});
Object.defineProperty(hooks, "lastPreviewBody", { get: () => editor?.lastBody ?? null });
Object.defineProperty(hooks, "lastPreview", { get: () => editor?.lastPreview ?? null });

// ---------------------------------------------------------------- start
if (getToken()) startSession();
else showLogin();
