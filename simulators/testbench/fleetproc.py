"""A simulator process publishing vehicle fleets over MQTT, logging every position the broker took.

    python -m simulators.testbench.fleetproc SPEC.json

Per group a ``simulators.vehicles.VehicleFleet`` computes the messages of each tick (its pure
``tick_messages``); this shell publishes them at QoS 1 and logs a position only when the broker
acknowledged it (PUBACK), as ``vehicle t_ns`` lines in ``spec["log"]``. When the broker goes away
(a Mosquitto restart) the unacknowledged messages are kept and sent again after reconnecting,
like a terminal's buffer: a redelivery may make a duplicate, never a loss. Malformed payloads are
counted, not logged as positions. On SIGTERM or at the end of ``duration_s`` it writes
``spec["summary"]`` (JSON) and exits.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import aiomqtt

from simulators.vehicles import Faults, VehicleFleet

PUBACK_TIMEOUT_S = 5.0


class Publisher:
    def __init__(self, group: dict, broker_url: str, seed: int, log, counts: Counter, stop: asyncio.Event) -> None:
        self.fleet = VehicleFleet(group["count"], broker_url, fmt=group["format"], rate_hz=group["rate_hz"], seed=seed,
                                  id_prefix=group["id_prefix"], topic=group["topic"],
                                  faults=Faults(malformed_rate=group["malformed_rate"], gap_rate=0.0))
        self.rate_hz = group["rate_hz"]
        self.url = urlsplit(broker_url)
        self.client_id = f"bench-fleet-{group['format']}-{seed}"
        self.log, self.counts, self.stop = log, counts, stop
        self.backlog: list[tuple[str, bytes, str | None, int]] = []  # topic, payload, vehicle (None: malformed), t

    def _tick(self, t_ns: int, dt: float) -> None:
        f = self.fleet
        n_bad = len(f._malformed)
        before = {vid: len(ts) for vid, ts in f._sent_times.items()}
        msgs = f.tick_messages(t_ns, dt)
        bad_ids = {id(p) for _, p in f._malformed[n_bad:]}
        for topic, payload in msgs:
            vid = topic.split("/")[-2]
            if id(payload) in bad_ids:
                self.backlog.append((topic, payload, None, 0))
                continue
            ts = f._sent_times[vid]
            k = before.get(vid, 0)
            before[vid] = k + 1
            self.backlog.append((topic, payload, vid, ts[k]))

    async def _send(self, client: aiomqtt.Client) -> None:
        todo, self.backlog = self.backlog, []
        results = await asyncio.gather(*(client.publish(t, p, qos=1, timeout=PUBACK_TIMEOUT_S) for t, p, _, _ in todo),
                                       return_exceptions=True)
        failed = []
        out = []
        for item, r in zip(todo, results, strict=True):
            if isinstance(r, BaseException):
                failed.append(item)
                continue
            if item[2] is None:
                self.counts["malformed_acked"] += 1
            else:
                self.counts["positions_acked"] += 1
                out.append(f"{item[2]} {item[3]}\n")
        self.log.write("".join(out))
        if failed:
            self.backlog = failed + self.backlog
            self.counts["publish_failures"] += len(failed)
            raise aiomqtt.MqttError(f"{len(failed)} publishes not acknowledged")

    async def run(self, duration_s: float | None, ticks: int | None = None, burst: bool = False) -> None:
        """Publish for ``duration_s`` (paced by the clock), or ``ticks`` ticks; ``burst`` sends them
        back to back with times from the recent past (a backlog for throughput measurements)."""
        dt = 1.0 / self.rate_hz
        t0 = time.time_ns()
        if burst and ticks:
            t0 -= int((ticks * dt + 60) * 1e9)
        t0 -= t0 % 1_000_000_000
        mono0 = time.monotonic()
        k = 0
        while not self.stop.is_set():
            try:
                async with aiomqtt.Client(self.url.hostname or "127.0.0.1", self.url.port or 1883,
                                          identifier=self.client_id, max_inflight_messages=1000, timeout=10) as client:
                    client.pending_calls_threshold = 1 << 30
                    self.counts["connects"] += 1
                    while True:
                        if self.backlog:
                            await self._send(client)
                        if self.stop.is_set() or (duration_s is not None and k * dt >= duration_s) or \
                                (ticks is not None and k >= ticks):
                            self.stop.set()
                            break
                        self._tick(t0 + int(round(k * dt * 1e9)), dt)
                        k += 1
                        await self._send(client)
                        delay = 0.0 if burst else mono0 + k * dt - time.monotonic()
                        if delay > 0:
                            try:
                                await asyncio.wait_for(self.stop.wait(), delay)
                            except asyncio.TimeoutError:
                                pass
                if not self.backlog:
                    return
            except aiomqtt.MqttError:
                self.counts["disconnects"] += 1
                await asyncio.sleep(0.5)
                # ticks keep coming while the broker is away (the terminal buffers them)
                while not burst and mono0 + k * dt <= time.monotonic() and not self.stop.is_set():
                    self._tick(t0 + int(round(k * dt * 1e9)), dt)
                    k += 1
        self.counts["unsent_at_stop"] += len(self.backlog)


async def main_async(spec: dict) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    counts: Counter[str] = Counter()
    with open(spec["log"], "a", encoding="ascii") as log:
        pubs = [Publisher(g, spec["broker_url"], spec["seed"] + i, log, counts, stop) for i, g in enumerate(spec["groups"])]
        Path(spec["ready"]).write_text("{}")
        await asyncio.gather(*(p.run(spec.get("duration_s"), spec.get("ticks"), spec.get("burst", False)) for p in pubs))
    summary = dict(counts)
    summary["malformed_generated"] = sum(p.fleet._counts["malformed"] for p in pubs)
    summary["malformed_payloads"] = [[t, b.hex()] for p in pubs for t, b in p.fleet._malformed]
    Path(spec["summary"]).write_text(json.dumps(summary))


def main() -> None:
    asyncio.run(main_async(json.loads(Path(sys.argv[1]).read_text())))


if __name__ == "__main__":
    main()
