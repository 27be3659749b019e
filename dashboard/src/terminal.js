// The terminal panel: a click on a terminal shows its timeline (a strip of states, one cell per
// step, and its outage intervals) and `explain` at the slider time (rule id, author, reason).
import { api, ApiError } from "./api.js";
import { shortTime } from "./chart.js";
import { colorOf, LABELS } from "./palette.js";

const $ = (id) => document.getElementById(id);

export class TerminalPanel {
  constructor({ onClose }) {
    this.runId = null;
    this.terminal = null;
    this.timeline = null;
    this.at = null;
    this.explainSeq = 0;
    this.explainTimer = null;
    $("t-close").addEventListener("click", () => {
      this.close();
      onClose?.();
    });
    const strip = $("t-strip");
    strip.addEventListener("pointermove", (ev) => this.stripReadout(ev.offsetX));
    new ResizeObserver(() => this.drawStrip()).observe(strip);
  }

  close() {
    this.terminal = null;
    this.timeline = null;
    $("terminal-panel").hidden = true;
  }

  async open(runId, terminal, account, at, index) {
    this.runId = runId;
    this.terminal = terminal;
    this.index = index;
    this.timeline = null;
    $("terminal-panel").hidden = false;
    $("t-name").textContent = terminal;
    $("t-account").textContent = account ?? "";
    $("t-intervals").replaceChildren();
    $("t-error").hidden = true;
    this.drawStrip();
    this.explainNow(at);
    try {
      const tl = await api(
        `/runs/${runId}/terminals/${encodeURIComponent(terminal)}/timeline`,
      );
      if (this.terminal !== terminal) return;
      this.timeline = tl;
      if (tl.account) $("t-account").textContent = tl.account;
      this.drawStrip();
      this.fillIntervals(tl.intervals ?? []);
    } catch (err) {
      this.error(err);
    }
  }

  setState(state) {
    $("t-state").textContent = state ? (LABELS[state] ?? state) : "";
    $("t-state").style.borderColor = colorOf(state);
  }

  /** Re-ask `explain` for a new slider time, debounced while the slider moves. */
  explainSoon(at) {
    if (!this.terminal) return;
    clearTimeout(this.explainTimer);
    this.explainTimer = setTimeout(() => this.explainNow(at), 250);
    this.at = at;
    this.drawStrip();
  }

  async explainNow(at) {
    if (!this.terminal || !at) return;
    this.at = at;
    const seq = ++this.explainSeq;
    $("x-at").textContent = shortTime(at);
    try {
      const x = await api(
        `/explain/${encodeURIComponent(this.terminal)}?at=${encodeURIComponent(at)}`,
      );
      if (seq !== this.explainSeq) return;
      $("x-decision").textContent = `${x.decision ?? ""}${x.max_mbps ? ` (≤ ${x.max_mbps} Mbit/s)` : ""}`;
      $("x-rule").textContent = x.rule_id
        ? `${x.rule_id}${x.rule_kind ? ` (${x.rule_kind})` : ""}`
        : "— (default)";
      $("x-author").textContent = x.rule_author || "—";
      $("x-reason").textContent = x.rule_reason || "—";
      $("x-version").textContent = x.version ?? "—";
    } catch (err) {
      if (seq !== this.explainSeq) return;
      for (const id of ["x-decision", "x-rule", "x-author", "x-reason", "x-version"]) {
        $(id).textContent = "";
      }
      this.error(err);
    }
    this.drawStrip();
  }

  fillIntervals(intervals) {
    const body = $("t-intervals");
    body.replaceChildren();
    if (!intervals.length) {
      const tr = document.createElement("tr");
      const td = document.createElement("td");
      td.colSpan = 5;
      td.textContent = "no outages in this run";
      tr.append(td);
      body.append(tr);
      return;
    }
    for (const iv of intervals) {
      const tr = document.createElement("tr");
      for (const v of [
        shortTime(iv.start),
        shortTime(iv.end),
        (Number(iv.duration_s) / 3600).toFixed(2),
        iv.cause ?? "",
        iv.rule ?? "",
      ]) {
        const td = document.createElement("td");
        td.textContent = v;
        tr.append(td);
      }
      body.append(tr);
    }
  }

  drawStrip() {
    const c = $("t-strip");
    const dpr = window.devicePixelRatio || 1;
    const w = c.clientWidth;
    const h = c.clientHeight;
    if (!w || !h) return;
    c.width = Math.round(w * dpr);
    c.height = Math.round(h * dpr);
    const g = c.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    const steps = this.timeline?.steps ?? [];
    const n = steps.length;
    if (!n) return;
    for (let i = 0; i < n; i++) {
      g.fillStyle = colorOf(steps[i].state);
      const x0 = Math.floor((w * i) / n);
      const x1 = Math.ceil((w * (i + 1)) / n);
      g.fillRect(x0, 0, x1 - x0, h);
    }
    const at = this.at ? Date.parse(this.at) : NaN;
    const k = Number.isNaN(at) ? -1 : steps.findIndex((s) => Date.parse(s.time) === at);
    if (k >= 0) {
      g.strokeStyle = "#000";
      g.lineWidth = 2;
      const x = (w * (k + 0.5)) / n;
      g.beginPath();
      g.moveTo(x, 0);
      g.lineTo(x, h);
      g.stroke();
    }
  }

  stripReadout(x) {
    const steps = this.timeline?.steps ?? [];
    const el = $("t-strip-readout");
    if (!steps.length) return;
    const w = $("t-strip").clientWidth;
    const i = Math.max(0, Math.min(steps.length - 1, Math.floor((x / w) * steps.length)));
    const s = steps[i];
    const rate = s.throughput_mbps !== null && s.throughput_mbps !== undefined
      ? `, ${Number(s.throughput_mbps).toFixed(1)} Mbit/s` : "";
    const rtt = s.rtt_ms !== null && s.rtt_ms !== undefined && Number.isFinite(s.rtt_ms)
      ? `, RTT ${Number(s.rtt_ms).toFixed(0)} ms` : "";
    el.textContent = `${shortTime(s.time)}: ${LABELS[s.state] ?? s.state}` +
      `${s.rule ? ` by ${s.rule}` : ""}${rate}${rtt}${s.dish_state ? ` · dish: ${s.dish_state}` : ""}`;
  }

  error(err) {
    const el = $("t-error");
    el.hidden = false;
    el.textContent = err instanceof ApiError ? err.describe() : String(err?.message ?? err);
  }
}
