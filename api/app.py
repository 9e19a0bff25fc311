"""The HTTP API: ``/v1`` resources for the provincial platform, facility managers and dispatchers."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import FastAPI, HTTPException, Response
from pydantic import BaseModel, Field

from api import problems
from api.context import ApiContext
from edge import __version__
from edge.point import Point

TZ = ZoneInfo("Asia/Shanghai")


def iso(time_ns: int) -> str:
    """ISO 8601 with the site's offset (+08:00)."""
    return datetime.fromtimestamp(time_ns / 1e9, tz=timezone.utc).astimezone(TZ).isoformat(timespec="milliseconds")


class MeterLatest(BaseModel):
    meter: str
    org: str
    building: str | None = None
    carrier: str
    time: str = Field(description="time of the reading, ISO 8601 with offset")
    values: dict[str, float | int | bool | str] = Field(description="field name (with its unit) -> value")


class VehicleLatest(BaseModel):
    vehicle: str
    plate: str
    org: str
    time: str
    lat: float = Field(description="WGS-84 degrees")
    lon: float = Field(description="WGS-84 degrees")
    speed_kmh: float | None = None
    heading_deg: float | None = None
    acc: bool | None = None
    values: dict[str, float | int | bool | str] = Field(default_factory=dict)


class Health(BaseModel):
    status: str = Field(description="ok | degraded | down")
    version: str
    components: dict[str, Any]


def create_app(ctx: ApiContext) -> FastAPI:
    app = FastAPI(
        title="sensing-edge",
        version=__version__,
        description="Energy and vehicle sensing for public institutions (DB33/T 2474-2022).",
    )
    problems.install(app)
    app.state.ctx = ctx
    meters = {m.id: m for m in ctx.site.meters}
    vehicles = {v.id: v for v in ctx.site.vehicles}

    def _latest(measurement: str, ident: str) -> Point | None:
        p = ctx.live.latest(measurement, ident)
        if p is None and ctx.query is not None:
            p = ctx.query.latest_point(measurement, {"meter" if measurement == "meter" else "vehicle": ident})
        return p

    @app.get("/v1/meters/{meter_id}/latest", response_model=MeterLatest, tags=["meters"],
             responses={404: {"description": "unknown meter, or no reading yet"}})
    def meter_latest(meter_id: str) -> MeterLatest:
        m = meters.get(meter_id)
        if m is None:
            raise HTTPException(404, f"no meter {meter_id!r}")
        p = _latest("meter", meter_id)
        if p is None:
            raise HTTPException(404, f"meter {meter_id!r} has no reading yet")
        return MeterLatest(meter=meter_id, org=ctx.site.meter_org(m), building=m.building,
                           carrier=m.carrier.value, time=iso(p.time_ns), values=dict(p.fields))

    @app.get("/v1/vehicles/{vehicle_id}/latest", response_model=VehicleLatest, tags=["vehicles"],
             responses={404: {"description": "unknown vehicle, or no position yet"}})
    def vehicle_latest(vehicle_id: str) -> VehicleLatest:
        v = vehicles.get(vehicle_id)
        if v is None:
            raise HTTPException(404, f"no vehicle {vehicle_id!r}")
        p = _latest("position", vehicle_id)
        if p is None:
            raise HTTPException(404, f"vehicle {vehicle_id!r} has no position yet")
        f = dict(p.fields)
        return VehicleLatest(vehicle=vehicle_id, plate=v.plate, org=v.org, time=iso(p.time_ns),
                             lat=float(f.pop("lat")), lon=float(f.pop("lon")),
                             speed_kmh=f.pop("speed_kmh", None), heading_deg=f.pop("heading_deg", None),
                             acc=f.pop("acc", None), values=f)

    @app.get("/v1/health", response_model=Health, tags=["operations"])
    def health(response: Response) -> Health:
        h = ctx.health()
        if h.get("status") == "down":
            response.status_code = 503
        return Health(status=h.get("status", "ok"), version=__version__, components=h.get("components", {}))

    @app.get("/metrics", tags=["operations"], response_class=Response,
             responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}})
    def metrics() -> Response:
        body = ctx.metrics_text() if ctx.metrics_text else b""
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    return app
