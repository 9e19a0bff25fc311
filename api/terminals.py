"""``/v1/terminals``: JT/T 808 vehicle terminals as the access server sees them.

For the dispatcher: which terminals are online, since when and from where, which protocol
version they speak, when they last authenticated, sent a heartbeat, reported, and the newest fix
stored. Scoped by org like vehicles: a key sees the terminals of its org and below; another
org's terminal is a 404 (audited). Terminals of unlisted vehicles (``jt808.registration: open``)
carry org ``unknown``: only a key of the whole site sees them.
"""

from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, Field

from api.routing import StrictQueryRoute
from api.context import ApiContext
from api.keys import Principal
from api.reads import BadCursor, iso, page_ids
from api.schemas import Page
from api.security import Guard
from edge.config import check_org_path, org_within

Status = Literal["online", "offline", "never_seen"]


class TerminalOut(BaseModel):
    phone: str = Field(description="the terminal's phone number (BCD digits of its header, leading zeros dropped)")
    vehicle: str
    plate: str
    org: str
    configured: bool = Field(description="listed in the site file (vehicles[].terminal); false: admitted by open registration")
    status: Status
    online: bool
    protocol: str | None = Field(None, description="2013 (a 2011/2013 header) or 2019")
    protocol_version: int | None = Field(None, description="the 2019 header's version byte")
    remote_address: str | None = None
    connected_since: str | None = None
    last_seen: str | None = Field(None, description="any frame")
    last_heartbeat: str | None = None
    last_report: str | None = Field(None, description="a location message arrived")
    last_fix: str | None = Field(None, description="the newest fix time stored")
    last_authentication: str | None = None
    positions: int = Field(0, description="positions stored and acknowledged since the edge started")
    backlog_positions: int = Field(0, description="of which blind-area backlog (0x0704 type 1, or older than live_lag_s)")
    imei: str | None = None
    software_version: str | None = None
    model: str | None = None


def _terminals(ctx: ApiContext) -> list[Any]:
    """The access server's terminals: ``extras["terminals"]`` (a callable), or the service's server."""
    listed = ctx.extras.get("terminals")
    if listed is not None:
        return list(listed())
    server = ctx.extras.get("jt808")
    if server is None:
        server = getattr(ctx.extras.get("service"), "jt808", None)
    if server is not None:
        return server.terminals()
    return []


def router(ctx: ApiContext, guard: Guard) -> APIRouter:
    tz = ZoneInfo(ctx.site.site.timezone)
    r = APIRouter(tags=["terminals"], route_class=StrictQueryRoute)
    Who = Annotated[Principal, Depends(guard.principal)]
    responses = {c: {"description": d} for c, d in ((400, "bad cursor"), (401, "no or invalid API key"),
                                                      (403, "outside your org"), (404, "not found (or not within your org)"))}

    def t_iso(ns: int | None) -> str | None:
        return None if ns is None else iso(ns, tz)

    def out(t: Any) -> TerminalOut:
        status: Status = "online" if t.online else ("never_seen" if t.last_seen_ns is None else "offline")
        return TerminalOut(
            phone=t.phone, vehicle=t.vehicle, plate=t.plate, org=t.org, configured=t.configured, status=status,
            online=t.online, protocol=t.protocol, protocol_version=t.protocol_version, remote_address=t.remote or None,
            connected_since=t_iso(t.connected_ns) if t.online else None, last_seen=t_iso(t.last_seen_ns),
            last_heartbeat=t_iso(t.last_heartbeat_ns), last_report=t_iso(t.last_report_ns), last_fix=t_iso(t.last_fix_ns),
            last_authentication=t_iso(t.last_auth_ns), positions=t.positions, backlog_positions=t.backlog_positions,
            imei=t.imei or None, software_version=t.software_version or None, model=t.model or None)

    @r.get("/v1/terminals", response_model=Page[TerminalOut], responses=responses)
    async def list_terminals(p: Who, request: Request,
                             org: Annotated[str | None, Query(max_length=300, description="only this org and below (within your own)")] = None,
                             status: Annotated[Status | None, Query(description="only terminals in this state")] = None,
                             limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                             cursor: Annotated[str | None, Query(max_length=200)] = None) -> Page[TerminalOut]:
        """Terminals within your org (and the ``org`` filter), by phone, paged."""
        scope = guard.org_filter(request, p, org)
        items = [out(t) for t in _terminals(ctx) if (scope is None or _within(t.org, scope)) and p.sees(t.org)]
        if status is not None:
            items = [t for t in items if t.status == status]
        try:
            page, nxt = page_ids(sorted(items, key=lambda t: t.phone), lambda t: t.phone, limit, cursor)
        except BadCursor as e:
            raise HTTPException(400, str(e)) from None
        return Page[TerminalOut](items=page, next_cursor=nxt)

    @r.get("/v1/terminals/{phone}", response_model=TerminalOut, responses=responses)
    async def get_terminal(phone: str, p: Who, request: Request) -> TerminalOut:
        key = phone.lstrip("0") or "0"
        t = next((t for t in _terminals(ctx) if t.phone == key), None)
        if t is None:
            raise HTTPException(404, f"no terminal {phone!r}")
        if not p.sees(t.org):
            raise guard.hidden(request, p, f"terminal {phone!r}")
        return out(t)

    return r


def _within(path: str, scope: str) -> bool:
    try:
        check_org_path(path)
    except ValueError:  # "unknown": outside every org but the whole site's
        return False
    return org_within(path, scope)
