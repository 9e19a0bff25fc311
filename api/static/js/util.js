// Small helpers shared by the views: DOM building, number and date formatting in the site's time zone.

export const $ = (sel, root = document) => root.querySelector(sel);
/** Where to scroll once the view has rendered (a link's wish: "charts ↓"). */
export const pending = { scrollTo: null };
export const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];

export function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const k of kids.flat(Infinity)) {
    if (k == null || k === false) continue;
    e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  return e;
}

const nf = {};
/** A number with `d` decimals and thousands separators; "—" for none. */
export function fmt(v, d = 1) {
  if (v == null || typeof v !== "number" || !Number.isFinite(v)) return "—";
  const f = nf[d] || (nf[d] = new Intl.NumberFormat("en-US", { minimumFractionDigits: d, maximumFractionDigits: d }));
  return f.format(v);
}
/** Enough decimals to read: 12,345 / 123.4 / 1.23 / 0.012. */
export function fmtAuto(v) {
  if (v == null || !Number.isFinite(v)) return "—";
  const a = Math.abs(v);
  return fmt(v, a >= 1000 ? 0 : a >= 100 ? 1 : a >= 1 ? 2 : a >= 0.01 ? 3 : 4);
}
export function pct(v, d = 0) { return v == null || !Number.isFinite(v) ? "—" : `${fmt(100 * v, d)} %`; }

// ---- dates: the site's zone has a fixed offset (Asia/Shanghai; docs/energy.md, Limits)
let TZ = "Asia/Shanghai";
let OFFSET_MS = 8 * 3600e3;
export function setTimeZone(tz) {
  TZ = tz;
  // the offset of a fixed-offset zone, read from Intl once
  const d = new Date(Date.UTC(2020, 0, 1, 0, 0, 0));
  const p = new Intl.DateTimeFormat("en-US", { timeZone: tz, hour12: false, year: "numeric", month: "2-digit",
    day: "2-digit", hour: "2-digit", minute: "2-digit" }).formatToParts(d);
  const g = (t) => Number(p.find((x) => x.type === t).value);
  OFFSET_MS = Date.UTC(g("year"), g("month") - 1, g("day"), g("hour") % 24, g("minute")) - d.getTime();
}
export function timeZone() { return TZ; }

/** A site-local calendar day as {y, m, d} (m 1..12) for a time in ms. */
export function localDay(ms = Date.now()) {
  const t = new Date(ms + OFFSET_MS);
  return { y: t.getUTCFullYear(), m: t.getUTCMonth() + 1, d: t.getUTCDate() };
}
/** ms of site-local midnight starting the day {y, m, d} (m may overflow: Date.UTC normalises). */
export function dayStart({ y, m, d }) { return Date.UTC(y, m - 1, d) - OFFSET_MS; }
export function addDays(day, n) { return localDay(dayStart(day) + n * 86400e3 + 3600e3); }
export function addMonths(day, n) { const t = new Date(Date.UTC(day.y, day.m - 1 + n, 1)); return { y: t.getUTCFullYear(), m: t.getUTCMonth() + 1, d: 1 }; }
export function isoDay(day) { return `${day.y}-${String(day.m).padStart(2, "0")}-${String(day.d).padStart(2, "0")}`; }
export function parseDay(s) { const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(s || ""); return m ? { y: +m[1], m: +m[2], d: +m[3] } : null; }
/** Site-local ISO time without offset (the API reads it as site-local). */
export function localIso(ms) {
  const t = new Date(ms + OFFSET_MS);
  return t.toISOString().slice(0, 19);
}
/** "14:05" (or "12-02 14:05" when not today) of an ISO time or ms, in the site's zone. */
export function clock(t, withDate = false) {
  if (t == null) return "—";
  const ms = typeof t === "number" ? t : Date.parse(t);
  if (!Number.isFinite(ms)) return "—";
  const s = new Date(ms + OFFSET_MS).toISOString();
  const today = isoDay(localDay());
  return (withDate || s.slice(0, 10) !== today ? s.slice(5, 10) + " " : "") + s.slice(11, 16);
}
export function dateLabel(ms, unit) {
  const s = new Date(ms + OFFSET_MS).toISOString();
  if (unit === "month") return s.slice(0, 7);
  if (unit === "hour") return s.slice(11, 16);
  return s.slice(0, 10);
}
