// Time charts on uPlot (vendored: /static/vendor/uplot): dates and times on the time axis in the site's
// zone, units on the value axis, ticks at round values; bars of actual energy with the baseline as a
// step line and the savings (green) or the excess (red) shaded between them; stacked bars by item.

import { el, fmt, fmtAuto, timeZone } from "./util.js";

const uPlot = window.uPlot;
const SAVED = "rgba(46,139,87,.38)", EXCESS = "rgba(217,83,79,.42)";
const BAR = 0.82;   // a bar's share of its bucket's width (left-aligned at the bucket's start)

function timeLabels(u, splits, axisIdx, space, incr) {
  const tz = timeZone();
  let prevDay = null;
  return splits.map((s) => {
    const d = uPlot.tzDate(new Date(s * 1e3), tz);
    const ymd = `${String(d.getMonth() + 1).padStart(2, "0")}-${String(d.getDate()).padStart(2, "0")}`;
    if (incr >= 28 * 86400) return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}`;
    if (incr >= 86400) return (d.getMonth() === 0 && d.getDate() <= incr / 86400) ? `${ymd}\n${d.getFullYear()}` : ymd;
    const hm = `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
    const showDay = ymd !== prevDay;
    prevDay = ymd;
    return showDay ? `${hm}\n${ymd}` : hm;
  });
}

/** Tick labels at the precision the ticks need: 0, 2,000, 40k, 0.5. */
function valueLabels(u, vals) {
  const step = vals.length > 1 ? Math.abs(vals[1] - vals[0]) : 1;
  const k = Math.max(...vals.map(Math.abs)) >= 1e5;
  const d = Math.max(0, Math.min(4, -Math.floor(Math.log10((k ? step / 1e3 : step) || 1))));
  return vals.map((v) => (k ? `${fmt(v / 1e3, d)}k` : fmt(v, d)));
}

const D = 86400, MO = 30 * D;
// tick steps a bucket allows (uPlot places month steps on the 1st, day steps at local midnight)
const INCRS = { hour: [3600, 2 * 3600, 3 * 3600, 4 * 3600, 6 * 3600, 12 * 3600, D, 2 * D],
                day: [D, 2 * D, 3 * D, 4 * D, 5 * D, 7 * D, 10 * D, 15 * D, MO, 2 * MO, 3 * MO],
                month: [MO, 2 * MO, 3 * MO, 4 * MO, 6 * MO, 365 * D] };

function baseOpts(box, unit, height, bucket) {
  return {
    width: Math.max(320, box.clientWidth - 4), height,
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), timeZone()),
    scales: { x: { time: true }, y: { range: (u, lo, hi) => [Math.min(0, lo), hi > 0 ? hi * 1.08 : 1] } },
    axes: [
      { values: timeLabels, space: 52, incrs: INCRS[bucket], grid: { stroke: "#eef1f4" }, ticks: { stroke: "#ccd3da" } },
      { label: unit, labelSize: 18, size: 58, values: valueLabels, grid: { stroke: "#eef1f4" }, ticks: { stroke: "#ccd3da" } },
    ],
    cursor: { drag: { x: false, y: false }, points: { size: 6 } },
    legend: { live: true },
  };
}

function mount(box, opts, data) {
  box.replaceChildren();
  const u = new uPlot(opts, data, box);
  const ro = new ResizeObserver(() => u.setSize({ width: Math.max(320, box.clientWidth - 4), height: opts.height }));
  ro.observe(box);
  box._plot = u;
  box.dataset.unit = opts.axes[1].label;                   // what the axes say, for readers of the page's DOM
  box.dataset.buckets = String(data[0].length - 1);
  box.dataset.values = String(data.slice(1).reduce((n, s) => n + s.filter((v) => v != null).length, 0));
  return u;
}

/** A step per bucket, from its start to the next bucket's start, none where the value is null (a uPlot path builder). */
function steps(u, sidx, i0, i1) {
  const xs = u.data[0], ys = u.data[sidx];
  const p = new Path2D();
  for (let i = Math.max(0, i0); i <= i1 && i < xs.length - 1; i++) {
    if (ys[i] == null) continue;
    const y = u.valToPos(ys[i], "y", true);
    p.moveTo(u.valToPos(xs[i], "x", true), y);
    p.lineTo(u.valToPos(xs[i + 1], "x", true), y);
  }
  return { stroke: p, fill: null, clip: null, band: null, gaps: null, flags: 0 };
}

/**
 * Actual energy as bars against the weather-normalised baseline.
 * `x`: bucket starts (ms); `end`: where the last bucket ends; values per bucket, null where unknown:
 * `actual` (kWh), `baseline` (what the baseline predicts where the two compare: the reporting period;
 * the savings or excess is shaded between them), `fit` (the model over its own baseline period: drawn
 * for reference, not compared), `lower`/`upper` (its 95 % prediction interval, a light band),
 * `anomaly` (true: the bucket is an anomalous day, marked); `bucket`: hour|day|month.
 */
export function energyChart(box, { x, actual, baseline, fit, lower, upper, anomaly, bucket, unit, end, height = 260 }) {
  const xs = x.map((t) => t / 1e3).concat([end / 1e3]);        // one more x: the last bucket's end
  const pad = (a) => (a || x.map(() => null)).concat([null]);
  const [a, b, f, lo, hi] = [pad(actual), pad(baseline), pad(fit), pad(lower), pad(upper)];
  const opts = baseOpts(box, unit, height, bucket);
  opts.class = "energy-chart";
  const kwh = (u, v) => (v == null ? "—" : `${fmtAuto(v)} kWh`);
  opts.series = [
    { label: "time", value: (u, v) => v == null ? "—" : bucketLabel(v, bucket) },
    { label: "actual", stroke: "#3a7bd5", fill: "rgba(58,123,213,.55)", width: 1, points: { show: false },
      paths: uPlot.paths.bars({ size: [BAR, Infinity], align: 1 }), value: kwh },
    { label: "baseline", stroke: "#1d2733", width: 2, dash: [6, 3], points: { show: false }, paths: steps, value: kwh,
      show: b.some((v) => v != null) },
    { label: "model fit (baseline period)", stroke: "#6f7d8b", width: 1.5, dash: [2, 3], points: { show: false }, paths: steps,
      value: kwh, show: f.some((v) => v != null) },
  ];
  opts.hooks = { draw: [(u) => shade(u, xs, a, b, lo, hi, anomaly || [])] };
  return mount(box, opts, [xs, a, b, f]);
}

function shade(u, xs, a, b, lo, hi, anomaly) {
  const ctx = u.ctx;
  ctx.save();
  ctx.beginPath();
  ctx.rect(u.bbox.left, u.bbox.top, u.bbox.width, u.bbox.height);
  ctx.clip();
  for (let i = 0; i < xs.length - 1; i++) {
    const x0 = u.valToPos(xs[i], "x", true), x1 = x0 + BAR * (u.valToPos(xs[i + 1], "x", true) - x0);  // the bar's width
    if (lo[i] != null && hi[i] != null) {      // the prediction interval
      const y0 = u.valToPos(hi[i], "y", true), y1 = u.valToPos(Math.max(0, lo[i]), "y", true);
      ctx.fillStyle = "rgba(29,39,51,.07)";
      ctx.fillRect(x0, y0, Math.max(1, x1 - x0), y1 - y0);
    }
    if (a[i] != null && b[i] != null) {        // savings (green) or excess (red) between actual and baseline
      const ya = u.valToPos(a[i], "y", true), yb = u.valToPos(b[i], "y", true);
      ctx.fillStyle = b[i] >= a[i] ? SAVED : EXCESS;
      ctx.fillRect(x0, Math.min(ya, yb), Math.max(1, x1 - x0), Math.abs(yb - ya));
    }
    if (anomaly[i] && a[i] != null) {          // an anomalous day: a red mark above its bar
      const xm = (x0 + x1) / 2, ym = u.valToPos(a[i], "y", true) - 7 * (window.devicePixelRatio || 1);
      ctx.fillStyle = "#c0392b";
      ctx.beginPath(); ctx.arc(xm, ym, 3.5 * (window.devicePixelRatio || 1), 0, 2 * Math.PI); ctx.fill();
    }
  }
  ctx.restore();
}

function bucketLabel(s, bucket) {
  const d = uPlot.tzDate(new Date(s * 1e3), timeZone());
  const p = (n) => String(n).padStart(2, "0");
  if (bucket === "month") return `${d.getFullYear()}-${p(d.getMonth() + 1)}`;
  if (bucket === "hour") return `${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:00`;
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}`;
}

/** Stacked bars: `series` [{label, color, values}] bottom first; values per bucket (null: none). */
export function stackedChart(box, { x, series, bucket, unit, end, height = 240 }) {
  const xs = x.map((t) => t / 1e3).concat([end / 1e3]);
  const cum = [];
  let acc = x.map(() => 0);
  for (const s of series) {
    acc = acc.map((v, i) => (s.values[i] == null ? v : v + Math.max(0, s.values[i])));
    cum.push(acc.concat([null]));
  }
  const opts = baseOpts(box, unit, height, bucket);
  opts.class = "stacked-chart";
  // drawn top of the stack first, so each lower item's bar covers the part below its top
  const order = series.map((s, i) => i).reverse();
  opts.series = [{ label: "time", value: (u, v) => v == null ? "—" : bucketLabel(v, bucket) }].concat(order.map((i) => ({
    label: series[i].label, stroke: series[i].color, fill: series[i].color, width: 0, points: { show: false },
    paths: uPlot.paths.bars({ size: [BAR, Infinity], align: 1 }),
    value: (u, v, si, idx) => (idx == null || series[i].values[idx] == null ? "—" : `${fmtAuto(series[i].values[idx])} kWh`),
  })));
  return mount(box, opts, [xs, ...order.map((i) => cum[i])]);
}

/** A line of a value over time (power, kW). */
export function lineChart(box, { x, y, unit, label, height = 200 }) {
  const opts = baseOpts(box, unit, height, "hour");
  opts.series = [{ label: "time", value: (u, v) => v == null ? "—" : bucketLabel(v, "hour") },
    { label, stroke: "#3a7bd5", width: 1.6, fill: "rgba(58,123,213,.12)", points: { show: false },
      value: (u, v) => v == null ? "—" : `${fmtAuto(v)} ${unit}` }];
  return mount(box, opts, [x.map((t) => t / 1e3), y]);
}

/** A caption above a chart: what is drawn and its totals. */
export function caption(...parts) { return el("p", { class: "chart-caption" }, ...parts); }

