"""Fleet job: read positions for a period, clean, segment, compute indicators, return Points.

The computation reads through a small protocol, ``PositionSource.fetch_positions(vehicle,
start_ns, end_ns) -> Tracks`` (one vehicle's ``position`` fixes in [start, end), any order).
Two sources exist: ``PointsSource`` over Points in memory (a line-protocol file, a test's
fixtures), and ``load_positions(query, ...)``, which asks the query layer (``edge.query.Query``,
InfluxQL or the embedded store) once for every vehicle's ``raw`` position fields and joins them
by timestamp into ``Tracks`` (fields a terminal does not send are NaN / -1). ``run_fleet`` is the
async shell: load through the query layer, then compute in a worker thread.

Every output Point's identity is (measurement, tags, time): re-running a period writes the same
points again and the store overwrites them, so recomputation is idempotent and a job can run
incrementally, one period at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Protocol, Sequence

import numpy as np

from analytics.fleet.alerts import AlertRules
from analytics.fleet.indicators import (
    FleetParams,
    FleetResult,
    VehicleIndicators,
    VehicleInfo,
    WorkingTime,
    fleet_indicator_points,
    odometer_params,
    org_indicators,
    trip_odometer,
    trip_points,
    under_used,
    vehicle_indicators,
)
from analytics.fleet.odometer import odometer_steps
from analytics.fleet.tracks import NS, CleanParams, Tracks, clean
from analytics.fleet.trips import Method, TripParams, segment
from edge.point import Point
from edge.query import Where


class PositionSource(Protocol):
    def fetch_positions(self, vehicle_id: str, start_ns: int, end_ns: int) -> Tracks: ...


def _field(p: Point, name: str, default=np.nan):
    v = p.fields.get(name)
    if v is None or isinstance(v, str):
        return default
    return float(v)


def tracks_from_points(points: Iterable[Point], vehicle: str) -> Tracks:
    """One vehicle's ``position`` Points as a Tracks (fields absent -> NaN / -1)."""
    ps = [p for p in points if p.measurement == "position" and p.tags.get("vehicle") == vehicle]
    acc = [(-1 if p.fields.get("acc") is None else int(bool(p.fields["acc"]))) for p in ps]
    sat = [int(_field(p, "satellites", -1)) for p in ps]
    return Tracks.single(vehicle, [p.time_ns for p in ps], [_field(p, "lat") for p in ps],
                         [_field(p, "lon") for p in ps], [_field(p, "speed_kmh") for p in ps],
                         np.asarray(acc, dtype=np.int8), [_field(p, "odometer_km") for p in ps],
                         np.asarray(sat, dtype=np.int16))


class PointsSource:
    """A PositionSource over Points held in memory."""

    def __init__(self, points: Iterable[Point]) -> None:
        self._by_vehicle: dict[str, list[Point]] = {}
        for p in points:
            if p.measurement == "position" and "vehicle" in p.tags:
                self._by_vehicle.setdefault(p.tags["vehicle"], []).append(p)

    @property
    def vehicles(self) -> list[str]:
        return sorted(self._by_vehicle)

    def org_of(self, vehicle: str) -> str:
        ps = self._by_vehicle.get(vehicle) or []
        return ps[0].tags.get("org", "") if ps else ""

    def fetch_positions(self, vehicle_id: str, start_ns: int, end_ns: int) -> Tracks:
        ps = [p for p in self._by_vehicle.get(vehicle_id, []) if start_ns <= p.time_ns < end_ns]
        return tracks_from_points(ps, vehicle_id)


@dataclass(frozen=True)
class JobParams:
    clean: CleanParams = CleanParams()
    trips: TripParams = TripParams()
    fleet: FleetParams = FleetParams()
    margin_s: float = 12 * 3600.0  # read this much around the period so boundary trips are whole


@dataclass(frozen=True)
class JobReport:
    fixes_read: int = 0
    dropped: dict = field(default_factory=dict)
    trips_dropped_short: int = 0


def compute_fleet(source: PositionSource, infos: Sequence[VehicleInfo], start_ns: int, end_ns: int,
                  wt: WorkingTime, now_ns: int, period: str = "custom",
                  params: JobParams = JobParams()) -> tuple[FleetResult, JobReport]:
    """Indicators and trips of ``infos`` over [start_ns, end_ns) as Points (``fleet_indicator``,
    ``trip``); trips are those starting inside the period."""
    m = int(params.margin_s * NS)
    tracks = Tracks.concat([source.fetch_positions(v.id, start_ns - m, end_ns + m) for v in infos])
    cleaned = clean(tracks, now_ns, params.clean)
    seg = segment(cleaned.tracks, params.trips)
    per_v = vehicle_indicators(cleaned.tracks, seg, infos, start_ns, end_ns, wt, params.fleet)
    per_o = org_indicators(per_v)
    sel = (seg.trips.start_ns >= start_ns) & (seg.trips.start_ns < end_ns)
    trips = _subset(seg.trips, sel)
    orgs = {v.id: v.org for v in infos}
    odo = trip_odometer(cleaned.tracks, trips, params.fleet)
    points = (fleet_indicator_points(per_v, per_o, period, start_ns, provisional_calendar=wt.provisional_between(start_ns, end_ns))
              + trip_points(trips, orgs, wt, odometer=odo))
    report = JobReport(len(tracks), cleaned.dropped_total(), int(seg.trips.dropped_short.sum()))
    return FleetResult(per_v, per_o, trips, points), report


def compute_fleet_days(source: PositionSource, infos: Sequence[VehicleInfo], start_ns: int, n_days: int,
                       wt: WorkingTime, now_ns: int, params: JobParams = JobParams()
                       ) -> tuple[list[Point], list[list[VehicleIndicators]]]:
    """``compute_fleet`` for each of ``n_days`` local days from ``start_ns`` (a local midnight), with one
    cleaning and one segmentation over the whole range (and the margins) instead of one per day, for a
    history (the backfill runs a month at a time). The same trips (those starting in each day) and day
    rows, counts alike, as the day-by-day pass; a stay's position is the median of what was read of it,
    so where a stay reaches past the day-by-day pass's margins it sits a few metres apart, and the
    distances from it differ by as much. Returns the points and, per day, the vehicles' indicators."""
    day = 86_400 * NS
    end_ns = start_ns + n_days * day
    m = int(params.margin_s * NS)
    tracks = Tracks.concat([source.fetch_positions(v.id, start_ns - m, end_ns + m) for v in infos])
    cleaned = clean(tracks, now_ns, params.clean)
    seg = segment(cleaned.tracks, params.trips)
    sel = (seg.trips.start_ns >= start_ns) & (seg.trips.start_ns < end_ns)
    trips = _subset(seg.trips, sel)
    orgs = {v.id: v.org for v in infos}
    points = trip_points(trips, orgs, wt, odometer=trip_odometer(cleaned.tracks, trips, params.fleet))
    per_day = []
    osteps = odometer_steps(cleaned.tracks, odometer_params(params.fleet))
    for d in range(n_days):
        a, b = start_ns + d * day, start_ns + (d + 1) * day
        per_v = vehicle_indicators(cleaned.tracks, seg, infos, a, b, wt, params.fleet, osteps)
        per_day.append(per_v)
        points += fleet_indicator_points(per_v, org_indicators(per_v), "day", a,
                                         provisional_calendar=wt.provisional_between(a, b))
    return points, per_day


POSITION_FIELDS = ("lat", "lon", "speed_kmh", "acc", "odometer_km", "satellites")


def tracks_from_series(vehicle: str, series: Sequence) -> Tracks:
    """Join ``edge.query.Series`` of one vehicle's position fields by timestamp into a Tracks.

    Fixes are the timestamps that have both lat and lon; other fields are matched on the exact
    timestamp (one Point carries them all), else missing.
    """
    cols: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for f in POSITION_FIELDS:
        parts = [x for x in series if x.field == f]
        if not parts:
            continue
        t = np.concatenate([np.asarray(x.times_ns, dtype=np.int64) for x in parts])
        v = np.concatenate([np.asarray(x.values) for x in parts])
        o = np.argsort(t, kind="stable")
        cols[f] = (t[o], v[o])
    if "lat" not in cols or "lon" not in cols:
        return Tracks.empty(vehicle)
    t = np.intersect1d(cols["lat"][0], cols["lon"][0])

    def pick(name: str, missing):
        if name not in cols:
            return np.full(len(t), missing, dtype=float)
        ts, vs = cols[name]
        i = np.minimum(np.searchsorted(ts, t), max(len(ts) - 1, 0))
        hit = (ts[i] == t) if len(ts) else np.zeros(len(t), dtype=bool)
        out = np.full(len(t), missing, dtype=float)
        vals = vs[i[hit]]
        if vals.dtype == object:
            vals = np.array([missing if isinstance(x, str) or x is None else float(x) for x in vals], dtype=float)
        out[hit] = vals.astype(float)
        return out

    return Tracks.single(vehicle, t, pick("lat", np.nan), pick("lon", np.nan), pick("speed_kmh", np.nan),
                         pick("acc", -1).astype(np.int8), pick("odometer_km", np.nan),
                         pick("satellites", -1).astype(np.int16))


class PrefetchedSource:
    """A PositionSource over Tracks already loaded (``load_positions``)."""

    def __init__(self, tracks: dict[str, Tracks]) -> None:
        self.tracks = tracks

    def fetch_positions(self, vehicle_id: str, start_ns: int, end_ns: int) -> Tracks:
        tr = self.tracks.get(vehicle_id)
        if tr is None:
            return Tracks.empty(vehicle_id)
        return tr.take((tr.t_ns >= start_ns) & (tr.t_ns < end_ns))


async def load_positions(query, vehicle_ids: Sequence[str], start_ns: int, end_ns: int) -> PrefetchedSource:
    """One ``raw`` query for the positions of ``vehicle_ids`` in [start_ns, end_ns)."""
    if not vehicle_ids:
        return PrefetchedSource({})
    series = await query.raw("position", list(POSITION_FIELDS), start_ns, end_ns,
                             Where(tags={"vehicle": tuple(vehicle_ids)}))
    by_vehicle: dict[str, list] = {}
    for s in series:
        by_vehicle.setdefault(s.tags.get("vehicle", ""), []).append(s)
    return PrefetchedSource({v: tracks_from_series(v, by_vehicle.get(v, [])) for v in vehicle_ids})


async def run_fleet(query, infos: Sequence[VehicleInfo], start_ns: int, end_ns: int, wt: WorkingTime, now_ns: int,
                    period: str = "day", params: JobParams = JobParams()) -> tuple[list[Point], JobReport]:
    """Async shell: read positions through the query layer, compute ``recompute`` in a thread."""
    import asyncio
    m = int(params.margin_s * NS)
    source = await load_positions(query, [v.id for v in infos], start_ns - m, end_ns + m)
    return await asyncio.to_thread(recompute, source, infos, start_ns, end_ns, wt, now_ns, period, params)


def period_bounds(kind: str, start_ns: int, end_ns: int, offset_s: int = 8 * 3600) -> list[tuple[int, int]]:
    """Split [start_ns, end_ns) on local day / week (Monday) / month boundaries; ``custom`` keeps it
    whole. The first and last pieces are clipped to the range."""
    import datetime as dt
    if kind == "custom":
        return [(start_ns, end_ns)]
    off = offset_s * NS
    day_ns = 86_400 * NS
    epoch = dt.date(1970, 1, 1)
    d = epoch + dt.timedelta(days=(start_ns + off) // day_ns)
    if kind == "week":
        d -= dt.timedelta(days=d.weekday())
    elif kind == "month":
        d = d.replace(day=1)
    elif kind != "day":
        raise ValueError(f"unknown period {kind!r} (day, week, month, custom)")
    out = []
    while True:
        a = (d - epoch).days * day_ns - off
        if kind == "day":
            d = d + dt.timedelta(days=1)
        elif kind == "week":
            d = d + dt.timedelta(days=7)
        else:
            d = (d.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
        b = (d - epoch).days * day_ns - off
        if b > start_ns and a < end_ns:
            out.append((max(a, start_ns), min(b, end_ns)))
        if b >= end_ns:
            return out


def recompute(source: PositionSource, infos: Sequence[VehicleInfo], start_ns: int, end_ns: int, wt: WorkingTime,
              now_ns: int, period: str = "day", params: JobParams = JobParams()) -> tuple[list[Point], JobReport]:
    """Run ``compute_fleet`` once per period piece of [start_ns, end_ns) (``edge analytics fleet``).

    With ``period="week"``, vehicles under-used over the last ``params.fleet.under_used_weeks``
    weeks are flagged (``under_used``) in the last week's points.
    """
    points: list[Point] = []
    fixes = short = 0
    dropped: dict[str, int] = {}
    weekly = []
    pieces = period_bounds(period, start_ns, end_ns, wt.offset_s)
    for i, (a, b) in enumerate(pieces):
        res, rep = compute_fleet(source, infos, a, b, wt, now_ns, period, params)
        fixes += rep.fixes_read
        short += rep.trips_dropped_short
        for k, v in rep.dropped.items():
            dropped[k] = dropped.get(k, 0) + v
        if period == "week":
            weekly.append(res.vehicles)
            if i == len(pieces) - 1:
                under = under_used(weekly, params.fleet.under_used_threshold, params.fleet.under_used_weeks)
                if under or len(weekly) >= params.fleet.under_used_weeks:
                    res_pts = fleet_indicator_points(res.vehicles, res.orgs, period, a, under,
                                                     provisional_calendar=wt.provisional_between(a, b))
                    res = FleetResult(res.vehicles, res.orgs, res.trips,
                                      res_pts + [p for p in res.points if p.measurement != "fleet_indicator"])
        points += res.points
    return points, JobReport(fixes, dropped, short)


def _subset(trips, mask):
    from dataclasses import replace
    names = ("vehicle_idx", "first", "last", "start_ns", "end_ns", "start_lat", "start_lon", "end_lat", "end_lon",
             "distance_m", "duration_s", "max_speed_kmh", "mean_speed_kmh", "driving_s", "idle_s", "by_acc")
    return replace(trips, **{n: getattr(trips, n)[mask] for n in names})


def params_from_config(fleet_cfg) -> tuple[JobParams, "AlertRules"]:
    """Job parameters and alert rules from a config section (duck-typed; any attribute missing
    keeps its default). Field names are those of ``CleanParams``, ``TripParams``, ``FleetParams``
    and ``AlertRules``, plus ``segmentation`` for ``TripParams.method``."""
    from dataclasses import fields as dc_fields


    def build(cls, extra=None):
        kw = {f.name: getattr(getattr(fleet_cfg, f.name), "value", getattr(fleet_cfg, f.name))
              for f in dc_fields(cls) if getattr(fleet_cfg, f.name, None) is not None}
        kw.update(extra or {})
        return cls(**kw)

    seg = getattr(fleet_cfg, "segmentation", None)
    method = {"method": Method(getattr(seg, "value", seg))} if seg is not None else {}
    return (JobParams(build(CleanParams), build(TripParams, method), build(FleetParams)), build(AlertRules))


async def run_fleet_chunked(query, infos: Sequence[VehicleInfo], start_ns: int, end_ns: int, wt: WorkingTime,
                            now_ns: int, period: str = "day", params: JobParams = JobParams(),
                            chunk: int = 25) -> list[Point]:
    """``run_fleet`` for one period, a few vehicles at a time: the positions in memory at once are
    those of ``chunk`` vehicles, not the whole fleet's (the service runs this every few minutes over
    all of today). Vehicles are independent; the org roll-up is done once over all of them."""
    import asyncio
    m = int(params.margin_s * NS)
    per_vehicle = []
    trips: list[Point] = []
    for i in range(0, len(infos), chunk):
        part = list(infos[i:i + chunk])
        source = await load_positions(query, [v.id for v in part], start_ns - m, end_ns + m)
        res, _ = await asyncio.to_thread(compute_fleet, source, part, start_ns, end_ns, wt, now_ns, period, params)
        per_vehicle.extend(res.vehicles)
        trips.extend(p for p in res.points if p.measurement == "trip")
        del source, res
    return fleet_indicator_points(per_vehicle, org_indicators(per_vehicle), period, start_ns,
                                  provisional_calendar=wt.provisional_between(start_ns, end_ns)) + trips
