"""The HTTP API: ``/v1`` resources for the provincial platform, facility managers and dispatchers.

``create_app(ctx)`` builds the FastAPI app from an ``ApiContext``. Every route takes the caller's
``Principal`` (``api.security.Guard``) and answers only with what lies within its org: a thing of
another org is a 404 (audited), an ``org`` filter outside the scope is a 403 (audited), and every
series query runs with the key's org as a filter (``edge.query.Where.org``), so aggregates and
indicators never mix in other orgs' data. See docs/api.md.
"""


import asyncio
import hashlib
import re
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from fastapi import FastAPI, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles

from api import problems
from api.context import ApiContext
from api.keys import KeyError_, KeyStore, LastAdminKey, Principal, Role
from api.params import Crs, Cursor, From, Limit, OrgQ, To
from api.problems import ONE, READ, responses
from api.reads import (NS, BadCursor, Row, decode_cursor, decode_int_cursor, encode_cursor, encode_int_cursor, iso,
                       page_raw, rows_from_series, field_names)
from api.routing import StrictQueryRoute
from api.schemas import (Alert, AuditOut, Baseline, BuildingOut, DeadLetterOut, Fix, Health, Indicator, KeyCreate, KeyCreated,
                         KeyOut, MeterHealth, MeterLatest, MeterOut, OrgNode, OrgOut, OrgTree, Page, Readings, Reading,
                         Record, Replayed, Track, VehicleLatest, VehicleOut)
from api.security import Guard, install_access_log_redaction
from api.state import NO_ORG, ApiState, Scraper, Who, bad_cursor
from api.stream import TOPICS, Event, sse
from collector.gps.crs import wgs84_to_gcj02
from edge import __version__
from edge.config import check_org_path, org_within
from edge.point import Point
from edge.query import Where

STATIC = Path(__file__).resolve().parent / "static"
EVERY = re.compile(r"^([1-9][0-9]{0,6}[smhdw]|day|month)$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_EVERY_S = 366 * 86400  # a window longer than a year: use every=month (or a year's range with every=366d)
MAX_WINDOWS = 10_000
OFFLINE_S = 600.0  # a vehicle without a fix for this long is shown offline
MOVING_KMH = 3.0


# one event of the live stream (OpenAPI 3.1 has the schema of an event stream describe each event)
SSE_EVENT = {"type": "object", "required": ["event", "data"], "properties": {
    "event": {"type": "string", "enum": ["meter", "position", "alert", "reset"]},
    "data": {"type": "string", "contentMediaType": "application/json",
             "description": "JSON: as /v1/meters/{id}/latest, /v1/vehicles/{id}/latest or an item of /v1/alerts"},
    "id": {"type": "string", "pattern": "^[0-9]+$", "description": "resume after it with Last-Event-ID"},
    "retry": {"type": "integer", "description": "reconnection delay, ms"}}}


def _wgs_to_gcj(lat: float, lon: float) -> tuple[float, float]:
    return wgs84_to_gcj02(lat, lon)


def create_app(ctx: ApiContext) -> FastAPI:
    api = ApiState(ctx)
    site, tz, service, ingest, auth, keys, guard = api.site, api.tz, api.service, api.ingest, api.auth, api.keys, api.guard
    install_access_log_redaction()

    app = FastAPI(
        title="sensing-edge",
        version=__version__,
        description="Energy and vehicle sensing for public institutions (DB33/T 2474-2022). "
                    "Times are ISO 8601 with offset; field names carry their units; lists are cursor-paged; "
                    "errors are RFC 9457 problem+json. Keys see their org and everything below it.",
    )
    app.router.route_class = StrictQueryRoute  # an undeclared query parameter on /v1 is a 400, not silence
    problems.install(app)
    problems.install_fallback(app)
    if auth:
        document_security(app)
    app.state.api = api
    app.state.ctx = ctx
    app.state.guard = guard
    orgs, meters, meter_org, vehicles = api.orgs, api.meters, api.meter_org, api.vehicles
    org_of_point = api.org_of_point
    hub = api.hub
    app.state.hub = hub

    require_query, span, paged, run = api.require_query, api.span, api.paged, api.run
    meter_or_404, vehicle_or_404, building_or_404 = api.meter_or_404, api.vehicle_or_404, api.building_or_404
    latest_point, records = api.latest_point, api.records

    # -- site and orgs --------------------------------------------------------------------------
    @app.get("/v1/site", tags=["site"], responses=READ)
    async def site_info(p: Who) -> dict[str, Any]:
        """What the dashboard needs to start: site name, time zone, map tiles, the caller's scope."""
        return {"name": site.site.name, "timezone": site.site.timezone, "tile_url": site.api.tile_url,
                "auth": auth, "scope": p.org, "role": p.role.value, "version": __version__}

    def org_out(o, p: Principal) -> OrgOut:
        # the parent is named only when the caller sees it too
        return OrgOut(path=o.path, code=o.code, name=o.name, parent=o.parent if p.sees(o.parent) else None)

    @app.get("/v1/orgs", response_model=Page[OrgOut], tags=["orgs"], responses=READ)
    async def list_orgs(p: Who, request: Request, limit: Limit = 100, cursor: Cursor = None,
                        org: OrgQ = None) -> Page[OrgOut]:
        scope = guard.org_filter(request, p, org)
        page, nxt = paged((o for o in site.orgs if scope is None or _within(o.path, scope)), lambda o: o.path, limit, cursor)
        return Page[OrgOut](items=[org_out(o, p) for o in page], next_cursor=nxt)

    @app.get("/v1/orgs/tree", response_model=OrgTree, tags=["orgs"], responses=READ)
    async def org_tree(p: Who) -> OrgTree:
        visible = sorted((o for o in site.orgs if p.sees(o.path)), key=lambda o: o.path)
        nodes = {o.path: OrgNode(path=o.path, code=o.code, name=o.name) for o in visible}
        roots = []
        for o in visible:
            if o.parent in nodes:
                nodes[o.parent].children.append(nodes[o.path])
            else:
                roots.append(nodes[o.path])
        return OrgTree(roots=roots)

    @app.get("/v1/orgs/{org_path:path}", response_model=OrgOut, tags=["orgs"], responses=ONE)
    async def get_org(org_path: str, p: Who, request: Request) -> OrgOut:
        o = orgs.get(org_path)
        try:
            check_org_path(org_path)
        except ValueError:
            o = None
        if o is None:
            raise HTTPException(404, NO_ORG)
        if not p.sees(o.path):
            raise guard.hidden(request, p, f"org {org_path!r}", NO_ORG)
        return org_out(o, p)

    # -- buildings ------------------------------------------------------------------------------
    def building_out(b) -> BuildingOut:
        return BuildingOut(id=b.id, org=b.org, name=b.name, floor_area_m2=b.floor_area_m2, occupants=b.occupants,
                           meters=[m.id for m in site.meters if m.building == b.id])

    @app.get("/v1/buildings", response_model=Page[BuildingOut], tags=["buildings"], responses=READ)
    async def list_buildings(p: Who, request: Request, org: OrgQ = None, limit: Limit = 100,
                             cursor: Cursor = None) -> Page[BuildingOut]:
        scope = guard.org_filter(request, p, org)
        page, nxt = paged((b for b in site.buildings if scope is None or _within(b.org, scope)), lambda b: b.id, limit, cursor)
        return Page[BuildingOut](items=[building_out(b) for b in page], next_cursor=nxt)

    @app.get("/v1/buildings/{building_id}", response_model=BuildingOut, tags=["buildings"], responses=ONE)
    async def get_building(building_id: str, p: Who, request: Request) -> BuildingOut:
        return building_out(building_or_404(request, p, building_id))

    # -- meters ---------------------------------------------------------------------------------
    def meter_out(m) -> MeterOut:
        return MeterOut(id=m.id, org=meter_org[m.id], building=m.building, carrier=m.carrier.value, profile=m.profile,
                        interval_s=m.interval_s, ct_ratio=m.ct_ratio, pt_ratio=m.pt_ratio)

    @app.get("/v1/meters", response_model=Page[MeterOut], tags=["meters"], responses=READ)
    async def list_meters(p: Who, request: Request, org: OrgQ = None,
                          building: Annotated[str | None, Query(max_length=200)] = None,
                          carrier: Annotated[Literal["electricity", "water", "gas", "heat"] | None, Query()] = None,
                          limit: Limit = 100, cursor: Cursor = None) -> Page[MeterOut]:
        scope = guard.org_filter(request, p, org)
        if building is not None:
            building_or_404(request, p, building)
        page, nxt = paged((m for m in site.meters if (scope is None or _within(meter_org[m.id], scope))
                           and (building is None or m.building == building)
                           and (carrier is None or m.carrier.value == carrier)), lambda m: m.id, limit, cursor)
        return Page[MeterOut](items=[meter_out(m) for m in page], next_cursor=nxt)

    def meter_latest_out(m, pt: Point) -> MeterLatest:
        return MeterLatest(meter=m.id, org=meter_org[m.id], building=m.building, carrier=m.carrier.value,
                           time=iso(pt.time_ns, tz), values=dict(pt.fields))

    @app.get("/v1/meters/{meter_id}", response_model=MeterOut, tags=["meters"], responses=ONE)
    async def get_meter(meter_id: str, p: Who, request: Request) -> MeterOut:
        return meter_out(meter_or_404(request, p, meter_id))

    @app.get("/v1/meters/{meter_id}/latest", response_model=MeterLatest, tags=["meters"], responses=ONE)
    async def meter_latest(meter_id: str, request: Request) -> MeterLatest:
        """The newest reading of a meter (from live state, else the store)."""
        p = await guard.principal(request)  # called here, not as a dependency: this route is the hot one
        m = meter_or_404(request, p, meter_id)
        pt = await latest_point("meter", "meter", meter_id)
        if pt is None:
            raise HTTPException(404, f"meter {meter_id!r} has no reading yet")
        # the hot path of dashboards and the province's polling: built as MeterLatest documents it,
        # serialised once with orjson instead of validated again by pydantic (the test suite checks the shape)
        return Response(orjson.dumps({"meter": m.id, "org": meter_org[m.id], "building": m.building,
                                      "carrier": m.carrier.value, "time": iso(pt.time_ns, tz), "values": pt.fields}),
                        media_type="application/json")

    def device_health(meter_id: str) -> dict[str, Any]:
        modbus = getattr(service, "modbus", None) if service is not None else None
        if modbus is None:
            return {}
        h = modbus.health().get(meter_id)
        if h is None:
            return {}
        d = h.as_dict() if hasattr(h, "as_dict") else dict(vars(h))
        out = {}
        for k, v in d.items():
            if k.endswith("_ns") and isinstance(v, int):
                out[k[:-3]] = iso(v, tz)
            elif isinstance(v, (str, int, float, bool, type(None), dict)):
                out[k] = v
        return out

    @app.get("/v1/meters/{meter_id}/health", response_model=MeterHealth, tags=["meters"], responses=ONE)
    async def meter_health(meter_id: str, p: Who, request: Request) -> MeterHealth:
        """up / down from the poller when the service runs; else stale / up from the newest reading's age."""
        m = meter_or_404(request, p, meter_id)
        pt = await latest_point("meter", "meter", meter_id)
        dev = device_health(meter_id)
        age = None if pt is None else max(0.0, (time.time_ns() - pt.time_ns) / NS)
        if dev.get("up") is False:
            status = "down"
        elif pt is None:
            status = "unknown"
        elif age is not None and age > max(3 * m.interval_s, 60.0):
            status = "stale"
        else:
            status = "up"
        return MeterHealth(meter=meter_id, status=status, last_reading=None if pt is None else iso(pt.time_ns, tz),
                           age_s=None if age is None else round(age, 3), interval_s=m.interval_s, device=dev)

    @app.get("/v1/meters/{meter_id}/readings", response_model=Readings, tags=["meters"], responses=ONE)
    async def meter_readings(
            meter_id: str, p: Who, request: Request, start: From = None, end: To = None,
            every: Annotated[str | None, Query(max_length=12, pattern=EVERY.pattern,
                                               description="window: 900s, 15m, 1h, 1d, day or month (site-local calendar); omit for raw")] = None,
            agg: Annotated[Literal["mean", "sum", "min", "max", "first", "last", "count", "spread"], Query(
                description="aggregate per window; `spread` of a counter is the consumption")] = "mean",
            fields: Annotated[str | None, Query(max_length=1000, description="comma-separated field names; default all")] = None,
            limit: Limit = 500, cursor: Cursor = None) -> Readings:
        """Raw readings (paged), or one aggregate per window. Default range: the last 24 h."""
        m = meter_or_404(request, p, meter_id)
        q = require_query()
        s, e = span(start, end, 86400)
        where = Where(tags={"meter": meter_id}, org=p.org)
        names = [f for f in (fields.split(",") if fields else await run(field_names(q, "meter", where))) if f]
        if every is None:
            rows, nxt = await run(page_raw(q, "meter", names, where, s, e, limit, cursor, m.interval_s))
            return Readings(meter=meter_id, items=[Reading(time=iso(r.time_ns, tz), values=r.values) for r in rows],
                            next_cursor=nxt)
        if every_s(every) > MAX_EVERY_S:
            raise HTTPException(400, f"`every` is at most {MAX_EVERY_S // 86400} days ({MAX_EVERY_S // 86400}d, 52w, "
                                     f"{MAX_EVERY_S // 3600}h); for longer windows use every=month")
        n_windows = _window_count(every, s, e)
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
        series = await run(q.windows("meter", names, s, e, every, agg, where, site.site.timezone))
        rows = rows_from_series(series)
        page = rows[:limit]
        nxt = None
        if len(rows) > limit:
            nxt = encode_cursor(rows[limit].time_ns, 0)
        return Readings(meter=meter_id, every=every, agg=agg, next_cursor=nxt,
                        items=[Reading(time=iso(r.time_ns, tz), values=r.values) for r in page])

    @app.get("/v1/latest/meters", response_model=list[MeterLatest], tags=["meters"], responses=READ)
    async def latest_meters(p: Who, request: Request, org: OrgQ = None,
                            building: Annotated[str | None, Query(max_length=200)] = None) -> list[MeterLatest]:
        """The newest reading of every meter within the scope (for dashboards)."""
        scope = guard.org_filter(request, p, org)
        if building is not None:
            building_or_404(request, p, building)
        out = []
        for m in site.meters:
            if (scope is None or _within(meter_org[m.id], scope)) and (building is None or m.building == building):
                pt = ctx.live.latest("meter", m.id)
                if pt is not None:
                    out.append(meter_latest_out(m, pt))
        return out

    # -- vehicles -------------------------------------------------------------------------------
    def vehicle_out(v) -> VehicleOut:
        return VehicleOut(id=v.id, plate=v.plate, org=v.org, home=v.home, in_service=v.in_service)

    def position_out(v, pt: Point, crs: str) -> VehicleLatest:
        f = dict(pt.fields)
        lat, lon = float(f.pop("lat")), float(f.pop("lon"))
        if crs == "gcj02":
            lat, lon = _wgs_to_gcj(lat, lon)
        speed, heading, acc = f.pop("speed_kmh", None), f.pop("heading_deg", None), f.pop("acc", None)
        age = (time.time_ns() - pt.time_ns) / NS
        if age > OFFLINE_S:
            status = "offline"
        elif speed is not None and speed > MOVING_KMH:
            status = "moving"
        elif acc is True:
            status = "idle"
        elif acc is False or speed is not None:
            status = "parked"
        else:
            status = "unknown"
        return VehicleLatest(vehicle=v.id, plate=v.plate, org=v.org, time=iso(pt.time_ns, tz), crs=crs, lat=lat,
                             lon=lon, speed_kmh=speed, heading_deg=heading,
                             acc=acc if isinstance(acc, bool) else None, status=status, values=f)

    @app.get("/v1/vehicles", response_model=Page[VehicleOut], tags=["vehicles"], responses=READ)
    async def list_vehicles(p: Who, request: Request, org: OrgQ = None, limit: Limit = 100,
                            cursor: Cursor = None) -> Page[VehicleOut]:
        scope = guard.org_filter(request, p, org)
        page, nxt = paged((v for v in site.vehicles if scope is None or _within(v.org, scope)), lambda v: v.id, limit, cursor)
        return Page[VehicleOut](items=[vehicle_out(v) for v in page], next_cursor=nxt)

    @app.get("/v1/vehicles/{vehicle_id}", response_model=VehicleOut, tags=["vehicles"], responses=ONE)
    async def get_vehicle(vehicle_id: str, p: Who, request: Request) -> VehicleOut:
        return vehicle_out(vehicle_or_404(request, p, vehicle_id))

    @app.get("/v1/vehicles/{vehicle_id}/latest", response_model=VehicleLatest, tags=["vehicles"], responses=ONE)
    async def vehicle_latest(vehicle_id: str, p: Who, request: Request, crs: Crs = "wgs84") -> VehicleLatest:
        """The newest position; `crs=gcj02` converts to the datum of Chinese web maps (Amap, Tencent)."""
        v = vehicle_or_404(request, p, vehicle_id)
        pt = await latest_point("position", "vehicle", vehicle_id)
        if pt is None or "lat" not in pt.fields or "lon" not in pt.fields:
            raise HTTPException(404, f"vehicle {vehicle_id!r} has no position yet")
        return position_out(v, pt, crs)

    @app.get("/v1/latest/vehicles", response_model=list[VehicleLatest], tags=["vehicles"], responses=READ)
    async def latest_vehicles(p: Who, request: Request, org: OrgQ = None, crs: Crs = "wgs84") -> list[VehicleLatest]:
        scope = guard.org_filter(request, p, org)
        out = []
        for v in site.vehicles:
            if scope is None or _within(v.org, scope):
                pt = ctx.live.latest("position", v.id)
                if pt is not None and "lat" in pt.fields and "lon" in pt.fields:
                    out.append(position_out(v, pt, crs))
        return out

    @app.get("/v1/vehicles/{vehicle_id}/track", response_model=Track, tags=["vehicles"], responses=ONE)
    async def vehicle_track(vehicle_id: str, p: Who, request: Request, start: From = None, end: To = None,
                            crs: Crs = "wgs84", limit: Limit = 1000, cursor: Cursor = None) -> Track:
        """Stored fixes in time order (default: the last 24 h), paged."""
        vehicle_or_404(request, p, vehicle_id)
        q = require_query()
        s, e = span(start, end, 86400)
        where = Where(tags={"vehicle": vehicle_id}, org=p.org)
        names = ["lat", "lon", "speed_kmh", "heading_deg", "acc"]
        rows, nxt = await run(page_raw(q, "position", names, where, s, e, limit, cursor, 1.0))
        items = []
        for r in rows:
            if "lat" not in r.values or "lon" not in r.values:
                continue
            lat, lon = float(r.values["lat"]), float(r.values["lon"])
            if crs == "gcj02":
                lat, lon = _wgs_to_gcj(lat, lon)
            acc = r.values.get("acc")
            items.append(Fix(time=iso(r.time_ns, tz), lat=lat, lon=lon, speed_kmh=r.values.get("speed_kmh"),
                             heading_deg=r.values.get("heading_deg"), acc=acc if isinstance(acc, bool) else None))
        return Track(vehicle=vehicle_id, crs=crs, items=items, next_cursor=nxt)

    def record_out(r: Row) -> Record:
        return Record(time=iso(r.time_ns, tz), tags=dict(r.tags), values=r.values)

    @app.get("/v1/vehicles/{vehicle_id}/trips", response_model=Page[Record], tags=["vehicles"], responses=ONE)
    async def vehicle_trips(vehicle_id: str, p: Who, request: Request, start: From = None, end: To = None,
                            limit: Limit = 100, cursor: Cursor = None) -> Page[Record]:
        """Trips found by the fleet analytics (measurement `trip`), by start time; default: the last 7 days."""
        vehicle_or_404(request, p, vehicle_id)
        s, e = span(start, end, 7 * 86400)
        rows, nxt = await records("trip", {"vehicle": vehicle_id}, p.org, s, e, limit, cursor, 3600.0)
        return Page[Record](items=[record_out(r) for r in rows], next_cursor=nxt)

    @app.get("/v1/trips", response_model=Page[Record], tags=["vehicles"], responses=READ)
    async def list_trips(p: Who, request: Request, org: OrgQ = None, start: From = None, end: To = None,
                         limit: Limit = 100, cursor: Cursor = None) -> Page[Record]:
        """Trips of every vehicle within the scope; default: the last 24 h."""
        scope = guard.org_filter(request, p, org)
        s, e = span(start, end, 86400)
        rows, nxt = await records("trip", {}, scope, s, e, limit, cursor, 600.0)
        return Page[Record](items=[record_out(r) for r in rows], next_cursor=nxt)

    # -- indicators -----------------------------------------------------------------------------
    def scope_check(request: Request, p: Principal, kind: str, scope: str, ident: str | None) -> None:
        if ident is None:
            return
        if scope == "org":
            if ident not in orgs:
                raise HTTPException(404, NO_ORG)
            if not p.sees(ident):
                raise guard.hidden(request, p, f"org {ident!r}", NO_ORG)
        elif scope == "building":
            building_or_404(request, p, ident)
        elif scope == "meter":
            meter_or_404(request, p, ident)
        elif scope == "vehicle":
            vehicle_or_404(request, p, ident)

    async def indicators(measurement: str, p: Principal, request: Request, scope: str, ident: str | None,
                         period: str, org: str | None, carrier: str | None, s: int, e: int, limit: int,
                         cursor: str | None) -> Page[Indicator]:
        scope_check(request, p, measurement, scope, ident)
        org_scope = guard.org_filter(request, p, org)
        tags: dict[str, Any] = {"scope": scope, "period": period}
        if ident is not None:
            tags["id"] = ident
        if carrier is not None:
            tags["carrier"] = carrier
        hint = {"day": 86400.0, "month": 30 * 86400.0, "year": 365 * 86400.0}.get(period, 86400.0)
        rows, nxt = await records(measurement, tags, org_scope, s, e, limit, cursor, hint / 50)
        items = []
        for r in rows:
            t = r.tags
            items.append(Indicator(scope=t.get("scope", scope), id=t.get("id", ""), org=t.get("org", ""),
                                   period=t.get("period", period), carrier=t.get("carrier"),
                                   start=iso(r.time_ns, tz), values=r.values))
        return Page[Indicator](items=items, next_cursor=nxt)

    @app.get("/v1/indicators/energy", response_model=Page[Indicator], tags=["indicators"], responses=ONE)
    async def energy_indicators(
            p: Who, request: Request,
            scope: Annotated[Literal["org", "building", "meter"], Query(description="what the indicator is about")] = "org",
            id: Annotated[str | None, Query(max_length=300, description="org path, building id or meter id; default all")] = None,
            period: Literal["day", "month", "year"] = "day", org: OrgQ = None,
            carrier: Annotated[str | None, Query(max_length=40)] = None,
            start: From = None, end: To = None, limit: Limit = 100, cursor: Cursor = None) -> Page[Indicator]:
        """Energy indicators (measurement `energy_indicator`, written by the analytics): consumption, kgce,
        kgCO2, peak, load factor, base load, off-hours share... by period start. Default range: the last 31 days."""
        s, e = span(start, end, 31 * 86400)
        return await indicators("energy_indicator", p, request, scope, id, period, org, carrier, s, e, limit, cursor)

    @app.get("/v1/indicators/fleet", response_model=Page[Indicator], tags=["indicators"], responses=ONE)
    async def fleet_indicators(
            p: Who, request: Request,
            scope: Annotated[Literal["org", "vehicle"], Query()] = "org",
            id: Annotated[str | None, Query(max_length=300, description="org path or vehicle id; default all")] = None,
            period: Literal["day", "week", "month", "year"] = "day", org: OrgQ = None,
            start: From = None, end: To = None, limit: Limit = 100, cursor: Cursor = None) -> Page[Indicator]:
        """Fleet indicators (measurement `fleet_indicator`): trips, mileage, utilisation, 出车率 (dispatch rate)..."""
        s, e = span(start, end, 31 * 86400)
        return await indicators("fleet_indicator", p, request, scope, id, period, org, None, s, e, limit, cursor)

    BASELINE_SAVINGS = ("reporting_days", "predicted", "actual", "savings", "savings_fraction", "fsu",
                        "savings_uncertainty")
    BASELINE_META = ("sufficient", "reasons", "reporting_sufficient", "reporting_reasons", "notes")

    def baseline_out(r: Row) -> Baseline:
        v = r.values

        def codes(k: str) -> list[str]:
            return [c for c in str(v.get(k) or "").split(",") if c]

        sufficient = v.get("sufficient") is True
        rep_ok = v.get("reporting_sufficient")
        shown = sufficient and rep_ok is not False and "savings" in v     # never a figure beside a refusal
        return Baseline(meter=r.tags.get("meter", ""), org=r.tags.get("org", ""), model_type=r.tags.get("model_type", ""),
                        start=iso(r.time_ns, tz), sufficient=sufficient, reasons=codes("reasons"),
                        reporting_sufficient=rep_ok if isinstance(rep_ok, bool) else None,
                        reporting_reasons=codes("reporting_reasons"),
                        notes=[n for n in str(v.get("notes") or "").split("; ") if n],
                        model={k: x for k, x in v.items() if k not in BASELINE_SAVINGS and k not in BASELINE_META},
                        savings={k: v[k] for k in BASELINE_SAVINGS if k in v} if shown else None)

    @app.get("/v1/indicators/baseline", response_model=Page[Baseline], tags=["indicators"], responses=ONE)
    async def baseline_indicators(
            p: Who, request: Request,
            id: Annotated[str | None, Query(max_length=300, description="meter id; default all")] = None,
            org: OrgQ = None, start: From = None, end: To = None, limit: Limit = 100,
            cursor: Cursor = None) -> Page[Baseline]:
        """Weather-normalised baselines per meter (measurement `energy_baseline`, written by `edge analytics
        baseline`), by reporting period start; default range: the last 366 days. Savings appear only when the
        baseline and the reporting period meet CalTRACK's data sufficiency rules; otherwise `reasons` say why."""
        scope_check(request, p, "energy_baseline", "meter", id)
        s, e = span(start, end, 366 * 86400)
        rows, nxt = await records("energy_baseline", {"meter": id} if id is not None else {},
                                  guard.org_filter(request, p, org), s, e, limit, cursor, 86400.0)
        return Page[Baseline](items=[baseline_out(r) for r in rows], next_cursor=nxt)

    # -- alerts ---------------------------------------------------------------------------------
    def alert_out(r: Row) -> Alert:
        key = hashlib.sha1(repr(sorted(r.tags.items())).encode()).hexdigest()[:10]
        t = r.tags
        return Alert(id=f"{r.time_ns}-{key}", time=iso(r.time_ns, tz), org=t.get("org", ""),
                     kind=t.get("kind") or t.get("rule") or t.get("type"),
                     subject=t.get("vehicle") or t.get("meter"), tags=dict(t), values=r.values)

    @app.get("/v1/alerts", response_model=Page[Alert], tags=["alerts"], responses=ONE)
    async def list_alerts(p: Who, request: Request, org: OrgQ = None,
                          vehicle: Annotated[str | None, Query(max_length=200)] = None,
                          meter: Annotated[str | None, Query(max_length=200)] = None,
                          start: From = None, end: To = None, limit: Limit = 100, cursor: Cursor = None) -> Page[Alert]:
        """Alerts (measurement `alert`: overspeed, geofence, idle, off-hours, lost signal, meter anomalies...),
        oldest first; default: the last 24 h."""
        scope = guard.org_filter(request, p, org)
        tags: dict[str, Any] = {}
        if vehicle is not None:
            vehicle_or_404(request, p, vehicle)
            tags["vehicle"] = vehicle
        if meter is not None:
            meter_or_404(request, p, meter)
            tags["meter"] = meter
        s, e = span(start, end, 86400)
        rows, nxt = await records("alert", tags, scope, s, e, limit, cursor, 60.0)
        return Page[Alert](items=[alert_out(r) for r in rows], next_cursor=nxt)

    @app.post("/v1/alerts/{alert_id}/ack", response_model=Alert, tags=["alerts"], responses=ONE)
    async def ack_alert(alert_id: Annotated[str, PathParam(max_length=60, pattern=r"^[0-9]{1,19}-[0-9a-f]{10}$")],
                        p: Who, request: Request,
                        note: Annotated[str, Query(max_length=500, description="what was done")] = "") -> Alert:
        """Acknowledge an alert (operator or admin; audited). Recorded as a Point of measurement
        `alert_ack` (tags `org`, `key`, `alert`; fields `note`, `alert_time`) through the service's ingest."""
        guard.require(request, p, Role.operator)
        t_ns = int(alert_id.split("-")[0])
        found = None
        if ctx.query is not None and t_ns < 2**63 - 1:
            where = Where(org=p.org)
            names = await run(field_names(ctx.query, "alert", where))
            rows = rows_from_series(await run(ctx.query.raw("alert", names, t_ns, t_ns + 1, where))) if names else []
            found = next((r for r in rows if alert_out(r).id == alert_id), None)
        if found is None:
            raise HTTPException(404, f"no alert {alert_id!r}")
        a = alert_out(found)
        if ingest is not None:
            await ingest.submit([Point("alert_ack", {"org": a.org, "key": p.key_id, "alert": alert_id},
                                       {"note": note, "alert_time": a.time}, time.time_ns())])
        guard.record(request, p, 200, "alert_ack", f"id={alert_id}")
        return a

    # -- administration -------------------------------------------------------------------------
    @app.get("/v1/dead-letters", response_model=Page[DeadLetterOut], tags=["admin"], responses=READ)
    async def dead_letters(p: Who, request: Request, limit: Limit = 100, cursor: Cursor = None,
                           kind: Literal["point", "invalid", "payload"] | None = None) -> Page[DeadLetterOut]:
        """What the store refused and payloads collectors could not decode, newest first (admin of the whole site)."""
        guard.require_whole_site(request, p)
        outbox = getattr(service, "outbox", None) if service is not None else ctx.extras.get("outbox")
        if outbox is None:
            return Page[DeadLetterOut](items=[], next_cursor=None)
        before = None
        if cursor:
            try:
                before = int(decode_int_cursor(cursor))
            except BadCursor as e:
                raise bad_cursor(e) from None
        rows = await asyncio.to_thread(outbox.dead_letters, limit + 1, kind, before)
        page = rows[:limit]
        nxt = encode_int_cursor(page[-1].id) if len(rows) > limit else None
        return Page[DeadLetterOut](next_cursor=nxt, items=[DeadLetterOut(
            id=d.id, at=iso(d.at_ns, tz), source=d.source, topic=d.topic, kind=d.kind, reason=d.reason,
            payload=d.payload.decode("utf-8", "replace")) for d in page])

    @app.post("/v1/dead-letters/{dead_letter_id}/replay", response_model=Replayed, tags=["admin"], responses=ONE)
    async def replay_dead_letter(dead_letter_id: int, p: Who, request: Request) -> Replayed:
        """Put a refused point back into the outbox (admin of the whole site; audited)."""
        guard.require_whole_site(request, p)
        outbox = getattr(service, "outbox", None) if service is not None else ctx.extras.get("outbox")
        if outbox is None:
            raise HTTPException(404, "no outbox")
        n = await asyncio.to_thread(outbox.replay_dead_letters, [dead_letter_id])
        guard.record(request, p, 200, "dead_letter_replay", f"id={dead_letter_id} points={n}")
        return Replayed(replayed=n)

    def key_out(k) -> KeyOut:
        return KeyOut(id=k.id, org=k.org, role=k.role.value, name=k.name, created=iso(k.created_ns, tz),
                      revoked=None if k.revoked_ns is None else iso(k.revoked_ns, tz))

    def need_keys() -> KeyStore:
        if keys is None:
            raise HTTPException(404, "API keys are off (api.auth is false)")
        return keys

    @app.get("/v1/keys", response_model=list[KeyOut], tags=["admin"], responses=ONE)
    async def list_keys(p: Who, request: Request) -> list[KeyOut]:
        """Keys within the admin's org (never their secrets)."""
        guard.require(request, p, Role.admin)
        return [key_out(k) for k in need_keys().list(within=p.org)]

    @app.post("/v1/keys", response_model=KeyCreated, status_code=201, tags=["admin"], responses=ONE)
    async def create_key(body: KeyCreate, p: Who, request: Request) -> KeyCreated:
        """Make a key for an org within the admin's own; the token is in this answer only (audited)."""
        guard.require(request, p, Role.admin)
        ks = need_keys()
        try:
            check_org_path(body.org)
        except ValueError:
            guard.refuse(request, p, 403, "forbidden", f"key org {body.org[:100]!r} is not an org path")
            raise HTTPException(403, "org is not an org path within your scope") from None
        if not p.sees(body.org):
            guard.refuse(request, p, 403, "forbidden", f"key org {body.org!r} outside scope")
            raise HTTPException(403, "org is outside your scope")
        try:
            k, token = ks.create(body.org, body.role, body.name)
        except KeyError_ as e:
            raise HTTPException(400, str(e)) from None
        guard.record(request, p, 201, "key_create", f"id={k.id} org={k.org} role={k.role.value}")
        return KeyCreated(**key_out(k).model_dump(), token=token)

    @app.delete("/v1/keys/{key_id}", response_model=KeyOut, tags=["admin"], responses={**ONE, **responses(409)})
    async def revoke_key(key_id: str, p: Who, request: Request) -> KeyOut:
        """Revoke a key within the admin's org (audited). The last active admin key of a top-level org is
        refused (409): create another first."""
        guard.require(request, p, Role.admin)
        ks = need_keys()
        try:
            k = ks.get(key_id)
        except KeyError_:
            raise HTTPException(404, f"no key {key_id!r}") from None
        if not p.sees(k.org):
            raise guard.hidden(request, p, f"key {key_id!r}", f"no key {key_id!r}")
        try:
            k = ks.revoke(key_id)
        except LastAdminKey as e:
            guard.refuse(request, p, 409, "key_revoke_refused", f"id={key_id}: last admin key of its org")
            raise HTTPException(409, str(e)) from None
        guard.record(request, p, 200, "key_revoke", f"id={key_id}")
        return key_out(k)

    @app.get("/v1/audit", response_model=Page[AuditOut], tags=["admin"], responses=ONE)
    async def audit_log(p: Who, request: Request, limit: Limit = 100, cursor: Cursor = None) -> Page[AuditOut]:
        """The audit log (GB/T 22239): changes and refused accesses, newest first, within the admin's org.
        Refusals are aggregated per client address, minute, key, status and action (`count`)."""
        guard.require(request, p, Role.admin)
        if keys is None:
            return Page[AuditOut](items=[], next_cursor=None)
        before = None
        if cursor:
            try:
                before = int(decode_int_cursor(cursor))
            except BadCursor as e:
                raise bad_cursor(e) from None
        await guard.audit.drain()
        rows = await asyncio.to_thread(keys.audit_entries, limit + 1, before, p.org)
        page = rows[:limit]
        return Page[AuditOut](next_cursor=encode_int_cursor(page[-1].id) if len(rows) > limit else None, items=[
            AuditOut(id=a.id, at=iso(a.at_ns, tz), key_id=a.key_id, org=a.org, role=a.role, method=a.method,
                     path=a.path, status=a.status, action=a.action, detail=a.detail, client=a.client,
                     count=a.count) for a in page])

    # -- live -----------------------------------------------------------------------------------
    @app.get("/v1/live", tags=["live"], response_class=StreamingResponse, responses={
        200: {"description": "text/event-stream: events `meter`, `position`, `alert` (data: JSON as in the "
                             "latest resources), `reset` when a resume id has left the buffer; `: ping` every 15 s",
              "content": {"text/event-stream": {"schema": SSE_EVENT}}}, **READ})
    async def live(p: Who, request: Request, org: OrgQ = None,
                   topics: Annotated[str, Query(max_length=100, description="comma-separated: meter,position,alert")] = "meter,position,alert",
                   meters_: Annotated[str | None, Query(alias="meters", max_length=4000, description="comma-separated meter ids")] = None,
                   vehicles_: Annotated[str | None, Query(alias="vehicles", max_length=4000, description="comma-separated vehicle ids")] = None,
                   crs: Crs = "wgs84",
                   last_event_id: Annotated[int | None, Query(ge=0, description="resume after this id (or header Last-Event-ID)")] = None,
                   snapshot: bool = True,
                   key: Annotated[str | None, Query(max_length=200, description="API key, for browsers' EventSource")] = None,
                   max_s: Annotated[float, Query(gt=0, le=3600, description="close after this long; clients reconnect with Last-Event-ID")] = 300.0,
                   ) -> StreamingResponse:
        """Server-Sent Events of new meter readings, vehicle positions and alerts within your org."""
        scope = guard.org_filter(request, p, org)
        want = {t for t in topics.split(",") if t}
        if not want <= set(TOPICS):
            raise HTTPException(400, f"topics are among {', '.join(TOPICS)}")
        mset = set(meters_.split(",")) if meters_ else None
        vset = set(vehicles_.split(",")) if vehicles_ else None
        for mid in mset or ():
            meter_or_404(request, p, mid)
        for vid in vset or ():
            vehicle_or_404(request, p, vid)
        header = request.headers.get("last-event-id")
        resume = last_event_id
        if resume is None and header and header.isdigit():
            resume = int(header)
        hub.ensure_started()

        def visible(ev) -> bool:
            if ev.topic not in want:
                return False
            if ev.org is None or not ((scope is None and p.sees(ev.org)) or (scope is not None and _within(ev.org, scope))):
                return False
            if ev.topic == "meter" and mset is not None and ev.subject not in mset:
                return False
            if ev.topic == "position" and vset is not None and ev.subject not in vset:
                return False
            return True

        def payload(ev) -> dict[str, Any] | None:
            pt = ev.point
            if ev.topic == "meter":
                m = meters.get(ev.subject or "")
                return meter_latest_out(m, pt).model_dump() if m is not None else None
            if ev.topic == "position":
                v = vehicles.get(ev.subject or "")
                if v is None or "lat" not in pt.fields or "lon" not in pt.fields:
                    return None
                return position_out(v, pt, crs).model_dump()
            return alert_out(Row(pt.time_ns, dict(pt.tags), dict(pt.fields))).model_dump()

        async def stream():
            last = hub.head if resume is None else resume
            deadline = time.monotonic() + max_s
            yield b"retry: 2000\n\n"
            if resume is None or resume > hub.head:
                last = hub.head
                if snapshot:
                    for chunk in snapshot_events(last):
                        yield chunk
            while time.monotonic() < deadline:
                evs, lost = hub.after(last)
                if lost:
                    yield sse("reset", {"reason": "resume id left the buffer; snapshot follows"}, hub.head)
                    for chunk in snapshot_events(hub.head):
                        yield chunk
                for ev in evs:
                    last = ev.id
                    if visible(ev):
                        data = payload(ev)
                        if data is not None:
                            yield sse(ev.topic, data, ev.id)
                if evs:
                    continue
                if await request.is_disconnected():
                    return
                before = hub.head
                await hub.wait(last, min(15.0, max(0.0, deadline - time.monotonic())))
                if hub.head == before:
                    yield b": ping\n\n"

        def snapshot_events(ident: int):
            for t in ("meter", "position"):
                if t not in want:
                    continue
                for subject, pt in ctx.live.all_latest(t).items():
                    ev = Event(ident, t, org_of_point(pt), subject, pt)
                    if visible(ev):
                        data = payload(ev)
                        if data is not None:
                            yield sse(t, data, ident)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    # -- operations -----------------------------------------------------------------------------
    def health_doc() -> Health:
        h = ctx.health()
        status = h.get("status", "ok")
        comps = dict(h.get("components", {}))
        comps.setdefault("store", {"attached": ctx.query is not None})
        comps["api"] = {"auth": auth, "refused": guard.refused, "live_events": hub.head,
                        "auth_throttled": guard.auth_throttled, "wrong_secrets": guard.wrong_secrets,
                        "audit": guard.audit.stats()}
        return Health(status=status, version=__version__, live=True, ready=status != "down", components=comps)

    @app.get("/v1/health", response_model=Health, tags=["operations"],
             responses={503: {"model": Health, "description": "down"}})
    async def health(response: Response) -> Health:
        """Component status (broker, store, outbox depth, devices down). No key needed."""
        doc = health_doc()
        if doc.status == "down":
            response.status_code = 503
        return doc

    @app.get("/v1/health/live", tags=["operations"], response_model=dict[str, bool])
    async def health_live() -> dict[str, bool]:
        """The process answers (liveness probe)."""
        return {"live": True}

    @app.get("/v1/health/ready", tags=["operations"], response_model=dict[str, bool],
             responses={503: {"description": "not ready", "model": dict[str, bool]}})
    async def health_ready(response: Response) -> dict[str, bool]:
        """Ready for traffic unless the service reports itself down (readiness probe)."""
        ready = health_doc().ready
        if not ready:
            response.status_code = 503
        return {"ready": ready}

    @app.get("/metrics", tags=["operations"], response_class=Response,
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text format"},
                        **responses(401, 403, 429)})
    async def metrics(p: Scraper) -> Response:
        """Prometheus text. With auth on: a key of role `metrics` (or `admin`) whose org covers the whole site."""
        body = ctx.metrics_text() if ctx.metrics_text else b""
        if isinstance(body, str):
            body = body.encode()
        return Response(body + api_metrics_text(guard, hub.head), media_type="text/plain; version=0.0.4; charset=utf-8")

    # routes are matched in order: the hot ones first (nothing else matches their paths)
    hot = ("/v1/meters/{meter_id}/latest", "/v1/vehicles/{vehicle_id}/latest")
    app.router.routes.sort(key=lambda r: 0 if getattr(r, "path", "") in hot else 1)

    # -- dashboard ------------------------------------------------------------------------------
    if STATIC.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")

        @app.get("/", include_in_schema=False)
        async def dashboard() -> FileResponse:
            return FileResponse(STATIC / "index.html", media_type="text/html")

    return app


# --- small pure helpers ---------------------------------------------------------------------------


def every_s(every: str) -> int:
    """The length of a fixed window (``15m``, ``52w``) in seconds; calendar windows (day, month) count as
    their longest."""
    if every == "day":
        return 86400
    if every == "month":
        return 31 * 86400
    return int(every[:-1]) * _UNIT_S[every[-1]]


def api_metrics_text(guard: Guard, live_events: int) -> bytes:
    """The API's own counters in Prometheus text format."""
    a = guard.audit.stats()
    rows = [
        ("edge_api_refused_total", "Requests refused by the API (401/403/404 out of scope/409/429)", guard.refused),
        ("edge_api_live_events_total", "Live events published to SSE clients", live_events),
        ("edge_api_auth_wrong_secrets_total", "Key checks (argon2) that failed", guard.wrong_secrets),
        ("edge_api_auth_throttled_total", "Key attempts refused (429) by the failed-attempt limit, without hashing",
         guard.auth_throttled),
        ("edge_api_audit_refusals_merged_total", "Refusals counted into an existing audit entry (same client, "
                                                 "minute, key, status, action) instead of a row of their own",
         a["refusals_merged"]),
        ("edge_api_audit_rows_pruned_total", "Oldest audit rows deleted to keep the table within api.audit_max_rows",
         a["rows_pruned"]),
        ("edge_api_audit_events_pruned_total", "Audited events (sum of counts) in the deleted rows", a["events_pruned"]),
        ("edge_api_audit_write_errors_total", "Audit writes that failed", a["write_errors"]),
    ]
    return "".join(f"# HELP {n} {h}\n# TYPE {n} counter\n{n} {v}\n" for n, h, v in rows).encode()


def document_security(app: FastAPI) -> None:
    """Declare the API keys in the OpenAPI document (bearer or X-API-Key; none for the health probes),
    the way FastAPI documents extending it: a wrapped ``app.openapi``."""
    plain = app.openapi
    open_routes = {"/v1/health", "/v1/health/live", "/v1/health/ready"}

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = plain()
        doc.setdefault("components", {})["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer sek_..."},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}
        for path, ops in doc.get("paths", {}).items():
            for op in ops.values():
                op["security"] = [] if path in open_routes else [{"bearer": []}, {"apiKey": []}]
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]


def _within(path: str, scope: str) -> bool:
    return org_within(path, scope)


def _window_count(every: str, s: int, e: int) -> int:
    if every == "day":
        return (e - s) // (86400 * NS) + 2
    if every == "month":
        return (e - s) // (28 * 86400 * NS) + 2
    n, unit = int(every[:-1]), every[-1]
    return (e - s) // (n * _UNIT_S[unit] * NS) + 1
