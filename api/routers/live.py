"""The live stream: Server-Sent Events of new meter readings, vehicle positions and alerts within the
caller's org (``api.stream.EventHub``), each event's data shaped as the meters', vehicles' and alerts'
routes answer it."""

import time
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import StreamingResponse

from api.params import Crs, OrgQ
from api.problems import READ
from api.reads import Row
from api.routers.alerts import alert_out
from api.routers.meters import meter_latest_out
from api.routers.vehicles import position_out
from api.routing import StrictQueryRoute
from api.state import Api, Who
from api.stream import TOPICS, Event, sse
from edge.config import org_within

# one event of the live stream (OpenAPI 3.1 has the schema of an event stream describe each event)
SSE_EVENT = {"type": "object", "required": ["event", "data"], "properties": {
    "event": {"type": "string", "enum": ["meter", "position", "alert", "reset"]},
    "data": {"type": "string", "contentMediaType": "application/json",
             "description": "JSON: as /v1/meters/{id}/latest, /v1/vehicles/{id}/latest or an item of /v1/alerts"},
    "id": {"type": "string", "pattern": "^[0-9]+$", "description": "resume after it with Last-Event-ID"},
    "retry": {"type": "integer", "description": "reconnection delay, ms"}}}

router = APIRouter(route_class=StrictQueryRoute)


@router.get("/v1/live", tags=["live"], response_class=StreamingResponse, responses={
    200: {"description": "text/event-stream: events `meter`, `position`, `alert` (data: JSON as in the "
                         "latest resources), `reset` when a resume id has left the buffer; `: ping` every 15 s",
          "content": {"text/event-stream": {"schema": SSE_EVENT}}}, **READ})
async def live(p: Who, api: Api, request: Request, org: OrgQ = None,
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
    scope = api.guard.org_filter(request, p, org)
    want = {t for t in topics.split(",") if t}
    if not want <= set(TOPICS):
        raise HTTPException(400, f"topics are among {', '.join(TOPICS)}")
    mset = set(meters_.split(",")) if meters_ else None
    vset = set(vehicles_.split(",")) if vehicles_ else None
    for mid in mset or ():
        api.meter_or_404(request, p, mid)
    for vid in vset or ():
        api.vehicle_or_404(request, p, vid)
    header = request.headers.get("last-event-id")
    resume = last_event_id
    if resume is None and header and header.isdigit():
        resume = int(header)
    hub = api.hub
    hub.ensure_started()

    def visible(ev) -> bool:
        if ev.topic not in want:
            return False
        if ev.org is None or not ((scope is None and p.sees(ev.org)) or (scope is not None and org_within(ev.org, scope))):
            return False
        if ev.topic == "meter" and mset is not None and ev.subject not in mset:
            return False
        if ev.topic == "position" and vset is not None and ev.subject not in vset:
            return False
        return True

    def payload(ev) -> dict[str, Any] | None:
        pt = ev.point
        if ev.topic == "meter":
            m = api.meters.get(ev.subject or "")
            return meter_latest_out(api, m, pt).model_dump() if m is not None else None
        if ev.topic == "position":
            v = api.vehicles.get(ev.subject or "")
            if v is None or "lat" not in pt.fields or "lon" not in pt.fields:
                return None
            return position_out(api, v, pt, crs).model_dump()
        return alert_out(api, Row(pt.time_ns, dict(pt.tags), dict(pt.fields))).model_dump()

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
            for subject, pt in api.ctx.live.all_latest(t).items():
                ev = Event(ident, t, api.org_of_point(pt), subject, pt)
                if visible(ev):
                    data = payload(ev)
                    if data is not None:
                        yield sse(t, data, ident)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
