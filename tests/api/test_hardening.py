"""The API under a hostile client (issue 15): each finding of the probe, named after what broke.

Every test here failed before its fix: ``?to=`` ignored, tokens stored in plaintext, a wrong
secret hashed on the event loop and without limit, a building figure counting another org's meter,
``/metrics`` a 500, a huge ``every=`` a 500, a foreign cursor a 200, a hidden org told from a
missing one, refusals written one row each without bound, the last root admin key revocable.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import statistics
import time
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from argon2 import PasswordHasher
from argon2.exceptions import VerifyMismatchError
from typer.testing import CliRunner

from api.app import create_app
from api.keys import KeyStore
from api.keys_cli import app as keys_app
from edge.config import Api, parse_site
from edge.errors import ConfigError
from edge.live import LiveState
from edge.outbox import Outbox
from edge.app.service import ServiceIngest
from tests.api.apienv import GONGSHU, INST42, XIHU, build_env

CST = timezone(timedelta(hours=8))


def client(app, token: str | None = None, address: str = "203.0.113.7") -> httpx.AsyncClient:
    h = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(address, 40000)), base_url="http://t",
                             headers=h)


def with_api(env, **api) -> None:
    """Give the env's site other api settings (the site is frozen: a copy)."""
    env.ctx.site = env.site = env.site.model_copy(update={"api": Api(auth=env.ctx.auth or False, **api)})


def secret_of(token: str) -> str:
    return token.split("_", 2)[2]


# -- section 2: `to=` ----------------------------------------------------------------------------------

async def test_to_bounds_a_range_query(env):
    app = create_app(env.ctx)
    to = datetime.fromtimestamp(env.now_ns / 1e9 - 3630, tz=CST)  # between two readings
    async with client(app) as c:
        r = await c.get("/v1/meters/m-hq-main/readings", params={"to": to.isoformat(), "limit": 1000})
        assert r.status_code == 200, r.text
        times = [datetime.fromisoformat(i["time"]) for i in r.json()["items"]]
        assert times and max(times) < to  # before the fix `to` was ignored: readings ran up to now
        assert len(times) == 60  # the sample has a reading a minute for the last two hours
        r = await c.get("/v1/alerts", params={"to": to.isoformat()})
        assert all(datetime.fromisoformat(a["time"]) < to for a in r.json()["items"])


async def test_unknown_query_parameter_is_a_400_naming_it(auth_env):
    _, token = auth_env.keys.create(INST42, "viewer")
    app = create_app(auth_env.ctx)
    async with client(app, token) as c:
        r = await c.get("/v1/meters/m-hq-main/readings", params={"end": "2026-01-01T00:00:00", "from": "2025-12-31"})
        assert r.status_code == 400 and r.headers["content-type"].startswith("application/problem+json")
        body = r.json()
        assert "end" in body["detail"] and "to" in body["detail"]  # names it, and what the route takes
        assert body["errors"] == [{"loc": ["query", "end"], "msg": "unknown query parameter"}]
        r = await c.get("/v1/orgs", params={"orgg": XIHU, "limitt": "3"})
        assert r.status_code == 400 and "limitt, orgg" in r.json()["detail"]
        assert (await c.get("/v1/site", params={"x": "1"})).status_code == 400
        assert (await c.get("/v1/meters", params={"org": INST42, "limit": 5})).status_code == 200
    # the live stream takes `key` (browsers' EventSource cannot send headers)
    async with client(app) as c:
        r = await c.get("/v1/live", params={"key": token, "max_s": 0.05, "snapshot": "false"})
        assert r.status_code == 200
    await app.state.hub.close()


# -- tokens in plaintext -----------------------------------------------------------------------------

async def test_refused_requests_store_no_key_material(tmp_path, caplog):
    e = build_env(tmp_path, auth=True)
    outbox = Outbox(tmp_path / "outbox.sqlite")
    e.ctx.extras["ingest"] = ServiceIngest(outbox, LiveState())
    k, viewer = e.keys.create(XIHU, "viewer")
    _, admin = e.keys.create("330000", "admin")
    wrong = f"sek_{k.id}_" + "W" * 43
    app = create_app(e.ctx)
    caplog.set_level(logging.DEBUG)
    async with client(app) as c:
        # a valid token on the live stream, asking for another org's meter: a 404, audited
        assert (await c.get("/v1/live", params={"key": viewer, "meters": "m-b7", "max_s": 0.05})).status_code == 404
        # a wrong secret in ?key=: a 401, audited
        assert (await c.get("/v1/live", params={"key": wrong, "max_s": 0.05})).status_code == 401
    async with client(app, viewer) as c:
        # a token pasted into a filter: a 403 whose detail quotes the filter
        assert (await c.get("/v1/meters", params={"org": viewer})).status_code == 403
    async with client(app, admin) as c:
        r = await c.get("/v1/audit")
        assert r.status_code == 200
        text = r.text
    assert "/v1/live?" in text and "key=[redacted]" in text
    # the audit Points are submitted by tasks of their own: wait until the outbox has them (a loaded
    # machine may not have run those tasks yet)
    for _ in range(500):
        b = outbox.batch(1000)
        if b is not None and any(ln.startswith("audit,") for row in b.lines for ln in row.split("\x1e")):
            break
        await asyncio.sleep(0.02)
    for s in (secret_of(viewer), secret_of(wrong)):
        assert s not in text
        db = sqlite3.connect(e.keys.path)
        assert not [row for row in db.execute("SELECT * FROM audit") if s in repr(row)]
        db.close()
        lines = [ln for row in outbox.batch(1000).lines for ln in row.split("\x1e")]
        assert any(ln.startswith("audit,") for ln in lines) and not [ln for ln in lines if s in ln]
        server_side = [rec for rec in caplog.records if not rec.name.startswith(("httpx", "httpcore"))]  # not the client's
        assert not [rec for rec in server_side if s in rec.getMessage()]
    async with client(app, admin) as c:
        assert secret_of(viewer) not in (await c.get("/metrics")).text
    outbox.close()
    e.store.close()


def test_audit_rows_holding_a_token_are_redacted_at_open(tmp_path):
    ks = KeyStore(tmp_path / "k.sqlite")
    ks.close()
    token = "sek_0123456789_" + "S3cr3t" * 7
    db = sqlite3.connect(tmp_path / "k.sqlite")
    db.execute("INSERT INTO audit (at_ns, key_id, org, role, method, path, status, action, detail) VALUES "
               "(1, '-', '', '', 'GET', ?, 401, 'unauthenticated', ?)",
               (f"/v1/live?topics=meter&key={token}", f"org filter '{token}' outside scope"))
    db.commit()
    db.close()
    ks = KeyStore(tmp_path / "k.sqlite")
    (row,) = ks.audit_entries(10)
    assert "S3cr3t" not in row.path + row.detail
    assert row.path.startswith("/v1/live?topics=meter&key=") and "sek_0123456789_" in row.detail
    assert ks.redacted_at_open == 1
    ks.close()


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


async def test_access_log_shows_no_key(auth_env):
    _, token = auth_env.keys.create(INST42, "viewer")
    app = create_app(auth_env.ctx)
    loggers = [logging.getLogger(n) for n in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")]
    levels = [lg.level for lg in loggers]
    lines = Lines()
    loggers[2].addHandler(lines)
    try:
        import uvicorn
        from tests.api.apienv import free_port
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, log_level="info",
                                               access_log=True, lifespan="off"))
        server.install_signal_handlers = lambda: None
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
            r = await c.get("/v1/live", params={"key": token, "max_s": 0.05, "snapshot": "false"})
            assert r.status_code == 200
        server.should_exit = True
        await asyncio.wait_for(task, 5)
        await app.state.hub.close()
    finally:
        loggers[2].removeHandler(lines)
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
    logged = lines.lines
    assert any("/v1/live?key=" in m for m in logged)
    assert not [m for m in logged if secret_of(token) in m]


# -- a wrong secret stalls the server --------------------------------------------------------------

async def test_failed_key_attempts_beyond_the_limit_get_429_without_hashing(tmp_path):
    e = build_env(tmp_path, auth=True)
    with_api(e, auth_failures_burst=5, auth_failure_refill_s=60)
    e.keys.cache_s = 0.0  # no cache: every request is checked again
    k, token = e.keys.create(INST42, "viewer")
    wrong = f"sek_{k.id}_" + "W" * 43
    app = create_app(e.ctx)
    async with client(app, token, "198.51.100.1") as c:  # its usual client verifies first
        assert (await c.get("/v1/meters")).status_code == 200
    async with client(app, wrong, "203.0.113.1") as c:
        codes = [(await c.get("/v1/meters")).status_code for _ in range(8)]
        assert codes == [401] * 5 + [429] * 3
        r = await c.get("/v1/meters")
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert e.keys.hash_checks == 1 + 5  # the 429s cost no argon2
    # the key id is held back too: another address gets no more hashing for it
    async with client(app, wrong, "203.0.113.2") as c:
        assert (await c.get("/v1/meters")).status_code == 429
    async with client(app, token, "203.0.113.3") as c:  # a new address, even with the right secret
        assert (await c.get("/v1/meters")).status_code == 429
    assert e.keys.hash_checks == 6
    async with client(app, token, "198.51.100.1") as c:  # the key's usual client is not locked out
        assert (await c.get("/v1/meters")).status_code == 200
    async with client(app, admin_token(e)) as c:
        m = (await c.get("/metrics")).text
    assert e.keys.hash_checks == 8  # the usual client's, and the admin's below
    assert "edge_api_auth_throttled_total 6" in m and "edge_api_auth_wrong_secrets_total 5" in m
    e.store.close()


def admin_token(e) -> str:
    return e.keys.create("330000", "admin")[1]


async def test_wrong_secrets_do_not_stall_the_event_loop(tmp_path):
    """Before: each wrong secret ran argon2 on the event loop, so every other request waited it out."""
    e = build_env(tmp_path, auth=True)
    costly = PasswordHasher(time_cost=6, memory_cost=65536, parallelism=1)
    e.keys.close()
    e.keys = e.ctx.keys = KeyStore(tmp_path / "slow-keys.sqlite", hasher=costly)
    k, token = e.keys.create(INST42, "viewer")
    h = costly.hash("x")
    t0 = time.perf_counter()
    with pytest.raises(VerifyMismatchError):
        costly.verify(h, "y")
    hash_s = time.perf_counter() - t0
    app = create_app(e.ctx)
    async with client(app, token) as c:
        assert (await c.get("/v1/site")).status_code == 200  # verified once, cached
        lags: list[float] = []
        stop = asyncio.Event()

        async def ticker():
            while not stop.is_set():
                t = time.perf_counter()
                await asyncio.sleep(0.005)
                lags.append(time.perf_counter() - t - 0.005)

        async def wrong(i: int) -> int:
            async with client(app, f"sek_{k.id}_" + f"{i:02d}" * 22, f"203.0.113.{i}") as w:
                return (await w.get("/v1/site")).status_code

        tick = asyncio.create_task(ticker())
        await asyncio.sleep(0.02)
        flood = [asyncio.create_task(wrong(i)) for i in range(4)]
        await asyncio.sleep(0.05)
        t = time.perf_counter()
        assert (await c.get("/v1/site")).status_code == 200
        normal_s = time.perf_counter() - t
        assert sorted(await asyncio.gather(*flood)) == [401] * 4
        stop.set()
        await tick
    # generous bounds: half of one argon2 check, while four of them ran (before: the loop stalled for each)
    assert max(lags) < hash_s / 2, (max(lags), hash_s)
    assert normal_s < hash_s / 2, (normal_s, hash_s)
    e.keys.close()
    e.store.close()


# -- a building total leaks another org's meter ----------------------------------------------------

SITE = """
orgs:
  - {path: "330000", name: Zhejiang}
  - {path: "330000/330100", name: Hangzhou}
  - {path: "330000/330100/330106", name: Xihu}
  - {path: "330000/330100/330105", name: Gongshu}
buildings:
  - {id: hq, org: "330000/330100/330106", floor_area_m2: 1000, occupants: 50}
meters:
  - id: m1
    profile: chint-dtsu666
    building: hq
    ORG
    transport: {kind: tcp, host: 127.0.0.1, port: 5020}
"""


def test_a_meter_of_another_org_in_a_building_is_refused_by_config():
    with pytest.raises(ConfigError) as e:
        parse_site(SITE.replace("ORG", 'org: "330000/330100/330105"'), "site.yaml")
    msg = str(e.value)
    assert "meters[0] (id=m1)" in msg and "building 'hq'" in msg and "330000/330100/330105" in msg
    # the parent org's meter in the building: refused as well (the district would see the city's meter)
    with pytest.raises(ConfigError):
        parse_site(SITE.replace("ORG", 'org: "330000/330100"'), "site.yaml")
    # the building's org, an org below it, or no building at all: fine
    parse_site(SITE.replace("ORG", 'org: "330000/330100/330106"'), "site.yaml")
    parse_site(SITE.replace("ORG", ""), "site.yaml")
    parse_site(SITE.replace("    building: hq\n", "").replace("ORG", 'org: "330000/330100/330105"'), "site.yaml")


# -- /metrics with auth on -------------------------------------------------------------------------

async def test_metrics_takes_a_metrics_key_and_answers_401_without_one(tmp_path):
    e = build_env(tmp_path, auth=True)
    e.ctx.metrics_text = lambda: "edge_outbox_depth 3\n"  # the service hands text (str), as edge.metrics does
    _, scraper = e.keys.create("330000", "metrics")
    _, viewer = e.keys.create("330000", "viewer")
    _, district_scraper = e.keys.create(XIHU, "metrics")
    _, admin = e.keys.create("330000", "admin")
    app = create_app(e.ctx)
    async with client(app) as c:
        r = await c.get("/metrics")
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    async with client(app, scraper) as c:
        r = await c.get("/metrics")
        assert r.status_code == 200 and "edge_outbox_depth 3" in r.text and "edge_api_refused_total 1" in r.text
        assert (await c.get("/v1/meters")).status_code == 403  # a metrics key reads nothing else
    for token in (viewer, district_scraper):
        async with client(app, token) as c:
            assert (await c.get("/metrics")).status_code == 403
    async with client(app, admin) as c:
        assert (await c.get("/metrics")).status_code == 200
    e.store.close()


async def test_metrics_without_auth(env):
    env.ctx.metrics_text = lambda: "edge_outbox_depth 3\n"
    async with client(create_app(env.ctx)) as c:
        r = await c.get("/metrics")
        assert r.status_code == 200 and r.text.startswith("edge_outbox_depth 3\n")


# -- a large every= ----------------------------------------------------------------------------------

@pytest.mark.parametrize("every", ["15251w", "106752d", "9999999h", "367d"])
async def test_huge_every_is_a_400_naming_the_limit(env, every):
    async with client(create_app(env.ctx)) as c:
        r = await c.get("/v1/meters/m-hq-main/readings", params={"every": every, "agg": "spread"})
        assert r.status_code == 400 and "at most 366 days" in r.json()["detail"]
        assert (await c.get("/v1/meters/m-hq-main/readings", params={"every": "52w"})).status_code == 200


# -- a cursor not of ours ----------------------------------------------------------------------------

@pytest.mark.parametrize("route", ["/v1/orgs", "/v1/buildings", "/v1/meters", "/v1/vehicles"])
async def test_a_cursor_we_did_not_give_out_is_a_400(env, route):
    async with client(create_app(env.ctx)) as c:
        for garbage in ("garbage", "Z2FyYmFnZQ", "MzMwMDAwLzk5OTk5OQ", "AAAA"):
            r = await c.get(route, params={"cursor": garbage})
            assert r.status_code == 400 and r.json()["detail"] == "cursor is not one this API gave out", garbage
        first = (await c.get(route, params={"limit": 1})).json()
        assert (await c.get(route, params={"limit": 1, "cursor": first["next_cursor"]})).status_code == 200


# -- a hidden org told from a missing one ------------------------------------------------------------

async def test_a_hidden_org_answers_as_a_missing_one(auth_env):
    _, token = auth_env.keys.create(XIHU, "viewer")
    app = create_app(auth_env.ctx)
    hidden, missing = f"/v1/orgs/{GONGSHU}", "/v1/orgs/330000/330100/330199"
    async with client(app, token) as c:
        rh, rm = await c.get(hidden), await c.get(missing)
        assert rh.status_code == rm.status_code == 404
        assert rh.json()["detail"] == rm.json()["detail"] == "no such org"
        for scope_id in (GONGSHU, "330000/330100/330199"):
            r = await c.get("/v1/indicators/energy", params={"scope": "org", "id": scope_id})
            assert r.status_code == 404 and r.json()["detail"] == "no such org"
        # and in time: the audited answer does no disk write of its own (medians of interleaved runs)
        th, tm = [], []
        for _ in range(60):
            for url, out in ((hidden, th), (missing, tm)):
                t = time.perf_counter()
                await c.get(url)
                out.append(time.perf_counter() - t)
    assert statistics.median(th) < 1.5 * statistics.median(tm) + 0.0001, (statistics.median(th), statistics.median(tm))


# -- refusals fill the disk --------------------------------------------------------------------------

async def test_a_flood_of_refusals_is_one_audit_row_per_client_and_minute(auth_env):
    _, admin = auth_env.keys.create("330000", "admin")
    app = create_app(auth_env.ctx)
    async with client(app, None, "192.0.2.66") as c:
        for _ in range(300):
            assert (await c.get("/v1/meters")).status_code == 401
    async with client(app, admin) as c:
        items = (await c.get("/v1/audit", params={"limit": 1000})).json()["items"]
    flood = [i for i in items if i["client"] == "192.0.2.66"]
    assert 1 <= len(flood) <= 2  # 2 when the run straddles a minute
    assert sum(i["count"] for i in flood) == 300 and flood[0]["action"] == "unauthenticated"
    assert auth_env.keys.audit_rows() <= 2
    m = None
    async with client(app, admin) as c:
        m = (await c.get("/metrics")).text
    assert f"edge_api_audit_refusals_merged_total {300 - len(flood)}" in m


async def test_the_audit_table_is_bounded_and_what_it_drops_is_counted(tmp_path):
    e = build_env(tmp_path, auth=True)
    with_api(e, audit_max_rows=100)
    _, admin = e.keys.create("330000", "admin")
    app = create_app(e.ctx)
    for i in range(250):  # as many clients: as many aggregates
        async with client(app, None, f"10.0.{i // 200}.{i % 200}") as c:
            assert (await c.get("/v1/meters")).status_code == 401
    await app.state.guard.audit.drain()
    assert e.keys.audit_rows() <= 100
    async with client(app, admin) as c:
        h = (await c.get("/v1/health")).json()["components"]["api"]["audit"]
        m = (await c.get("/metrics")).text
    assert h["rows_pruned"] >= 150 and h["events_pruned"] == h["rows_pruned"]
    assert f"edge_api_audit_rows_pruned_total {h['rows_pruned']}" in m
    e.store.close()


# -- the last root admin key ---------------------------------------------------------------------------

async def test_the_last_root_admin_key_cannot_be_revoked(auth_env):
    first, admin = auth_env.keys.create("330000", "admin")
    district, district_admin = auth_env.keys.create(XIHU, "admin")
    app = create_app(auth_env.ctx)
    async with client(app, admin) as c:
        r = await c.delete(f"/v1/keys/{first.id}")
        assert r.status_code == 409 and "last active admin key" in r.json()["detail"]
        assert (await c.get("/v1/site")).status_code == 200  # still in
        second = (await c.post("/v1/keys", json={"org": "330000", "role": "admin"})).json()
        assert (await c.delete(f"/v1/keys/{first.id}")).status_code == 200  # there is another now
    async with client(app, second["token"]) as c:
        assert (await c.delete(f"/v1/keys/{second['id']}")).status_code == 409
        assert (await c.delete(f"/v1/keys/{district.id}")).status_code == 200  # a district's last admin: fine
    runner = CliRunner()
    r = runner.invoke(keys_app, ["revoke", second["id"], "--keys", str(auth_env.keys.path)])
    assert r.exit_code == 2 and "last active admin key" in r.output
    assert auth_env.keys.get(second["id"]).active


async def test_without_auth_there_is_no_rate_limit(tmp_path):
    """The local demo (auth off) is one anonymous admin: no key, so no per-key bucket to run dry."""
    e = build_env(tmp_path, auth=False, rate_per_s=1.0, burst=2)
    async with client(create_app(e.ctx)) as c:
        assert [(await c.get("/v1/meters")).status_code for _ in range(5)] == [200] * 5
        assert (await c.get("/metrics")).status_code == 200
    e.store.close()


async def test_one_token_arriving_many_times_at_once_is_hashed_once(auth_env):
    """A dashboard opening with a new key sends a dozen requests at once: one argon2 check serves them."""
    _, token = auth_env.keys.create(INST42, "viewer")
    app = create_app(auth_env.ctx)
    async with client(app, token) as c:
        codes = await asyncio.gather(*(c.get("/v1/meters") for _ in range(12)))
    assert [r.status_code for r in codes] == [200] * 12
    assert auth_env.keys.hash_checks == 1
