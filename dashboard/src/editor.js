// The geofence editor: a drawn or uploaded polygon plus action, scope, validity window and
// reason become a PolicyChange; "Preview" shows POST /api/policy/preview, "Apply" POSTs
// /api/policy/apply. A change that causes or deepens a contract breach is refused with 409 and
// stored by the server as a pending change (`change_id`): the approval dialog lets a second
// person sign in (their token lives only for the one approve request), approve it with their own
// reason (POST /api/policy/changes/{id}/approve), and the apply is retried with `approval_id`.
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
    this.pending = null; // {body, changeId, preview} of a change refused for a breach
    this.lastApproval = null; // the approved pending change (who approved, why)
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
    $("approver-cancel").addEventListener("click", () => this.closeApproval());
    $("approval").addEventListener("cancel", () => this.closeApproval()); // Escape
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
    const weakened = p.weakened_contracts ?? [];
    box.querySelector('[data-testid="preview-weakened"]').textContent = weakened.length
      ? `weakened (needs an approver): ${weakened
          .map((w) => `${w.contract} (${w.account}): ${w.change}`)
          .join("; ")}`
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
    return { ...this.buildChange(), reason };
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
    this.lastApproval = null;
    await this.sendApply(body);
  }

  /** POST /policy/apply as the signed-in user; a breach (409 + change_id) opens the dialog. */
  async sendApply(body, approval = null) {
    $("gf-apply").disabled = true;
    this.status("applying…");
    try {
      const out = await api("/policy/apply", { method: "POST", body });
      this.closeApproval();
      $("approver").reset(); // the approver's name and reason do not carry over to a next change
      if (out.preview) this.showPreview(out.preview);
      const approver = out.approver ?? approval?.approver ?? null;
      const why = out.approval_reason ?? approval?.approval_reason ?? null;
      const res = $("apply-result");
      res.hidden = false;
      res.textContent =
        `Applied: policy version ${out.version}, recorded ${out.recorded_at} by ${out.author}` +
        (approver ? `, approved by ${approver}${why ? ` (“${why}”)` : ""}` : "") +
        ".";
      res.dataset.approver = approver ?? "";
      this.status("change applied");
      this.counter += 1;
      $("gf-id").value = this.nextId();
      this.drawer.clear();
      this.onApplied?.(out);
    } catch (err) {
      const changeId = err instanceof ApiError && err.status === 409 ? err.problem?.change_id : null;
      if (changeId) {
        const retried = !!body.approval_id;
        const { approval_id: _, ...proposal } = body;
        if (err.problem.preview) this.showPreview(err.problem.preview);
        this.openApproval({ body: proposal, changeId: String(changeId), preview: err.problem.preview });
        // a retry refused again (e.g. the policy changed in between): a new pending change
        if (retried) this.showApprovalError(err);
        this.status("breach: an approver must approve");
      } else {
        this.showError(err);
        this.status("");
      }
    } finally {
      $("gf-apply").disabled = false;
    }
  }

  openApproval(pending) {
    this.pending = pending;
    const dlg = $("approval");
    const set = (testid, text) => {
      dlg.querySelector(`[data-testid="${testid}"]`).textContent = text;
    };
    const p = pending.preview ?? {};
    const why = [
      ...(p.contracts ?? [])
        .filter((c) => c.breach)
        .map((c) => `${c.contract} (${c.account}): ${pct(c.after_pct)} < ${pct(c.committed_pct)}`),
      ...(p.weakened_contracts ?? []).map((w) => `${w.contract} (${w.account}): ${w.change}`),
    ];
    set("approval-change-id", pending.changeId);
    set("approval-contracts", why.length ? why.join("; ") : "–");
    set("approval-hours-lost", p.terminal_hours_lost === undefined ? "–" : fmtHours(p.terminal_hours_lost));
    set("approval-credits", p.credits_owed === undefined ? "–" : fmtMoney(p.credits_owed));
    set("approval-change-reason", pending.body.reason ?? "");
    this.hideApprovalError();
    const form = $("approver");
    form.elements.password.value = "";
    if (!dlg.open) dlg.showModal();
    form.elements.username.focus();
  }

  closeApproval() {
    const dlg = $("approval");
    $("approver").elements.password.value = "";
    if (dlg.open) dlg.close();
    this.pending = null;
  }

  /**
   * The approver signs in for this one request: their token is requested, used to approve the
   * pending change with their own reason, and dropped; then the author's apply is re-sent with
   * the approval's id (the server checks it is the same change, unused and by someone else).
   */
  async approveAndApply() {
    const pending = this.pending;
    if (!pending) return;
    this.hideApprovalError();
    const form = $("approver");
    const username = form.elements.username.value.trim();
    const password = form.elements.password.value;
    const reason = form.elements.approval_reason.value.trim();
    if (!username || !password) return this.showApprovalError("Approver: user name and password");
    if (!reason) return this.showApprovalError("Approval reason: the approver's own reason is audited");
    const submit = form.querySelector("[type=submit]");
    submit.disabled = true;
    let approval;
    try {
      let token = await requestToken(username, password);
      form.elements.password.value = "";
      try {
        approval = await api(`/policy/changes/${encodeURIComponent(pending.changeId)}/approve`, {
          method: "POST",
          body: { reason },
          token, // this request only: never stored, and not the signed-in user's session
        });
      } finally {
        token = null;
      }
    } catch (err) {
      form.elements.password.value = "";
      this.showApprovalError(err);
      return;
    } finally {
      submit.disabled = false;
    }
    this.lastApproval = approval;
    this.status(`approved by ${approval?.approver ?? username}; applying…`);
    await this.sendApply({ ...pending.body, approval_id: pending.changeId }, approval);
  }

  showApprovalError(err) {
    const el = $("approval").querySelector('[data-testid="approval-error"]');
    el.hidden = false;
    el.textContent = err instanceof ApiError ? err.describe() : String(err?.message ?? err);
  }

  hideApprovalError() {
    $("approval").querySelector('[data-testid="approval-error"]').hidden = true;
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
