"""Energy jobs: read counters through the query layer, compute indicators, return Points.

The query layer (``edge/query.py``) is being written in parallel; this module depends only on
the small ``CounterSource`` protocol below, which an adapter over the query layer implements
(one InfluxQL ``SELECT "<field>" FROM "meter" WHERE "meter"='<id>' AND time >= .. AND time < ..``
per meter, or one query grouped by meter). Until then ``ArraySource`` serves arrays from memory
(tests, ``edge analytics energy --demo``).

``compute_energy_range`` is what ``edge analytics energy --from --to`` runs and what the service
scheduler will run per closed day (recomputing a day when late data arrives is running it
again: the Points have the same identity, so InfluxDB overwrites them).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np

from analytics.energy.anomalies import baseline_anomalies
from analytics.energy.baseline import counter_measured_days, daily_mean_temperature, fit_daily_models, implausible_temperature_days, savings
from analytics.energy.counters import CounterSpec
from analytics.energy.factors import CARRIER_FIELD, FactorSet
from analytics.energy.indicators import (
    IndicatorTable,
    add_changes,
    apply_rollup,
    areas_for,
    block_from_counters,
    combine_carriers,
    compute_indicators,
    daily_consumption,
    rollup_by_building,
    rollup_by_org,
    to_points,
)
from analytics.periods import NS_PER_DAY, QUARTER_NS, LocalCalendar, Period
from analytics.workcal import WorkCalendar

log = logging.getLogger(__name__)


class CounterSource(Protocol):
    """What the energy jobs need from the query layer.

    ``fetch_counter`` returns the raw readings of one counter field of one meter in
    ``[start_ns, end_ns)``: ``times_ns`` int64 ascending (UTC ns) and ``values`` float64 (same
    length), as stored (no deltas, no fill). Empty arrays when there is nothing.
    """

    def fetch_counter(self, meter_id: str, field: str, start_ns: int, end_ns: int
                      ) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass
class ArraySource:
    """A CounterSource over in-memory arrays: ``data[(meter_id, field)] = (times_ns, values)``."""

    data: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def fetch_counter(self, meter_id: str, field: str, start_ns: int, end_ns: int
                      ) -> tuple[np.ndarray, np.ndarray]:
        t, v = self.data.get((meter_id, field), (np.empty(0, np.int64), np.empty(0)))
        sel = (t >= start_ns) & (t < end_ns)
        return np.asarray(t[sel], dtype=np.int64), np.asarray(v[sel], dtype=np.float64)


@dataclass(frozen=True)
class MeterInfo:
    id: str
    org: str
    carrier: str = "electricity"
    building: str | None = None
    spec: CounterSpec = CounterSpec()


@dataclass
class EnergyReport:
    tables: list[IndicatorTable]
    events: list                     # (meter id, CounterEvent)
    points: list                     # edge.point.Point


def align_on_grid(series: Sequence[tuple[np.ndarray, np.ndarray]], start_ns: int, end_ns: int,
                  step_ns: int = QUARTER_NS) -> tuple[np.ndarray, np.ndarray]:
    """Put each meter's readings on a shared axis: the union of all reading times (so nothing
    is resampled or invented), NaN where a meter has no reading at a time. When the union is
    larger than a ``step_ns`` grid would be, readings are thinned to the last one at or before
    each grid point (counters are cumulative, so thinning loses no energy, only resolution)."""
    ts = [np.asarray(t, dtype=np.int64) for t, _ in series]
    union = np.unique(np.concatenate(ts)) if ts else np.empty(0, np.int64)
    grid_n = (end_ns - start_ns) // step_ns + 1
    if union.size > grid_n:
        axis = start_ns + np.arange(grid_n, dtype=np.int64) * step_ns
        out = np.full((len(series), axis.size), np.nan)
        for r, (t, v) in enumerate(series):
            if len(t) == 0:
                continue
            k = np.searchsorted(t, axis, side="right") - 1
            ok = k >= 0
            # a grid point takes the last reading at or before it, if that reading is recent
            recent = ok & (axis - t[np.maximum(k, 0)] < step_ns)
            out[r, recent] = np.asarray(v)[k[recent]]
            # the meter's first reading goes to the grid point before it, so the energy between it
            # and the next grid point is counted (measured, not invented; that quarter's coverage
            # reads as full)
            kf = int(np.searchsorted(axis, t[0], side="right")) - 1
            if kf >= 0 and np.isnan(out[r, kf]):
                out[r, kf] = np.asarray(v)[0]
        return axis, out
    out = np.full((len(series), union.size), np.nan)
    for r, (t, v) in enumerate(series):
        out[r, np.searchsorted(union, t)] = v
    return union, out


def compute_energy_range(source: CounterSource, meters: Sequence[MeterInfo], first: dt.date, last: dt.date,
                         workcal: WorkCalendar = WorkCalendar(), factors: FactorSet = FactorSet(),
                         cal: LocalCalendar = LocalCalendar(),
                         buildings: Sequence[tuple[str, str, float, int]] = (),
                         periods: Sequence[Period] = (Period.day, Period.month, Period.year)) -> EnergyReport:
    """Indicators for local days ``first``..``last`` (inclusive) per meter, building and org,
    per day, month and year, as tables and Points. Month and year rows cover only the days in
    range (a partial month has ``coverage`` < 1). For buildings and orgs, rows with carrier
    ``all`` add 综合能耗 (kgce over carriers) and, given ``buildings`` as (id, org,
    floor_area_m2, occupants), the per-m² and per-person figures and target ratios. Every point
    says ``provisional_calendar`` (its year computed with weekends only: ``WorkCalendar``)."""
    n_days = (last - first).days + 1
    first_day = cal.day_of(first)
    start_ns = int(cal.day_start_ns(first_day))
    end_ns = start_ns + n_days * NS_PER_DAY
    working = workcal.working_quarters(first, n_days)   # weekends only in a year the calendar does not cover
    provisional_years = set(workcal.provisional_years(first, last))
    # one quarter of margin each side so the bins at the range's edges have readings around them
    series = [source.fetch_counter(m.id, CARRIER_FIELD[m.carrier][0], start_ns - QUARTER_NS, end_ns + QUARTER_NS + 1)
              for m in meters]
    times, values = align_on_grid(series, start_ns - QUARTER_NS, end_ns + QUARTER_NS)
    if times.size == 0:
        log.info("energy range=%s..%s meters=%d readings=0", first, last, len(meters))
        return EnergyReport([], [], [])
    blk, events = block_from_counters(times, values, [m.spec for m in meters], cal, first_day, n_days,
                                      [m.id for m in meters], [m.org for m in meters], [m.carrier for m in meters])
    tables = []
    blocks = [("meter", blk),
              ("building", apply_rollup(blk, rollup_by_building([m.building for m in meters], blk.orgs, blk.carriers))),
              ("org", apply_rollup(blk, rollup_by_org(blk.orgs, blk.carriers)))]
    for scope, b in blocks:
        if not b.ids:
            continue
        for period in periods:
            t = compute_indicators(b, period, cal, working, factors, scope=scope)
            if period is Period.month:
                add_changes(t, "consumption_kwh")
            tables.append(t)
            if scope != "meter":
                area, occ = areas_for(scope, t.ids, buildings)
                tables.append(combine_carriers(t, area, occ))
    points = to_points(tables, lambda t: cal.date_of(int(cal.local_day_index(t))).year in provisional_years)
    log.info("energy range=%s..%s meters=%d points=%d events=%d", first, last, len(meters), len(points),
             len(events))
    return EnergyReport(tables, events, points)


def buildings_from_site(site) -> list[tuple[str, str, float, int]]:
    return [(b.id, b.org, b.floor_area_m2, b.occupants) for b in site.buildings]


def meters_from_site(site) -> list[MeterInfo]:
    """``edge.config.Site`` → MeterInfo list (counter specs default until the config carries
    rollover and rated power per meter)."""
    return [MeterInfo(m.id, site.meter_org(m), m.carrier.value, m.building,
                      CounterSpec(rollover=getattr(m, "counter_rollover", None), rated_kw=getattr(m, "rated_kw", None)))
            for m in site.meters]


@dataclass
class BaselineReport:
    """Per meter: the fitted model (baseline period), savings over the reporting period (no
    figure, with the reasons, when either period is insufficient), and the reporting days outside
    the model's prediction interval (only where savings are reported)."""

    models: dict[str, object]
    savings: dict[str, object]
    anomalies: list


def compute_baselines(source: CounterSource, meters: Sequence[MeterInfo], baseline: tuple[dt.date, dt.date],
                      reporting: tuple[dt.date, dt.date], temp_times_ns: np.ndarray, temp_c: np.ndarray,
                      cal: LocalCalendar = LocalCalendar()) -> BaselineReport:
    """CalTRACK daily baselines (``analytics.energy.baseline``) for every meter from the same weather
    series: fit on ``baseline`` (12 months), savings and anomalies on ``reporting``.

    A day's usage counts only when the counter measured it (``counter_measured_days``: at most half
    of the day interpolated across a gap, CalTRACK 2.2.2.1), and a day of zero electricity is
    missing (2.2.1.4). Temperature readings outside the plausible range are left out."""

    def daily(first: dt.date, last: dt.date):
        n_days = (last - first).days + 1
        fd = cal.day_of(first)
        s = int(cal.day_start_ns(fd))
        e = s + n_days * NS_PER_DAY
        temp = daily_mean_temperature(temp_times_ns, temp_c, fd, n_days)
        bad_temp = implausible_temperature_days(temp_times_ns, temp_c, fd, n_days)
        months = (np.arange(fd, fd + n_days).astype("datetime64[D]").astype("datetime64[M]").astype(np.int64))
        series = [source.fetch_counter(m.id, CARRIER_FIELD[m.carrier][0], s - QUARTER_NS, e + QUARTER_NS + 1)
                  for m in meters]
        times, values = align_on_grid(series, s - QUARTER_NS, e + QUARTER_NS)
        if times.size == 0:
            return np.full((len(meters), n_days), np.nan), temp, bad_temp, months, fd
        rows = []
        for r, m in enumerate(meters):
            y, _ = daily_consumption(times, values[r], m.spec, cal, fd, n_days)
            y = y[0]
            rt, rv = series[r]
            y = np.where(counter_measured_days(np.asarray(rt)[~np.isnan(rv)], fd, n_days), y, np.nan)
            if m.carrier == "electricity":
                y = np.where(y == 0, np.nan, y)
            rows.append(y)
        return np.stack(rows), temp, bad_temp, months, fd

    yb, tb, badb, months_b, _ = daily(*baseline)
    models = fit_daily_models(yb, tb, month_of_day=months_b, implausible_days=badb)
    yr, tr, badr, months_r, fdr = daily(*reporting)
    starts = cal.day_start_ns(fdr + np.arange(yr.shape[1]))
    out_models, out_savings, anomalies = {}, {}, []
    for m, model, y in zip(meters, models, yr):
        out_models[m.id] = model
        s = savings(model, y, tr, month_of_day=months_r, implausible_days=badr)
        out_savings[m.id] = s
        if s.reported:     # an insufficient baseline or period judges no day either
            anomalies.extend(baseline_anomalies(m.id, model, starts, y, tr))
    reported = sum(s.reported for s in out_savings.values())
    log.info("baselines meters=%d insufficient=%d g14_ok=%d savings_reported=%d anomalies=%d", len(meters),
             sum(not x.sufficient for x in models), sum(x.g14_ok and x.sufficient for x in models), reported,
             len(anomalies))
    return BaselineReport(out_models, out_savings, anomalies)


def days_to_compute(now_ns: int, last_done: dt.date | None, late_reading_times_ns: Sequence[int] = (),
                    cal: LocalCalendar = LocalCalendar(), settle_s: float = 900.0, backfill_days: int = 1
                    ) -> list[dt.date]:
    """What the scheduler computes on a tick: every local day closed since ``last_done`` (a day
    is closed ``settle_s`` after its local midnight end, so the last readings have arrived), plus
    closed days that received late readings (recomputed: same Point identity, so overwritten).
    With no ``last_done``, the last ``backfill_days`` closed days."""
    settled = cal.local_day_index(int(now_ns - settle_s * 1e9))
    last_closed = int(settled) - 1
    if last_done is None:
        first = last_closed - backfill_days + 1
    else:
        first = cal.day_of(last_done) + 1
    days = set(range(first, last_closed + 1))
    for t in late_reading_times_ns:
        d = int(cal.local_day_index(int(t)))
        if d <= last_closed:
            days.add(d)
    return [cal.date_of(d) for d in sorted(days)]


async def prefetch_counters(query, meters: Sequence[MeterInfo], start_ns: int, end_ns: int,
                            where=None) -> ArraySource:
    """Read every meter's counter field over ``[start_ns, end_ns)`` through the query layer
    (``edge.query.Query``: ``await query.raw("meter", fields, start_ns, end_ns[, where])``) into an
    ``ArraySource`` the pure jobs can use. ``where`` is the caller's ``edge.query.Where`` (e.g.
    the org scope); without one every ``meter`` series is read and filtered here by the ``meter``
    tag. analytics does not import the query layer: it is handed one."""
    fields = sorted({CARRIER_FIELD[m.carrier][0] for m in meters})
    wanted = {(m.id, CARRIER_FIELD[m.carrier][0]) for m in meters}
    series = await (query.raw("meter", fields, start_ns, end_ns) if where is None
                    else query.raw("meter", fields, start_ns, end_ns, where))
    return merge_counter_series(series, wanted)


def merge_counter_series(series, wanted: set[tuple[str, str]], shift_ns: int = 0) -> ArraySource:
    """Query-layer ``Series`` of meter counters into an ``ArraySource`` keyed (meter id, field).

    One meter may come back as several series (a tag changed, e.g. its building): they are
    merged, sorted, and repeated times dropped. ``shift_ns`` relabels every time (window ends)."""
    parts: dict[tuple[str, str], list] = {}
    for s in series:
        key = (s.tags.get("meter", ""), s.field)
        if key in wanted:
            parts.setdefault(key, []).append((np.asarray(s.times_ns, dtype=np.int64) + shift_ns,
                                               np.asarray(s.values, dtype=np.float64)))
    src = ArraySource()
    for key, chunks in parts.items():
        t = np.concatenate([c[0] for c in chunks])
        v = np.concatenate([c[1] for c in chunks])
        order = np.argsort(t, kind="stable")
        t, v = t[order], v[order]
        keep = np.r_[True, np.diff(t) > 0] if len(t) else np.zeros(0, bool)
        src.data[key] = (t[keep], v[keep])
    return src


async def compute_energy_from_query(query, meters: Sequence[MeterInfo], first: dt.date, last: dt.date,
                                    workcal: WorkCalendar = WorkCalendar(), factors: FactorSet = FactorSet(),
                                    cal: LocalCalendar = LocalCalendar(), where=None,
                                    buildings: Sequence[tuple[str, str, float, int]] = ()) -> EnergyReport:
    """``compute_energy_range`` reading through the query layer; the numpy work runs in a
    thread so the service's event loop keeps serving."""
    import asyncio

    start = cal.midnight_ns(first) - QUARTER_NS
    end = cal.midnight_ns(last) + NS_PER_DAY + QUARTER_NS + 1
    src = await prefetch_counters(query, meters, start, end, where)
    return await asyncio.to_thread(compute_energy_range, src, meters, first, last, workcal, factors, cal, buildings)
