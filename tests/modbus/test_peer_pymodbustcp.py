"""The collector against a Modbus server that is not pymodbus and not our simulator: pyModbusTCP,
serving a DTSU666 map encoded here by hand from the vendor's raw units."""

import asyncio
import socket
import struct

import pytest
from pyModbusTCP.server import DataBank, ModbusServer

from collector.modbus.service import ModbusCollector

from .conftest import make_site, meter


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _f32(x: float) -> list[int]:
    return list(struct.unpack(">2H", struct.pack(">f", x)))


@pytest.fixture
def dtsu666_peer():
    bank = DataBank()
    raw = {  # DTSU666 raw units: 0.1 V, 0.001 A, 0.1 W, 0.001 PF, 0.01 Hz; energy kWh
        0x2000: 3984.0, 0x2006: 2301.0, 0x2008: 2298.0, 0x200A: 2310.0,
        0x200C: 12345.0, 0x200E: 10000.0, 0x2010: 8000.0,
        0x2012: 85000.0, 0x2014: 30000.0, 0x2016: 30000.0, 0x2018: 25000.0,
        0x202A: 950.0, 0x2044: 5001.0, 0x101E: 123456.5, 0x1028: 7.25,
    }
    for addr, v in raw.items():
        bank.set_holding_registers(addr, _f32(v))
    bank.set_holding_registers(0x0006, [40, 1])
    port = _free_port()
    srv = ModbusServer("127.0.0.1", port, no_block=True, data_bank=bank)
    srv.start()
    yield port
    srv.stop()


async def test_dtsu666_from_pymodbustcp_server(dtsu666_peer, ingest):
    regs = ["voltage_l1_l2_v", "voltage_l1_v", "voltage_l2_v", "voltage_l3_v", "current_l1_a", "current_l2_a",
            "current_l3_a", "active_power_total_kw", "active_power_l1_kw", "power_factor_total", "frequency_hz",
            "active_energy_import_kwh", "active_energy_export_kwh", "ct_ratio_register"]
    site = make_site([meter("peer", "chint-dtsu666", dtsu666_peer, ct_ratio=40.0, registers=regs)])
    col = ModbusCollector(site, ingest)
    try:
        p = await asyncio.wait_for(col.poll_once(col.plans[0]), 10)
    finally:
        for c in col.connections.values():
            c.close()
    f = p.fields
    assert f["voltage_l1_l2_v"] == pytest.approx(398.4)
    assert f["voltage_l1_v"] == pytest.approx(230.1)
    assert f["voltage_l3_v"] == pytest.approx(231.0)
    assert f["current_l1_a"] == pytest.approx(12.345 * 40)        # secondary 12.345 A behind a 200/5 CT
    assert f["active_power_total_kw"] == pytest.approx(8.5 * 40)
    assert f["active_power_l1_kw"] == pytest.approx(3.0 * 40)
    assert f["power_factor_total"] == pytest.approx(0.95)
    assert f["frequency_hz"] == pytest.approx(50.01)
    assert f["active_energy_import_kwh"] == pytest.approx(123456.5)  # primary side already: no ratio
    assert f["active_energy_export_kwh"] == pytest.approx(7.25)
    assert f["ct_ratio_register"] == 40.0
