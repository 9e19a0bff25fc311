// The district's view (the district, city or province user; DB33/T 2474-2022 6.2.5-6.2.6): the org's
// children (a street's or district's institutions, an institution's buildings) ranked side by side from
// GET /v1/rollup, each row a link down: an institution to its energy and fleet views, a street or district
// to its own ranking, a building to its charts.

import { api, q } from "./api.js";
import { $, addMonths, el, fmt, isoDay, localDay, pct } from "./util.js";

// [field, heading, unit line]
const COLUMNS = [
  ["kwh", "energy", "kWh"],
  ["kwh_per_m2", "per area", "kWh/m²"],
  ["kgce_per_person", "per person", "kgce/person"],
  ["quota_progress", "quota", "of the period's share"],
  ["savings_pct", "savings", "against baseline"],
  ["anomalies", "anomalies", "days"],
  ["utilisation", "utilisation", "vehicles"],
  ["dispatch_rate", "出车率", "dispatch rate"],
  ["holiday_trips", "holiday trips", ""],
];
const LEVEL = { province: "省", city: "市", district: "区县", street: "街道", institution: "单位", building: "楼" };

/** The periods offered: today, this month, last month, this year (`at` a day in it). */
function periods(today) {
  const last = addMonths(today, -1);
  return [["day", isoDay(today), "today"], ["month", isoDay(today), "this month"],
          ["month", isoDay({ ...last, d: 15 }), "last month"], ["year", isoDay(today), "this year"]];
}
/** Where a user lands: last month while this one has less than a week behind it. */
export function defaultPeriod(today = localDay()) {
  const p = periods(today);
  return today.d <= 7 ? p[2] : p[1];
}

export async function loadDistrict(ctx) {
  const box = $("#view-district");
  const today = localDay();
  const [dp, dat] = defaultPeriod(today);
  const period = ctx.params.get("period") || dp;
  const at = ctx.params.get("at") || (ctx.params.get("period") ? isoDay(today) : dat);
  const sort = ctx.params.get("sort") || "kwh_per_m2";
  const order = ctx.params.get("order") || "desc";
  const data = await api(q("/v1/rollup", { org: ctx.org, period, at, sort, order }));
  const names = ctx.orgNames;
  const span = `${data.start.slice(0, 10)} – ${isoDay(localDay(Date.parse(data.end) - 3600e3))}`;
  box.querySelector(".view-head").replaceChildren(
    el("h2", {}, `${data.name} `, el("small", { class: "muted" },
      `${data.rows.length} ${data.rows.some((r) => r.building) ? "buildings" : "orgs below it"} ranked by ${(COLUMNS.find((c) => c[0] === data.ranked_by) || [0, data.ranked_by])[1]} · ${span}` +
      (data.elapsed < 1 ? ` · ${fmt(100 * data.elapsed, 0)} % of the ${period} closed` : ""))),
    el("div", { class: "picker", role: "group", "aria-label": "period" },
      periods(today).map(([p, a, label]) => el("a", { href: ctx.link("district", { period: p, at: a, sort, order }),
        class: p === period && (p !== "month" || a.slice(0, 7) === at.slice(0, 7)) ? "on" : "", "data-period": label }, label))));
  box.querySelector(".summary").replaceChildren(...summaryCards(data));
  const t = $("#rollup-table");
  t.querySelector("thead").replaceChildren(el("tr", {},
    el("th", { class: "num" }, "#"), el("th", {}, data.rows.some((r) => r.building) ? "building" : "org"), el("th", { class: "num" }, "buildings"),
    COLUMNS.map(([f, head, unit]) => {
      const on = f === data.ranked_by;
      const next = on && data.order === "desc" ? "asc" : "desc";
      return el("th", { class: `num sortable${on ? " sorted" : ""}`, "data-sort": f },
        el("a", { href: ctx.link("district", { period, at, sort: f, order: next }), title: `rank by ${head} (${next === "desc" ? "highest" : "lowest"} first)` },
          head, on ? (data.order === "desc" ? " ▼" : " ▲") : ""),
        unit ? el("div", { class: "unit" }, unit) : null);
    })));
  const tb = t.querySelector("tbody");
  tb.replaceChildren();
  const maxKwhM2 = Math.max(...data.rows.map((r) => r.kwh_per_m2 || 0), 1e-9);
  for (const r of data.rows) {
    tb.append(el("tr", { "data-org": r.org, "data-building": r.building, "data-rank": r.rank == null ? "" : String(r.rank) },
      el("td", { class: "num" }, r.rank == null ? "—" : String(r.rank)),
      el("td", {}, el("a", { href: down(ctx, r), class: "inst" }, r.name),
        el("div", { class: "unit" }, `${LEVEL[r.level] || r.level} · `, links(ctx, r))),
      el("td", { class: "num" }, fmt(r.buildings, 0), el("div", { class: "unit" }, `${fmt(r.floor_area_m2, 0)} m² · ${fmt(r.occupants, 0)} people`)),
      COLUMNS.map(([f]) => el("td", { class: "num", "data-field": f }, cell(f, r, maxKwhM2)))));
  }
  if (!data.rows.length) tb.append(el("tr", {}, el("td", { colspan: 3 + COLUMNS.length, class: "muted" }, "nothing below this org")));
  t.querySelector("tfoot").replaceChildren(el("tr", { class: "total" }, el("td", {}), el("td", {}, `all of ${data.name}`),
    el("td", { class: "num" }, fmt(data.total.buildings, 0)),
    COLUMNS.map(([f]) => el("td", { class: "num", "data-field": f }, cell(f, data.total, maxKwhM2)))));
}

/** A row's link down: an institution's energy view, a building's charts, a street's or district's ranking. */
function down(ctx, r) {
  if (r.building) return ctx.link("energy", { org: r.org, subject: r.building });
  if (r.level === "institution") return ctx.link("energy", { org: r.org });
  return ctx.link("district", { org: r.org });
}
function links(ctx, r) {
  if (r.building) return el("a", { href: ctx.link("energy", { org: r.org, subject: r.building }) }, "charts");
  return [el("a", { href: ctx.link("energy", { org: r.org }) }, "energy"), " · ", el("a", { href: ctx.link("fleet", { org: r.org }) }, "fleet"),
    r.level !== "institution" ? [" · ", el("a", { href: ctx.link("district", { org: r.org }) }, "ranking")] : null];
}

function cell(f, r, maxKwhM2) {
  const v = r[f];
  if (f === "kwh") return fmt(v, 0);
  if (f === "kgce_per_person") return fmt(v, 2);
  if (f === "holiday_trips" || f === "anomalies") return fmt(v, 0);
  if (f === "utilisation" || f === "dispatch_rate") return r.vehicles ? pct(v, 0) : el("span", { class: "muted" }, "no vehicle");
  if (f === "kwh_per_m2") {
    return [el("span", {}, fmt(v, 2)), el("div", { class: "bar thin" }, el("span", { style: `width:${(100 * (v || 0) / maxKwhM2).toFixed(1)}%` }))];
  }
  if (f === "quota_progress") {
    return [el("span", { title: `${fmt(r.kwh_per_m2, 2)} kWh/m² against ${fmt(r.quota_kwh_per_m2, 0)} kWh/(m²·a) prorated to the period` }, pct(v, 0)),
      el("div", { class: "bar" }, el("span", { class: v > 1 ? "over" : "", style: `width:${Math.min(100, 100 * (v || 0)).toFixed(1)}%` }))];
  }
  if (f === "savings_pct") {
    if (v == null) {
      const why = (r.savings_reasons || []).join(", ") || "no baseline report for the period";
      return el("span", { class: "muted", title: why }, "no baseline");
    }
    const good = v >= 0;
    return [el("span", { class: good ? "good" : "bad" }, `${good ? "" : "+"}${fmt(Math.abs(v), 1)} %`),
      el("div", { class: "unit", title: "68 % uncertainty (ASHRAE Guideline 14)" },
        `${fmt(Math.abs(r.savings_kwh), 0)} kWh ${good ? "saved" : "over"}${r.savings_uncertainty_kwh != null ? ` ± ${fmt(r.savings_uncertainty_kwh, 0)}` : ""}`)];
  }
  return fmt(v, 2);
}

function summaryCards(data) {
  const t = data.total;
  const card = (id, title, big, sub) => el("div", { class: "card stat", id }, el("h3", {}, title), el("div", { class: "big" }, big), el("div", { class: "muted" }, sub));
  const saved = t.savings_kwh;
  return [
    card("total-energy", `energy, ${data.period === "day" ? "today" : data.start.slice(0, data.period === "year" ? 4 : 7)}`, `${fmt(t.kwh, 0)} kWh`,
      `${fmt(t.kwh_per_m2, 2)} kWh/m² · ${fmt(t.kgce_per_person, 2)} kgce/person · quota ${pct(t.quota_progress)}`),
    card("total-savings", "against the baseline", saved == null ? "no baseline" : `${saved >= 0 ? "saved" : "over by"} ${fmt(Math.abs(saved), 0)} kWh`,
      saved == null ? (t.savings_reasons.join(", ") || "no sufficient baseline for this period")
        : `${fmt(Math.abs(t.savings_pct), 1)} % ${saved >= 0 ? "below" : "above"} the weather-normalised baseline ± ${fmt(t.savings_uncertainty_kwh, 0)} kWh · ${fmt(t.anomalies, 0)} anomalous days`),
    card("total-size", "buildings", fmt(t.buildings, 0), `${fmt(t.floor_area_m2, 0)} m² · ${fmt(t.occupants, 0)} people`),
    card("total-fleet", "vehicles", fmt(t.vehicles, 0), `出车率 ${pct(t.dispatch_rate)} · utilisation ${pct(t.utilisation)} · ${fmt(t.trips, 0)} trips · ${fmt(t.holiday_trips, 0)} on holidays`),
  ];
}
