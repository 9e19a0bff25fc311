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
