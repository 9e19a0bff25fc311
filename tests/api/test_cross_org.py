"""Cross-org suite (DB33/T 2474-2022 6.2.5-6.2.6): a key reads nothing outside its org, through any route.

Keys scoped to a district, an institution, and a look-alike code try other orgs' ids in every
path parameter, other orgs in every filter, and org-path tricks (``..``, empty and doubled
segments, prefixes that are not segments). Every attempt must be a 404 or a 403; every list,
aggregate and live stream a key *can* read must hold nothing of another org.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from api.app import create_app
from tests.api.apienv import GONGSHU, INST07, INST42, METER_ORG, TRICK, VEHICLE_ORG, VEHICLE_TERMINAL, XIHU, serve

from edge.config import check_org_path, org_within
from edge.point import Point

ALL_ORGS = ["330000", "330000/330100", XIHU, INST42, GONGSHU, INST07, TRICK]
BUILDING_ORG = {"hq": INST42, "b7": INST07, "bx": TRICK}
PLATES = {"veh-01": "浙A·D0001", "veh-07": "浙A·G0007", "veh-x": "浙A·X0000"}

TRICKS = [
    "330000/330100/330106/../330105", "330000/330100/330106/../330105/inst-007", "330106/../330105",
    "330000/330100/330106/./inst-042/../../330105", "330000/330100/3301060", "330000/3301000",
    "330000/330100/330106/", "330000/330100/330106//inst-042", "/330000/330100/330106", "", "..", ".",
    "330000/330100/330106/%2e%2e/330105", "330000\\330100\\330105", "330000/330100/330105%00",
    "330000/330100/330106 ", "330000/330100/330106/inst-042/../../../330100",
]


def own(path: str, scope: str) -> bool:
    try:
        check_org_path(path)
    except ValueError:
        return False
    return org_within(path, scope)


def foreign(scope: str):
    meters = [m for m, o in METER_ORG.items() if not org_within(o, scope)]
    vehicles = [v for v, o in VEHICLE_ORG.items() if not org_within(o, scope)]
    buildings = [b for b, o in BUILDING_ORG.items() if not org_within(o, scope)]
    orgs = [o for o in ALL_ORGS if not org_within(o, scope)]
    return meters, vehicles, buildings, orgs


def id_routes(scope: str) -> list[str]:
    meters, vehicles, buildings, orgs = foreign(scope)
    tricks = [t for t in TRICKS if not own(t, scope)]
    urls = []
    for m in meters:
        urls += [f"/v1/meters/{m}", f"/v1/meters/{m}/latest", f"/v1/meters/{m}/health", f"/v1/meters/{m}/readings",
                 f"/v1/meters/{m}/readings?every=1h&agg=spread", f"/v1/indicators/energy?scope=meter&id={m}",
                 f"/v1/indicators/baseline?id={m}", f"/v1/indicators/baseline/days?id={m}",
                 f"/v1/indicators/anomalies?meter={m}",
                 f"/v1/alerts?meter={m}", f"/v1/live?meters={m}&max_s=0.1"]
    for v in vehicles:
        urls += [f"/v1/vehicles/{v}", f"/v1/vehicles/{v}/latest", f"/v1/vehicles/{v}/latest?crs=gcj02",
                 f"/v1/vehicles/{v}/track", f"/v1/vehicles/{v}/trips", f"/v1/indicators/fleet?scope=vehicle&id={v}",
                 f"/v1/alerts?vehicle={v}", f"/v1/live?vehicles={v}&max_s=0.1", f"/v1/terminals/{VEHICLE_TERMINAL[v]}",
                 f"/v1/terminals/0{VEHICLE_TERMINAL[v]}"]
    for b in buildings:
        urls += [f"/v1/buildings/{b}", f"/v1/meters?building={b}", f"/v1/latest/meters?building={b}",
                 f"/v1/indicators/energy?scope=building&id={b}", f"/v1/energy/items?scope=building&id={b}"]
    for o in orgs + tricks:
        urls += [f"/v1/orgs/{o}", f"/v1/indicators/energy?scope=org&id={o}", f"/v1/indicators/fleet?scope=org&id={o}",
                 f"/v1/energy/items?scope=org&id={o}", httpx.URL("/v1/rollup", params={"org": o}),
                 httpx.URL("/v1/rollup", params={"org": o, "period": "year"})]
    for o in orgs + tricks:
        for base in ("/v1/orgs", "/v1/buildings", "/v1/meters", "/v1/vehicles", "/v1/latest/meters",
                     "/v1/latest/vehicles", "/v1/trips", "/v1/alerts", "/v1/indicators/energy",
                     "/v1/indicators/fleet", "/v1/indicators/baseline", "/v1/indicators/baseline/days",
                     "/v1/indicators/anomalies", "/v1/live", "/v1/terminals", "/v1/geofences"):
            urls.append(httpx.URL(base, params={"org": o, **({"max_s": "0.1"} if base == "/v1/live" else {})}))
    urls += ["/v1/dead-letters", "/v1/audit", "/v1/keys"]
    return urls


def leaks(body: str, scope: str) -> list[str]:
    meters, vehicles, buildings, orgs = foreign(scope)
    out = []
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    strings: set[str] = set()

    def walk(x):
        if isinstance(x, dict):
            for k, v in x.items():
                strings.add(str(k))
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)
        elif isinstance(x, str):
            strings.add(x)

    if doc is not None:
        walk(doc)
    else:
        strings = set(body.replace('"', " ").replace(",", " ").split())
    for s in strings:
        if s in meters or s in vehicles or s in buildings or s in {PLATES[v] for v in vehicles}:
            out.append(s)
        if "/" in s and s.startswith("330000") and s in orgs:
            out.append(s)
    return out


SCOPES = [(XIHU, "viewer"), (INST42, "admin"), (INST07, "operator"), (TRICK, "admin"), ("330000/330100", "viewer")]


@pytest.mark.parametrize("scope,role", SCOPES)
async def test_no_read_across_orgs(auth_env, scope, role):
    _, token = auth_env.keys.create(scope, role)
    app = create_app(auth_env.ctx)
    h = {"Authorization": f"Bearer {token}"}
    bad = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", headers=h) as c:
        for url in id_routes(scope):
            r = await c.get(url)
            lenient = str(url).startswith("/v1/orgs/") and any(str(url) == f"/v1/orgs/{t}" for t in TRICKS)
            if r.status_code == 200:
                # a path trick that the client normalised into an own resource may answer, without leaking
                if leaks(r.text, scope) or not (lenient or str(url).startswith(("/v1/keys", "/v1/audit"))):
                    bad.append((str(url), r.status_code, leaks(r.text, scope) or "200 for another org's thing"))
            elif r.status_code not in (403, 404):
                bad.append((str(url), r.status_code, r.text[:200]))
        # lists without filters hold only the key's org
        for url in ("/v1/orgs", "/v1/orgs/tree", "/v1/buildings", "/v1/meters", "/v1/vehicles", "/v1/latest/meters",
                    "/v1/latest/vehicles", "/v1/trips", "/v1/alerts", "/v1/indicators/energy",
                    "/v1/indicators/energy?scope=meter", "/v1/indicators/energy?scope=building",
                    "/v1/indicators/fleet", "/v1/indicators/fleet?scope=vehicle", "/v1/indicators/baseline",
                    "/v1/indicators/baseline/days", "/v1/indicators/anomalies", "/v1/rollup",
                    "/v1/rollup?period=year", "/v1/rollup?period=day", "/v1/site", "/v1/health", "/v1/terminals",
                    "/v1/geofences"):
            r = await c.get(url)
            assert r.status_code == 200, (url, r.text)
            if leaks(r.text, scope):
                bad.append((url, 200, leaks(r.text, scope)))
    await app.state.hub.close()  # the live stream within the scope started it
    assert bad == [], '\n'.join(map(str, bad))


async def test_root_scope_sees_everything_and_scoped_keys_see_their_own(auth_env):
    _, root = auth_env.keys.create("330000", "viewer")
    _, xihu = auth_env.keys.create(XIHU, "viewer")
    app = create_app(auth_env.ctx)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.get("/v1/meters", headers={"Authorization": f"Bearer {root}"})
        assert {m["id"] for m in r.json()["items"]} == set(METER_ORG)
        r = await c.get("/v1/meters", headers={"X-API-Key": xihu})
        assert {m["id"] for m in r.json()["items"]} == {"m-hq-main", "m-hq-hvac"}
        r = await c.get(f"/v1/indicators/energy?scope=org&id={INST42}", headers={"X-API-Key": xihu})
        assert r.status_code == 200 and len(r.json()["items"]) == 1


async def test_raw_dotdot_paths_never_reach_another_org(auth_env):
    """Un-normalised ``..`` in the URL path itself (a client that does not clean it)."""
    _, token = auth_env.keys.create(XIHU, "viewer")
    app = create_app(auth_env.ctx)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        for raw in (b"/v1/orgs/330000/330100/330106/../330105", b"/v1/orgs/330000/330100/330106/%2E%2E/330105",
                    b"/v1/meters/..%2Fm-b7", b"/v1/meters/m-hq-main/../m-b7/latest",
                    b"/v1/orgs/330000/330100/330106/inst-042/../../330105/inst-007"):
            req = c.build_request("GET", "http://t/", headers={"Authorization": f"Bearer {token}"})
            req.url = req.url.copy_with(raw_path=raw)
            r = await c.send(req)
            assert r.status_code in (403, 404), (raw, r.status_code, r.text)
            assert not leaks(r.text, XIHU)


async def test_live_stream_carries_only_the_keys_org(auth_env):
    _, token = auth_env.keys.create(XIHU, "viewer")
    app = create_app(auth_env.ctx)
    async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as c:
        async with c.stream("GET", "/v1/live", params={"key": token, "max_s": "1.5"}) as r:
            assert r.status_code == 200

            async def feed():
                await asyncio.sleep(0.2)
                for vid, org in VEHICLE_ORG.items():
                    auth_env.live.update([Point("position", {"vehicle": vid, "org": org},
                                                {"lat": 30.3, "lon": 120.1, "speed_kmh": 10.0}, auth_env.now_ns + 10**9)])
                for mid, org in METER_ORG.items():
                    auth_env.live.update([Point("meter", {"meter": mid, "org": org}, {"active_power_total_kw": 1.0},
                                                auth_env.now_ns + 10**9)])
                    auth_env.live.update([Point("alert", {"meter": mid, "org": org, "kind": "night_load"},
                                                {"message": "x"}, auth_env.now_ns + 10**9)])

            t = asyncio.create_task(feed())
            text = ""
            async for chunk in r.aiter_text():
                text += chunk
            await t
    data = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]
    subjects = {d.get("meter") or d.get("vehicle") or d.get("subject") for d in data}
    assert subjects == {"m-hq-main", "m-hq-hvac", "veh-01"}
    assert not leaks(text.replace("data: ", ""), XIHU) or all(not leaks(json.dumps(d), XIHU) for d in data)
    assert any(d.get("kind") == "night_load" for d in data)


async def test_key_management_stays_in_org(auth_env):
    k42, _ = auth_env.keys.create(INST42, "viewer")
    _, admin07 = auth_env.keys.create(INST07, "admin")
    app = create_app(auth_env.ctx)
    h = {"Authorization": f"Bearer {admin07}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", headers=h) as c:
        assert (await c.post("/v1/keys", json={"org": XIHU, "role": "admin"})).status_code == 403
        assert (await c.post("/v1/keys", json={"org": f"{INST07}/../../330106", "role": "viewer"})).status_code == 403
        assert (await c.delete(f"/v1/keys/{k42.id}")).status_code == 404
        listed = (await c.get("/v1/keys")).json()
        assert all(org_within(k["org"], INST07) for k in listed)
        assert (await c.get("/v1/dead-letters")).status_code == 403
        assert (await c.post("/v1/dead-letters/1/replay")).status_code == 403
        # another org's alert cannot be acknowledged (nor told apart from a missing one)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as anyone:
            root = auth_env.keys.create("330000", "viewer")[1]
            alerts = (await anyone.get("/v1/alerts", headers={"X-API-Key": root})).json()["items"]
        foreign = [a["id"] for a in alerts if not org_within(a["org"], INST07)]
        assert foreign
        for aid in foreign:
            assert (await c.post(f"/v1/alerts/{aid}/ack")).status_code == 404
        audit = (await c.get("/v1/audit")).json()["items"]
        assert {a["action"] for a in audit} >= {"forbidden", "out_of_scope"}
        assert all(a["org"] == INST07 for a in audit)
    assert auth_env.keys.get(k42.id).active


def test_the_suite_covers_every_route(tmp_path):
    """A new route must join the cross-org suite: every path of the OpenAPI document is tried."""
    import re

    from tests.api.apienv import build_env
    env = build_env(tmp_path, points=False)
    doc = create_app(env.ctx).openapi()
    env.store.close()
    tried = {str(u).split("?")[0] for u in id_routes(XIHU)}
    tried |= {"/v1/orgs", "/v1/orgs/tree", "/v1/buildings", "/v1/meters", "/v1/vehicles", "/v1/latest/meters",
              "/v1/latest/vehicles", "/v1/trips", "/v1/alerts", "/v1/indicators/energy", "/v1/indicators/fleet",
              "/v1/site", "/v1/health", "/v1/terminals"}
    exempt = {"/v1/health/live", "/v1/health/ready", "/metrics",  # probes: no org data
              "/v1/dead-letters/{dead_letter_id}/replay", "/v1/keys/{key_id}",
              "/v1/alerts/{alert_id}/ack"}  # tried in test_key_management / test_auth
    missing = []
    for path in doc["paths"]:
        if path in exempt:
            continue
        rx = re.compile("^" + re.sub(r"\{[^}]+\}", "[^?]+", path) + "$")
        if not any(rx.match(t) for t in tried):
            missing.append(path)
    assert missing == []
