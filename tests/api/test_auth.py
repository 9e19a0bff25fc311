"""Keys: argon2-hashed, verified once then cached, revocable (also from another process), rate-limited,
and every refusal and change audited (local table and ``audit`` points through the ingest)."""

from __future__ import annotations

import sqlite3
import time

import httpx
from typer.testing import CliRunner

from api.app import create_app
from api.keys import KeyStore, Role
from api.keys_cli import app as keys_app
from edge.app.service import ServiceIngest
from edge.live import LiveState
from edge.outbox import Outbox
from tests.api.apienv import INST42, XIHU, build_env


def client(app, token: str | None = None) -> httpx.AsyncClient:
    h = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", headers=h)


def test_secret_is_stored_only_as_argon2_hash(tmp_path):
    ks = KeyStore(tmp_path / "k.sqlite")
    k, token = ks.create(XIHU, "viewer")
    row = sqlite3.connect(tmp_path / "k.sqlite").execute("SELECT hash FROM api_key WHERE id=?", (k.id,)).fetchone()
    assert row[0].startswith("$argon2id$") and token.split("_", 2)[2] not in row[0]
    assert ks.verify(token).org == XIHU
    assert ks.verify(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert ks.verify("sek_0000000000_" + "x" * 43) is None


def test_verified_keys_are_cached(tmp_path):
    ks = KeyStore(tmp_path / "k.sqlite")
    _, token = ks.create(XIHU, "viewer")
    t0 = time.perf_counter()
    ks.verify(token)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(100):
        assert ks.verify(token) is not None
    cached = (time.perf_counter() - t0) / 100
    assert cached < first / 20


async def test_missing_bad_and_revoked_keys_get_401(auth_env):
    k, token = auth_env.keys.create(INST42, "viewer")
    app = create_app(auth_env.ctx)
    async with client(app) as c:
        r = await c.get("/v1/meters")
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert r.headers["content-type"].startswith("application/problem+json")
    async with client(app, "sek_nope") as c:
        assert (await c.get("/v1/meters")).status_code == 401
    async with client(app, token) as c:
        assert (await c.get("/v1/meters")).status_code == 200
        # revoked from another process (the CLI) on the same file
        other = KeyStore(auth_env.keys.path)
        other.revoke(k.id)
        other.close()
        for _ in range(60):
            if (await c.get("/v1/meters")).status_code == 401:
                break
            time.sleep(0.05)
        assert (await c.get("/v1/meters")).status_code == 401
    # health and metrics need no key (probes)
    async with client(app) as c:
        assert (await c.get("/v1/health")).status_code == 200


async def test_rate_limit_429_with_retry_after(tmp_path):
    e = build_env(tmp_path, auth=True, rate_per_s=1.0, burst=5)
    _, token = e.keys.create(INST42, "viewer")
    app = create_app(e.ctx)
    async with client(app, token) as c:
        codes = [(await c.get("/v1/meters")).status_code for _ in range(8)]
        assert codes[:5] == [200] * 5 and codes[-1] == 429
        r = await c.get("/v1/meters")
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    _, other = e.keys.create(INST42, "viewer")
    async with client(app, other) as c:  # buckets are per key
        assert (await c.get("/v1/meters")).status_code == 200
    e.store.close()


async def test_roles(auth_env):
    _, viewer = auth_env.keys.create("330000", "viewer")
    _, admin = auth_env.keys.create("330000", "admin")
    app = create_app(auth_env.ctx)
    async with client(app, viewer) as c:
        assert (await c.get("/v1/keys")).status_code == 403
        assert (await c.post("/v1/keys", json={"org": XIHU})).status_code == 403
        assert (await c.get("/v1/audit")).status_code == 403
    async with client(app, admin) as c:
        r = await c.post("/v1/keys", json={"org": XIHU, "role": "operator", "name": "dispatch"})
        assert r.status_code == 201 and r.json()["token"].startswith("sek_")
        new_id, new_token = r.json()["id"], r.json()["token"]
        assert (await c.get("/v1/dead-letters")).status_code == 200
    async with client(app, new_token) as c:
        assert (await c.get("/v1/meters")).status_code == 200
    async with client(app, admin) as c:
        assert (await c.delete(f"/v1/keys/{new_id}")).json()["revoked"] is not None
    async with client(app, new_token) as c:
        assert (await c.get("/v1/meters")).status_code == 401


async def test_audit_table_and_points(tmp_path):
    e = build_env(tmp_path, auth=True)
    outbox = Outbox(tmp_path / "outbox.sqlite")
    ingest = ServiceIngest(outbox, LiveState())
    e.ctx.extras["ingest"] = ingest
    _, viewer = e.keys.create(XIHU, "viewer")
    _, admin = e.keys.create("330000", "admin")
    app = create_app(e.ctx)
    async with client(app, viewer) as c:
        assert (await c.get("/v1/meters/m-b7")).status_code == 404
        assert (await c.get("/v1/meters", params={"org": "330000/330100/330105"})).status_code == 403
    async with client(app, admin) as c:
        assert (await c.post("/v1/keys", json={"org": INST42})).status_code == 201
    async with client(app) as c:
        assert (await c.get("/v1/meters")).status_code == 401
    import asyncio
    for _ in range(100):
        if outbox.depth() >= 4:
            break
        await asyncio.sleep(0.02)
    actions = [a.action for a in e.keys.audit_entries(100)]
    assert sorted(actions) == sorted(["out_of_scope", "forbidden", "key_create", "unauthenticated"])
    b = outbox.batch(100)
    lines = [ln for row in b.lines for ln in row.split("\x1e")]
    assert len([ln for ln in lines if ln.startswith("audit,")]) == 4
    assert any("action=key_create" in ln and "org=330000" in ln for ln in lines)
    outbox.close()
    e.store.close()


def test_keys_cli(tmp_path):
    runner = CliRunner()
    path = str(tmp_path / "keys.sqlite")
    r = runner.invoke(keys_app, ["create", "--org", XIHU, "--role", "operator", "--keys", path, "--name", "ops"])
    assert r.exit_code == 0, r.output
    token = r.output.strip().splitlines()[-1]
    kid = token.split("_")[1]
    assert KeyStore(path).verify(token).role is Role.operator
    r = runner.invoke(keys_app, ["list", "--keys", path])
    assert kid in r.output and "active" in r.output
    r = runner.invoke(keys_app, ["revoke", kid, "--keys", path])
    assert r.exit_code == 0
    assert KeyStore(path).verify(token) is None
    r = runner.invoke(keys_app, ["create", "--org", "330000/../330100", "--keys", path])
    assert r.exit_code == 2
    r = runner.invoke(keys_app, ["create", "--org", XIHU, "--role", "root", "--keys", path])
    assert r.exit_code == 2


async def test_operator_acknowledges_an_alert_of_its_org_only(tmp_path):
    e = build_env(tmp_path, auth=True)
    outbox = Outbox(tmp_path / "outbox.sqlite")
    e.ctx.extras["ingest"] = ServiceIngest(outbox, LiveState())
    _, viewer = e.keys.create(INST42, "viewer")
    _, operator = e.keys.create(INST42, "operator")
    _, other = e.keys.create("330000/330100/330105", "operator")
    app = create_app(e.ctx)
    async with client(app, operator) as c:
        alerts = (await c.get("/v1/alerts")).json()["items"]
        assert [a["subject"] for a in alerts] == ["veh-01"]
        aid = alerts[0]["id"]
    async with client(app, viewer) as c:
        assert (await c.post(f"/v1/alerts/{aid}/ack")).status_code == 403
    async with client(app, other) as c:
        assert (await c.post(f"/v1/alerts/{aid}/ack")).status_code == 404
    async with client(app, operator) as c:
        r = await c.post(f"/v1/alerts/{aid}/ack", params={"note": "driver called"})
        assert r.status_code == 200 and r.json()["id"] == aid
    lines = [ln for row in outbox.batch(100).lines for ln in row.split("\x1e")]
    assert any(ln.startswith("alert_ack,") and 'note="driver called"' in ln for ln in lines)
    assert "alert_ack" in [a.action for a in e.keys.audit_entries(100)]
    outbox.close()
    e.store.close()
