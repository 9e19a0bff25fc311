"""Bench ``jt808.*``: the JT/T 808 access server of ``edge run`` beside a bare asyncio server.

The bare server (``python -m bench.jt808 --bare PORT``) is the limit: asyncio streams, the same
frame parsing (``collector.jt808.protocol``: split, unescape, check code, header, location body),
an immediate 0x8001 for every frame, nothing stored. The edge is ``edge run`` with a ``jt808:``
section, its outbox (SQLite, ``synchronous=FULL``), the delivery to InfluxDB (influxd 1.x from
Debian, the product's store: its own CPU is reported beside, not counted, as the bare server's
would not be) and the live state. Each is a process of its own; its CPU (all threads) and RSS are
read with psutil. The same edge with the embedded store (the demo's default: SQLite in the edge's
own process, so the store's work counts in the edge's CPU) is measured too:
``jt808.cpu_ms_per_1000_positions_embedded_store``. Without influxd, the main figure is the
embedded store's and says so. The terminals are this process: asyncio connections that authenticate and
then report 0x0200 like terminals do, each waiting for its answer before the next report.

- ``jt808.cpu_ms_per_1000_positions``: terminals reporting at a fixed rate (2,000 terminals, one
  report a second each); the server's CPU per 1,000 positions acknowledged (and stored: a window
  ends when the store holds them). The bare server and the edge run side by side and take turns,
  three 20-s windows each (A B B A A B): this machine is a VM whose speed drifts by 10 % over
  minutes, and a drift then weighs on both sides alike. Each side's figure pools its windows; the
  windows' own figures are kept beside it. The edge runs with the product's default
  ``commit_window_ms`` (``BENCH_JT808_WINDOW_MS`` sets another).
- ``jt808.terminals_held``: how many terminals reporting every 30 s fit in half a core:
  0.5 / (CPU per position / 30 + CPU per connected terminal per second, measured with the
  terminals connected and silent). Real sockets at 30 s would need 30 s windows per point;
  the two costs are measured apart and added.
- ``jt808.rss_mb_10k_terminals``: RSS with 10,000 authenticated connections (quick mode: fewer,
  and extrapolated from the RSS per connection; the figure says so).
- ``jt808.lost``: positions acknowledged to terminals but missing from the store after
  ``kill -9`` of ``edge run`` in the middle of a blind-area backlog and a restart (goal 0).

    python -m bench.jt808 [--quick]        # figures as JSON
    python -m bench.run --only jt808       # into bench/results.json
"""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from collector.jt808 import protocol as P  # noqa: E402
from edge.config import Jt808  # noqa: E402
from edge.query import StoreQuery, Where  # noqa: E402
from edge.store import EmbeddedStore  # noqa: E402
from simulators import jt808_terminals as wire  # noqa: E402
from simulators.jt808_terminals import TerminalFleet  # noqa: E402
from simulators.payloads import Fix, jt808_location_body  # noqa: E402
from tests.support.influx import InfluxServer  # noqa: E402
from tests.support.influx import available as influx_available  # noqa: E402

NS = 1_000_000_000
ORG = "330000/330100/330106/inst-042"
HALF_CORE = 0.5
# the product's default group-commit window unless BENCH_JT808_WINDOW_MS says otherwise
WINDOW_MS = float(os.environ.get("BENCH_JT808_WINDOW_MS") or Jt808.model_fields["commit_window_ms"].default)
REPORT_S = 30.0


def _raise_nofile(n: int = 65536) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(n, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the bare server (the limit) -------------------------------------------------------------------


async def _bare_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    sp = P.FrameSplitter(4096)
    serial = 0
    try:
        while True:
            data = await reader.read(16 * 1024)
            if not data:
                break
            out = []
            for seg in sp.feed(data):
                try:
                    f = P.parse_frame(P.unescape(seg))
                    if f.header.msg_id == P.LOCATION:
                        P.location_fields(P.parse_location(f.body))
                except P.PayloadError:
                    continue
                serial += 1
                out.append(P.encode_frame(P.PLATFORM_REPLY, f.header.phone_digits, serial,
                                          P.general_reply(f.header.serial, f.header.msg_id, P.OK), version=f.header.version))
            if out:
                writer.write(b"".join(out))
                await writer.drain()
    except (ConnectionError, OSError, P.PayloadError):
        pass
    finally:
        writer.transport.abort()


async def _bare_main(port: int) -> None:
    server = await asyncio.start_server(_bare_conn, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


def _start_bare(port: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bench.jt808", "--bare", str(port)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# --- the edge ----------------------------------------------------------------------------------------


def _edge_site(d: Path, port: int, api_port: int, *, registration_open: bool = True, n_vehicles: int = 0,
               influx_url: str | None = None) -> Path:
    lines = ["site: {name: bench-jt808}", "orgs:", "  - {path: '330000', name: Z}", "  - {path: '330000/330100', name: H}",
             "  - {path: '330000/330100/330106', name: X}", f"  - {{path: '{ORG}', name: I}}"]
    if n_vehicles:
        lines.append("vehicles:")
        lines += [f"  - {{id: car-{i:05d}, org: '{ORG}', terminal: '138{i:08d}'}}" for i in range(n_vehicles)]
    reg = "registration: open, auth_codes: adopt, " if registration_open else ""
    lines += [f"jt808: {{listen: '127.0.0.1:{port}', {reg}heartbeat_s: 600, handshake_timeout_s: 120, max_connections: 30000, "
              f"max_per_address: 30000, commit_window_ms: {WINDOW_MS}, auth_store: '{d}/terminals.sqlite'}}",
              f"outbox: {{path: '{d}/outbox.sqlite'}}",
              (f"store: {{kind: influxdb_v1, url: '{influx_url}', database: bench, flush_interval_ms: 500}}" if influx_url
               else f"store: {{kind: embedded, path: '{d}/store.sqlite'}}"),
              f"api: {{host: 127.0.0.1, port: {api_port}}}", "mqtt: {embedded_port: 0}",
              "analytics: {fleet_interval_s: 3600, interval_s: 3600}"]
    p = d / "site.yaml"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


def _start_edge(site: Path, log: Path) -> subprocess.Popen:
    edge = Path(sys.executable).with_name("edge")
    cmd = [str(edge)] if edge.exists() else [sys.executable, "-m", "edge.app.cli"]
    # this tree's code, not whatever the venv's editable install points at (a worktree's bench
    # would otherwise measure another checkout's edge)
    path = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    with log.open("ab") as out:
        return subprocess.Popen(cmd + ["run", "-c", str(site), "--log-level", "warning"], stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}, cwd=site.parent)


async def _wait_port(port: int, proc: subprocess.Popen, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.transport.abort()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# --- terminals ---------------------------------------------------------------------------------------


class _Term:
    __slots__ = ("phone", "reader", "writer", "serial", "acked", "k", "buf")

    def __init__(self, phone: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.phone, self.reader, self.writer = phone, reader, writer
        self.serial = self.acked = self.k = 0
        self.buf = b""

    async def call(self, msg_id: int, body: bytes) -> int:
        self.serial = (self.serial + 1) & 0xFFFF
        self.writer.write(wire.frame(msg_id, self.phone, self.serial, body))
        while True:
            frames, self.buf = wire.read_frames(self.buf)
            for m, _, b in frames:
                if m == wire.PLATFORM_REPLY and len(b) >= 5 and struct.unpack_from(">H", b)[0] == self.serial:
                    return b[4]
            data = await self.reader.read(4096)
            if not data:
                raise ConnectionError("closed")
            self.buf += data


async def _connect(port: int, n: int, first: int = 0) -> list[_Term]:
    sem = asyncio.Semaphore(200)  # connect in waves: a listen backlog is finite

    async def one(i: int) -> _Term:
        async with sem:
            phone = f"139{first + i:08d}"
            r, w = await asyncio.open_connection("127.0.0.1", port)
            t = _Term(phone, r, w)
            if await t.call(wire.AUTHENTICATE, b"BENCH") != 0:
                raise RuntimeError(f"{phone} not authenticated")
            return t

    return list(await asyncio.gather(*(one(i) for i in range(n))))


def _close(terms: list[_Term]) -> None:
    for t in terms:
        t.writer.transport.abort()


async def _report(terms: list[_Term], interval_s: float, duration_s: float, t0_ns: int) -> int:
    """Every terminal reports every ``interval_s`` (staggered), waiting for each answer."""
    stop = time.monotonic() + duration_s

    async def loop(t: _Term, offset: float) -> None:
        await asyncio.sleep(offset)
        while time.monotonic() < stop:
            nxt = time.monotonic() + interval_s
            t.k += 1
            f = Fix(t.phone, t0_ns + t.k * NS, 30.27 + (t.k % 50) * 1e-5, 120.15, 30.0, 90.0, True, 1000.0 + t.k * 0.01, 30.0, 8.0, 10)
            if await t.call(wire.LOCATION, jt808_location_body(f)) == 0:
                t.acked += 1
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))

    n0 = sum(t.acked for t in terms)
    await asyncio.gather(*(loop(t, interval_s * i / len(terms)) for i, t in enumerate(terms)))
    return sum(t.acked for t in terms) - n0


def _cpu(p: psutil.Process) -> float:
    c = p.cpu_times()
    return c.user + c.system


class _Side:
    """One server under test: its process, its terminals (connected once) and its windows so far."""

    def __init__(self, name: str, port: int, proc: subprocess.Popen, beside: subprocess.Popen | None = None,
                 stored: Callable[[], Awaitable[int]] | None = None) -> None:
        self.name, self.port, self.proc, self.stored = name, port, proc, stored
        self.p = psutil.Process(proc.pid)
        self.q = psutil.Process(beside.pid) if beside is not None else None
        self.terms: list[_Term] = []
        self.windows: list[dict] = []

    async def connect(self, n: int, t0_ns: int) -> None:
        self.terms = await _connect(self.port, n, 0)
        await _report(self.terms, 1.0, 2.0, t0_ns)  # warm up (first sight of each vehicle, caches)

    async def window(self, rate_s: float, t0_ns: int) -> dict:
        """Terminals reporting every second for ``rate_s``: the server's CPU over the window, per
        position acknowledged; with a store, the window closes when the store holds every one."""
        n0 = await self.stored() if self.stored else 0
        c0, w0, q0 = _cpu(self.p), time.monotonic(), _cpu(self.q) if self.q else 0.0
        acked = await _report(self.terms, 1.0, rate_s, t0_ns)
        wall = time.monotonic() - w0
        if self.stored:  # delivered: the store holds what was acknowledged in the window
            deadline = time.monotonic() + 60
            while await self.stored() - n0 < acked and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
        w = {"positions": acked, "cpu_s": _cpu(self.p) - c0, "wall_s": wall,
             "beside_cpu_s": (_cpu(self.q) - q0) if self.q else None}
        self.windows.append(w)
        return w

    def pooled(self) -> dict:
        """Every window's CPU over every window's positions (windows interleaved with the other side's)."""
        n = sum(w["positions"] for w in self.windows)
        cpu = sum(w["cpu_s"] for w in self.windows)
        wall = sum(w["wall_s"] for w in self.windows)
        out = {"positions": n, "cpu_s": cpu, "wall_s": wall, "rate": n / wall, "cpu_s_per_position": cpu / max(1, n),
               "beside_cpu_s": (sum(w["beside_cpu_s"] for w in self.windows) if self.q else None),
               "windows_ms_per_1000": [round(w["cpu_s"] / max(1, w["positions"]) * 1e6, 1) for w in self.windows]}
        return out

    async def idle(self, n_idle: int, idle_s: float) -> dict:
        """RSS with ``n_idle`` more terminals connected and silent, and their CPU per terminal-second."""
        _close(self.terms)
        await asyncio.sleep(1.0)
        rss0 = self.p.memory_info().rss
        idle_terms = await _connect(self.port, n_idle, len(self.terms))
        await asyncio.sleep(1.0)
        rss = self.p.memory_info().rss
        c1 = _cpu(self.p)
        await asyncio.sleep(idle_s)
        cpu_idle = _cpu(self.p) - c1
        _close(idle_terms)
        return {"idle_cpu_s_per_conn_s": cpu_idle / (n_idle * idle_s), "rss_bytes": rss, "rss_before_bytes": rss0,
                "connections": n_idle}


async def _measure(sides: list[_Side], n_rate: int, rounds: int, rate_s: float, n_idle: int, idle_s: float) -> list[dict]:
    """CPU per position of each side, in ``rounds`` windows each, the sides taking turns (A B B A A B
    ...): a machine that slows down or speeds up during the run weighs on both alike. Then, per side,
    RSS and CPU with ``n_idle`` terminals connected and silent."""
    t0_ns = (time.time_ns() - 3600 * NS) // NS * NS  # fixes of the last hour: unique per terminal and second
    for side in sides:
        await side.connect(n_rate, t0_ns)
    for r in range(rounds):
        for side in (sides if r % 2 == 0 else sides[::-1]):
            await side.window(rate_s, t0_ns)
    out = []
    for side in sides:
        m = side.pooled()
        if n_idle:
            m.update(await side.idle(n_idle, idle_s))
        else:
            _close(side.terms)
        out.append(m)
    return out


# --- kill -9 -------------------------------------------------------------------------------------------


async def _lost_after_kill9(d: Path, quick: bool) -> dict:
    n, hours = (10, 6) if quick else (50, 24)
    port, api = _free_port(), _free_port()
    d.mkdir(parents=True, exist_ok=True)
    site = _edge_site(d, port, api, registration_open=False, n_vehicles=n)
    log = d / "edge.log"
    # the listed vehicles are car-NNNNN on terminals 138NNNNNNNN: what TerminalFleet's phones are
    proc = _start_edge(site, log)
    try:
        await _wait_port(port, proc)
        fleet = TerminalFleet(n, f"127.0.0.1:{port}", drive_interval_s=30, park_interval_s=30, heartbeat_s=30,
                              backlog_h=hours, ack_timeout_s=3.0, retries=2, reconnect_max_s=0.5, window=2)
        run = asyncio.create_task(fleet.run(duration_s=5.0, drain_s=600))
        total = n * hours * 120
        while fleet.stats()["acknowledged"] < total * 0.4 and not run.done():
            await asyncio.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        at_kill = fleet.stats()["acknowledged"]
        proc = _start_edge(site, log)
        stats = await run
    finally:
        _stop(proc)
    store = EmbeddedStore(d / "store.sqlite")
    try:
        series = await StoreQuery(store).raw("position", ["lat"], 0, 2**62, Where(org=ORG))
        stored = {(s.tags["vehicle"], int(t)) for s in series for t in s.times_ns}
    finally:
        store.close()
    acked = {(f"car-{int(ph[3:]):05d}", t) for ph, e in fleet.ledger().items() for t in e["acked"]}
    return {"lost": len(acked - stored), "acknowledged": len(acked), "acknowledged_at_kill": at_kill,
            "backlog_positions": total, "kept_unsent": stats["kept"], "stored": len(stored)}


# --- the figures -----------------------------------------------------------------------------------------


async def _run(quick: bool) -> dict:
    _raise_nofile()
    n_rate, rounds, rate_s = (300, 1, 6.0) if quick else (2000, 3, 20.0)
    n_idle, idle_s = (1000, 5.0) if quick else (10_000, 20.0)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        # the bare server and the edge delivering to InfluxDB (the product's store) side by side,
        # taking turns; then the edge with the embedded store alone
        bare_port = _free_port()
        bare = _start_bare(bare_port)
        influx = InfluxServer(d / "influxd").start() if influx_available() else None
        edge = None
        try:
            await _wait_port(bare_port, bare)
            stored = None
            if influx is not None:
                influx.create_database("bench")

                async def stored() -> int:
                    rows = await asyncio.to_thread(influx.rows, 'SELECT count("lat") FROM "position"', "bench")
                    return int(rows[0][1]["count"]) if rows else 0
            port, edge = await _start_edge_at(d / "edge", influx)
            b, e = await _measure([_Side("bare", bare_port, bare), _Side("edge", port, edge, influx.proc if influx else None,
                                                                         stored)],
                                  n_rate, rounds, rate_s, n_idle, idle_s)
        finally:
            _stop(bare)
            if edge is not None:
                _stop(edge)
            if influx is not None:
                influx.stop()
        if influx is not None:
            port, edge = await _start_edge_at(d / "edge-embedded", None)
            try:
                (emb,) = await _measure([_Side("embedded", port, edge)], n_rate, 1, rate_s, 0, 0.0)
            finally:
                _stop(edge)
        else:
            emb = e
        lost = await _lost_after_kill9(d / "kill9", quick)

    def held(m: dict) -> float:
        per_terminal_s = m["cpu_s_per_position"] / REPORT_S + m["idle_cpu_s_per_conn_s"]
        return HALF_CORE / per_terminal_s if per_terminal_s > 0 else float("inf")

    e_ms, b_ms, emb_ms = (m["cpu_s_per_position"] * 1e6 for m in (e, b, emb))
    held_e, held_b = held(e), held(b)
    store = "InfluxDB 1.6 (influxd, its CPU apart)" if e.get("beside_cpu_s") is not None else "embedded (influxd not installed)"
    return {
        "jt808.cpu_ms_per_1000_positions": {
            "value": round(e_ms, 1), "unit": "CPU ms / 1,000 positions",
            "baseline": round(b_ms, 1), "baseline_what": "bare asyncio server: same frame parsing, immediate 0x8001, nothing stored",
            "ratio": round(b_ms / e_ms, 3) if e_ms else None, "goal": "ratio >= 0.5 (within 2x of the bare server)",
            "met": bool(e_ms and b_ms / e_ms >= 0.5), "store": store, "terminals": n_rate, "positions": e["positions"],
            "rate_per_s": round(e["rate"]), "window_s": round(e["wall_s"], 1), "rounds": rounds, "commit_window_ms": WINDOW_MS,
            "windows_ms_per_1000": e["windows_ms_per_1000"], "baseline_windows_ms_per_1000": b["windows_ms_per_1000"],
            "store_cpu_ms_per_1000_positions": (round(e["beside_cpu_s"] / max(1, e["positions"]) * 1e6, 1)
                                                if e.get("beside_cpu_s") is not None else None)},
        "jt808.cpu_ms_per_1000_positions_embedded_store": {
            "value": round(emb_ms, 1), "unit": "CPU ms / 1,000 positions",
            "baseline": round(b_ms, 1), "baseline_what": "the bare server (as above)",
            "ratio": round(b_ms / emb_ms, 3) if emb_ms else None,
            "goal": "reported: the demo's store, SQLite in the edge's process (its work counted in the edge's CPU)",
            "met": None, "terminals": n_rate, "positions": emb["positions"], "rate_per_s": round(emb["rate"])},
        "jt808.terminals_held": {
            "value": int(held_e), "unit": "terminals at 30 s reporting in half a core",
            "baseline": int(held_b), "baseline_what": "the bare server, same method",
            "ratio": round(held_e / held_b, 3) if held_b else None, "goal": ">= 10,000", "met": held_e >= 10_000,
            "cpu_ms_per_position": round(e["cpu_s_per_position"] * 1e3, 4),
            "cpu_us_per_connected_terminal_s": round(e["idle_cpu_s_per_conn_s"] * 1e6, 3)},
        "jt808.rss_mb_10k_terminals": _rss_figure(e, b, n_idle),
        "jt808.lost": {
            "value": lost["lost"], "unit": "positions acknowledged but not stored after kill -9",
            "baseline": None, "baseline_what": None, "ratio": None, "goal": "0", "met": lost["lost"] == 0,
            **{k: v for k, v in lost.items() if k != "lost"}},
    }


async def _start_edge_at(d: Path, influx: "InfluxServer | None") -> tuple[int, subprocess.Popen]:
    port, api = _free_port(), _free_port()
    d.mkdir()
    edge = _start_edge(_edge_site(d, port, api, influx_url=influx.url if influx else None), d / "edge.log")
    try:
        await _wait_port(port, edge)
    except BaseException:
        _stop(edge)
        raise
    return port, edge


def _rss_figure(e: dict, b: dict, n: int) -> dict:
    """RSS with ``n`` terminals connected; below 10,000 (quick runs) scaled to 10,000 with the
    RSS each connection added, and said so."""
    def at_10k(m: dict) -> float:
        per = (m["rss_bytes"] - m["rss_before_bytes"]) / n
        return (m["rss_bytes"] + per * (10_000 - n)) / 2**20

    rss_e, rss_b = at_10k(e), at_10k(b)
    fig = {"value": round(rss_e, 1), "unit": "MB RSS", "baseline": round(rss_b, 1),
           "baseline_what": "the bare server with the same connections", "ratio": round(rss_b / rss_e, 3) if rss_e else None,
           "goal": "< 500 MB", "met": rss_e < 500, "connections": n,
           "kb_per_connection": round((e["rss_bytes"] - e["rss_before_bytes"]) / n / 1024, 1),
           "bare_kb_per_connection": round((b["rss_bytes"] - b["rss_before_bytes"]) / n / 1024, 1)}
    if n < 10_000:
        fig["extrapolated_from"] = n
    return fig


def run(quick: bool = False) -> dict:
    return asyncio.run(_run(quick))


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--bare":
        _raise_nofile()
        try:
            asyncio.run(_bare_main(int(sys.argv[2])))
        except KeyboardInterrupt:
            pass
    else:
        import json

        print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
