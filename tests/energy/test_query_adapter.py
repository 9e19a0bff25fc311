"""The energy job reading counters back through the real query layer on the embedded store."""

import datetime as dt

import numpy as np
import pytest

from analytics.energy.counters import CounterSpec
from analytics.energy.jobs import MeterInfo, compute_energy_from_query
from analytics.periods import LocalCalendar
from edge.point import Point


async def test_job_through_store_query(tmp_path):
    store_mod = pytest.importorskip("edge.store")
    query_mod = pytest.importorskip("edge.query")
    store = store_mod.EmbeddedStore(tmp_path / "s.sqlite")
    cal = LocalCalendar()
    t0 = cal.midnight_ns(dt.date(2025, 10, 11)) - 900 * 10**9
    pts = []
    for k in range(96 + 3):
        tags = {"meter": "m1", "org": "330000/330100", "carrier": "electricity", "profile": "eastron-sdm630"}
        pts.append(Point("meter", tags, {"active_energy_import_kwh": (4290.0 + k * 0.5) % 4300.0, "voltage_l1_v": 230.0},
                         t0 + k * 900 * 10**9))
        tags2 = dict(tags, meter="m2")
        pts.append(Point("meter", tags2, {"active_energy_import_kwh": 10.0 + k * 1.0}, t0 + k * 900 * 10**9))
    store.write_points(pts)
    try:
        q = query_mod.StoreQuery(store)
        meters = [MeterInfo("m1", "330000/330100", spec=CounterSpec(rollover=4300.0)),
                  MeterInfo("m2", "330000/330100")]
        rep = await compute_energy_from_query(q, meters, dt.date(2025, 10, 11), dt.date(2025, 10, 11))
    finally:
        store.close()
    day = next(t for t in rep.tables if t.scope == "meter" and t.period.value == "day")
    # m1: 2 kW with a wrap at 4300; m2: 4 kW
    assert day.fields["consumption_kwh"][:, 0].tolist() == pytest.approx([48.0, 96.0])
    assert [e.kind for _, e in rep.events] == ["wrap"]
    org = next(t for t in rep.tables if t.scope == "org" and t.period.value == "day")
    assert org.value("330000", "consumption_kwh") == pytest.approx(144.0)
    # 2025-10-11 is a 调休 Saturday: working hours count as working
    assert day.fields["off_hours_share"][0, 0] == pytest.approx(60 / 96)
    assert np.isfinite(day.fields["peak_kw"]).all()
