"""Seeded history for a site: meter counters from the load model, vehicle trips on the working calendar.

What ``edge backfill`` (and ``edge demo``) write before the live simulators take over, so a site
starts with a year of data. Pure numpy, no I/O, no clock: times in, arrays out.

**Meters.** A counter is the integral of its meter's rate: the load model's power (``OfficeLoad``,
``SumLoad``: the real school's profile and weather, ``simulators.load``) for electricity, and the
meter simulator's water and gas flows (``simulators.meters.SimMeter``). The rate is evaluated every
``substep_s`` (60 s: the model's noise moves on a minute's scale, its profile on the hour) and
integrated with the trapezoid rule, as ``SimMeter`` integrates between reads; the counter is
sampled every ``step_s`` (900 s) on the quarter-hour, as a meter's 15-minute load-profile register
would be read, with the rate at that instant (the reading's power or flow register). The
phase-to-phase noise of the simulated three-phase registers (±2 %) is left out.

**Vehicles.** Each vehicle sleeps at its yard and goes on *outings*: to a junction of the road grid
(``simulators.roads``: the live fleet's junctions, over a wider area, ±10 km) and back, parked at the destination (ACC off) in between.
Working days (statutory holidays and 调休 weekends from ``chinese_calendar``, plain weekdays beyond
its years) have 0-4 outings by the vehicle's own activity, mostly in working hours, now and then an
evening one; ordinary weekends and statutory holidays have an occasional one (duty, emergencies),
so off-hours, weekend and holiday use show in the indicators. While driving the terminal reports
every ``drive_every_s`` (30 s) with GPS noise of a few metres, stopping at some junctions (red
lights, engine on); when the engine goes off it reports once, then every ``park_every_s`` (an hour: the
terminal asleep).
Every outing ends back at the yard before ``end_ns``, so the live fleet starts where history ends.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np

from simulators.load import (BuildingShape, ConditionsMany, OfficeLoad, SumLoad, conditions, conditions_many, school_shape,
                             smooth_noise_many)
from simulators.roads import EARTH_M_PER_DEG, SPEED_KMH, Grid

NS = 1_000_000_000
TZ_OFFSET_NS = 8 * 3600 * NS
QUARTER_S = 900


# --- meters ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MeterModel:
    """What drives one meter's counter: ``load`` (kW) for electricity; for water and gas the flow of
    ``SimMeter`` with its ``seed`` (the noise; ``SimMeter.seed`` of the live simulator). ``start``:
    the counter at the first instant of the history."""

    id: str
    carrier: str
    load: OfficeLoad | SumLoad | EventLoad | None = None
    seed: int = 0
    start: float = 0.0


@dataclass(frozen=True)
class LoadEvent:
    """A circuit drawing ``factor`` times its model plus ``extra_kw`` in ``[start_ns, end_ns)``: something
    the history tells (a lighting retrofit, HVAC left on day and night by a schedule fault), for the
    savings and the anomalies to find."""

    start_ns: int
    end_ns: int
    extra_kw: float = 0.0
    factor: float = 1.0
    what: str = ""


class EventLoad:
    """A load with ``LoadEvent``s applied (history only: the live simulators run the plain load)."""

    def __init__(self, load: OfficeLoad, events: Sequence[LoadEvent]) -> None:
        self.load, self.events = load, tuple(events)
        self.shape, self.seed, self.peak_kw = load.shape, load.seed, load.peak_kw

    def _apply(self, t: np.ndarray, kw: np.ndarray) -> np.ndarray:
        for e in self.events:
            on = (t >= e.start_ns) & (t < e.end_ns)
            kw = np.where(on, kw * e.factor + e.extra_kw, kw)
        return kw

    def power_kw(self, t_ns: int) -> float:
        return float(self._apply(np.array([t_ns], dtype=np.int64), np.array([self.load.power_kw(t_ns)]))[0])

    def power_kw_many(self, t_ns: np.ndarray, cond: ConditionsMany | None = None) -> np.ndarray:
        return self._apply(np.asarray(t_ns), self.load.power_kw_many(t_ns, cond))


def water_flow_m3_h(c: ConditionsMany, t_ns: np.ndarray, seed: int) -> np.ndarray:
    """``SimMeter``'s water flow (m³/h), vectorised."""
    return 0.05 + 2.5 * c.occupancy * (1 + 0.1 * smooth_noise_many(seed, np.asarray(t_ns) / 1e9, 30.0))


def gas_flow_m3_h(c: ConditionsMany, t_ns: np.ndarray) -> np.ndarray:
    """``SimMeter``'s gas flow at standard conditions (m³/h): heating below 16 °C by occupancy, the
    canteen's cooking 10:30-12:30 on working days, a pilot flow."""
    heating = np.maximum(0.0, 16.0 - c.temp_c) * 0.8 * (0.3 + 0.7 * c.occupancy)
    canteen = np.where(c.workday & (c.local_hour >= 10.5) & (c.local_hour < 12.5), 6.0, 0.0)
    return 0.2 + heating + canteen


def rate(m: MeterModel, c: ConditionsMany, t_ns: np.ndarray) -> np.ndarray:
    """The meter's rate (kW, or m³/h) at every instant."""
    if m.carrier == "electricity":
        if m.load is None:
            raise ValueError(f"meter {m.id}: an electricity meter needs a load")
        return m.load.power_kw_many(t_ns, c)
    if m.carrier == "water":
        return water_flow_m3_h(c, t_ns, m.seed)
    if m.carrier == "gas":
        return gas_flow_m3_h(c, t_ns)
    raise ValueError(f"meter {m.id}: no history model for carrier {m.carrier!r}")


@dataclass(frozen=True)
class CounterHistory:
    """Counters on a shared time axis: ``times_ns`` (n,), ``values`` (meters, n), the meters' rates at
    those instants (kW or m³/h, what a reading's power or flow register shows), and each counter at
    ``end_ns`` (the live simulator continues from there)."""

    ids: list[str]
    times_ns: np.ndarray
    values: np.ndarray
    end_ns: int
    end_values: np.ndarray
    rates: np.ndarray | None = None


def counter_history(models: Sequence[MeterModel], start_ns: int, end_ns: int, step_s: int = QUARTER_S,
                    substep_s: int = 60, shape: BuildingShape | None = None) -> CounterHistory:
    """Each meter's counter every ``step_s`` on the step's boundaries in ``[start_ns, end_ns)`` (the
    first at the first boundary at or after ``start_ns``), from ``start`` plus the integral of its
    rate since that boundary; and every counter at ``end_ns``."""
    step, sub = step_s * NS, substep_s * NS
    if step % sub:
        raise ValueError("step_s must be a multiple of substep_s")
    first = -(-int(start_ns) // step) * step
    k = step // sub
    n_sub = max(0, (int(end_ns) - first) // sub)
    grid = first + np.arange(n_sub + 1, dtype=np.int64) * sub          # substep instants from the first sample
    tail = int(end_ns) - int(grid[-1])                                  # the part of a substep before end_ns
    shape = shape or school_shape()
    c = conditions_many(np.r_[grid, int(end_ns)], shape)
    t_all = np.r_[grid, int(end_ns)]
    sample = np.arange(0, n_sub + 1, k)
    sample = sample[grid[sample] < end_ns]
    values = np.empty((len(models), len(sample)))
    rates = np.empty((len(models), len(sample)))
    end_values = np.empty(len(models))
    h = sub / 3.6e12  # a substep in hours
    for r, m in enumerate(models):
        x = rate(m, c, t_all)
        cum = np.concatenate([[0.0], np.cumsum((x[:-2] + x[1:-1]) / 2 * h)])   # at each substep instant
        values[r] = m.start + cum[sample]
        rates[r] = x[sample]
        end_values[r] = m.start + cum[-1] + (x[-2] + x[-1]) / 2 * (tail / 3.6e12)
    return CounterHistory([m.id for m in models], grid[sample], values, int(end_ns), end_values, rates)


def integral(model: MeterModel, start_ns: int, end_ns: int, every_s: float = 10.0) -> float:
    """The rate's integral over ``[start_ns, end_ns)`` evaluated point by point with the live simulator's
    scalar model (every ``every_s``, trapezoid): the reference the history is checked against."""
    t = np.arange(int(start_ns), int(end_ns) + 1, int(every_s * NS), dtype=np.int64)
    if model.carrier == "electricity":
        x = np.array([model.load.power_kw(int(ti)) for ti in t])
    else:
        c = [conditions(int(ti)) for ti in t]
        cm = ConditionsMany(np.array([x.load_frac for x in c]), np.array([x.occupancy for x in c]),
                            np.array([x.temp_c for x in c]), np.array([x.workday for x in c]),
                            ((t + TZ_OFFSET_NS) % (86400 * NS)) / 3.6e12)
        x = rate(model, cm, t)
    return float(np.sum((x[:-1] + x[1:]) / 2) * every_s / 3600.0)


# --- vehicles --------------------------------------------------------------------------------------


HISTORY_GRID_HALF = 25   # the live fleet's grid (same junctions), wider: outings across the city, ±10 km


@dataclass(frozen=True)
class VehicleModel:
    id: str
    yard: tuple[float, float]     # lat, lon of its home
    activity: float = 0.7         # 0..1: how busy it is on a working day
    odometer_km: float = 20_000.0


@dataclass(frozen=True)
class FleetHistoryParams:
    drive_every_s: float = 30.0
    park_every_s: float = 3600.0      # the terminal asleep, engine off: an hourly report
    gps_sigma_m: float = 3.0
    evening_share: float = 0.08       # of working-day outings, leaving 18:00-21:00
    weekend_outing_p: float = 0.06    # per vehicle and ordinary rest day
    holiday_outing_p: float = 0.06    # per vehicle and statutory holiday
    dwell_min_s: float = 20 * 60.0
    dwell_max_s: float = 150 * 60.0
    light_p: float = 0.25             # a red light at a junction
    min_km: float = 1.5               # destinations at least this far (grid distance)


@dataclass(frozen=True)
class Fixes:
    """Positions of many vehicles: parallel arrays, grouped by vehicle and time-ordered within each."""

    vehicle: np.ndarray      # int index into ``ids``
    ids: list[str]
    t_ns: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    speed_kmh: np.ndarray
    heading_deg: np.ndarray
    acc: np.ndarray          # bool
    odometer_km: np.ndarray
    outings: int = 0
    end_odometer_km: tuple[float, ...] = ()

    def __len__(self) -> int:
        return len(self.t_ns)


@lru_cache(maxsize=4096)
def day_kind(d: dt.date) -> str:
    """'workday', 'weekend' or 'holiday' (statutory, 法定节假日) from ``chinese_calendar``; beyond its
    years Monday-Friday are workdays and there are no statutory holidays."""
    try:
        import chinese_calendar

        if chinese_calendar.is_workday(d):
            return "workday"
        on_holiday, name = chinese_calendar.get_holiday_detail(d)
        return "holiday" if on_holiday and name is not None else "weekend"
    except (NotImplementedError, ImportError, ValueError):
        return "workday" if d.weekday() < 5 else "weekend"


def _leg(grid: Grid, a: tuple[int, int], b: tuple[int, int], t0_s: float, rng: np.random.Generator,
         p: FleetHistoryParams) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, float, float]:
    """One drive from junction ``a`` to ``b`` starting at ``t0_s`` (epoch s): fixes every
    ``drive_every_s`` (times, x, y, speed km/h, heading) from the start to the arrival inclusive,
    the arrival time and the distance (m)."""
    route = grid.route(a, b)
    pts = [grid.node_xy(*a)] + [grid.node_xy(*n) for n, _ in route]
    xy = np.asarray(pts, dtype=np.float64)
    seg = np.hypot(np.diff(xy[:, 0]), np.diff(xy[:, 1]))
    kinds = [kind for _, kind in route]
    lo = np.array([SPEED_KMH[k][0] for k in kinds])
    hi = np.array([SPEED_KMH[k][1] for k in kinds])
    v = rng.uniform(lo, hi) / 3.6                                   # m/s per segment
    stop = np.where(rng.random(len(seg)) < p.light_p, rng.uniform(10, 60, len(seg)), 0.0)
    stop[-1] = 0.0
    # a timeline of knots: (time, distance) driving each segment, then its stop at the junction
    drive_t = seg / v
    knots_t = np.zeros(2 * len(seg) + 1)
    knots_d = np.zeros(2 * len(seg) + 1)
    cum_d = np.concatenate([[0.0], np.cumsum(seg)])
    t = 0.0
    for i in range(len(seg)):
        t += drive_t[i]
        knots_t[2 * i + 1], knots_d[2 * i + 1] = t, cum_d[i + 1]
        t += stop[i]
        knots_t[2 * i + 2], knots_d[2 * i + 2] = t, cum_d[i + 1]
    total_t = t
    ts = np.arange(0.0, total_t, p.drive_every_s)
    ts = np.r_[ts, total_t]
    d = np.interp(ts, knots_t, knots_d)
    x = np.interp(d, cum_d, xy[:, 0])
    y = np.interp(d, cum_d, xy[:, 1])
    k = np.clip(np.searchsorted(knots_t, ts, side="right") - 1, 0, len(knots_t) - 2)
    moving = (k % 2 == 0) & (ts < total_t)                         # on a segment, not at a light
    si = np.minimum(k // 2, len(seg) - 1)
    speed = np.where(moving, v[si] * 3.6, 0.0)
    dx, dy = np.diff(xy[:, 0])[si], np.diff(xy[:, 1])[si]
    heading = (np.degrees(np.arctan2(dx, dy)) + 360.0) % 360.0
    return t0_s + ts, x, y, speed, heading, t0_s + total_t, float(cum_d[-1])


def _random_goal(grid: Grid, home: tuple[int, int], rng: np.random.Generator, p: FleetHistoryParams) -> tuple[int, int]:
    h = grid.half
    for _ in range(20):
        g = (int(rng.integers(-h, h + 1)), int(rng.integers(-h, h + 1)))
        if (abs(g[0] - home[0]) + abs(g[1] - home[1])) * grid.spacing_m >= p.min_km * 1000:
            return g
    return (grid.clamp(home[0] + 6), home[1])


def _outing_starts(kind: str, activity: float, rng: np.random.Generator, p: FleetHistoryParams) -> list[float]:
    """Local hours at which the day's outings leave (not yet checked for overlaps)."""
    if kind == "workday":
        probs = np.array([1 - activity, activity * 0.25, activity * 0.35, activity * 0.25, activity * 0.15])
        probs = probs / probs.sum()
        n = int(rng.choice(len(probs), p=probs))
        hours = sorted(float(rng.uniform(8.5, 16.0)) for _ in range(n))
        if rng.random() < p.evening_share * (1 + n):
            hours.append(float(rng.uniform(18.0, 21.0)))
        return hours
    pr = p.holiday_outing_p if kind == "holiday" else p.weekend_outing_p
    return [float(rng.uniform(9.0, 17.0))] if rng.random() < pr else []


def _parked(parts: list, p: FleetHistoryParams, t_a: float, t_b: float, x: float, y: float, heading: float,
            odo: float) -> None:
    """A vehicle parked from ``t_a`` to ``t_b`` (exclusive): ACC off at ``t_a`` (a report), then a report
    every ``park_every_s``."""
    ts = np.arange(t_a, t_b, p.park_every_s)
    if len(ts):
        parts.append((ts, np.full(len(ts), x), np.full(len(ts), y), np.zeros(len(ts)), np.full(len(ts), heading),
                      np.zeros(len(ts), dtype=bool), np.full(len(ts), odo)))


def fleet_history(vehicles: Sequence[VehicleModel], start_ns: int, end_ns: int, seed: int = 7,
                  base: tuple[float, float] = (30.2741, 120.1551), params: FleetHistoryParams = FleetHistoryParams(),
                  grid: Grid | None = None) -> Fixes:
    """Every vehicle's fixes in ``[start_ns, end_ns)``: parked at its yard (the junction nearest to it)
    at ``start_ns``, outings by day (``day_kind``), back at the yard at ``end_ns``."""
    p = params
    grid = grid or Grid(base[0], base[1], half=HISTORY_GRID_HALF)
    rng = np.random.default_rng(seed)
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("v", "t", "x", "y", "s", "h", "a", "o")}
    outings = 0
    end_odo = []
    first_day = (int(start_ns) + TZ_OFFSET_NS) // (86400 * NS)
    last_day = (int(end_ns) - 1 + TZ_OFFSET_NS) // (86400 * NS)
    t_end = int(end_ns) / NS
    for vi, veh in enumerate(vehicles):
        home = grid.nearest_node(*veh.yard)
        hx, hy = grid.node_xy(*home)
        odo = veh.odometer_km
        t_free = int(start_ns) / NS                                  # parked at the yard from here
        parts: list[tuple] = []

        heading = 0.0
        x_at, y_at = hx, hy
        for day in range(first_day, last_day + 1):
            d = dt.date(1970, 1, 1) + dt.timedelta(days=int(day))
            midnight = day * 86400 - TZ_OFFSET_NS / NS
            for hour in _outing_starts(day_kind(d), veh.activity, rng, p):
                leave = midnight + hour * 3600
                if leave < t_free + 600:
                    continue
                goal = _random_goal(grid, home, rng, p)
                t1, x1, y1, s1, h1, arrive, dist1 = _leg(grid, home, goal, leave, rng, p)
                dwell = float(rng.uniform(p.dwell_min_s, p.dwell_max_s))
                t2, x2, y2, s2, h2, back, dist2 = _leg(grid, goal, home, arrive + dwell, rng, p)
                if back + 60 >= t_end:
                    break                                           # history ends with everyone home
                _parked(parts, p, t_free, leave, x_at, y_at, heading, odo)
                o1 = odo + np.interp(np.arange(len(t1)), [0, len(t1) - 1], [0, dist1 / 1000])
                parts.append((t1, x1, y1, s1, h1, np.ones(len(t1), dtype=bool), o1))
                odo += dist1 / 1000
                _parked(parts, p, arrive + 1, arrive + dwell, x1[-1], y1[-1], float(h1[-1]), odo)
                o2 = odo + np.interp(np.arange(len(t2)), [0, len(t2) - 1], [0, dist2 / 1000])
                parts.append((t2, x2, y2, s2, h2, np.ones(len(t2), dtype=bool), o2))
                odo += dist2 / 1000
                heading = float(h2[-1])
                x_at, y_at = x2[-1], y2[-1]
                t_free = back + 1
                outings += 1
        _parked(parts, p, t_free, t_end, x_at, y_at, heading, odo)
        end_odo.append(odo)
        if not parts:
            continue
        for k, i in zip("txyshao", range(7)):
            cols[k].append(np.concatenate([q[i] for q in parts]))
        cols["v"].append(np.full(len(cols["t"][-1]), vi, dtype=np.int32))
    if not cols["t"]:
        z = np.zeros(0)
        return Fixes(np.zeros(0, np.int32), [v.id for v in vehicles], np.zeros(0, np.int64), z, z, z, z,
                     np.zeros(0, bool), z, 0, tuple(end_odo))
    t = np.concatenate(cols["t"])
    x = np.concatenate(cols["x"])
    y = np.concatenate(cols["y"])
    s = np.concatenate(cols["s"])
    n = len(t)
    moving = s > 0
    sigma = np.where(np.concatenate(cols["a"]), p.gps_sigma_m, p.gps_sigma_m * 0.7)
    x = x + rng.normal(0, 1, n) * sigma
    y = y + rng.normal(0, 1, n) * sigma
    lat = grid.base_lat + y / EARTH_M_PER_DEG
    lon = grid.base_lon + x / (EARTH_M_PER_DEG * math.cos(math.radians(grid.base_lat)))
    speed = np.where(moving, np.maximum(0.0, s + rng.normal(0, 1.0, n)), 0.0)
    t_ns = np.round(t * 1000).astype(np.int64) * 1_000_000                 # milliseconds, as the JSON wire
    return Fixes(np.concatenate(cols["v"]), [v.id for v in vehicles], t_ns, np.round(lat, 7), np.round(lon, 7),
                 np.round(speed, 1), np.round(np.concatenate(cols["h"]), 1), np.concatenate(cols["a"]),
                 np.round(np.concatenate(cols["o"]), 2), outings, tuple(end_odo))
