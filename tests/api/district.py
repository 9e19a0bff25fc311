"""A district with a history, for the dashboard's fast browser test: the demo district's ids
(edge/app/district.py, docs/api.md: 西湖区 with four institutions in two levels, two under the
district and two under a street office, five buildings, 30 meters, 20 vehicles) and, written
straight into an embedded store, what the service's analytics write over 400 days, in their shapes:
energy indicators by day, month and year (electricity, and carrier ``all`` with kWh/m² and kgce per
person), items, monthly CalTRACK reports and day rows of the main meters with a reporting period of
the last three months, anomalies, the last eight days of readings, today's tracks, trips, fleet
indicators and alerts.

It stands in for ``edge demo --days 400`` (tests/api/test_dashboard_demo.py runs the real one) where
a test must take seconds and know its figures: the figures are made up (a seasonal office load,
deterministic), not computed by the analytics; the API, roll-up included, is the real one.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

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
REPORTING_MONTHS = 3   # the baselines' reporting period: the last three months (the year before is the baseline)


@dataclass(frozen=True)
class B:
    id: str
    org: str
    name: str
    area: float
    occupants: int
    kwh_m2_year: float      # how hungry it is
    yard: tuple[float, float]
    saving: float           # what it saves against its baseline in the reporting period (a share; < 0: over)


BUILDINGS = (
    B("hq", CENTRE, "办公主楼", 12000, 420, 62.0, (30.2741, 120.1551), 0.07),
    B("hq-annex", CENTRE, "附楼", 4500, 150, 48.0, (30.2741, 120.1551), 0.03),
    B("edu", EDU, "教育局办公楼", 8000, 260, 55.0, (30.2815, 120.1380), 0.05),
    B("beishan", OFFICE, "街道办公楼", 5000, 120, 44.0, (30.2660, 120.1500), 0.02),
    B("clinic", CLINIC, "卫生服务中心", 3500, 90, 88.0, (30.2700, 120.1440), -0.04),
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
            meters.append(Meter(id=f"{b.id}-{name}", profile="chint-dtsu666", building=b.id, transport=t,
                                interval_s=900, parent=main, item=code))
        meters.append(Meter(id=f"{b.id}-water", profile="tuf2000m-water", building=b.id, carrier="water",
                            transport=t, interval_s=900, item="02000"))
        meters.append(Meter(id=f"{b.id}-gas", profile="fx-gas-corrector", building=b.id, carrier="gas",
                            transport=t, interval_s=900, item="03A00"))
    vehicles, fences = [], []
    n = 0
    for org, count in VEHICLES_PER_ORG.items():
        yard = next(b for b in BUILDINGS if b.org == org).yard
        fences.append(Geofence(name=YARD_NAMES[org], org=org, circle=Circle(lat=yard[0], lon=yard[1], radius_m=300)))
        for _ in range(count):
            n += 1
            vehicles.append(Vehicle(id=f"veh-{n:04d}", plate=f"浙A·D{n:04d}", org=org, home=YARD_NAMES[org]))
    return Site(
        site=SiteInfo(name="demo-xihu"),
        orgs=(Org(path="330000", name="浙江省"), Org(path="330000/330100", name="杭州市"), Org(path=XIHU, name="西湖区"),
              Org(path=CENTRE, name="西湖区机关事务管理中心"), Org(path=EDU, name="西湖区教育局"),
              Org(path=STREET, name="北山街道"), Org(path=OFFICE, name="北山街道办事处"),
              Org(path=CLINIC, name="北山街道社区卫生服务中心")),
        buildings=tuple(Building(id=b.id, org=b.org, name=b.name, floor_area_m2=b.area, occupants=b.occupants,
                                 quota_class="A") for b in BUILDINGS),
        meters=tuple(meters), vehicles=tuple(vehicles), geofences=tuple(fences), api=Api())


def day_kwh(b: B, day: dt.date) -> float:
    """A day's electricity: the building's yearly intensity, more in summer and winter, less at weekends."""
    doy = day.timetuple().tm_yday
    season = 1.0 + 0.35 * math.cos(2 * math.pi * (doy - 200) / 365) ** 2
    week = 1.0 if day.weekday() < 5 else 0.35
    noise = random.Random(f"{b.id}{day}").uniform(0.9, 1.1)
    return b.area * b.kwh_m2_year / 290 * season * week * noise


def month_start(day: dt.date, k: int = 0) -> dt.date:
    """The first day of ``day``'s month, ``k`` months on (k < 0: before)."""
    m = day.year * 12 + day.month - 1 + k
    return dt.date(m // 12, m % 12 + 1, 1)


@dataclass
class District:
    """The site, its store and the figures written (for assertions)."""

    site: Site
    store: EmbeddedStore
    live: LiveState
    ctx: ApiContext
    now_ns: int
    daily: dict[str, dict[dt.date, float]] = field(default_factory=dict)   # building -> day -> kWh (today: so far)
    fleet: dict[str, dict[str, float]] = field(default_factory=dict)       # org -> today's fleet figures

    def close(self) -> None:
        self.store.close()


def build(tmp_path: Path, days: int = 400, now_ns: int | None = None) -> District:
    site = make_site()
    now = now_ns or time.time_ns()
    today0 = now - (now + 8 * 3600 * NS) % DAY_NS
    today = dt.datetime.fromtimestamp(today0 / NS, TZ).date()
    first = today - dt.timedelta(days=days)
    frac_today = (now - today0) / DAY_NS
    pts: list[Point] = []

    def t_of(day: dt.date) -> int:
        return int(dt.datetime(day.year, day.month, day.day, tzinfo=TZ).timestamp()) * NS

    d = District(site, EmbeddedStore(tmp_path / "store.sqlite"), LiveState(), None, now)  # type: ignore[arg-type]
    for b in BUILDINGS:
        d.daily[b.id] = {first + dt.timedelta(days=i): day_kwh(b, first + dt.timedelta(days=i)) for i in range(days)}
        d.daily[b.id][today] = day_kwh(b, today) * frac_today
    # what each building and org holds: (scope, id, org, area m², people, {day: kWh})
    scopes = [("building", b.id, b.org, b.area, b.occupants, d.daily[b.id]) for b in BUILDINGS]
    for o in site.orgs:
        bs = [b for b in BUILDINGS if (b.org + "/").startswith(o.path + "/")]
        series: dict[dt.date, float] = {}
        for b in bs:
            for day, kwh in d.daily[b.id].items():
                series[day] = series.get(day, 0.0) + kwh
        scopes.append(("org", o.path, o.path, sum(b.area for b in bs), sum(b.occupants for b in bs), series))

    def ind(scope, ident, org, period, t, f, carrier="electricity") -> None:
        pts.append(Point("energy_indicator", {"scope": scope, "id": ident, "org": org, "period": period,
                                              "carrier": carrier}, {**f, "provisional_calendar": False}, t))

    y_this = today.replace(month=1, day=1)
    for scope, ident, org, area, people, series in scopes:
        closed = {day: kwh for day, kwh in series.items() if day < today}
        for day, kwh in series.items():   # days: today's so far too, as the live pass writes it
            ind(scope, ident, org, "day", t_of(day), {"consumption_kwh": kwh, "kgce": kwh * KGCE_PER_KWH,
                                                      "off_hours_share": 0.18 if day.weekday() < 5 else 0.9,
                                                      "peak_kw": kwh / 9.0, "coverage": 1.0})
            if (today - day).days < 35:
                ind(scope, ident, org, "day", t_of(day), all_fields(kwh, area, people), carrier="all")
        months: dict[dt.date, float] = {}
        for day, kwh in closed.items():   # months and years: closed days
            months[month_start(day)] = months.get(month_start(day), 0.0) + kwh
        for m0, kwh in months.items():
            ind(scope, ident, org, "month", t_of(m0), {"consumption_kwh": kwh, "kgce": kwh * KGCE_PER_KWH})
            ind(scope, ident, org, "month", t_of(m0), all_fields(kwh, area, people), carrier="all")
        ytd = sum(kwh for day, kwh in closed.items() if day >= y_this)
        if ytd:
            ind(scope, ident, org, "year", t_of(y_this), {"consumption_kwh": ytd, "kgce": ytd * KGCE_PER_KWH})
            ind(scope, ident, org, "year", t_of(y_this), all_fields(ytd, area, people), carrier="all")
        # items (分项): by day for the last 35 days, by month
        for day, kwh in series.items():
            if (today - day).days < 35:
                for code, share in ITEMS:
                    pts.append(Point("energy_item", {"scope": scope, "id": ident, "org": org, "period": "day",
                                                     "carrier": "electricity", "level": "2", "item": code},
                                     {"consumption_kwh": kwh * share, "share": share}, t_of(day)))
        for m0, kwh in months.items():
            hv = 0.33 + 0.1 * math.cos(2 * math.pi * (m0.month - 7.5) / 12) ** 2
            for code, share in {"01A00": 0.24, "01B00": hv, "01C00": 0.20, "unmetered": 0.56 - hv}.items():
                pts.append(Point("energy_item", {"scope": scope, "id": ident, "org": org, "period": "month",
                                                 "carrier": "electricity", "level": "2", "item": code},
                                 {"consumption_kwh": kwh * share, "share": share}, t_of(m0)))

    # baselines of the main meters: monthly reports (sufficient for the reporting months) and day rows
    reporting_from = month_start(today, -(REPORTING_MONTHS - 1))
    for b in BUILDINGS:
        tags = {"meter": f"{b.id}-main", "org": b.org}
        for k in range(13):
            m0 = month_start(today, -k)
            days_in = [day for day in d.daily[b.id] if month_start(day) == m0 and day < today]
            if not days_in:
                continue
            actual = sum(d.daily[b.id][day] for day in days_in)
            model = {"hdd_bp_c": 14.0, "cdd_bp_c": 22.0, "intercept": actual / len(days_in), "beta_hdd": 40.0,
                     "beta_cdd": 55.0, "r2": 0.82, "cvrmse": 0.11, "nmbe": 0.0, "g14_ok": True,
                     "reporting_days": len(days_in)}
            if m0 >= reporting_from:
                predicted = actual / (1.0 - b.saving)
                f = {**model, "sufficient": True, "reasons": "", "reporting_sufficient": True, "reporting_reasons": "",
                     "predicted": predicted, "actual": actual, "savings": predicted - actual, "savings_fraction": b.saving,
                     "fsu": 0.4, "savings_uncertainty": 0.4 * abs(predicted - actual) + 0.01 * predicted}
            else:
                f = {**model, "sufficient": False, "reasons": "too_many_days_with_missing_data",
                     "reporting_sufficient": True, "reporting_reasons": "",
                     "notes": "too_many_days_with_missing_data: the baseline year is not covered"}
            pts.append(Point("energy_baseline", {**tags, "model_type": "hdd_cdd", "period": "month"}, f, t_of(m0)))
        for day, kwh in d.daily[b.id].items():
            if day >= today or (today - day).days > 365:
                continue
            reporting = day >= reporting_from
            predicted = kwh / (1.0 - b.saving) if reporting else kwh * random.Random(f"fit{b.id}{day}").uniform(0.85, 1.15)
            pts.append(Point("energy_baseline_day", tags, {"actual": kwh, "predicted": predicted,
                                                           "lower": 0.6 * predicted, "upper": 1.4 * predicted,
                                                           "temp_c": 18.0, "reporting": reporting}, t_of(day)))
        anomaly_day = today - dt.timedelta(days=2)
        pts.append(Point("energy_anomaly", {**tags, "rule": "outside_prediction_interval"},
                         {"actual": 1.0, "predicted": 2.0, "lower": 1.5, "upper": 2.5, "level": 0.95}, t_of(anomaly_day)))

    # readings of the electricity meters: the last 8 days every 15 minutes (counter and power)
    for b in BUILDINGS:
        for name, share in (("main", 1.0), ("lighting", 0.24), ("hvac", 0.38), ("power", 0.20)):
            tags = {"meter": f"{b.id}-{name}", "org": b.org, "building": b.id, "carrier": "electricity",
                    "profile": "chint-dtsu666"}
            counter, t = 100_000.0 * share, today0 - 7 * DAY_NS
            while t <= now:
                local = dt.datetime.fromtimestamp(t / NS, TZ)
                office = 1.0 if 8 <= local.hour < 18 and local.weekday() < 5 else 0.25
                kw = day_kwh(b, local.date()) / 14.0 * office * share
                pts.append(Point("meter", tags, {"active_energy_import_kwh": counter, "active_power_total_kw": kw,
                                                 "voltage_l1_v": 230.0, "frequency_hz": 50.0}, t))
                counter += kw * 0.25
                t += 900 * NS
        for carrier, name in (("water", "water"), ("gas", "gas")):
            pts.append(Point("meter", {"meter": f"{b.id}-{name}", "org": b.org, "building": b.id, "carrier": carrier},
                             {"volume_m3": 1234.5}, now - 60 * NS))

    pts += fleet_points(d, today0, now)
    alert_t = max(today0 + NS, now - 1800 * NS)
    pts.append(Point("alert", {"vehicle": "veh-0003", "org": CENTRE, "kind": "overspeed"},
                     {"speed_kmh": 92.0, "limit_kmh": 80.0, "message": "浙A·D0003 above 80 km/h"}, alert_t))
    pts.append(Point("alert", {"meter": "clinic-main", "org": CLINIC, "rule": "night_load_above_base"},
                     {"message": "night load 38 kW above base 21 kW"}, alert_t + NS))
    d.store.write_points(pts)
    d.live.update(sorted((p for p in pts if p.measurement in ("meter", "position")), key=lambda p: p.time_ns))
    terminals = Fleet(site.vehicles).terminals
    d.ctx = ApiContext(site=site, live=d.live, query=StoreQuery(d.store),
                       extras={"terminals": lambda: list(terminals.values())})
    return d


def all_fields(kwh: float, area: float, people: int) -> dict:
    """A carrier ``all`` row's figures (electricity only here)."""
    return {"electricity_kwh": kwh, "kgce": kwh * KGCE_PER_KWH, "kwh_per_m2": kwh / area,
            "kgce_per_m2": kwh * KGCE_PER_KWH / area, "kgce_per_person": kwh * KGCE_PER_KWH / people}


def fleet_points(d: District, today0: int, now: int) -> list[Point]:
    """Today's positions (parked in the yard, out and back on a bent road for each trip), trips, and
    fleet indicators of the vehicles (today) and orgs (today, the last 13 months, this year)."""
    rng = random.Random(7)
    pts: list[Point] = []
    track_from = max(today0 + 60 * NS, now - 4 * 3600 * NS)
    span = max(now - track_from, 60 * NS)
    per_org: dict[str, dict[str, float]] = {}
    for v in d.site.vehicles:
        yard = next(b for b in BUILDINGS if b.org == v.org).yard
        n_trips = rng.choice((0, 1, 1, 2, 3))
        o = per_org.setdefault(v.org, {"trips": 0, "mileage_km": 0.0, "in_service": 0, "dispatched": 0, "in_use_h": 0.0})
        o["in_service"] += 1
        o["dispatched"] += bool(n_trips)
        t, (lat, lon) = track_from, yard

        def fix(t_ns, la, lo, speed, acc, heading=0.0, v=v):
            pts.append(Point("position", {"vehicle": v.id, "org": v.org},
                             {"lat": la, "lon": lo, "speed_kmh": speed, "heading_deg": heading, "acc": acc}, t_ns))
        for k in range(n_trips):
            start = track_from + span * (2 * k + 1) // (2 * n_trips + 1)
            end = track_from + span * (2 * k + 2) // (2 * n_trips + 1)
            while t < start:
                fix(t, lat, lon, 0.0, False)
                t += 120 * NS
            heading, km, trip_t = rng.uniform(0, 2 * math.pi), 0.0, t
            n = max(2, int((end - start) / (20 * NS)))
            for i in range(n):
                phase = i / (n - 1)
                r, ang = 0.03 * math.sin(math.pi * phase), heading + 0.8 * math.sin(3 * math.pi * phase)
                nlat, nlon = yard[0] + r * math.sin(ang), yard[1] + r * math.cos(ang) / math.cos(math.radians(30))
                km += math.hypot((nlat - lat) * 111.0, (nlon - lon) * 96.0)
                lat, lon = nlat, nlon
                fix(t, lat, lon, 35.0 + 20 * math.sin(math.pi * phase), True, math.degrees(ang) % 360)
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
            fix(t, lat, lon, 0.0, False)
            t += 120 * NS
        pts.append(Point("fleet_indicator", {"scope": "vehicle", "id": v.id, "org": v.org, "period": "day"},
                         {"trips": n_trips, "dispatched": bool(n_trips)}, today0))
    for org in list(per_org):   # the orgs above: what is below them
        parts = org.split("/")
        for up in ("/".join(parts[:i]) for i in range(1, len(parts))):
            u = per_org.setdefault(up, {"trips": 0, "mileage_km": 0.0, "in_service": 0, "dispatched": 0, "in_use_h": 0.0})
            for k in ("trips", "mileage_km", "in_service", "dispatched", "in_use_h"):
                u[k] += per_org[org][k]
    today = dt.datetime.fromtimestamp(today0 / NS, TZ).date()
    starts = [("day", today0), ("year", int(dt.datetime(today.year, 1, 1, tzinfo=TZ).timestamp()) * NS)]
    starts += [("month", int(dt.datetime.combine(month_start(today, -k), dt.time(), TZ).timestamp()) * NS) for k in range(13)]
    for org, o in per_org.items():
        holiday = 1 if org == CLINIC or CLINIC.startswith(org + "/") else 0
        for period, t0 in starts:
            k = {"day": 1, "month": 20, "year": 240}[period]     # a month and a year of such days
            pts.append(Point("fleet_indicator", {"scope": "org", "id": org, "org": org, "period": period},
                             {"trips": o["trips"] * k, "mileage_km": o["mileage_km"] * k, "gps_km": o["mileage_km"] * k,
                              "unobserved_km": 0.4 * k, "in_use_h": o["in_use_h"] * k,
                              "vehicles_in_service": o["in_service"], "vehicles_dispatched": o["dispatched"],
                              "holiday_trips": holiday * (k // 10), "weekend_trips": k // 5, "off_hours_trips": k // 4,
                              "utilisation": o["in_use_h"] / (o["in_service"] * 9.0),
                              "dispatch_rate": o["dispatched"] / o["in_service"], "provisional_calendar": False}, t0))
    d.fleet = per_org
    return pts
