// The geofence editor: a drawn or uploaded polygon plus action, scope, validity window and
// reason become a PolicyChange; "Preview" shows POST /api/policy/preview, "Apply" POSTs
// /api/policy/apply and, on 409 (the change breaches a contract), asks for a second person's
// credentials, gets that approver's token and retries with `approver_token`.
import { api, ApiError, requestToken } from "./api.js";
import { polygonFromGeoJSON } from "./draw.js";

const $ = (id) => document.getElementById(id);

/** "2022-10-05T10:00" (a datetime-local value, read as UTC) → "2022-10-05T10:00:00Z". */
export function localToIso(value) {
  if (!value) return null;
  const v = value.length === 16 ? `${value}:00` : value;
  return `${v.replace(/\.\d+$/, "")}Z`;
}

/** "2022-10-05T10:00:00Z" → "2022-10-05T10:00:00" for a datetime-local input. */
export function isoToLocal(iso) {
  if (!iso) return "";
  return String(iso).replace(/(\.\d+)?(Z|[+-]00:00)$/, "").slice(0, 19);
}

export function fmtHours(x) {
  return Number(x).toFixed(2);
}

export function fmtMoney(x) {
  return Number(x).toFixed(2);
}

export class GeofenceEditor {
  constructor({ drawer, onApplied, status }) {
    this.drawer = drawer;
    this.onApplied = onApplied;
    this.status = status;
    this.lastBody = null;
    this.lastPreview = null;
    this.pendingApply = null;
    this.counter = 1;
    this.windowTouched = false;
    $("gf-id").value = this.nextId();
    $("draw-start").addEventListener("click", () => {
      this.hideError();
      drawer.start();
    });
    $("draw-finish").addEventListener("click", () => {
      if (!drawer.finish()) this.showError("A polygon needs at least three vertices.");
    });
    $("draw-clear").addEventListener("click", () => drawer.clear());
    $("gf-upload").addEventListener("change", (ev) => this.upload(ev.target.files?.[0]));
    $("gf-action").addEventListener("change", () => this.syncAction());
    for (const id of ["gf-window-start", "gf-window-end"]) {
      $(id).addEventListener("input", () => (this.windowTouched = true));
    }
    $("gf-preview").addEventListener("click", () => this.preview());
    $("gf-apply").addEventListener("click", () => this.apply());
    $("approver").addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.approveAndApply();
    });
    $("approver-cancel").addEventListener("click", () => {
      $("approver").hidden = true;
      this.pendingApply = null;
    });
    this.syncAction();
    this.drawerChanged();
  }

  nextId() {
    const stamp = new Date().toISOString().slice(0, 10).replaceAll("-", "");
    return `G-DASH-${stamp}-${this.counter}`;
  }

  syncAction() {
    const throttle = $("gf-action").value === "throttle";
    $("gf-max-mbps").disabled = !throttle;
  }

  drawerChanged() {
    const d = this.drawer;
    $("draw-finish").disabled = !d.active;
    $("draw-start").disabled = d.active;
    let text;
    if (d.active) {
      text = `drawing: ${d.vertices.length} vertices — click to add, double-click or Finish to close`;
    } else if (d.geometry) {
      const n =
        d.geometry.type === "Polygon"
          ? d.geometry.coordinates[0].length - 1
          : d.geometry.coordinates.reduce((a, p) => a + p[0].length - 1, 0);
      text = `${d.geometry.type} with ${n} vertices`;
    } else text = "no polygon";
    $("draw-status").textContent = text;
  }

  /** The run's time range is the default preview window (until the user edits it). */
  setDefaultWindow(start, stop) {
    if (this.windowTouched) return;
    $("gf-window-start").value = isoToLocal(start);
    $("gf-window-end").value = isoToLocal(stop);
  }

  /** The current policy's geofences, offered for removal. */
  setExisting(fc) {
    const box = $("gf-remove");
    box.replaceChildren();
    const feats = fc?.features ?? [];
    $("gf-existing-count").textContent = String(feats.length);
    for (const f of feats) {
      const p = f.properties || {};
      const id = p.id ?? f.id;
      const label = document.createElement("label");
      label.className = "check";
      const cb = document.createElement("input");
      cb.type = "checkbox";
      cb.value = id;
      cb.dataset.testid = `gf-remove-${id}`;
      label.append(cb, ` ${id} (${p.action}${p.max_mbps ? ` ${p.max_mbps} Mbit/s` : ""})`);
      box.append(label);
    }
  }

  async upload(file) {
    if (!file) return;
    this.hideError();
    try {
      const { geometry, properties } = polygonFromGeoJSON(await file.text());
      this.drawer.setGeometry(geometry);
      if (properties.id) $("gf-id").value = properties.id;
      if (["deny", "allow", "throttle"].includes(properties.action)) {
        $("gf-action").value = properties.action;
      }
      if (properties.max_mbps !== undefined && properties.max_mbps !== null) {
        $("gf-max-mbps").value = properties.max_mbps;
      }
      if (properties.reason) $("gf-reason").value = properties.reason;
      $("gf-override").checked = properties.override_contracts === true;
      if (properties.valid_from) $("gf-valid-from").value = isoToLocal(properties.valid_from);
      if (properties.valid_to) $("gf-valid-to").value = isoToLocal(properties.valid_to);
      const accounts = properties.scope?.accounts;
      if (Array.isArray(accounts)) $("gf-scope").value = accounts.join(", ");
      this.syncAction();
    } catch (err) {
      this.showError(`${file.name}: ${err.message}`);
    } finally {
      $("gf-upload").value = "";
    }
  }

  /** The PolicyChange body of the form; throws Error naming the missing field. */
  buildChange() {
    const remove = [...document.querySelectorAll("#gf-remove input:checked")].map((c) => c.value);
    const add = [];
    const geometry = this.drawer.geometry;
    if (geometry) {
      const id = $("gf-id").value.trim();
      if (!id) throw new Error("Id: a geofence needs an id");
      const action = $("gf-action").value;
      const fence = { id, action, geometry, reason: $("gf-reason").value.trim() };
      if (action === "throttle") {
        const v = $("gf-max-mbps").value;
        if (v === "") throw new Error("max Mbit/s: a throttle geofence needs max_mbps");
        fence.max_mbps = Number(v);
      }
      const accounts = $("gf-scope")
        .value.split(",")
        .map((s) => s.trim())
        .filter(Boolean);
      if (accounts.length) fence.scope = { accounts };
      if ($("gf-override").checked) fence.override_contracts = true;
      const from = localToIso($("gf-valid-from").value);
      const to = localToIso($("gf-valid-to").value);
      if (from) fence.valid_from = from;
      if (to) fence.valid_to = to;
      add.push(fence);
    } else if (this.drawer.active) {
      throw new Error("Finish the polygon first (double-click or Finish)");
    }
    if (!add.length && !remove.length) {
      throw new Error("Draw or upload a polygon, or choose geofences to remove");
    }
    const windowStart = localToIso($("gf-window-start").value);
    const windowEnd = localToIso($("gf-window-end").value);
    if (!windowStart || !windowEnd) throw new Error("Preview window: set its start and end");
    const step = Number($("gf-step").value || 900);
    return {
      add_geofences: add,
      remove_geofences: remove,
      window_start: windowStart,
      window_end: windowEnd,
      step_s: step,
    };
  }

  async preview() {
    this.hideError();
    let body;
    try {
      body = this.buildChange();
    } catch (err) {
      this.showError(err.message);
      return null;
    }
    this.lastBody = body;
    $("gf-preview").disabled = true;
    this.status("computing preview…");
    try {
      const out = await api("/policy/preview", { method: "POST", body });
      this.showPreview(out);
      this.status("preview ready");
      return out;
    } catch (err) {
      this.showError(err);
      this.status("");
      return null;
    } finally {
      $("gf-preview").disabled = false;
    }
  }

  showPreview(p) {
    this.lastPreview = p;
    const box = $("preview");
    box.hidden = false;
    const set = (testid, text, value) => {
      const el = box.querySelector(`[data-testid="${testid}"]`);
      el.textContent = text;
      el.dataset.value = JSON.stringify(value);
    };
    const accounts = p.accounts_affected ?? [];
    const contracts = p.contracts_affected ?? [];
    set("preview-terminals", String(p.terminals_affected), p.terminals_affected);
    set(
      "preview-accounts",
      `${accounts.length}${accounts.length ? ` (${accounts.join(", ")})` : ""}`,
      accounts,
    );
    set(
      "preview-contracts",
      `${contracts.length}${contracts.length ? ` (${contracts.join(", ")})` : ""}`,
      contracts,
    );
    set("preview-hours-lost", fmtHours(p.terminal_hours_lost), p.terminal_hours_lost);
    set("preview-hours-gained", fmtHours(p.terminal_hours_gained), p.terminal_hours_gained);
    set("preview-credits", fmtMoney(p.credits_owed), p.credits_owed);
    set("preview-breach", p.breach ? "yes — needs an approver" : "no", p.breach);
    set("preview-window", `${p.window_start} → ${p.window_end}`, [p.window_start, p.window_end]);
    const skipped = p.skipped_terminals ?? [];
    box.querySelector('[data-testid="preview-skipped"]').textContent = skipped.length
      ? `${skipped.length} terminal(s) without a service address were not counted`
      : "";
    box.classList.toggle("breach", !!p.breach);
    const tbody = box.querySelector("tbody");
    tbody.replaceChildren();
    for (const c of p.contracts ?? []) {
      const tr = document.createElement("tr");
      if (c.breach) tr.className = "breach";
      for (const v of [
        c.contract,
        c.account,
        pct(c.committed_pct),
        pct(c.before_pct),
        pct(c.after_pct),
        fmtMoney(c.credit_owed ?? 0),
      ]) {
        const td = document.createElement("td");
        td.textContent = v;
        tr.append(td);
      }
      tbody.append(tr);
    }
  }

  applyBody() {
    const reason = $("gf-apply-reason").value.trim();
    if (!reason) throw new Error("Change reason: an applied change needs a reason for the audit");
    return { ...this.buildChange(), reason, approver_token: null };
  }

  async apply() {
    this.hideError();
    $("apply-result").hidden = true;
    let body;
    try {
      body = this.applyBody();
    } catch (err) {
      this.showError(err.message);
      return;
    }
    await this.sendApply(body);
  }

  async sendApply(body) {
    $("gf-apply").disabled = true;
    this.status("applying…");
    try {
      const out = await api("/policy/apply", { method: "POST", body });
      $("approver").hidden = true;
      this.pendingApply = null;
      if (out.preview) this.showPreview(out.preview);
      const res = $("apply-result");
      res.hidden = false;
      res.textContent =
        `Applied: policy version ${out.version}, recorded ${out.recorded_at} by ${out.author}` +
        `${out.approver ? `, approved by ${out.approver}` : ""}.`;
      this.status("change applied");
      this.counter += 1;
      $("gf-id").value = this.nextId();
      this.drawer.clear();
      this.onApplied?.(out);
    } catch (err) {
      const breach = err instanceof ApiError && err.status === 409 &&
        (err.problem?.preview || String(err.problem?.type ?? "").includes("breach"));
      if (breach) {
        if (err.problem?.preview) this.showPreview(err.problem.preview);
        this.pendingApply = body;
        $("approver").hidden = false;
        if (body.approver_token) this.showError(err);
        else this.status("breach: an approver must approve");
        $("approver").querySelector("[name=username]").focus();
      } else {
        this.showError(err);
        this.status("");
      }
    } finally {
      $("gf-apply").disabled = false;
    }
  }

  async approveAndApply() {
    if (!this.pendingApply) return;
    this.hideError();
    const form = $("approver");
    const username = form.elements.username.value.trim();
    const password = form.elements.password.value;
    let token;
    try {
      token = await requestToken(username, password);
    } catch (err) {
      this.showError(err);
      return;
    }
    form.elements.password.value = "";
    const why = form.elements.approval_reason.value.trim();
    await this.sendApply({
      ...this.pendingApply,
      approver_token: token,
      ...(why ? { approval_reason: why } : {}),
    });
  }

  showError(err) {
    const el = $("editor-error");
    el.hidden = false;
    el.textContent = err instanceof ApiError ? err.describe() : String(err?.message ?? err);
  }

  hideError() {
    $("editor-error").hidden = true;
  }
}

function pct(x) {
  return x === null || x === undefined ? "–" : `${Number(x).toFixed(2)}%`;
}
