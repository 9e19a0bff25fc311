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

// ---- baselines (CalTRACK, written by the service's indicator job; docs/energy.md):
// monthly reports (`/v1/indicators/baseline?period=month`: savings with their uncertainty, or the reasons
// there are none) and day rows (`/v1/indicators/baseline/days`: the model's prediction at the day's
// temperature, its 95 % interval, and whether the day is in the reporting period or the model's own fit)

/** A meter's monthly reports by month start (ms). */
function reportsByMeter(items) {
  const out = {};
  for (const it of items) (out[it.meter] ||= {})[Date.parse(it.start)] = it;
  return out;
}
/** The month report of `meters` for the month starting `t`: summed savings when every one has them. */
function monthReport(meters, t) {
  let predicted = 0, actual = 0, saved = 0, var_ = 0, days = 0;
  const reasons = [];
  for (const m of meters) {
    const it = (energy.reports[m] || {})[t];
    if (!it) return { missing: true, reasons: ["no baseline report"] };
    if (!it.savings) { reasons.push(...it.reasons, ...it.reporting_reasons); continue; }
    predicted += it.savings.predicted; actual += it.savings.actual; saved += it.savings.savings;
    var_ += (it.savings.savings_uncertainty || 0) ** 2; days = Math.max(days, it.savings.reporting_days || 0);
  }
  if (reasons.length) return { reasons: [...new Set(reasons)] };
  return { predicted, actual, saved, pct: predicted ? saved / predicted : null, uncertainty: Math.sqrt(var_), days };
}

/** Day rows of `meters` in [from, to), summed by day over the meters (a day only when every meter has it). */
async function baselineDays(meters, from, to) {
  const per = await Promise.all(meters.map((m) => pages(q("/v1/indicators/baseline/days", { id: m, from: localIso(from), to: localIso(to), limit: 1000 }))
    .catch(() => [])));
  const days = {};
  per.forEach((rows) => {
    for (const r of rows) {
      const t = Date.parse(r.start), v = r.values;
      const d = days[t] || (days[t] = { n: 0, predicted: 0, lower: 0, upper: 0, actual: 0, reporting: true, hasActual: true });
      d.n++; d.predicted += v.predicted; d.lower += v.lower; d.upper += v.upper;
      if (v.actual == null) d.hasActual = false; else d.actual += v.actual;
      d.reporting = d.reporting && v.reporting === true;
    }
  });
  for (const [t, d] of Object.entries(days)) if (d.n !== meters.length) delete days[t];
  return days;
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
  const orgsOfBuildings = [...new Set(buildings.map((b) => b.org))];
  const [day, month, year, reports, anomalies, alerts, rollups] = await Promise.all([ind("day", t0), ind("month", m0), ind("year", y0),
    pages(q("/v1/indicators/baseline", { org, period: "month", from: localIso(dayStart(addMonths(today, -13))) })),
    pages(q("/v1/indicators/anomalies", { org, from: localIso(m0), limit: 1000 })).catch(() => []),
    pages(q("/v1/alerts", { org, from: localIso(m0), limit: 1000 })),
    Promise.all(orgsOfBuildings.map((o) => api(q("/v1/rollup", { org: o, period: "year" })).catch(() => null)))]);
  const pick = (rows, carrier) => Object.fromEntries(rows.filter((i) => (i.carrier || "electricity") === carrier).map((i) => [i.id, i.values]));
  energy.day = pick(day, "electricity"); energy.month = pick(month, "electricity");
  energy.year = pick(year, "electricity"); energy.yearAll = pick(year, "all");
  energy.reports = reportsByMeter(reports);
  energy.anomalies = anomalies;
  energy.alerts = alerts.filter((a) => a.tags && a.tags.meter);
  energy.quota = {};   // building -> its year's row of the roll-up (quota of its class, progress)
  for (const r of rollups) for (const row of (r && r.rows) || []) if (row.building) energy.quota[row.building] = row;
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

function savingsLine(r) {
  if (r.saved == null) return el("span", { class: "muted", title: (r.reasons || []).join(", ") }, "no baseline");
  const good = r.saved >= 0;
  return el("span", { class: good ? "good" : "bad", title: `baseline ${fmt(r.predicted, 0)} kWh over ${r.days} day(s); ± ${fmt(r.uncertainty, 0)} kWh: 68 % uncertainty (ASHRAE Guideline 14)` },
    `${good ? "saved" : "over by"} ${fmt(Math.abs(r.saved), 0)} kWh (${fmt(100 * Math.abs(r.pct), 1)} %)`,
    el("span", { class: "muted small pm" }, `± ${fmt(r.uncertainty, 0)} kWh`));
}

function renderBuildings(ctx) {
  const box = $("#buildings");
  box.replaceChildren();
  const today = localDay();
  const m0 = dayStart({ ...today, d: 1 }), prev = dayStart(addMonths(today, -1));
  const monthName = (t) => isoDay(localDay(t + 3600e3)).slice(0, 7);
  for (const b of energy.buildings) {
    const day = energy.day[b.id] || {}, month = energy.month[b.id] || {}, year = energy.year[b.id] || {}, all = energy.yearAll[b.id] || {};
    const kwh = day.consumption_kwh;
    const waste = kwh != null && day.off_hours_share != null ? kwh * day.off_hours_share : null;
    const perM2 = all.kwh_per_m2 != null ? all.kwh_per_m2 : (year.consumption_kwh != null ? year.consumption_kwh / b.floor_area_m2 : null);
    const perPerson = all.kgce_per_person != null ? all.kgce_per_person : (year.kgce != null && b.occupants ? year.kgce / b.occupants : null);
    const q = energy.quota[b.id];
    const quotaKwhM2 = q && q.quota_kwh_per_m2 != null ? q.quota_kwh_per_m2 : QUOTA_KWH_M2_YEAR;
    const used = perM2 != null ? perM2 / quotaKwhM2 : null;
    const mains = topMeters(b).map((m) => m.id);
    const thisMonth = monthReport(mains, m0), lastMonth = monthReport(mains, prev);
    const meterIds = new Set(energy.meters.filter((m) => m.building === b.id).map((m) => m.id));
    const anomalousDays = new Set(energy.anomalies.filter((x) => meterIds.has(x.meter)).map((x) => x.start)).size;
    const alerts = energy.alerts.filter((a) => meterIds.has(a.tags.meter));
    box.append(el("div", { class: "card", "data-building": b.id },
      el("h3", {}, `${b.name || b.id} `, el("span", { class: "muted" }, `${b.id} · ${fmt(b.floor_area_m2, 0)} m² · ${fmt(b.occupants, 0)} people`)),
      el("div", { class: "big", id: `power-${b.id}`, title: `main meters: ${mains.join(", ")}` }, `${fmt(buildingPower(b))} kW`),
      el("div", { class: "muted small" }, `now, from ${mains.join(", ") || "no meter"}`),
      el("dl", {},
        el("dt", {}, "today's energy"), el("dd", { id: `today-${b.id}` }, `${fmt(kwh)} kWh`),
        el("dt", {}, "off-hours waste"), el("dd", {}, `${fmt(waste)} kWh (${pct(day.off_hours_share)})`),
        el("dt", {}, `this month (${monthName(m0)})`), el("dd", { id: `month-${b.id}` }, `${fmt(month.consumption_kwh, 0)} kWh`),
        el("dt", {}, "against baseline", el("span", { class: "muted" }, thisMonth.days ? ` ${thisMonth.days} d` : "")),
        el("dd", { id: `savings-${b.id}` }, savingsLine(thisMonth)),
        el("dt", {}, `last month (${monthName(prev)})`), el("dd", { id: `last-savings-${b.id}` }, savingsLine(lastMonth)),
        el("dt", {}, "anomalies this month"), el("dd", { id: `anomalies-${b.id}` }, String(anomalousDays)),
        el("dt", {}, "year to date"), el("dd", { id: `ytd-${b.id}` }, `${fmt(perM2, 2)} kWh/m²`),
        el("dt", {}, "per person"), el("dd", { id: `kgce-${b.id}` }, `${fmt(perPerson, 1)} kgce`),
        el("dt", {}, "annual quota used"), el("dd", { id: `quota-${b.id}` }, `${pct(used)} of ${fmt(quotaKwhM2, 0)} kWh/m²`),
        el("dt", {}, "meter alerts this month"), el("dd", { id: `alerts-${b.id}` }, String(alerts.length))),
      el("div", { class: "bar", title: "the year's kWh/m² against the annual quota" },
        el("span", { class: used > 1 ? "over" : "", style: `width:${Math.min(100, 100 * (used || 0)).toFixed(1)}%` })),
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
  const n = starts.length;
  const baseline = Array(n).fill(null), fit = Array(n).fill(null), lower = Array(n).fill(null), upper = Array(n).fill(null);
  const anomaly = Array(n).fill(false);
  let predicted = 0, saved = 0, var_ = 0, compared = 0;
  if (w.bucket !== "hour" && ids.length) {
    const days = await baselineDays(ids, w.start, w.end);
    if (w.bucket === "day") {
      // each day against the model at its temperature: compared in the reporting period, the fit before it
      starts.forEach((t, i) => {
        const d = days[t];
        if (!d) return;
        if (d.reporting && d.hasActual) {
          baseline[i] = d.predicted; lower[i] = d.lower; upper[i] = d.upper;
          predicted += d.predicted; saved += d.predicted - d.actual; compared++;
          anomaly[i] = d.actual < d.lower || d.actual > d.upper;
        } else fit[i] = d.predicted;
      });
    } else {
      // each month against its own month's report (the analytics' savings and uncertainty), the fit otherwise
      const ends = starts.slice(1).concat([w.end]);
      starts.forEach((t, i) => {
        const r = monthReport(ids, t);
        if (r.saved != null) {
          baseline[i] = r.predicted; predicted += r.predicted; saved += r.saved; var_ += r.uncertainty ** 2; compared++;
          return;
        }
        let sum = 0, k = 0;
        for (const [dt, d] of Object.entries(days)) if (+dt >= t && +dt < ends[i]) { sum += d.predicted; k++; }
        if (k) fit[i] = sum;
      });
    }
  }
  if (w.bucket === "day") {
    const anoms = await pages(q("/v1/indicators/anomalies", { org: ctx.org, from: localIso(w.start), to: localIso(w.end), limit: 1000 })).catch(() => []);
    for (const x of anoms) if (ids.includes(x.meter)) { const i = starts.indexOf(Date.parse(x.start)); if (i >= 0) anomaly[i] = true; }
  }
  const known = actual.filter((v) => v != null);
  const unitName = w.bucket === "month" ? "month" : "day";
  c1.before(caption(
    el("span", { class: "swatch actual" }), `actual ${fmt(known.reduce((s, v) => s + v, 0), 0)} kWh`,
    w.bucket === "hour" ? el("span", { class: "muted" }, " · the baseline predicts days: see week, month, year")
      : compared ? [" · ", el("span", { class: "swatch baseline" }), `baseline ${fmt(predicted, 0)} kWh over ${compared} reporting ${unitName}${compared > 1 ? "s" : ""} · `,
          el("strong", { class: saved >= 0 ? "good" : "bad", id: "chart-savings" },
            `${saved >= 0 ? "saved" : "over by"} ${fmt(Math.abs(saved), 0)} kWh (${fmt(100 * Math.abs(saved) / predicted, 1)} %)` +
            (var_ ? ` ± ${fmt(Math.sqrt(var_), 0)}` : "")),
          anomaly.some(Boolean) ? el("span", { class: "muted" }, ` · `, el("span", { class: "swatch anomaly" }), `${anomaly.filter(Boolean).length} anomalous days`) : null]
        : el("span", { class: "muted" }, fit.some((v) => v != null) ? " · no reporting period in this range: the model over its baseline year, for reference"
          : " · no sufficient baseline in this range")));
  energyChart(c1, { x: starts, actual, baseline, fit, lower, upper, anomaly, bucket: w.bucket, unit: w.unit, end: w.end });

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
