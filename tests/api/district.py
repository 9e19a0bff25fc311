"""A district with a history, for the dashboard's browser tests: 西湖区 with four institutions in two
levels (two under the district, two under a street office), five buildings, 30 meters and 20
vehicles, with the ids of the demo district (edge/app/district.py, docs/api.md), and what
the analytics would have written over 400 days (daily, monthly and yearly energy indicators, items,
monthly baselines, meter readings of the last 8 days, today's tracks, trips, fleet indicators and
alerts), written straight into an embedded store.

It stands in for ``edge demo --days N`` where a test must be fast and its figures known: the
figures are made up (a seasonal office load, deterministic), not computed by the analytics. The
roll-up resource (``/v1/rollup``) is the other half of the issue; until it is in the app,
``rollup_router`` answers its contract from the same figures.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from api.context import ApiContext
from collector.jt808.session import Fleet
from edge.config import Api, Building, Circle, Geofence, Meter, Org, Site, SiteInfo, Transport, Vehicle
from edge.live import LiveState
from edge.point import Point
from edge.query import StoreQuery
from edge.store import EmbeddedStore

NS = 1_000_000_000
DAY_NS = 86400 * NS
TZ = dt.timezone(dt.timedelta(hours=8))
XIHU = "330000/330100/330106"
STREET = f"{XIHU}/330106004"   # 北山街道: a street office, no building of its own
CENTRE = f"{XIHU}/inst-042"    # 西湖区机关事务管理中心
EDU = f"{XIHU}/inst-043"       # 西湖区教育局
OFFICE = f"{STREET}/inst-101"  # 北山街道办事处
CLINIC = f"{STREET}/inst-102"  # 北山街道社区卫生服务中心
INSTITUTIONS = (CENTRE, EDU, OFFICE, CLINIC)
ITEMS = (("01A00", 0.24), ("01B00", 0.38), ("01C00", 0.20), ("unmetered", 0.18))
KGCE_PER_KWH = 0.1229
QUOTA_KWH_M2 = 70.0


@dataclass(frozen=True)
class B:
    id: str
    org: str
    name: str
    area: float
    occupants: int
    kwh_m2_year: float      # how hungry it is
    yard: tuple[float, float]


BUILDINGS = (
    B("hq", CENTRE, "办公主楼", 12000, 420, 62.0, (30.2741, 120.1551)),
    B("hq-annex", CENTRE, "附楼", 4500, 150, 48.0, (30.2741, 120.1551)),
    B("edu", EDU, "教育局办公楼", 8000, 260, 55.0, (30.2815, 120.1380)),
    B("beishan", OFFICE, "街道办公楼", 5000, 120, 44.0, (30.2660, 120.1500)),
    B("clinic", CLINIC, "卫生服务中心", 3500, 90, 88.0, (30.2700, 120.1440)),
)
VEHICLES_PER_ORG = {CENTRE: 8, EDU: 5, OFFICE: 4, CLINIC: 3}
YARD_NAMES = {CENTRE: "hq-yard", EDU: "edu-yard", OFFICE: "beishan-yard", CLINIC: "clinic-yard"}


def make_site() -> Site:
    t = Transport(host="127.0.0.1", port=5020)
    meters: list[Meter] = []
    for b in BUILDINGS:
        main = f"{b.id}-main"
        meters.append(Meter(id=main, profile="chint-dtsu666", building=b.id, transport=t, interval_s=900))
        for code, name in (("01A00", "lighting"), ("01B00", "hvac"), ("01C00", "power")):
            meters.append(Meter(id=f"{b.id}-{name}", profile="eastron-sdm630", building=b.id, transport=t,
                                interval_s=900, parent=main, item=code))
        meters.append(Meter(id=f"{b.id}-water", profile="tuf2000m-water", building=b.id, carrier="water",
                            transport=t, interval_s=900, item="02000"))
        meters.append(Meter(id=f"{b.id}-gas", profile="fx-gas-corrector", building=b.id, carrier="gas",
                            transport=t, interval_s=900, item="03A00"))
    vehicles, fences = [], []
    n = 0
    for org, count in VEHICLES_PER_ORG.items():
        yard = next(b for b in BUILDINGS if b.org == org)
        fence = YARD_NAMES[org]
        fences.append(Geofence(name=fence, org=org, circle=Circle(lat=yard.yard[0], lon=yard.yard[1], radius_m=300)))
        for _ in range(count):
            n += 1
            vehicles.append(Vehicle(id=f"veh-{n:04d}", plate=f"浙A·D{n:04d}", org=org, home=fence))
    return Site(
        site=SiteInfo(name="demo-xihu"),
        orgs=(Org(path="330000", name="浙江省"), Org(path="330000/330100", name="杭州市"), Org(path=XIHU, name="西湖区"),
              Org(path=CENTRE, name="西湖区机关事务管理中心"), Org(path=EDU, name="西湖区教育局"),
              Org(path=STREET, name="北山街道"), Org(path=OFFICE, name="北山街道办事处"),
              Org(path=CLINIC, name="北山街道社区卫生服务中心")),
        buildings=tuple(Building(id=b.id, org=b.org, name=b.name, floor_area_m2=b.area, occupants=b.occupants)
                        for b in BUILDINGS),
        meters=tuple(meters), vehicles=tuple(vehicles), geofences=tuple(fences), api=Api())


def local_midnight_ns(t_ns: int) -> int:
    return t_ns - (t_ns + 8 * 3600 * NS) % DAY_NS


def day_kwh(b: B, day: dt.date, seed: int) -> float:
    """A day's electricity: the building's yearly intensity, more in summer and winter, less at weekends."""
    doy = day.timetuple().tm_yday
    season = 1.0 + 0.35 * math.cos(2 * math.pi * (doy - 200) / 365) ** 2
    week = 1.0 if day.weekday() < 5 else 0.35
    noise = random.Random(f"{b.id}{day}{seed}").uniform(0.9, 1.1)
    return b.area * b.kwh_m2_year / 365 * season * week * noise * 365 / 290


@dataclass
class District:
    """The site, its store and what was written (for assertions and the roll-up stand-in)."""

    site: Site
    store: EmbeddedStore
    live: LiveState
    ctx: ApiContext
    now_ns: int
    daily: dict[str, dict[dt.date, float]] = field(default_factory=dict)   # building -> day -> kWh
    fleet: dict[str, dict[str, float]] = field(default_factory=dict)       # org -> today's fleet figures
    savings: dict[str, tuple[float, float]] = field(default_factory=dict)  # building -> this month (predicted, actual)

    def close(self) -> None:
        self.store.close()


def build(tmp_path: Path, days: int = 400, now_ns: int | None = None) -> District:
    site = make_site()
    now = now_ns or time.time_ns()
    today0 = local_midnight_ns(now)
    today = dt.datetime.fromtimestamp(today0 / NS, TZ).date()
    first = today - dt.timedelta(days=days - 1)
    store = EmbeddedStore(tmp_path / "store.sqlite")
    live = LiveState()
    d = District(site, store, live, None, now)  # type: ignore[arg-type]
    pts: list[Point] = []

    def t_of(day: dt.date) -> int:
        return int(dt.datetime(day.year, day.month, day.day, tzinfo=TZ).timestamp()) * NS

    frac_today = (now - today0) / DAY_NS
    for b in BUILDINGS:
        d.daily[b.id] = {first + dt.timedelta(days=i): day_kwh(b, first + dt.timedelta(days=i), 1) for i in range(days)}
        d.daily[b.id][today] *= frac_today

    def orgs_at_or_above(org: str) -> list[str]:
        parts = org.split("/")
        return ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]

    # daily, monthly and yearly rows of buildings and orgs (electricity), as the energy passes write them
    def ind(scope: str, ident: str, org: str, period: str, t: int, f: dict, carrier: str = "electricity") -> None:
        pts.append(Point("energy_indicator", {"scope": scope, "id": ident, "org": org, "period": period,
                                              "carrier": carrier}, {**f, "provisional_calendar": False}, t))

    area = {o.path: sum(b.area for b in BUILDINGS if (b.org + "/").startswith(o.path + "/")) for o in site.orgs}
    people = {o.path: sum(b.occupants for b in BUILDINGS if (b.org + "/").startswith(o.path + "/")) for o in site.orgs}
    for b in BUILDINGS:
        for day, kwh in d.daily[b.id].items():
            ind("building", b.id, b.org, "day", t_of(day),
                {"consumption_kwh": kwh, "kgce": kwh * KGCE_PER_KWH, "kgco2": kwh * 0.5617, "peak_kw": kwh / 9.0,
                 "off_hours_share": 0.18 if day.weekday() < 5 else 0.9, "coverage": 1.0})
    org_day: dict[str, dict[dt.date, float]] = {}
    for b in BUILDINGS:
        for day, kwh in d.daily[b.id].items():
            for org in orgs_at_or_above(b.org):
                org_day.setdefault(org, {})
                org_day[org][day] = org_day[org].get(day, 0.0) + kwh
    for org, series in org_day.items():
        for day, kwh in series.items():
            ind("org", org, org, "day", t_of(day), {"consumption_kwh": kwh, "kgce": kwh * KGCE_PER_KWH,
                                                    "off_hours_share": 0.2, "coverage": 1.0})
    series_of = {("building", b.id, b.org): d.daily[b.id] for b in BUILDINGS}
    series_of.update({("org", o, o): s for o, s in org_day.items()})
    for (scope, ident, org), series in series_of.items():
        months: dict[dt.date, float] = {}
        for day, kwh in series.items():
            months[day.replace(day=1)] = months.get(day.replace(day=1), 0.0) + kwh
        for m0, kwh in months.items():
            ind(scope, ident, org, "month", t_of(m0), {"consumption_kwh": kwh, "kgce": kwh * KGCE_PER_KWH})
        y0 = today.replace(month=1, day=1)
        ytd = sum(kwh for day, kwh in series.items() if day >= y0)
        a = area[ident] if scope == "org" else next(b.area for b in BUILDINGS if b.id == ident)
        p = people[ident] if scope == "org" else next(b.occupants for b in BUILDINGS if b.id == ident)
        ind(scope, ident, org, "year", t_of(y0), {"consumption_kwh": ytd, "kgce": ytd * KGCE_PER_KWH})
        ind(scope, ident, org, "year", t_of(y0), {"kgce": ytd * KGCE_PER_KWH, "electricity_kwh": ytd,
                                                  "kwh_per_m2": ytd / a, "kgce_per_m2": ytd * KGCE_PER_KWH / a,
                                                  "kgce_per_person": ytd * KGCE_PER_KWH / p,
                                                  "kgce_per_m2_target_ratio": ytd * KGCE_PER_KWH / a / 18.48,
                                                  "kgce_per_person_target_ratio": ytd * KGCE_PER_KWH / p / 329.56},
            carrier="all")

    # items (分项) by day for the last 35 days and by month, for buildings and orgs
    for (scope, ident, org), series in series_of.items():
        months: dict[dt.date, float] = {}
        for day, kwh in series.items():
            months[day.replace(day=1)] = months.get(day.replace(day=1), 0.0) + kwh
            if (today - day).days < 35:
                for code, share in ITEMS:
                    pts.append(Point("energy_item", {"scope": scope, "id": ident, "org": org, "period": "day",
                                                     "carrier": "electricity", "level": "2", "item": code},
                                     {"consumption_kwh": kwh * share, "share": share}, t_of(day)))
        for m0, kwh in months.items():
            hv = 0.38 + 0.1 * math.cos(2 * math.pi * (m0.month - 7.5) / 12) ** 2 - 0.05
            shares = {"01A00": 0.24, "01B00": hv, "01C00": 0.20, "unmetered": 1.0 - 0.44 - hv}
            for code, share in shares.items():
                pts.append(Point("energy_item", {"scope": scope, "id": ident, "org": org, "period": "month",
                                                 "carrier": "electricity", "level": "2", "item": code},
                                 {"consumption_kwh": kwh * share, "share": share}, t_of(m0)))

    # monthly CalTRACK baselines of the main meters over the last 12 months (the year before is the baseline)
    for b in BUILDINGS:
        m0 = today.replace(day=1)
        for k in range(12):
            start = m0
            end = min(today + dt.timedelta(days=1), (start + dt.timedelta(days=32)).replace(day=1))
            actual = sum(kwh for day, kwh in d.daily[b.id].items() if start <= day < end)
            frac = 0.04 + 0.06 * random.Random(f"{b.id}{start}").random() - (0.09 if b.id == "clinic" else 0.0)
            predicted = actual / (1.0 - frac)
            if k == 0:
                d.savings[b.id] = (predicted, actual)
            pts.append(Point("energy_baseline", {"meter": f"{b.id}-main", "org": b.org, "model_type": "hdd_cdd"},
                             {"hdd_bp_c": 14.0, "cdd_bp_c": 22.0, "intercept": actual / max(1, (end - start).days) * 0.7,
                              "beta_hdd": 40.0, "beta_cdd": 55.0, "r2": 0.82, "cvrmse": 0.11, "nmbe": 0.001,
                              "baseline_days": 365, "g14_ok": True, "sufficient": True, "reasons": "",
                              "reporting_days": (end - start).days, "reporting_sufficient": True,
                              "reporting_reasons": "", "predicted": predicted, "actual": actual,
                              "savings": predicted - actual, "savings_fraction": frac, "fsu": 0.12,
                              "savings_uncertainty": 0.12 * abs(predicted - actual)}, t_of(start)))
            m0 = (start - dt.timedelta(days=1)).replace(day=1)
        pts.append(Point("energy_anomaly", {"meter": f"{b.id}-main", "org": b.org, "rule": "outside_prediction_interval"},
                         {"actual": 1.0, "predicted": 2.0}, t_of(today - dt.timedelta(days=3))))

    # readings of the electricity meters: the last 8 days every 15 minutes (counter and power)
    t0 = today0 - 7 * DAY_NS
    for b in BUILDINGS:
        for name, share in (("main", 1.0), ("lighting", 0.24), ("hvac", 0.38), ("power", 0.20)):
            mid = f"{b.id}-{name}"
            tags = {"meter": mid, "org": b.org, "building": b.id, "carrier": "electricity", "profile": "chint-dtsu666"}
            counter = 100_000.0 * share
            t = t0
            while t <= now:
                day = dt.datetime.fromtimestamp(t / NS, TZ)
                hour = day.hour + day.minute / 60
                office = 1.0 if 8 <= hour < 18 and day.weekday() < 5 else 0.25
                kw = d.daily[b.id].get(day.date(), 0.0) / 14.0 * office * share * (1.0 if day.date() != today
                                                                                    else 1 / max(frac_today, 0.05))
                pts.append(Point("meter", tags, {"active_energy_import_kwh": counter, "active_power_total_kw": kw,
                                                 "voltage_l1_v": 230.0, "frequency_hz": 50.0}, t))
                counter += kw * 0.25
                t += 900 * NS
        for carrier, name, field_ in (("water", "water", "volume_m3"), ("gas", "gas", "volume_m3")):
            pts.append(Point("meter", {"meter": f"{b.id}-{name}", "org": b.org, "building": b.id, "carrier": carrier},
                             {field_: 1234.5}, now - 60 * NS))

    # today's tracks, trips and fleet indicators
    rng = random.Random(7)
    track_from = max(today0 + 60 * NS, now - 4 * 3600 * NS)
    org_fleet: dict[str, dict[str, float]] = {}
    for v in site.vehicles:
        yard = next(b for b in BUILDINGS if b.org == v.org).yard
        n_trips = rng.choice((0, 1, 1, 2, 3))
        o = org_fleet.setdefault(v.org, {"trips": 0, "mileage_km": 0.0, "in_service": 0, "dispatched": 0,
                                         "holiday_trips": 0, "in_use_h": 0.0})
        o["in_service"] += 1
        t = track_from
        lat, lon = yard
        span = max(now - track_from, 60 * NS)
        for k in range(n_trips):
            start = track_from + span * (2 * k + 1) // (2 * n_trips + 1)
            end = track_from + span * (2 * k + 2) // (2 * n_trips + 1)
            while t < start:   # parked in the yard
                pts.append(Point("position", {"vehicle": v.id, "org": v.org},
                                 {"lat": lat, "lon": lon, "speed_kmh": 0.0, "heading_deg": 0.0, "acc": False}, t))
                t += 120 * NS
            heading = rng.uniform(0, 2 * math.pi)
            km = 0.0
            trip_t = t
            n = max(2, int((end - start) / (20 * NS)))
            for i in range(n):  # out along a bent road and back
                phase = i / (n - 1)
                r = 0.03 * math.sin(math.pi * phase)
                ang = heading + 0.8 * math.sin(3 * math.pi * phase)
                nlat, nlon = yard[0] + r * math.sin(ang), yard[1] + r * math.cos(ang) / math.cos(math.radians(30))
                km += math.hypot((nlat - lat) * 111.0, (nlon - lon) * 96.0)
                lat, lon = nlat, nlon
                pts.append(Point("position", {"vehicle": v.id, "org": v.org},
                                 {"lat": lat, "lon": lon, "speed_kmh": 35.0 + 20 * math.sin(math.pi * phase),
                                  "heading_deg": math.degrees(ang) % 360, "acc": True}, t))
                t += (end - start) // n
            lat, lon = yard
            pts.append(Point("trip", {"vehicle": v.id, "org": v.org},
                             {"distance_km": km, "duration_s": (t - trip_t) / NS, "start_lat": yard[0],
                              "start_lon": yard[1], "end_lat": yard[0], "end_lon": yard[1], "end_ns": t,
                              "max_speed_kmh": 55.0, "mean_speed_kmh": 35.0, "off_hours": False, "holiday": False,
                              "weekend": False, "method": "acc"}, trip_t))
            o["trips"] += 1
            o["mileage_km"] += km
            o["in_use_h"] += (t - trip_t) / NS / 3600
        while t <= now:
            pts.append(Point("position", {"vehicle": v.id, "org": v.org},
                             {"lat": lat, "lon": lon, "speed_kmh": 0.0, "heading_deg": 0.0, "acc": False}, t))
            t += 120 * NS
        if n_trips:
            o["dispatched"] += 1
        pts.append(Point("fleet_indicator", {"scope": "vehicle", "id": v.id, "org": v.org, "period": "day"},
                         {"trips": n_trips, "mileage_km": 0.0, "dispatched": bool(n_trips)}, today0))
    for org, o in org_fleet.items():
        o["holiday_trips"] = 1 if org == CLINIC else 0
        o["utilisation"] = o["in_use_h"] / (o["in_service"] * 9.0)
        o["dispatch_rate"] = o["dispatched"] / o["in_service"]
    for org in list(org_fleet):
        for up in orgs_at_or_above(org)[:-1]:
            u = org_fleet.setdefault(up, {"trips": 0, "mileage_km": 0.0, "in_service": 0, "dispatched": 0,
                                          "holiday_trips": 0, "in_use_h": 0.0})
            for k in ("trips", "mileage_km", "in_service", "dispatched", "holiday_trips", "in_use_h"):
                u[k] += org_fleet[org][k]
    for org, o in org_fleet.items():
        o["utilisation"] = o["in_use_h"] / (o["in_service"] * 9.0)
        o["dispatch_rate"] = o["dispatched"] / o["in_service"]
        pts.append(Point("fleet_indicator", {"scope": "org", "id": org, "org": org, "period": "day"},
                         {"trips": o["trips"], "mileage_km": o["mileage_km"], "gps_km": o["mileage_km"],
                          "unobserved_km": 0.4, "vehicles_in_service": o["in_service"],
                          "vehicles_dispatched": o["dispatched"], "holiday_trips": o["holiday_trips"],
                          "utilisation": o["utilisation"], "dispatch_rate": o["dispatch_rate"],
                          "provisional_calendar": False}, today0))
    d.fleet = org_fleet
    alert_t = max(today0 + NS, now - 1800 * NS)
    pts.append(Point("alert", {"vehicle": "veh-0003", "org": CENTRE, "kind": "overspeed"},
                     {"speed_kmh": 92.0, "limit_kmh": 80.0, "message": "浙A·D0003 above 80 km/h"}, alert_t))
    pts.append(Point("alert", {"meter": "clinic-main", "org": CLINIC, "rule": "night_load_above_base"},
                     {"message": "night load 38 kW above base 21 kW"}, alert_t + NS))
    store.write_points(pts)
    live.update(sorted((p for p in pts if p.measurement in ("meter", "position")), key=lambda p: p.time_ns))
    terminals = Fleet(site.vehicles).terminals
    d.ctx = ApiContext(site=site, live=live, query=StoreQuery(store), extras={"terminals": lambda: list(terminals.values())})
    return d


def rollup_rows(d: District, org: str, period: str) -> list[dict[str, Any]]:
    """``/v1/rollup``'s rows (the contract of issue 18) from the fixture's figures: the institutions
    below ``org``, for ``period`` ending today."""
    today = max(next(iter(d.daily.values())))
    start = {"day": today, "month": today.replace(day=1), "year": today.replace(month=1, day=1)}[period]
    names = {o.path: o.name for o in d.site.orgs}
    rows = []
    for inst in INSTITUTIONS:
        if not (inst + "/").startswith(org + "/") or inst == org:
            continue
        bs = [b for b in BUILDINGS if (b.org + "/").startswith(inst + "/")]
        kwh = sum(v for b in bs for day, v in d.daily[b.id].items() if day >= start)
        ytd = sum(v for b in bs for day, v in d.daily[b.id].items() if day >= today.replace(month=1, day=1))
        area = sum(b.area for b in bs)
        people = sum(b.occupants for b in bs)
        pred = sum(d.savings[b.id][0] for b in bs)
        act = sum(d.savings[b.id][1] for b in bs)
        f = d.fleet.get(inst, {})
        rows.append({"org": inst, "name": names[inst], "level": "institution",
                     "buildings": len(bs), "floor_area_m2": area, "occupants": people, "kwh": kwh,
                     "kwh_per_m2": kwh / area, "kgce": kwh * KGCE_PER_KWH, "kgce_per_person": kwh * KGCE_PER_KWH / people,
                     "quota_kwh_per_m2": QUOTA_KWH_M2, "quota_progress": ytd / area / QUOTA_KWH_M2,
                     "savings_kwh": pred - act if period == "month" else None,
                     "savings_pct": 100 * (pred - act) / pred if period == "month" else None,
                     "vehicles": int(f.get("in_service", 0)), "utilisation": f.get("utilisation"),
                     "dispatch_rate": f.get("dispatch_rate"), "holiday_trips": int(f.get("holiday_trips", 0)),
                     "href": f"/v1/rollup?org={inst}&period={period}"})
    return rows


SORTABLE = ("kwh_per_m2", "kgce_per_person", "quota_progress", "savings_pct", "utilisation", "dispatch_rate", "kwh")


def rollup_router(d: District):
    """``GET /v1/rollup`` as the contract says, answered from the fixture (until the real one is in the app)."""
    from fastapi import APIRouter, HTTPException

    router = APIRouter()

    @router.get("/v1/rollup")
    async def rollup(org: str = XIHU, period: str = "month", sort: str = "kwh_per_m2", at: str | None = None):
        if period not in ("day", "month", "year") or sort not in SORTABLE:
            raise HTTPException(400, "bad period or sort")
        rows = rollup_rows(d, org, period)
        desc = sort in ("savings_pct", "utilisation", "dispatch_rate")
        rows.sort(key=lambda r: (r[sort] is None, -(r[sort] or 0) if desc else (r[sort] or 0)))
        today = max(next(iter(d.daily.values())))
        start = {"day": today, "month": today.replace(day=1), "year": today.replace(month=1, day=1)}[period]
        return {"org": org, "period": period, "start": f"{start.isoformat()}T00:00:00.000+08:00", "ranked_by": sort,
                "rows": rows}

    return router
