"""A simulator process hosting several Modbus meter servers, logging every read it answered.

    python -m simulators.testbench.meterproc SPEC.json

The spec lists servers (profile, framer, unit ids, seed) and a fault schedule. The process
binds each server to a free loopback port, writes ``{"ports": [...]}`` to ``spec["ready"]``, and
logs each answered read as ``port unit fc address count t_ns`` to ``spec["log"]`` (an injected
timeout is never answered, so it is never logged). SIGTERM flushes the log and exits.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

from simulators.meters import MeterServer


class LoggedMeterServer(MeterServer):
    """A MeterServer that records each read it answers with data (not faults, not exceptions)."""

    def __init__(self, *args: Any, sink: list[str], **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._sink = sink

    def _answer(self, unit: int, fc: int, address: int, count: int):
        answer, fault = super()._answer(unit, fc, address, count)
        if answer is not None and not answer[0] & 0x80 and (fault is None or fault.kind != "drop"):
            self._sink.append(f"{self.port} {unit} {fc} {address} {count} {time.time_ns()}\n")
        return answer, fault


async def serve(spec: dict) -> None:
    lines: list[str] = []
    servers = [LoggedMeterServer(s["profile"], unit_ids=s["units"], host="127.0.0.1", port=0, framer=s["framer"],
                                 seed=s["seed"], sink=lines) for s in spec["servers"]]
    for s in servers:
        await s.start()
    Path(spec["ready"]).write_text(json.dumps({"ports": [s.port for s in servers]}))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    rng = random.Random(spec.get("seed", 0))
    t0 = time.monotonic()
    events = sorted(spec.get("events", []), key=lambda e: e["at_s"])
    faults_log: list[dict] = []
    with open(spec["log"], "a", encoding="ascii") as log:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except asyncio.TimeoutError:
                pass
            now = time.monotonic() - t0
            while events and events[0]["at_s"] <= now:
                ev = events.pop(0)
                for srv in servers:
                    for u in srv.meters:
                        if rng.random() >= ev["fraction"]:
                            continue
                        if ev["kind"] == "meter_timeouts":
                            srv.faults.set(u, "timeout", count=ev["count"])
                        elif ev["kind"] == "counter_reset":
                            srv.faults.counter_reset(u)
                        faults_log.append({"kind": ev["kind"], "port": srv.port, "unit": u, "t_ns": time.time_ns()})
            if lines:
                chunk, lines[:] = "".join(lines), []
                log.write(chunk)
                log.flush()
        log.write("".join(lines))
    Path(spec["faults_log"]).write_text(json.dumps(faults_log))
    for s in servers:
        await s.stop()


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    asyncio.run(serve(spec))


if __name__ == "__main__":
    main()
