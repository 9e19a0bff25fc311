"""The access server inside the edge service: simulated terminals over TCP, through the outbox, into
the embedded store and out of the API (terminals, tracks, health, metrics, lost-signal alerts),
with blind-area backlog recomputing the closed days it touches."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import httpx

from analytics.periods import LocalCalendar
from edge.app.service import EdgeService
from edge.query import Where
from simulators.jt808_terminals import Outages, TerminalFleet
from tests.jt808.conftest import ORG, make_site, wait_until

NS = 1_000_000_000


def _site(tmp_path: Path, n: int = 4, **jt808):
    s = make_site(n, **jt808)
    return s.model_copy(update={
        "mqtt": s.mqtt.model_copy(update={"embedded_port": 0}),
        "outbox": s.outbox.model_copy(update={"path": str(tmp_path / "outbox.sqlite")}),
        "store": s.store.model_copy(update={"path": str(tmp_path / "store.sqlite"), "flush_interval_ms": 100}),
        "jt808": s.jt808.model_copy(update={"auth_store": str(tmp_path / "terminals.sqlite")}),
    })


async def test_terminals_through_the_service_into_the_store_and_out_of_the_api(tmp_path):
    site = _site(tmp_path, 4, heartbeat_s=1.0, idle_multiple=2)
    svc = EdgeService(site, data_dir=tmp_path, api_port=0)
    await svc.start()
    try:
        address = f"127.0.0.1:{(await _port(svc))}"
        fleet = TerminalFleet(4, address, version=2019, drive_interval_s=0.3, park_interval_s=0.3, heartbeat_s=0.5,
                              ack_timeout_s=0.5, backlog_h=1.0, outages=Outages(tunnel_rate=0.05, tunnel_s=(0.5, 1.0)),
                              reconnect_max_s=0.5)
        stats = await fleet.run(duration_s=3.0, drain_s=20)
        assert stats["kept"] == 0 and stats["acknowledged"] == stats["generated"] > 4 * 120
        assert stats["tunnels"] >= 1  # the network was lost on the way and the backlog sent after

        await svc.flush()
        ledger = fleet.ledger()
        series = await svc.query.raw("position", ["lat", "backlog"], 0, 2**62, Where(org=ORG))
        stored = {(s.tags["vehicle"], int(t)) for s in series if s.field == "lat" for t in s.times_ns}
        for i, phone in enumerate(sorted(ledger)):
            for t in ledger[phone]["acked"]:
                assert (f"car-{i:03d}", t) in stored
        assert len(stored) == stats["acknowledged"]

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{svc.api_bound_port}") as api:
            r = (await api.get("/v1/terminals")).json()
            assert [t["phone"] for t in r["items"]] == [f"138{i:08d}" for i in range(4)]
            t0 = r["items"][0]
            assert t0["vehicle"] == "car-000" and t0["protocol"] == "2019" and t0["protocol_version"] == 1
            assert t0["positions"] == len(ledger["13800000000"]["acked"]) and t0["backlog_positions"] >= 110
            assert t0["last_authentication"] and t0["last_report"] and t0["last_fix"] and t0["imei"]
            one = (await api.get("/v1/terminals/013800000001")).json()
            assert one["vehicle"] == "car-001" and one["plate"] == "浙A·10001"
            assert (await api.get("/v1/terminals/13999999999")).status_code == 404
            track = (await api.get("/v1/vehicles/car-000/track", params={"from": "2000-01-01T00:00:00+08:00"})).json()
            assert len(track["items"]) == min(1000, len(ledger["13800000000"]["acked"]))
            health = (await api.get("/v1/health")).json()
            j = health["components"]["jt808"]
            assert j["positions_stored"] == stats["acknowledged"] and j["running"]
            metrics = (await api.get("/metrics")).text
            assert "edge_jt808_positions_stored_total" in metrics

            # silence: the terminals stopped; after heartbeat x 2 each raises lost_signal once
            await wait_until(lambda: all(not t.online for t in svc.jt808.terminals()), timeout_s=10)
            await wait_until(lambda: svc.jt808.stats()["closed"].get("idle", 0) + svc.jt808.stats()["closed"].get("peer_closed", 0) >= 4)
            await wait_until(lambda: all(t.silent_alerted for t in svc.jt808.terminals()), timeout_s=10)
            offline = (await api.get("/v1/terminals", params={"status": "offline"})).json()
            assert len(offline["items"]) == 4
        want = {f"car-{i:03d}" for i in range(4)}

        async def alerted() -> set[str]:  # the alert Points are committed by the alert tick: flush until they are stored
            await svc.flush()
            rows = await svc.query.raw("alert", ["message", "silent_s"], 0, 2**62, Where(tags={"kind": "lost_signal"}))
            return {s.tags["vehicle"] for s in rows}

        got: set[str] = set()
        for _ in range(50):
            got = await alerted()
            if got == want:
                break
            await asyncio.sleep(0.2)
        assert got == want
    finally:
        await svc.stop()


async def test_backlog_of_a_closed_day_is_recomputed(tmp_path):
    site = _site(tmp_path, 1)
    svc = EdgeService(site, data_dir=tmp_path, api_port=0, with_api=False)
    await svc.start()
    try:
        await wait_until(lambda: svc.indicators.last_closed is not None, timeout_s=30)  # the first pass closed yesterday
        address = f"127.0.0.1:{(await _port(svc))}"
        cal = LocalCalendar()
        three_days_ago = cal.date_of(int(cal.local_day_index(svc.clock.now_ns()))) - dt.timedelta(days=3)
        fleet = TerminalFleet(1, address, drive_interval_s=30, park_interval_s=30, backlog_h=80.0, ack_timeout_s=2)
        stats = await fleet.run(duration_s=0.5, drain_s=30)
        assert stats["kept"] == 0
        assert three_days_ago in svc.indicators.late_days or svc.indicators.passes > 1
        await svc.flush()
        await svc.indicators.compute_once()
        await svc.flush()
        start = cal.midnight_ns(three_days_ago)
        ind = await svc.query.raw("fleet_indicator", ["mileage_km"], start, start + 1, Where(tags={"id": "car-000", "scope": "vehicle"}))
        assert ind and ind[0].values[0] > 0  # the day three days ago now has the vehicle's mileage
    finally:
        await svc.stop()


async def _port(svc: EdgeService) -> int:
    await asyncio.wait_for(svc.jt808.ready.wait(), 10)
    return svc.jt808.port
