"""The service's indicator job: reads series through the query layer, computes, writes Points back.

This is the spine's job (today so far, per meter and per vehicle); the full energy and fleet jobs
(``analytics.energy_jobs``, ``analytics.fleet_jobs``) compute the complete indicator sets. Each
pass recomputes "today" in Asia/Shanghai, so late data is taken in on the next pass; a point's
identity (measurement, tags, period start) makes the rewrite an overwrite, not a duplicate.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import numpy as np

from analytics.counters import CounterSpec, counter_deltas
from analytics.geo import step_lengths_m
from analytics.tracks import CleanParams, Tracks, clean
from edge.clock import SYSTEM_CLOCK, Clock
from edge.config import Carrier, Site
from edge.ingest import Ingest
from edge.point import Point
from edge.query import Query, Where

log = logging.getLogger(__name__)

COUNTER_FIELD = {
    Carrier.electricity: ("active_energy_import_kwh", "consumption_kwh"),
    Carrier.water: ("water_volume_m3", "consumption_m3"),
    Carrier.gas: ("gas_volume_m3", "consumption_m3"),
    Carrier.heat: ("heat_energy_kwh", "consumption_kwh"),
}


def day_bounds(now_ns: int, tz: str = "Asia/Shanghai") -> tuple[int, int]:
    """[start, end) of the local calendar day that contains ``now_ns``, in ns UTC."""
    z = ZoneInfo(tz)
    local = dt.datetime.fromtimestamp(now_ns / 1e9, tz=z)
    start = dt.datetime.combine(local.date(), dt.time(0), tzinfo=z)
    end = dt.datetime.combine(local.date() + dt.timedelta(days=1), dt.time(0), tzinfo=z)
    return int(start.timestamp()) * 10**9, int(end.timestamp()) * 10**9


def consumption(times_ns: np.ndarray, values: np.ndarray) -> tuple[float, int]:
    """Energy counted by a cumulative register over the readings given, and the number of flagged intervals.

    Deltas, never raw readings: wraps, resets and jumps are handled by ``analytics.counters``.
    """
    if len(times_ns) < 2:
        return 0.0, 0
    order = np.argsort(times_ns, kind="stable")
    t, v = np.asarray(times_ns)[order], np.asarray(values, dtype=float)[order]
    keep = np.concatenate([[True], np.diff(t) > 0])
    d = counter_deltas(t[keep], v[keep], CounterSpec())
    return float(d.delta.sum()), int((d.status >= 2).sum())


def track_distance_km(tracks: Tracks, now_ns: int) -> float:
    """Length of a cleaned track (haversine over WGS-84), km."""
    c = clean(tracks, now_ns, CleanParams())
    return float(step_lengths_m(c.tracks.lat, c.tracks.lon).sum() / 1000.0)


@dataclass
class IndicatorJob:
    site: Site
    query: Query
    ingest: Ingest
    interval_s: float = 60.0
    clock: Clock = SYSTEM_CLOCK
    passes: int = 0

    async def run(self) -> None:
        while True:
            await self.clock.sleep(self.interval_s)
            try:
                await self.compute_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("indicator pass failed; next pass in interval_s", extra={"interval_s": self.interval_s})
                self.ingest.count("indicator_pass_failed")

    async def compute_once(self) -> int:
        """One pass over today; returns how many indicator points were written."""
        now = self.clock.now_ns()
        start, end = day_bounds(now, self.site.analytics.timezone)
        points = await self.today_energy(start, min(end, now + 1)) + await self.today_distance(start, min(end, now + 1), now)
        if points:
            await self.ingest.submit(points)
        self.passes += 1
        return len(points)

    async def today_energy(self, start: int, end: int) -> list[Point]:
        out: list[Point] = []
        for m in self.site.meters:
            field, out_field = COUNTER_FIELD[m.carrier]
            series = await self.query.raw("meter", [field], start, end, Where(tags={"meter": m.id}))
            if not series or len(series[0]) == 0:
                continue
            total, flagged = consumption(series[0].times_ns, series[0].values)
            tags = {"scope": "meter", "id": m.id, "org": self.site.meter_org(m), "period": "day", "carrier": m.carrier.value}
            if m.building:
                tags["building"] = m.building
            out.append(Point("energy_indicator", tags, {out_field: round(total, 6), "flagged_intervals": flagged,
                                                        "readings": len(series[0])}, start))
        return out

    async def today_distance(self, start: int, end: int, now: int) -> list[Point]:
        """Today's fleet indicators per vehicle and org, and today's trips (``analytics.fleet_jobs``)."""
        if not self.site.vehicles:
            return []
        from analytics.fleet import WorkingTime, vehicle_infos
        from analytics.fleet_jobs import params_from_config, run_fleet
        from analytics.geo import fences_from_config
        from analytics.workcal import WorkCalendar
        infos = vehicle_infos(self.site.vehicles, fences_from_config(self.site.geofences))
        wt = WorkingTime.from_workcal(WorkCalendar.from_config(self.site.analytics))
        params, _ = params_from_config(self.site.fleet)
        points, _report = await run_fleet(self.query, infos, start, end, wt, now, "day", params)
        return points
