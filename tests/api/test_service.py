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
