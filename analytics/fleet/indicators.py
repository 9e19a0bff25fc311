"""Fleet indicators per vehicle, per org and over the org tree, and their Points.

Definitions (DOMAIN.md "Fleet indicators"):

- ``trips``: trips that *start* in the period (a trip through midnight counts on its first day;
  its hours stay whole with it).
- ``gps_km`` (driven): haversine sum of the steps *inside trips* that end in the period (a stop's
  jitter and a dropped short "trip" are not driving); ``unobserved_km``: the straight line across
  each signal gap longer than ``max_gap_s`` that ends in the period (a lower bound of what the
  vehicle moved unseen, if it moved under its own power at all), beside the driven figure, never
  in it; ``odometer_km``: the terminal's odometer over the period (analytics.fleet.odometer:
  resets and rollovers handled, implausible jumps left out and noted).
- ``mileage_km``, the headline: by ``mileage_source`` (per vehicle, else the fleet's): ``gps``
  the driven GPS figure; ``odometer`` the odometer's when it has one; ``auto`` the odometer's
  when it is trusted and agrees with GPS over the trips (``odometer_mismatch`` false), else GPS.
  ``mileage_source`` in the output says which one was used.
- ``driving_h`` / ``idle_h``: of the trips counted (see analytics.fleet.trips for idle).
- ``utilisation`` (利用率): in-trip time that falls inside working time ÷ working time of the
  period (working hours of working days, holidays and 调休 from the calendar).
- ``dispatch_rate`` (出车率): vehicles in service with at least one trip ÷ vehicles in service.
  No official formula exists; this is our stated definition.
- ``off_hours_trips``: trips with any part outside working time; ``weekend_trips``: trips on a
  rest day that is not a statutory holiday (a 调休 working Saturday is a workday);
  ``holiday_trips``: trips on a statutory holiday.
- ``overnight_away``: nights on which the vehicle's last position before ``night_check`` (local)
  lies outside its home geofence.
- under-used vehicles: utilisation over the last N weeks below a threshold.

Working time comes through a tiny protocol (``WorkdayCalendar.is_workday(date)``) plus working
hours, so any calendar binds: ``WorkingTime.from_workcal(analytics.workcal.WorkCalendar(...))``.
Times are int ns UTC; local days use a fixed UTC offset (Asia/Shanghai has had no DST since 1991).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Protocol, Sequence

import numpy as np

from analytics.fleet.geo import Fence
from analytics.fleet.odometer import OdometerParams, differ, odometer_steps, spans
from analytics.fleet.tracks import NS, Tracks
from analytics.fleet.trips import Segmented, Trips
from edge.point import Point

NS_PER_DAY = 86_400 * NS
_EPOCH = dt.date(1970, 1, 1)


class WorkdayCalendar(Protocol):
    def is_workday(self, day: dt.date) -> bool: ...


@dataclass(frozen=True)
class WeekdayCalendar:
    """Monday-Friday, with explicit extra holidays and 调休 workdays. The fallback calendar."""

    holidays: frozenset[dt.date] = frozenset()
    workdays: frozenset[dt.date] = frozenset()

    def is_workday(self, day: dt.date) -> bool:
        if day in self.workdays:
            return True
        if day in self.holidays:
            return False
        return day.weekday() < 5

    def is_holiday(self, day: dt.date) -> bool:
        return day in self.holidays


def _hhmm(s: str) -> int:
    h, m = s.split(":")
    return int(h) * 60 + int(m)


@dataclass(frozen=True)
class WorkingTime:
    """Working hours ``[start_min, end_min)`` (local minutes of the day) on the calendar's workdays.

    ``is_holiday`` tells statutory holidays (法定节假日) from ordinary weekends; when the calendar
    has no such method, a rest day falling Monday-Friday is taken as a holiday.
    """

    calendar: WorkdayCalendar
    start_min: int = 8 * 60 + 30
    end_min: int = 17 * 60 + 30
    offset_s: int = 8 * 3600
    is_holiday: Callable[[dt.date], bool] | None = None

    @classmethod
    def from_workcal(cls, wc, offset_s: int = 8 * 3600) -> "WorkingTime":
        """Bind ``analytics.workcal.WorkCalendar`` (duck-typed: ``is_workday``, ``window_minutes``
        or ``workday_start``/``workday_end``, optionally ``is_statutory_holiday``)."""
        if hasattr(wc, "window_minutes"):
            a, b = wc.window_minutes
        else:
            a, b = _hhmm(wc.workday_start), _hhmm(wc.workday_end)
        hol = getattr(wc, "is_statutory_holiday", None) or getattr(wc, "is_holiday", None)
        return cls(wc, a, b, offset_s, hol)

    def is_provisional(self, day: dt.date) -> bool:
        """True when ``day``'s year is computed provisionally (weekends only): the calendar does not
        cover it (``analytics.workcal.WorkCalendar.covers``). A calendar without ``covers`` is taken as it is."""
        covers = getattr(self.calendar, "covers", None)
        return covers is not None and not covers(day.year)

    def provisional_between(self, start_ns: int, end_ns: int) -> bool:
        """True when some local day of ``[start_ns, end_ns)`` is provisional."""
        y0 = self.local_day(start_ns).year
        y1 = self.local_day(max(int(start_ns), int(end_ns) - 1)).year
        return any(self.is_provisional(dt.date(y, 1, 1)) for y in range(y0, y1 + 1))

    def local_day(self, t_ns: int) -> dt.date:
        return _EPOCH + dt.timedelta(days=(int(t_ns) + self.offset_s * NS) // NS_PER_DAY)

    def day_kind(self, day: dt.date) -> str:
        """'workday', 'weekend' or 'holiday'."""
        if self.calendar.is_workday(day):
            return "workday"
        if self.is_holiday is not None:
            return "holiday" if self.is_holiday(day) else "weekend"
        return "holiday" if day.weekday() < 5 else "weekend"

    def is_working(self, t_ns: int) -> bool:
        local = int(t_ns) + self.offset_s * NS
        minute = (local % NS_PER_DAY) // (60 * NS)
        return self.start_min <= minute < self.end_min and self.calendar.is_workday(self.local_day(t_ns))

    def windows(self, start_ns: int, end_ns: int) -> tuple[np.ndarray, np.ndarray]:
        """Working windows [ws, we) in ns UTC of every local workday touching [start_ns, end_ns)."""
        off = self.offset_s * NS
        d0 = (int(start_ns) + off) // NS_PER_DAY
        d1 = (int(end_ns) + off - 1) // NS_PER_DAY
        days = [d for d in range(d0, d1 + 1) if self.calendar.is_workday(_EPOCH + dt.timedelta(days=d))]
        base = np.asarray(days, dtype=np.int64) * NS_PER_DAY - off
        return base + self.start_min * 60 * NS, base + self.end_min * 60 * NS


def working_overlap_s(a_ns: np.ndarray, b_ns: np.ndarray, ws: np.ndarray, we: np.ndarray) -> np.ndarray:
    """Seconds of each interval [a, b) that fall inside the sorted disjoint windows [ws, we)."""
    if len(ws) == 0:
        return np.zeros(len(a_ns))
    dur = we - ws
    cum = np.concatenate([[0], np.cumsum(dur)])

    def F(x):  # working ns from the first window's start up to x
        k = np.searchsorted(ws, x, side="right") - 1
        kk = np.maximum(k, 0)
        inside = np.clip(x - ws[kk], 0, dur[kk])
        return np.where(k < 0, 0, cum[kk] + inside)

    return (F(np.asarray(b_ns)) - F(np.asarray(a_ns))) / NS


@dataclass(frozen=True)
class TripFlags:
    off_hours: np.ndarray  # bool: some part outside working time
    weekend: np.ndarray  # bool: starts or ends on a rest day that is not a holiday
    holiday: np.ndarray  # bool: starts or ends on a statutory holiday
    working_s: np.ndarray  # seconds inside working time


def trip_flags(trips: Trips, wt: WorkingTime, off_hours_grace_s: float = 0.0) -> TripFlags:
    n = len(trips)
    if n == 0:
        z = np.zeros(0, dtype=bool)
        return TripFlags(z, z, z, np.zeros(0))
    ws, we = wt.windows(int(trips.start_ns.min()), int(trips.end_ns.max()) + 1)
    working = working_overlap_s(trips.start_ns, trips.end_ns, ws, we)
    off = (trips.duration_s - working) > off_hours_grace_s
    offn = wt.offset_s * NS
    d_start = (trips.start_ns + offn) // NS_PER_DAY
    d_end = (trips.end_ns + offn) // NS_PER_DAY
    days = np.unique(np.concatenate([d_start, d_end]))
    kinds = np.array([wt.day_kind(_EPOCH + dt.timedelta(days=int(d))) for d in days])
    ks = kinds[np.searchsorted(days, d_start)]
    ke = kinds[np.searchsorted(days, d_end)]
    holiday = (ks == "holiday") | (ke == "holiday")
    weekend = ~holiday & ((ks == "weekend") | (ke == "weekend"))
    return TripFlags(off, weekend, holiday, working)


# --- per vehicle -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class VehicleInfo:
    id: str
    org: str
    in_service: bool = True
    home: Fence | None = None
    mileage_source: str | None = None  # auto | gps | odometer; None: the fleet's setting


def _value(v):
    return getattr(v, "value", v)


def vehicle_infos(vehicles: Iterable, fences: Iterable[Fence]) -> list[VehicleInfo]:
    """From ``edge.config.Vehicle`` models (duck-typed) and compiled fences."""
    by_name = {f.name: f for f in fences}
    return [VehicleInfo(v.id, v.org, v.in_service, by_name.get(v.home) if v.home else None,
                        _value(getattr(v, "mileage_source", None))) for v in vehicles]


MILEAGE_SOURCES = ("auto", "gps", "odometer")


@dataclass(frozen=True)
class FleetParams:
    max_speed_kmh: float = 200.0
    odometer_tolerance_km: float = 0.2  # absolute floor of a GPS/odometer difference (0.1 km resolution)
    odometer_tolerance_pct: float = 5.0  # GPS and odometer differ beyond this share of the larger
    mileage_source: str = "auto"
    min_unobserved_m: float = 50.0  # a gap that ends this close to where it began: parked, nothing unseen
    night_check: str = "02:00"  # local time at which a vehicle should be home
    night_lookback_s: float = 24 * 3600.0
    off_hours_grace_s: float = 0.0
    under_used_threshold: float = 0.2
    under_used_weeks: int = 4


@dataclass(frozen=True)
class VehicleIndicators:
    vehicle: str
    org: str
    in_service: bool
    trips: int
    mileage_km: float  # the headline, from mileage_source
    odometer_km: float  # NaN when the terminal reports no odometer (or too few readings)
    odometer_note: str  # "trusted", "absent", "too few readings", "reset", "rollover", "implausible jump"
    driving_h: float
    idle_h: float
    in_use_h: float
    working_in_use_h: float
    available_h: float
    utilisation: float  # NaN when there is no working time in the period
    off_hours_trips: int
    weekend_trips: int
    holiday_trips: int
    overnight_away: int
    gps_km: float = 0.0  # driven: steps inside trips
    unobserved_km: float = 0.0  # straight lines across gaps longer than max_gap_s
    odometer_trips_km: float = math.nan  # the odometer over the same trips, for the comparison
    odometer_mismatch: bool = False  # GPS and odometer over the trips differ beyond the tolerance
    mileage_source: str = "gps"  # which figure mileage_km is

    @property
    def dispatched(self) -> bool:
        return self.trips > 0


def odometer_params(p: FleetParams) -> OdometerParams:
    return OdometerParams(tolerance_pct=p.odometer_tolerance_pct, tolerance_km=p.odometer_tolerance_km,
                          max_speed_kmh=p.max_speed_kmh)


def _choose_source(wanted: str, trusted: bool, mismatch: bool) -> str:
    if wanted not in MILEAGE_SOURCES:
        raise ValueError(f"mileage_source {wanted!r}: expected one of {', '.join(MILEAGE_SOURCES)}")
    if wanted == "gps" or not trusted:
        return "gps"
    if wanted == "odometer":
        return "odometer"
    return "gps" if mismatch else "odometer"


def _overnight_away(tr: Tracks, infos: Sequence[VehicleInfo], start_ns: int, end_ns: int, wt: WorkingTime,
                    p: FleetParams) -> np.ndarray:
    out = np.zeros(tr.n_vehicles, dtype=np.int64)
    off = wt.offset_s * NS
    check = _hhmm(p.night_check) * 60 * NS
    d0 = (start_ns + off) // NS_PER_DAY
    d1 = (end_ns + off - 1) // NS_PER_DAY
    instants = np.arange(d0, d1 + 1, dtype=np.int64) * NS_PER_DAY - off + check
    instants = instants[(instants >= start_ns) & (instants < end_ns)]
    if not len(instants):
        return out
    look = int(p.night_lookback_s * NS)
    for k, info in enumerate(infos):
        if info.home is None:
            continue
        a, b = int(tr.offsets[k]), int(tr.offsets[k + 1])
        if a == b:
            continue
        t = tr.t_ns[a:b]
        j = np.searchsorted(t, instants, side="right") - 1
        seen = (j >= 0) & (instants - t[np.maximum(j, 0)] <= look)
        jj = j[seen] + a
        away = ~np.asarray(info.home.contains(tr.lat[jj], tr.lon[jj]), dtype=bool)
        out[k] = int(away.sum())
    return out


def vehicle_indicators(tracks: Tracks, segmented: Segmented, infos: Sequence[VehicleInfo], start_ns: int,
                       end_ns: int, wt: WorkingTime, params: FleetParams = FleetParams(),
                       osteps=None) -> list[VehicleIndicators]:
    """Indicators of each vehicle over [start_ns, end_ns).

    ``tracks`` are the *cleaned* tracks that ``segmented`` (``analytics.fleet.trips.segment``) was
    computed from, in the order of ``infos`` (``tracks.vehicles[k] == infos[k].id``). ``osteps``:
    ``odometer_steps(tracks, ...)`` when the caller has it (a pass over many days computes it once).
    """
    p = params
    nv = tracks.n_vehicles
    if tuple(i.id for i in infos) != tracks.vehicles:
        raise ValueError("infos must list the vehicles of tracks, in the same order")
    trips = segmented.trips
    g = tracks.group
    t = tracks.t_ns
    in_p = (t >= start_ns) & (t < end_ns)
    n = len(t)
    step = segmented.step_m
    driven = np.bincount(g[segmented.trip_step & in_p], weights=step[segmented.trip_step & in_p],
                         minlength=nv) / 1000.0 if n else np.zeros(nv)
    unseen = segmented.gap_step & in_p & (step >= p.min_unobserved_m) if n else np.zeros(0, dtype=bool)
    unobserved = np.bincount(g[unseen], weights=step[unseen], minlength=nv) / 1000.0 if n else np.zeros(nv)

    # the odometer over the period, and over the trips (the like-for-like comparison with GPS)
    op = odometer_params(p)
    if osteps is None:
        osteps = odometer_steps(tracks, op)
    rows = np.flatnonzero(in_p)
    first = np.full(nv, -1, dtype=np.int64)
    last = np.full(nv, -1, dtype=np.int64)
    if len(rows):
        gr = g[rows]
        uniq, pos = np.unique(gr, return_index=True)
        first[uniq] = rows[pos]
        uniq_r, pos_r = np.unique(gr[::-1], return_index=True)
        last[uniq_r] = rows[::-1][pos_r]
    has = first >= 0
    day = spans(osteps, t, np.where(has, first, 0), np.where(has, last, 0), op)
    odo = np.where(has, day.km, np.nan)
    notes = [nt if h else "absent" for nt, h in zip(day.notes(), has)]
    trusted = has & day.trusted

    sel = (trips.start_ns >= start_ns) & (trips.start_ns < end_ns)
    tg = trips.vehicle_idx[sel]
    trip_odo = spans(osteps, t, trips.first[sel], trips.last[sel], op).km
    with_odo = ~np.isnan(trip_odo)
    odo_trips = np.bincount(tg[with_odo], weights=trip_odo[with_odo], minlength=nv)
    gps_trips = np.bincount(tg[with_odo], weights=trips.distance_m[sel][with_odo] / 1000.0, minlength=nv)
    n_with = np.bincount(tg[with_odo], minlength=nv)
    odo_trips = np.where(n_with > 0, odo_trips, np.nan)
    mismatch = differ(odo_trips, np.where(n_with > 0, gps_trips, np.nan), op)
    flags = trip_flags(trips, wt, p.off_hours_grace_s)

    def per(values, mask=None):
        m = sel if mask is None else sel & mask
        return np.bincount(trips.vehicle_idx[m], weights=None if values is None else values[m], minlength=nv)

    n_trips = np.bincount(tg, minlength=nv)
    driving = per(trips.driving_s) / 3600.0
    idle = per(trips.idle_s) / 3600.0
    # in-use time clipped to the period (a trip through the period's end counts up to the end)
    a = np.clip(trips.start_ns, start_ns, end_ns)
    b = np.clip(trips.end_ns, start_ns, end_ns)
    ws, we = wt.windows(start_ns, end_ns)
    ws_c, we_c = np.clip(ws, start_ns, end_ns), np.clip(we, start_ns, end_ns)
    keep_w = we_c > ws_c
    ws_c, we_c = ws_c[keep_w], we_c[keep_w]
    work_in_use = np.bincount(trips.vehicle_idx, weights=working_overlap_s(a, b, ws_c, we_c), minlength=nv) / 3600.0
    in_use = np.bincount(trips.vehicle_idx, weights=(b - a) / NS, minlength=nv) / 3600.0
    available = float((we_c - ws_c).sum()) / NS / 3600.0
    off_h = per(None, flags.off_hours)
    wkd = per(None, flags.weekend)
    hol = per(None, flags.holiday)
    away = _overnight_away(tracks, infos, start_ns, end_ns, wt, p)
    out = []
    for k, info in enumerate(infos):
        avail = available if info.in_service else 0.0
        util = work_in_use[k] / avail if avail > 0 else math.nan
        source = _choose_source(info.mileage_source or p.mileage_source, bool(trusted[k]), bool(mismatch[k]))
        headline = float(odo[k]) if source == "odometer" else float(driven[k])
        out.append(VehicleIndicators(
            info.id, info.org, info.in_service, int(n_trips[k]), headline, float(odo[k]), notes[k],
            float(driving[k]), float(idle[k]), float(in_use[k]), float(work_in_use[k]), avail, float(util),
            int(off_h[k]), int(wkd[k]), int(hol[k]), int(away[k]), float(driven[k]), float(unobserved[k]),
            float(odo_trips[k]), bool(mismatch[k]), source))
    return out


def trip_odometer(tracks: Tracks, trips: Trips, params: FleetParams = FleetParams()) -> tuple[np.ndarray, np.ndarray]:
    """Per trip: the odometer's km (NaN without enough readings) and whether it differs from GPS."""
    op = odometer_params(params)
    km = spans(odometer_steps(tracks, op), tracks.t_ns, trips.first, trips.last, op).km
    return km, differ(km, trips.distance_m / 1000.0, op)


# --- org tree --------------------------------------------------------------------------------------


def _within(path: str, scope: str) -> bool:
    p, s = path.split("/"), scope.split("/")
    return p[: len(s)] == s


@dataclass(frozen=True)
class OrgIndicators:
    org: str
    vehicles_in_service: int
    vehicles_dispatched: int
    dispatch_rate: float  # 出车率; NaN with no vehicle in service
    trips: int
    mileage_km: float
    odometer_km: float  # sum over vehicles whose odometer is trusted
    odometer_vehicles: int
    driving_h: float
    idle_h: float
    in_use_h: float
    utilisation: float
    off_hours_trips: int
    weekend_trips: int
    holiday_trips: int
    overnight_away: int
    gps_km: float = 0.0
    unobserved_km: float = 0.0
    odometer_mismatches: int = 0  # vehicles whose odometer and GPS differ over their trips


def org_indicators(per_vehicle: Sequence[VehicleIndicators], orgs: Iterable[str] | None = None) -> list[OrgIndicators]:
    """Roll vehicles up the org tree: each org counts its own vehicles and all below it.

    Without ``orgs``, every org path of the vehicles and each of its ancestors is reported.
    """
    if orgs is None:
        s: set[str] = set()
        for v in per_vehicle:
            parts = v.org.split("/")
            s.update("/".join(parts[: i + 1]) for i in range(len(parts)))
        orgs = sorted(s)
    out = []
    for org in orgs:
        vs = [v for v in per_vehicle if _within(v.org, org)]
        svc = [v for v in vs if v.in_service]
        disp = sum(1 for v in svc if v.trips > 0)
        avail = sum(v.available_h for v in svc)
        odo = [v.odometer_km for v in vs if not math.isnan(v.odometer_km)]
        out.append(OrgIndicators(
            org, len(svc), disp, disp / len(svc) if svc else math.nan, sum(v.trips for v in vs),
            sum(v.mileage_km for v in vs), float(sum(odo)), len(odo), sum(v.driving_h for v in vs),
            sum(v.idle_h for v in vs), sum(v.in_use_h for v in vs),
            sum(v.working_in_use_h for v in svc) / avail if avail > 0 else math.nan,
            sum(v.off_hours_trips for v in vs), sum(v.weekend_trips for v in vs),
            sum(v.holiday_trips for v in vs), sum(v.overnight_away for v in vs),
            sum(v.gps_km for v in vs), sum(v.unobserved_km for v in vs), sum(1 for v in vs if v.odometer_mismatch)))
    return out


@dataclass(frozen=True)
class UnderUse:
    vehicle: str
    org: str
    utilisation: float
    weeks: int


def under_used(weeks: Sequence[Sequence[VehicleIndicators]], threshold: float = 0.2, n_weeks: int = 4) -> list[UnderUse]:
    """Vehicles in service whose utilisation over the last ``n_weeks`` weekly results is below
    ``threshold`` (in-use working hours summed ÷ available hours summed). Input oldest first."""
    recent = list(weeks)[-n_weeks:]
    if len(recent) < n_weeks:
        return []
    acc: dict[str, list[float]] = {}
    org: dict[str, str] = {}
    for week in recent:
        for v in week:
            if not v.in_service:
                continue
            a = acc.setdefault(v.vehicle, [0.0, 0.0, 0])
            a[0] += v.working_in_use_h
            a[1] += v.available_h
            a[2] += 1
            org[v.vehicle] = v.org
    out = []
    for vid, (use, avail, nw) in acc.items():
        if nw == n_weeks and avail > 0 and use / avail < threshold:
            out.append(UnderUse(vid, org[vid], use / avail, nw))
    return sorted(out, key=lambda u: u.utilisation)


# --- Points ----------------------------------------------------------------------------------------


def _num(fields: dict, name: str, v: float) -> None:
    if v is not None and not (isinstance(v, float) and math.isnan(v)):
        fields[name] = float(v)


def fleet_indicator_points(per_vehicle: Sequence[VehicleIndicators], per_org: Sequence[OrgIndicators],
                           period: str, time_ns: int, under: Sequence[UnderUse] = (),
                           provisional_calendar: bool = False) -> list[Point]:
    """``fleet_indicator`` Points: tags scope (vehicle|org), id, org, period; time = period start.

    Fields that have no value (utilisation without working time, an untrusted odometer) are left
    out rather than written as 0. ``provisional_calendar`` (the period touches a year the holiday
    calendar does not cover, ``WorkingTime.provisional_between``) is written true or false on every
    point, so a recomputation with the real calendar overwrites it.
    """
    flagged = {u.vehicle for u in under}
    pts = []
    for v in per_vehicle:
        f: dict = {"trips": v.trips, "mileage_km": float(v.mileage_km), "driving_h": float(v.driving_h),
                   "idle_h": float(v.idle_h), "in_use_h": float(v.in_use_h), "available_h": float(v.available_h),
                   "off_hours_trips": v.off_hours_trips, "weekend_trips": v.weekend_trips,
                   "holiday_trips": v.holiday_trips, "overnight_away": v.overnight_away,
                   "dispatched": v.dispatched, "odometer_note": v.odometer_note,
                   "gps_km": float(v.gps_km), "unobserved_km": float(v.unobserved_km),
                   "mileage_source": v.mileage_source, "odometer_mismatch": bool(v.odometer_mismatch)}
        _num(f, "odometer_km", v.odometer_km)
        _num(f, "odometer_trips_km", v.odometer_trips_km)
        _num(f, "utilisation", v.utilisation)
        if under:
            f["under_used"] = v.vehicle in flagged
        f["provisional_calendar"] = bool(provisional_calendar)
        pts.append(Point("fleet_indicator", {"scope": "vehicle", "id": v.vehicle, "org": v.org, "period": period},
                         f, int(time_ns)))
    for o in per_org:
        f = {"trips": o.trips, "mileage_km": float(o.mileage_km), "driving_h": float(o.driving_h),
             "idle_h": float(o.idle_h), "in_use_h": float(o.in_use_h), "vehicles_in_service": o.vehicles_in_service,
             "vehicles_dispatched": o.vehicles_dispatched, "off_hours_trips": o.off_hours_trips,
             "weekend_trips": o.weekend_trips, "holiday_trips": o.holiday_trips,
             "overnight_away": o.overnight_away, "odometer_vehicles": o.odometer_vehicles,
             "gps_km": float(o.gps_km), "unobserved_km": float(o.unobserved_km),
             "odometer_mismatches": o.odometer_mismatches}
        if o.odometer_vehicles:
            f["odometer_km"] = float(o.odometer_km)
        _num(f, "utilisation", o.utilisation)
        _num(f, "dispatch_rate", o.dispatch_rate)
        if under:
            f["under_used"] = sum(1 for u in under if _within(u.org, o.org))
        f["provisional_calendar"] = bool(provisional_calendar)
        pts.append(Point("fleet_indicator", {"scope": "org", "id": o.org, "org": o.org, "period": period},
                         f, int(time_ns)))
    return pts


def trip_points(trips: Trips, orgs: Mapping[str, str], wt: WorkingTime, off_hours_grace_s: float = 0.0,
                odometer: tuple[np.ndarray, np.ndarray] | None = None) -> list[Point]:
    """``trip`` Points: tags vehicle, org; time = trip start (ns UTC). ``odometer``: per trip the
    odometer's km and whether it differs from GPS (``trip_odometer``); left out where absent.
    ``provisional_calendar``: the trip's off-hours / weekend / holiday flags come from a provisional
    year's calendar."""
    flags = trip_flags(trips, wt, off_hours_grace_s)
    pts = []
    for i, tr in enumerate(trips.rows()):
        f = {"distance_km": tr.distance_m / 1000.0, "duration_s": float(tr.duration_s),
             "start_lat": tr.start_lat, "start_lon": tr.start_lon, "end_lat": tr.end_lat, "end_lon": tr.end_lon,
             "max_speed_kmh": float(tr.max_speed_kmh), "mean_speed_kmh": float(tr.mean_speed_kmh),
             "driving_s": float(tr.driving_s), "idle_s": float(tr.idle_s), "end_ns": int(tr.end_ns),
             "off_hours": bool(flags.off_hours[i]), "holiday": bool(flags.holiday[i]),
             "weekend": bool(flags.weekend[i]), "method": "acc" if tr.by_acc else "distance",
             "provisional_calendar": wt.is_provisional(wt.local_day(tr.start_ns))}
        if odometer is not None and not math.isnan(odometer[0][i]):
            f["odometer_km"] = float(odometer[0][i])
            f["odometer_mismatch"] = bool(odometer[1][i])
        pts.append(Point("trip", {"vehicle": tr.vehicle, "org": orgs.get(tr.vehicle, "")}, f, int(tr.start_ns)))
    return pts


@dataclass(frozen=True)
class FleetResult:
    vehicles: list[VehicleIndicators] = field(default_factory=list)
    orgs: list[OrgIndicators] = field(default_factory=list)
    trips: Trips | None = None
    points: list[Point] = field(default_factory=list)
