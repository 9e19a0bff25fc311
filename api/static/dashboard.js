// sensing-edge dashboard: plain JS, SVG and canvas, no external assets (works offline).
// Two views: the facility manager's (#energy) and the fleet dispatcher's (#fleet).
// Data: the /v1 API; live updates: Server-Sent Events from /v1/live.
"use strict";

const QUOTA_KWH_M2_YEAR = 70; // GB/T 51161-2016 constraint value, office A-class, HSCW zone: unconfirmed default
const CHART_WINDOW_MS = 2 * 3600 * 1000;
const state = {
  site: null, key: localStorage.getItem("sensing-edge-key") || "",
  buildings: [], meters: [], vehicles: [], latestMeters: {}, latestVehicles: {}, series: {}, trails: {}, terminals: {},
  indicators: {}, yearIndicators: {}, items: {}, health: {}, source: null, tiles: {},
};

function $(sel) { return document.querySelector(sel); }
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(k == null ? "" : String(k)));
  return e;
}
function fmt(v, d = 1) { return (v == null || Number.isNaN(v)) ? "—" : Number(v).toFixed(d); }
function hhmm(iso) { return iso ? iso.slice(11, 19) : "—"; }

function localDate(tz) {
  const parts = new Intl.DateTimeFormat("en-CA", { timeZone: tz, year: "numeric", month: "2-digit", day: "2-digit" })
    .formatToParts(new Date());
  const get = (t) => parts.find((p) => p.type === t).value;
  return { y: get("year"), m: get("month"), d: get("day") };
}

async function api(path) {
  const headers = state.key ? { Authorization: "Bearer " + state.key } : {};
  const r = await fetch(path, { headers });
  if (r.status === 401) { showLogin(); throw new Error("unauthorized"); }
  if (!r.ok) return null;
  return r.json();
}

async function pages(path) {
  const out = [];
  let cursor = null;
  for (let i = 0; i < 50; i++) {
    const sep = path.includes("?") ? "&" : "?";
    const page = await api(path + (cursor ? `${sep}cursor=${encodeURIComponent(cursor)}` : ""));
    if (!page) break;
    out.push(...page.items);
    cursor = page.next_cursor;
    if (!cursor) break;
  }
  return out;
}

function showLogin() {
  $("#login").hidden = false;
  $("#key-save").onclick = () => {
    state.key = $("#key-input").value.trim();
    localStorage.setItem("sensing-edge-key", state.key);
    location.reload();
  };
}

// ---------------------------------------------------------------- energy view
// Meters sit behind each other (parent): a building's power is that of its top meters (no meter
// behind another counted with it), as the energy analytics count its energy.
function meterById(id) { return state.meters.find((m) => m.id === id); }

function hasAncestorIn(m, buildingId) {
  let p = m.parent ? meterById(m.parent) : null;
  for (let n = 0; p && n < 100; n++) {
    if (p.building === buildingId) return true;
    p = p.parent ? meterById(p.parent) : null;
  }
  return false;
}

function topMeters(b) {
  return state.meters.filter((m) => m.building === b.id && m.carrier === "electricity" && !hasAncestorIn(m, b.id));
}

function formulaTerms(f) { // "a - b + c" -> [[1, "a"], [-1, "b"], [1, "c"]]
  const out = []; let sign = 1;
  for (const tok of f.split(/\s+/).filter(Boolean)) {
    if (tok === "+") sign = 1; else if (tok === "-") sign = -1; else { out.push([sign, tok]); sign = 1; }
  }
  return out;
}

function meterPower(m, depth = 0) {
  if (!m || depth > 20) return null;
  if (m.formula) { // a virtual meter: the signed sum of its terms' power
    let kw = 0;
    for (const [sign, id] of formulaTerms(m.formula)) {
      const v = meterPower(meterById(id), depth + 1);
      if (v == null) return null;
      kw += sign * v;
    }
    return kw;
  }
  const l = state.latestMeters[m.id];
  const v = l && l.values.active_power_total_kw;
  return typeof v === "number" ? v : null;
}

function buildingPower(b) {
  let kw = 0, n = 0;
  for (const m of topMeters(b)) {
    const v = meterPower(m);
    if (v != null) { kw += v; n++; }
  }
  return n ? kw : null;
}

const ITEM_COLORS = { "01A": "#6eb435", "01B": "#138baa", "01C": "#7b61c9", "01D": "#e89b1a", unmetered: "#b8c1cc", unassigned: "#dfe4ea" };
function itemColor(code) { return ITEM_COLORS[code] || ITEM_COLORS[code.slice(0, 3)] || "#9aa6b2"; }

function renderItems(b) {
  const box = el("div", { class: "items", id: `items-${b.id}` });
  const day = state.items[b.id];
  const p = day && day.periods.length ? day.periods[day.periods.length - 1] : null;
  if (!p || !p.items.length) { box.append(el("span", { class: "muted" }, "by item: no data yet")); return box; }
  const bar = el("div", { class: "stack", title: "today by item (分项)" });
  const list = el("dl", { class: "item-list" });
  for (const it of p.items) {
    const share = p.total > 0 ? it.consumption / p.total : 0;
    bar.append(el("span", { style: `width:${Math.max(0, 100 * share).toFixed(1)}%;background:${itemColor(it.item)}`, title: it.name }));
    list.append(el("dt", { "data-item": it.item }, el("i", { style: `background:${itemColor(it.item)}` }), `${it.name} `,
                   el("span", { class: "muted" }, it.item.startsWith("0") ? `${it.item} ${it.name_zh}` : it.name_zh)),
                el("dd", {}, `${fmt(it.consumption, Math.abs(it.consumption) < 10 ? 2 : 1)} ${day.unit || "kWh"} · ${fmt(100 * share, 0)} %`));
  }
  box.append(bar, list);
  return box;
}

function renderBuildings() {
  const box = $("#buildings");
  box.replaceChildren();
  for (const b of state.buildings) {
    const day = state.indicators[b.id] || {};
    const year = state.yearIndicators[b.id] || {};
    const kwh = day.consumption_kwh;
    const waste = (kwh != null && day.off_hours_share != null) ? kwh * day.off_hours_share : null;
    const perM2 = year.consumption_kwh != null ? year.consumption_kwh / b.floor_area_m2 : null;
    const pct = perM2 != null ? 100 * perM2 / QUOTA_KWH_M2_YEAR : null;
    const bar = el("div", { class: "bar" }, el("span", { class: pct > 100 ? "over" : "", style: `width:${Math.min(100, pct || 0)}%` }));
    const mains = topMeters(b).map((m) => m.id).join(", ");
    box.append(el("div", { class: "card", "data-building": b.id },
      el("h3", {}, `${b.name || b.id} `, el("span", { class: "muted" }, b.id)),
      el("div", { class: "big", id: `power-${b.id}`, title: `main meters: ${mains}` }, `${fmt(buildingPower(b))} kW`),
      el("div", { class: "muted small" }, `from ${mains || "no meter"}`),
      el("dl", {},
        el("dt", {}, "today's energy"), el("dd", { id: `today-${b.id}` }, `${fmt(kwh)} kWh`),
        el("dt", {}, "off-hours waste"), el("dd", {}, `${fmt(waste)} kWh (${fmt(day.off_hours_share != null ? 100 * day.off_hours_share : null, 0)} %)`),
        el("dt", {}, "year to date"), el("dd", {}, `${fmt(perM2, 2)} kWh/m²`),
        el("dt", {}, "quota progress"), el("dd", {}, `${fmt(pct, 0)} % of ${QUOTA_KWH_M2_YEAR}`)),
      bar, renderItems(b)));
  }
}

function meterTree() { // [meter, depth] in tree order: each parent followed by the meters behind it
  const ids = new Set(state.meters.map((m) => m.id));
  const kids = {};
  for (const m of state.meters) (kids[m.parent && ids.has(m.parent) ? m.parent : ""] ||= []).push(m);
  const out = [];
  const walk = (pid, depth) => { for (const m of kids[pid] || []) { out.push([m, depth]); if (out.length <= state.meters.length) walk(m.id, depth + 1); } };
  walk("", 0);
  return out;
}

function renderMeterTable() {
  const tb = $("#meter-table tbody");
  tb.replaceChildren();
  for (const [m, depth] of meterTree()) {
    const l = state.latestMeters[m.id];
    const h = state.health[m.id];
    const status = h ? h.status : "unknown";
    const power = m.formula ? meterPower(m) : (l && l.values.active_power_total_kw);
    tb.append(el("tr", { "data-meter": m.id, "data-depth": String(depth) },
      el("td", { class: "tree", style: `padding-left:${0.4 + 1.2 * depth}em` }, depth ? "└ " : "", m.id,
         m.formula ? el("span", { class: "muted" }, ` = ${m.formula}`) : ""),
      el("td", {}, m.item || "—"), el("td", {}, m.building || "—"), el("td", {}, m.carrier),
      el("td", {}, el("span", { class: `status ${status}` }, status)),
      el("td", { class: "power" }, fmt(power, 2)),
      el("td", {}, l ? hhmm(l.time) : "—")));
  }
}

function renderChart(meterId) {
  const pts = (state.series[meterId] || []).filter((p) => p.t > Date.now() - CHART_WINDOW_MS - 600e3);
  const svg = document.getElementById(`chart-${meterId}`);
  if (!svg) return;
  const W = 340, H = 120, P = 24;
  svg.replaceChildren();
  const ns = "http://www.w3.org/2000/svg";
  const mk = (tag, attrs) => { const e = document.createElementNS(ns, tag); for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v); return e; };
  if (pts.length === 0) { const t = mk("text", { x: P, y: H / 2, fill: "#888" }); t.textContent = "no data yet"; svg.append(t); return; }
  const t1 = Date.now(), t0 = t1 - CHART_WINDOW_MS;
  let lo = Math.min(...pts.map((p) => p.v)), hi = Math.max(...pts.map((p) => p.v));
  if (hi - lo < 1e-6) { hi += 1; lo -= 1; }
  const x = (t) => P + (W - 2 * P) * (t - t0) / (t1 - t0);
  const y = (v) => H - P / 2 - (H - P) * (v - lo) / (hi - lo);
  svg.append(mk("line", { x1: P, y1: H - P / 2, x2: W - P, y2: H - P / 2, stroke: "#ccd" }));
  for (const v of [lo, hi]) { const t = mk("text", { x: 2, y: y(v) + 4, "font-size": 9, fill: "#667" }); t.textContent = fmt(v, 0); svg.append(t); }
  svg.append(mk("polyline", { points: pts.map((p) => `${x(Math.max(p.t, t0)).toFixed(1)},${y(p.v).toFixed(1)}`).join(" "), fill: "none", stroke: "#3a7bd5", "stroke-width": 1.6 }));
  const last = pts[pts.length - 1];
  svg.append(mk("circle", { cx: x(last.t), cy: y(last.v), r: 3, fill: "#d9534f" }));
}

async function loadEnergy() {
  const tz = state.site.timezone;
  const { y, m, d } = localDate(tz);
  const today = `${y}-${m}-${d}T00:00:00`;
  const [buildings, meters, latest] = await Promise.all([pages("/v1/buildings"), pages("/v1/meters"), api("/v1/latest/meters")]);
  state.buildings = buildings; state.meters = meters;
  for (const l of latest || []) state.latestMeters[l.meter] = l;
  const [day, year] = await Promise.all([
    pages(`/v1/indicators/energy?scope=building&period=day&from=${today}`),
    pages(`/v1/indicators/energy?scope=building&period=year&from=${y}-01-01T00:00:00`)]);
  for (const i of day) if (!i.carrier || i.carrier === "electricity") state.indicators[i.id] = i.values;
  for (const i of year) if (!i.carrier || i.carrier === "electricity") state.yearIndicators[i.id] = i.values;
  await Promise.all(buildings.map(async (b) => {
    state.items[b.id] = await api(`/v1/energy/items?scope=building&id=${encodeURIComponent(b.id)}&period=day&from=${today}`);
  }));
  await Promise.all(meters.map(async (mt) => { state.health[mt.id] = await api(`/v1/meters/${encodeURIComponent(mt.id)}/health`); }));
  const charts = $("#charts");
  charts.replaceChildren();
  const from = new Date(Date.now() - CHART_WINDOW_MS).toISOString();
  await Promise.all(meters.map(async (mt) => {
    const r = await api(`/v1/meters/${encodeURIComponent(mt.id)}/readings?from=${encodeURIComponent(from)}&every=5m&agg=mean&fields=active_power_total_kw&limit=1000`);
    state.series[mt.id] = (r ? r.items : []).filter((it) => typeof it.values.active_power_total_kw === "number")
      .map((it) => ({ t: Date.parse(it.time), v: it.values.active_power_total_kw }));
  }));
  for (const mt of meters) {
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.id = `chart-${mt.id}`;
    svg.setAttribute("viewBox", "0 0 340 120");
    charts.append(el("div", { class: "chart" }, el("h4", {}, `${mt.id} `, el("span", { class: "muted" }, "active power, kW")), svg));
    renderChart(mt.id);
  }
  renderBuildings();
  renderMeterTable();
}

// ---------------------------------------------------------------- fleet view
function project(lat, lon) { // Web Mercator in tile units at zoom 0 (0..1)
  const s = Math.sin(lat * Math.PI / 180);
  return [(lon + 180) / 360, 0.5 - Math.log((1 + s) / (1 - s)) / (4 * Math.PI)];
}

function mapFrame(canvas) {
  const pos = Object.values(state.latestVehicles);
  const all = pos.map((p) => [p.lat, p.lon]);
  for (const t of Object.values(state.trails)) for (const q of t) all.push(q);
  if (!all.length) all.push([30.2741, 120.1551]);
  let la0 = Math.min(...all.map((a) => a[0])), la1 = Math.max(...all.map((a) => a[0]));
  let lo0 = Math.min(...all.map((a) => a[1])), lo1 = Math.max(...all.map((a) => a[1]));
  const pad = Math.max(0.002, (la1 - la0) * 0.15, (lo1 - lo0) * 0.15);
  la0 -= pad; la1 += pad; lo0 -= pad; lo1 += pad;
  const [x0, y1] = project(la0, lo0), [x1, y0] = project(la1, lo1);
  const scale = Math.min(canvas.width / (x1 - x0), canvas.height / (y1 - y0));
  const cx = (x0 + x1) / 2, cy = (y0 + y1) / 2;
  return { scale, toPx: (lat, lon) => { const [x, y] = project(lat, lon); return [canvas.width / 2 + (x - cx) * scale, canvas.height / 2 + (y - cy) * scale]; }, cx, cy, la0, la1, lo0, lo1 };
}

function drawTiles(ctx, canvas, f) {
  const url = state.site.tile_url;
  const z = Math.max(0, Math.min(19, Math.floor(Math.log2(f.scale / 256))));
  const n = 2 ** z, k = f.scale / (256 * n);
  const tx0 = Math.floor((f.cx - canvas.width / 2 / f.scale) * n), tx1 = Math.floor((f.cx + canvas.width / 2 / f.scale) * n);
  const ty0 = Math.floor((f.cy - canvas.height / 2 / f.scale) * n), ty1 = Math.floor((f.cy + canvas.height / 2 / f.scale) * n);
  for (let tx = tx0; tx <= tx1; tx++) for (let ty = ty0; ty <= ty1; ty++) {
    const src = url.replace("{z}", z).replace("{x}", tx).replace("{y}", ty);
    let img = state.tiles[src];
    if (!img) { img = new Image(); img.onload = () => drawMap(); img.src = src; state.tiles[src] = img; }
    if (img.complete && img.naturalWidth) {
      const px = canvas.width / 2 + (tx / n - f.cx) * f.scale, py = canvas.height / 2 + (ty / n - f.cy) * f.scale;
      ctx.drawImage(img, px, py, 256 * k, 256 * k);
    }
  }
}

function drawGrid(ctx, canvas, f) {
  ctx.strokeStyle = "#e3e8ee"; ctx.fillStyle = "#8a96a3"; ctx.font = "10px sans-serif"; ctx.lineWidth = 1;
  const step = Math.pow(10, Math.floor(Math.log10(Math.max(f.lo1 - f.lo0, f.la1 - f.la0)))) / 2;
  for (let lon = Math.ceil(f.lo0 / step) * step; lon < f.lo1; lon += step) {
    const [x] = f.toPx(f.la0, lon); ctx.beginPath(); ctx.moveTo(x, 0); ctx.lineTo(x, canvas.height); ctx.stroke(); ctx.fillText(lon.toFixed(3) + "°E", x + 2, canvas.height - 4);
  }
  for (let lat = Math.ceil(f.la0 / step) * step; lat < f.la1; lat += step) {
    const [, y] = f.toPx(lat, f.lo0); ctx.beginPath(); ctx.moveTo(0, y); ctx.lineTo(canvas.width, y); ctx.stroke(); ctx.fillText(lat.toFixed(3) + "°N", 2, y - 2);
  }
}

const COLORS = { moving: "#2e8b57", idle: "#d4a017", parked: "#6b7785", offline: "#c0392b", unknown: "#6b7785" };

function drawMap() {
  if (!state.site) return; // opened straight on #fleet: drawn once the site is loaded
  const canvas = $("#map");
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fbfcfd"; ctx.fillRect(0, 0, canvas.width, canvas.height);
  const f = mapFrame(canvas);
  if (state.site.tile_url) drawTiles(ctx, canvas, f); else drawGrid(ctx, canvas, f);
  for (const [vid, trail] of Object.entries(state.trails)) {
    if (trail.length < 2) continue;
    ctx.strokeStyle = "rgba(58,123,213,.5)"; ctx.lineWidth = 2; ctx.beginPath();
    trail.forEach(([la, lo], i) => { const [x, y] = f.toPx(la, lo); if (i) ctx.lineTo(x, y); else ctx.moveTo(x, y); });
    ctx.stroke();
  }
  for (const p of Object.values(state.latestVehicles)) {
    const [x, y] = f.toPx(p.lat, p.lon);
    ctx.fillStyle = COLORS[p.status] || "#333";
    ctx.beginPath(); ctx.arc(x, y, 6, 0, 2 * Math.PI); ctx.fill();
    ctx.fillStyle = "#1d2733"; ctx.font = "12px sans-serif"; ctx.fillText(p.plate || p.vehicle, x + 8, y - 6);
  }
}

function renderVehicles() {
  const tb = $("#vehicle-table tbody");
  tb.replaceChildren();
  for (const v of state.vehicles) {
    const p = state.latestVehicles[v.id];
    const status = p ? p.status : "unknown";
    tb.append(el("tr", { "data-vehicle": v.id },
      el("td", {}, v.plate), el("td", {}, v.id), el("td", {}, el("span", { class: `status ${status}` }, status)),
      el("td", { class: "speed" }, fmt(p && p.speed_kmh, 0)), el("td", { class: "fix" }, p ? hhmm(p.time) : "—"),
      el("td", { class: "terminal" }, terminalBadge(state.terminals[v.id]))));
  }
  drawMap();
}

// JT/T 808 terminal of a vehicle (GET /v1/terminals): online or offline, with what the dispatcher asks next
function terminalBadge(t) {
  if (!t) return "—";
  const st = t.status === "online" ? "up" : (t.status === "offline" ? "offline" : "unknown");
  const title = [`terminal ${t.phone}`, t.protocol ? `JT/T 808-${t.protocol}` : null,
    t.remote_address ? `from ${t.remote_address}` : null, `last heard ${hhmm(t.last_seen)}`,
    `heartbeat ${hhmm(t.last_heartbeat)}`, `report ${hhmm(t.last_report)}`].filter(Boolean).join(" · ");
  return el("span", { class: `status ${st}`, title }, t.status.replace("_", " "));
}

async function loadTerminals() {
  const list = await pages("/v1/terminals");
  state.terminals = {};
  for (const t of list) state.terminals[t.vehicle] = t;
  for (const row of document.querySelectorAll("#vehicle-table tr[data-vehicle]")) {
    const cell = row.querySelector(".terminal");
    if (cell) cell.replaceChildren(terminalBadge(state.terminals[row.getAttribute("data-vehicle")]));
  }
}

function addAlert(a, fresh) {
  const ul = $("#alerts");
  const li = el("li", { class: fresh ? "new" : "" }, `${hhmm(a.time)} · ${a.kind || "alert"} · ${a.subject || ""} `,
    el("span", { class: "muted" }, a.values && a.values.message ? a.values.message : ""));
  ul.prepend(li);
  while (ul.children.length > 100) ul.lastChild.remove();
}

async function loadFleet() {
  const { y, m, d } = localDate(state.site.timezone);
  const today = `${y}-${m}-${d}T00:00:00`;
  const [vehicles, latest, trips, alerts] = await Promise.all([pages("/v1/vehicles"), api("/v1/latest/vehicles"),
    pages(`/v1/trips?from=${today}`), pages(`/v1/alerts?from=${today}`)]);
  state.vehicles = vehicles;
  for (const p of latest || []) { state.latestVehicles[p.vehicle] = p; state.trails[p.vehicle] = [[p.lat, p.lon]]; }
  await loadTerminals().catch(() => {});
  const tb = $("#trip-table tbody");
  tb.replaceChildren();
  for (const t of trips) {
    const v = t.values;
    tb.append(el("tr", {}, el("td", {}, hhmm(t.time)), el("td", {}, t.tags.vehicle || ""),
      el("td", {}, fmt(v.distance_km, 1)), el("td", {}, fmt(v.duration_s != null ? v.duration_s / 60 : null, 0))));
  }
  // today's mileage at the top org in scope: driven (in trips) and unobserved (straight lines across
  // signal gaps), never added together
  const ind = await pages(`/v1/indicators/fleet?scope=org&period=day&from=${today}`).catch(() => []);
  const top = ind.filter((i) => i.values).sort((a, b) => a.id.split("/").length - b.id.split("/").length)[0];
  $("#mileage").textContent = top
    ? `driven ${fmt(top.values.gps_km ?? top.values.mileage_km, 1)} km · unobserved ${fmt(top.values.unobserved_km, 1)} km`
    : "driven — km · unobserved — km";
  $("#alerts").replaceChildren();
  for (const a of alerts) addAlert(a, false);
  $("#map-mode").textContent = state.site.tile_url ? "map tiles: " + state.site.tile_url : "plain coordinate canvas (WGS-84)";
  renderVehicles();
}

// ---------------------------------------------------------------- live
function connect() {
  const q = new URLSearchParams({ topics: "meter,position,alert" });
  if (state.key) q.set("key", state.key);
  const es = new EventSource("/v1/live?" + q.toString());
  state.source = es;
  es.onopen = () => { $("#conn").className = "conn on"; };
  es.onerror = () => { $("#conn").className = "conn off"; };
  es.addEventListener("meter", (e) => {
    const l = JSON.parse(e.data);
    state.latestMeters[l.meter] = l;
    const v = l.values.active_power_total_kw;
    if (typeof v === "number") {
      const s = state.series[l.meter] || (state.series[l.meter] = []);
      s.push({ t: Date.parse(l.time), v });
      renderChart(l.meter);
    }
    for (const b of state.buildings) { // a campus incomer changes the virtual building meters made of it
      const n = document.getElementById(`power-${b.id}`); if (n) n.textContent = `${fmt(buildingPower(b))} kW`;
    }
    const row = document.querySelector(`#meter-table tr[data-meter="${CSS.escape(l.meter)}"]`);
    if (row) { row.querySelector(".power").textContent = fmt(v, 2); row.lastChild.textContent = hhmm(l.time); }
  });
  es.addEventListener("position", (e) => {
    const p = JSON.parse(e.data);
    state.latestVehicles[p.vehicle] = p;
    const t = state.trails[p.vehicle] || (state.trails[p.vehicle] = []);
    t.push([p.lat, p.lon]);
    if (t.length > 300) t.shift();
    const row = document.querySelector(`#vehicle-table tr[data-vehicle="${CSS.escape(p.vehicle)}"]`);
    if (row) {
      row.querySelector(".speed").textContent = fmt(p.speed_kmh, 0);
      row.querySelector(".fix").textContent = hhmm(p.time);
      const st = row.querySelector(".status"); st.className = `status ${p.status}`; st.textContent = p.status;
    }
    if (!$("#view-fleet").hidden) drawMap();
  });
  es.addEventListener("alert", (e) => addAlert(JSON.parse(e.data), true));
}

function route() {
  const fleet = location.hash === "#fleet";
  $("#view-fleet").hidden = !fleet;
  $("#view-energy").hidden = fleet;
  $("#tab-fleet").classList.toggle("active", fleet);
  $("#tab-energy").classList.toggle("active", !fleet);
  if (fleet) drawMap();
}

async function main() {
  window.addEventListener("hashchange", route);
  route();
  try {
    state.site = await api("/v1/site");
  } catch (e) { return; }
  if (!state.site) return;
  $("#site-name").textContent = `sensing-edge · ${state.site.name}`;
  $("#scope").textContent = state.site.scope ? `scope ${state.site.scope} (${state.site.role})` : "";
  await Promise.all([loadEnergy(), loadFleet()]);
  connect();
  setInterval(() => loadTerminals().catch(() => {}), 30000); // online/offline is not in the live stream
  document.body.dataset.ready = "1";
}

main();
