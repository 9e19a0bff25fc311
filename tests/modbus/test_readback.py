"""For every shipped profile: a simulator serves known values, the collector reads back exactly those."""

import pytest

from collector.modbus.profiles import SHIPPED_DIR, load_profiles
from collector.modbus.service import ModbusCollector
from edge.clock import FakeClock
from simulators.meters import MeterServer

from .conftest import make_site, meter

PROFILES = sorted(p.stem for p in SHIPPED_DIR.glob("*.yaml"))
PT, CT = 2.0, 40.0


@pytest.mark.parametrize("framer, kind", [("socket", "tcp"), ("rtu", "rtu_over_tcp")])
@pytest.mark.parametrize("profile_id", PROFILES)
async def test_readback_every_profile(profile_id, framer, kind, ingest):
    prof = load_profiles()[profile_id]
    clock = FakeClock()
    async with MeterServer(profile_id, [7], framer=framer, clock=clock, seed=3, ct_ratio=CT, pt_ratio=PT) as srv:
        site = make_site([meter("m1", profile_id, srv.port, unit=7, kind=kind, carrier=prof.carrier,
                                pt_ratio=PT, ct_ratio=CT)])
        col = ModbusCollector(site, ingest, clock=clock)
        try:
            point = await col.poll_once(col.plans[0])
        finally:
            for c in col.connections.values():
                c.close()
        served = srv.served(7)
    assert point is not None and "quality" not in point.fields
    factor = {"none": 1.0, "pt": PT, "ct": CT, "pt*ct": PT * CT}
    expected = {r.name: served[r.name] * factor[r.ratio] if r.ratio != "none" else served[r.name]
                for r in prof.registers}
    assert dict(point.fields) == expected  # raw x scale + offset, x ratio: the same operations both sides
    assert point.tags == {"meter": "m1", "org": "330000/330100/330106/inst-042", "building": "b1",
                          "carrier": prof.carrier, "profile": profile_id}
    assert point.time_ns == clock.now_ns()


async def test_dtsu666_reference_values_in_engineering_units(ingest):
    """The reference test set: Ua 230 V (raw 2300.0), Ia 12.345 A (raw 12345.0), Pt 8.5 kW (raw 85000.0)."""
    async with MeterServer("chint-dtsu666", [1]) as srv:
        srv.set_values(1, {"voltage_l1_v": 230.0, "current_l1_a": 12.345, "active_power_total_kw": 8.5,
                           "power_factor_total": 0.95, "frequency_hz": 50.0, "voltage_l1_l2_v": 398.0})
        words = [srv.meters[1].image[3][a] for a in (0x2006, 0x2007)]
        assert words == [0x450F, 0xC000]  # 2300.0 as float32 ABCD: the raw unit is 0.1 V
        site = make_site([meter("m1", "chint-dtsu666", srv.port, ct_ratio=1.0, pt_ratio=1.0)])
        col = ModbusCollector(site, ingest)
        try:
            p = await col.poll_once(col.plans[0])
        finally:
            for c in col.connections.values():
                c.close()
    f = p.fields
    assert f["voltage_l1_v"] == pytest.approx(230.0)
    assert f["voltage_l1_l2_v"] == pytest.approx(398.0)
    assert f["current_l1_a"] == pytest.approx(12.345)
    assert f["active_power_total_kw"] == pytest.approx(8.5)
    assert f["power_factor_total"] == pytest.approx(0.95)
    assert f["frequency_hz"] == pytest.approx(50.0)
