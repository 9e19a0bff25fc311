// The /v1 API as the dashboard reads it: the key (kept in local storage), pages, the org scope.

import { $ } from "./util.js";

const KEY = "sensing-edge-key";
export const session = { key: localStorage.getItem(KEY) || "", org: null };

export class ApiError extends Error {
  constructor(status, detail, path) { super(`${status} ${detail} (${path})`); this.status = status; this.detail = detail; }
}

/** GET a /v1 path; 401 asks for a key; 429 (the key's rate limit) waits as told and tries again;
 * other errors are thrown with the problem's detail. */
export async function api(path, { quiet404 = false } = {}) {
  const headers = session.key ? { Authorization: "Bearer " + session.key } : {};
  let r = await fetch(path, { headers });
  for (let i = 0; r.status === 429 && i < 5; i++) {
    const wait = Math.min(10, Number(r.headers.get("Retry-After")) || 1);
    await new Promise((ok) => setTimeout(ok, wait * 1000));
    r = await fetch(path, { headers });
  }
  if (r.status === 401) { showLogin(); throw new ApiError(401, "a key is needed", path); }
  if (!r.ok) {
    if (quiet404 && r.status === 404) return null;
    let detail = r.statusText;
    try { detail = (await r.json()).detail || detail; } catch (e) { /* not problem+json */ }
    throw new ApiError(r.status, detail, path);
  }
  return r.json();
}

/** Every item of a paged list. */
export async function pages(path) {
  const out = [];
  let cursor = null;
  for (let i = 0; i < 100; i++) {
    const sep = path.includes("?") ? "&" : "?";
    const page = await api(path + (cursor ? `${sep}cursor=${encodeURIComponent(cursor)}` : ""));
    out.push(...page.items);
    cursor = page.next_cursor;
    if (!cursor) break;
  }
  return out;
}

/** `path` with query parameters (undefined and null ones left out). */
export function q(path, params) {
  const s = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) if (v != null && v !== "") s.set(k, v);
  const t = s.toString().replace(/%2F/g, "/");   // org paths read better unescaped; the API takes both
  return t ? `${path}?${t}` : path;
}

function showLogin() {
  $("#login").hidden = false;
  $("#key-save").onclick = () => {
    session.key = $("#key-input").value.trim();
    localStorage.setItem(KEY, session.key);
    location.reload();
  };
}
