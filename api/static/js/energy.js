// The facility manager's view: per building its live power, today's energy and off-hours waste, this
// month against the weather-normalised baseline, the year's kWh/m² against the quota, kgce per person,
// today by item (分项) and the month's alerts; a chart of the energy against the baseline with the savings
// shaded and one by item, over a day, a week, a month or a year; the meters as they are wired.

import { api, pages, q } from "./api.js";
import { energyChart, stackedChart, caption } from "./charts.js";
import { $, addDays, addMonths, clock, dayStart, el, fmt, fmtAuto, isoDay, localDay, localIso, parseDay, pct, pending } from "./util.js";

export const QUOTA_KWH_M2_YEAR = 70; // GB/T 51161-2016 constraint value, office A-class, HSCW zone: unconfirmed default
const ITEM_COLORS = { "01A": "#6eb435", "01B": "#138baa", "01C": "#7b61c9", "01D": "#e89b1a", "02": "#4aa3df", "03": "#c9a227",
                      unmetered: "#b8c1cc", unassigned: "#dfe4ea" };
export function itemColor(code) { return ITEM_COLORS[code] || ITEM_COLORS[code.slice(0, 3)] || ITEM_COLORS[code.slice(0, 2)] || "#9aa6b2"; }
const RANGES = [["day", "day"], ["week", "week"], ["month", "month"], ["year", "year"]];

export const energy = { buildings: [], meters: [], latest: {}, health: {}, byId: {} };

// ---- meters as wired: a building's power is that of its top meters (none behind another counted with it)
function hasAncestorIn(m, buildingId) {
  let p = m.parent ? energy.byId[m.parent] : null;
  for (let n = 0; p && n < 100; n++) {
    if (p.building === buildingId) return true;
    p = p.parent ? energy.byId[p.parent] : null;
  }
  return false;
}
export function topMeters(b, carrier = "electricity") {
  return energy.meters.filter((m) => m.building === b.id && m.carrier === carrier && !hasAncestorIn(m, b.id));
}
function formulaTerms(f) { // "a - b + c" -> [[1, "a"], [-1, "b"], [1, "c"]]
  const out = []; let sign = 1;
  for (const tok of f.split(/\s+/).filter(Boolean)) {
    if (tok === "+") sign = 1; else if (tok === "-") sign = -1; else { out.push([sign, tok]); sign = 1; }
  }
  return out;
}
export function meterPower(m, depth = 0) {
  if (!m || depth > 20) return null;
  if (m.formula) {
    let kw = 0;
    for (const [sign, id] of formulaTerms(m.formula)) {
      const v = meterPower(energy.byId[id], depth + 1);
      if (v == null) return null;
      kw += sign * v;
    }
    return kw;
  }
  const l = energy.latest[m.id];
  const v = l && l.values.active_power_total_kw;
  return typeof v === "number" ? v : null;
}
export function buildingPower(b) {
  let kw = 0, n = 0;
  for (const m of topMeters(b)) { const v = meterPower(m); if (v != null) { kw += v; n++; } }
  return n ? kw : null;
}

// ---- baselines: each reporting period's predicted energy spread evenly over its days
function baselineRates(items) {
  const byMeter = {};
  for (const it of items) {
    if (!it.savings || !it.savings.reporting_days || it.savings.predicted == null) continue;
    const start = Date.parse(it.start);
    (byMeter[it.meter] ||= []).push({ start, end: start + it.savings.reporting_days * 86400e3,
                                      rate: it.savings.predicted / it.savings.reporting_days, item: it });
  }
  return byMeter;
}
/**
 * The baseline of `meters` over a bucket [t0, t1). When the bucket holds whole reporting periods of every
 * meter, their predicted energy and savings as the analytics wrote them (`whole`: the bucket compares
 * with its actual); otherwise, for reference only, the daily mean of the periods covering the bucket.
 */
function baselineOver(rates, meters, t0, t1) {
  if (!meters.length) return null;
  let predicted = 0, savings = 0, whole = true, mean = 0;
  for (const m of meters) {
    const periods = rates[m] || [];
    const inside = periods.filter((x) => x.start >= t0 && x.end <= t1 + 3600e3);
    if (inside.length) {
      for (const x of inside) { predicted += x.item.savings.predicted; savings += x.item.savings.savings; }
    } else whole = false;
    const cover = periods.find((x) => x.start <= t0 && t0 < x.end);
    if (!cover) return whole ? { kwh: predicted, whole, savings } : null;
    mean += cover.rate * Math.min(t1 - t0, Math.max(0, Date.now() - t0)) / 86400e3;
  }
  return whole ? { kwh: predicted, whole, savings } : { kwh: mean, whole: false };
}
function periodCovering(items, t) {
  return items.find((it) => { const s = Date.parse(it.start); return s <= t && t < s + ((it.savings && it.savings.reporting_days) || 0) * 86400e3; });
}

// ---- load
export async function loadEnergy(ctx) {
  const org = ctx.org;
  const today = localDay();
  const t0 = dayStart(today), m0 = dayStart({ ...today, d: 1 }), y0 = dayStart({ y: today.y, m: 1, d: 1 });
  const [buildings, meters, latest] = await Promise.all([pages(q("/v1/buildings", { org })), pages(q("/v1/meters", { org })),
    api(q("/v1/latest/meters", { org }))]);
  energy.buildings = buildings; energy.meters = meters;
  energy.byId = Object.fromEntries(meters.map((m) => [m.id, m]));
  for (const l of latest) energy.latest[l.meter] = l;
  const ind = (period, from) => pages(q("/v1/indicators/energy", { scope: "building", period, from: localIso(from), org }));
  const [day, month, year, baselines, alerts] = await Promise.all([ind("day", t0), ind("month", m0), ind("year", y0),
    pages(q("/v1/indicators/baseline", { org, from: localIso(dayStart(addMonths(today, -13))) })),
    pages(q("/v1/alerts", { org, from: localIso(m0), limit: 1000 }))]);
  const pick = (rows, carrier) => Object.fromEntries(rows.filter((i) => (i.carrier || "electricity") === carrier).map((i) => [i.id, i.values]));
  energy.day = pick(day, "electricity"); energy.month = pick(month, "electricity");
  energy.year = pick(year, "electricity"); energy.yearAll = pick(year, "all");
  energy.baselines = baselines;
  energy.rates = baselineRates(baselines);
  energy.alerts = alerts.filter((a) => a.tags && a.tags.meter);
  energy.items = {};
  await Promise.all(buildings.map(async (b) => {
    energy.items[b.id] = await api(q("/v1/energy/items", { scope: "building", id: b.id, period: "day", from: localIso(t0) })).catch(() => null);
  }));
  await Promise.all(meters.map(async (m) => { energy.health[m.id] = await api(`/v1/meters/${encodeURIComponent(m.id)}/health`).catch(() => null); }));
  renderBuildings(ctx);
  renderMeterTable();
  await renderCharts(ctx);
}

// ---- building cards
function renderItems(b) {
  const box = el("div", { class: "items", id: `items-${b.id}` });
  const day = energy.items[b.id];
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

export function monthSavings(b) {
  let predicted = 0, saved = 0, n = 0, reasons = [];
  const mains = topMeters(b).map((m) => m.id);
  for (const mid of mains) {
    const it = periodCovering(energy.baselines.filter((x) => x.meter === mid), Date.now());
    if (it && it.savings) { predicted += it.savings.predicted; saved += it.savings.savings; n++; }
    else if (it) reasons.push(...it.reasons, ...it.reporting_reasons);
  }
  return n && n === mains.length ? { predicted, saved, pct: predicted ? saved / predicted : null } : { reasons };
}

function renderBuildings(ctx) {
  const box = $("#buildings");
  box.replaceChildren();
  for (const b of energy.buildings) {
    const day = energy.day[b.id] || {}, month = energy.month[b.id] || {}, year = energy.year[b.id] || {}, all = energy.yearAll[b.id] || {};
    const kwh = day.consumption_kwh;
    const waste = kwh != null && day.off_hours_share != null ? kwh * day.off_hours_share : null;
    const perM2 = all.kwh_per_m2 != null ? all.kwh_per_m2 : (year.consumption_kwh != null ? year.consumption_kwh / b.floor_area_m2 : null);
    const perPerson = all.kgce_per_person != null ? all.kgce_per_person : (year.kgce != null && b.occupants ? year.kgce / b.occupants : null);
    const quota = perM2 != null ? perM2 / QUOTA_KWH_M2_YEAR : null;
    const sv = monthSavings(b);
    const mains = topMeters(b).map((m) => m.id);
    const alerts = energy.alerts.filter((a) => energy.byId[a.tags.meter] && energy.byId[a.tags.meter].building === b.id);
    box.append(el("div", { class: "card", "data-building": b.id },
      el("h3", {}, `${b.name || b.id} `, el("span", { class: "muted" }, `${b.id} · ${fmt(b.floor_area_m2, 0)} m² · ${fmt(b.occupants, 0)} people`)),
      el("div", { class: "big", id: `power-${b.id}`, title: `main meters: ${mains.join(", ")}` }, `${fmt(buildingPower(b))} kW`),
      el("div", { class: "muted small" }, `now, from ${mains.join(", ") || "no meter"}`),
      el("dl", {},
        el("dt", {}, "today's energy"), el("dd", { id: `today-${b.id}` }, `${fmt(kwh)} kWh`),
        el("dt", {}, "off-hours waste"), el("dd", {}, `${fmt(waste)} kWh (${pct(day.off_hours_share)})`),
        el("dt", {}, "this month"), el("dd", { id: `month-${b.id}` }, `${fmt(month.consumption_kwh, 0)} kWh`),
        el("dt", {}, "against baseline"), el("dd", { id: `savings-${b.id}`, class: sv.saved == null ? "muted" : (sv.saved >= 0 ? "good" : "bad"),
          title: sv.saved == null ? (sv.reasons.join(", ") || "no baseline for this month") : `baseline ${fmt(sv.predicted, 0)} kWh` },
          sv.saved == null ? "no baseline" : `${sv.saved >= 0 ? "saved" : "over by"} ${fmt(Math.abs(sv.saved), 0)} kWh (${fmt(100 * Math.abs(sv.pct), 1)} %)`),
        el("dt", {}, "year to date"), el("dd", { id: `ytd-${b.id}` }, `${fmt(perM2, 2)} kWh/m²`),
        el("dt", {}, "per person"), el("dd", { id: `kgce-${b.id}` }, `${fmt(perPerson, 1)} kgce`),
        el("dt", {}, "quota used"), el("dd", { id: `quota-${b.id}` }, `${pct(quota)} of ${QUOTA_KWH_M2_YEAR} kWh/m²`),
        el("dt", {}, "alerts this month"), el("dd", { id: `alerts-${b.id}` }, String(alerts.length))),
      el("div", { class: "bar", title: "the year's kWh/m² against the quota" },
        el("span", { class: quota > 1 ? "over" : "", style: `width:${Math.min(100, 100 * (quota || 0)).toFixed(1)}%` })),
      renderItems(b),
      el("div", { class: "small" }, el("a", { href: ctx.link("energy", { subject: b.id, range: ctx.params.get("range") }),
                                    onclick: () => { pending.scrollTo = "charts"; } }, "charts ↓"))));
  }
  if (!energy.buildings.length) box.append(el("p", { class: "muted" }, "no building in this org"));
}

export function updatePower() {
  for (const b of energy.buildings) {
    const n = document.getElementById(`power-${b.id}`);
    if (n) n.textContent = `${fmt(buildingPower(b))} kW`;
  }
}

// ---- meter table
function meterTree() {
  const ids = new Set(energy.meters.map((m) => m.id));
  const kids = {};
  for (const m of energy.meters) (kids[m.parent && ids.has(m.parent) ? m.parent : ""] ||= []).push(m);
  const out = [];
  const walk = (pid, depth) => { for (const m of kids[pid] || []) { out.push([m, depth]); if (out.length <= energy.meters.length) walk(m.id, depth + 1); } };
  walk("", 0);
  return out;
}
function renderMeterTable() {
  const tb = $("#meter-table tbody");
  tb.replaceChildren();
  for (const [m, depth] of meterTree()) {
    const l = energy.latest[m.id], h = energy.health[m.id];
    const status = h ? h.status : "unknown";
    const power = m.formula ? meterPower(m) : (l && l.values.active_power_total_kw);
    tb.append(el("tr", { "data-meter": m.id, "data-depth": String(depth) },
      el("td", { class: "tree", style: `padding-left:${0.4 + 1.2 * depth}em` }, depth ? "└ " : "", m.id,
         m.formula ? el("span", { class: "muted" }, ` = ${m.formula}`) : ""),
      el("td", {}, m.item || "—"), el("td", {}, m.building || "—"), el("td", {}, m.carrier),
      el("td", {}, el("span", { class: `status ${status}` }, status)),
      el("td", { class: "power num" }, fmt(power, 2)),
      el("td", { class: "when" }, l ? clock(l.time) : "—")));
  }
}
export function updateMeterRow(l) {
  const row = document.querySelector(`#meter-table tr[data-meter="${CSS.escape(l.meter)}"]`);
  if (!row) return;
  row.querySelector(".power").textContent = fmt(l.values.active_power_total_kw, 2);
  row.querySelector(".when").textContent = clock(l.time);
}

// ---- charts: energy against the baseline, and by item, over a range
function window_(range, at) {
  const end = dayStart(addDays(at, 1));
  if (range === "day") return { start: dayStart(at), end, bucket: "hour", unit: "kWh per hour" };
  if (range === "week") return { start: dayStart(addDays(at, -6)), end, bucket: "day", unit: "kWh per day" };
  if (range === "month") return { start: dayStart(addDays(at, -29)), end, bucket: "day", unit: "kWh per day" };
  return { start: dayStart(addMonths(at, -11)), end: dayStart(addMonths(at, 1)), bucket: "month", unit: "kWh per month" };
}
function bucketStarts(w) {
  const out = [];
  if (w.bucket === "hour") for (let t = w.start; t < w.end; t += 3600e3) out.push(t);
  else if (w.bucket === "day") for (let d = localDay(w.start + 3600e3); dayStart(d) < w.end; d = addDays(d, 1)) out.push(dayStart(d));
  else for (let d = localDay(w.start + 3600e3); dayStart(d) < w.end; d = addMonths(d, 1)) out.push(dayStart(d));
  return out;
}
function step(range, at, dir) {
  if (range === "day") return addDays(at, dir);
  if (range === "week") return addDays(at, 7 * dir);
  if (range === "month") return addDays(at, 30 * dir);
  return addMonths({ ...at, d: 1 }, 12 * dir);
}

/** Hourly kWh of `meters` from their counters: the difference of each hour's last reading. */
async function hourlyKwh(meters, starts, w) {
  const sums = starts.map(() => null);
  await Promise.all(meters.map(async (m) => {
    const r = await api(q(`/v1/meters/${encodeURIComponent(m.id)}/readings`, { from: localIso(w.start - 3600e3), to: localIso(w.end),
      every: "1h", agg: "last", fields: "active_energy_import_kwh", limit: 1000 }));
    const last = {};
    for (const it of r.items) if (typeof it.values.active_energy_import_kwh === "number") last[Date.parse(it.time)] = it.values.active_energy_import_kwh;
    starts.forEach((t, i) => {
      const a = last[t - 3600e3], b = last[t];
      if (a != null && b != null && b >= a) sums[i] = (sums[i] || 0) + (b - a);
    });
  }));
  return sums;
}

async function renderCharts(ctx) {
  const box = $("#charts");
  const range = ctx.params.get("range") || "year";
  const at = parseDay(ctx.params.get("at")) || localDay();
  const buildings = energy.buildings;
  const subjectId = ctx.params.get("subject") || (buildings.length === 1 ? buildings[0].id : "org");
  const b = buildings.find((x) => x.id === subjectId);
  const subject = b ? { scope: "building", id: b.id, name: b.name || b.id, mains: topMeters(b) }
    : { scope: "org", id: ctx.org, name: ctx.orgNames[ctx.org] || ctx.org, mains: buildings.flatMap((x) => topMeters(x)) };
  const w = window_(range, at);
  const starts = bucketStarts(w);
  const link = (p) => ctx.link("energy", { range, at: isoDay(at), subject: subjectId, ...p });
  const head = el("div", { class: "chart-head" },
    el("select", { id: "chart-subject", "aria-label": "what to chart", onchange: (e) => { location.hash = link({ subject: e.target.value }); } },
      el("option", { value: "org", selected: !b }, `all buildings of ${ctx.orgNames[ctx.org] || ctx.org}`),
      buildings.map((x) => el("option", { value: x.id, selected: x.id === subjectId }, x.name || x.id))),
    el("div", { class: "picker", role: "group", "aria-label": "range" },
      RANGES.map(([r, label]) => el("a", { href: link({ range: r }), class: r === range ? "on" : "", "data-range": r }, label))),
    el("div", { class: "picker" },
      el("a", { href: link({ at: isoDay(step(range, at, -1)) }), title: "earlier" }, "‹"),
      el("span", { class: "range-label" }, `${isoDay(localDay(w.start + 3600e3))} – ${isoDay(localDay(w.end - 3600e3))}`),
      el("a", { href: link({ at: isoDay(step(range, at, 1)) }), title: "later" }, "›")));
  const c1 = el("div", { class: "chart", id: "chart-energy" });
  const c2 = el("div", { class: "chart", id: "chart-items" });
  box.replaceChildren(head, el("h3", {}, `${subject.name}: energy against the weather-normalised baseline`), c1,
                      el("h3", {}, `${subject.name}: by item (分项)`), c2);

  // actual energy per bucket
  let actual;
  if (w.bucket === "hour") actual = await hourlyKwh(subject.mains, starts, w);
  else {
    const rows = await pages(q("/v1/indicators/energy", { scope: subject.scope, id: subject.id, period: w.bucket, carrier: "electricity",
                                                          from: localIso(w.start), to: localIso(w.end), limit: 1000 }));
    const by = Object.fromEntries(rows.map((r) => [Date.parse(r.start), r.values.consumption_kwh]));
    actual = starts.map((t) => (by[t] != null ? by[t] : null));
  }
  const ids = subject.mains.map((m) => m.id);
  const ends = starts.slice(1).concat([w.end]);
  const base = starts.map((t, i) => (w.bucket === "hour" || t > Date.now() ? null : baselineOver(energy.rates, ids, t, ends[i])));
  const baseline = base.map((x) => (x ? x.kwh : null));
  const shade = base.map((x) => !!(x && x.whole));
  let predicted = 0, saved = 0;
  base.forEach((x) => { if (x && x.whole) { predicted += x.kwh; saved += x.savings; } });
  const known = actual.filter((v) => v != null);
  const partial = base.some((x) => x && !x.whole);
  c1.before(caption(
    el("span", { class: "swatch actual" }), `actual ${fmt(known.reduce((s, v) => s + v, 0), 0)} kWh`,
    w.bucket === "hour" ? el("span", { class: "muted" }, " · the baseline is predicted by day: see week, month, year")
      : predicted ? [" · ", el("span", { class: "swatch baseline" }), `baseline ${fmt(predicted, 0)} kWh over its reporting periods in range · `,
                     el("strong", { class: saved >= 0 ? "good" : "bad", id: "chart-savings" },
                        `${saved >= 0 ? "saved" : "over by"} ${fmt(Math.abs(saved), 0)} kWh (${fmt(100 * Math.abs(saved) / predicted, 1)} %)`)]
        : partial ? el("span", { class: "muted" }, [" · ", el("span", { class: "swatch baseline" }),
                       "baseline: its reporting periods are longer than a day, drawn as their daily mean; savings by period in the year view"])
          : el("span", { class: "muted" }, " · no sufficient baseline in this range")));
  energyChart(c1, { x: starts, actual, baseline, shade, bucket: w.bucket, unit: w.unit, end: w.end });

  // by item
  if (w.bucket === "hour") {
    const it = await api(q("/v1/energy/items", { scope: subject.scope, id: subject.id, period: "day", from: localIso(w.start), to: localIso(w.end) })).catch(() => null);
    c2.replaceChildren(itemsList(it));
    return;
  }
  const it = await api(q("/v1/energy/items", { scope: subject.scope, id: subject.id, period: w.bucket, from: localIso(w.start), to: localIso(w.end) })).catch(() => null);
  const per = {};
  const names = {};
  for (const pr of (it && it.periods) || []) {
    const i = starts.indexOf(Date.parse(pr.start));
    if (i < 0) continue;
    for (const x of pr.items) { (per[x.item] ||= starts.map(() => null))[i] = x.consumption; names[x.item] = `${x.name} ${x.name_zh}`; }
  }
  const codes = Object.keys(per).sort((x, y) => (x.startsWith("0") === y.startsWith("0") ? x.localeCompare(y) : (x.startsWith("0") ? -1 : 1)));
  if (!codes.length) { c2.replaceChildren(el("p", { class: "muted" }, "no itemised energy in this range")); return; }
  stackedChart(c2, { x: starts, series: codes.map((c) => ({ label: names[c], color: itemColor(c), values: per[c] })),
                     bucket: w.bucket, unit: w.unit, end: w.end });
}

function itemsList(day) {
  const p = day && day.periods.length ? day.periods[day.periods.length - 1] : null;
  if (!p) return el("p", { class: "muted" }, "no itemised energy for this day");
  return el("dl", { class: "item-list wide" }, p.items.map((x) => [
    el("dt", { "data-item": x.item }, el("i", { style: `background:${itemColor(x.item)}` }), `${x.name} `, el("span", { class: "muted" }, x.name_zh)),
    el("dd", {}, `${fmtAuto(x.consumption)} ${day.unit} · ${pct(p.total ? x.consumption / p.total : null)}`)]));
}
