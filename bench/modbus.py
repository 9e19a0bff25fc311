"""Modbus benchmark: ``modbus.reads_per_s`` and ``modbus.requests_per_poll.<profile>``.

reads_per_s: 200 simulated meters (one port each, served by a separate process so the server's
CPU is not ours) polled concurrently by the ModbusCollector with a poll interval short enough to
saturate it, against a bare pymodbus baseline in the same run: one AsyncModbusTcpClient per meter
reading the same planned requests in a tight loop, no decoding, no Points. The figure is register
reads per second; CPU per meter-read (one full poll of one meter) is reported beside it.

requests_per_poll.<profile>: requests one full poll of a profile needs with our planner, against
one request per register (what a naive collector sends).

rtu_cycle_vs_wire_limit: 16 meters (CHINT DTSU666, 5 reads each) on one simulated RS-485 line at
9600 baud 8E1 behind an RTU-over-TCP gateway (the meter simulator holds each frame for its wire
time, answers after a 20 ms turnaround, one conversation at a time; in its own process), polled by
the ModbusCollector: the poller's measured cycle (every meter once) over the wire-time limit that
``collector.modbus.bus`` computes for that line (what ``edge check`` prints). 1.0 would be a
collector that adds nothing to the wire.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]
PROFILE = "chint-dtsu666"


def requests_per_poll() -> dict:
    from collector.modbus.planner import plan
    from collector.modbus.profiles import load_profiles
    out = {}
    for pid, p in sorted(load_profiles().items()):
        n = len(plan(p.registers, p.max_gap, p.max_registers))
        out[f"modbus.requests_per_poll.{pid}"] = {
            "value": n, "unit": "requests/poll", "baseline": len(p.registers),
            "baseline_what": "one request per register (naive collector)",
            "ratio": round(len(p.registers) / n, 3), "goal": "lower is better (< 1 per register)",
            "met": n < len(p.registers)}
    return out


class _CountingIngest:
    def __init__(self) -> None:
        self.points = 0

    async def submit(self, points: Sequence) -> None:
        self.points += len(points)

    async def reject(self, source: str, raw: bytes, reason: str, topic: str = "") -> None:
        pass

    def count(self, name: str, n: int = 1, **labels: str) -> None:
        pass


def _start_servers(count: int) -> tuple[subprocess.Popen, list[int]]:
    code = (
        "import asyncio, json, sys\n"
        "from simulators.meters import MeterServer\n"
        "async def main():\n"
        f"    ss = [MeterServer({PROFILE!r}, [1], seed=i, update_period_s=5.0) for i in range({count})]\n"
        "    for s in ss: await s.start()\n"
        "    print(json.dumps([s.port for s in ss]), flush=True)\n"
        "    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)\n"
        "asyncio.run(main())\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    ports = json.loads(proc.stdout.readline())
    return proc, ports


def _site(ports: list[int], interval_s: float):
    from edge.config import Site
    org = "330000/330100/330106/bench"
    return Site.model_validate({
        "orgs": [{"path": "330000", "name": "zj"}, {"path": "330000/330100", "name": "hz"},
                 {"path": "330000/330100/330106", "name": "xh"}, {"path": org, "name": "bench"}],
        "meters": [{"id": f"m{i:03d}", "profile": PROFILE, "org": org, "interval_s": interval_s, "timeout_ms": 2000,
                    "transport": {"kind": "tcp", "host": "127.0.0.1", "port": p}} for i, p in enumerate(ports)]})


async def _collector_run(ports: list[int], seconds: float) -> dict:
    from collector.modbus.service import ModbusCollector
    col = ModbusCollector(_site(ports, 1e-6), _CountingIngest())  # saturate: every slot is due at once
    task = asyncio.create_task(col.run())
    await asyncio.sleep(1.0)  # connect and warm up
    s0, c0, t0 = dict(col.stats()), time.process_time(), time.perf_counter()
    await asyncio.sleep(seconds)
    s1, c1, t1 = dict(col.stats()), time.process_time(), time.perf_counter()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    regs = s1["registers_read"] - s0["registers_read"]
    polls = s1["polls"] - s0["polls"]
    return {"regs_per_s": regs / (t1 - t0), "cpu_per_read_ms": 1000 * (c1 - c0) / max(1, polls),
            "polls": polls, "failed": s1["reads_failed"] - s0["reads_failed"]}


async def _baseline_run(ports: list[int], seconds: float) -> dict:
    from pymodbus.client import AsyncModbusTcpClient
    from collector.modbus.service import compile_site
    reqs = [(r.function_code, r.address, r.count) for r in compile_site(_site(ports[:1], 1.0))[0].requests]
    clients = [AsyncModbusTcpClient("127.0.0.1", port=p, timeout=2, retries=0, reconnect_delay=0) for p in ports]
    await asyncio.gather(*(c.connect() for c in clients))
    counters = {"regs": 0, "polls": 0}
    stop = False

    async def loop(c) -> None:
        while not stop:
            for fc, a, n in reqs:
                rr = await (c.read_holding_registers(a, count=n, device_id=1) if fc == 3
                            else c.read_input_registers(a, count=n, device_id=1))
                counters["regs"] += len(rr.registers)
            counters["polls"] += 1

    tasks = [asyncio.create_task(loop(c)) for c in clients]
    await asyncio.sleep(1.0)
    r0, p0, c0, t0 = counters["regs"], counters["polls"], time.process_time(), time.perf_counter()
    await asyncio.sleep(seconds)
    r1, p1, c1, t1 = counters["regs"], counters["polls"], time.process_time(), time.perf_counter()
    stop = True
    await asyncio.gather(*tasks, return_exceptions=True)
    for c in clients:
        c.close()
    return {"regs_per_s": (r1 - r0) / (t1 - t0), "cpu_per_read_ms": 1000 * (c1 - c0) / max(1, p1 - p0)}


def _mbpoll_baseline(port: int, seconds: float) -> float | None:
    """Registers/s of mbpoll reading the DTSU666 0x2000 block from one meter in a loop (serial, one process)."""
    from shutil import which
    if not which("mbpoll"):
        return None
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        r = subprocess.run(["mbpoll", "-m", "tcp", "-a", "1", "-r", str(0x2000 + 1), "-c", "28", "-t", "4:hex", "-1",
                            "-p", str(port), "127.0.0.1"], capture_output=True, timeout=5)
        if r.returncode == 0:
            n += 28
    return n / (time.perf_counter() - t0)


def _start_line(units: int, baud: int) -> tuple[subprocess.Popen, int]:
    code = (
        "import asyncio, json, sys\n"
        "from simulators.meters import MeterServer\n"
        "async def main():\n"
        f"    s = MeterServer({PROFILE!r}, list(range(1, {units} + 1)), framer='rtu', baud={baud}, bits_per_char=11,\n"
        "                    response_delay_s=0.020, update_period_s=5.0)\n"
        "    await s.start()\n"
        "    print(json.dumps(s.port), flush=True)\n"
        "    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)\n"
        "asyncio.run(main())\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return proc, json.loads(proc.stdout.readline())


async def _rtu_cycles(port: int, units: int, baud: int, interval_s: float, cycles: int) -> dict:
    from collector.modbus.service import ModbusCollector
    from edge.config import Site
    site = Site.model_validate({
        "orgs": [{"path": "330000", "name": "zj"}],
        "meters": [{"id": f"m{u:02d}", "profile": PROFILE, "org": "330000", "unit_id": u, "interval_s": interval_s,
                    "timeout_ms": 1000, "transport": {"kind": "rtu_over_tcp", "host": "127.0.0.1", "port": port,
                                                      "baudrate": baud, "parity": "E", "turnaround_ms": 20}}
                   for u in range(1, units + 1)]})
    col = ModbusCollector(site, _CountingIngest())
    (bus,) = col.buses.values()
    task = asyncio.create_task(col.run())
    seen: list[float] = []
    deadline = time.monotonic() + interval_s * (cycles + 3)
    while len(seen) < cycles + 1 and time.monotonic() < deadline:   # the first cycle connects: left out
        await asyncio.sleep(0.05)
        if bus.cycles > len(seen):
            seen.append(bus.last_s)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    measured = seen[1:] or seen
    return {"wire_s": bus.wire_s, "cycles_s": [round(c, 4) for c in measured],
            "mean_s": statistics.mean(measured) if measured else None, "max_s": max(measured) if measured else None,
            "failed": col.stats()["reads_failed"]}


def rtu_cycle_vs_wire_limit(quick: bool = False) -> dict:
    units, interval_s, cycles, baud = (4, 2.0, 2, 9600) if quick else (16, 8.0, 5, 9600)
    proc, port = _start_line(units, baud)
    try:
        r = asyncio.run(_rtu_cycles(port, units, baud, interval_s, cycles))
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)
    ratio = r["mean_s"] / r["wire_s"] if r["mean_s"] and r["wire_s"] else None
    return {"modbus.rtu_cycle_vs_wire_limit": {
        "value": round(ratio, 3) if ratio else None, "unit": "measured cycle / wire-time limit",
        "baseline": round(r["wire_s"], 4), "baseline_what": f"the wire time of one cycle computed by collector.modbus.bus "
                                                           f"(what edge check prints): {units} x {PROFILE} (5 reads) at "
                                                           f"{baud} baud 8E1, 3.5-character silences, 20 ms turnaround",
        "ratio": round(ratio, 3) if ratio else None, "goal": "<= 1.3", "met": bool(ratio and ratio <= 1.3),
        "meters": units, "baud": baud, "interval_s": interval_s, "measured_mean_s": r["mean_s"],
        "measured_max_s": r["max_s"], "cycles_s": r["cycles_s"], "failed_reads": r["failed"],
        "statistic": "mean of the measured cycles after the first (which connects)"}}


def run(quick: bool = False) -> dict:
    figures = requests_per_poll()
    figures.update(rtu_cycle_vs_wire_limit(quick))
    count, seconds, rounds = (10, 2.0, 1) if quick else (200, 4.0, 5)
    proc, ports = _start_servers(count)
    try:
        # alternate rounds so both sides see the same background load on a shared machine
        cols, bases = [], []
        for _ in range(rounds):
            cols.append(asyncio.run(_collector_run(ports, seconds)))
            bases.append(asyncio.run(_baseline_run(ports, seconds)))
        # medians over paired rounds: one round disturbed by the machine does not move the figure
        col = {k: statistics.median(c[k] for c in cols) for k in ("regs_per_s", "cpu_per_read_ms")}
        col["failed"] = sum(c["failed"] for c in cols)
        base = {k: statistics.median(b[k] for b in bases) for k in ("regs_per_s", "cpu_per_read_ms")}
        round_ratios = [c["regs_per_s"] / b["regs_per_s"] for c, b in zip(cols, bases) if b["regs_per_s"]]
        mb = _mbpoll_baseline(ports[0], 1.0 if quick else 3.0)
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)
    ratio = statistics.median(round_ratios) if round_ratios else None
    figures["modbus.reads_per_s"] = {
        "value": round(col["regs_per_s"], 1), "unit": "registers/s", "baseline": round(base["regs_per_s"], 1),
        "baseline_what": f"bare pymodbus AsyncModbusTcpClient per meter, same {PROFILE} requests in a tight loop, "
                         f"{count} meters on a simulator process",
        "ratio": round(ratio, 3) if ratio else None, "goal": ">= 0.7 x baseline",
        "met": bool(ratio and ratio >= 0.7),
        "cpu_ms_per_meter_read": round(col["cpu_per_read_ms"], 3),
        "baseline_cpu_ms_per_meter_read": round(base["cpu_per_read_ms"], 3),
        "mbpoll_registers_per_s_one_meter": round(mb, 1) if mb else None,
        "round_ratios": [round(r, 3) for r in round_ratios], "statistic": "medians of paired, alternating rounds",
        "meters": count, "seconds": seconds * rounds, "rounds": rounds, "failed_reads": int(col["failed"])}
    return figures


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
