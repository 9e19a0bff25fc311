"""Server-Sent Events over a real uvicorn socket: snapshot, live updates, filters, resume with Last-Event-ID."""

from __future__ import annotations

import asyncio
import json
import weakref

import httpx

from api.app import create_app
from api.stream import EventHub
from edge.live import LiveState
from edge.point import Point
from tests.api.apienv import INST42, serve


def parse(text: str) -> list[dict]:
    events = []
    for block in text.split("\n\n"):
        ev = {}
        for line in block.splitlines():
            if line.startswith(("id: ", "event: ", "data: ")):
                k, v = line.split(": ", 1)
                ev[k] = json.loads(v) if k == "data" else v
        if "event" in ev:
            events.append(ev)
    return events


class Reader:
    """Reads an event stream incrementally; ``until(pred)`` returns all text so far once pred holds."""

    def __init__(self, r: httpx.Response) -> None:
        self.it = r.aiter_text()
        self.text = ""

    async def until(self, pred, timeout_s: float = 5.0) -> str:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not pred(parse(self.text)):
            self.text += await asyncio.wait_for(self.it.__anext__(), max(0.01, deadline - loop.time()))
        return self.text


_READERS: weakref.WeakKeyDictionary[httpx.Response, Reader] = weakref.WeakKeyDictionary()  # one per open stream


async def read_until(r: httpx.Response, pred, timeout_s: float = 5.0) -> str:
    reader = _READERS.get(r)
    if reader is None:
        reader = _READERS[r] = Reader(r)
    return await reader.until(pred, timeout_s)


def power(env, meter: str, kw: float, dt_s: int) -> Point:
    return Point("meter", {"meter": meter, "org": INST42}, {"active_power_total_kw": kw}, env.now_ns + dt_s * 10**9)


async def test_snapshot_then_live_then_resume(env):
    app = create_app(env.ctx)
    async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as c:
        async with c.stream("GET", "/v1/live", params={"topics": "meter", "meters": "m-hq-main"}) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            text = await read_until(r, lambda evs: len(evs) >= 1)
            snap = parse(text)
            assert snap[0]["event"] == "meter" and snap[0]["data"]["meter"] == "m-hq-main"
            for i in range(3):
                env.live.update([power(env, "m-hq-main", 100.0 + i, i + 1), power(env, "m-b7", 5.0, i + 1)])
            text = await read_until(r, lambda evs: len(evs) >= 4)
        evs = parse(text)[1:]
        assert [e["data"]["values"]["active_power_total_kw"] for e in evs] == [100.0, 101.0, 102.0]
        assert all(e["data"]["meter"] == "m-hq-main" and e["data"]["time"].endswith("+08:00") for e in evs)
        ids = [int(e["id"]) for e in evs]
        assert ids == sorted(ids)
        # disconnected; two more readings arrive; resume from the first live id
        env.live.update([power(env, "m-hq-main", 103.0, 10)])
        env.live.update([power(env, "m-hq-main", 104.0, 11)])
        await asyncio.sleep(0.1)
        async with c.stream("GET", "/v1/live", params={"topics": "meter", "meters": "m-hq-main"},
                            headers={"Last-Event-ID": str(ids[0])}) as r:
            text = await read_until(r, lambda evs: len(evs) >= 4)
        got = [e["data"]["values"]["active_power_total_kw"] for e in parse(text)]
        assert got == [101.0, 102.0, 103.0, 104.0]  # no snapshot, nothing lost, nothing repeated


async def test_positions_in_gcj02_and_alerts(env):
    app = create_app(env.ctx)
    async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as c:
        async with c.stream("GET", "/v1/live", params={"topics": "position,alert", "crs": "gcj02",
                                                       "snapshot": "false"}) as r:
            await asyncio.sleep(0.2)
            env.live.update([Point("position", {"vehicle": "veh-01", "org": INST42},
                                   {"lat": 30.2741, "lon": 120.1551, "speed_kmh": 42.0, "acc": True}, env.now_ns)])
            env.live.update([Point("alert", {"vehicle": "veh-01", "org": INST42, "kind": "geofence_leave"},
                                   {"message": "left hq-yard"}, env.now_ns)])
            text = await read_until(r, lambda evs: len(evs) >= 2)
    pos, alert = parse(text)
    assert pos["event"] == "position" and pos["data"]["crs"] == "gcj02"
    assert abs(pos["data"]["lon"] - 120.1551) > 1e-3 and pos["data"]["status"] == "moving"
    assert alert["event"] == "alert" and alert["data"]["kind"] == "geofence_leave"


async def test_resume_after_ring_overflow_sends_reset():
    live = LiveState()
    hub = EventHub(live, lambda p: p.tags.get("org"), ring_size=3)
    hub.add([Point("meter", {"meter": "a", "org": "1"}, {"x": float(i)}, i) for i in range(10)])
    evs, lost = hub.after(2)
    assert lost and [e.id for e in evs] == [8, 9, 10]
    evs, lost = hub.after(8)
    assert not lost and [e.id for e in evs] == [9, 10]
    assert hub.after(10) == ([], False)


async def test_unknown_topic_is_400(env):
    app = create_app(env.ctx)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.get("/v1/live", params={"topics": "meter,secrets"})
        assert r.status_code == 400 and r.headers["content-type"].startswith("application/problem+json")
