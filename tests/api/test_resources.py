"""The /v1 resources over a real embedded store: shapes, times with offset, units, paging, crs, problems."""

from __future__ import annotations

import httpx
import pytest

from api.app import create_app
from collector.gps.crs import wgs84_to_gcj02

from tests.api.apienv import INST07, INST42, XIHU


@pytest.fixture
async def client(env):
    app = create_app(env.ctx)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        yield c


async def test_meter_latest_has_units_and_offset(client):
    r = await client.get("/v1/meters/m-hq-main/latest")
    assert r.status_code == 200
    body = r.json()
    assert body["org"] == INST42 and body["building"] == "hq"
    assert body["time"].endswith("+08:00")
    assert "active_power_total_kw" in body["values"]


async def test_unknown_meter_is_problem_json(client):
    r = await client.get("/v1/meters/nope/latest")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["status"] == 404 and r.json()["title"] == "Not Found"


async def test_orgs_tree_and_list(client):
    tree = (await client.get("/v1/orgs/tree")).json()
    assert [n["path"] for n in tree["roots"]] == ["330000"]
    r = await client.get("/v1/orgs", params={"limit": 3})
    page = r.json()
    assert len(page["items"]) == 3 and page["next_cursor"]
    seen = [o["path"] for o in page["items"]]
    while page["next_cursor"]:
        page = (await client.get("/v1/orgs", params={"limit": 3, "cursor": page["next_cursor"]})).json()
        seen += [o["path"] for o in page["items"]]
    assert len(seen) == len(set(seen)) == 7
    assert (await client.get(f"/v1/orgs/{XIHU}")).json()["name"] == "西湖区"


async def test_readings_raw_paged_without_gaps_or_repeats(client):
    times = []
    cursor = None
    for _ in range(20):
        params = {"limit": 25, "fields": "active_power_total_kw"}
        if cursor:
            params["cursor"] = cursor
        body = (await client.get("/v1/meters/m-hq-main/readings", params=params)).json()
        times += [it["time"] for it in body["items"]]
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert len(times) == len(set(times)) == 120


async def test_readings_windows_spread_is_consumption(client):
    body = (await client.get("/v1/meters/m-hq-main/readings",
                             params={"every": "1h", "agg": "spread", "fields": "active_energy_import_kwh"})).json()
    assert body["every"] == "1h" and body["items"]
    total = sum(it["values"]["active_energy_import_kwh"] for it in body["items"])
    assert 55 <= total <= 60  # 120 readings 0.5 kWh apart, minus the steps between windows


async def test_bad_cursor_and_bad_window(client):
    r = await client.get("/v1/meters/m-hq-main/readings", params={"cursor": "!!!"})
    assert r.status_code == 400
    r = await client.get("/v1/meters/m-hq-main/readings", params={"every": "fortnight"})
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")


async def test_vehicle_latest_crs(client):
    w = (await client.get("/v1/vehicles/veh-01/latest")).json()
    g = (await client.get("/v1/vehicles/veh-01/latest", params={"crs": "gcj02"})).json()
    assert w["crs"] == "wgs84" and g["crs"] == "gcj02"
    assert (g["lat"], g["lon"]) == pytest.approx(wgs84_to_gcj02(w["lat"], w["lon"]))
    assert abs(g["lon"] - w["lon"]) > 1e-3  # GCJ-02 is offset by hundreds of metres in Hangzhou
    assert w["plate"] == "浙A·D0001" and w["status"] in ("moving", "offline")


async def test_track_trips_indicators_alerts(client):
    track = (await client.get("/v1/vehicles/veh-01/track", params={"limit": 50})).json()
    assert len(track["items"]) == 50 and track["next_cursor"]
    trips = (await client.get("/v1/vehicles/veh-01/trips")).json()
    assert len(trips["items"]) == 1 and trips["items"][0]["values"]["distance_km"] == 12.5
    ind = (await client.get("/v1/indicators/energy", params={"scope": "org", "id": INST42})).json()
    assert len(ind["items"]) == 1 and ind["items"][0]["values"]["consumption_kwh"] > 0
    assert ind["items"][0]["start"].endswith("+08:00")
    fl = (await client.get("/v1/indicators/fleet", params={"scope": "vehicle", "id": "veh-07"})).json()
    assert fl["items"][0]["org"] == INST07
    alerts = (await client.get("/v1/alerts")).json()
    assert {a["subject"] for a in alerts["items"]} == {"veh-01", "veh-07", "veh-x"}
    assert all(a["kind"] == "overspeed" for a in alerts["items"])


async def test_health_and_metrics(client):
    h = await client.get("/v1/health")
    assert h.status_code == 200 and h.json()["status"] == "ok" and h.json()["ready"] is True
    assert (await client.get("/v1/health/live")).json() == {"live": True}
    m = await client.get("/metrics")
    assert m.status_code == 200 and "edge_api_refused_total" in m.text


async def test_meter_health_and_latest_lists(client):
    h = (await client.get("/v1/meters/m-hq-main/health")).json()
    assert h["status"] in ("up", "stale") and h["last_reading"].endswith("+08:00")
    ms = (await client.get("/v1/latest/meters", params={"building": "hq"})).json()
    assert {m["meter"] for m in ms} == {"m-hq-main", "m-hq-hvac"}
    vs = (await client.get("/v1/latest/vehicles", params={"org": XIHU})).json()
    assert [v["vehicle"] for v in vs] == ["veh-01"]


async def test_geofences_for_the_map_in_either_datum(client):
    """The fleet map draws the geofences: the site-wide ones and those of the orgs in scope, converted
    to GCJ-02 on request like positions (a map on Amap tiles must draw them where the tracks are)."""
    w = (await client.get("/v1/geofences")).json()
    assert [g["name"] for g in w["items"]] == ["b7-yard", "city-centre", "hq-yard"] and w["next_cursor"] is None
    hq = next(g for g in w["items"] if g["name"] == "hq-yard")
    assert hq["org"] == INST42 and hq["crs"] == "wgs84" and hq["polygon"] is None
    assert hq["circle"] == {"lat": 30.2741, "lon": 120.1551, "radius_m": 300.0}
    g = (await client.get("/v1/geofences", params={"crs": "gcj02", "org": INST07})).json()
    assert [x["name"] for x in g["items"]] == ["b7-yard", "city-centre"]   # the site-wide one stays
    b7 = g["items"][0]
    assert b7["crs"] == "gcj02"
    assert b7["polygon"] == [pytest.approx(list(wgs84_to_gcj02(lat, lon))) for lat, lon in
                             ((30.30, 120.17), (30.30, 120.18), (30.31, 120.18))]
    assert b7["polygon"][0] != [30.30, 120.17]   # a few hundred metres off in Hangzhou


async def test_site_says_how_to_draw_the_map(client):
    m = (await client.get("/v1/site")).json()["map"]
    assert m == {"tile_url": None, "overlay_url": None, "subdomains": "abc", "attribution": "", "crs": "wgs84",
                 "max_zoom": 18}
