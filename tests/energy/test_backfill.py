"""A site started from 400 days of history (edge.app.backfill): readings and positions in the store as live
data would be, every indicator family with values, and the service's baseline job carrying on when
the next day closes."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import httpx
import numpy as np
import pytest

from analytics.periods import LocalCalendar
from api.app import create_app
from edge.app.backfill import backfill, meter_columns
from edge.bulk import BulkWriter
from edge.app.demo import InstitutionSim
from edge.app.service import EdgeService
from edge.clock import FakeClock
from edge.config import (Analytics, Building, Circle, Geofence, Org, Outbox, Site, SiteInfo, Store, StoreKind,
                         Vehicle)
from edge.query import Where
from simulators.history import LoadEvent, VehicleModel, counter_history, integral

pytestmark = pytest.mark.slow

NS = 1_000_000_000
DAY = 86_400 * NS
NOW = int(dt.datetime(2026, 11, 20, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=8))).timestamp()) * NS
ORG = "330000/330100/330106/inst-042"
YARD = (30.2741, 120.1551)
CAL = LocalCalendar()


@pytest.fixture(scope="module")
def backfilled(tmp_path_factory):
    import asyncio

    loop = asyncio.new_event_loop()     # one loop for the module: the service's deliverer lives in it
    data = tmp_path_factory.mktemp("backfill")
    sim = InstitutionSim("hq", "hq", ORG, seed=0, interval_s=5.0, scale=4.0)

    async def go():
        await sim.start()
        site = Site(site=SiteInfo(name="t"),
                    orgs=(Org(path="330000", name="浙江省"), Org(path="330000/330100", name="杭州市"),
                          Org(path="330000/330100/330106", name="西湖区"), Org(path=ORG, name="中心")),
                    buildings=(Building(id="hq", org=ORG, floor_area_m2=4000, occupants=150, quota_class="A"),),
                    meters=sim.meters(),
                    geofences=(Geofence(name="yard", org=ORG, circle=Circle(lat=YARD[0], lon=YARD[1], radius_m=300)),),
                    vehicles=tuple(Vehicle(id=f"veh-{i}", org=ORG, home="yard") for i in range(3)),
                    store=Store(kind=StoreKind.embedded, path=str(data / "store.sqlite")),
                    outbox=Outbox(path=str(data / "outbox.sqlite")),
                    analytics=Analytics(weather_csv=str(data / "weather.csv")))
        clock = FakeClock(NOW)
        service = EdgeService(site, clock=clock, data_dir=data, with_api=False)
        # the HVAC left running day and night for three days: anomalies to find
        models = sim.history_models({"hq-hvac": [LoadEvent(CAL.midnight_ns(dt.date(2026, 11, 10)),
                                                           CAL.midnight_ns(dt.date(2026, 11, 13)), extra_kw=40.0)]})
        vehicles = [VehicleModel(f"veh-{i}", YARD, activity=(0.9, 0.5, 0.2)[i], odometer_km=1000.0) for i in range(3)]
        rep = await backfill(service, models, vehicles, 400)
        await service.deliverer.flush()
        return site, service, models, rep

    site, service, models, rep = loop.run_until_complete(go())
    yield site, service, models, rep, loop
    loop.run_until_complete(sim.stop())
    loop.run_until_complete(service.sink.aclose())
    loop.run_until_complete(service.query.aclose())
    service.outbox.close()
    loop.close()


def run(loop, coro):
    return loop.run_until_complete(coro)


def test_history_in_the_store_as_live_data(backfilled):
    site, service, models, rep, aio = backfilled
    assert rep.days == 400 and rep.last_day == "2026-11-19" and rep.first_day == "2025-10-16"
    assert rep.readings == 6 * (96 * 400 + 40)      # 400 days and today until 10:00, a reading a quarter
    q = service.query
    series = run(aio, q.raw("meter", ["active_energy_import_kwh", "water_volume_m3", "gas_volume_m3"], 0, NOW + 1))
    assert len(series) == 6
    plan_tags = {p.meter.id: dict(p.tags) for p in service.modbus_plans}
    for s in series:
        assert dict(s.tags) == plan_tags[s.tags["meter"]]          # the collector's own series
        assert np.all(np.diff(s.values) > 0) and np.all(np.diff(s.times_ns) == 900 * NS)
    # a day's energy indicator is the load model's integral over that day
    day = dt.date(2026, 3, 17)
    rows = run(aio, q.raw("energy_indicator", ["consumption_kwh", "consumption_m3"], CAL.midnight_ns(day),
                          CAL.midnight_ns(day) + 1, Where(tags={"scope": "meter", "period": "day"})))
    got = {s.tags["id"]: float(s.values[0]) for s in rows}
    for m in models:
        ref = integral(m, CAL.midnight_ns(day), CAL.midnight_ns(day) + DAY, every_s=20.0)
        assert got[m.id] == pytest.approx(ref, rel=5e-3), m.id
    pos = run(aio, q.raw("position", ["lat", "acc"], 0, NOW + 1, Where(tags={"vehicle": "veh-0"})))
    assert {s.field for s in pos} == {"lat", "acc"} and dict(pos[0].tags) == {"vehicle": "veh-0", "org": ORG}


def test_every_indicator_family_has_values(backfilled):
    site, service, models, rep, aio = backfilled
    q = service.query
    nov = CAL.midnight_ns(dt.date(2026, 11, 1))
    base = {s.field: s.values[0] for s in run(aio, q.raw("energy_baseline", ["savings", "sufficient", "savings_fraction"],
                                                         nov, nov + 1, Where(tags={"meter": "hq-main", "period": "month"})))}
    assert base["sufficient"] and np.isfinite(base["savings"])
    anomalies = run(aio, q.raw("energy_anomaly", ["actual"], nov, nov + 30 * DAY, Where(tags={"meter": "hq-hvac"})))
    days = sorted({CAL.date_of(int(CAL.local_day_index(t))) for s in anomalies for t in s.times_ns})
    assert dt.date(2026, 11, 10) in days or dt.date(2026, 11, 11) in days     # the HVAC left running
    chart = run(aio, q.raw("energy_baseline_day", ["predicted", "actual"], 0, NOW, Where(tags={"meter": "hq-main"})))
    assert {s.field for s in chart} == {"predicted", "actual"} and len(chart[0]) > 300
    trips = run(aio, q.raw("trip", ["distance_km"], 0, NOW + 1))
    assert sum(len(s) for s in trips) > 200

    async def rollup(url):
        app = create_app(service.api_context())
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            r = await c.get(url)
        await app.state.hub.close()
        return r.json()

    year = run(aio, rollup("/v1/rollup?org=330000/330100/330106&period=year&at=2026-11-19"))["rows"][0]
    assert year["quota_kwh_per_m2"] == 70 and 0.1 < year["quota_progress"] < 3
    assert year["utilisation"] > 0 and year["dispatch_rate"] == 1.0 and year["holiday_trips"] > 0
    month = run(aio, rollup(f"/v1/rollup?org={ORG}&period=month&at=2026-11-19"))["total"]
    assert month["savings_kwh"] is not None and month["anomalies"] >= 1 and month["kwh_per_m2"] > 0
    day = run(aio, rollup("/v1/rollup?org=330000/330100/330106&period=day&at=2026-11-18"))["rows"][0]
    assert day["dispatch_rate"] is not None and day["trips"] is not None


def test_the_service_carries_on_when_the_next_day_closes(backfilled):
    """The baseline job of the service: when 2026-11-20 closes, November's report covers it too."""
    site, service, models, rep, aio = backfilled
    q = service.query
    nov = CAL.midnight_ns(dt.date(2026, 11, 1))

    def reporting_days():
        s = run(aio, q.raw("energy_baseline", ["reporting_days"], nov, nov + 1, Where(tags={"meter": "hq-main", "period": "month"})))
        return int(s[0].values[0])

    assert reporting_days() == 19
    # the meters read on until 2026-11-21 02:00, when the 20th has closed (settle 15 min)
    later = NOW + 16 * 3600 * NS
    h = counter_history([replace(m, start=rep.counters_end[m.id]) for m in models], NOW, later)
    tags = {p.meter.id: dict(p.tags) for p in service.modbus_plans}
    run(aio, BulkWriter.for_sink(service.sink).write(
        meter_columns(h.ids, h.times_ns, h.values, tags, {m.id: m.carrier for m in models})))
    service.clock.advance(16 * 3600)
    n = run(aio, service.indicators.compute_once())
    assert n > 0
    run(aio, service.deliverer.flush())
    assert reporting_days() == 20
    month = run(aio, q.raw("fleet_indicator", ["trips"], nov, nov + 1, Where(tags={"scope": "org", "period": "month", "id": ORG})))
    assert month and month[0].values[0] > 0


SITE_YAML = """
site: {{name: bench}}
orgs:
  - {{path: "330000", name: 浙江省}}
  - {{path: "330000/330100", name: 杭州市}}
  - {{path: "330000/330100/330106", name: 西湖区}}
  - {{path: "{org}", name: 中心}}
buildings:
  - {{id: hq, org: "{org}", floor_area_m2: 5000, occupants: 200, quota_class: A}}
meters:
  - {{id: main, profile: chint-dtsu666, building: hq, transport: {{host: 127.0.0.1, port: 5020}}}}
  - {{id: hvac, profile: chint-dtsu666, building: hq, parent: main, item: 01B00, unit_id: 2, transport: {{host: 127.0.0.1, port: 5020}}}}
  - {{id: water, profile: tuf2000m-water, building: hq, carrier: water, transport: {{host: 127.0.0.1, port: 5021}}}}
geofences:
  - {{name: yard, org: "{org}", circle: {{lat: 30.2741, lon: 120.1551, radius_m: 300}}}}
vehicles:
  - {{id: car-1, plate: 浙A·1, org: "{org}", home: yard}}
store: {{kind: embedded, path: {data}/store.sqlite}}
outbox: {{path: {data}/outbox.sqlite}}
analytics: {{weather_csv: {data}/weather.csv}}
"""


def test_edge_backfill_gives_any_site_a_history(tmp_path):
    import json
    import subprocess
    import sys

    from edge.app.backfill import site_models
    from edge.config import load_site
    from edge.query import StoreQuery
    from edge.store import EmbeddedStore
    from simulators.load import SumLoad

    path = tmp_path / "site.yaml"
    path.write_text(SITE_YAML.format(org=ORG, data=tmp_path / "data"), encoding="utf-8")
    meters, vehicles, skipped = site_models(load_site(path))
    by = {m.id: m for m in meters}
    assert isinstance(by["main"].load, SumLoad) and by["hvac"].load in by["main"].load.parts   # the incomer sums
    assert by["water"].carrier == "water" and skipped == [] and vehicles[0].yard == (30.2741, 120.1551)
    edge = [sys.executable, "-m", "edge.app.cli"]      # a process of its own: the CLI wires module globals
    r = subprocess.run(edge + ["backfill", "-c", str(path), "--days", "20"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads(r.stdout)
    assert summary["days"] == 20 and summary["readings"] > 3 * 96 * 20 and summary["indicator_points"] > 0
    st = EmbeddedStore(tmp_path / "data" / "store.sqlite")
    try:
        assert StoreQuery(st).count_points("energy_indicator") > 0 and StoreQuery(st).count_points("trip") > 0
    finally:
        st.close()
