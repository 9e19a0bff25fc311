"""Counter events as real buildings have them, injected by the meter simulator, read by the real
collector over a real socket, and counted by the energy pass: a register rolling over at 2^32 raw,
a meter rolling over at its own display maximum, a communication glitch, a small backwards step, a
meter replaced, an implausible jump. None may become a negative or a giant consumption."""

import datetime as dt

import numpy as np
import pytest

from analytics.energy.jobs import ArraySource, compute_energy_range, meters_from_site
from analytics.periods import LocalCalendar
from collector.modbus.profiles import counter_defaults, load_profiles
from collector.modbus.service import ModbusCollector
from edge.app.site import counter_defaults_for
from edge.clock import FakeClock
from edge.config import Site
from simulators.meters import MeterServer

CAL = LocalCalendar()
ORG = "330000/330100/330106/inst-042"
DAY = dt.date(2025, 10, 13)
Q_S = 900


class Points:
    def __init__(self) -> None:
        self.points = []

    async def submit(self, points) -> None:
        self.points.extend(points)

    async def reject(self, *a, **k) -> None:
        raise AssertionError(a)

    def count(self, *a, **k) -> None:
        pass


def make_site(port: int, profile: str, **meter) -> Site:
    return Site.model_validate({
        "orgs": [{"path": "330000", "name": "Z"}, {"path": ORG, "name": "I"}],
        "buildings": [{"id": "hq", "org": ORG, "floor_area_m2": 1000, "occupants": 10}],
        "meters": [{"id": "m1", "profile": profile, "building": "hq", "interval_s": Q_S,
                    "transport": {"kind": "tcp", "host": "127.0.0.1", "port": port}, **meter}]})


async def run_day(srv: MeterServer, site: Site, clock: FakeClock, events: dict[int, callable]):
    """Poll every 15 minutes from 23:45 the day before to 00:15 after; ``events[k]`` runs just after
    poll k. Returns the readings and the energy the simulated meter really measured per interval
    (its integrated load, unaffected by what is injected)."""
    col = ModbusCollector(site, Points(), clock=clock)
    got = []
    truth = []
    m = srv.meters[1]
    key = m.counter_key()[0]
    try:
        for k in range(96 + 3):
            pt = await col.poll_once(col.plans[0])
            if pt is not None:
                got.append(pt)
            if k in events:
                events[k]()
            after = m.counters[key]
            clock.advance(Q_S)
            srv.refresh(force=True)
            d = m.counters[key] - after
            truth.append(d + m.counter_max if d < 0 and m.counter_max else d)
    finally:
        for c in col.connections.values():
            c.close()
    field = m.counter_key()[1]
    pts = [p for p in got if field in p.fields]
    t = np.array([p.time_ns for p in pts], dtype=np.int64)
    v = np.array([p.fields[field] for p in pts])
    return t, v, np.array(truth[:-1])


async def test_every_counter_event_of_a_real_building_is_handled_by_its_rule():
    clock = FakeClock(CAL.midnight_ns(DAY) - Q_S * 10**9)
    # Acrel ADL400: import energy is a uint32 of 0.1 kWh, so the register rolls over at 429,496,729.6 kWh
    async with MeterServer("acrel-adl400", [1], clock=clock, seed=5) as srv:
        site = make_site(srv.port, "acrel-adl400", rated_kw=100.0)
        roll = counter_defaults_for(site)["m1"]["rollover"]
        assert roll == pytest.approx(2**32 * 0.1)
        f = srv.faults
        srv.faults.counter_set(1, roll - 30.0)     # about three quarters before the register rolls over
        t, v, truth = await run_day(srv, site, clock, {
            30: lambda: f.counter_glitch(1, 4294967295 * 0.1),   # all ones decoded: the register's maximum
            8: lambda: f.counter_backstep(1, 0.1),              # a stale re-read, one 0.1 kWh count lower
            60: lambda: f.counter_replace(1, 0.0),
            80: lambda: f.counter_set(1, srv.meters[1].counters["energy"] + 5000.0),
        })
    assert np.nanmax(v) > roll - 30 and v[-1] < 1e6                 # it did roll over
    rep = compute_energy_range(ArraySource({("m1", "active_energy_import_kwh"): (t, v)}), meters_from_site(
        site, counter_defaults_for(site)), DAY, DAY)
    kinds = [e.kind for _, e in rep.events]
    assert sorted(kinds) == ["backstep", "glitch", "jump", "replaced", "wrap"], kinds
    day = next(tb for tb in rep.tables if tb.scope == "meter" and tb.period.value == "day")
    got = day.value("m1", "consumption_kwh")
    # what the meter measured, less the quarter of the jump (excluded: it cannot be told from the
    # garbage), to the register's 0.1 kWh: the glitch, backstep, replacement and rollover lose nothing
    want = truth[1:97].sum() - truth[80]
    assert got == pytest.approx(want, abs=0.2)
    peak = day.value("m1", "peak_kw")
    assert 0 < peak <= 100.0           # no quarter above what the 100 kW board can draw, none negative


async def test_a_meter_rolling_over_at_its_own_display_maximum():
    """A float register shows up to 99999999.9 kWh, then 0.0: the profile or the meter config says so."""
    clock = FakeClock(CAL.midnight_ns(DAY) - Q_S * 10**9)
    async with MeterServer("chint-dtsu666", [1], clock=clock, seed=2, counter_max=1.0e8) as srv:
        site = make_site(srv.port, "chint-dtsu666", counter_rollover=1.0e8)
        srv.faults.counter_set(1, 1.0e8 - 40.0)
        t, v, truth = await run_day(srv, site, clock, {})
    assert v.max() > 1.0e8 - 40 and v[-1] < 1000
    rep = compute_energy_range(ArraySource({("m1", "active_energy_import_kwh"): (t, v)}),
                               meters_from_site(site, counter_defaults_for(site)), DAY, DAY)
    assert [e.kind for _, e in rep.events] == ["wrap"]
    day = next(tb for tb in rep.tables if tb.scope == "meter" and tb.period.value == "day")
    # float32 carries ~7 digits: at 1e8 a reading is good to ±4 kWh, so the day's total is too
    assert day.value("m1", "consumption_kwh") == pytest.approx(truth[1:97].sum(), abs=16)


def test_profile_counter_defaults():
    p = load_profiles()
    adl = counter_defaults(p["acrel-adl400"], "active_energy_import_kwh", "active_power_total_kw")
    assert adl == {"rollover": pytest.approx(429496729.6), "rated_kw": 300000.0,
                   "backstep_tolerance": pytest.approx(0.1001)}
    # float counter: no rollover known; power range x PT x CT
    assert counter_defaults(p["chint-dtsu666"], "active_energy_import_kwh", "active_power_total_kw",
                            pt=1.0, ct=40.0) == {"rated_kw": 4000.0, "backstep_relative": 2.0 ** -22}
    assert counter_defaults(p["tuf2000m-water"], "water_volume_m3", "flow_m3_h") == {
        "rated_kw": 10000.0, "backstep_relative": 2.0 ** -22}


def test_event_log_counts_each_event_once_across_recomputations():
    """The service recomputes today on every pass: the same wrap found again is not counted again."""
    from analytics.energy.eventlog import MeterEventLog
    t = CAL.midnight_ns(DAY) + np.arange(-1, 98, dtype=np.int64) * Q_S * 10**9
    v = 1000.0 + np.arange(t.size) * 2.5
    v[50:] -= v[49]                                                  # replaced: restarts near zero
    site = make_site(5020, "acrel-adl400", rated_kw=100.0)
    log = MeterEventLog()
    for _ in range(3):
        rep = compute_energy_range(ArraySource({("m1", "active_energy_import_kwh"): (t, v)}),
                                   meters_from_site(site), DAY, DAY)
        log.add(rep.events)
    assert log.take_new() == {"replaced": 1}
    h = log.for_meter("m1")
    assert h["counter_events"] == {"replaced": 1}
    assert h["last_counter_events"][0]["kind"] == "replaced" and "near zero" in h["last_counter_events"][0]["rule"]
