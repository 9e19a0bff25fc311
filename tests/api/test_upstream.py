"""Push to the province: the upstream is a consumer of the outbox's log. Indicators reach a real
HTTP endpoint (a small InfluxDB-v1-compatible server on loopback) after it was down; rows it does
not take never wait for it; a kill -9 between local and upstream delivery loses no upstream copy
(real influxd, two databases)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from fastapi import FastAPI, Request, Response

from api.upstream import Upstream
from edge.delivery import Deliverer
from edge.outbox import OnFull, Outbox
from edge.point import Point
from edge.sinks import influx_v1
from tests.api.apienv import INST42, serve
from tests.delivery.conftest import meter_point
from tests.support.influx import InfluxServer, new_db_name

ROOT = Path(__file__).resolve().parents[2]


class Province:
    """An upstream that takes ``POST /write`` line protocol, or answers 503 while ``down``."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.down = True
        self.app = FastAPI()
        self.app.state.hub = _NoHub()

        @self.app.post("/write")
        async def write(request: Request) -> Response:
            if self.down:
                return Response(status_code=503, headers={"Retry-After": "0"})
            self.lines += [ln for ln in (await request.body()).decode().split("\n") if ln]
            return Response(status_code=204)


class _NoHub:
    async def close(self) -> None:
        return None


def points(n: int) -> list[Point]:
    ind = [Point("energy_indicator", {"scope": "org", "id": INST42, "org": INST42, "period": "day",
                                      "carrier": "electricity"}, {"consumption_kwh": 100.0 + i}, i * 86400 * 10**9)
           for i in range(n)]
    raw = [Point("meter", {"meter": "m1", "org": INST42}, {"active_power_total_kw": 1.0}, i) for i in range(n)]
    return ind + raw


async def test_indicators_are_forwarded_after_the_province_comes_back(tmp_path):
    prov = Province()
    async with serve(prov.app) as base:
        ob = Outbox(tmp_path / "outbox.sqlite")
        up = Upstream.influxdb(ob, base, database="province", flush_interval_s=0.05)
        up.deliverer.backoff_base_s, up.deliverer.backoff_cap_s = 0.02, 0.05
        task = asyncio.create_task(up.run())
        try:
            await ob.put(points(5))
            await asyncio.sleep(0.3)
            assert prov.lines == [] and ob.lag("upstream") == 5  # province down: kept, durable
            prov.down = False
            await up.flush(10)
            # indicators only: raw meter points are not forwarded
            assert len(prov.lines) == 5 and all(ln.startswith("energy_indicator,") for ln in prov.lines)
            assert ob.lag("upstream") == 0 and ob.lag("local") == 10  # the local sink has not taken any yet
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await up.close()
            ob.close()


async def test_raw_points_when_asked(tmp_path):
    prov = Province()
    prov.down = False
    async with serve(prov.app) as base:
        with Outbox(tmp_path / "outbox.sqlite") as ob:
            up = Upstream.influxdb(ob, base, raw=True, flush_interval_s=0.05)
            await ob.put(points(3))
            await up.flush(10)
            assert len(prov.lines) == 6
            await up.close()


async def test_rows_the_upstream_does_not_take_never_wait_for_it(tmp_path):
    """The province is down; the local sink has everything: the raw rows go, the indicators stay."""
    with Outbox(tmp_path / "outbox.sqlite") as ob:
        ob.register_consumer("upstream", ["energy_indicator"])
        await ob.put(points(50), on_full=OnFull.thin)
        b = ob.batch(1000)
        ob.ack(b.last_id)
        assert ob.depth() == 50 and ob.lag("upstream") == 50 and ob.lag("local") == 0
        assert ob.status().rows == 1  # the indicator row; the meter row is gone
        b = ob.batch(1000, consumer="upstream")
        ob.ack(b.last_id, consumer="upstream")
        assert ob.depth() == 0 and ob.status().rows == 0


async def test_undelivered_points_survive_a_restart(tmp_path):
    path = tmp_path / "outbox.sqlite"
    prov = Province()
    async with serve(prov.app) as base:
        ob = Outbox(path)
        up = Upstream.influxdb(ob, base)
        await ob.put(points(4))
        await up.close()  # never delivered: the province was down and we stopped
        ob.close()
        ob = Outbox(path)
        up2 = Upstream.influxdb(ob, base, flush_interval_s=0.05)  # registers again: the cursor is kept
        assert ob.lag("upstream") == 4
        prov.down = False
        await up2.flush(10)
        assert len(prov.lines) == 4
        await up2.close()
        ob.close()


_CHILD = textwrap.dedent("""
    import asyncio, sys
    sys.path.insert(0, {root!r})
    from api.upstream import Upstream
    from edge.delivery import Deliverer
    from edge.outbox import OnFull, Outbox
    from edge.sinks import influx_v1
    from tests.delivery.conftest import meter_point

    async def main():
        ob = Outbox({path!r})
        local = Deliverer(ob, influx_v1({url!r}, {local_db!r}), batch_points=500, flush_interval_s=0.02)
        # the province takes raw readings too, in smaller batches, later: it lags the local sink
        up = Upstream(ob, influx_v1({url!r}, {up_db!r}), raw=True, batch_points=200, flush_interval_s=0.2)
        tasks = [asyncio.create_task(local.run()), asyncio.create_task(up.run())]
        seq = 0
        while True:
            await asyncio.gather(*(ob.put([meter_point(m, seq + k) for k in range(5)], on_full=OnFull.thin)
                                   for m in range(10)))
            seq += 5
            # every point with a seq below `seq` is committed
            print(seq, local.delivered, up.deliverer.delivered, flush=True)
            await asyncio.sleep(0.002)

    asyncio.run(main())
""")


def _counts(server: InfluxServer, db: str) -> dict[str, tuple[int, int]]:
    out: dict[str, list] = {}
    for tags, row in server.rows('SELECT count("active_energy_import_kwh") FROM meter GROUP BY meter', db):
        out[tags["meter"]] = [row["count"], 0]
    for tags, row in server.rows('SELECT last("active_energy_import_kwh") FROM meter GROUP BY meter', db):
        out[tags["meter"]][1] = row["time"]
    return {k: (v[0], v[1]) for k, v in out.items()}


@pytest.mark.influxdb
async def test_kill_9_between_local_and_upstream_delivery_loses_no_upstream_copy(tmp_path: Path,
                                                                                influx_server: InfluxServer):
    """Issue 19: the upstream copy used to be a second outbox written after the local commit; a
    crash between the two lost it. Now both are cursors on one log: kill -9 while the local sink
    is ahead of the upstream, restart, and both stores have every committed point, once."""
    local_db, up_db = influx_server.create_database(new_db_name()), influx_server.create_database(new_db_name())
    path = tmp_path / "outbox.sqlite"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD.format(root=str(ROOT), path=str(path), url=influx_server.url,
                                             local_db=local_db, up_db=up_db)],
        stdout=subprocess.PIPE, text=True)
    committed = local = up = 0
    try:
        while committed < 3000 or up == 0 or local <= up:  # kill with the upstream behind the local sink
            line = await asyncio.to_thread(child.stdout.readline)
            assert line, "the edge process ended early"
            committed, local, up = map(int, line.split())
        await asyncio.sleep(random.uniform(0.001, 0.02))  # at any moment, commits in flight or not
    finally:
        os.kill(child.pid, signal.SIGKILL)
        await asyncio.to_thread(child.wait, 10)
        child.stdout.close()
    # restart: a new process would do exactly this with the same file
    ob = Outbox(path)
    local_sink, up_sink = influx_v1(influx_server.url, local_db), influx_v1(influx_server.url, up_db)
    try:
        assert ob.lag("upstream") > 0  # what the upstream had not confirmed at the kill is still there for it
        upstream = Upstream(ob, up_sink, raw=True)
        await Deliverer(ob, local_sink, batch_points=2000).flush(timeout_s=60)
        await upstream.flush(timeout_s=60)
        assert ob.depth() == 0
    finally:
        await local_sink.aclose()
        await up_sink.aclose()
        ob.close()
    got_local, got_up = _counts(influx_server, local_db), _counts(influx_server, up_db)
    assert got_up == got_local  # every point the local store has, the province has (the old design: 50 short)
    for m in range(10):
        count, last_t = got_local[f"m-{m:04d}"]
        assert count >= committed  # nothing committed was lost
        assert last_t == meter_point(m, count - 1).time_ns  # seqs contiguous from 0: none twice
    influx_server.drop_database(local_db)
    influx_server.drop_database(up_db)
