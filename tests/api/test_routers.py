"""The app as create_app assembles it from one router per resource family (issue 19): every ``/v1``
operation refuses a query parameter it does not take, whichever router holds it (a router built
without ``StrictQueryRoute`` would silently ignore ``?end=``), and apps built in one process each
answer from their own state (the routers are module-level, the state is per app)."""

from __future__ import annotations

import re

import httpx

from api.app import create_app
from edge.config import SiteInfo
from tests.api.apienv import build_env


def client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_every_v1_operation_refuses_an_unknown_query_parameter(env):
    app = create_app(env.ctx)
    ops = [(path, method) for path, item in app.openapi()["paths"].items() if path.startswith("/v1")
           for method in item]
    assert len(ops) >= 34  # every operation of issue 19, and those added since
    async with client(app) as c:
        for path, method in ops:
            r = await c.request(method.upper(), re.sub(r"\{[^}]+\}", "x", path), params={"nosuch": "1"})
            assert r.status_code == 400, (method, path, r.status_code, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
            assert r.json()["errors"] == [{"loc": ["query", "nosuch"], "msg": "unknown query parameter"}]
    await app.state.hub.close()


async def test_apps_in_one_process_answer_from_their_own_state(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = build_env(tmp_path / "a", points=False)
    b = build_env(tmp_path / "b", auth=True, points=False)
    b.ctx.site = b.site.model_copy(update={"site": SiteInfo(name="other-county")})
    app_a, app_b = create_app(a.ctx), create_app(b.ctx)
    _, token = b.keys.create("330000", "viewer")
    async with client(app_a) as ca, client(app_b) as cb:
        assert (await ca.get("/v1/site")).json()["name"] == "test-county"
        assert (await cb.get("/v1/site")).status_code == 401  # app b asks for a key, app a does not
        rb = await cb.get("/v1/site", headers={"Authorization": f"Bearer {token}"})
        assert rb.json()["name"] == "other-county" and rb.json()["role"] == "viewer"
        assert (await ca.get("/v1/site")).json() | {"version": None} == {
            "name": "test-county", "timezone": "Asia/Shanghai", "tile_url": None, "auth": False, "scope": None,
            "role": "admin", "version": None,
            "map": {"tile_url": None, "overlay_url": None, "subdomains": "abc", "attribution": "", "crs": "wgs84",
                    "max_zoom": 18}}
    for app in (app_a, app_b):
        await app.state.hub.close()
    a.store.close()
    b.store.close()
    b.keys.close()
