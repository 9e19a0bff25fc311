"""The API as the service builds it (``EdgeService.api_context()``): health from the service, dead
letters from its outbox, audit points through its ingest, keys beside its outbox."""

from __future__ import annotations

import httpx
import pytest

from api.app import create_app
from api.keys import KeyStore, keys_path_for
from edge.app.service import EdgeService
from edge.config import Api, Org, Outbox, Site, Store, StoreKind

ORG = "330000/330100/330106"


def site(tmp_path, auth: bool) -> Site:
    return Site(orgs=(Org(path="330000", name="浙江省"), Org(path="330000/330100", name="杭州市"),
                      Org(path=ORG, name="西湖区")),
                store=Store(kind=StoreKind.embedded, path=str(tmp_path / "store.sqlite")),
                outbox=Outbox(path=str(tmp_path / "outbox.sqlite")), api=Api(auth=auth))


async def test_service_context_health_and_dead_letters(tmp_path):
    svc = EdgeService(site(tmp_path, auth=False), data_dir=tmp_path, with_api=False)
    await svc.ingest.reject("gps", b"\x00garbage", "bad_json", topic="vehicles/v1/position")
    app = create_app(svc.api_context())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        h = (await c.get("/v1/health")).json()
        assert "outbox" in h["components"] and h["components"]["outbox"]["depth"] == 0
        dl = (await c.get("/v1/dead-letters")).json()["items"]
        assert dl[0]["reason"] == "bad_json" and dl[0]["source"] == "gps" and dl[0]["at"].endswith("+08:00")
    await svc.stop(flush_timeout_s=1)


async def test_service_keys_file_and_audit_points(tmp_path):
    s = site(tmp_path, auth=True)
    svc = EdgeService(s, data_dir=tmp_path, with_api=False)
    ks = KeyStore(keys_path_for(s, tmp_path))
    _, token = ks.create(ORG, "viewer")
    ks.close()
    app = create_app(svc.api_context())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t",
                                 headers={"X-API-Key": token}) as c:
        assert (await c.get("/v1/orgs/tree")).json()["roots"][0]["path"] == ORG
        assert (await c.get("/v1/buildings", params={"org": "330000"})).status_code == 403
        for _ in range(100):
            if svc.outbox.depth():
                break
            import asyncio
            await asyncio.sleep(0.02)
    lines = [ln for row in svc.outbox.batch(100).lines for ln in row.split("\x1e")]
    assert any(ln.startswith("audit,") and "action=forbidden" in ln for ln in lines)
    await svc.stop(flush_timeout_s=2)


async def test_embedded_broker_on_a_taken_port_fails_the_start_naming_the_port(tmp_path):
    import socket

    import pytest

    from edge.broker import BrokerError
    from edge.config import Mqtt, Vehicle
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        s = site(tmp_path, auth=False).model_copy(update={
            "vehicles": (Vehicle(id="v1", plate="浙A·1", org=ORG),), "mqtt": Mqtt(broker="embedded", embedded_port=port)})
        svc = EdgeService(s, data_dir=tmp_path, with_api=False)
        assert svc.broker_url == f"mqtt://127.0.0.1:{port}"
        with pytest.raises(BrokerError, match=str(port)):
            await svc.start()
        assert svc.health()["components"]["broker"]["running"] is False
    await svc.stop(flush_timeout_s=1)


SITE_2027 = """
orgs:
  - {{path: "330000", name: 浙江省}}
  - {{path: "330000/330100", name: 杭州市}}
  - {{path: "{org}", name: 西湖区}}
buildings:
  - {{id: hq, org: "{org}", floor_area_m2: 1000, occupants: 10}}
meters:
  - {{id: m1, profile: chint-dtsu666, building: hq, transport: {{kind: tcp, host: 127.0.0.1, port: 5020}}}}
store: {{kind: embedded, path: "{tmp}/store.sqlite"}}
outbox: {{path: "{tmp}/outbox.sqlite"}}
analytics:
  holidays_extra: [{holidays}]
"""


async def test_2027_health_degraded_then_holidays_added_to_the_site_file_recompute_without_restart(tmp_path, caplog):
    """Issue 15 §3 through the service: on 2027-01-04 the service computes with a provisional
    calendar, /v1/health says degraded naming 2027 and the fields to fill, the indicators say
    provisional_calendar=true; the operator adds the year's holidays to the site file and, with no
    restart, New Year's Day is recomputed as a holiday and the flag is overwritten."""
    import datetime as dt
    import logging

    from analytics.periods import LocalCalendar
    from edge.clock import FakeClock
    from edge.config import load_site
    from edge.point import Point
    cal = LocalCalendar()
    H = 3600 * 10**9
    path = tmp_path / "site.yaml"
    path.write_text(SITE_2027.format(org=ORG, tmp=tmp_path, holidays=""), encoding="utf-8")
    clock = FakeClock(cal.midnight_ns(dt.date(2027, 1, 4)) + 10 * H)
    svc = EdgeService(load_site(path), clock=clock, data_dir=tmp_path, with_api=False, site_file=path)
    assert any(c.name == "calendar_watch" for c in svc.components)
    # 10 kW from 08:00 to 18:00 on New Year's Day (a Friday)
    t0 = cal.midnight_ns(dt.date(2027, 1, 1))
    await svc.ingest.submit([Point("meter", {"meter": "m1", "org": ORG, "building": "hq", "carrier": "electricity"},
                                   {"active_energy_import_kwh": 1000.0 + 2.5 * q}, t0 + 8 * H + q * H // 4)
                             for q in range(41)])
    await svc.flush()
    app = create_app(svc.api_context())

    async def jan1(c):
        items = (await c.get("/v1/indicators/energy", params={"scope": "meter", "id": "m1", "period": "day",
                                                              "from": "2027-01-01", "to": "2027-01-02"})).json()["items"]
        return items[0]["values"]

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        with caplog.at_level(logging.WARNING):
            await svc.indicators.compute_once()
        await svc.flush()
        h = (await c.get("/v1/health")).json()
        assert h["status"] == "degraded"
        assert h["components"]["calendar"]["provisional_years"] == [2027]
        assert h["components"]["calendar"]["fill"] == ["analytics.holidays_extra", "analytics.workdays_extra"]
        v = await jan1(c)
        assert v["provisional_calendar"] is True and v["off_hours_share"] == pytest.approx(0.1)
        assert svc.reload_calendar() is False                       # the file has not changed

        path.write_text(SITE_2027.format(org=ORG, tmp=tmp_path, holidays='"2027-01-01", "2027-02-11"'), encoding="utf-8")
        assert svc.reload_calendar() is True
        clock.advance(60)
        await svc.indicators.compute_once()
        await svc.flush()
        v = await jan1(c)
        assert v["provisional_calendar"] is False and v["off_hours_share"] == pytest.approx(1.0)
        h = (await c.get("/v1/health")).json()
        assert h["status"] == "ok" and h["components"]["calendar"]["provisional_years"] == []

        path.write_text("analytics: {holidays_extra: [2027-13-45]}\n", encoding="utf-8")  # a bad edit is kept out
        assert svc.reload_calendar() is False
        assert svc.indicators.workcal.covers(2027)
    await svc.stop(flush_timeout_s=2)
async def test_the_ingest_holds_positions_back_thins_readings_and_takes_records_of_people(tmp_path):
    """The policies by what a source sends: a full outbox refuses positions (the broker or the
    terminal keeps them), thins meter readings, takes an audit record beyond its bound."""
    from edge.app.service import ServiceIngest
    from edge.errors import OutboxFull
    from edge.live import LiveState
    from edge.outbox import Outbox as Log
    from edge.point import Point

    def reading(s: int) -> Point:
        return Point("meter", {"meter": "m1", "org": ORG}, {"active_energy_import_kwh": 10.0 + s}, (1_700_000_000 + s) * 10**9)

    def position(s: int) -> Point:
        return Point("position", {"vehicle": "v1", "org": ORG}, {"lat": 30.0, "lon": 120.0 + s / 1e4}, (1_700_000_000 + s) * 10**9)

    log = Log(tmp_path / "o.sqlite", max_bytes=30 * len(reading(0).to_line()))
    ing = ServiceIngest(log, LiveState())
    try:
        for s in range(30):
            await ing.submit([reading(s)])
        await ing.submit([reading(30)])  # full: thinned to make room, never refused
        assert log.counters()["thinned"] > 0
        with pytest.raises(OutboxFull):
            for s in range(200):
                await ing.submit([position(s)])
        assert log.holding and log.dropped == log.counters()["thinned"]  # no position was dropped
        with pytest.raises(OutboxFull):
            await ing.submit([position(999)])
        await ing.submit([Point("audit", {"key": "k1", "org": ORG, "action": "forbidden"}, {"status": 403}, 1)])
        assert ing.counters["points_submitted"] >= 32  # the audit record was taken
    finally:
        log.close()


def upstream_site(tmp_path, with_upstream: bool) -> Site:
    from edge.config import Upstream
    s = site(tmp_path, auth=False)
    if not with_upstream:
        return s
    return s.model_copy(update={"api": Api(upstream=Upstream(url="http://127.0.0.1:9", database="province"))})


async def test_the_upstream_is_a_consumer_of_the_outbox_and_its_earlier_outbox_is_imported(tmp_path, caplog):
    """Configured, the upstream is a consumer (durable: a restart keeps its cursor) and the second
    outbox of earlier versions is taken over at the first start; removed from the site file, its
    consumer goes (retention no longer waits for it) and the log says so."""
    import logging
    import shutil
    from pathlib import Path
    shutil.copy(Path(__file__).resolve().parents[1] / "delivery" / "data" / "upstream_outbox.sqlite",
                tmp_path / "upstream_outbox.sqlite")
    svc = EdgeService(upstream_site(tmp_path, True), data_dir=tmp_path, with_api=False)
    assert {c.name: c.lag_points for c in svc.outbox.consumers()} == {"local": 0, "upstream": 3}
    assert (tmp_path / "upstream_outbox.sqlite.imported").exists() and not (tmp_path / "upstream_outbox.sqlite").exists()
    assert svc.health()["components"]["outbox"]["consumers"] == {"local": 0, "upstream": 3}
    await svc.stop(flush_timeout_s=0.5)
    svc = EdgeService(upstream_site(tmp_path, True), data_dir=tmp_path, with_api=False)
    assert svc.outbox.lag("upstream") == 3  # nothing imported twice, nothing lost
    await svc.stop(flush_timeout_s=0.5)
    with caplog.at_level(logging.WARNING, logger="edge.outbox"):
        svc = EdgeService(upstream_site(tmp_path, False), data_dir=tmp_path, with_api=False)
    assert [c.name for c in svc.outbox.consumers()] == ["local"] and svc.outbox.depth() == 0
    assert any("consumer removed" in r.getMessage() and "consumer=upstream" in r.getMessage() for r in caplog.records)
    await svc.stop(flush_timeout_s=0.5)
