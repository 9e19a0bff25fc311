"""The API as the service builds it (``EdgeService.api_context()``): health from the service, dead
letters from its outbox, audit points through its ingest, keys beside its outbox."""

from __future__ import annotations

import httpx

from api.app import create_app
from api.keys import KeyStore, keys_path_for
from edge.config import Api, Org, Outbox, Site, Store, StoreKind
from edge.service import EdgeService

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
