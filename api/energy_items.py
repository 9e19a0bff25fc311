"""``/v1/energy/items``: a building's or an org's consumption by item (分项), as the energy passes
wrote it (measurement ``energy_item``, ``analytics.energy.jobs.item_points``).

Each period's items add up to the scope's total (its top meters, counted once); the unmetered
remainder (what parent meters measured beyond their sub-meters: unmetered loads and losses) and
what is metered without an item are items of their own. Every item names its classification
code, its names and how sure we are of the code (``analytics.energy.items``).

(No ``from __future__ import annotations`` here: FastAPI reads the routes' annotations at runtime.)
"""

import time
from datetime import datetime
from typing import Annotated, Any, Callable, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, Field

from analytics.energy.items import describe
from api.routing import StrictQueryRoute
from api.keys import Principal
from api.reads import NS, field_names, iso, rows_from_series, to_ns
from api.security import Guard
from edge.config import Site, check_org_path
from edge.errors import StoreError
from edge.query import Where

MEASUREMENT = "energy_item"


class ItemValue(BaseModel):
    item: str = Field(description="分项 code (01A00 ...), or `unmetered` (unmetered and losses), or `unassigned` "
                                  "(metered, no item)")
    name: str
    name_zh: str
    confidence: str = Field(description="how sure we are of the code: several independent sources, two, one, ours")
    consumption: float = Field(description="in the carrier's unit (`unit`)")
    share: float | None = Field(None, description="of the scope's total, 0..1")


class ItemPeriod(BaseModel):
    start: str = Field(description="start of the period, ISO 8601 with offset")
    total: float = Field(description="the scope's total: its top meters, counted once; the items add up to it")
    items: list[ItemValue]


class ItemBreakdown(BaseModel):
    scope: str
    id: str
    carrier: str
    unit: str
    period: str
    level: int = Field(description="2: the items (lighting and sockets, HVAC, power, special); 3: their sub-items")
    periods: list[ItemPeriod]


def items_router(site: Site, guard: Guard, query: Callable[[], Any], tz: ZoneInfo) -> APIRouter:
    """The router; ``query()`` gives the query layer (``edge.query.Query``) or None."""
    router = APIRouter(tags=["indicators"], route_class=StrictQueryRoute)
    buildings = {b.id: b for b in site.buildings}
    orgs = {o.path for o in site.orgs}
    Who = Annotated[Principal, Depends(guard.principal)]

    def check_scope(request: Request, p: Principal, scope: str, ident: str) -> None:
        if scope == "building":
            b = buildings.get(ident)
            if b is None:
                raise HTTPException(404, f"no building {ident!r}")
            if not p.sees(b.org):
                raise guard.hidden(request, p, f"building {ident!r}")
            return
        try:
            check_org_path(ident)
        except ValueError:
            raise HTTPException(404, "no such org") from None
        if not p.sees(ident):
            raise guard.hidden(request, p, f"org {ident!r}")
        if ident not in orgs:
            raise HTTPException(404, "no such org")

    def default_start(period: str, end_ns: int) -> int:
        now = datetime.fromtimestamp(end_ns / NS, tz)
        if period == "day":
            start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        elif period == "month":
            start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        else:
            start = now.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
        return int(start.timestamp()) * NS

    @router.get("/v1/energy/items", response_model=ItemBreakdown,
                responses={404: {"description": "no such building or org (or not within your org)"},
                           503: {"description": "the store is unavailable"}})
    async def energy_items(
            p: Who, request: Request,
            id: Annotated[str, Query(max_length=300, description="building id or org path")],
            scope: Annotated[Literal["building", "org"], Query()] = "building",
            period: Literal["day", "month", "year"] = "day",
            carrier: Literal["electricity", "water", "gas", "heat"] = "electricity",
            level: Annotated[int, Query(ge=2, le=3, description="2 items, 3 sub-items")] = 2,
            start: Annotated[datetime | None, Query(alias="from", description="ISO 8601; default: the current period")] = None,
            end: Annotated[datetime | None, Query(alias="to", description="ISO 8601, exclusive; default now")] = None,
    ) -> ItemBreakdown:
        """Consumption by item (分项) of a building or an org, per day, month or year: the items add
        up to the total with the unmetered share (docs/energy.md, "Items")."""
        check_scope(request, p, scope, id)
        q = query()
        unit = "kWh" if carrier in ("electricity", "heat") else "m3"
        out = ItemBreakdown(scope=scope, id=id, carrier=carrier, unit=unit, period=period, level=level, periods=[])
        if q is None:
            return out
        e = to_ns(end, time.time_ns(), tz)
        s = to_ns(start, default_start(period, e), tz)
        if s >= e:
            raise HTTPException(400, "`from` must be before `to`")
        where = Where(tags={"scope": scope, "id": id, "period": period, "carrier": carrier, "level": str(level)},
                      org=p.org)
        try:
            names = [n for n in await field_names(q, MEASUREMENT, where) if n in ("consumption_kwh", "consumption_m3", "share")]
            rows = rows_from_series(await q.raw(MEASUREMENT, names, s, e, where)) if names else []
        except StoreError as err:
            raise HTTPException(503, f"store: {err}") from None
        by_start: dict[int, list] = {}
        for r in rows:
            by_start.setdefault(r.time_ns, []).append(r)
        for t in sorted(by_start):
            items = []
            for r in by_start[t]:
                code = r.tags.get("item", "")
                d = describe(code)
                v = r.values.get("consumption_kwh", r.values.get("consumption_m3"))
                if v is None:
                    continue
                items.append(ItemValue(item=code, name=d.name, name_zh=d.name_zh, confidence=d.confidence.value,
                                       consumption=float(v), share=r.values.get("share")))
            items.sort(key=lambda i: (i.item in ("unmetered", "unassigned"), i.item))
            out.periods.append(ItemPeriod(start=iso(t, tz), total=sum(i.consumption for i in items), items=items))
        return out

    return router
