"""Energy meters: the list, one meter, its newest reading, its health, its readings (raw or per window),
and the newest reading of every meter within the scope."""

import re
import time
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, HTTPException, Query, Request, Response

from api.params import Cursor, From, Limit, OrgQ, To
from api.problems import ONE, READ
from api.reads import NS, BadCursor, decode_cursor, encode_cursor, field_names, iso, page_raw, rows_from_series
from api.routing import StrictQueryRoute
from api.schemas import MeterHealth, MeterLatest, MeterOut, Page, Reading, Readings
from api.state import Api, ApiState, Who, bad_cursor, state_of
from edge.config import org_within
from edge.point import Point
from edge.query import Where

EVERY = re.compile(r"^([1-9][0-9]{0,6}[smhdw]|day|month)$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_EVERY_S = 366 * 86400  # a window longer than a year: use every=month (or a year's range with every=366d)
MAX_WINDOWS = 10_000

router = APIRouter(route_class=StrictQueryRoute)
hot = APIRouter(route_class=StrictQueryRoute)  # the polled route, which create_app includes before any other


def meter_out(api: ApiState, m) -> MeterOut:
    return MeterOut(id=m.id, org=api.meter_org[m.id], building=m.building, carrier=m.carrier.value, profile=m.profile,
                    interval_s=m.interval_s, ct_ratio=m.ct_ratio, pt_ratio=m.pt_ratio, parent=m.parent,
                    item=m.item, formula=m.formula)


def meter_latest_out(api: ApiState, m, pt: Point) -> MeterLatest:
    """A meter's reading as ``/v1/meters/{id}/latest`` answers it (and the live stream sends it)."""
    return MeterLatest(meter=m.id, org=api.meter_org[m.id], building=m.building, carrier=m.carrier.value,
                       time=iso(pt.time_ns, api.tz), values=dict(pt.fields))


@router.get("/v1/meters", response_model=Page[MeterOut], tags=["meters"], responses=READ)
async def list_meters(p: Who, api: Api, request: Request, org: OrgQ = None,
                      building: Annotated[str | None, Query(max_length=200)] = None,
                      carrier: Annotated[Literal["electricity", "water", "gas", "heat"] | None, Query()] = None,
                      limit: Limit = 100, cursor: Cursor = None) -> Page[MeterOut]:
    scope = api.guard.org_filter(request, p, org)
    if building is not None:
        api.building_or_404(request, p, building)
    page, nxt = api.paged((m for m in api.site.meters if (scope is None or org_within(api.meter_org[m.id], scope))
                           and (building is None or m.building == building)
                           and (carrier is None or m.carrier.value == carrier)), lambda m: m.id, limit, cursor)
    return Page[MeterOut](items=[meter_out(api, m) for m in page], next_cursor=nxt)


@router.get("/v1/meters/{meter_id}", response_model=MeterOut, tags=["meters"], responses=ONE)
async def get_meter(meter_id: str, p: Who, api: Api, request: Request) -> MeterOut:
    return meter_out(api, api.meter_or_404(request, p, meter_id))


@hot.get("/v1/meters/{meter_id}/latest", response_model=MeterLatest, tags=["meters"], responses=ONE)
async def meter_latest(meter_id: str, request: Request) -> MeterLatest:
    """The newest reading of a meter (from live state, else the store)."""
    # the state and the caller are read here, not as dependencies: this route is the hot one
    api = state_of(request)
    p = await api.guard.principal(request)
    m = api.meter_or_404(request, p, meter_id)
    pt = await api.latest_point("meter", "meter", meter_id)
    if pt is None:
        raise HTTPException(404, f"meter {meter_id!r} has no reading yet")
    # the hot path of dashboards and the province's polling: built as MeterLatest documents it,
    # serialised once with orjson instead of validated again by pydantic (the test suite checks the shape)
    return Response(orjson.dumps({"meter": m.id, "org": api.meter_org[m.id], "building": m.building,
                                  "carrier": m.carrier.value, "time": iso(pt.time_ns, api.tz), "values": pt.fields}),
                    media_type="application/json")


def device_health(api: ApiState, meter_id: str) -> dict[str, Any]:
    """The poller's view of a meter (``modbus.health()``) when the service runs, times as ISO 8601."""
    modbus = getattr(api.service, "modbus", None) if api.service is not None else None
    if modbus is None:
        return {}
    h = modbus.health().get(meter_id)
    if h is None:
        return {}
    d = h.as_dict() if hasattr(h, "as_dict") else dict(vars(h))
    out = {}
    for k, v in d.items():
        if k.endswith("_ns") and isinstance(v, int):
            out[k[:-3]] = iso(v, api.tz)
        elif isinstance(v, (str, int, float, bool, type(None), dict)):
            out[k] = v
    return out


@router.get("/v1/meters/{meter_id}/health", response_model=MeterHealth, tags=["meters"], responses=ONE)
async def meter_health(meter_id: str, p: Who, api: Api, request: Request) -> MeterHealth:
    """up / down from the poller when the service runs; else stale / up from the newest reading's age."""
    m = api.meter_or_404(request, p, meter_id)
    pt = await api.latest_point("meter", "meter", meter_id)
    dev = device_health(api, meter_id)
    age = None if pt is None else max(0.0, (time.time_ns() - pt.time_ns) / NS)
    if m.virtual:
        status = "virtual"
    elif dev.get("up") is False:
        status = "down"
    elif pt is None:
        status = "unknown"
    elif age is not None and age > max(3 * m.interval_s, 60.0):
        status = "stale"
    else:
        status = "up"
    events = getattr(getattr(api.service, "indicators", None), "event_log", None)  # counter events, counted once
    return MeterHealth(meter=meter_id, status=status, last_reading=None if pt is None else iso(pt.time_ns, api.tz),
                       age_s=None if age is None else round(age, 3), interval_s=m.interval_s, device=dev,
                       data=events.for_meter(meter_id) if events is not None else {})


@router.get("/v1/meters/{meter_id}/readings", response_model=Readings, tags=["meters"], responses=ONE)
async def meter_readings(
        meter_id: str, p: Who, api: Api, request: Request, start: From = None, end: To = None,
        every: Annotated[str | None, Query(max_length=12, pattern=EVERY.pattern,
                                           description="window: 900s, 15m, 1h, 1d, day or month (site-local calendar); omit for raw")] = None,
        agg: Annotated[Literal["mean", "sum", "min", "max", "first", "last", "count", "spread"], Query(
            description="aggregate per window; `spread` of a counter is the consumption")] = "mean",
        fields: Annotated[str | None, Query(max_length=1000, description="comma-separated field names; default all")] = None,
        limit: Limit = 500, cursor: Cursor = None) -> Readings:
    """Raw readings (paged), or one aggregate per window. Default range: the last 24 h."""
    m = api.meter_or_404(request, p, meter_id)
    q = api.require_query()
    s, e = api.span(start, end, 86400)
    where = Where(tags={"meter": meter_id}, org=p.org)
    names = [f for f in (fields.split(",") if fields else await api.run(field_names(q, "meter", where))) if f]
    if every is None:
        rows, nxt = await api.run(page_raw(q, "meter", names, where, s, e, limit, cursor, m.interval_s))
        return Readings(meter=meter_id, items=[Reading(time=iso(r.time_ns, api.tz), values=r.values) for r in rows],
                        next_cursor=nxt)
    if every_s(every) > MAX_EVERY_S:
        raise HTTPException(400, f"`every` is at most {MAX_EVERY_S // 86400} days ({MAX_EVERY_S // 86400}d, 52w, "
                                 f"{MAX_EVERY_S // 3600}h); for longer windows use every=month")
    n_windows = window_count(every, s, e)
    if n_windows > MAX_WINDOWS:
        raise HTTPException(400, f"{n_windows} windows; at most {MAX_WINDOWS}: narrow the range or widen `every`")
    if cursor:
        try:
            c_t, _ = decode_cursor(cursor)
        except BadCursor as ex:
            raise bad_cursor(ex) from None
        s = max(s, c_t)
        if s >= e:
            return Readings(meter=meter_id, every=every, agg=agg, items=[])
    series = await api.run(q.windows("meter", names, s, e, every, agg, where, api.site.site.timezone))
    rows = rows_from_series(series)
    page = rows[:limit]
    nxt = None
    if len(rows) > limit:
        nxt = encode_cursor(rows[limit].time_ns, 0)
    return Readings(meter=meter_id, every=every, agg=agg, next_cursor=nxt,
                    items=[Reading(time=iso(r.time_ns, api.tz), values=r.values) for r in page])


@router.get("/v1/latest/meters", response_model=list[MeterLatest], tags=["meters"], responses=READ)
async def latest_meters(p: Who, api: Api, request: Request, org: OrgQ = None,
                        building: Annotated[str | None, Query(max_length=200)] = None) -> list[MeterLatest]:
    """The newest reading of every meter within the scope (for dashboards)."""
    scope = api.guard.org_filter(request, p, org)
    if building is not None:
        api.building_or_404(request, p, building)
    out = []
    for m in api.site.meters:
        if (scope is None or org_within(api.meter_org[m.id], scope)) and (building is None or m.building == building):
            pt = api.ctx.live.latest("meter", m.id)
            if pt is not None:
                out.append(meter_latest_out(api, m, pt))
    return out


# -- windows (pure) ----------------------------------------------------------------------------------
def every_s(every: str) -> int:
    """The length of a fixed window (``15m``, ``52w``) in seconds; calendar windows (day, month) count as
    their longest."""
    if every == "day":
        return 86400
    if every == "month":
        return 31 * 86400
    return int(every[:-1]) * _UNIT_S[every[-1]]


def window_count(every: str, s: int, e: int) -> int:
    """At most how many windows of ``every`` the range ``[s, e)`` (ns) spans."""
    if every == "day":
        return (e - s) // (86400 * NS) + 2
    if every == "month":
        return (e - s) // (28 * 86400 * NS) + 2
    n, unit = int(every[:-1]), every[-1]
    return (e - s) // (n * _UNIT_S[unit] * NS) + 1
