"""The simulated history (simulators/history.py): counters that are the load model's integral, carried on
by the live simulator; outings on the Chinese working calendar that end at the yard."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from analytics.energy.baseline import parse_temperature_csv
from edge.app.backfill import write_weather
from edge.clock import FakeClock
from simulators.history import (
    EventLoad,
    FleetHistoryParams,
    LoadEvent,
    MeterModel,
    VehicleModel,
    counter_history,
    day_kind,
    fleet_history,
    integral,
)
from simulators.load import OfficeLoad, SumLoad, conditions, conditions_many, school_shape
from simulators.meters import MeterServer
from simulators.roads import Grid

NS = 1_000_000_000
DAY = 86_400 * NS
T0 = 1_777_737_600 * NS  # 2026-05-03 00:00 +08:00, in the Labour Day holiday


def test_vectorised_model_is_the_live_models_bit_for_bit():
    rng = np.random.default_rng(3)
    t = (T0 + rng.integers(-300 * DAY, 300 * DAY, 2000)).astype(np.int64)
    c = conditions_many(t)
    load = OfficeLoad(peak_kw=14.0, seed=5)
    kw = load.power_kw_many(t, c)
    for i in range(len(t)):
        s = conditions(int(t[i]))
        assert (s.load_frac, s.occupancy, s.temp_c, s.workday) == (c.load_frac[i], c.occupancy[i], c.temp_c[i], c.workday[i])
        assert load.power_kw(int(t[i])) == kw[i]


@pytest.mark.parametrize("carrier", ["electricity", "water", "gas"])
def test_counters_rise_by_the_models_integral(carrier):
    parts = [OfficeLoad(6.0, seed=1), OfficeLoad(14.0, seed=2)]
    load = SumLoad(parts, unmetered=OfficeLoad(2.0, seed=3)) if carrier == "electricity" else None
    m = MeterModel("m", carrier, load, seed=4001, start=5000.0)
    start = T0 - 2 * DAY + 7 * 60 * NS           # not on a quarter: the first reading is at the next one
    h = counter_history([m], start, T0 + DAY + 3 * 3600 * NS)
    v = h.values[0]
    assert h.times_ns[0] == T0 - 2 * DAY + 900 * NS and np.all(np.diff(h.times_ns) == 900 * NS)
    assert np.all(np.diff(v) > 0) and v[0] == 5000.0     # the counter as it stood at the first reading
    # a day's consumption equals the scalar model integrated every 10 s, within 0.2 %
    a = int(np.searchsorted(h.times_ns, T0 - DAY))
    b = int(np.searchsorted(h.times_ns, T0))
    ref = integral(m, T0 - DAY, T0, every_s=10.0)
    assert v[b] - v[a] == pytest.approx(ref, rel=2e-3)
    # the end value is the counter at end_ns
    tail = integral(m, int(h.times_ns[-1]), h.end_ns, every_s=10.0)
    assert h.end_values[0] - v[-1] == pytest.approx(tail, rel=5e-3, abs=1e-6)


def test_events_show_in_the_circuit_and_its_incomer():
    hvac = OfficeLoad(14.0, seed=2)
    ev = LoadEvent(T0, T0 + DAY, extra_kw=10.0)
    retro = LoadEvent(T0 + DAY, T0 + 3 * DAY, factor=0.5)
    lit = OfficeLoad(6.0, seed=1)
    plain = SumLoad([lit, hvac])
    told = SumLoad([EventLoad(lit, [retro]), EventLoad(hvac, [ev])])
    h = counter_history([MeterModel("a", "electricity", plain), MeterModel("b", "electricity", told)], T0, T0 + 3 * DAY)
    day = [int(np.searchsorted(h.times_ns, T0 + k * DAY)) for k in range(3)] + [len(h.times_ns) - 1]
    use = np.diff(h.values[:, day], axis=1)
    assert use[1, 0] - use[0, 0] == pytest.approx(24 * 10.0 * 1.02, rel=0.01)   # 10 kW all day long, 2 % losses
    lit_day = integral(MeterModel("l", "electricity", lit), T0 + DAY, T0 + 2 * DAY, every_s=60)
    assert use[0, 1] - use[1, 1] == pytest.approx(0.5 * lit_day * 1.02, rel=0.01)


def test_live_simulator_carries_on_from_the_history():
    clock = FakeClock(T0)
    srv = MeterServer("chint-dtsu666", unit_ids=[1], clock=clock, seed=3, load=OfficeLoad(20.0, seed=9),
                      update_period_s=0.0)
    m = MeterModel("m", "electricity", OfficeLoad(20.0, seed=9), start=100.0)
    h = counter_history([m], T0 - DAY, T0)
    srv.continue_counter(1, float(h.end_values[0]), T0)
    assert srv.served(1)["active_energy_import_kwh"] == pytest.approx(h.end_values[0], abs=0.2)
    for _ in range(360):          # an hour of reads every 10 s
        clock.advance(10)
        srv.refresh(force=True)
    grew = srv.served(1)["active_energy_import_kwh"] - h.end_values[0]
    # the simulator integrates its three phases (their ±2 % noise is left out of the history)
    assert grew == pytest.approx(integral(m, T0, T0 + 3600 * NS), rel=0.03)


def test_weather_csv_is_the_load_models_temperature(tmp_path):
    path = tmp_path / "weather.csv"
    write_weather(path, T0, 48)
    t, temp = parse_temperature_csv(path.read_text(encoding="utf-8"))
    assert len(t) == 48 and t[0] == T0
    assert temp == pytest.approx(conditions_many(t, school_shape()).temp_c, abs=0.006)


def test_outings_follow_the_calendar_and_end_at_the_yard():
    yards = [(30.2741, 120.1551), (30.2815, 120.1380), (30.2660, 120.1500)]
    vs = [VehicleModel(f"veh-{i}", y, activity=a, odometer_km=1000.0 * (i + 1))
          for i, (y, a) in enumerate(zip(yards, (0.9, 0.5, 0.1)))]
    start = T0 - 120 * DAY
    end = T0 + 40 * DAY + 11 * 3600 * NS
    f = fleet_history(vs, start, end, seed=3)
    grid = Grid(30.2741, 120.1551, half=25)
    assert f.outings > 100 and len(f) > 10_000
    assert np.all((f.t_ns >= start) & (f.t_ns < end))
    for k, v in enumerate(vs):
        sel = f.vehicle == k
        t, lat, lon = f.t_ns[sel], f.lat[sel], f.lon[sel]
        assert np.all(np.diff(t) > 0)
        hx, hy = grid.to_latlon(*grid.node_xy(*grid.nearest_node(*v.yard)))
        # history starts and ends parked at the yard (the live fleet starts there), ACC off
        for i in (0, -1):
            assert abs(lat[i] - hx) < 1e-4 and abs(lon[i] - hy) < 1e-4 and not f.acc[sel][i]
        odo = f.odometer_km[sel]
        assert np.all(np.diff(odo) >= -1e-9) and odo[-1] == pytest.approx(f.end_odometer_km[k], abs=0.01)
    assert f.speed_kmh.max() <= 90 and FleetHistoryParams().drive_every_s == 30   # urban roads, a fix every 30 s
    # by day kind: outings leave on working days mostly, some on weekends and holidays
    starts = f.t_ns[np.r_[False, f.acc[1:] & ~f.acc[:-1]] & (f.vehicle[np.r_[0, np.arange(len(f) - 1)]] == f.vehicle)]
    kinds = [day_kind(dt.date(1970, 1, 1) + dt.timedelta(days=int((t + 8 * 3600 * NS) // DAY))) for t in starts]
    assert kinds.count("workday") > 10 * max(1, kinds.count("weekend"))
    assert kinds.count("holiday") > 0   # Labour Day 2026 falls in the range
