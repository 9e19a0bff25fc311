"""Official vehicles: the list, one vehicle, its newest position, its track, its trips, the newest
position of every vehicle within the scope, the trips of all of them, and the geofences they are
watched against."""

import time

from fastapi import APIRouter, HTTPException, Request

from api.params import Crs, Cursor, From, Limit, OrgQ, To
from api.problems import ONE, READ
from api.reads import NS, Row, iso, page_raw
from api.routing import StrictQueryRoute
from api.schemas import Fix, GeofenceCircle, GeofenceOut, Page, Record, Track, VehicleLatest, VehicleOut
from api.state import Api, ApiState, Who
from collector.gps.crs import wgs84_to_gcj02
from edge.config import org_within
from edge.point import Point
from edge.query import Where

OFFLINE_S = 600.0  # a vehicle without a fix for this long is shown offline
MOVING_KMH = 3.0

router = APIRouter(route_class=StrictQueryRoute)
hot = APIRouter(route_class=StrictQueryRoute)  # the polled route, which create_app includes before any other


def vehicle_out(v) -> VehicleOut:
    return VehicleOut(id=v.id, plate=v.plate, org=v.org, home=v.home, in_service=v.in_service)


def position_out(api: ApiState, v, pt: Point, crs: str) -> VehicleLatest:
    """A vehicle's position as ``/v1/vehicles/{id}/latest`` answers it (and the live stream sends it)."""
    f = dict(pt.fields)
    lat, lon = float(f.pop("lat")), float(f.pop("lon"))
    if crs == "gcj02":
        lat, lon = wgs84_to_gcj02(lat, lon)
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
    return VehicleLatest(vehicle=v.id, plate=v.plate, org=v.org, time=iso(pt.time_ns, api.tz), crs=crs, lat=lat,
                         lon=lon, speed_kmh=speed, heading_deg=heading,
                         acc=acc if isinstance(acc, bool) else None, status=status, values=f)


@router.get("/v1/vehicles", response_model=Page[VehicleOut], tags=["vehicles"], responses=READ)
async def list_vehicles(p: Who, api: Api, request: Request, org: OrgQ = None, limit: Limit = 100,
                        cursor: Cursor = None) -> Page[VehicleOut]:
    scope = api.guard.org_filter(request, p, org)
    page, nxt = api.paged((v for v in api.site.vehicles if scope is None or org_within(v.org, scope)), lambda v: v.id,
                          limit, cursor)
    return Page[VehicleOut](items=[vehicle_out(v) for v in page], next_cursor=nxt)


@router.get("/v1/vehicles/{vehicle_id}", response_model=VehicleOut, tags=["vehicles"], responses=ONE)
async def get_vehicle(vehicle_id: str, p: Who, api: Api, request: Request) -> VehicleOut:
    return vehicle_out(api.vehicle_or_404(request, p, vehicle_id))


@hot.get("/v1/vehicles/{vehicle_id}/latest", response_model=VehicleLatest, tags=["vehicles"], responses=ONE)
async def vehicle_latest(vehicle_id: str, p: Who, api: Api, request: Request, crs: Crs = "wgs84") -> VehicleLatest:
    """The newest position; `crs=gcj02` converts to the datum of Chinese web maps (Amap, Tencent)."""
    v = api.vehicle_or_404(request, p, vehicle_id)
    pt = await api.latest_point("position", "vehicle", vehicle_id)
    if pt is None or "lat" not in pt.fields or "lon" not in pt.fields:
        raise HTTPException(404, f"vehicle {vehicle_id!r} has no position yet")
    return position_out(api, v, pt, crs)


@router.get("/v1/latest/vehicles", response_model=list[VehicleLatest], tags=["vehicles"], responses=READ)
async def latest_vehicles(p: Who, api: Api, request: Request, org: OrgQ = None, crs: Crs = "wgs84") -> list[VehicleLatest]:
    scope = api.guard.org_filter(request, p, org)
    out = []
    for v in api.site.vehicles:
        if scope is None or org_within(v.org, scope):
            pt = api.ctx.live.latest("position", v.id)
            if pt is not None and "lat" in pt.fields and "lon" in pt.fields:
                out.append(position_out(api, v, pt, crs))
    return out


@router.get("/v1/vehicles/{vehicle_id}/track", response_model=Track, tags=["vehicles"], responses=ONE)
async def vehicle_track(vehicle_id: str, p: Who, api: Api, request: Request, start: From = None, end: To = None,
                        crs: Crs = "wgs84", limit: Limit = 1000, cursor: Cursor = None) -> Track:
    """Stored fixes in time order (default: the last 24 h), paged."""
    api.vehicle_or_404(request, p, vehicle_id)
    q = api.require_query()
    s, e = api.span(start, end, 86400)
    where = Where(tags={"vehicle": vehicle_id}, org=p.org)
    names = ["lat", "lon", "speed_kmh", "heading_deg", "acc"]
    rows, nxt = await api.run(page_raw(q, "position", names, where, s, e, limit, cursor, 1.0))
    items = []
    for r in rows:
        if "lat" not in r.values or "lon" not in r.values:
            continue
        lat, lon = float(r.values["lat"]), float(r.values["lon"])
        if crs == "gcj02":
            lat, lon = wgs84_to_gcj02(lat, lon)
        acc = r.values.get("acc")
        items.append(Fix(time=iso(r.time_ns, api.tz), lat=lat, lon=lon, speed_kmh=r.values.get("speed_kmh"),
                         heading_deg=r.values.get("heading_deg"), acc=acc if isinstance(acc, bool) else None))
    return Track(vehicle=vehicle_id, crs=crs, items=items, next_cursor=nxt)


# -- trips (measurement `trip`, written by the fleet analytics) ----------------------------------------
def record_out(api: ApiState, r: Row) -> Record:
    return Record(time=iso(r.time_ns, api.tz), tags=dict(r.tags), values=r.values)


@router.get("/v1/vehicles/{vehicle_id}/trips", response_model=Page[Record], tags=["vehicles"], responses=ONE)
async def vehicle_trips(vehicle_id: str, p: Who, api: Api, request: Request, start: From = None, end: To = None,
                        limit: Limit = 100, cursor: Cursor = None) -> Page[Record]:
    """Trips found by the fleet analytics (measurement `trip`), by start time; default: the last 7 days."""
    api.vehicle_or_404(request, p, vehicle_id)
    s, e = api.span(start, end, 7 * 86400)
    rows, nxt = await api.records("trip", {"vehicle": vehicle_id}, p.org, s, e, limit, cursor, 3600.0)
    return Page[Record](items=[record_out(api, r) for r in rows], next_cursor=nxt)


@router.get("/v1/trips", response_model=Page[Record], tags=["vehicles"], responses=READ)
async def list_trips(p: Who, api: Api, request: Request, org: OrgQ = None, start: From = None, end: To = None,
                     limit: Limit = 100, cursor: Cursor = None) -> Page[Record]:
    """Trips of every vehicle within the scope; default: the last 24 h."""
    scope = api.guard.org_filter(request, p, org)
    s, e = api.span(start, end, 86400)
    rows, nxt = await api.records("trip", {}, scope, s, e, limit, cursor, 600.0)
    return Page[Record](items=[record_out(api, r) for r in rows], next_cursor=nxt)


# -- geofences (configured; the fleet analytics raise enter/leave alerts on them) ---------------------
def geofence_out(g, crs: str, homed: list[str]) -> GeofenceOut:
    def conv(lat: float, lon: float) -> tuple[float, float]:
        return wgs84_to_gcj02(lat, lon) if crs == "gcj02" else (lat, lon)

    circle = None
    if g.circle is not None:
        lat, lon = conv(g.circle.lat, g.circle.lon)
        circle = GeofenceCircle(lat=lat, lon=lon, radius_m=g.circle.radius_m)
    polygon = [conv(lat, lon) for lat, lon in g.polygon] if g.polygon is not None else None
    return GeofenceOut(name=g.name, org=g.org, crs=crs, circle=circle, polygon=polygon, vehicles=homed)


@router.get("/v1/geofences", response_model=Page[GeofenceOut], tags=["vehicles"], responses=READ)
async def list_geofences(p: Who, api: Api, request: Request, org: OrgQ = None, crs: Crs = "wgs84",
                         limit: Limit = 100, cursor: Cursor = None) -> Page[GeofenceOut]:
    """Geofences of the orgs in scope, and the site-wide ones (no org); `crs=gcj02` converts them to
    the datum of Chinese web maps, as for positions."""
    scope = api.guard.org_filter(request, p, org)

    def visible(g) -> bool:
        return g.org is None or (p.sees(g.org) and (scope is None or org_within(g.org, scope)))

    page, nxt = api.paged((g for g in api.site.geofences if visible(g)), lambda g: g.name, limit, cursor)
    homes: dict[str, list[str]] = {}
    for v in api.site.vehicles:
        if v.home is not None and (scope is None or org_within(v.org, scope)) and p.sees(v.org):
            homes.setdefault(v.home, []).append(v.id)
    return Page[GeofenceOut](items=[geofence_out(g, crs, homes.get(g.name, [])) for g in page], next_cursor=nxt)
