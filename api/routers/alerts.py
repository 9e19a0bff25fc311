"""Alerts the analytics raised (measurement ``alert``), and their acknowledgement by an operator."""

import hashlib
import time
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi import Path as PathParam

from api.keys import Role
from api.params import Cursor, From, Limit, OrgQ, To
from api.problems import ONE
from api.reads import Row, field_names, iso, rows_from_series
from api.routing import StrictQueryRoute
from api.schemas import Alert, Page
from api.state import Api, ApiState, Who
from edge.point import Point
from edge.query import Where

router = APIRouter(route_class=StrictQueryRoute)


def alert_out(api: ApiState, r: Row) -> Alert:
    """An alert as ``/v1/alerts`` lists it (and the live stream sends it); its id is its time and a
    digest of its tags, stable across reads."""
    key = hashlib.sha1(repr(sorted(r.tags.items())).encode()).hexdigest()[:10]
    t = r.tags
    return Alert(id=f"{r.time_ns}-{key}", time=iso(r.time_ns, api.tz), org=t.get("org", ""),
                 kind=t.get("kind") or t.get("rule") or t.get("type"),
                 subject=t.get("vehicle") or t.get("meter"), tags=dict(t), values=r.values)


@router.get("/v1/alerts", response_model=Page[Alert], tags=["alerts"], responses=ONE)
async def list_alerts(p: Who, api: Api, request: Request, org: OrgQ = None,
                      vehicle: Annotated[str | None, Query(max_length=200)] = None,
                      meter: Annotated[str | None, Query(max_length=200)] = None,
                      start: From = None, end: To = None, limit: Limit = 100, cursor: Cursor = None) -> Page[Alert]:
    """Alerts (measurement `alert`: overspeed, geofence, idle, off-hours, lost signal, meter anomalies...),
    oldest first; default: the last 24 h."""
    scope = api.guard.org_filter(request, p, org)
    tags: dict[str, Any] = {}
    if vehicle is not None:
        api.vehicle_or_404(request, p, vehicle)
        tags["vehicle"] = vehicle
    if meter is not None:
        api.meter_or_404(request, p, meter)
        tags["meter"] = meter
    s, e = api.span(start, end, 86400)
    rows, nxt = await api.records("alert", tags, scope, s, e, limit, cursor, 60.0)
    return Page[Alert](items=[alert_out(api, r) for r in rows], next_cursor=nxt)


@router.post("/v1/alerts/{alert_id}/ack", response_model=Alert, tags=["alerts"], responses=ONE)
async def ack_alert(alert_id: Annotated[str, PathParam(max_length=60, pattern=r"^[0-9]{1,19}-[0-9a-f]{10}$")],
                    p: Who, api: Api, request: Request,
                    note: Annotated[str, Query(max_length=500, description="what was done")] = "") -> Alert:
    """Acknowledge an alert (operator or admin; audited). Recorded as a Point of measurement
    `alert_ack` (tags `org`, `key`, `alert`; fields `note`, `alert_time`) through the service's ingest."""
    api.guard.require(request, p, Role.operator)
    t_ns = int(alert_id.split("-")[0])
    found = None
    query = api.ctx.query
    if query is not None and t_ns < 2**63 - 1:
        where = Where(org=p.org)
        names = await api.run(field_names(query, "alert", where))
        rows = rows_from_series(await api.run(query.raw("alert", names, t_ns, t_ns + 1, where))) if names else []
        found = next((r for r in rows if alert_out(api, r).id == alert_id), None)
    if found is None:
        raise HTTPException(404, f"no alert {alert_id!r}")
    a = alert_out(api, found)
    if api.ingest is not None:
        await api.ingest.submit([Point("alert_ack", {"org": a.org, "key": p.key_id, "alert": alert_id},
                                       {"note": note, "alert_time": a.time}, time.time_ns())])
    api.guard.record(request, p, 200, "alert_ack", f"id={alert_id}")
    return a
