"""The service's indicator scheduler: reads series through the query layer, computes, writes Points back.

Incremental, per DOMAIN.md and issue 7/8's "each new period once, recomputing when late data
arrives":

* every ``analytics.interval_s``: today so far (local day, Asia/Shanghai): energy day rows per
  meter, building and org; fleet indicators and trips for today;
* when a day closes (``settle_s`` after local midnight) or on the first pass: that day again,
  its month (day and month rows over the month so far) and the year to date (year rows);
* when readings arrive for a day already closed (a meter or terminal that buffered through an
  outage): that day and its month are recomputed on the next pass.

Recomputing writes the same Point identities (measurement, tags, period start), so it overwrites.

A year the holiday calendar does not cover (``analytics.workcal``) is computed provisionally,
weekends only: its points say ``provisional_calendar=true``, the job keeps the days it computed so
(``provisional_days``; on its first pass it also reads back the flagged days a previous run left in
the store), logs a warning once a local day, and the service's health names the year. When the
calendar changes (``use_calendar``: the site file's ``holidays_extra`` / ``workdays_extra`` edited,
or a newer chinese_calendar found at start), every computed day it classifies differently is
recomputed on the next pass, with its month and year.

Counters are read as 15-minute ``last`` windows (96 values per meter-day), each relabelled to its
window's end: the delta between two consecutive labels is then the energy of the quarter that ends
at the later one, as ``analytics.energy.counters`` expects. Today's pass reads the quarter in progress raw
(exact at any duration, even a demo's 20 seconds), so its working set does not grow with the day;
a closed range is read raw while that is small, else as windows.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from pathlib import Path
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from analytics.energy.baseline import parse_temperature_csv
from analytics.energy.baseline_jobs import baseline_day_points, baseline_points
from analytics.energy.eventlog import MeterEventLog
from analytics.energy.factors import CARRIER_FIELD, Confidence, Factor, FactorSet
from analytics.energy.jobs import (
    CHUNK_ROWS,
    ArraySource,
    DailyUse,
    EnergyReport,
    LoopSource,
    MeterInfo,
    baselines_from_days,
    buildings_from_site,
    compute_energy_range,
    merge_counter_series,
    meters_from_site,
    prefetch_counters,
)
from analytics.fleet.geo import fences_from_config
from analytics.fleet.indicators import WorkingTime, vehicle_infos
from analytics.fleet.jobs import compute_fleet_days, load_positions, params_from_config, run_fleet_chunked
from analytics.fleet.rollup import from_fields, period_points
from analytics.periods import NS_PER_DAY, QUARTER_NS, LocalCalendar, Period
from analytics.workcal import FILL_FIELDS, WorkCalendar, provisional_notice
from edge.clock import SYSTEM_CLOCK, Clock
from edge.config import Site
from edge.errors import EdgeError, OutboxFull
from edge.ingest import Ingest
from edge.memory import release_free_memory
from edge.point import Point
from edge.query import Where

log = logging.getLogger(__name__)
NS = 1_000_000_000


def factors_for(site: Site) -> FactorSet:
    a = site.analytics
    f = FactorSet().with_grid_factor(a.grid_kgco2_per_kwh)
    if a.gas_kgce_per_m3 is not None:
        from dataclasses import replace
        f = replace(f, name=f"{f.name}+gas{a.gas_kgce_per_m3}",
                    gas_kgce_per_m3=Factor(a.gas_kgce_per_m3, "kgce/m3", "site config", Confidence.unconfirmed))
    return f


HISTORY_CHUNK_ROWS = 8     # meters a chunk when computing a history (whole trees; a tree larger than this is one chunk)
RAW_READINGS_MAX = 200_000  # above this many expected readings, read 15-min windows instead: a pass's
# working set must not grow with the day (the soak showed RSS climbing with every pass)


async def fetch_raw(query, meters: Sequence[MeterInfo], start_ns: int, end_ns: int) -> ArraySource:
    return await prefetch_counters(query, meters, start_ns, end_ns, Where(tags={"meter": tuple(sorted({m.id for m in meters}))}))


async def fetch_quarters(query, meters: Sequence[MeterInfo], start_ns: int, end_ns: int) -> ArraySource:
    """Each meter's counter as the first and the last reading of every 15-min window in [start_ns, end_ns):
    the first labelled 1 ns after the window's start, the last at the window's end. Consecutive labels
    then carry the same deltas, in the same quarters, as the raw readings would (only a reset inside a
    window is seen as a drop between windows)."""
    fields = sorted({CARRIER_FIELD[m.carrier][0] for m in meters})
    wanted = {(m.id, CARRIER_FIELD[m.carrier][0]) for m in meters}
    where = Where(tags={"meter": tuple(sorted({m.id for m in meters}))})
    firsts, lasts = await asyncio.gather(
        query.windows("meter", fields, start_ns, end_ns, QUARTER_NS // NS, "first", where),
        query.windows("meter", fields, start_ns, end_ns, QUARTER_NS // NS, "last", where))
    return merge_sources(merge_counter_series(firsts, wanted, shift_ns=1), merge_counter_series(lasts, wanted, shift_ns=QUARTER_NS))


def merge_sources(into: ArraySource, other: ArraySource) -> ArraySource:
    """``other``'s readings added to ``into``'s, per counter, in time order; a repeated time keeps ``other``'s
    (a raw reading at a quarter's end wins over the window label there, as raw reading it would)."""
    for key, (t2, v2) in other.data.items():
        t1, v1 = into.data.get(key, (np.empty(0, np.int64), np.empty(0)))
        t, v = np.concatenate([t1, t2]), np.concatenate([v1, v2])
        order = np.argsort(t, kind="stable")
        t, v = t[order], v[order]
        keep = np.r_[np.diff(t) > 0, True] if len(t) else np.zeros(0, bool)
        into.data[key] = (t[keep], v[keep])
    return into


@dataclass
class IndicatorJob:
    site: Site
    query: object  # edge.query.Query
    ingest: Ingest
    interval_s: float | None = None
    clock: Clock = SYSTEM_CLOCK
    passes: int = 0
    last_closed: dt.date | None = None
    late_days: set[dt.date] = field(default_factory=set)
    cal: LocalCalendar = field(default_factory=LocalCalendar)
    counter_defaults: dict | None = None   # meter id -> CounterSpec fields from its device profile
    chunk_rows: int = CHUNK_ROWS           # meters per chunk of whole trees (bounds a pass's working set)
    event_log: MeterEventLog = field(default_factory=MeterEventLog)
    _fleet_at: int | None = None

    def __post_init__(self) -> None:
        if self.interval_s is None:
            self.interval_s = self.site.analytics.interval_s
        self.meters = meters_from_site(self.site, self.counter_defaults)
        self.buildings = buildings_from_site(self.site)
        self.workcal = WorkCalendar.from_config(self.site.analytics)
        self.factors = factors_for(self.site)
        self.provisional_days: set[dt.date] = set()  # days computed with a provisional year's calendar
        self._late_limit: tuple[dt.date | None, int] = (None, 0)  # (last_closed, the UTC ns its next day starts)
        self.first_day: dt.date | None = None        # the earliest day this job computed (or found flagged)
        self._scanned = False                        # the store read back for flagged days (first pass)
        self._scan_failed = False
        self._noticed_on: dt.date | None = None      # the local day the provisional warning was last logged
        self._weather: tuple | None = None           # ((path, mtime, size), (times_ns, temp_c)) of analytics.weather_csv
        self._weather_failed: str | None = None
        self._weather_said = False

    # -- the holiday calendar -------------------------------------------------------------------
    def provisional_years(self) -> list[int]:
        """Years computed provisionally and still not covered by the calendar."""
        return sorted({d.year for d in self.provisional_days if self.workcal.is_provisional(d.year)})

    def calendar_status(self) -> dict:
        """For the service's health: the provisional years and the config fields that fix them."""
        pk = self.workcal.package_years
        return {"provisional_years": self.provisional_years(), "fill": list(FILL_FIELDS),
                "package_years": list(pk) if pk else None}

    def use_calendar(self, new: WorkCalendar, today: dt.date | None = None) -> list[dt.date]:
        """Switch to ``new`` (the year's holidays were added, or changed) and queue every day this job
        computed (or found flagged in the store) that ``new`` classifies differently for the next
        pass, with its month and year. Returns those days."""
        old, self.workcal = self.workcal, new
        if today is None:
            today = self.cal.date_of(int(self.cal.local_day_index(self.clock.now_ns())))
        if self.first_day is None:
            return []
        changed = set(old.changed_days(new, self.first_day, today))
        self.late_days |= changed
        self.provisional_days = {d for d in self.provisional_days if new.is_provisional(d.year)}
        self._fleet_at = None  # today's fleet indicators too, on this pass
        log.info("holiday calendar changed: %d computed days to recompute", len(changed),
                 extra={"days": len(changed), "first": str(min(changed)) if changed else None,
                        "provisional_years": self.provisional_years()})
        return sorted(changed)

    def _note(self, first: dt.date, last: dt.date) -> None:
        """Days about to be computed: the earliest one, and those of provisional years."""
        self.first_day = first if self.first_day is None else min(self.first_day, first)
        for y in self.workcal.provisional_years(first, last):
            d, end = max(first, dt.date(y, 1, 1)), min(last, dt.date(y, 12, 31))
            while d <= end:
                self.provisional_days.add(d)
                d += dt.timedelta(days=1)

    async def _scan_store(self, now: int) -> None:
        """Once, on the first pass: days a previous run computed provisionally (org-level day rows
        flagged in the store). Those the calendar covers now are recomputed; the others stay known
        as provisional, so health names their year and a later calendar change recomputes them."""
        flagged: set[dt.date] = set()
        for measurement in ("energy_indicator", "fleet_indicator"):
            series = await self.query.raw(measurement, ["provisional_calendar"], 0, now + 1,
                                          Where(tags={"scope": "org", "period": "day"}))
            for s in series:
                t = np.asarray(s.times_ns, dtype=np.int64)[np.array([v is True or v == 1 for v in s.values], dtype=bool)]
                flagged.update(self.cal.date_of(int(i)) for i in self.cal.local_day_index(t))
        self._scanned = True
        if not flagged:
            return
        self.first_day = min(flagged) if self.first_day is None else min(self.first_day, min(flagged))
        covered = {d for d in flagged if not self.workcal.is_provisional(d.year)}
        self.provisional_days |= flagged - covered
        self.late_days |= covered
        if covered:
            log.info("days computed provisionally are covered by the calendar now; recomputing them",
                     extra={"days": len(covered), "years": sorted({d.year for d in covered})})

    def _notice(self, today: dt.date) -> None:
        """The provisional-calendar warning, once a local day (not once a pass)."""
        years = self.provisional_years()
        if years and self._noticed_on != today:
            log.warning(provisional_notice(years, self.workcal.package_years),
                        extra={"provisional_years": years, "fill": ",".join(FILL_FIELDS)})
            self._noticed_on = today

    # -- late data ------------------------------------------------------------------------------
    def observe(self, points: Sequence[Point]) -> None:
        """Note readings that belong to an already closed day, so that day is recomputed."""
        closed = self.last_closed
        if closed is None:
            return
        if self._late_limit[0] != closed:  # numpy on a scalar: once a day, not once a commit
            self._late_limit = (closed, self.cal.midnight_ns(closed) + NS_PER_DAY)
        limit = self._late_limit[1]
        for p in points:
            if p.measurement in ("meter", "position") and p.time_ns < limit:
                self.late_days.add(self.cal.date_of(int(self.cal.local_day_index(p.time_ns))))

    # -- the loop -------------------------------------------------------------------------------
    async def run(self) -> None:
        while True:
            try:
                await self.compute_once()
            except asyncio.CancelledError:
                raise
            except OutboxFull as e:  # the outbox holds back what can be computed again: the next pass does
                log.warning("indicator pass not stored, the outbox is full; next pass in interval_s",
                            extra={"interval_s": self.interval_s, "error": str(e)})
                self.ingest.count("indicator_pass_refused")
            except Exception:
                log.exception("indicator pass failed; next pass in interval_s", extra={"interval_s": self.interval_s})
                self.ingest.count("indicator_pass_failed")
            await self.clock.sleep(self.interval_s)

    async def compute_once(self) -> int:
        """One pass; returns how many indicator points were written."""
        now = self.clock.now_ns()
        today = self.cal.date_of(int(self.cal.local_day_index(now)))
        closed = self.cal.date_of(int(self.cal.local_day_index(now - int(self.site.analytics.settle_s * NS))) - 1)
        if not self._scanned and (self.meters or self.site.vehicles):
            try:
                await self._scan_store(now)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the store may be down at start: the pass goes on, the next one retries
                if not self._scan_failed:  # said once, not once a pass
                    log.warning("reading back provisional days failed; retrying each pass", extra={"reason": str(e)})
                self._scan_failed = True
        points: list[Point] = []
        points += await self.energy(today, today, (Period.day,))
        fleet_every_ns = int(self.site.analytics.fleet_interval_s * NS)
        if self._fleet_at is None or now - self._fleet_at >= fleet_every_ns:
            points += await self.fleet(today, today, now)  # reads all of today's fixes: on its own cadence
            self._fleet_at = now
        taken = set(self.late_days)
        self.late_days.clear()
        try:
            points += await self._closed_days(set(taken), closed, now)
            if points:
                await self.ingest.submit(points)
        except BaseException:
            # nothing of this pass is stored (a store query failed, or the outbox refused it): the
            # days it was to redo stay to do, and the closed day is closed again at the next pass
            self.late_days |= taken
            raise
        self.last_closed = closed
        self._notice(today)
        self.passes += 1
        n = len(points)
        del points
        await asyncio.to_thread(release_free_memory)  # the pass's arrays are free: give their pages back
        return n

    async def _closed_days(self, redo: set[dt.date], closed: dt.date, now: int) -> list[Point]:
        """Indicators of the days to redo, and of ``closed`` when it is newly closed (with its month and year)."""
        points: list[Point] = []
        if self.last_closed != closed:
            redo.add(closed)  # a newly closed day: it, its month so far and the year to date are redone below
        for month in sorted({(d.year, d.month) for d in redo}):
            first = dt.date(month[0], month[1], 1)
            last = min(closed, _month_end(first))
            points += await self.energy(first, last, (Period.day, Period.month))
        for d in sorted(redo):
            points += await self.fleet(d, d, now)
        years = {d.year for d in redo if d <= closed}
        if self.last_closed != closed:
            years.add(closed.year)
        for y in sorted(years):  # the year to date (or the whole of a past year: a late day, a calendar change)
            points += await self.energy(dt.date(y, 1, 1), min(closed, dt.date(y, 12, 31)), (Period.year,))
        if self.site.vehicles and redo:
            # the months and years of the days redone, from their day rows (stored, and these fresh ones)
            months = {(d.year, d.month) for d in redo if d <= closed}
            points += await self.fleet_periods(months, {y for y, _ in months}, closed, points)
        if self.last_closed != closed:
            points += await self.baselines(closed, points)
        return points

    async def energy(self, first: dt.date, last: dt.date, periods: Sequence[Period], raw: bool = False,
                     chunk_rows: int | None = None) -> list[Point]:
        """Energy rows of ``periods`` over local days first..last. ``raw``: read every reading (a
        history of 15-minute readings), never 15-minute windows of them. ``chunk_rows``: meters per
        chunk (whole trees), default the job's."""
        if not self.meters or last < first:
            return []
        self._note(first, last)
        start = self.cal.midnight_ns(first) - QUARTER_NS
        end = self.cal.midnight_ns(last) + NS_PER_DAY + QUARTER_NS
        now = self.clock.now_ns()
        split = now - now % QUARTER_NS  # start of the quarter in progress
        windows = not raw and self._expected_readings(start, end) > RAW_READINGS_MAX

        async def fetch(ms: Sequence[MeterInfo]) -> ArraySource:
            """One chunk of meters (whole meter trees): the pass reads chunk by chunk, so its working
            set is one chunk's readings whatever the site's size."""
            if windows:
                return await fetch_quarters(self.query, ms, start - QUARTER_NS, end)
            if start < split < end:
                # today so far: the quarters already over as 15-min windows, the one in progress raw, so
                # a pass's working set stays the same size all day (the soak showed RSS following the day)
                src = await fetch_quarters(self.query, ms, start - QUARTER_NS, split)
                return merge_sources(src, await fetch_raw(self.query, ms, split, end))
            return await fetch_raw(self.query, ms, start, end)

        src = LoopSource(fetch, asyncio.get_running_loop())
        report: EnergyReport = await asyncio.to_thread(
            compute_energy_range, src, self.meters, first, last, self.workcal, self.factors, self.cal, self.buildings, periods,
            chunk_rows or self.chunk_rows)
        self.event_log.add(report.events)
        for kind, n in self.event_log.take_new().items():
            self.ingest.count("counter_event", n, kind=kind)
        for a in report.alerts:
            self.event_log.add_alert(a)
        return report.points

    def _expected_readings(self, start: int, end: int) -> float:
        span_s = max(0.0, (min(end, self.clock.now_ns()) - start) / NS)
        return sum(span_s / m.interval_s for m in self.site.meters if not m.virtual)

    async def fleet(self, first: dt.date, last: dt.date, now: int) -> list[Point]:
        """Fleet indicators per vehicle and org, and trips, for local days first..last (``analytics.fleet.jobs``)."""
        if not self.site.vehicles:
            return []
        self._note(first, last)
        infos = vehicle_infos(self.site.vehicles, fences_from_config(self.site.geofences))
        wt = WorkingTime.from_workcal(self.workcal)
        params, _ = params_from_config(self.site.fleet)
        start = self.cal.midnight_ns(first)
        end = min(self.cal.midnight_ns(last) + NS_PER_DAY, now + 1)
        return await run_fleet_chunked(self.query, infos, start, end, wt, now, "day", params)

    # -- history -------------------------------------------------------------------------------
    def closed_day(self, now_ns: int | None = None) -> dt.date:
        """The last local day closed at ``now_ns`` (``settle_s`` after its midnight end)."""
        now = self.clock.now_ns() if now_ns is None else now_ns
        return self.cal.date_of(int(self.cal.local_day_index(now - int(self.site.analytics.settle_s * NS))) - 1)

    async def backfill(self, first: dt.date, last: dt.date, progress: Callable[[str, int], None] | None = None,
                       submit_rows: int = 20_000) -> int:
        """Every indicator of the closed days ``first``..``last`` after a history was imported
        (``edge.bulk``; ``edge backfill``, ``edge demo``), submitted as any pass's points: energy
        (days, months, years) in one chunked pass over the range; fleet a month at a time, each
        month's positions read once and segmented once (``compute_fleet_days``), then the months
        and years from the day rows; then the baselines of ``last``. Afterwards the job takes
        ``last`` as its last closed day, so its next pass computes today only. ``progress(stage,
        n)``: ``n`` more units of ``stage`` done (energy: 1; fleet: days; baselines: 1). Returns
        the points submitted."""
        now = self.clock.now_ns()
        tell = progress or (lambda stage, n: None)
        submitted = 0

        async def submit(points: list[Point]) -> None:
            nonlocal submitted
            for i in range(0, len(points), submit_rows):
                await self.ingest.submit(points[i:i + submit_rows])
            submitted += len(points)

        t0 = time.perf_counter()
        # a history is 15-minute readings: read them as they are (a third of the time of windows over them),
        # a few meter trees at a time (a year of a tree's readings is a few hundred thousand rows to read)
        energy = await self.energy(first, last, (Period.day, Period.month, Period.year), raw=True,
                                   chunk_rows=HISTORY_CHUNK_ROWS)
        t1 = time.perf_counter()
        meter_days = [p for p in energy if p.measurement == "energy_indicator" and p.tags.get("scope") == "meter"
                      and p.tags.get("period") == "day"]
        await submit(energy)
        del energy
        tell("energy", 1)
        log.info("history: energy computed in %.1f s, submitted in %.1f s", t1 - t0, time.perf_counter() - t1)
        t0 = time.perf_counter()
        if self.site.vehicles:
            self._note(first, last)
            infos = vehicle_infos(self.site.vehicles, fences_from_config(self.site.geofences))
            wt = WorkingTime.from_workcal(self.workcal)
            params, _ = params_from_config(self.site.fleet)
            margin = int(params.margin_s * NS)
            days: dict[int, list] = {}
            d = first
            while d <= last:
                end = min(_month_end(d), last)
                n = (end - d).days + 1
                lo = self.cal.midnight_ns(d)
                src = await load_positions(self.query, [v.id for v in infos], lo - margin, lo + n * NS_PER_DAY + margin)
                pts, per_day = await asyncio.to_thread(compute_fleet_days, src, infos, lo, n, wt, now, params)
                del src
                await submit(pts)
                for k, pv in enumerate(per_day):
                    days[lo + k * NS_PER_DAY] = pv
                tell("fleet", n)
                d = end + dt.timedelta(days=1)
            periods: list[Point] = []
            months = sorted({(x.year, x.month) for x in (self.cal.date_of(int(self.cal.local_day_index(t))) for t in days)})
            spans = [("month", dt.date(y, m, 1), min(last, _month_end(dt.date(y, m, 1)))) for y, m in months]
            spans += [("year", dt.date(y, 1, 1), min(last, dt.date(y, 12, 31))) for y in sorted({y for y, _ in months})]
            for period, a, b in spans:
                lo, hi = self.cal.midnight_ns(a), self.cal.midnight_ns(b) + NS_PER_DAY
                periods += period_points([v for t, v in sorted(days.items()) if lo <= t < hi], infos, period, lo,
                                         provisional_calendar=wt.provisional_between(lo, hi))
            await submit(periods)
        log.info("history: fleet in %.1f s", time.perf_counter() - t0)
        t0 = time.perf_counter()
        # the baselines as the service would have written them day by day: each month's as of its
        # last day (its report, its anomalous days), the year's and the day rows as of ``last``
        ends = sorted({min(_month_end(dt.date(y, m, 1)), last) for y, m in _months(first, last)})
        for d in ends:
            await submit(await self.baselines(d, meter_days, day_rows=d == last))
        tell("baselines", 1)
        log.info("history: baselines in %.1f s", time.perf_counter() - t0)
        self.last_closed = last
        self._fleet_at = None
        return submitted

    # -- fleet months and years -----------------------------------------------------------------
    async def fleet_periods(self, months: set[tuple[int, int]], years: set[int], closed: dt.date,
                            fresh: Sequence[Point] = ()) -> list[Point]:
        """Fleet rows of these months and years (to ``closed``) from the vehicles' day rows
        (``analytics.fleet.rollup``): those stored, replaced by ``fresh`` ones (a pass's own, not yet
        stored)."""
        if not self.site.vehicles or not (months or years):
            return []
        infos = vehicle_infos(self.site.vehicles, fences_from_config(self.site.geofences))
        wt = WorkingTime.from_workcal(self.workcal)
        spans = [("month", dt.date(y, m, 1), min(closed, _month_end(dt.date(y, m, 1)))) for y, m in sorted(months)]
        spans += [("year", dt.date(y, 1, 1), min(closed, dt.date(y, 12, 31))) for y in sorted(years)]
        first = min(a for _, a, _ in spans)
        rows = await self.vehicle_days(first, closed, fresh)
        out: list[Point] = []
        for period, a, b in spans:
            if b < a:
                continue
            lo, hi = self.cal.midnight_ns(a), self.cal.midnight_ns(b) + NS_PER_DAY
            days = [v for t, v in sorted(rows.items()) if lo <= t < hi]
            out += period_points(days, infos, period, lo, provisional_calendar=wt.provisional_between(lo, hi))
        return out

    async def vehicle_days(self, first: dt.date, last: dt.date, fresh: Sequence[Point] = ()) -> dict[int, list]:
        """The vehicles' fleet day rows of ``first``..``last`` by day start, as ``VehicleIndicators``."""
        by: dict[tuple[int, str], dict] = {}
        lo, hi = self.cal.midnight_ns(first), self.cal.midnight_ns(last) + NS_PER_DAY
        fields = await self.query.field_keys("fleet_indicator") if hasattr(self.query, "field_keys") else []
        if fields:
            for s in await self.query.raw("fleet_indicator", fields, lo, hi, Where(tags={"scope": "vehicle", "period": "day"})):
                vid = s.tags.get("id", "")
                for t, v in zip(np.asarray(s.times_ns).tolist(), s.values.tolist()):
                    by.setdefault((int(t), vid), {"org": s.tags.get("org", "")})[s.field] = v
        for p in fresh:
            if p.measurement == "fleet_indicator" and p.tags.get("scope") == "vehicle" and p.tags.get("period") == "day" \
                    and lo <= p.time_ns < hi:
                by[(p.time_ns, p.tags["id"])] = {"org": p.tags.get("org", ""), **p.fields}
        out: dict[int, list] = {}
        for (t, vid), f in sorted(by.items()):
            out.setdefault(t, []).append(from_fields(vid, str(f.pop("org")), f))
        return out

    # -- baselines ------------------------------------------------------------------------------
    def weather(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The hourly temperature of ``analytics.weather_csv`` (read again when the file changes), or None."""
        path = self.site.analytics.weather_csv
        if not path:
            return None
        try:
            st = Path(path).stat()
            key = (path, st.st_mtime_ns, st.st_size)
            if self._weather is None or self._weather[0] != key:
                self._weather = (key, parse_temperature_csv(Path(path).read_text(encoding="utf-8")))
        except (OSError, EdgeError) as e:
            if self._weather_failed != str(e):
                log.warning("weather file unreadable: baselines not computed", extra={"path": path, "reason": str(e)})
                self._weather_failed = str(e)
            return None
        self._weather_failed = None
        return self._weather[1]

    async def baselines(self, closed: dt.date, fresh: Sequence[Point] = (), day_rows: bool = True) -> list[Point]:
        """CalTRACK baselines of every physical meter when a day closes (docs/energy.md, "Baselines in
        the service"): for the month so far (``period=month``, fitted on the 365 days before the
        month) and the year so far (``period=year``, on the 365 days before 1 January), savings and
        anomalous days of the month; and day by day the month's model against the use
        (``energy_baseline_day``) over its baseline period and the month so far. Daily use is the
        meters' ``energy_indicator`` day rows (stored, replaced by ``fresh`` ones). Without
        ``analytics.weather_csv`` nothing is computed (said once)."""
        meters = [m for m in self.meters if not m.virtual]
        if not meters:
            return []
        weather = self.weather()
        if weather is None:
            if not self._weather_said and not self.site.analytics.weather_csv:
                log.info("no analytics.weather_csv: weather-normalised baselines are not computed")
                self._weather_said = True
            return []
        temp_t, temp_c = weather
        month_first = closed.replace(day=1)
        year_first = dt.date(closed.year, 1, 1)
        first = min(month_first, year_first) - dt.timedelta(days=365)
        use = await self.daily_use(meters, first, closed, fresh)
        out: list[Point] = []
        for period, rep_first in (("month", month_first), ("year", year_first)):
            base = (rep_first - dt.timedelta(days=365), rep_first - dt.timedelta(days=1))
            report = await asyncio.to_thread(baselines_from_days, use, meters, base, (rep_first, closed), temp_t, temp_c,
                                             self.cal)
            pts = baseline_points(report, meters, self.cal.midnight_ns(rep_first), period)
            if period == "year":  # the month's days are judged against the month's model, not again here
                pts = [p for p in pts if p.measurement != "energy_anomaly"]
            elif day_rows:
                pts += await asyncio.to_thread(baseline_day_points, report, meters, use, base[0], closed, rep_first,
                                               temp_t, temp_c, self.cal)
            out += pts
        return out

    async def daily_use(self, meters: Sequence[MeterInfo], first: dt.date, last: dt.date,
                        fresh: Sequence[Point] = ()) -> DailyUse:
        """The meters' day rows (``consumption_kwh`` or ``consumption_m3``, ``coverage``) over first..last."""
        fd = self.cal.day_of(first)
        use = DailyUse(fd, (last - first).days + 1)
        lo, hi = self.cal.midnight_ns(first), self.cal.midnight_ns(last) + NS_PER_DAY
        ids = tuple(sorted(m.id for m in meters))
        cols: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
        for s in await self.query.raw("energy_indicator", ["consumption_kwh", "consumption_m3", "coverage"], lo, hi,
                                      Where(tags={"scope": "meter", "period": "day", "id": ids})):
            cols[(s.tags.get("id", ""), s.field)] = (np.asarray(s.times_ns, dtype=np.int64), np.asarray(s.values, dtype=float))
        for m in meters:
            unit = "consumption_kwh" if CARRIER_FIELD[m.carrier][1] == "kWh" else "consumption_m3"
            t, v = cols.get((m.id, unit), (np.empty(0, np.int64), np.empty(0)))
            tc, c = cols.get((m.id, "coverage"), (np.empty(0, np.int64), np.empty(0)))
            cov = np.full(len(t), np.nan)
            if len(tc):
                i = np.clip(np.searchsorted(tc, t), 0, len(tc) - 1)
                cov = np.where(tc[i] == t, c[i], np.nan)
            use.add(m.id, self.cal.local_day_index(t), v, cov)
        by_meter: dict[str, list[Point]] = {}
        for p in fresh:
            if p.measurement == "energy_indicator" and p.tags.get("scope") == "meter" and p.tags.get("period") == "day" \
                    and lo <= p.time_ns < hi:
                by_meter.setdefault(p.tags["id"], []).append(p)
        for m in meters:
            ps = by_meter.get(m.id)
            if ps:
                unit = "consumption_kwh" if CARRIER_FIELD[m.carrier][1] == "kWh" else "consumption_m3"
                use.add(m.id, self.cal.local_day_index(np.array([p.time_ns for p in ps], dtype=np.int64)),
                        np.array([float(p.fields.get(unit, np.nan)) for p in ps]),
                        np.array([float(p.fields.get("coverage", np.nan)) for p in ps]))
        return use


def _months(first: dt.date, last: dt.date) -> list[tuple[int, int]]:
    out = []
    y, m = first.year, first.month
    while (y, m) <= (last.year, last.month):
        out.append((y, m))
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


def _month_end(first: dt.date) -> dt.date:
    nxt = dt.date(first.year + (first.month == 12), first.month % 12 + 1, 1)
    return nxt - dt.timedelta(days=1)
