"""The roll-up view of a district, city or province user (DB33/T 2474-2022 6.2.5-6.2.6): the org's
direct children (an institution: its buildings) side by side for a day, a month or a year, each row a
link down to its own roll-up.

Every figure is one the indicator jobs wrote (``energy_indicator`` rows with carrier ``all`` of each
org and building, ``fleet_indicator`` org rows, ``energy_baseline`` month and year reports and
``energy_baseline_day`` rows, ``energy_anomaly`` days); the arithmetic that puts them side by side
(quota proration, savings of the top meters, ranking) is ``analytics.rollup``. Four reads of the
store per answer, kept while the store has not changed them (``api.cache``).
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request

from analytics.rollup import Savings, day_report, period_span, quota_for, quota_progress, rank, savings_of
from api.cache import cacheable
from api.params import OrgQ
from api.problems import ONE
from api.reads import NS, field_names, iso, rows_from_series
from api.routing import CachedQueryRoute
from api.schemas import Rollup, RollupRow
from api.state import NO_ORG, Api, ApiState, Who
from edge.config import check_org_path, org_within
from edge.query import Where

router = APIRouter(route_class=CachedQueryRoute)

SORTABLE = ("kwh_per_m2", "kwh", "kgce", "kgce_per_person", "quota_progress", "savings_kwh", "savings_pct",
            "utilisation", "dispatch_rate", "holiday_trips", "trips", "anomalies", "vehicles", "floor_area_m2",
            "occupants", "buildings")
Sort = Literal[SORTABLE]  # type: ignore[valid-type]
ENERGY_FIELDS = ["electricity_kwh", "kwh_per_m2", "kgce", "kgce_per_person"]
FLEET_FIELDS = ["utilisation", "dispatch_rate", "holiday_trips", "trips"]
AT_MIN, AT_MAX = dt.date(1970, 1, 2), dt.date(2099, 12, 31)   # what the store's times (int64 ns) and ISO answers hold
MEASUREMENTS = ("energy_indicator", "fleet_indicator", "energy_baseline", "energy_baseline_day", "energy_anomaly")


class Scope:
    """One row's things: its buildings, meters (all, and the top electricity ones) and vehicles."""

    def __init__(self, api: ApiState, org: str, building: str | None = None) -> None:
        site = api.site
        if building is None:
            self.buildings = [b for b in site.buildings if org_within(b.org, org)]
            meters = [m for m in site.meters if org_within(api.meter_org[m.id], org)]
            self.vehicles = [v for v in site.vehicles if org_within(v.org, org)]
        else:
            self.buildings = [api.buildings[building]]
            meters = [m for m in site.meters if m.building == building]
            self.vehicles = []
        self.meters = [m.id for m in meters]
        self.top = [m.id for m in meters if m.carrier.value == "electricity" and not m.virtual and m.parent is None]


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


async def _values(api: ApiState, measurement: str, fields: list[str], tags: dict, s: int, e: int,
                  scope: str | None) -> dict[tuple, dict]:
    """Rows of a measurement in [s, e) by their tags' (scope, id) or meter, with their values."""
    series = await api.run(api.ctx.query.raw(measurement, fields, s, e, Where(tags=tags, org=scope)))
    out: dict[tuple, dict] = {}
    for r in rows_from_series(series):
        key = (r.tags.get("scope"), r.tags.get("id")) if "id" in r.tags else (r.tags.get("meter"), r.time_ns)
        out.setdefault(key, {}).update(r.values)
    return out


@router.get("/v1/rollup", response_model=Rollup, tags=["rollup"], responses=ONE)
async def rollup(
        p: Who, api: Api, request: Request, org: OrgQ = None,
        period: Annotated[Literal["day", "month", "year"], Query(description="the period of the figures")] = "month",
        at: Annotated[dt.date | None, Query(description="a day in the period (site-local); default today")] = None,
        sort: Annotated[Sort | None, Query(description="rank by this field (default kwh_per_m2)")] = None,
        order: Annotated[Literal["desc", "asc"], Query(description="desc: highest first")] = "desc") -> Rollup:
    """An org's children side by side (an institution's: its buildings): energy per m² and per person,
    the annual quota's progress, savings against the weather-normalised baseline, anomalous days, and
    the vehicles' utilisation, 出车率 and holiday trips, for the day, month or year containing `at`.
    Default org: the key's (with auth off, the top of the tree); another org's is a 404."""
    if api.ctx.query is None:
        raise HTTPException(503, "no store is attached to this API")
    if org is None:
        org = p.org or next((o.path for o in api.site.orgs if o.parent is None), None)
        if org is None:
            raise HTTPException(404, NO_ORG)
    try:
        check_org_path(org)
    except ValueError:
        raise HTTPException(404, NO_ORG) from None
    me = api.org_or_404(request, p, org)
    now = time.time_ns()
    today = dt.datetime.fromtimestamp(now / NS, api.tz).date()
    if at is not None and not (AT_MIN <= at <= AT_MAX):
        raise HTTPException(400, f"`at` must be a day from {AT_MIN} to {AT_MAX}")
    span = period_span(period, at or today, today)
    s = int(dt.datetime.combine(span.first, dt.time(), api.tz).timestamp()) * NS
    e = int(dt.datetime.combine(span.end, dt.time(), api.tz).timestamp()) * NS
    tomorrow = int(dt.datetime.combine(today + dt.timedelta(days=1), dt.time(), api.tz).timestamp()) * NS
    # an answer about "today" (the default, or a period not yet over) holds until midnight at most
    cacheable(request, MEASUREMENTS, s, e, tomorrow if (at is None or span.end > today) else 2**63 - 1)

    kids = [o for o in api.site.orgs if o.parent == me.path and p.sees(o.path)]
    rows_of: list[tuple[str, str | None, str, str, Scope]] = [
        (o.path, None, o.name, o.kind, Scope(api, o.path)) for o in kids]
    rows_of += [(b.org, b.id, b.name or b.id, "building", Scope(api, b.org, b.id))
                for b in api.site.buildings if b.org == me.path]
    whole = Scope(api, me.path)

    ids_org = tuple([me.path, *(o.path for o in kids)])
    ids_bld = tuple(b.id for b in api.site.buildings if b.org == me.path)
    energy = await _values(api, "energy_indicator", ENERGY_FIELDS,
                           {"period": period, "carrier": "all", "scope": ("org", "building"),
                            "id": ids_org + ids_bld}, s, s + 1, me.path)
    fleet = await _values(api, "fleet_indicator", FLEET_FIELDS, {"period": period, "scope": "org", "id": ids_org},
                          s, s + 1, me.path)
    tops = tuple(whole.top)
    if period == "day":
        days = await _values(api, "energy_baseline_day", ["predicted", "actual", "lower", "upper"], {"meter": tops},
                             s, s + 1, me.path)
        reports = {m: day_report(v["predicted"], v["actual"], v.get("lower"), v.get("upper"))
                   for (m, _), v in days.items() if "actual" in v and "predicted" in v}
    else:
        rep = await _values(api, "energy_baseline", ["savings", "predicted", "savings_uncertainty", "reasons",
                                                     "reporting_reasons"], {"period": period, "meter": tops}, s, s + 1,
                            me.path)
        reports = {m: v for (m, _), v in rep.items()}
    anomalies: dict[str, int] = {}
    names = await api.run(field_names(api.ctx.query, "energy_anomaly", Where(org=me.path)))
    for (m, _), _v in (await _values(api, "energy_anomaly", names, {}, s, e, me.path) if names else {}).items():
        anomalies[m] = anomalies.get(m, 0) + 1   # days (a meter's day counts once, whatever rules fired)

    def row(org_path: str, building: str | None, name: str, level: str, sc: Scope) -> dict:
        key = ("building", building) if building else ("org", org_path)
        en, fl = energy.get(key, {}), fleet.get(("org", org_path), {}) if building is None else {}
        area = float(sum(b.floor_area_m2 for b in sc.buildings))
        kwh_m2 = _num(en.get("kwh_per_m2"))
        quota = quota_for((b.floor_area_m2, b.quota_class) for b in sc.buildings)
        sv: Savings = savings_of(sc.top, reports)
        return {
            "org": org_path, "building": building, "name": name, "level": level, "buildings": len(sc.buildings),
            "floor_area_m2": area, "occupants": int(sum(b.occupants for b in sc.buildings)),
            "kwh": _num(en.get("electricity_kwh")), "kwh_per_m2": kwh_m2, "kgce": _num(en.get("kgce")),
            "kgce_per_person": _num(en.get("kgce_per_person")), "quota_kwh_per_m2": quota,
            "quota_progress": quota_progress(kwh_m2, quota, span), "savings_kwh": sv.kwh,
            "savings_pct": None if sv.fraction is None else 100.0 * sv.fraction,
            "savings_uncertainty_kwh": sv.uncertainty_kwh, "savings_reasons": list(sv.reasons),
            "anomalies": sum(anomalies.get(m, 0) for m in sc.meters), "vehicles": len(sc.vehicles),
            "utilisation": _num(fl.get("utilisation")), "dispatch_rate": _num(fl.get("dispatch_rate")),
            "trips": None if fl.get("trips") is None else int(fl["trips"]),
            "holiday_trips": None if fl.get("holiday_trips") is None else int(fl["holiday_trips"]),
            "href": (f"/v1/indicators/energy?scope=building&id={building}&period={period}" if building
                     else f"/v1/rollup?org={org_path}&period={period}"
                          + (f"&at={at.isoformat()}" if at is not None else "")),
        }

    key = sort or "kwh_per_m2"
    rows = rank([row(*r) for r in rows_of], key, order == "desc")
    total = row(me.path, None, me.name, me.kind, whole)
    return Rollup(org=me.path, name=me.name, level=me.kind, period=period, start=iso(s, api.tz), end=iso(e, api.tz),
                  elapsed=span.elapsed, ranked_by=key, order=order, total=RollupRow(**total),
                  rows=[RollupRow(**r) for r in rows])
