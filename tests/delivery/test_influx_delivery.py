"""Outbox -> InfluxDB 1.6.7 (real influxd): bad points, outages, kill -9, auth, missing database, 413."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Sequence

import pytest

from edge.delivery import Deliverer
from edge.metrics import Metrics
from edge.outbox import Outbox
from edge.point import parse_line
from edge.sinks import InfluxSink, influx_v1
from tests.delivery.conftest import RecordingClock, meter_point
from tests.support.influx import InfluxServer, new_db_name

pytestmark = pytest.mark.influxdb

ROOT = Path(__file__).resolve().parents[2]


def counts_by_meter(server: InfluxServer, db: str, field: str = "active_energy_import_kwh") -> dict[str, tuple[int, int]]:
    """meter -> (count, last time_ns) as InfluxDB has them."""
    out = {}
    for tags, row in server.rows(f'SELECT count("{field}") FROM meter GROUP BY meter', db):
        out[tags["meter"]] = row["count"]
    for tags, row in server.rows(f'SELECT last("{field}") FROM meter GROUP BY meter', db):
        out[tags["meter"]] = (out[tags["meter"]], row["time"])
    return out


async def wait_for(cond, timeout_s: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


class RecordingSink:
    """A real sink that remembers what the store confirmed, in order (to check per-series order)."""

    def __init__(self, inner: InfluxSink) -> None:
        self.inner = inner
        self.name = inner.name
        self.confirmed: list[str] = []
        self.writes = 0

    async def write(self, lines: Sequence[str]) -> None:
        await self.inner.write(lines)
        self.confirmed.extend(lines)
        self.writes += 1

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_one_bad_point_is_dead_lettered_with_influxdbs_message_and_the_rest_land(
        influx_server: InfluxServer, influx_db: str, outbox: Outbox, metrics: Metrics):
    assert influx_server.write(influx_db, meter_point(1, 0).to_line()).status_code == 204  # fields are floats now
    pts = [meter_point(1, s) for s in range(1, 200)]
    bad = meter_point(1, 77, active_power_total_kw="not a number")  # type: ignore[arg-type]
    pts[76] = bad
    await outbox.put(pts)
    sink = influx_v1(influx_server.url, influx_db)
    d = Deliverer(outbox, sink, metrics, batch_points=500)
    try:
        await d.flush(timeout_s=30)
    finally:
        await sink.aclose()
    count, _ = counts_by_meter(influx_server, influx_db)["m-0001"]
    assert count == 199  # seq 0..199 except the bad 77
    (dl,) = outbox.dead_letters(10)
    assert dl.kind == "point" and parse_line(dl.text()) == bad
    assert "field type conflict" in dl.reason
    assert 'input field "active_power_total_kw" on measurement "meter" is type string, already exists as type float' in dl.reason
    assert metrics.value("edge_points_dead_lettered_total") == 1
    assert metrics.value("edge_points_delivered_total") == 198
    assert outbox.depth() == 0


async def test_influxdb_stopped_while_points_keep_coming_then_all_delivered_in_order(
        tmp_path: Path, outbox: Outbox, metrics: Metrics, caplog: pytest.LogCaptureFixture):
    """An outage (10 s here; the code has no time limit: backoff is capped at backoff_cap_s)."""
    server = InfluxServer(tmp_path / "influxd").start()
    try:
        db = server.create_database("sensing")
        sink = RecordingSink(influx_v1(server.url, db, timeout_s=2.0))
        d = Deliverer(outbox, sink, metrics, batch_points=1000, flush_interval_s=0.1, backoff_base_s=0.2,
                      backoff_cap_s=1.0)
        runner = asyncio.create_task(d.run())
        produced = 0

        async def produce(seconds: float) -> None:
            nonlocal produced
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                await outbox.put([meter_point(m, produced) for m in range(20)])
                produced += 1
                await asyncio.sleep(0.02)

        with caplog.at_level(logging.INFO, logger="edge.delivery"):
            await produce(1.0)
            await wait_for(lambda: len(sink.confirmed) > 0, what="first delivery")
            await asyncio.to_thread(server.stop)
            await produce(10.0)  # the store is down: points keep being committed
            assert d.state == "retrying"
            assert outbox.depth() > 0
            await asyncio.to_thread(server.start)
            await produce(0.5)
            await d.flush(timeout_s=30)
        d.stop()
        await runner
        await sink.aclose()

        got = counts_by_meter(server, db)
        assert len(got) == 20
        for m in range(20):
            count, last_t = got[f"m-{m:04d}"]
            assert count == produced and last_t == meter_point(m, produced - 1).time_ns
        # in order per series: every series' points were confirmed with rising timestamps
        last: dict[str, int] = {}
        for ln in sink.confirmed:
            p = parse_line(ln)
            assert p.time_ns > last.get(p.tags["meter"], -1)
            last[p.tags["meter"]] = p.time_ns
        assert metrics.value("edge_points_retried_total") > 0
        assert d.state == "ok" and outbox.depth() == 0
        msgs = [r.getMessage() for r in caplog.records if r.name == "edge.delivery"]
        assert sum("store down" in m for m in msgs) == 1  # logged on the transition only
        assert sum("store up" in m for m in msgs) == 1
    finally:
        server.stop()


_CHILD = textwrap.dedent("""
    import asyncio, sys
    sys.path.insert(0, {root!r})
    from edge.delivery import Deliverer
    from edge.outbox import Outbox
    from edge.sinks import influx_v1
    from tests.delivery.conftest import RecordingClock, meter_point

    async def main():
        ob = Outbox({path!r})
        d = Deliverer(ob, influx_v1({url!r}, {db!r}), batch_points=500, flush_interval_s=0.05)
        runner = asyncio.create_task(d.run())
        seq = 0
        while True:
            await asyncio.gather(*(ob.put([meter_point(m, seq + k) for k in range(5)]) for m in range(10)))
            seq += 5
            print(seq, d.delivered, flush=True)   # all points with a seq below `seq` are committed
            await asyncio.sleep(0.002)

    asyncio.run(main())
""")


async def test_kill_9_mid_stream_then_restart_delivers_every_committed_point_once(
        tmp_path: Path, influx_server: InfluxServer, influx_db: str):
    path = tmp_path / "outbox.sqlite"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD.format(root=str(ROOT), path=str(path), url=influx_server.url, db=influx_db)],
        stdout=subprocess.PIPE, text=True)
    committed = delivered = 0
    try:
        while committed < 2000 or delivered == 0:  # kill while delivery is under way
            line = await asyncio.to_thread(child.stdout.readline)
            assert line, "the edge process ended early"
            committed, delivered = map(int, line.split())
    finally:
        os.kill(child.pid, signal.SIGKILL)
        await asyncio.to_thread(child.wait, 10)
        child.stdout.close()
    # restart: a new process would do exactly this with the same file
    ob = Outbox(path)
    sink = influx_v1(influx_server.url, influx_db)
    try:
        await Deliverer(ob, sink, batch_points=2000).flush(timeout_s=60)
    finally:
        await sink.aclose()
        ob.close()
    got = counts_by_meter(influx_server, influx_db)
    for m in range(10):
        count, last_t = got[f"m-{m:04d}"]
        assert count >= committed  # nothing committed was lost
        # seqs are contiguous from 0: as many points as the last one's seq + 1, so none is there twice
        assert last_t == meter_point(m, count - 1).time_ns


async def test_missing_database_blocks_keeps_buffering_and_resumes_without_restart(
        influx_server: InfluxServer, outbox: Outbox, metrics: Metrics, caplog: pytest.LogCaptureFixture):
    db = new_db_name()
    sink = influx_v1(influx_server.url, db)
    d = Deliverer(outbox, sink, metrics, flush_interval_s=0.05, blocked_retry_s=0.2)
    await outbox.put([meter_point(1, s) for s in range(10)])
    with caplog.at_level(logging.ERROR, logger="edge.delivery"):
        runner = asyncio.create_task(d.run())
        await wait_for(lambda: d.state == "blocked", what="blocked")
        await outbox.put([meter_point(1, s) for s in range(10, 20)])
        assert outbox.depth() == 20
        assert metrics.value("edge_sink_state") == 2
        assert any("database not found" in r.getMessage() for r in caplog.records)
        influx_server.create_database(db)  # the operator fixes it; no restart
        try:
            await d.flush(timeout_s=20)
        finally:
            d.stop()
            await runner
            await sink.aclose()
    assert counts_by_meter(influx_server, db)["m-0001"][0] == 20
    assert d.state == "ok" and metrics.value("edge_sink_state") == 0
    influx_server.drop_database(db)


async def test_wrong_credentials_stop_delivery_loudly_and_keep_the_points(
        tmp_path: Path, outbox: Outbox, metrics: Metrics, caplog: pytest.LogCaptureFixture):
    server = InfluxServer(tmp_path / "influxd", auth=True).start()
    try:
        db = server.create_database("sensing")
        await outbox.put([meter_point(1, s) for s in range(10)])
        bad = influx_v1(server.url, db, username="admin", password="wrong")
        d = Deliverer(outbox, bad, metrics, flush_interval_s=0.05, blocked_retry_s=60)
        with caplog.at_level(logging.ERROR, logger="edge.delivery"):
            runner = asyncio.create_task(d.run())
            await wait_for(lambda: d.state == "blocked", what="blocked")
            d.stop()
            await runner
        await bad.aclose()
        assert outbox.depth() == 10 and d.delivered == 0
        assert "401" in (d.last_error or "")
        (rec,) = [r for r in caplog.records if "refuses delivery" in r.getMessage()]
        assert rec.levelno == logging.ERROR and "authorization failed" in rec.getMessage()
        good = influx_v1(server.url, db, username=server.admin_user, password=server.admin_password)
        await Deliverer(outbox, good, metrics).flush(timeout_s=20)
        await good.aclose()
        assert counts_by_meter(server, db)["m-0001"][0] == 10
    finally:
        server.stop()


async def test_a_batch_over_the_servers_body_limit_is_split(tmp_path: Path, outbox: Outbox, metrics: Metrics):
    server = InfluxServer(tmp_path / "influxd", max_body_size=8000).start()
    try:
        db = server.create_database("sensing")
        await outbox.put([meter_point(m, s) for s in range(20) for m in range(10)])  # ~25 kB of text
        sink = RecordingSink(influx_v1(server.url, db, gzip_level=None))
        await Deliverer(outbox, sink, metrics, batch_points=1000).flush(timeout_s=20)
        await sink.aclose()
        assert sink.writes >= 4  # one batch of 200 points, sent as pieces under 8000 bytes
        got = counts_by_meter(server, db)
        assert all(got[f"m-{m:04d}"][0] == 20 for m in range(10))
        assert outbox.dead_letters(10) == [] and outbox.depth() == 0
    finally:
        server.stop()


async def test_gzip_body_is_accepted(influx_server: InfluxServer, influx_db: str):
    sink = influx_v1(influx_server.url, influx_db, gzip_level=6)
    await sink.write([meter_point(3, s).to_line() for s in range(50)])
    await sink.aclose()
    assert counts_by_meter(influx_server, influx_db)["m-0003"][0] == 50




async def test_a_two_minute_outage_on_the_clock_is_ridden_out_with_capped_backoff(
        tmp_path: Path, outbox: Outbox, metrics: Metrics):
    """The issue's 2-minute outage, in fake time: influxd is really down; only the waits are fake."""
    server = InfluxServer(tmp_path / "influxd").start()
    db = server.create_database("sensing")
    server.stop()
    clock = RecordingClock()
    sink = influx_v1(server.url, db, timeout_s=2.0)
    d = Deliverer(outbox, sink, metrics, clock, flush_interval_s=0.01, backoff_base_s=0.5, backoff_cap_s=30.0)
    runner = asyncio.create_task(d.run())
    try:
        seq = 0
        while sum(clock.slept) < 120.0:  # points keep coming for two (fake) minutes of retrying
            await outbox.put([meter_point(m, seq) for m in range(5)])
            seq += 1
            await asyncio.sleep(0.01)
        assert d.state == "retrying" and d.delivered == 0
        assert max(clock.slept) <= 30.0 and len(clock.slept) >= 6
        await asyncio.to_thread(server.start)
        await d.flush(timeout_s=30)
    finally:
        d.stop()
        await runner
        await sink.aclose()
    try:
        got = counts_by_meter(server, db)
        assert all(got[f"m-{m:04d}"] == (seq, meter_point(m, seq - 1).time_ns) for m in range(5))
        assert d.state == "ok" and outbox.depth() == 0
    finally:
        server.stop()
