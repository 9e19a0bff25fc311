"""RS-485 bus budgets: the wire time of a polling cycle against the interval, the verdicts `edge check`
prints and enforces, and the poller's measured cycle on a baud-faithful simulated line."""

import asyncio
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from collector.modbus.bus import BusCycle, MeterLoad, bits_per_char, budget, bus_budgets, read_wire_s
from collector.modbus.service import ModbusCollector, compile_site
from edge.config import Site, Transport
from simulators.meters import MeterServer

from .conftest import ListIngest, make_site

GATEWAY = Transport(kind="rtu_over_tcp", host="10.0.3.20", port=502, baudrate=9600, parity="E")


def test_wire_time_of_one_read_by_hand():
    # 8E1 is 11 bits a character: 1.1458 ms at 9600 baud. Reading 2 registers: 8 characters out,
    # 5 + 4 back, 3.5 characters of silence after each frame, 20 ms for the meter to answer.
    c = 11 / 9600
    assert bits_per_char(GATEWAY) == 11
    assert read_wire_s(GATEWAY, 2) == pytest.approx(17 * c + 2 * 3.5 * c + 0.020)
    assert read_wire_s(GATEWAY, 2) == pytest.approx(0.047500, abs=1e-6)
    # 8N1 (common, though not the standard's framing): 10 bits
    assert bits_per_char(Transport(kind="rtu", serial_port="/dev/ttyS0")) == 10
    # above 19200 baud the silence is fixed at 1.75 ms
    fast = Transport(kind="rtu", serial_port="/dev/ttyS0", baudrate=115200, parity="E", turnaround_ms=0)
    assert read_wire_s(fast, 2) == pytest.approx(17 * 11 / 115200 + 2 * 0.00175)


def dtsu666(n: int, interval_s: float = 15.0, timeout_s: float = 1.0) -> list[MeterLoad]:
    return [MeterLoad(f"m{i:02d}", interval_s, timeout_s, (2, 12, 28, 8, 2)) for i in range(n)]   # its 5 reads


def test_32_meters_of_5_requests_on_one_9600_baud_line():
    # 13 + 2 x 52 characters and 5 x (two silences + turnaround) per meter
    ok20 = budget("rtu:/dev/ttyUSB0", GATEWAY, dtsu666(32))
    assert ok20.cycle_s == pytest.approx(32 * (169 * 11 / 9600 + 5 * (7 * 11 / 9600 + 0.020)))
    assert ok20.verdict == "warn" and "no room for a retry" in ok20.reason     # 71 % of 15 s
    slow = budget("rtu:/dev/ttyUSB0", GATEWAY.model_copy(update={"turnaround_ms": 50.0}), dtsu666(32))
    assert slow.cycle_s > 15 and slow.verdict == "refuse"
    assert "longer than the shortest interval_s 15 s" in slow.reason and "Raise interval_s to at least 23 s" in slow.reason
    few = budget("rtu:/dev/ttyUSB0", GATEWAY, dtsu666(8))
    assert few.verdict == "ok"
    # fits, but one meter not answering costs 5 timeouts of 3 s
    fragile = budget("rtu:/dev/ttyUSB0", GATEWAY, dtsu666(8, timeout_s=3.0))
    assert fragile.verdict == "warn" and "a meter that stops answering" in fragile.reason


def test_meters_group_by_line_and_tcp_meters_have_no_budget():
    site = make_site([
        {"id": f"g{i}", "profile": "chint-dtsu666", "org": "330000", "unit_id": i + 1,
         "transport": {"kind": "rtu_over_tcp", "host": "10.0.3.20", "port": 502, "parity": "E"}} for i in range(3)]
        + [{"id": "s1", "profile": "eastron-sdm120", "org": "330000", "transport": {"kind": "rtu", "serial_port": "/dev/ttyUSB0"}},
           {"id": "t1", "profile": "chint-dtsu666", "org": "330000", "transport": {"kind": "tcp", "host": "10.0.3.21", "port": 502}}])
    buses = {b.key: b for b in bus_budgets(compile_site(site))}
    assert set(buses) == {"rtu_over_tcp:10.0.3.20:502", "rtu:/dev/ttyUSB0"}
    assert buses["rtu_over_tcp:10.0.3.20:502"].meters == ("g0", "g1", "g2")
    assert buses["rtu_over_tcp:10.0.3.20:502"].requests == 15


def site_file(tmp_path: Path, n: int, interval_s: float, turnaround_ms: float = 20.0) -> Path:
    doc = {"orgs": [{"path": "330000", "name": "Z"}],
           "meters": [{"id": f"m{i:02d}", "profile": "chint-dtsu666", "org": "330000", "unit_id": i + 1,
                       "interval_s": interval_s,
                       "transport": {"kind": "rtu_over_tcp", "host": "10.0.3.20", "port": 502, "baudrate": 9600,
                                     "parity": "E", "turnaround_ms": turnaround_ms}} for i in range(n)]}
    p = tmp_path / "site.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


def edge_app():
    # imported when used: importing the CLI mounts its sub-apps, which wires the energy CLI's query layer
    from edge.app.cli import app
    return app


def test_edge_check_prints_the_bus_table_and_warns(tmp_path):
    app = edge_app()
    res = CliRunner().invoke(app, ["check", "-c", str(site_file(tmp_path, 32, 15))])
    assert res.exit_code == 0, res.output
    assert ("rtu_over_tcp:10.0.3.20:502: 9600 baud, 11 bits/char, 32 meters, 160 requests/cycle, 10.68 s per cycle, "
            "shortest interval 15 s (71 %): warn") in res.output
    from edge.app.site import compile_site as compile_whole_site
    (b,) = compile_whole_site(site_file(tmp_path, 32, 15)).buses
    assert b.reason.startswith("one cycle takes 10.68 s of the shortest interval_s 15 s (71 %): no room")


def test_edge_check_refuses_a_bus_that_cannot_keep_up(tmp_path):
    app = edge_app()
    res = CliRunner().invoke(app, ["check", "-c", str(site_file(tmp_path, 32, 15, turnaround_ms=50))])
    assert res.exit_code == 2
    assert "bus rtu_over_tcp:10.0.3.20:502 (meters m00, m01" in res.output
    assert "field 'meters.interval_s'" in res.output and "every window would overrun" in res.output


def test_bus_cycle_measures_a_window_from_first_start_to_last_end():
    c = BusCycle("bus", (15_000_000_000, 15_000_000_000, 60_000_000_000), wire_s=1.0)
    assert c.due(15_000_000_000) == 2 and c.due(60_000_000_000) == 3
    c.begin(15_000_000_000, 15_000_000_000)
    c.begin(15_000_000_000, 15_001_000_000)
    assert c.end(15_000_000_000, 15_500_000_000) is None
    assert c.end(15_000_000_000, 16_200_000_000) == pytest.approx(1.2)
    assert c.as_dict()["cycle_over_wire"] == pytest.approx(1.2)


async def test_poller_measures_the_cycle_of_a_baud_faithful_line():
    """Four meters behind a simulated gateway at 9600 baud 8E1 with a 20 ms turnaround: the poller's
    measured cycle is the computed wire time, plus little (asyncio, loopback TCP)."""
    async with MeterServer("eastron-sdm120", [1, 2, 3, 4], framer="rtu", baud=9600, bits_per_char=11,
                           response_delay_s=0.020) as srv:
        site = Site.model_validate({
            "orgs": [{"path": "330000", "name": "Z"}],
            "meters": [{"id": f"m{u}", "profile": "eastron-sdm120", "org": "330000", "unit_id": u, "interval_s": 1.0,
                        "timeout_ms": 1000,
                        "transport": {"kind": "rtu_over_tcp", "host": "127.0.0.1", "port": srv.port, "baudrate": 9600,
                                      "parity": "E", "turnaround_ms": 20}} for u in (1, 2, 3, 4)]})
        col = ModbusCollector(site, ListIngest())
        task = asyncio.create_task(col.run())
        t0 = time.monotonic()
        bus = col.buses[f"rtu_over_tcp:127.0.0.1:{srv.port}"]
        while bus.cycles < 3 and time.monotonic() - t0 < 10:
            await asyncio.sleep(0.1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    # 4 x (3 reads: 32, 10, 2 registers): 4 x (3 x 13 + 2 x 44) characters + 12 x (2 silences + 20 ms)
    assert bus.wire_s == pytest.approx(4 * (127 * 11 / 9600 + 3 * (7 * 11 / 9600 + 0.020)))
    assert bus.cycles >= 3
    assert bus.wire_s * 0.98 <= bus.mean_s <= bus.wire_s * 1.3, bus.as_dict()
    h = col.health()["m1"]
    assert h.bus == bus.key and h.bus_cycle_s is not None and h.bus_wire_s == pytest.approx(bus.wire_s)
    assert col.stats()["buses"][bus.key]["cycles"] == bus.cycles


def test_measured_cycles_reach_the_prometheus_text():
    from edge.metrics import Metrics
    m = Metrics()
    c = BusCycle("rtu_over_tcp:10.0.3.20:502", (1_000_000_000,), wire_s=0.8)
    m.gauge_source("edge_modbus_bus_cycle_seconds", "measured cycle", ("bus",), lambda: [((c.key,), c.mean_s)])
    m.gauge_source("edge_modbus_bus_wire_seconds", "wire time", ("bus",), lambda: [((c.key,), c.wire_s)])
    assert "edge_modbus_bus_cycle_seconds{" not in m.text()          # no cycle measured yet: no sample
    c.begin(1_000_000_000, 1_000_000_000)
    c.end(1_000_000_000, 1_900_000_000)
    text = m.text()
    assert 'edge_modbus_bus_cycle_seconds{bus="rtu_over_tcp:10.0.3.20:502"} 0.9' in text
    assert 'edge_modbus_bus_wire_seconds{bus="rtu_over_tcp:10.0.3.20:502"} 0.8' in text
