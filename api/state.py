"""What one app holds while it serves: the site's lookup maps, the guard, the live event hub, and the
checks every resource family shares.

``create_app`` builds one ``ApiState`` from its ``ApiContext`` and stores it on ``app.state.api``;
routes reach it through the ``Api`` dependency and the caller through ``Who`` (``Scraper`` for
``/metrics``). Nothing per-app lives in a module global: a process may hold several apps (the tests
build many), each with its own site, keys and guard.

The ``*_or_404`` checks answer a thing of another org exactly as a missing one (404, audited as a
refusal by ``api.security.Guard.hidden``); ``span``, ``paged``, ``run`` and ``records`` turn query
parameters and store answers into pages, with a bad cursor a 400 and a store failure a 503.
"""

import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Awaitable, Callable, Iterable, TypeVar
from zoneinfo import ZoneInfo

from fastapi import Depends, HTTPException, Request

from api.cache import ReadCache
from api.context import ApiContext
from api.keys import KeyStore, Principal, keys_path_for
from api.reads import NS, BadCursor, Row, field_names, page_ids, page_raw, to_ns
from api.security import Guard
from api.stream import EventHub
from edge.errors import StoreError
from edge.point import Point
from edge.query import Where

NO_ORG = "no such org"  # one answer for an org that does not exist and one the caller may not see

T = TypeVar("T")


class ApiState:
    """Built once per app from its context: the key store (opened when auth is on and none was given),
    the guard, the maps from ids to the site file's things, and the live event hub."""

    def __init__(self, ctx: ApiContext) -> None:
        site = ctx.site
        self.ctx = ctx
        self.site = site
        self.tz = ZoneInfo(site.site.timezone)
        self.service = ctx.extras.get("service")
        self.ingest = ctx.extras.get("ingest") or (getattr(self.service, "ingest", None) if self.service is not None else None)
        self.auth = site.api.auth if ctx.auth is None else ctx.auth
        keys = ctx.keys
        if keys is None and self.auth:
            data_dir = Path(self.service.outbox.path).parent if self.service is not None else None
            keys = KeyStore(keys_path_for(site, data_dir))
        self.keys: KeyStore | None = keys
        self.guard = Guard(site, keys, auth=self.auth, ingest=self.ingest, rate_per_s=ctx.rate_per_s,
                           burst=ctx.rate_burst, audit_max_rows=site.api.audit_max_rows,
                           failures_burst=site.api.auth_failures_burst,
                           failure_refill_s=site.api.auth_failure_refill_s)
        self.orgs = {o.path: o for o in site.orgs}
        self.buildings = {b.id: b for b in site.buildings}
        self.meters = {m.id: m for m in site.meters}
        self.meter_org = {m.id: site.meter_org(m) for m in site.meters}
        self.vehicles = {v.id: v for v in site.vehicles}
        self.hub = EventHub(ctx.live, self.org_of_point, ring_size=ctx.live_ring_size)
        self.cache = ReadCache(ctx.query)   # indicator answers while the store has not changed them (api.cache)

    def org_of_point(self, p: Point) -> str | None:
        """The org a point belongs to: its meter's or vehicle's in the site file, else its ``org`` tag."""
        if p.measurement == "meter" and p.tags.get("meter") in self.meter_org:
            return self.meter_org[p.tags["meter"]]
        if p.measurement == "position" and p.tags.get("vehicle") in self.vehicles:
            return self.vehicles[p.tags["vehicle"]].org
        return p.tags.get("org")

    # -- things within the caller's org, or 404 ------------------------------------------------
    def org_or_404(self, request: Request, p: Principal, org_path: str):
        o = self.orgs.get(org_path)
        if o is None:
            raise HTTPException(404, NO_ORG)
        if not p.sees(o.path):
            raise self.guard.hidden(request, p, f"org {org_path!r}", NO_ORG)
        return o

    def building_or_404(self, request: Request, p: Principal, building_id: str):
        b = self.buildings.get(building_id)
        if b is None:
            raise HTTPException(404, f"no building {building_id!r}")
        if not p.sees(b.org):
            raise self.guard.hidden(request, p, f"building {building_id!r}")
        return b

    def meter_or_404(self, request: Request, p: Principal, meter_id: str):
        m = self.meters.get(meter_id)
        if m is None:
            raise HTTPException(404, f"no meter {meter_id!r}")
        if not p.sees(self.meter_org[meter_id]):
            raise self.guard.hidden(request, p, f"meter {meter_id!r}")
        return m

    def vehicle_or_404(self, request: Request, p: Principal, vehicle_id: str):
        v = self.vehicles.get(vehicle_id)
        if v is None:
            raise HTTPException(404, f"no vehicle {vehicle_id!r}")
        if not p.sees(v.org):
            raise self.guard.hidden(request, p, f"vehicle {vehicle_id!r}")
        return v

    # -- ranges, pages and the store -------------------------------------------------------------
    def require_query(self) -> Any:
        if self.ctx.query is None:
            raise HTTPException(503, "no store is attached to this API")
        return self.ctx.query

    def span(self, start: datetime | None, end: datetime | None, default_s: float) -> tuple[int, int]:
        """``[from, to)`` in ns; ``to`` defaults to now, ``from`` to ``default_s`` before it."""
        now = time.time_ns()
        e = to_ns(end, now, self.tz)
        s = to_ns(start, e - int(default_s * NS), self.tz)
        if s >= e:
            raise HTTPException(400, "`from` must be before `to`")
        return s, e

    @staticmethod
    def paged(items: Iterable[T], key: Callable[[T], str], limit: int, cursor: str | None) -> tuple[list[T], str | None]:
        """Sort config objects by ``key`` and cut one page; a cursor that is not one of these keys is a 400."""
        try:
            return page_ids(sorted(items, key=key), key, limit, cursor)
        except BadCursor as e:
            raise bad_cursor(e) from None

    @staticmethod
    async def run(coro: Awaitable[T]) -> T:
        """Await a read: a bad cursor is a 400, a store failure a 503."""
        try:
            return await coro
        except BadCursor as e:
            raise bad_cursor(e) from None
        except StoreError as e:
            raise HTTPException(503, f"store: {e}") from None

    async def latest_point(self, measurement: str, tag: str, ident: str) -> Point | None:
        """The newest point of a meter or vehicle: from live state, else the store."""
        pt = self.ctx.live.latest(measurement, ident)
        if pt is None and self.ctx.query is not None:
            rows = await self.run(self.ctx.query.latest(measurement, None, Where(tags={tag: ident})))
            if rows:
                t = max(r.time_ns for r in rows)
                pt = Point(measurement, dict(rows[0].tags), {r.field: r.value for r in rows if r.time_ns == t}, t)
        return pt

    async def records(self, measurement: str, tags: dict[str, Any], scope: str | None, s: int, e: int, limit: int,
                      cursor: str | None, hint_s: float) -> tuple[list[Row], str | None]:
        """One page of raw rows of a measurement written by the analytics (all its fields); none without a store."""
        if self.ctx.query is None:
            return [], None
        where = Where(tags=tags, org=scope)
        names = await self.run(field_names(self.ctx.query, measurement, where))
        return await self.run(page_raw(self.ctx.query, measurement, names, where, s, e, limit, cursor, hint_s))


def bad_cursor(e: BadCursor) -> HTTPException:
    return HTTPException(400, str(e))


# -- the dependencies ------------------------------------------------------------------------------
# Each reads the state from the request itself rather than depending on ``api_state``: a chained
# dependency costs a resolution of its own on every request (about 10 µs each, measured).
def state_of(request: Request) -> ApiState:
    """The app's state, for code that has the request (the hot route reads it without a dependency)."""
    return request.app.state.api


async def api_state(request: Request) -> ApiState:
    return state_of(request)


async def principal(request: Request) -> Principal:
    """The caller of a ``/v1`` route (``api.security.Guard.principal``; resolved already by a
    ``CachedQueryRoute`` before its parameters)."""
    p = getattr(request.state, "principal", None)
    if p is not None:
        return p
    return await state_of(request).guard.principal(request)


async def scraper(request: Request) -> Principal:
    """The caller of ``/metrics`` (``api.security.Guard.scraper``)."""
    return await state_of(request).guard.scraper(request)


Api = Annotated[ApiState, Depends(api_state)]
Who = Annotated[Principal, Depends(principal)]
Scraper = Annotated[Principal, Depends(scraper)]
