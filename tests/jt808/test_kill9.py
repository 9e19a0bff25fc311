"""`edge run` with a jt808 section, killed -9 in the middle of a blind-area backlog upload.

Every position the simulated terminals saw acknowledged is in the store after the restart; the
ones not acknowledged when the edge died were kept by the terminals, sent again, and arrive too:
none lost, none doubled. Then the API of the restarted edge shows the terminals and their tracks.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from edge.query import StoreQuery, Where
from edge.store import EmbeddedStore
from simulators.jt808_terminals import TerminalFleet

pytestmark = pytest.mark.slow
ORG = "330000/330100/330106/inst-042"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_site(d: Path, n: int, jt808_port: int, api_port: int) -> Path:
    lines = ["site: {name: kill9}", "orgs:", "  - {path: '330000', name: Z}", "  - {path: '330000/330100', name: H}",
             "  - {path: '330000/330100/330106', name: X}", f"  - {{path: '{ORG}', name: I}}", "vehicles:"]
    lines += [f"  - {{id: car-{i:03d}, plate: '浙A·{20000 + i}', org: '{ORG}', terminal: '138{i:08d}'}}" for i in range(n)]
    lines += [f"jt808: {{listen: '127.0.0.1:{jt808_port}', heartbeat_s: 30, auth_store: '{d}/terminals.sqlite'}}",
              f"outbox: {{path: '{d}/outbox.sqlite'}}", f"store: {{kind: embedded, path: '{d}/store.sqlite', flush_interval_ms: 200}}",
              f"api: {{host: 127.0.0.1, port: {api_port}}}", "mqtt: {embedded_port: 0}"]
    p = d / "site.yaml"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


def start_edge(site: Path, log: Path) -> subprocess.Popen:
    edge = Path(sys.executable).with_name("edge")
    cmd = [str(edge)] if edge.exists() else [sys.executable, "-m", "edge.app.cli"]
    with log.open("ab") as out:
        return subprocess.Popen(cmd + ["run", "-c", str(site), "--log-level", "warning"], stdout=out,
                                stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})


async def wait_port(port: int, proc: subprocess.Popen, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, "edge exited"
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.transport.abort()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


async def test_kill_9_mid_backlog_loses_nothing_acknowledged(tmp_path):
    n = 10
    port, api_port = free_port(), free_port()
    site = write_site(tmp_path, n, port, api_port)
    log = tmp_path / "edge.log"
    proc = start_edge(site, log)
    try:
        await wait_port(port, proc)
        # ten terminals out of coverage for 12 hours: 1,440 fixes each kept, uploaded in 0x0704 batches
        fleet = TerminalFleet(n, f"127.0.0.1:{port}", drive_interval_s=30, park_interval_s=30, heartbeat_s=30,
                              backlog_h=12, ack_timeout_s=2.0, retries=2, reconnect_max_s=0.5, window=2)
        run = asyncio.create_task(fleet.run(duration_s=4.0, drain_s=90))
        total = n * 12 * 120
        deadline = time.monotonic() + 60
        while fleet.stats()["acknowledged"] < total * 0.3:
            assert time.monotonic() < deadline and not run.done(), fleet.stats()
            await asyncio.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        acked_at_kill = fleet.stats()["acknowledged"]
        assert acked_at_kill < total  # killed mid-backlog
        proc = start_edge(site, log)
        stats = await run
        assert stats["kept"] == 0 and stats["acknowledged"] == stats["generated"] >= total

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}") as api:
            r = (await api.get("/v1/terminals")).json()
            assert len(r["items"]) == n and all(t["last_authentication"] for t in r["items"])
            deadline = time.monotonic() + 30
            while True:  # the store takes the outbox's points a moment later
                track = (await api.get("/v1/vehicles/car-003/track", params={"from": "2000-01-01T00:00:00+08:00",
                                                                                  "limit": 1000})).json()
                if len(track["items"]) == 1000 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            assert len(track["items"]) == 1000  # out of the API too (a first page of the backlog)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # a clean stop flushes the outbox to the store
            proc.wait(60)

    store = EmbeddedStore(tmp_path / "store.sqlite")
    try:
        q = StoreQuery(store)
        series = await q.raw("position", ["lat"], 0, 2**62, Where(org=ORG))
        stored = [(s.tags["vehicle"], int(t)) for s in series for t in s.times_ns]
    finally:
        store.close()
    ledger = fleet.ledger()
    acked = {(f"car-{int(phone[3:]):03d}", t) for phone, e in ledger.items() for t in e["acked"]}
    lost = acked - set(stored)
    assert not lost, f"{len(lost)} acknowledged positions lost"
    assert len(stored) == len(set(stored)) == len(acked)  # none doubled, none extra
    text = log.read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]
