// sensing-edge dashboard: plain ES modules, no build step; Leaflet and uPlot vendored under /static/vendor
// (nothing from the internet). Three views: the district's ranking (#district), the facility manager's
// energy (#energy) and the fleet dispatcher's (#fleet), each for an org in the key's scope
// (#energy?org=330000/330100/330106/jgsw). Data: the /v1 API; live updates: Server-Sent Events (/v1/live).

import { api, pages, session, ApiError } from "./api.js";
import { loadDistrict } from "./district.js";
import { energy, loadEnergy, updateMeterRow, updatePower } from "./energy.js";
import { fleet, loadFleet, loadTerminals, addAlert, onPosition } from "./fleet.js";
import { $, el, pending, setTimeZone } from "./util.js";

const VIEWS = ["district", "energy", "fleet"];
const app = { site: null, tree: [], names: {}, parent: {}, owners: new Set(), loaded: {}, org: null, source: null };

function parseHash() {
  const h = location.hash.replace(/^#/, "");
  const [view, query] = h.split("?");
  return { view: VIEWS.includes(view) ? view : null, params: new URLSearchParams(query || "") };
}

/** A link to `view` of the current org, keeping the view's own parameters when it is the same view. */
function link(view, overrides = {}) {
  const cur = parseHash();
  const p = new URLSearchParams(view === (cur.view || defaultView()) ? cur.params : "");
  if (!p.has("org") && app.org) p.set("org", app.org);
  for (const [k, v] of Object.entries(overrides)) { if (v == null) p.delete(k); else p.set(k, v); }
  if (overrides.org && overrides.org !== app.org) for (const k of [...p.keys()]) if (k !== "org") p.delete(k);
  return `#${view}?${p.toString().replace(/%2F/g, "/")}`;
}

// ---- the org tree as the key sees it
function walk(nodes, parent) {
  for (const n of nodes) {
    app.names[n.path] = n.name;
    app.parent[n.path] = parent;
    app.tree.push(n.path);
    walk(n.children || [], n.path);
  }
}
function children(org) { return app.tree.filter((p) => app.parent[p] === org); }
function below(org) { return app.tree.filter((p) => p !== org && p.startsWith(org + "/")); }
/** Where a user lands: from the key's org down while there is a single way and nothing of its own. */
function defaultOrg() {
  let org = app.site.scope || app.tree.find((p) => !app.parent[p]) || null;
  for (let i = 0; org && i < 10; i++) {
    const kids = children(org);
    if (kids.length !== 1 || app.owners.has(org)) break;
    org = kids[0];
  }
  return org;
}
function hasDistrict(org) { return below(org).some((p) => app.owners.has(p)); }
function defaultView() { return app.org && hasDistrict(app.org) ? "district" : "energy"; }

function renderScope() {
  const crumbs = [];
  const top = app.site.scope || app.tree.find((p) => !app.parent[p]);
  for (let p = app.org; p; p = app.parent[p]) { crumbs.unshift(p); if (p === top) break; }
  const view = parseHash().view || defaultView();
  $("#scope").replaceChildren(...crumbs.flatMap((p, i) => [...(i ? [el("span", { class: "sep" }, " › ")] : []),
    el("a", { href: link(hasDistrict(p) || view !== "district" ? view : "energy", { org: p }), class: p === app.org ? "here" : "", "data-org": p }, app.names[p] || p)]),
    el("span", { class: "role" }, app.site.scope ? ` (${app.site.role})` : ""));
  $("#tab-district").hidden = !hasDistrict(app.org);
  for (const v of VIEWS) $(`#tab-${v}`).href = link(v);
}

function ctx() {
  const { params } = parseHash();
  return { org: app.org, orgNames: app.names, params, link };
}

async function show() {
  const h = parseHash();
  const org = h.params.get("org") || defaultOrg();
  if (org !== app.org) { app.org = org; app.loaded = {}; connect(); }
  const view = h.view || defaultView();
  for (const v of VIEWS) {
    $(`#view-${v}`).hidden = v !== view;
    $(`#tab-${v}`).classList.toggle("active", v === view);
  }
  renderScope();
  const key = `${view}?${h.params.toString()}`;
  if (app.loaded[view] === key) { if (view === "fleet" && fleet.map) fleet.map.invalidate(); return; }
  app.loaded[view] = key;
  const box = $(`#view-${view}`);
  box.classList.add("loading");
  box.dataset.loaded = "0";
  $("#problem").hidden = true;
  try {
    if (view === "district") await loadDistrict(ctx());
    else if (view === "energy") await loadEnergy(ctx());
    else await loadFleet(ctx(), app.site);
    box.dataset.loaded = "1";
  } catch (e) {
    app.loaded[view] = null;
    $("#problem").hidden = false;
    $("#problem").textContent = e instanceof ApiError
      ? (e.status === 403 || e.status === 404 ? `${app.names[org] || org}: not within your key's org (${e.status} ${e.detail})`
        : `the API answered ${e.status}: ${e.detail}`) : `could not load the ${view} view: ${e.message}`;
    box.dataset.loaded = "error";
  } finally {
    box.classList.remove("loading");
  }
  if (pending.scrollTo) { const target = $(`#${pending.scrollTo}`); pending.scrollTo = null; if (target) target.scrollIntoView(); }
}

// ---- live
function connect() {
  if (app.source) app.source.close();
  const q = new URLSearchParams({ topics: "meter,position,alert" });
  if (app.org) q.set("org", app.org);
  if (app.site.map && app.site.map.crs === "gcj02") q.set("crs", "gcj02");
  if (session.key) q.set("key", session.key);
  const es = new EventSource("/v1/live?" + q.toString().replace(/%2F/g, "/"));
  app.source = es;
  es.onopen = () => { $("#conn").className = "conn on"; };
  es.onerror = () => { $("#conn").className = "conn off"; };
  es.addEventListener("meter", (e) => {
    const l = JSON.parse(e.data);
    energy.latest[l.meter] = l;
    updatePower();
    updateMeterRow(l);
  });
  es.addEventListener("position", (e) => onPosition(JSON.parse(e.data)));
  es.addEventListener("alert", (e) => addAlert(JSON.parse(e.data), true));
}

async function main() {
  try {
    app.site = await api("/v1/site");
  } catch (e) { return; }
  setTimeZone(app.site.timezone);
  $("#site-name").textContent = `sensing-edge · ${app.site.name}`;
  const [tree, buildings, vehicles] = await Promise.all([api("/v1/orgs/tree"), pages("/v1/buildings"), pages("/v1/vehicles")]);
  walk(tree.roots, null);
  for (const x of [...buildings, ...vehicles]) app.owners.add(x.org);
  window.addEventListener("hashchange", show);
  await show();
  setInterval(() => { if (app.loaded.fleet) loadTerminals(app.org).catch(() => {}); }, 30000); // online/offline is not in the stream
  document.body.dataset.ready = "1";
}

main();
