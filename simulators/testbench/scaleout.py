"""Scale-out: two edge instances sharing one fleet through MQTT shared subscriptions
(``mqtt.shared_group``) and splitting the meters by configuration, against one instance.

Throughput is measured on a backlog, so the publisher's speed does not cap it: the edges
subscribe, are paused (SIGSTOP), a burst of positions is published and acknowledged by Mosquitto,
the edges are resumed (SIGCONT) and the clock runs until they have committed every position
(their ``/v1/health`` ``gps.stored`` counters). Then the sources stop, the edges drain and the
run is reconciled: nothing lost, nothing stored twice, and the edges' counts add up to what was
sent (no message taken by both).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import psutil

from simulators.testbench.runner import Bench, finish
from simulators.testbench.scenario import MeterGroup, Scenario, VehicleGroup

GROUP = "bench"


def scaleout_scenario(vehicles: int = 500, meters: int = 40) -> Scenario:
    return Scenario(name="scaleout", duration_s=60, drain_timeout_s=120, meter_processes=1,
                    meters=(MeterGroup(profile="eastron-sdm120", count=meters, interval_s=15, units_per_server=20),),
                    vehicles=(VehicleGroup(count=vehicles, format="json", rate_hz=1.0),))


def _gps_stored(bench: Bench, http: httpx.Client) -> list[int]:
    out = []
    for e in bench.edges:
        doc = http.get(f"http://127.0.0.1:{e.api_port}/v1/health", timeout=10).json()
        out.append(int(doc["components"].get("gps", {}).get("stored", 0)))
    return out


def _cpu_s(bench: Bench) -> dict[str, float]:
    """CPU seconds so far of every process on the bench that works during the drain."""
    procs = {f"edge-{e.index}": e.proc.proc for e in bench.edges}
    procs["mosquitto"] = bench.mosquitto.proc if bench.mosquitto else None
    procs["influxd"] = bench.influx.proc if bench.influx else None
    out = {}
    for name, proc in procs.items():
        if proc is None:
            continue
        try:
            t = psutil.Process(proc.pid).cpu_times()
            out[name] = t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            pass
    t = psutil.Process().cpu_times()
    out["bench"] = t.user + t.system
    return out


CPU_CGROUP_ROOT = Path("/sys/fs/cgroup/cpu")  # cgroup v1 cpu controller (CFS quota)


def cpu_budget_available() -> str | None:
    """None when each edge can be given a CPU budget of its own (cgroup v1 CFS quota), else why not."""
    if not (CPU_CGROUP_ROOT / "cgroup.procs").exists():
        return "no cgroup v1 cpu controller at /sys/fs/cgroup/cpu"
    if not os.access(CPU_CGROUP_ROOT, os.W_OK):
        return "/sys/fs/cgroup/cpu is not writable (needs root)"
    return None


@contextlib.contextmanager
def cpu_budget(pids: list[int], cores: float | None) -> Iterator[None]:
    """Hold each process to ``cores`` CPUs (a CFS quota in a cgroup of its own) inside the block:
    instances measured as if each ran on a host of its own size, whatever else shares this one."""
    if cores is None:
        yield
        return
    groups = []
    try:
        for pid in pids:
            g = CPU_CGROUP_ROOT / f"sensing-edge-bench-{pid}"
            g.mkdir(exist_ok=True)
            groups.append(g)
            (g / "cpu.cfs_period_us").write_text("100000")
            (g / "cpu.cfs_quota_us").write_text(str(int(cores * 100000)))
            (g / "cgroup.procs").write_text(str(pid))
        yield
    finally:
        for g, pid in zip(groups, pids):
            with contextlib.suppress(OSError):
                (CPU_CGROUP_ROOT / "cgroup.procs").write_text(str(pid))
            with contextlib.suppress(OSError):
                g.rmdir()


def measure(edges: int, workdir: Path, ticks: int, scn: Scenario,
            announce: Callable[[str], None] = lambda s: None, cores_per_edge: float | None = None) -> dict[str, Any]:
    with Bench(scn, workdir, store="influxdb", chaos=False, edges=edges, shared_group=GROUP, announce=announce) as bench, \
            contextlib.ExitStack() as stack:
        bench.start_infrastructure()
        ports = bench.start_meters()
        bench._ports = ports
        bench.start_edges(ports, meter_split=True)
        stack.enter_context(cpu_budget([e.proc.proc.pid for e in bench.edges], cores_per_edge))
        run_start_ns = time.time_ns()
        t0 = time.monotonic()
        http = httpx.Client(timeout=10)  # one kept-alive client: polling must not cost the edges' cores
        base = _gps_stored(bench, http)
        for e in bench.edges:
            e.proc.proc.send_signal(signal.SIGSTOP)
        bench.event(time.monotonic() - t0, "edges paused; publishing backlog", ticks=ticks)
        bench.start_fleet(None, ticks=ticks, burst=True)
        bench.fleet_proc.proc.wait(600)
        with open(bench.dir / "positions.log") as f:
            acked = sum(1 for _ in f)
        bench.event(time.monotonic() - t0, "backlog acknowledged by the broker", positions=acked)
        cpu0 = _cpu_s(bench)
        t_go = time.monotonic()
        for e in bench.edges:
            e.proc.proc.send_signal(signal.SIGCONT)
        per_edge = base
        while time.monotonic() - t_go < 300:
            per_edge = [a - b for a, b in zip(_gps_stored(bench, http), base, strict=True)]
            if sum(per_edge) >= acked:
                break
            time.sleep(0.1)
        took = time.monotonic() - t_go
        cpu1 = _cpu_s(bench)
        http.close()
        cpu = {k: round(cpu1[k] - cpu0.get(k, 0.0), 2) for k in cpu1}
        bench.event(time.monotonic() - t0, "backlog committed", s=round(took, 2), per_edge=per_edge)
        report = finish(bench, t0, run_start_ns, time.monotonic() - t0)
    return {"edges": edges, "cores_per_edge": cores_per_edge, "positions": acked, "seconds": took,
            "positions_per_s": acked / took if took else None,
            "per_edge": per_edge, "accounting": report["accounting"], "cpu_s": cpu,
            "cores_busy": round(sum(cpu.values()) / took, 2) if took else None,
            "meters_per_edge": [sum(1 for _ in e.site_file.read_text().splitlines() if _.startswith("- id: m-"))
                                for e in bench.edges]}


def run_scaleout(workdir: Path, vehicles: int = 500, ticks: int = 40,
                 announce: Callable[[str], None] = lambda s: None, cores_per_edge: float | None = None) -> dict[str, Any]:
    """One edge, then two, on the same backlog; the ratio of their throughputs. With ``cores_per_edge``
    each edge is held to that many CPUs (``cpu_budget``)."""
    scn = scaleout_scenario(vehicles)
    sub = "" if cores_per_edge is None else f"-{cores_per_edge:g}cpu"
    one = measure(1, Path(workdir) / f"one{sub}", ticks, scn, announce, cores_per_edge)
    two = measure(2, Path(workdir) / f"two{sub}", ticks, scn, announce, cores_per_edge)
    ratio = two["positions_per_s"] / one["positions_per_s"] if one["positions_per_s"] and two["positions_per_s"] else None
    doubled = sum(two["per_edge"]) - two["positions"]
    return {"one": one, "two": two, "ratio": ratio, "doubled": doubled,
            "lost_unexplained": one["accounting"]["unexplained"] + two["accounting"]["unexplained"]}
