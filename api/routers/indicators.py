"""Indicators the analytics wrote: energy (``energy_indicator``), fleet (``fleet_indicator``) and the
weather-normalised baselines (``energy_baseline``). The API reads them; it computes none."""

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request

from api.keys import Principal
from api.params import Cursor, From, Limit, OrgQ, To
from api.problems import ONE
from api.reads import NS, Row, iso
from api.cache import cacheable
from api.routing import CachedQueryRoute, StrictQueryRoute
from api.schemas import Baseline, BaselineDay, EnergyAnomaly, Indicator, Page
from api.state import Api, ApiState, Who

BASELINE_SAVINGS = ("reporting_days", "predicted", "actual", "savings", "savings_fraction", "fsu",
                    "savings_uncertainty")
BASELINE_META = ("sufficient", "reasons", "reporting_sufficient", "reporting_reasons", "notes")

router = APIRouter(route_class=StrictQueryRoute)
cached = APIRouter(route_class=CachedQueryRoute)  # the polled indicator reads: answers kept (api/cache.py)
MINUTE_NS = 60 * NS


def scope_check(api: ApiState, request: Request, p: Principal, scope: str, ident: str | None) -> None:
    """The thing an indicator is about (``id``) exists within the caller's org, or 404."""
    if ident is None:
        return
    if scope == "org":
        api.org_or_404(request, p, ident)
    elif scope == "building":
        api.building_or_404(request, p, ident)
    elif scope == "meter":
        api.meter_or_404(request, p, ident)
    elif scope == "vehicle":
        api.vehicle_or_404(request, p, ident)


async def indicators(api: ApiState, measurement: str, p: Principal, request: Request, scope: str, ident: str | None,
                     period: str, org: str | None, carrier: str | None, s: int, e: int, limit: int,
                     cursor: str | None) -> Page[Indicator]:
    scope_check(api, request, p, scope, ident)
    org_scope = api.guard.org_filter(request, p, org)
    tags: dict[str, Any] = {"scope": scope, "period": period}
    if ident is not None:
        tags["id"] = ident
    if carrier is not None:
        tags["carrier"] = carrier
    hint = {"day": 86400.0, "month": 30 * 86400.0, "year": 365 * 86400.0}.get(period, 86400.0)
    rows, nxt = await api.records(measurement, tags, org_scope, s, e, limit, cursor, hint / 50)
    items = []
    for r in rows:
        t = r.tags
        items.append(Indicator(scope=t.get("scope", scope), id=t.get("id", ""), org=t.get("org", ""),
                               period=t.get("period", period), carrier=t.get("carrier"),
                               start=iso(r.time_ns, api.tz), values=r.values))
    return Page[Indicator](items=items, next_cursor=nxt)


@cached.get("/v1/indicators/energy", response_model=Page[Indicator], tags=["indicators"], responses=ONE)
async def energy_indicators(
        p: Who, api: Api, request: Request,
        scope: Annotated[Literal["org", "building", "meter"], Query(description="what the indicator is about")] = "org",
        id: Annotated[str | None, Query(max_length=300, description="org path, building id or meter id; default all")] = None,
        period: Literal["day", "month", "year"] = "day", org: OrgQ = None,
        carrier: Annotated[str | None, Query(max_length=40)] = None,
        start: From = None, end: To = None, limit: Limit = 100, cursor: Cursor = None) -> Page[Indicator]:
    """Energy indicators (measurement `energy_indicator`, written by the analytics): consumption, kgce,
    kgCO2, peak, load factor, base load, off-hours share... by period start. Default range: the last 31 days
    (to the minute). Answers are kept while the store has not changed what they read (api/cache.py)."""
    s, e = api.span(start, end, 31 * 86400)
    valid_until = 2**63 - 1
    if end is None:  # "until now": to the minute, so that polls within a minute ask (and get) the same
        e = -(-e // MINUTE_NS) * MINUTE_NS
        s = e - 31 * 86400 * NS if start is None else s
        valid_until = e
    cacheable(request, ("energy_indicator",), s, e, valid_until)
    return await indicators(api, "energy_indicator", p, request, scope, id, period, org, carrier, s, e, limit, cursor)


@router.get("/v1/indicators/fleet", response_model=Page[Indicator], tags=["indicators"], responses=ONE)
async def fleet_indicators(
        p: Who, api: Api, request: Request,
        scope: Annotated[Literal["org", "vehicle"], Query()] = "org",
        id: Annotated[str | None, Query(max_length=300, description="org path or vehicle id; default all")] = None,
        period: Literal["day", "week", "month", "year"] = "day", org: OrgQ = None,
        start: From = None, end: To = None, limit: Limit = 100, cursor: Cursor = None) -> Page[Indicator]:
    """Fleet indicators (measurement `fleet_indicator`): trips, mileage, utilisation, 出车率 (dispatch rate)..."""
    s, e = api.span(start, end, 31 * 86400)
    return await indicators(api, "fleet_indicator", p, request, scope, id, period, org, None, s, e, limit, cursor)


def baseline_out(api: ApiState, r: Row) -> Baseline:
    v = r.values

    def codes(k: str) -> list[str]:
        return [c for c in str(v.get(k) or "").split(",") if c]

    sufficient = v.get("sufficient") is True
    rep_ok = v.get("reporting_sufficient")
    shown = sufficient and rep_ok is not False and "savings" in v     # never a figure beside a refusal
    return Baseline(meter=r.tags.get("meter", ""), org=r.tags.get("org", ""), model_type=r.tags.get("model_type", ""),
                    start=iso(r.time_ns, api.tz), sufficient=sufficient, reasons=codes("reasons"),
                    reporting_sufficient=rep_ok if isinstance(rep_ok, bool) else None,
                    reporting_reasons=codes("reporting_reasons"),
                    notes=[n for n in str(v.get("notes") or "").split("; ") if n],
                    model={k: x for k, x in v.items() if k not in BASELINE_SAVINGS and k not in BASELINE_META},
                    savings={k: v[k] for k in BASELINE_SAVINGS if k in v} if shown else None)


@router.get("/v1/indicators/baseline", response_model=Page[Baseline], tags=["indicators"], responses=ONE)
async def baseline_indicators(
        p: Who, api: Api, request: Request,
        id: Annotated[str | None, Query(max_length=300, description="meter id; default all")] = None,
        period: Annotated[Literal["month", "year"] | None,
                          Query(description="the service's reporting periods: the month or the year so far")] = None,
        org: OrgQ = None, start: From = None, end: To = None, limit: Limit = 100,
        cursor: Cursor = None) -> Page[Baseline]:
    """Weather-normalised baselines per meter (measurement `energy_baseline`: the service's month and year
    so far, `period`, written when a day closes; `edge analytics baseline`'s own ranges), by reporting period
    start; default range: the last 366 days. Savings appear only when the baseline and the reporting period
    meet CalTRACK's data sufficiency rules; otherwise `reasons` say why."""
    scope_check(api, request, p, "meter", id)
    s, e = api.span(start, end, 366 * 86400)
    tags: dict[str, Any] = {"meter": id} if id is not None else {}
    if period is not None:
        tags["period"] = period
    rows, nxt = await api.records("energy_baseline", tags, api.guard.org_filter(request, p, org), s, e, limit, cursor,
                                  86400.0)
    return Page[Baseline](items=[baseline_out(api, r) for r in rows], next_cursor=nxt)


@router.get("/v1/indicators/baseline/days", response_model=Page[BaselineDay], tags=["indicators"], responses=ONE)
async def baseline_days(
        p: Who, api: Api, request: Request,
        id: Annotated[str | None, Query(max_length=300, description="meter id; default all")] = None,
        org: OrgQ = None, start: From = None, end: To = None, limit: Limit = 1000,
        cursor: Cursor = None) -> Page[BaselineDay]:
    """Day by day, a meter's use against its month's baseline model (measurement `energy_baseline_day`):
    `actual`, `predicted` at the day's temperature, the 95 % prediction interval `lower`..`upper`,
    `temp_c`, and `reporting` (false in the baseline period, where the line is the fit itself). Oldest
    first; default range: the last 366 days."""
    scope_check(api, request, p, "meter", id)
    s, e = api.span(start, end, 366 * 86400)
    rows, nxt = await api.records("energy_baseline_day", {"meter": id} if id is not None else {},
                                  api.guard.org_filter(request, p, org), s, e, limit, cursor, 86400.0)
    return Page[BaselineDay](items=[BaselineDay(meter=r.tags.get("meter", ""), org=r.tags.get("org", ""),
                                                start=iso(r.time_ns, api.tz), values=r.values) for r in rows],
                             next_cursor=nxt)


@router.get("/v1/indicators/anomalies", response_model=Page[EnergyAnomaly], tags=["indicators"], responses=ONE)
async def energy_anomalies(
        p: Who, api: Api, request: Request,
        meter: Annotated[str | None, Query(max_length=300, description="meter id; default all")] = None,
        org: OrgQ = None, start: From = None, end: To = None, limit: Limit = 100,
        cursor: Cursor = None) -> Page[EnergyAnomaly]:
    """Days a meter's use fell outside its baseline model's 95 % prediction interval (measurement
    `energy_anomaly`, written with the month's baseline), each with its `rule` and evidence (`actual`,
    `predicted`, `lower`, `upper`, `temp_c`). Oldest first; default range: the last 31 days."""
    scope_check(api, request, p, "meter", meter)
    s, e = api.span(start, end, 31 * 86400)
    rows, nxt = await api.records("energy_anomaly", {"meter": meter} if meter is not None else {},
                                  api.guard.org_filter(request, p, org), s, e, limit, cursor, 86400.0)
    return Page[EnergyAnomaly](items=[EnergyAnomaly(meter=r.tags.get("meter", ""), org=r.tags.get("org", ""),
                                                    rule=r.tags.get("rule", ""), start=iso(r.time_ns, api.tz),
                                                    values=r.values) for r in rows], next_cursor=nxt)
