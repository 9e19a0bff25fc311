"""A compound metered as it is wired, through the service's indicator pass and both real stores
(the embedded store and InfluxDB 1.6): a campus incomer on the institution, a building with its
own incomer and item sub-meters, a building that is the campus minus the first (a virtual meter),
a water tree. Every total counts each kWh once; the items add up with the unmetered share; the
pass reads the meters in chunks of whole trees."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from analytics.periods import LocalCalendar
from analytics.scheduler import IndicatorJob
from edge.clock import FakeClock
from edge.config import Site
from edge.point import Point, to_lines
from edge.query import InfluxQLQuery, StoreQuery, Where
from edge.store import EmbeddedStore
from tests.support.influx import influx_db, influx_server  # noqa: F401  (fixtures)

CAL = LocalCalendar()
ORG = "330000/330100/330106/inst-042"
H = 3600 * 10**9
DAY = dt.date(2025, 10, 13)      # closed; "now" is the next day at 12:00

KW = {"campus": 100.0, "a-main": 70.0, "a-light": 12.0, "a-hvac": 30.0, "a-chiller": 22.0, "a-lift": 5.0,
      "x-main": 10.0}
WATER = {"water": 2.0, "a-water": 1.5}


def site() -> Site:
    tcp = {"kind": "tcp", "host": "127.0.0.1", "port": 1}
    return Site.model_validate({
        "orgs": [{"path": "330000", "name": "Z"}, {"path": "330000/330100", "name": "H"},
                 {"path": "330000/330100/330106", "name": "X"}, {"path": ORG, "name": "I"},
                 {"path": "330000/330100/330106/inst-043", "name": "J"}],
        "buildings": [{"id": "A", "org": ORG, "floor_area_m2": 10000, "occupants": 300},
                      {"id": "B", "org": ORG, "floor_area_m2": 2000, "occupants": 50},
                      {"id": "X", "org": "330000/330100/330106/inst-043", "floor_area_m2": 800, "occupants": 20}],
        "meters": [
            {"id": "campus", "profile": "chint-dtsu666", "org": ORG, "transport": tcp},
            {"id": "a-main", "profile": "chint-dtsu666", "building": "A", "parent": "campus", "transport": tcp},
            {"id": "a-light", "profile": "eastron-sdm630", "building": "A", "parent": "a-main", "item": "01A00",
             "transport": tcp},
            {"id": "a-hvac", "profile": "eastron-sdm630", "building": "A", "parent": "a-main", "item": "01B00",
             "transport": tcp},
            {"id": "a-chiller", "profile": "eastron-sdm630", "building": "A", "parent": "a-hvac", "item": "01B10",
             "transport": tcp},
            {"id": "a-lift", "profile": "eastron-sdm630", "building": "A", "parent": "a-main", "item": "01C10",
             "transport": tcp},
            {"id": "b-total", "building": "B", "parent": "campus", "formula": "campus - a-main"},
            {"id": "water", "profile": "tuf2000m-water", "org": ORG, "carrier": "water", "transport": tcp},
            {"id": "a-water", "profile": "tuf2000m-water", "building": "A", "carrier": "water", "parent": "water",
             "item": "02000", "transport": tcp},
            {"id": "x-main", "profile": "chint-dtsu666", "building": "X", "transport": tcp},
        ]})


def readings(s: Site) -> list[Point]:
    """Every 5 minutes from the day before to "now", constant loads."""
    t0 = CAL.midnight_ns(DAY) - 24 * H
    org_of = {m.id: s.meter_org(m) for m in s.meters}
    out = []
    for k in range(0, 60 * 12 * 5 + 1, 5):         # minutes: 2 days + 12 h
        t = t0 + k * 60 * 10**9
        for m, kw in {**KW, **WATER}.items():
            field = "water_volume_m3" if m in WATER else "active_energy_import_kwh"
            meter = next(x for x in s.meters if x.id == m)
            tags = {"meter": m, "org": org_of[m], "carrier": meter.carrier.value}
            if meter.building:
                tags["building"] = meter.building
            out.append(Point("meter", tags, {field: 5000.0 + kw * k / 60}, t))
    return out


class Ingest:
    def __init__(self, write) -> None:
        self.write = write

    async def submit(self, points):
        await self.write(list(points))

    async def reject(self, *a, **k):
        raise AssertionError(a)

    def count(self, *a, **k):
        pass


async def run_pass(query, write) -> None:
    s = site()
    clock = FakeClock(CAL.midnight_ns(DAY) + 36 * H)
    job = IndicatorJob(s, query, Ingest(write), clock=clock, chunk_rows=3)   # several chunks of whole trees
    assert await job.compute_once() > 0


async def check(query) -> None:
    async def rows(measurement, fields, tags):
        series = await query.raw(measurement, fields, CAL.midnight_ns(DAY), CAL.midnight_ns(DAY) + 1, Where(tags=tags))
        return {tuple(sorted(x.tags.items())): float(x.values[0]) for x in series if len(x.values)}

    def one(r: dict, **want) -> float:
        hits = [v for k, v in r.items() if all((n, w) in k for n, w in want.items())]
        assert len(hits) == 1, (want, r)
        return hits[0]

    ind = await rows("energy_indicator", ["consumption_kwh"], {"period": "day", "carrier": "electricity"})
    assert one(ind, scope="building", id="A") == pytest.approx(70 * 24)
    assert one(ind, scope="building", id="B") == pytest.approx(30 * 24)
    assert one(ind, scope="org", id=ORG) == pytest.approx(100 * 24)
    assert one(ind, scope="org", id="330000/330100/330106") == pytest.approx(110 * 24)   # plus inst-043
    assert one(ind, scope="org", id="330000") == pytest.approx(110 * 24)
    assert one(ind, scope="meter", id="b-total") == pytest.approx(30 * 24)
    water = await rows("energy_indicator", ["consumption_m3"], {"period": "day", "carrier": "water"})
    assert one(water, scope="org", id=ORG) == pytest.approx(2 * 24)
    items = await rows("energy_item", ["consumption_kwh"], {"period": "day", "scope": "building", "id": "A",
                                                            "level": "2", "carrier": "electricity"})
    got = {dict(k)["item"]: v for k, v in items.items()}
    assert got == pytest.approx({"01A00": 12 * 24, "01B00": 30 * 24, "01C00": 5 * 24, "unmetered": 23 * 24})
    shares = await rows("energy_item", ["share"], {"period": "day", "scope": "building", "id": "A", "level": "3",
                                                        "carrier": "electricity"})
    assert sum(shares.values()) == pytest.approx(1.0)


async def test_compound_through_the_embedded_store(tmp_path):
    store = EmbeddedStore(tmp_path / "store.sqlite")
    try:
        store.write_points(readings(site()))

        async def write(points):
            store.write_points(points)

        await run_pass(StoreQuery(store), write)
        await check(StoreQuery(store))
    finally:
        store.close()


@pytest.mark.influxdb
async def test_compound_through_influxdb(influx_server, influx_db):  # noqa: F811
    r = await asyncio.to_thread(influx_server.write, influx_db, to_lines(readings(site())))
    assert r.status_code == 204, r.text

    async def write(points):
        resp = await asyncio.to_thread(influx_server.write, influx_db, to_lines(points))
        assert resp.status_code == 204, resp.text

    q = InfluxQLQuery(influx_server.url, influx_db)
    try:
        await run_pass(q, write)
        await check(q)
    finally:
        await q.aclose()
