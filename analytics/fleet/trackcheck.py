"""Check an exported track: the service's cleaning and segmentation on fixes from a file.

``check_track(tracks, now_ns, params)`` runs exactly what the fleet job runs (``clean``, then
``segment``, then the mileage split into driven and unobserved and the odometer comparison) and
returns plain values: per vehicle the trips, the stops, driven and unobserved km, the odometer,
and the cleaning report (fixes dropped per reason, fixes snapped). ``edge analytics track`` prints
it; ``as_dict`` is its JSON.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from analytics.fleet.indicators import FleetParams, odometer_params, trip_odometer
from analytics.fleet.odometer import differ, odometer_steps, spans
from analytics.fleet.tracks import NS, CleanParams, Tracks, clean
from analytics.fleet.trips import TripParams, segment


@dataclass(frozen=True)
class TripRow:
    start: str
    end: str
    distance_km: float
    duration_min: float
    max_speed_kmh: float
    mean_speed_kmh: float
    idle_min: float
    method: str
    odometer_km: float | None
    odometer_mismatch: bool | None


@dataclass(frozen=True)
class StopRow:
    start: str
    end: str
    duration_min: float
    lat: float
    lon: float


@dataclass
class VehicleCheck:
    vehicle: str
    fixes: int
    kept: int
    dropped: dict[str, int]
    snapped: int
    driven_km: float
    unobserved_km: float
    odometer_km: float | None
    odometer_note: str
    odometer_mismatch: bool
    trips: list[TripRow] = field(default_factory=list)
    stops: list[StopRow] = field(default_factory=list)


def _iso(t_ns: int, tz: dt.timezone) -> str:
    return dt.datetime.fromtimestamp(t_ns / NS, tz).isoformat(timespec="seconds")


def _opt(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 3)


def check_track(tracks: Tracks, now_ns: int, clean_params: CleanParams = CleanParams(),
                trip_params: TripParams = TripParams(), fleet_params: FleetParams = FleetParams(),
                tz: dt.timezone = dt.timezone(dt.timedelta(hours=8))) -> list[VehicleCheck]:
    c = clean(tracks, now_ns, clean_params)
    tr = c.tracks
    seg = segment(tr, trip_params)
    trips = seg.trips
    odo_trip, mism_trip = trip_odometer(tr, trips, fleet_params)
    g = tr.group
    nv = tr.n_vehicles
    in_trip = seg.trip_step
    unseen = seg.gap_step & (seg.step_m >= fleet_params.min_unobserved_m)
    driven = np.bincount(g[in_trip], weights=seg.step_m[in_trip], minlength=nv) / 1000.0
    unobs = np.bincount(g[unseen], weights=seg.step_m[unseen], minlength=nv) / 1000.0
    op = odometer_params(fleet_params)
    nonempty = np.diff(tr.offsets) > 0
    first = np.where(nonempty, tr.offsets[:-1], 0)
    last = np.where(nonempty, tr.offsets[1:] - 1, 0)
    whole = spans(odometer_steps(tr, op), tr.t_ns, first, last, op)
    notes = whole.notes()
    counts_in = np.diff(tracks.offsets)
    out = []
    for k, vid in enumerate(tr.vehicles):
        sel = np.flatnonzero(trips.vehicle_idx == k)
        with_odo = sel[~np.isnan(odo_trip[sel])]
        odo_sum = float(odo_trip[with_odo].sum()) if len(with_odo) else math.nan
        gps_sum = float(trips.distance_m[with_odo].sum()) / 1000 if len(with_odo) else math.nan
        v = VehicleCheck(
            vid, int(counts_in[k]), int(tr.offsets[k + 1] - tr.offsets[k]),
            {r: int(a[k]) for r, a in c.dropped.items() if a[k]}, int(c.jitter_snapped[k]),
            round(float(driven[k]), 3), round(float(unobs[k]), 3),
            _opt(whole.km[k]) if nonempty[k] else None, notes[k] if nonempty[k] else "absent",
            bool(differ(odo_sum, gps_sum, op)))
        for i in sel:
            v.trips.append(TripRow(
                _iso(int(trips.start_ns[i]), tz), _iso(int(trips.end_ns[i]), tz), round(trips.distance_m[i] / 1000, 3),
                round(trips.duration_s[i] / 60, 1), round(float(trips.max_speed_kmh[i]), 1),
                round(float(trips.mean_speed_kmh[i]), 1), round(trips.idle_s[i] / 60, 1),
                "acc" if trips.by_acc[i] else "distance", _opt(odo_trip[i]),
                None if math.isnan(odo_trip[i]) else bool(mism_trip[i])))
        for s, e in zip(seg.stop_first[seg.stop_vehicle == k], seg.stop_last[seg.stop_vehicle == k]):
            m = (s + e) // 2
            v.stops.append(StopRow(_iso(int(tr.t_ns[s]), tz), _iso(int(tr.t_ns[e]), tz),
                                   round((tr.t_ns[e] - tr.t_ns[s]) / NS / 60, 1), round(float(tr.lat[m]), 6),
                                   round(float(tr.lon[m]), 6)))
        out.append(v)
    return out


def as_dict(checks: list[VehicleCheck]) -> dict:
    return {"vehicles": [asdict(v) for v in checks]}
