"""Bench ``mqtt.positions_per_s``: publish -> outbox commit for 1,000 simulated vehicles.

Method (both sides drain the same backlog from a real Mosquitto, in the same run):

1. The simulated fleet's messages (1,000 vehicles x N ticks, our JSON) are generated once.
2. Baseline: a bare paho client (persistent session, QoS 1, automatic acks, nothing stored)
   subscribes, goes away, the backlog is published, it reconnects and drains it. Its rate is
   messages / (connect -> last message).
3. Edge: the GpsCollector (decode, validate, group-commit to a real edge.outbox.Outbox on disk
   with SQLite synchronous=FULL, manual ack after commit) does the same with its own session.
   Its rate is positions / (connect -> last commit). Every position is checked to be stored
   exactly once (zero loss).

Draining a broker-side backlog measures the subscriber, not the publisher (a Python publisher
is slower than either subscriber). CPU per 1,000 messages is this process's CPU time (all
threads, the outbox writer included) during the drain.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiomqtt  # noqa: E402
import paho.mqtt.client as paho  # noqa: E402

from collector.gps.subscriber import GpsCollector  # noqa: E402
from edge.clock import FakeClock  # noqa: E402
from edge.config import Mqtt, Vehicle  # noqa: E402
from edge.outbox import Outbox  # noqa: E402
from edge.point import parse_line  # noqa: E402
from simulators.vehicles import Faults, VehicleFleet  # noqa: E402
from tests.support.mosquitto import Mosquitto  # noqa: E402

VEHICLES = 1000
TOPIC = "vehicles/+/position"
# the bare subscriber's own topic tree (same length): each side's persistent session queues only its backlog
BARE_PREFIX, EDGE_PREFIX = "bareonly/", "vehicles/"
BARE_TOPIC = BARE_PREFIX + "+/position"


class _Ingest:
    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    async def submit(self, points) -> None:
        await self.outbox.put(points)

    async def reject(self, source: str, raw: bytes, reason: str, topic: str = "") -> None:
        await self.outbox.dead_letter_payload_async(source, raw, reason, topic)

    def count(self, name: str, n: int = 1, **labels: str) -> None:
        pass


async def _publish(port: int, msgs: list[tuple[str, bytes]]) -> None:
    async with aiomqtt.Client("127.0.0.1", port, identifier="bench-pub", max_inflight_messages=1000, timeout=60) as c:
        c.pending_calls_threshold = 1 << 30
        for i in range(0, len(msgs), 2000):
            await asyncio.gather(*(c.publish(t, p, qos=1) for t, p in msgs[i:i + 2000]))


def _bare_session(port: int, n: int | None) -> tuple[float, float, int]:
    """Connect the bare paho subscriber; with n, drain n messages and return (wall s, cpu s, got)."""
    got = 0
    done = threading.Event()

    def on_message(c, u, m):
        nonlocal got
        got += 1
        if n is not None and got >= n:
            done.set()

    def on_connect(c, u, f, rc, p=None):
        c.subscribe(BARE_TOPIC, qos=1)
        if n is None:
            done.set()

    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-bare", clean_session=False)
    c.on_message, c.on_connect = on_message, on_connect
    t0, c0 = time.perf_counter(), time.process_time()
    c.connect("127.0.0.1", port)
    c.loop_start()
    done.wait(120)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    c.disconnect()
    c.loop_stop()
    return wall, cpu, got


async def _edge_drain(url: str, vehicles: list[Vehicle], outbox: Outbox, n: int, first: bool) -> tuple[float, float, dict]:
    col = GpsCollector(Mqtt(broker=url, client_id="bench-edge"), vehicles, _Ingest(outbox))
    t0, c0 = time.perf_counter(), time.process_time()
    task = asyncio.create_task(col.run())
    deadline = time.monotonic() + 180
    while (not col.connected) if first else (outbox.committed < n):
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.002)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    return wall, cpu, col.stats()


async def _run(quick: bool) -> dict:
    ticks = 5 if quick else 20
    reps = 1 if quick else 3
    with tempfile.TemporaryDirectory() as d, Mosquitto(Path(d) / "mosquitto") as m:
        fleet = VehicleFleet(VEHICLES, m.url, clock=FakeClock(time.time_ns()), faults=Faults(gap_rate=0), seed=1)
        msgs: list[tuple[str, bytes]] = []
        t_ns = time.time_ns() // 1_000_000_000 * 1_000_000_000
        for k in range(ticks):
            msgs.extend(fleet.tick_messages(t_ns + k * 1_000_000_000, 1.0))
        n = len(msgs)
        assert all(t.startswith(EDGE_PREFIX) for t, _ in msgs)
        bare_msgs = [(BARE_PREFIX + t[len(EDGE_PREFIX):], p) for t, p in msgs]
        sent = {(v, t) for v, ts in fleet.stats()["per_vehicle"].items() for t in ts}
        vehicles = [Vehicle(id=v, org="330000/330100/330106/inst-042") for v in fleet.ids]

        await asyncio.to_thread(_bare_session, m.port, None)  # create both persistent sessions
        first = Outbox(Path(d) / "outbox-0.sqlite")
        await _edge_drain(m.url, vehicles, first, n, first=True)
        first.close()
        base_runs, edge_runs, lost, twice, batches = [], [], 0, 0, 0
        for rep in range(reps):  # alternate, so both see the same machine load; keep each side's best
            await _publish(m.port, bare_msgs)
            b_wall, b_cpu, b_got = await asyncio.to_thread(_bare_session, m.port, n)
            if b_got == n:
                base_runs.append((b_wall, b_cpu))
            outbox = Outbox(Path(d) / f"outbox-{rep + 1}.sqlite")
            await _publish(m.port, msgs)
            e_wall, e_cpu, stats = await _edge_drain(m.url, vehicles, outbox, n, first=False)
            stored = []
            after = 0
            while (b := outbox.batch(50_000, after)) is not None:
                stored.extend(parse_line(ln) for ln in b.lines)
                after = b.last_id
            outbox.close()
            keys = {(p.tags["vehicle"], p.time_ns) for p in stored}
            lost += len(sent - keys)
            twice += len(stored) - len(keys)
            batches += stats["batches"]
            edge_runs.append((e_wall, e_cpu))

    e_wall, e_cpu = min(edge_runs)
    value = n / e_wall
    baseline = n / min(base_runs)[0] if base_runs else None
    b_cpu = min(base_runs)[1] if base_runs else None
    ratio = value / baseline if baseline else None
    return {
        "mqtt.positions_per_s": {
            "value": round(value), "unit": "positions/s",
            "baseline": round(baseline) if baseline else None,
            "baseline_what": "bare paho subscriber (QoS 1, auto ack, no storage) draining the same backlog from Mosquitto",
            "ratio": round(ratio, 3) if ratio else None, "goal": ">= 0.5 x baseline, zero loss",
            "met": bool(ratio and ratio >= 0.5 and lost == 0),
            "messages": n, "repetitions": reps, "lost": lost, "stored_twice": twice,
            "mean_batch": round(n * reps / batches) if batches else None,
        },
        "mqtt.cpu_ms_per_1000_messages": {
            "value": round(e_cpu * 1000 / (n / 1000), 1), "unit": "CPU ms / 1,000 messages",
            "baseline": round(b_cpu * 1000 / (n / 1000), 1) if b_cpu else None,
            "baseline_what": "bare paho subscriber, same backlog",
            "ratio": round(b_cpu / e_cpu, 3) if (b_cpu and e_cpu) else None,
            "goal": "reported (lower is better)", "met": None,
        },
    }


def run(quick: bool = False) -> dict:
    return asyncio.run(_run(quick))


if __name__ == "__main__":
    import json

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
