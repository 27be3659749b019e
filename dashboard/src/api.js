// The HTTP client of the dashboard: bearer token in sessionStorage, JSON in and out, and RFC 9457
// problem details turned into an ApiError that can be shown readably.
const TOKEN_KEY = "leotwin.token";

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.title || problem?.detail || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }

  /** One readable block: title, detail and one line per failed field or row. */
  describe() {
    const p = this.problem;
    const lines = [];
    const head = [p.title, p.status ?? this.status].filter((x) => x !== undefined && x !== "");
    lines.push(head.length ? `${head[0]}${head[1] ? ` (${head[1]})` : ""}` : `HTTP ${this.status}`);
    if (p.detail && p.detail !== p.title) {
      lines.push(typeof p.detail === "string" ? p.detail : JSON.stringify(p.detail));
    }
    for (const e of Array.isArray(p.errors) ? p.errors : []) {
      const where = [];
      if (e.row !== null && e.row !== undefined) where.push(`row ${e.row}`);
      if (e.field) where.push(`field ${e.field}`);
      else if (Array.isArray(e.loc) && e.loc.length) where.push(e.loc.join("."));
      lines.push(`• ${where.length ? `${where.join(", ")}: ` : ""}${e.msg ?? JSON.stringify(e)}`);
    }
    return lines.join("\n");
  }
}

/** Absolute URL prefix of the API (the dashboard is served by the same app, at `/`). */
export function apiBase() {
  return new URL("api", new URL("/", window.location.href)).href;
}

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

async function parseError(res) {
  let problem = null;
  const text = await res.text();
  try {
    problem = JSON.parse(text);
  } catch {
    problem = { title: res.statusText || `HTTP ${res.status}`, detail: text.slice(0, 500) };
  }
  if (problem && !problem.title && problem.detail === undefined && problem.message) {
    problem.title = problem.message;
  }
  return new ApiError(res.status, problem);
}

/** fetch `/api${path}`; JSON body when `body` is an object; throws ApiError on HTTP errors. */
export async function api(path, { method = "GET", body, token, auth = true, raw = false } = {}) {
  const headers = { Accept: "application/json, application/problem+json" };
  const bearer = token ?? (auth ? getToken() : null);
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  let payload;
  if (body instanceof URLSearchParams) {
    payload = body;
    headers["Content-Type"] = "application/x-www-form-urlencoded";
  } else if (body !== undefined) {
    payload = JSON.stringify(body);
    headers["Content-Type"] = "application/json";
  }
  const res = await fetch(`/api${path}`, { method, headers, body: payload });
  if (!res.ok) {
    const err = await parseError(res);
    if (res.status === 401 && auth && !token) onUnauthorized(err);
    throw err;
  }
  if (raw) return res;
  if (res.status === 204) return null;
  const type = res.headers.get("Content-Type") || "";
  return type.includes("json") ? res.json() : res.text();
}

/** OAuth2 password flow: the access token of `username`, or an ApiError. */
export async function requestToken(username, password) {
  const form = new URLSearchParams({ username, password, grant_type: "password" });
  const out = await api("/auth/token", { method: "POST", body: form, auth: false });
  return out.access_token;
}
