// The district's view (the district, city or province user; DB33/T 2474-2022 6.2.5-6.2.6): the
// institutions below the org in scope ranked by an indicator, from GET /v1/rollup, each row a link
// down to the institution's own views.

import { api, q } from "./api.js";
import { $, el, fmt, pct } from "./util.js";

// column: [field, heading, unit, format, better: "low"|"high"]
const COLUMNS = [
  ["kwh", "energy", "kWh", (v) => fmt(v, 0), "low"],
  ["kwh_per_m2", "per area", "kWh/m²", (v) => fmt(v, 2), "low"],
  ["kgce_per_person", "per person", "kgce/person", (v) => fmt(v, 2), "low"],
  ["quota_progress", "quota used", "of the year's kWh/m²", null, "low"],
  ["savings_pct", "savings", "against baseline", null, "high"],
  ["utilisation", "vehicle utilisation", "", (v) => pct(v, 0), "high"],
  ["dispatch_rate", "出车率", "dispatch rate", (v) => pct(v, 0), "high"],
  ["holiday_trips", "holiday trips", "", (v) => fmt(v, 0), "low"],
];
const PERIODS = [["day", "today"], ["month", "this month"], ["year", "this year"]];

export async function loadDistrict(ctx) {
  const box = $("#view-district");
  const period = ctx.params.get("period") || "month";
  const sort = ctx.params.get("sort") || "kwh_per_m2";
  const data = await api(q("/v1/rollup", { org: ctx.org, period, sort }));
  const names = ctx.orgNames;
  box.querySelector(".view-head").replaceChildren(
    el("h2", {}, `${names[data.org] || data.org} `, el("small", { class: "muted" }, `institutions ranked · ${data.rows.length} rows · from ${data.start.slice(0, 10)}`)),
    el("div", { class: "picker", role: "group", "aria-label": "period" },
      PERIODS.map(([p, label]) => el("a", { href: ctx.link("district", { period: p, sort }), class: p === period ? "on" : "" }, label))));
  box.querySelector(".summary").replaceChildren(...summaryCards(data, period));
  const t = $("#rollup-table");
  t.querySelector("thead").replaceChildren(el("tr", {},
    el("th", {}, "#"), el("th", {}, "institution"), el("th", { class: "num" }, "buildings"),
    COLUMNS.map(([f, head, unit]) => el("th", { class: `num sortable${f === data.ranked_by ? " sorted" : ""}`, "data-sort": f },
      el("a", { href: ctx.link("district", { period, sort: f }), title: `rank by ${head}` }, head, f === data.ranked_by ? " ◆" : ""),
      unit ? el("div", { class: "unit" }, unit) : null))));
  const tb = t.querySelector("tbody");
  tb.replaceChildren();
  const maxKwhM2 = Math.max(...data.rows.map((r) => r.kwh_per_m2 || 0), 1e-9);
  data.rows.forEach((r, i) => {
    const parent = r.org.split("/").slice(0, -1).join("/");   // named when it is not the org in view (a street office)
    tb.append(el("tr", { "data-org": r.org, "data-rank": String(i + 1) },
      el("td", { class: "num" }, String(i + 1)),
      el("td", {}, el("a", { href: ctx.link("energy", { org: r.org }), class: "inst" }, r.name || r.org),
        parent !== data.org && names[parent] ? el("div", { class: "unit" }, `under ${names[parent]}`) : null,
        el("div", { class: "unit" }, el("a", { href: ctx.link("fleet", { org: r.org }) }, "fleet"), " · ",
          el("a", { href: ctx.link("energy", { org: r.org }) }, "energy"))),
      el("td", { class: "num" }, fmt(r.buildings, 0), el("div", { class: "unit" }, `${fmt(r.floor_area_m2, 0)} m²`)),
      COLUMNS.map(([f, , , f2]) => el("td", { class: "num", "data-field": f }, cell(f, r, f2, maxKwhM2)))));
  });
  if (!data.rows.length) tb.append(el("tr", {}, el("td", { colspan: 3 + COLUMNS.length, class: "muted" }, "no institution below this org")));
}

function cell(f, r, f2, maxKwhM2) {
  const v = r[f];
  if (f === "quota_progress") {
    return [el("span", {}, pct(v, 0)), el("div", { class: "bar", title: `${fmt(r.kwh_per_m2, 1)} of ${fmt(r.quota_kwh_per_m2, 0)} kWh/m²` },
      el("span", { class: v > 1 ? "over" : "", style: `width:${Math.min(100, 100 * (v || 0)).toFixed(1)}%` }))];
  }
  if (f === "savings_pct") {
    if (v == null) return el("span", { class: "muted", title: "the baseline is insufficient (CalTRACK) or not computed" }, "no baseline");
    return [el("span", { class: v >= 0 ? "good" : "bad" }, `${v >= 0 ? "" : "+"}${fmt(Math.abs(v), 1)} %`),
      el("div", { class: "unit" }, `${fmt(Math.abs(r.savings_kwh), 0)} kWh ${v >= 0 ? "saved" : "over"}`)];
  }
  if (f === "kwh_per_m2") {
    return [el("span", {}, f2(v)), el("div", { class: "bar thin" }, el("span", { style: `width:${(100 * (v || 0) / maxKwhM2).toFixed(1)}%` }))];
  }
  return f2(v);
}

/** The rows no other row contains (an org's figures include what is below it: counted once). */
function outermost(rows) { return rows.filter((r) => !rows.some((o) => o !== r && r.org.startsWith(o.org + "/"))); }

function summaryCards(data, period) {
  const top = outermost(data.rows);
  const sum = (f) => top.reduce((a, r) => a + (r[f] || 0), 0);
  const area = sum("floor_area_m2"), kwh = sum("kwh"), kgce = sum("kgce"), people = sum("occupants");
  const saved = top.filter((r) => r.savings_kwh != null);
  const veh = sum("vehicles");
  const dispatched = top.reduce((a, r) => a + (r.dispatch_rate || 0) * (r.vehicles || 0), 0);
  const label = { day: "today", month: "this month", year: "this year" }[period];
  const card = (title, big, ...rest) => el("div", { class: "card stat" }, el("h3", {}, title), el("div", { class: "big" }, big), ...rest);
  return [
    card(`energy ${label}`, `${fmt(kwh, 0)} kWh`, el("div", { class: "muted" }, `${fmt(area ? kwh / area : null, 2)} kWh/m² · ${fmt(people ? kgce / people : null, 2)} kgce/person`)),
    card("savings against baseline", saved.length ? `${fmt(saved.reduce((a, r) => a + r.savings_kwh, 0), 0)} kWh` : "—",
      el("div", { class: "muted" }, saved.length ? `${saved.length} of ${top.length} institutions with a sufficient baseline` : "no sufficient baseline for this period")),
    card("institutions", fmt(data.rows.length, 0), el("div", { class: "muted" }, `${fmt(sum("buildings"), 0)} buildings · ${fmt(area, 0)} m² · ${fmt(people, 0)} people`)),
    card("vehicles", fmt(veh, 0), el("div", { class: "muted" }, `出车率 ${pct(veh ? dispatched / veh : null, 0)} · holiday trips ${fmt(sum("holiday_trips"), 0)}`)),
  ];
}
