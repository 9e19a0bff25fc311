"""Fleet indicators of a month or a year from the vehicles' day rows.

The day is the unit the fleet pass computes (``analytics.fleet.jobs``); a month's or a year's figures
follow from its days without reading a position again:

- sums: ``trips``, ``mileage_km``, ``gps_km``, ``unobserved_km``, ``driving_h``, ``idle_h``,
  ``in_use_h``, ``available_h``, the off-hours, weekend and holiday trips, ``overnight_away``;
- ``utilisation`` (利用率): in-trip working hours summed ÷ available hours summed (not a mean of
  daily ratios: a holiday with no working time weighs nothing);
- ``dispatch_rate`` (出车率) of an org: vehicles in service with at least one trip in the period ÷
  vehicles in service (``org_indicators`` over the summed vehicles);
- the odometer: summed over the days that have a figure; the note says ``trusted`` only when every
  day with readings was trusted, else the first other note; ``mileage_source`` is the days' common
  source, or ``mixed``.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Mapping, Sequence

from analytics.fleet.indicators import VehicleIndicators, VehicleInfo, fleet_indicator_points, org_indicators
from edge.point import Point


def sum_days(days: Sequence[Sequence[VehicleIndicators]], infos: Sequence[VehicleInfo] | None = None
             ) -> list[VehicleIndicators]:
    """One ``VehicleIndicators`` per vehicle over all ``days`` (each a list of the vehicles' day rows).
    ``infos``: the vehicles to report, in this order (a vehicle without a day row gets zeros)."""
    by: dict[str, list[VehicleIndicators]] = {}
    for rows in days:
        for v in rows:
            by.setdefault(v.vehicle, []).append(v)
    order = [i.id for i in infos] if infos is not None else list(by)
    meta = {i.id: i for i in infos} if infos is not None else {}
    out = []
    for vid in order:
        rows = by.get(vid, [])
        info = meta.get(vid)
        org = rows[-1].org if rows else (info.org if info else "")
        in_service = rows[-1].in_service if rows else (info.in_service if info else True)
        avail = sum(r.available_h for r in rows)
        work = sum(r.working_in_use_h for r in rows)
        odo = [r.odometer_km for r in rows if not math.isnan(r.odometer_km)]
        notes = [r.odometer_note for r in rows if r.odometer_note != "absent"]
        note = "trusted" if notes and all(n == "trusted" for n in notes) else (
            next((n for n in notes if n != "trusted"), "absent"))
        odo_trips = [r.odometer_trips_km for r in rows if not math.isnan(r.odometer_trips_km)]
        sources = {r.mileage_source for r in rows if r.trips or r.mileage_km}
        out.append(VehicleIndicators(
            vid, org, in_service, sum(r.trips for r in rows), sum(r.mileage_km for r in rows),
            float(sum(odo)) if odo else math.nan, note, sum(r.driving_h for r in rows), sum(r.idle_h for r in rows),
            sum(r.in_use_h for r in rows), work, avail, work / avail if avail > 0 else math.nan,
            sum(r.off_hours_trips for r in rows), sum(r.weekend_trips for r in rows),
            sum(r.holiday_trips for r in rows), sum(r.overnight_away for r in rows),
            sum(r.gps_km for r in rows), sum(r.unobserved_km for r in rows),
            float(sum(odo_trips)) if odo_trips else math.nan, any(r.odometer_mismatch for r in rows),
            sources.pop() if len(sources) == 1 else ("mixed" if sources else "gps")))
    return out


def _f(fields: Mapping[str, object], name: str, default: float = 0.0) -> float:
    v = fields.get(name)
    if v is None or isinstance(v, str):
        return default
    return float(v)


def from_fields(vehicle: str, org: str, fields: Mapping[str, object]) -> VehicleIndicators:
    """A vehicle's day row as stored (``fleet_indicator_points``' fields) back into ``VehicleIndicators``;
    in-trip working hours are ``utilisation × available_h`` (the row does not carry them)."""
    avail = _f(fields, "available_h")
    util = _f(fields, "utilisation", math.nan)
    return VehicleIndicators(
        vehicle, org, True, int(_f(fields, "trips")), _f(fields, "mileage_km"), _f(fields, "odometer_km", math.nan),
        str(fields.get("odometer_note", "absent")), _f(fields, "driving_h"), _f(fields, "idle_h"),
        _f(fields, "in_use_h"), util * avail if not math.isnan(util) else 0.0, avail, util,
        int(_f(fields, "off_hours_trips")), int(_f(fields, "weekend_trips")), int(_f(fields, "holiday_trips")),
        int(_f(fields, "overnight_away")), _f(fields, "gps_km"), _f(fields, "unobserved_km"),
        _f(fields, "odometer_trips_km", math.nan), bool(fields.get("odometer_mismatch", False)),
        str(fields.get("mileage_source", "gps")))


def period_points(days: Sequence[Sequence[VehicleIndicators]], infos: Sequence[VehicleInfo], period: str,
                  start_ns: int, provisional_calendar: bool = False) -> list[Point]:
    """``fleet_indicator`` points of a month or a year (``period``) starting at ``start_ns`` from its days."""
    per_v = sum_days(days, infos)
    for k, (v, info) in enumerate(zip(per_v, infos)):
        if v.in_service != info.in_service:  # the site file's word now, not a stored row's
            per_v[k] = replace(v, in_service=info.in_service)
    return fleet_indicator_points(per_v, org_indicators(per_v), period, start_ns,
                                  provisional_calendar=provisional_calendar)
