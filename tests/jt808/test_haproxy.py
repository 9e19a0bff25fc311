"""Scale-out on an existing engine: two `edge run` behind HAProxy (Debian's, TCP mode, leastconn,
PROXY protocol v1 so each edge sees the terminal's own address). Terminals come and go through
tunnels, landing on either edge; with a shared auth secret each edge accepts codes the other
issued. Both edges write to one InfluxDB (Debian's 1.6.7), as a county would run them: every
terminal is served, every acknowledged position is stored once, none is lost.

A terminal that loses its link between an edge's commit and the acknowledgement sends the fix
again, maybe through the other edge: at-least-once. The store keys a point by measurement, tags
and time, so the second copy is the same point (this test counts how often it happened)."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from simulators.jt808_terminals import Outages, TerminalFleet
from tests.jt808.test_kill9 import ORG, free_port, start_edge, wait_port

pytestmark = pytest.mark.slow
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


def edge_site(d: Path, n: int, port: int, api_port: int, influx: str, db: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    lines = ["orgs:", "  - {path: '330000', name: Z}", "  - {path: '330000/330100', name: H}",
             "  - {path: '330000/330100/330106', name: X}", f"  - {{path: '{ORG}', name: I}}", "vehicles:"]
    lines += [f"  - {{id: car-{i:03d}, org: '{ORG}', terminal: '138{i:08d}'}}" for i in range(n)]
    lines += [f"jt808: {{listen: '127.0.0.1:{port}', proxy_protocol: v1, auth_secret: county-secret, heartbeat_s: 30, "
              f"auth_store: '{d}/terminals.sqlite'}}",
              f"outbox: {{path: '{d}/outbox.sqlite'}}", f"store: {{kind: influxdb_v1, url: '{influx}', database: {db}, flush_interval_ms: 200}}",
              f"api: {{host: 127.0.0.1, port: {api_port}}}", "mqtt: {embedded_port: 0}"]
    p = d / "site.yaml"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


async def wait_servers_up(d: Path, n: int, timeout_s: float = 20.0) -> None:
    """Until HAProxy's own stats say every backend server passed its health check: a fleet started
    before that lands on the servers already up (a clean clone's run once found one edge with 11
    positions of 14,550)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    status: list[str] = []
    while loop.time() < deadline:
        try:
            r, w = await asyncio.open_unix_connection(str(d / "haproxy.sock"))
            w.write(b"show stat\n")
            rows = (await r.read()).decode().splitlines()
            w.close()
            head = rows[0].lstrip("# ").split(",")
            status = [dict(zip(head, ln.split(","))).get("status", "") for ln in rows[1:] if ",edge" in ln]
            if len(status) == n and all(st == "UP" for st in status):
                return
        except (OSError, IndexError):
            pass
        await asyncio.sleep(0.2)
    raise AssertionError(f"HAProxy's servers not all up: {status}")


def haproxy_config(d: Path, front: int, backends: list[int]) -> Path:
    servers = "\n".join(f"  server edge{i} 127.0.0.1:{p} send-proxy check check-send-proxy inter 1s" for i, p in enumerate(backends))
    cfg = f"""global
  maxconn 4096
  stats socket {d}/haproxy.sock mode 600 level user
defaults
  mode tcp
  timeout connect 2s
  timeout client 120s
  timeout server 120s
frontend jt808
  bind 127.0.0.1:{front}
  default_backend edges
backend edges
  balance leastconn
{servers}
"""
    p = d / "haproxy.cfg"
    p.write_text(cfg)
    return p


async def test_two_edges_behind_haproxy_serve_every_terminal_once(tmp_path, influx_server, influx_db):
    if not Path(HAPROXY).exists():
        pytest.fail("haproxy is not installed: `make system-deps` installs it (Debian package haproxy)")
    n = 40
    ports = [free_port(), free_port()]
    front = free_port()
    apis = [free_port(), free_port()]
    edges = [start_edge(edge_site(tmp_path / f"e{i}", n, p, apis[i], influx_server.url, influx_db), tmp_path / f"e{i}.log")
             for i, p in enumerate(ports)]
    hap = subprocess.Popen([HAPROXY, "-f", str(haproxy_config(tmp_path, front, ports)), "-db"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for p, proc in zip(ports, edges):
            await wait_port(p, proc)
        await wait_port(front, hap)
        await wait_servers_up(tmp_path, len(ports))
        fleet = TerminalFleet(n, f"127.0.0.1:{front}", drive_interval_s=0.5, park_interval_s=0.5, heartbeat_s=5,
                              backlog_h=0.1, ack_timeout_s=2.0, reconnect_max_s=0.5,
                              outages=Outages(tunnel_rate=0.03, tunnel_s=(0.3, 0.8)))
        stats = await fleet.run(duration_s=4.0, drain_s=60)
        assert stats["kept"] == 0 and stats["acknowledged"] == stats["generated"]
        assert stats["tunnels"] > 5 and stats["connections"] > n  # terminals came back, through either edge
        assert stats["registered"] == n and stats.get("auth_refused", 0) == 0  # each edge took the other's codes
        shares = []
        async with httpx.AsyncClient() as c:
            for a in apis:
                shares.append((await c.get(f"http://127.0.0.1:{a}/v1/health")).json()["components"]["jt808"]["positions_stored"])
        assert all(s > 100 for s in shares), shares  # both edges held a share
    finally:
        hap.send_signal(signal.SIGTERM)
        hap.wait(10)
        for proc in edges:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in edges:
            proc.wait(60)
    rows = influx_server.rows("SELECT lat FROM position GROUP BY vehicle", influx_db)
    stored = [(tags["vehicle"], int(r["time"])) for tags, r in rows]
    assert len(stored) == len(set(stored))  # stored once
    acked = {(f"car-{int(phone[3:]):03d}", t) for phone, e in fleet.ledger().items() for t in e["acked"]}
    assert set(stored) == acked  # none lost, none extra
    assert {v for v, _ in stored} == {f"car-{i:03d}" for i in range(n)}  # every terminal served
    assert sum(shares) >= len(acked)  # the difference: fixes sent again after a lost link (the same point)
    for i in range(2):
        log = (tmp_path / f"e{i}.log").read_text(errors="replace")
        assert "Traceback" not in log, log[-2000:]
