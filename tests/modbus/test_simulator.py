"""The simulators' load model and data faults (pure parts tested directly)."""

import datetime as dt

import numpy as np
import pytest

from edge.clock import FakeClock
from simulators.load import OfficeLoad, conditions, is_workday, phase_weights, school_shape
from simulators.meters import MeterServer, SimMeter, crc16, read_profile


def _ns(y, mo, d, h, mi=0):  # Asia/Shanghai local time -> ns
    return int((dt.datetime(y, mo, d, h, mi, tzinfo=dt.timezone(dt.timedelta(hours=8)))).timestamp() * 1e9)


def test_shape_from_real_data():
    s = school_shape()
    assert s.workday.argmax() in range(10, 15)               # the school peaks around midday
    assert 0.05 < s.base < 0.4                              # night base load
    assert s.offday.max() < 0.5 and s.cooling_per_c > 0     # weekends low; load grows with heat


def test_office_day_night_lunch_weekend_holiday():
    load = OfficeLoad(peak_kw=50, seed=1)
    wed = [load.power_kw(_ns(2026, 3, 11, h)) for h in range(24)]
    assert max(wed[9:17]) > 2.5 * min(wed[0:5])              # working hours vs night base
    assert load.power_kw(_ns(2026, 3, 11, 12, 30)) < load.power_kw(_ns(2026, 3, 11, 11, 0))  # lunch dip
    assert load.power_kw(_ns(2026, 3, 14, 11)) < 0.5 * wed[11]   # Saturday
    assert not is_workday(dt.date(2026, 10, 1))               # National Day
    assert load.power_kw(_ns(2026, 10, 1, 11)) < 0.5 * load.power_kw(_ns(2026, 9, 30, 11))
    assert conditions(_ns(2030, 1, 7, 11)).workday            # beyond the calendar: plain weekdays


def test_phases_differ_and_counter_follows_power():
    assert len(set(phase_weights(4))) == 3
    _, regs = read_profile("chint-dtsu666")
    m = SimMeter(regs, "electricity", 5, None)
    t0 = _ns(2026, 3, 11, 9)
    e0 = None
    powers = []
    for k in range(0, 3601, 10):
        m.update(t0 + k * 10**10 // 10)
        powers.append(m.values["active_power_total_kw"])
        if e0 is None:
            e0 = m.values["active_energy_import_kwh"]
    e1 = m.values["active_energy_import_kwh"]
    assert e1 - e0 == pytest.approx(np.trapezoid(powers, dx=10 / 3600), rel=1e-6)
    v = m.values
    assert len({round(v[f"current_l{i}_a"], 3) for i in (1, 2, 3)}) == 3


async def test_counter_reset_and_stuck_value():
    clock = FakeClock(start_ns=_ns(2026, 3, 11, 10))
    srv = MeterServer("eastron-sdm630", [1], clock=clock)
    before = srv.served(1)["active_energy_import_kwh"]
    srv.faults.counter_reset(1)
    assert srv.served(1)["active_energy_import_kwh"] < before
    srv.faults.stuck(1)
    frozen = srv.served(1)
    clock.advance(120)
    assert srv.served(1) == frozen
    srv.faults.stuck(1, False)
    clock.advance(120)
    assert srv.served(1)["active_power_total_kw"] != frozen["active_power_total_kw"]


def test_crc16_reference_vector():
    # Modbus RTU: read holding 0x0000 x10 from unit 1 is "01 03 00 00 00 0A C5 CD"
    assert crc16(bytes.fromhex("01030000000A")).to_bytes(2, "little") == bytes.fromhex("C5CD")


def test_simulators_do_not_import_the_collector():
    """A simulator is an independent peer: it must not share decoding code with what it tests."""
    import ast
    from pathlib import Path

    for f in (Path(__file__).resolve().parents[2] / "simulators").glob("*.py"):
        tree = ast.parse(f.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.split(".")[0] == "collector" for n in names), f"{f.name} imports {names}"
