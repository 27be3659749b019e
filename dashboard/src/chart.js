// A stacked area chart of availability over time by state, drawn on a canvas of our own:
// served at the bottom, then degraded, then every outage cause. A vertical cursor marks the
// slider time; clicking or dragging on the chart moves the slider.
import { colorOf, LABELS } from "./palette.js";

const PAD = { left: 34, right: 6, top: 6, bottom: 18 };

export class AvailabilityChart {
  constructor(canvas, readout, onPick) {
    this.canvas = canvas;
    this.readout = readout;
    this.onPick = onPick;
    this.data = null;
    this.index = 0;
    let dragging = false;
    const pick = (ev) => {
      if (!this.data) return;
      const i = this.indexAt(ev.offsetX);
      if (i !== null) this.onPick?.(i);
    };
    canvas.addEventListener("pointerdown", (ev) => {
      dragging = true;
      canvas.setPointerCapture(ev.pointerId);
      pick(ev);
    });
    canvas.addEventListener("pointermove", (ev) => {
      if (dragging) pick(ev);
      else if (this.data) this.showReadout(this.indexAt(ev.offsetX));
    });
    canvas.addEventListener("pointerup", () => (dragging = false));
    canvas.addEventListener("pointerleave", () => this.showReadout(this.index));
    new ResizeObserver(() => this.draw()).observe(canvas);
  }

  /** `{times, states, fractions: {state: [..per time]}}` from `/runs/{id}/availability`. */
  setData(data) {
    this.data = data && data.times?.length ? data : null;
    this.index = 0;
    this.draw();
  }

  setIndex(i) {
    this.index = i;
    this.draw();
  }

  indexAt(x) {
    const n = this.data.times.length;
    const w = this.canvas.clientWidth - PAD.left - PAD.right;
    if (n === 0 || w <= 0) return null;
    const f = (x - PAD.left) / w;
    return Math.max(0, Math.min(n - 1, Math.floor(f * n)));
  }

  showReadout(i) {
    if (!this.readout) return;
    if (!this.data || i === null || i === undefined) {
      this.readout.textContent = "";
      return;
    }
    const { times, states, fractions } = this.data;
    const parts = states
      .map((s) => [s, fractions[s]?.[i] ?? 0])
      .filter(([, v]) => v > 0)
      .map(([s, v]) => `${LABELS[s] ?? s} ${(100 * v).toFixed(1)}%`);
    this.readout.textContent = `${shortTime(times[i])}: ${parts.join(" · ") || "no terminals"}`;
  }

  draw() {
    const c = this.canvas;
    const dpr = window.devicePixelRatio || 1;
    const cw = c.clientWidth;
    const ch = c.clientHeight;
    if (cw === 0 || ch === 0) return;
    if (c.width !== Math.round(cw * dpr) || c.height !== Math.round(ch * dpr)) {
      c.width = Math.round(cw * dpr);
      c.height = Math.round(ch * dpr);
    }
    const g = c.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, cw, ch);
    const w = cw - PAD.left - PAD.right;
    const h = ch - PAD.top - PAD.bottom;
    g.font = "10px system-ui, sans-serif";
    g.fillStyle = "#555";
    g.strokeStyle = "#ccc";
    g.lineWidth = 1;
    for (const f of [0, 0.5, 1]) {
      const y = PAD.top + h * (1 - f);
      g.beginPath();
      g.moveTo(PAD.left, y + 0.5);
      g.lineTo(PAD.left + w, y + 0.5);
      g.stroke();
      g.textAlign = "right";
      g.textBaseline = "middle";
      g.fillText(`${Math.round(f * 100)}%`, PAD.left - 4, y);
    }
    if (!this.data) {
      g.textAlign = "center";
      g.fillText("no run loaded", PAD.left + w / 2, PAD.top + h / 2);
      return;
    }
    const { times, states, fractions } = this.data;
    const n = times.length;
    const xAt = (i) => PAD.left + (w * i) / n; // step i spans [xAt(i), xAt(i + 1))
    const yAt = (f) => PAD.top + h * (1 - Math.max(0, Math.min(1, f)));
    const base = new Float64Array(n);
    for (const s of states) {
      const fr = fractions[s];
      if (!fr || !fr.some((v) => v > 0)) continue;
      g.fillStyle = colorOf(s);
      g.beginPath();
      g.moveTo(xAt(0), yAt(base[0]));
      for (let i = 0; i < n; i++) {
        const top = yAt(base[i] + fr[i]);
        g.lineTo(xAt(i), top);
        g.lineTo(xAt(i + 1), top);
      }
      for (let i = n - 1; i >= 0; i--) {
        g.lineTo(xAt(i + 1), yAt(base[i]));
        g.lineTo(xAt(i), yAt(base[i]));
      }
      g.closePath();
      g.fill();
      for (let i = 0; i < n; i++) base[i] += fr[i];
    }
    g.fillStyle = "#555";
    g.textBaseline = "top";
    g.textAlign = "left";
    g.fillText(shortTime(times[0]), PAD.left, PAD.top + h + 4);
    g.textAlign = "right";
    g.fillText(shortTime(times[n - 1]), PAD.left + w, PAD.top + h + 4);
    const x = xAt(Math.min(this.index, n - 1) + 0.5);
    g.strokeStyle = "#000";
    g.lineWidth = 1.5;
    g.beginPath();
    g.moveTo(x, PAD.top);
    g.lineTo(x, PAD.top + h);
    g.stroke();
    this.showReadout(this.index);
  }
}

export function shortTime(iso) {
  return typeof iso === "string" ? iso.replace("T", " ").replace(/:00(\.0+)?Z$/, "Z") : String(iso);
}
