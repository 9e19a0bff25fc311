"""Response bodies of the ``/v1`` API (pydantic models, so the OpenAPI document is exact).

Conventions: times are ISO 8601 strings with the site's offset (``2026-11-25T09:30:00.000+08:00``);
field names carry their unit (``active_power_total_kw``, ``speed_kmh``); lists are pages
``{"items": [...], "next_cursor": "..." | null}``.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, Field

Value = float | int | bool | str
T = TypeVar("T")


class Problem(BaseModel):
    """RFC 9457 problem details (``application/problem+json``)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[dict[str, Any]] | None = None


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(None, description="pass as `cursor` to get the next page; null on the last page")


class OrgOut(BaseModel):
    path: str = Field(description="org path of admin-division codes, e.g. 330000/330100/330106")
    code: str
    name: str
    parent: str | None


class OrgNode(BaseModel):
    path: str
    code: str
    name: str
    children: list["OrgNode"] = Field(default_factory=list)


class OrgTree(BaseModel):
    roots: list[OrgNode]


class BuildingOut(BaseModel):
    id: str
    org: str
    name: str
    floor_area_m2: float
    occupants: int = Field(description="用能人数, number of energy users")
    meters: list[str]


class MeterOut(BaseModel):
    id: str
    org: str
    building: str | None
    carrier: str
    profile: str | None = Field(description="device profile; null for a virtual meter")
    interval_s: float
    ct_ratio: float
    pt_ratio: float
    parent: str | None = Field(None, description="the meter this one sits behind (its consumption is inside the parent's)")
    item: str | None = Field(None, description="分项 code of what it measures (01A00 lighting and sockets, 01B00 HVAC, ...)")
    formula: str | None = Field(None, description="a virtual meter: the meters it is computed from")


class MeterLatest(BaseModel):
    meter: str
    org: str
    building: str | None = None
    carrier: str
    time: str = Field(description="time of the reading, ISO 8601 with offset")
    values: dict[str, Value] = Field(description="field name (with its unit) -> value")


class MeterHealth(BaseModel):
    meter: str
    status: str = Field(description="up | down | stale | unknown | virtual (computed from other meters)")
    last_reading: str | None = Field(None, description="time of the newest reading, ISO 8601")
    age_s: float | None = Field(None, description="seconds since the newest reading")
    interval_s: float
    device: dict[str, Any] = Field(default_factory=dict, description="the poller's view: failures, errors by kind, "
                                                                     "its bus's measured cycle time and budget")
    data: dict[str, Any] = Field(default_factory=dict, description="the energy passes' view: counter events by rule "
                                                                   "(wrap, replaced, reset, backstep, glitch, jump, gap), "
                                                                   "the last ones with evidence, data-quality alerts")


class Reading(BaseModel):
    time: str
    values: dict[str, Value | None]


class Readings(BaseModel):
    meter: str
    every: str | None = Field(None, description="window (e.g. 15m, 1h, day, month); null for raw readings")
    agg: str | None = None
    items: list[Reading]
    next_cursor: str | None = None


class VehicleOut(BaseModel):
    id: str
    plate: str
    org: str
    home: str | None
    in_service: bool


class VehicleLatest(BaseModel):
    vehicle: str
    plate: str
    org: str
    time: str
    crs: str = Field("wgs84", description="datum of lat/lon: wgs84 (stored) or gcj02 (converted on request)")
    lat: float = Field(description="degrees, in `crs`")
    lon: float = Field(description="degrees, in `crs`")
    speed_kmh: float | None = None
    heading_deg: float | None = None
    acc: bool | None = None
    status: str = Field("unknown", description="moving | idle (ignition on, not moving) | parked | offline")
    values: dict[str, Value] = Field(default_factory=dict)


class Fix(BaseModel):
    time: str
    lat: float
    lon: float
    speed_kmh: float | None = None
    heading_deg: float | None = None
    acc: bool | None = None


class GeofenceCircle(BaseModel):
    lat: float = Field(description="degrees, in `crs`")
    lon: float = Field(description="degrees, in `crs`")
    radius_m: float


class GeofenceOut(BaseModel):
    """A configured geofence (circle or polygon), in the datum asked for."""

    name: str
    org: str | None = Field(description="its org; null: the whole site's")
    crs: str = Field("wgs84", description="datum of the coordinates: wgs84 (configured) or gcj02 (converted on request)")
    circle: GeofenceCircle | None = None
    polygon: list[tuple[float, float]] | None = Field(None, description="[[lat, lon], ...] in `crs`")
    vehicles: list[str] = Field(default_factory=list, description="vehicles in scope whose home it is")


class Track(BaseModel):
    vehicle: str
    crs: str
    items: list[Fix]
    next_cursor: str | None = None


class Record(BaseModel):
    """A stored point of a derived measurement (trip, alert, indicator): its tags and fields."""

    time: str
    tags: dict[str, str]
    values: dict[str, Value]


class Indicator(BaseModel):
    scope: str
    id: str
    org: str
    period: str
    carrier: str | None = None
    start: str = Field(description="start of the period, ISO 8601 with offset")
    values: dict[str, Value] = Field(description="indicator name (with its unit) -> value")


class Baseline(BaseModel):
    """One ``energy_baseline`` point: a meter's CalTRACK model and, only when its baseline and
    reporting period are both sufficient, the savings."""

    meter: str
    org: str
    model_type: str
    start: str = Field(description="start of the reporting period, ISO 8601 with offset")
    sufficient: bool = Field(description="the baseline meets CalTRACK's data sufficiency rules")
    reasons: list[str] = Field(description="why the baseline is insufficient (codes; texts in notes)")
    reporting_sufficient: bool | None = None
    reporting_reasons: list[str] = []
    notes: list[str] = Field([], description="reasons and G14 verdicts in words")
    model: dict[str, Value] = Field(description="balance points, coefficients, R2, CV(RMSE), NMBE, G14 verdicts, days")
    savings: dict[str, Value] | None = Field(None, description="predicted, actual, savings, savings_fraction, fsu ...; "
                                                               "null when either period is insufficient")


class Alert(BaseModel):
    id: str = Field(description="stable id: time and series")
    time: str
    org: str
    kind: str | None = None
    subject: str | None = Field(None, description="vehicle or meter id")
    tags: dict[str, str]
    values: dict[str, Value]


class DeadLetterOut(BaseModel):
    id: int
    at: str
    source: str
    topic: str
    kind: str
    reason: str
    payload: str = Field(description="the payload as text (UTF-8, invalid bytes replaced)")


class KeyOut(BaseModel):
    id: str
    org: str
    role: str
    name: str
    created: str
    revoked: str | None


class KeyCreate(BaseModel):
    org: str = Field(description="org path the key is scoped to")
    role: str = Field("viewer", pattern="^(metrics|viewer|operator|admin)$",
                      description="metrics reads /metrics only; viewer, operator, admin read /v1 within the org")
    name: str = Field("", max_length=200)


class KeyCreated(KeyOut):
    token: str = Field(description="the secret token; shown once, never stored")


class AuditOut(BaseModel):
    id: int
    at: str
    key_id: str
    org: str
    role: str
    method: str
    path: str
    status: int
    action: str
    detail: str
    client: str = Field("", description="client address")
    count: int = Field(1, description="refusals this entry stands for (same client, minute, key, status, action)")


class Health(BaseModel):
    status: str = Field(description="ok | degraded | down")
    version: str
    live: bool = True
    ready: bool = True
    components: dict[str, Any]


class Replayed(BaseModel):
    replayed: int


class RollupRow(BaseModel):
    """One org (or building) of a roll-up, its figures for the period; null where there is none."""

    org: str = Field(description="the org's path (a building row: its org's)")
    building: str | None = Field(None, description="a building row's id (the rows of an institution)")
    name: str
    level: str = Field(description="province, city, district, street, institution or building")
    rank: int | None = Field(None, description="place by `ranked_by`, 1 first; rows without a value last")
    buildings: int
    floor_area_m2: float
    occupants: int
    kwh: float | None = Field(None, description="electricity, kWh (its top meters)")
    kwh_per_m2: float | None = None
    kgce: float | None = Field(None, description="综合能耗 over every carrier, kgce")
    kgce_per_person: float | None = None
    quota_kwh_per_m2: float | None = Field(None, description="annual quota, kWh/(m²·a): floor-area-weighted GB/T 51161 "
                                                             "constraint of its buildings' classes (unconfirmed default)")
    quota_progress: float | None = Field(None, description="kwh_per_m2 ÷ the annual quota prorated to the period")
    savings_kwh: float | None = Field(None, description="against the weather-normalised baselines of its top meters")
    savings_pct: float | None = Field(None, description="savings_kwh ÷ what the baselines predict, %")
    savings_uncertainty_kwh: float | None = Field(None, description="68 % (ASHRAE Guideline 14), the top meters' "
                                                                    "in quadrature: short periods are uncertain")
    savings_reasons: list[str] = Field(default_factory=list, description="why there are no savings (CalTRACK codes)")
    anomalies: int = Field(0, description="days of its meters outside their baseline's prediction interval")
    vehicles: int
    utilisation: float | None = Field(None, description="利用率: in-trip working hours ÷ working hours")
    dispatch_rate: float | None = Field(None, description="出车率: vehicles with a trip ÷ vehicles in service")
    trips: int | None = None
    holiday_trips: int | None = None
    href: str | None = Field(None, description="this row's own roll-up (an org), or its energy rows (a building)")


class Rollup(BaseModel):
    org: str
    name: str
    level: str
    period: str
    start: str = Field(description="the period's first day, ISO 8601 with offset")
    end: str = Field(description="the first instant after the period")
    elapsed: float = Field(description="share of the period's days closed (month and year rows cover those)")
    ranked_by: str
    order: str
    total: RollupRow = Field(description="the org itself")
    rows: list[RollupRow]


class BaselineDay(BaseModel):
    meter: str
    org: str
    start: str
    values: dict[str, Any] = Field(description="actual, predicted, lower, upper (95 %), temp_c, reporting")


class EnergyAnomaly(BaseModel):
    meter: str
    org: str
    rule: str = Field(description="outside_prediction_interval (analytics/energy/anomalies.py)")
    start: str
    values: dict[str, Any] = Field(description="the evidence: actual, predicted, lower, upper, level, temp_c, model")
