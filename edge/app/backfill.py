"""A site's history before its live data: simulated readings and positions, then the indicators over them.

``backfill(service, meters, vehicles, days)`` (``edge demo``, ``edge backfill``):

1. **weather**: the load model's hourly outdoor temperature (the real school's 2018 year mapped
   onto these dates by hour of the year, ``simulators.load.hourly_temperature``) written as the
   CSV ``analytics.weather_csv`` names, from a year before the first day (weather is older than the
   meters) to ``WEATHER_AHEAD_DAYS`` ahead (a demo left running keeps its baselines);
2. **meters**: every meter's counter on the quarter-hour from the load model
   (``simulators.history.counter_history``), with the tags the Modbus collector gives the meter's
   readings, so history and live readings are one series;
3. **vehicles**: every vehicle's positions from ``simulators.history.fleet_history`` (outings on the
   Chinese working calendar, back at the yard at the end), tagged as the GPS collector tags them;
4. both written by the bulk import (``edge.bulk``: straight into the store, not through the outbox);
5. **indicators**: ``IndicatorJob.backfill`` over the closed days (energy, fleet, months and years,
   baselines), through the outbox like every pass's points.

``progress`` is told of each stage and its steps (``edge demo`` shows a rich progress bar).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from analytics.energy.factors import CARRIER_FIELD
from edge.bulk import BulkWriter, Columns
from simulators.history import Fixes, MeterModel, VehicleModel, counter_history, fleet_history
from simulators.load import hourly_temperature

NS = 1_000_000_000
DAY_NS = 86_400 * NS
WEATHER_AHEAD_DAYS = 60
WEATHER_BEHIND_DAYS = 366   # weather is older than the meters: a baseline period before them lacks use, not temperature
POSITION_FIELDS = ("lat", "lon", "speed_kmh", "acc", "odometer_km")  # what the fleet pass reads


class Progress(Protocol):
    def stage(self, name: str, total: float) -> None: ...

    def advance(self, name: str, n: float = 1) -> None: ...


class _Silent:
    def stage(self, name: str, total: float) -> None:
        pass

    def advance(self, name: str, n: float = 1) -> None:
        pass


@dataclass
class BackfillReport:
    days: int
    first_day: str
    last_day: str
    end_ns: int = 0                  # the history's last instant: live data carries on from here
    readings: int = 0
    positions: int = 0
    outings: int = 0
    indicator_points: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    cpu_s: float = 0.0
    counters_end: dict[str, float] = field(default_factory=dict)   # meter id -> counter at the end
    odometers_end_km: dict[str, float] = field(default_factory=dict)

    @property
    def total_s(self) -> float:
        return round(sum(self.seconds.values()), 2)

    def summary(self) -> dict:
        return {"days": self.days, "first_day": self.first_day, "last_day": self.last_day, "readings": self.readings,
                "positions": self.positions, "outings": self.outings, "indicator_points": self.indicator_points,
                "seconds": {k: round(v, 2) for k, v in self.seconds.items()}, "total_s": self.total_s,
                "cpu_s": round(self.cpu_s, 2)}


def write_weather(path: Path, first_ns: int, hours: int) -> None:
    """The hourly temperature CSV (``local_time,temp_c``, naive local times) baselines read."""
    t, temp = hourly_temperature(first_ns, hours)
    local = (t // NS + 8 * 3600).astype("datetime64[s]").astype(str)
    lines = ["local_time,temp_c"] + [f"{a[:16]},{v:.2f}" for a, v in zip(local.tolist(), temp.tolist())]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def meter_columns(ids: Sequence[str], times_ns: np.ndarray, values: np.ndarray, tags: dict[str, dict[str, str]],
                  carriers: dict[str, str]) -> list[Columns]:
    """One series per meter: its carrier's counter field, tagged as its live readings are."""
    return [Columns("meter", tags[mid], times_ns, {CARRIER_FIELD[carriers[mid]][0]: values[r]})
            for r, mid in enumerate(ids)]


def position_columns(f: Fixes, orgs: dict[str, str]) -> list[Columns]:
    """One series per vehicle (tags ``vehicle``, ``org``, as the GPS collector writes them)."""
    out = []
    bounds = np.flatnonzero(np.r_[True, np.diff(f.vehicle) != 0, True])
    for a, b in zip(bounds[:-1], bounds[1:]):
        vid = f.ids[int(f.vehicle[a])]
        out.append(Columns("position", {"vehicle": vid, "org": orgs[vid]}, f.t_ns[a:b],
                           {k: getattr(f, k)[a:b] for k in POSITION_FIELDS}))
    return out


async def backfill(service, meters: Sequence[MeterModel], vehicles: Sequence[VehicleModel], days: int,
                   end_ns: int | None = None, progress: Progress | None = None, seed: int = 7) -> BackfillReport:
    """Write ``days`` closed days of history (and today until ``end_ns``, default now) into
    ``service``'s store and compute the indicators over them. ``service``: an ``EdgeService`` not yet
    started (its deliverer delivers the indicators once it is). Meters and vehicles not in the
    service's site are refused (``ValueError``)."""
    ui = progress or _Silent()
    job = service.indicators
    end_ns = service.clock.now_ns() if end_ns is None else int(end_ns)
    last = job.closed_day(end_ns)
    first = last - dt.timedelta(days=days - 1)
    start_ns = job.cal.midnight_ns(first)
    rep = BackfillReport(days, first.isoformat(), last.isoformat(), end_ns)
    cpu0 = time.process_time()
    tags = {p.meter.id: dict(p.tags) for p in service.modbus_plans}
    site_vehicles = {v.id: v.org for v in service.site.vehicles}
    unknown = [m.id for m in meters if m.id not in tags] + [v.id for v in vehicles if v.id not in site_vehicles]
    if unknown:
        raise ValueError(f"not in the site: {', '.join(unknown)}")
    writer = BulkWriter.for_sink(service.sink)

    t0 = time.perf_counter()
    ui.stage("weather", 1)
    wpath = service.site.analytics.weather_csv
    if wpath:
        await asyncio.to_thread(write_weather, Path(wpath), start_ns - WEATHER_BEHIND_DAYS * DAY_NS,
                                (days + WEATHER_BEHIND_DAYS + 1 + WEATHER_AHEAD_DAYS) * 24)
    ui.advance("weather")
    rep.seconds["weather"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    ui.stage("meters", len(meters))
    hist = await asyncio.to_thread(counter_history, list(meters), start_ns, end_ns)
    carriers = {m.id: m.carrier for m in meters}
    cols = meter_columns(hist.ids, hist.times_ns, hist.values, tags, carriers)
    rep.readings = await writer.write(cols, lambda n: ui.advance("meters"))
    rep.counters_end = dict(zip(hist.ids, hist.end_values.tolist()))
    del cols, hist
    rep.seconds["meters"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    if vehicles:
        ui.stage("vehicles", len(vehicles))
        fixes = await asyncio.to_thread(fleet_history, list(vehicles), start_ns, end_ns, seed)
        rep.outings = fixes.outings
        rep.odometers_end_km = dict(zip(fixes.ids, fixes.end_odometer_km))
        cols = position_columns(fixes, site_vehicles)
        rep.positions = await writer.write(cols, lambda n: ui.advance("vehicles"))
        del cols, fixes
    rep.seconds["vehicles"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    ui.stage("indicators", 2 + (days if service.site.vehicles else 0))
    rep.indicator_points = await job.backfill(first, last, lambda stage, n: ui.advance("indicators", n))
    rep.seconds["indicators"] = time.perf_counter() - t0
    rep.cpu_s = time.process_time() - cpu0
    return rep
