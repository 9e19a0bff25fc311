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

``site_models(site)`` gives any site's meters and vehicles a model (``edge backfill -c site.yaml``,
for a test bench or an integrator's demo): each physical electricity meter without a meter behind it an
office load of its own, a meter with meters behind it their sum plus 15 % unmetered and 2 % losses,
water and gas meters the simulator's flows, each vehicle its home geofence's centre as its yard.
Heat meters have no model and are left out (named in the report).
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
from simulators.load import OfficeLoad, SumLoad, hourly_temperature

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


LEAF_PEAK_KW = 12.0             # a sub-metered circuit's working-day peak when the site says nothing
DEFAULT_YARD = (30.2741, 120.1551)


def site_models(site) -> tuple[list[MeterModel], list[VehicleModel], list[str]]:
    """Models for a site's meters and vehicles (see the module's docstring); and the meters left out."""
    phys = [m for m in site.meters if not m.virtual]
    ids = {m.id for m in phys}
    kids: dict[str, list] = {}
    for m in phys:
        if m.parent in ids:
            kids.setdefault(m.parent, []).append(m)
    loads: dict[str, OfficeLoad | SumLoad] = {}

    def load_of(m, seed: int):
        if m.id in loads:
            return loads[m.id]
        children = [c for c in kids.get(m.id, []) if c.carrier.value == "electricity"]
        if children:
            parts = [load_of(c, seed * 7 + k + 1) for k, c in enumerate(children)]
            peak = sum(x.peak_kw for x in parts)
            out = SumLoad(parts, unmetered=OfficeLoad(0.15 * peak, seed=seed * 7 + 99), loss_share=0.02)
        else:
            peak = 0.3 * m.rated_kw if m.rated_kw else LEAF_PEAK_KW
            out = OfficeLoad(peak, seed=seed)
        loads[m.id] = out
        return out

    meters, skipped = [], []
    for i, m in enumerate(phys):
        carrier = m.carrier.value
        if carrier == "electricity":
            meters.append(MeterModel(m.id, carrier, load_of(m, i + 1), seed=i + 1, start=1000.0 + 97.0 * i))
        elif carrier in ("water", "gas"):
            meters.append(MeterModel(m.id, carrier, None, seed=1000 * (i + 1) + 1, start=100.0 + 7.0 * i))
        else:
            skipped.append(m.id)
    fences = {g.name: g for g in site.geofences}

    def yard(v) -> tuple[float, float]:
        g = fences.get(v.home) if v.home else None
        if g is not None and g.circle is not None:
            return g.circle.lat, g.circle.lon
        if g is not None and g.polygon:
            return (sum(p[0] for p in g.polygon) / len(g.polygon), sum(p[1] for p in g.polygon) / len(g.polygon))
        return DEFAULT_YARD

    vehicles = [VehicleModel(v.id, yard(v), 0.6, 10_000.0 + 1000.0 * k) for k, v in enumerate(site.vehicles)]
    return meters, vehicles, skipped
