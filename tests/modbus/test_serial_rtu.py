"""RTU on a serial port: the collector's pyserial/pymodbus path against the simulator on a pty pair."""

import os
import tty

import pytest

from collector.modbus.service import ModbusCollector
from edge.clock import FakeClock
from simulators.meters import MeterServer

from .conftest import make_site


@pytest.fixture
def pty_pair():
    master, slave = os.openpty()
    tty.setraw(slave)
    tty.setraw(master)
    yield master, os.ttyname(slave)
    os.close(master)
    os.close(slave)


async def test_rtu_serial_two_meters_on_one_bus(pty_pair, ingest):
    master, path = pty_pair
    srv = MeterServer("eastron-sdm120", [1, 2], framer="rtu", clock=FakeClock())  # values hold still
    srv.attach_serial_fd(master)
    try:
        site = make_site([{"id": f"s{u}", "profile": "eastron-sdm120", "building": "b1", "unit_id": u,
                           "transport": {"kind": "rtu", "serial_port": path, "baudrate": 9600}} for u in (1, 2)])
        col = ModbusCollector(site, ingest)
        assert len(col.connections) == 1
        conn = next(iter(col.connections.values()))
        assert conn.gap_s == pytest.approx(3.5 * 11 / 9600)
        try:
            p1 = await col.poll_once(col.plans[0])
            p2 = await col.poll_once(col.plans[1])
        finally:
            conn.close()
        assert p1.fields["voltage_l1_v"] == srv.served(1)["voltage_l1_v"]
        assert p2.fields["active_energy_import_kwh"] == srv.served(2)["active_energy_import_kwh"]
    finally:
        await srv.stop()
