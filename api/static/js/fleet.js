// The dispatcher's view: vehicles on the map with today's tracks, trips and geofences; their status and
// terminals; today's trips, mileage, utilisation and 出车率 (dispatch rate), holiday use; alerts. Live.

import { api, pages, q } from "./api.js";
import { FleetMap } from "./map.js";
import { $, clock, dayStart, el, fmt, localDay, localIso, pct } from "./util.js";

export const fleet = { vehicles: [], latest: {}, terminals: {}, map: null };

export async function loadFleet(ctx, site) {
  const org = ctx.org;
  if (!fleet.map) {
    fleet.map = new FleetMap($("#map"), site.map || { tile_url: site.tile_url }, (mode, text) => {
      $("#map-mode").textContent = text;
      $("#map").dataset.mode = mode;
    });
  }
  const m = fleet.map;
  const crs = m.crs;
  const today = localDay();
  const t0 = dayStart(today), m0 = dayStart({ ...today, d: 1 }), y0 = dayStart({ y: today.y, m: 1, d: 1 });
  const [vehicles, latest, trips, alerts, fences, ind] = await Promise.all([
    pages(q("/v1/vehicles", { org })), api(q("/v1/latest/vehicles", { org, crs })),
    pages(q("/v1/trips", { org, from: localIso(t0), limit: 1000 })), pages(q("/v1/alerts", { org, from: localIso(t0), limit: 1000 })),
    pages(q("/v1/geofences", { org, crs })),
    Promise.all([["day", t0], ["month", m0], ["year", y0]].map(([period, from]) =>
      pages(q("/v1/indicators/fleet", { scope: "org", id: org, period, from: localIso(from) })).catch(() => [])))]);
  fleet.vehicles = vehicles;
  fleet.latest = {};
  m.clear();
  for (const p of latest) fleet.latest[p.vehicle] = p;
  await loadTerminals(org).catch(() => {});
  renderSummary(ind.map((rows) => (rows.length ? rows[rows.length - 1].values : null)), vehicles.length);
  renderVehicles();
  renderTrips(trips);
  $("#alerts").replaceChildren();
  for (const a of alerts) addAlert(a, false);

  m.setFences(fences);
  const tripsBy = {};
  for (const t of trips) (tripsBy[t.tags.vehicle] ||= []).push([Date.parse(t.time), t.values.end_ns ? t.values.end_ns / 1e6 : Date.parse(t.time) + (t.values.duration_s || 0) * 1e3]);
  await Promise.all(vehicles.map(async (v) => {
    const fixes = [];
    let cursor = null;
    for (let i = 0; i < 20; i++) {
      const r = await api(q(`/v1/vehicles/${encodeURIComponent(v.id)}/track`, { from: localIso(t0), crs, limit: 1000, cursor }));
      for (const f of r.items) fixes.push([f.lat, f.lon, Date.parse(f.time)]);
      cursor = r.next_cursor;
      if (!cursor) break;
    }
    if (fixes.length) m.setTrack(v.id, fixes, tripsBy[v.id] || []);
  }));
  for (const p of Object.values(fleet.latest)) m.setVehicle(p);
  m.invalidate();
  m.fit(true);
}

function renderSummary([day, month, year], nVehicles) {
  const d = day || {}, mo = month || {}, y = year || {};
  const card = (id, title, big, sub) => el("div", { class: "card stat", id }, el("h3", {}, title), el("div", { class: "big" }, big), el("div", { class: "muted" }, sub));
  $("#fleet-summary").replaceChildren(
    card("fleet-dispatch", "出车率 today", pct(d.dispatch_rate), `${fmt(d.vehicles_dispatched, 0)} of ${fmt(d.vehicles_in_service ?? nVehicles, 0)} vehicles out · month ${pct(mo.dispatch_rate)}`),
    card("fleet-utilisation", "utilisation today", pct(d.utilisation), `in use ${fmt(d.in_use_h, 1)} h of working time · month ${pct(mo.utilisation)}`),
    card("fleet-trips", "trips today", fmt(d.trips, 0), `driven ${fmt(d.gps_km ?? d.mileage_km, 1)} km · unobserved ${fmt(d.unobserved_km, 1)} km`),
    card("fleet-holiday", "holiday / weekend trips this year", `${fmt(y.holiday_trips, 0)} / ${fmt(y.weekend_trips, 0)}`,
         `this month ${fmt(mo.holiday_trips, 0)} / ${fmt(mo.weekend_trips, 0)} · off-hours this month ${fmt(mo.off_hours_trips, 0)}`));
  $("#mileage").textContent = `driven ${fmt(d.gps_km ?? d.mileage_km, 1)} km · unobserved ${fmt(d.unobserved_km, 1)} km`;
}

function renderVehicles() {
  const tb = $("#vehicle-table tbody");
  tb.replaceChildren();
  for (const v of fleet.vehicles) {
    const p = fleet.latest[v.id];
    const status = p ? p.status : "unknown";
    tb.append(el("tr", { "data-vehicle": v.id },
      el("td", {}, v.plate), el("td", {}, v.id), el("td", {}, el("span", { class: `status ${status}` }, status)),
      el("td", { class: "speed num" }, fmt(p && p.speed_kmh, 0)), el("td", { class: "fix" }, p ? clock(p.time) : "—"),
      el("td", { class: "terminal" }, terminalBadge(fleet.terminals[v.id]))));
  }
}

function renderTrips(trips) {
  const plate = Object.fromEntries(fleet.vehicles.map((v) => [v.id, v.plate]));
  const tb = $("#trip-table tbody");
  tb.replaceChildren();
  for (const t of trips.slice().reverse()) {
    const v = t.values;
    const flags = [v.holiday ? "holiday" : null, v.weekend ? "weekend" : null, v.off_hours ? "off-hours" : null].filter(Boolean).join(", ");
    const start = Date.parse(t.time);
    tb.append(el("tr", { "data-vehicle": t.tags.vehicle, class: "clickable", title: "show on the map",
                         onclick: (e) => { if (fleet.map && fleet.map.showTrip(t.tags.vehicle, start)) markRow(e.currentTarget); } },
      el("td", {}, clock(t.time)), el("td", {}, plate[t.tags.vehicle] || t.tags.vehicle || ""),
      el("td", { class: "num" }, fmt(v.distance_km, 1)), el("td", { class: "num" }, fmt(v.duration_s != null ? v.duration_s / 60 : null, 0)),
      el("td", {}, flags ? el("span", { class: "status idle" }, flags) : "")));
  }
  if (!trips.length) tb.append(el("tr", {}, el("td", { colspan: 5, class: "muted" }, "no trip today yet")));
}

function markRow(row) {
  for (const r of row.parentNode.children) r.classList.toggle("on", r === row);
}

// JT/T 808 terminal of a vehicle (GET /v1/terminals): online or offline, with what the dispatcher asks next
function terminalBadge(t) {
  if (!t) return "—";
  const st = t.status === "online" ? "up" : (t.status === "offline" ? "offline" : "unknown");
  const title = [`terminal ${t.phone}`, t.protocol ? `JT/T 808-${t.protocol}` : null,
    t.remote_address ? `from ${t.remote_address}` : null, `last heard ${clock(t.last_seen)}`,
    `heartbeat ${clock(t.last_heartbeat)}`, `report ${clock(t.last_report)}`].filter(Boolean).join(" · ");
  return el("span", { class: `status ${st}`, title }, t.status.replace("_", " "));
}

export async function loadTerminals(org) {
  const list = await pages(q("/v1/terminals", { org }));
  fleet.terminals = {};
  for (const t of list) fleet.terminals[t.vehicle] = t;
  for (const row of document.querySelectorAll("#vehicle-table tr[data-vehicle]")) {
    const cell = row.querySelector(".terminal");
    if (cell) cell.replaceChildren(terminalBadge(fleet.terminals[row.getAttribute("data-vehicle")]));
  }
}

export function addAlert(a, fresh) {
  const ul = $("#alerts");
  const li = el("li", { class: fresh ? "new" : "" }, `${clock(a.time)} · ${a.kind || "alert"} · ${a.subject || ""} `,
    el("span", { class: "muted" }, a.values && a.values.message ? a.values.message : ""));
  ul.prepend(li);
  while (ul.children.length > 100) ul.lastChild.remove();
}

export function onPosition(p) {
  fleet.latest[p.vehicle] = p;
  if (fleet.map) { fleet.map.setVehicle(p); fleet.map.extendTrack(p.vehicle, p.lat, p.lon, Date.parse(p.time)); }
  const row = document.querySelector(`#vehicle-table tr[data-vehicle="${CSS.escape(p.vehicle)}"]`);
  if (row) {
    row.querySelector(".speed").textContent = fmt(p.speed_kmh, 0);
    row.querySelector(".fix").textContent = clock(p.time);
    const st = row.querySelector(".status"); st.className = `status ${p.status}`; st.textContent = p.status;
  }
}
