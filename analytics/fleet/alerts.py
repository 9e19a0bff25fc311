"""Live fleet alerts: a per-vehicle state machine fed fix by fix, raising ``Alert`` records.

Rules (thresholds in ``AlertRules``; DOMAIN.md "overspeed", "idle time", "off-hours"):

- ``overspeed``: speed above ``overspeed_kmh`` on consecutive fixes for longer than
  ``overspeed_grace_s``; one alert per episode, raised when the grace runs out.
- ``long_idle``: ACC on and standing (speed <= ``idle_speed_kmh``) for ``long_idle_s``; one per
  episode. Needs the ACC bit: without it a parked car and an idling one look the same.
- ``out_of_hours``: moving (speed >= ``moving_kmh``) outside working time; one per movement
  episode (an episode ends after ``rest_s`` standing still or when working time starts).
- ``lost_signal``: no fix for ``lost_signal_s`` while the vehicle was last seen active (ACC on or
  moving); checked by ``tick(now_ns)`` from the caller's clock. A parked car whose terminal
  sleeps is not lost. A JT/T 808 terminal whose connection goes silent (no heartbeat, no report
  for its configured interval) raises it too, through ``terminal_silent``.
- ``geofence_enter`` / ``geofence_leave``: crossing a configured fence (analytics.fleet.geofence).

Speed is the reported one, or the step speed from the previous fix when the terminal sends none.
Fixes older than the vehicle's last one, or without valid coordinates, are skipped and counted
(``skipped``); so are fixes marked ``backlog`` (a blind-area upload after an outage: history,
not the vehicle's present; they would make a vehicle that is back look silent since the outage).
Each alert carries its evidence: the numbers that made the rule fire.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from analytics.fleet.geo import Fence, haversine_m
from analytics.fleet.geofence import FenceTracker
from analytics.fleet.indicators import WorkingTime
from edge.errors import PayloadError
from edge.point import Point

NS = 1_000_000_000
Evidence = Mapping[str, float | int | str | bool]


@dataclass(frozen=True)
class Fix:
    time_ns: int
    lat: float
    lon: float
    speed_kmh: float = math.nan
    acc: bool | None = None


def fix_from_point(p: Point) -> Fix:
    """A ``position`` Point as a Fix; ``PayloadError`` when lat/lon are missing."""
    f = p.fields
    try:
        lat, lon = float(f["lat"]), float(f["lon"])
    except (KeyError, TypeError, ValueError) as e:
        raise PayloadError("no position", f"{p.tags.get('vehicle', '?')}: lat/lon missing") from e
    spd = f.get("speed_kmh")
    acc = f.get("acc")
    return Fix(p.time_ns, lat, lon, math.nan if spd is None else float(spd), None if acc is None else bool(acc))


@dataclass(frozen=True)
class Alert:
    kind: str
    vehicle: str
    org: str
    time_ns: int
    message: str
    evidence: Evidence = field(default_factory=dict)

    def to_point(self) -> Point:
        """``alert`` Point: tags kind, vehicle, org; fields message + evidence values."""
        fields: dict = {"message": self.message}
        for k, v in self.evidence.items():
            if isinstance(v, float) and not math.isfinite(v):
                continue
            fields[k] = v
        return Point("alert", {"kind": self.kind, "vehicle": self.vehicle, "org": self.org}, fields, self.time_ns)


@dataclass(frozen=True)
class AlertRules:
    overspeed_kmh: float = 100.0
    overspeed_grace_s: float = 30.0
    idle_speed_kmh: float = 3.0
    long_idle_s: float = 600.0
    moving_kmh: float = 5.0
    rest_s: float = 180.0
    lost_signal_s: float = 900.0
    out_of_hours: bool = True
    max_step_dt_s: float = 120.0  # step speed only over steps shorter than this


@dataclass
class VehicleState:
    last: Fix | None = None
    speed_kmh: float = 0.0
    over_since: int | None = None
    over_max: float = 0.0
    over_raised: bool = False
    idle_since: int | None = None
    idle_raised: bool = False
    still_since: int | None = None
    ooh_raised: bool = False
    ooh_since: int | None = None
    lost_raised: bool = False
    active: bool = False


def _fmt_t(ns: int) -> str:
    import datetime as dt
    return dt.datetime.fromtimestamp(ns / NS, dt.timezone(dt.timedelta(hours=8))).strftime("%Y-%m-%d %H:%M:%S+08")


class AlertEngine:
    """Feed fixes as they arrive (``feed``), call ``tick`` now and then for lost signals."""

    def __init__(self, rules: AlertRules = AlertRules(), fences: Sequence[Fence] = (),
                 working: WorkingTime | None = None, orgs: Mapping[str, str] | None = None) -> None:
        self.rules = rules
        self.working = working
        self.orgs = dict(orgs or {})
        self.fences = FenceTracker(fences)
        self.states: dict[str, VehicleState] = {}
        self.skipped = 0

    def state(self, vehicle: str) -> VehicleState:
        return self.states.setdefault(vehicle, VehicleState())

    def feed_point(self, p: Point) -> list[Alert]:
        vid = p.tags.get("vehicle", "")
        if "org" in p.tags:
            self.orgs.setdefault(vid, p.tags["org"])
        if p.fields.get("backlog") is True:
            self.skipped += 1
            return []
        try:
            fix = fix_from_point(p)
        except PayloadError:
            self.skipped += 1
            return []
        return self.feed(vid, fix)

    def feed(self, vehicle: str, fix: Fix) -> list[Alert]:
        r = self.rules
        s = self.state(vehicle)
        if not (math.isfinite(fix.lat) and math.isfinite(fix.lon) and abs(fix.lat) <= 90 and abs(fix.lon) <= 180) \
                or (fix.lat == 0 and fix.lon == 0) or (s.last is not None and fix.time_ns <= s.last.time_ns):
            self.skipped += 1
            return []
        org = self.orgs.get(vehicle, "")
        out: list[Alert] = []
        # speed: reported, else step speed over a short enough step
        v = fix.speed_kmh
        if math.isnan(v):
            v = 0.0
            if s.last is not None:
                dt = (fix.time_ns - s.last.time_ns) / NS
                if 0 < dt <= r.max_step_dt_s:
                    v = float(haversine_m(s.last.lat, s.last.lon, fix.lat, fix.lon)) / dt * 3.6
        s.speed_kmh = v
        t = fix.time_ns
        ev_base = {"lat": fix.lat, "lon": fix.lon, "speed_kmh": round(v, 1)}

        s.lost_raised = False  # a fix ends any lost-signal episode; the next silence alerts again

        # overspeed
        if v > r.overspeed_kmh:
            if s.over_since is None:
                s.over_since, s.over_max, s.over_raised = t, v, False
            s.over_max = max(s.over_max, v)
            dur = (t - s.over_since) / NS
            if not s.over_raised and dur > r.overspeed_grace_s:
                s.over_raised = True
                out.append(Alert("overspeed", vehicle, org, t,
                                 f"{vehicle} above {r.overspeed_kmh:g} km/h for {dur:.0f} s (max {s.over_max:.0f})",
                                 {**ev_base, "limit_kmh": r.overspeed_kmh, "max_speed_kmh": round(s.over_max, 1),
                                  "duration_s": dur, "since_ns": s.over_since}))
        else:
            s.over_since, s.over_raised = None, False

        # long idle (needs ACC)
        standing = v <= r.idle_speed_kmh
        if fix.acc is True and standing:
            if s.idle_since is None:
                s.idle_since, s.idle_raised = t, False
            dur = (t - s.idle_since) / NS
            if not s.idle_raised and dur >= r.long_idle_s:
                s.idle_raised = True
                out.append(Alert("long_idle", vehicle, org, t, f"{vehicle} idling with the engine on for {dur:.0f} s",
                                 {**ev_base, "duration_s": dur, "since_ns": s.idle_since}))
        else:
            s.idle_since, s.idle_raised = None, False

        # out-of-hours movement
        if standing:
            if s.still_since is None:
                s.still_since = t
        else:
            s.still_since = None
        if r.out_of_hours and self.working is not None:
            working = self.working.is_working(t)
            if working or (s.still_since is not None and (t - s.still_since) / NS >= r.rest_s):
                s.ooh_raised = False
            elif v >= r.moving_kmh and not s.ooh_raised:
                s.ooh_raised = True
                out.append(Alert("out_of_hours", vehicle, org, t,
                                 f"{vehicle} moving outside working time at {_fmt_t(t)}",
                                 {**ev_base, "local_time": _fmt_t(t),
                                  "day": self.working.day_kind(self.working.local_day(t)),
                                  "provisional_calendar": self.working.is_provisional(self.working.local_day(t))}))

        # geofences
        for e in self.fences.update(vehicle, t, fix.lat, fix.lon):
            out.append(Alert(f"geofence_{e.kind}", vehicle, org, t, f"{vehicle} {e.kind}s {e.fence}",
                             {**ev_base, "fence": e.fence}))

        s.active = fix.acc is True or (fix.acc is None and v >= r.moving_kmh)
        s.last = fix
        return out

    def terminal_silent(self, vehicle: str, now_ns: int, silent_s: float, last_seen_ns: int | None = None) -> list[Alert]:
        """``lost_signal`` for a vehicle whose terminal went silent on its connection: no heartbeat
        and no report for longer than its configured interval (the access server tells, once per
        silence). Parked or not: a terminal that heartbeats is not silent. It counts as the
        vehicle's lost-signal episode, so ``tick`` does not raise it again before the next fix."""
        s = self.state(vehicle)
        s.lost_raised = True
        ev: dict[str, float | int | str | bool] = {"silent_s": round(silent_s, 1), "source": "terminal"}
        if last_seen_ns is not None:
            ev["last_ns"] = last_seen_ns
        if s.last is not None:
            ev["lat"], ev["lon"] = s.last.lat, s.last.lon
        since = f", last heard at {_fmt_t(last_seen_ns)}" if last_seen_ns is not None else ""
        return [Alert("lost_signal", vehicle, self.orgs.get(vehicle, ""), now_ns,
                      f"{vehicle}: terminal silent for {silent_s:.0f} s (no heartbeat, no report){since}", ev)]

    def tick(self, now_ns: int) -> list[Alert]:
        """Raise ``lost_signal`` for active vehicles silent for ``lost_signal_s``."""
        out = []
        for vid, s in self.states.items():
            if s.last is None or s.lost_raised or not s.active:
                continue
            silent = (now_ns - s.last.time_ns) / NS
            if silent >= self.rules.lost_signal_s:
                s.lost_raised = True
                out.append(Alert("lost_signal", vid, self.orgs.get(vid, ""), now_ns,
                                 f"{vid} silent for {silent:.0f} s, last seen active at {_fmt_t(s.last.time_ns)}",
                                 {"lat": s.last.lat, "lon": s.last.lon, "silent_s": silent,
                                  "last_ns": s.last.time_ns, "speed_kmh": round(s.speed_kmh, 1)}))
        return out
