"""/v1/energy/items: a building's and an org's consumption by item, within the caller's org only;
/v1/meters carries how meters are wired (parent, item)."""

from __future__ import annotations

import httpx
import pytest

from api.app import create_app
from api.keys import Role

from tests.api.apienv import INST07, INST42


@pytest.fixture
async def client(env):
    app = create_app(env.ctx)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        yield c


async def test_meters_carry_parent_and_item(client):
    items = {m["id"]: m for m in (await client.get("/v1/meters")).json()["items"]}
    assert items["m-hq-hvac"]["parent"] == "m-hq-main" and items["m-hq-hvac"]["item"] == "01B00"
    assert items["m-hq-main"]["parent"] is None and items["m-hq-main"]["formula"] is None


async def test_building_breakdown_adds_up_with_the_unmetered_share(client):
    r = await client.get("/v1/energy/items", params={"scope": "building", "id": "hq"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["unit"] == "kWh" and body["level"] == 2 and len(body["periods"]) == 1    # today
    p = body["periods"][0]
    assert p["start"].endswith("T00:00:00.000+08:00")
    got = {i["item"]: (i["consumption"], i["share"]) for i in p["items"]}
    assert got == {"01B00": (60.0, 0.6), "unmetered": (40.0, 0.4)}
    assert p["total"] == 100.0
    hvac = next(i for i in p["items"] if i["item"] == "01B00")
    assert hvac["name"] == "HVAC" and hvac["name_zh"] == "空调用电" and hvac["confidence"] == "several independent sources"
    assert [i["item"] for i in p["items"]][-1] == "unmetered"             # our buckets come last


async def test_other_orgs_buildings_are_hidden(auth_env):
    _, token = auth_env.keys.create(INST42, Role.viewer, "facility manager")
    app = create_app(auth_env.ctx)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t",
                                 headers={"Authorization": f"Bearer {token}"}) as c:
        assert (await c.get("/v1/energy/items", params={"scope": "building", "id": "hq"})).status_code == 200
        assert (await c.get("/v1/energy/items", params={"scope": "building", "id": "b7"})).status_code == 404
        assert (await c.get("/v1/energy/items", params={"scope": "org", "id": INST07})).status_code == 404
        assert (await c.get("/v1/energy/items", params={"scope": "building", "id": "nope"})).status_code == 404
