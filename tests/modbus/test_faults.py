"""Faults injected on the server side: the faulty device loses data, the others keep arriving on time."""

import asyncio
import logging

import pytest

from collector.modbus.service import ModbusCollector
from edge.clock import FakeClock
from simulators.meters import MeterServer

from .conftest import make_site, meter

INTERVAL = 0.25


async def _run_for(col: ModbusCollector, seconds: float) -> None:
    task = asyncio.create_task(col.run())
    await asyncio.sleep(seconds)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def _wait(cond, timeout=5.0):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        assert loop.time() < end, "condition not reached"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("fault", ["timeout", "drop", "garble", "exception"])
async def test_fault_on_one_device_others_keep_arriving_on_time(fault, ingest, caplog):
    caplog.set_level(logging.INFO, logger="collector.modbus")
    interval = 0.4
    servers = [MeterServer("eastron-sdm630", [1], seed=i) for i in range(3)]
    for s in servers:
        await s.start()
    try:
        servers[1].faults.set(1, fault)
        site = make_site([meter(f"m{i}", "eastron-sdm630", s.port, interval_s=interval, timeout_ms=200)
                          for i, s in enumerate(servers)])
        col = ModbusCollector(site, ingest)
        task = asyncio.create_task(col.run())
        await _wait(lambda: len(ingest.of("m0")) >= 3 and len(ingest.of("m2")) >= 3 and col.health()["m1"].up is False)
        servers[1].faults.clear()
        await _wait(lambda: col.health()["m1"].up is True and len(ingest.of("m1")) >= 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        for s in servers:
            await s.stop()
    for good in ("m0", "m2"):
        pts = ingest.of(good)
        for p in pts:  # on time: read within 200 ms of its wall-clock slot, while m1 times out for 200 ms
            lag = (p.time_ns / 1e9) % interval
            assert lag < 0.2, (good, lag)
        assert len({int(p.time_ns / 1e9 // interval) for p in pts}) == len(pts)  # one per slot
        assert col.health()[good].reads_failed == 0
    h = col.health()["m1"]
    kind = {"timeout": "timeout", "garble": "timeout", "drop": None, "exception": "exception"}[fault]
    assert sum(h.errors.values()) >= 1 and (kind is None or h.errors.get(kind, 0) >= 1 or fault == "garble")
    downs = [r for r in caplog.records if "meter=m1 down" in r.getMessage()]
    ups = [r for r in caplog.records if "meter=m1 up" in r.getMessage()]
    assert len(downs) == 1 and len(ups) == 1


async def test_failed_read_loses_only_its_own_registers(ingest):
    async with MeterServer("eastron-sdm630", [1]) as srv:
        srv.faults.set(1, "exception", code=2, address=0x0046)  # the read holding frequency/energy fails
        site = make_site([meter("m", "eastron-sdm630", srv.port)])
        col = ModbusCollector(site, ingest)
        try:
            p = await col.poll_once(col.plans[0])
        finally:
            for c in col.connections.values():
                c.close()
    # SDM630 plan: 0x00+18, 0x1E+6, 0x34+24 (power total .. export energy), 0x156+2
    assert {"voltage_l1_v", "power_factor_l1", "active_energy_total_kwh"} <= set(p.fields)
    assert not {"active_power_total_kw", "frequency_hz", "active_energy_import_kwh"} & set(p.fields)
    h = col.health()["m"]
    assert h.up is True and h.errors == {"exception": 1} and h.reads_ok == 3


async def test_implausible_value_is_a_quality_flag_not_a_number(ingest):
    async with MeterServer("eastron-sdm630", [1]) as srv:
        srv.set_values(1, {"frequency_hz": 99.0, "voltage_l1_v": -5.0})
        site = make_site([meter("m", "eastron-sdm630", srv.port)])
        col = ModbusCollector(site, ingest)
        try:
            p = await col.poll_once(col.plans[0])
        finally:
            for c in col.connections.values():
                c.close()
    assert "frequency_hz" not in p.fields and "voltage_l1_v" not in p.fields
    assert p.fields["quality"] == "implausible:voltage_l1_v,frequency_hz"
    assert ingest.counters[("modbus_implausible", (("meter", "m"),))] == 2


async def test_meters_sharing_a_gateway_share_one_connection(ingest):
    async with MeterServer("carlo-gavazzi-em340", [1, 2, 3], framer="rtu") as srv:
        site = make_site([meter(f"m{u}", "carlo-gavazzi-em340", srv.port, unit=u, kind="rtu_over_tcp",
                                interval_s=INTERVAL) for u in (1, 2, 3)])
        col = ModbusCollector(site, ingest)
        assert len(col.connections) == 1
        await _run_for(col, 0.6)
        served = {u: srv.served(u) for u in (1, 2, 3)}
    assert {p.tags["meter"] for p in ingest.points} == {"m1", "m2", "m3"}
    assert col.connections[next(iter(col.connections))].connects == 1
    # different units serve different loads
    assert len({round(served[u]["active_power_total_kw"], 6) for u in (1, 2, 3)}) == 3


async def test_polls_aligned_to_wall_clock_multiples_with_fake_clock(ingest):
    clock = FakeClock(start_ns=1_700_000_003_300_000_000)  # not on a 15 s boundary
    async with MeterServer("tuf2000m-water", [1], clock=clock) as srv:
        site = make_site([meter("w", "tuf2000m-water", srv.port, carrier="water", interval_s=15)])
        col = ModbusCollector(site, ingest, clock=clock)
        task = asyncio.create_task(col.run())
        await _wait(lambda: len(ingest.points) >= 4)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    ts = [p.time_ns for p in ingest.points]
    # the fake clock rounds float sleeps to the nanosecond: allow 1 µs
    assert all(min(t % 15_000_000_000, 15_000_000_000 - t % 15_000_000_000) < 1000 for t in ts)
    assert all(abs(b - a - 15_000_000_000) < 1000 for a, b in zip(ts, ts[1:]))
    vols = [p.fields["water_volume_m3"] for p in ingest.points]
    assert vols == sorted(vols)


async def test_unreachable_device_backs_off_and_counts_connection_errors(ingest):
    srv = MeterServer("eastron-sdm120", [1])
    await srv.start()
    port = srv.port
    await srv.stop()  # nothing listens there now
    site = make_site([meter("gone", "eastron-sdm120", port, interval_s=0.1, timeout_ms=100)])
    col = ModbusCollector(site, ingest)
    await _run_for(col, 0.8)
    h = col.health()["gone"]
    assert h.up is False and set(h.errors) == {"connection"}
    conn = next(iter(col.connections.values()))
    assert conn.connects == 0 and conn._backoff >= 0.5


async def test_points_reach_the_real_outbox(outbox_ingest):
    async with MeterServer("fx-gas-corrector", [1]) as srv:
        site = make_site([meter("g", "fx-gas-corrector", srv.port, carrier="gas", interval_s=INTERVAL)])
        col = ModbusCollector(site, outbox_ingest)
        await _run_for(col, 0.6)
    assert outbox_ingest.outbox.depth() >= 1
    b = outbox_ingest.outbox.batch()
    assert b.lines[0].startswith("meter,building=b1,carrier=gas,meter=g,org=330000/330100/330106/inst-042,profile=fx-gas-corrector ")
    assert col.stats()["points_submitted"] == outbox_ingest.outbox.depth()


async def test_meter_comes_back_after_its_server_restarts(ingest, caplog):
    caplog.set_level(logging.INFO, logger="collector.modbus")
    srv = MeterServer("acrel-adw300", [1])
    await srv.start()
    port = srv.port
    site = make_site([meter("r", "acrel-adw300", port, interval_s=0.1, timeout_ms=200)])
    col = ModbusCollector(site, ingest)
    task = asyncio.create_task(col.run())
    try:
        await _wait(lambda: len(ingest.points) >= 2)
        await srv.stop()
        await _wait(lambda: col.health()["r"].up is False)
        n = len(ingest.points)
        srv = MeterServer("acrel-adw300", [1], port=port)
        await srv.start()
        await _wait(lambda: col.health()["r"].up is True and len(ingest.points) > n)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await srv.stop()
    msgs = [r.getMessage() for r in caplog.records]
    assert sum("meter=r down" in m for m in msgs) == 1 and sum("meter=r up" in m for m in msgs) == 1
    assert sum(f"connection=tcp:127.0.0.1:{port} down" in m for m in msgs) == 1
    assert col.connections[f"tcp:127.0.0.1:{port}"].connects == 2


async def test_a_failing_outbox_does_not_stop_polling(ingest):
    from edge.errors import OutboxError

    class Broken(type(ingest)):
        async def submit(self, points):
            raise OutboxError("disk full")

    broken = Broken()
    async with MeterServer("eastron-sdm120", [1]) as srv:
        site = make_site([meter("m", "eastron-sdm120", srv.port, interval_s=0.1)])
        col = ModbusCollector(site, broken)
        task = asyncio.create_task(col.run())
        await _wait(lambda: col.stats()["submit_errors"] >= 2 and col.stats()["polls"] >= 3)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert col.health()["m"].up is True and col.stats()["points_submitted"] == 0


async def test_a_poll_slower_than_its_interval_never_polls_a_window_twice(ingest):
    async with MeterServer("tuf2000m-water", [1], response_delay_s=0.1) as srv:  # 2 reads: 0.2 s per poll
        site = make_site([meter("slow", "tuf2000m-water", srv.port, carrier="water", interval_s=0.15)])
        col = ModbusCollector(site, ingest)
        task = asyncio.create_task(col.run())
        await _wait(lambda: len(ingest.points) >= 4)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    windows = [p.time_ns // 150_000_000 for p in ingest.points]
    assert len(set(windows)) == len(windows) and col.stats()["overruns"] >= 2
    gaps = [(b.time_ns - a.time_ns) / 1e9 for a, b in zip(ingest.points, ingest.points[1:])]
    assert all(g < 0.35 for g in gaps)  # the next poll starts at once, it does not wait a whole window
