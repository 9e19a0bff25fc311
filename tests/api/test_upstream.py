"""Push to the province: indicators go through a durable outbox to a real HTTP endpoint (a small
InfluxDB-v1-compatible server on loopback) and survive the endpoint being down."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI, Request, Response

from api.upstream import Upstream
from edge.point import Point
from tests.api.apienv import INST42, serve


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
        up = Upstream.influxdb(tmp_path / "upstream.sqlite", base, database="province", flush_interval_s=0.05)
        up.deliverer.backoff_base_s, up.deliverer.backoff_cap_s = 0.02, 0.05
        task = asyncio.create_task(up.run())
        try:
            assert await up.offer(points(5)) == 5  # indicators only: raw meter points are not forwarded
            await asyncio.sleep(0.3)
            assert prov.lines == [] and up.outbox.depth() == 5  # province down: kept, durable
            prov.down = False
            await up.flush(10)
            assert len(prov.lines) == 5 and all(ln.startswith("energy_indicator,") for ln in prov.lines)
            assert up.outbox.depth() == 0
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await up.close()


async def test_raw_points_when_asked_and_tap_hook(tmp_path):
    prov = Province()
    prov.down = False
    async with serve(prov.app) as base:
        up = Upstream.influxdb(tmp_path / "upstream.sqlite", base, raw=True, flush_interval_s=0.05)
        up.tap(points(3))
        await up.flush(10)
        assert len(prov.lines) == 6
        await up.close()


async def test_undelivered_points_survive_a_restart(tmp_path):
    path = tmp_path / "upstream.sqlite"
    prov = Province()
    async with serve(prov.app) as base:
        up = Upstream.influxdb(path, base)
        await up.offer(points(4))
        await up.close()  # never delivered: the province was down and we stopped
        up2 = Upstream.influxdb(path, base, flush_interval_s=0.05)
        assert up2.outbox.depth() == 4
        prov.down = False
        await up2.flush(10)
        assert len(prov.lines) == 4
        await up2.close()
