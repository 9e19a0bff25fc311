"""A full outbox holds positions back instead of dropping them (issue 19): against a real Mosquitto,
the service's own ingest and outbox, and the embedded store as the local sink. While the store is
away and the outbox full, the positions the outbox refuses are not acknowledged; the broker keeps
them and redelivers them once the outbox has room: every position sent is stored, none dropped."""

from __future__ import annotations

import asyncio
import time

import pytest

from collector.gps.subscriber import GpsCollector
from edge.app.service import ServiceIngest
from edge.clock import FakeClock
from edge.delivery import Deliverer
from edge.live import LiveState
from edge.outbox import Outbox
from edge.query import StoreQuery
from edge.sinks import EmbeddedSink
from edge.store import EmbeddedStore
from simulators.vehicles import Faults, VehicleFleet
from tests.gps.test_subscriber import fleet_vehicles, mqtt_cfg, sent_keys
from tests.support.gps import start, stop


async def stored_positions(store: EmbeddedStore) -> set[tuple[str, int]]:
    series = await StoreQuery(store).raw("position", ["lat"], 0, 2**62)
    return {(s.tags["vehicle"], int(t)) for s in series for t in s.times_ns}


async def wait_until(cond, what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@pytest.mark.mosquitto
async def test_positions_are_not_acknowledged_while_the_outbox_is_full_and_all_arrive_after(mosquitto, tmp_path):
    fleet = VehicleFleet(20, mosquitto.url, clock=FakeClock(time.time_ns()), faults=Faults(gap_rate=0))
    sample = VehicleFleet(1, mosquitto.url, clock=FakeClock(time.time_ns()))  # not the fleet: a tick is a send
    one = len(sample.tick_messages(time.time_ns(), 1.0)[0][1]) + 60  # about one stored position
    outbox = Outbox(tmp_path / "outbox.sqlite", max_bytes=40 * one)  # room for about 40 of the 300 positions
    ingest = ServiceIngest(outbox, LiveState())
    col = GpsCollector(mqtt_cfg(mosquitto.url), fleet_vehicles(fleet), ingest)
    store = EmbeddedStore(tmp_path / "store.sqlite")
    sink = EmbeddedSink(store)
    task = await start(col)
    try:
        st = await fleet.run(ticks=15)  # 300 positions, acknowledged by the broker; the store is "down"
        await wait_until(lambda: col.stats()["outbox_full"] >= 1 and col.stats()["paused"], "intake paused")
        assert outbox.holding and outbox.depth() < 100  # the bound, passed by one batch at most
        assert outbox.counters().get("held_back", 0) > 0 and outbox.dropped == 0  # held back, nothing dropped
        # the store comes back: the local sink drains the outbox, which takes positions again
        deliverer = Deliverer(outbox, sink, flush_interval_s=0.05)
        dtask = asyncio.create_task(deliverer.run())
        want = set(sent_keys(st))
        got: set = set()

        async def all_stored() -> bool:
            nonlocal got
            got = await stored_positions(store)
            return got >= want

        deadline = time.monotonic() + 60
        while not await all_stored():
            assert time.monotonic() < deadline, f"{len(want - got)} of {len(want)} positions never arrived"
            await asyncio.sleep(0.2)
        deliverer.stop()
        await dtask
        assert got == want  # every position the broker acknowledged to the fleet, none dropped
        assert outbox.dropped == 0 and not col.stats()["paused"]
    finally:
        await stop(task)
        await sink.aclose()
        outbox.close()
