"""Run a scenario: start the store, Mosquitto, the simulators and the edge, inject chaos, drain,
reconcile, and report.

    report = run_scenario(load_scenario("compound"), Path("var/testbench/compound"), duration_s=60)

Every process is real and separate: influxd (or the edge's embedded store), Mosquitto, meter
simulator processes (several Modbus servers each, many unit ids per server), a fleet process, and
the edge itself as ``python -m edge.app.cli run -c site.yaml`` so chaos can ``kill -9`` it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import orjson
import yaml

from analytics.periods import LocalCalendar
from edge.config import (
    Api,
    Building,
    Meter,
    Mqtt,
    Org,
    Outbox,
    PayloadFormat,
    Site,
    SiteInfo,
    Store,
    StoreKind,
    Topic,
    Transport,
    TransportKind,
    Vehicle,
)
from edge.delivery import build_query
from edge.errors import LineProtocolError
from edge.point import parse_line
from edge.query import Where
from simulators.meters import read_profile
from simulators.testbench import accounting
from simulators.testbench.procs import Influx, Mosquitto, PythonProc, free_port, wait_file
from simulators.testbench.scenario import ChaosKind, Scenario

log = logging.getLogger(__name__)

PROVINCE, CITY, COUNTY = "330000", "330000/330100", "330000/330100/330106"
DB = "bench"
KILL_WINDOW_NS = 3_000_000_000  # readings taken this long before a kill -9 may not have reached the outbox


@dataclass
class MeterSlot:
    meter_id: str
    profile: str
    carrier: str
    framer: str
    interval_s: float
    timeout_ms: int
    proc: int
    server: int
    unit: int


@dataclass
class Layout:
    """Which simulator process, server and unit id serves each meter; which vehicles publish where."""

    meters: list[MeterSlot]
    servers: list[list[dict]]          # per process: server specs
    groups: list[dict]                 # vehicle groups for the fleet process
    vehicles: list[tuple[str, str]]    # (vehicle id, org)
    orgs: list[str]


def plan_layout(scn: Scenario) -> Layout:
    n_inst = max(1, scn.meter_count // 40 or 1)
    orgs = [f"{COUNTY}/inst-{i + 1:03d}" for i in range(n_inst)]
    meters: list[MeterSlot] = []
    servers: list[list[dict]] = [[] for _ in range(scn.meter_processes)]
    k = 0
    srv_no = 0
    for g in scn.meters:
        doc, _ = read_profile(g.profile)
        framer = "rtu" if g.transport.value == "rtu_over_tcp" else "socket"
        for start in range(0, g.count, g.units_per_server):
            units = list(range(1, min(g.units_per_server, g.count - start) + 1))
            proc = srv_no % scn.meter_processes
            servers[proc].append({"profile": g.profile, "framer": framer, "units": units, "seed": scn.seed * 100 + srv_no})
            for u in units:
                k += 1
                meters.append(MeterSlot(f"m-{k:04d}", g.profile, doc["carrier"], framer, g.interval_s, g.timeout_ms,
                                        proc, len(servers[proc]) - 1, u))
            srv_no += 1
    groups, vehicles = [], []
    for g in scn.vehicles:
        prefix = f"v{g.format[0]}-"
        groups.append({"count": g.count, "format": g.format, "rate_hz": g.rate_hz, "id_prefix": prefix,
                       "topic": f"fleet/{g.format}/{{id}}/position", "malformed_rate": 0.0})
        vehicles += [(f"{prefix}{i + 1:04d}", orgs[i % len(orgs)]) for i in range(g.count)]
    return Layout(meters, servers, groups, vehicles, orgs)


def build_site(layout: Layout, ports: dict[tuple[int, int], int], *, name: str, store: Store, outbox: Outbox,
               client_id: str, broker_url: str, api_port: int, shared_group: str | None = None,
               meter_filter: Callable[[int], bool] = lambda i: True) -> Site:
    orgs = [Org(path=PROVINCE, name="浙江省"), Org(path=CITY, name="杭州市"), Org(path=COUNTY, name="西湖区")]
    orgs += [Org(path=o, name=f"institution {o.rsplit('-', 1)[-1]}") for o in layout.orgs]
    buildings = [Building(id=f"b-{i + 1:03d}", org=o, floor_area_m2=8000, occupants=300) for i, o in enumerate(layout.orgs)]
    meters = []
    for i, m in enumerate(layout.meters):
        if not meter_filter(i):
            continue
        kind = TransportKind.rtu_over_tcp if m.framer == "rtu" else TransportKind.tcp
        meters.append(Meter(id=m.meter_id, profile=m.profile, carrier=m.carrier, building=buildings[i % len(buildings)].id,
                            transport=Transport(kind=kind, host="127.0.0.1", port=ports[(m.proc, m.server)]),
                            unit_id=m.unit, interval_s=m.interval_s, timeout_ms=m.timeout_ms))
    topics = tuple(Topic(pattern=f"fleet/{g['format']}/+/position", format=PayloadFormat(g["format"]))
                   for g in layout.groups) or (Topic(pattern="fleet/json/+/position"),)
    return Site(site=SiteInfo(name=name), orgs=tuple(orgs), buildings=tuple(buildings), meters=tuple(meters),
                vehicles=tuple(Vehicle(id=v, org=o) for v, o in layout.vehicles),
                mqtt=Mqtt(broker=broker_url, client_id=client_id, topics=topics, shared_group=shared_group),
                store=store, outbox=outbox, api=Api(port=api_port))


def write_site(site: Site, path: Path) -> Path:
    path.write_text(yaml.safe_dump(site.model_dump(mode="json", exclude_defaults=True), allow_unicode=True, sort_keys=False))
    return path


# --- outbox and store readers -----------------------------------------------------------------

def outbox_state(path: Path) -> dict[str, int]:
    """Depth and persistent counters of an edge's outbox (read-only; WAL lets us read beside the writer)."""
    if not path.exists():
        return {"depth": 0}
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            depth = con.execute("SELECT coalesce(sum(n), 0) FROM outbox").fetchone()[0]
            counters = dict(con.execute("SELECT name, value FROM counters").fetchall())
        finally:
            con.close()
    except sqlite3.Error:
        return {"depth": -1}
    return {"depth": int(depth), **{k: int(v) for k, v in counters.items()}}


def outbox_drops(path: Path) -> list[tuple[str, str]]:
    """(reason, line) of every point the outbox recorded as thinned or dropped before the local store
    had it (its ``dropped`` table; the consumers that never got a point are in ``missed``)."""
    if not path.exists():
        return []
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        if not con.execute("SELECT 1 FROM sqlite_master WHERE name = 'dropped'").fetchone():
            return []
        return [(r, ln) for r, missed, ln in con.execute("SELECT reason, missed, line FROM dropped ORDER BY id")
                if "local" in missed.split(",")]
    finally:
        con.close()


def dropped_identities(drops: list[tuple[str, str]], counters: Mapping[str, frozenset[str]]
                       ) -> tuple[dict[str, list[tuple[int, str]]], set[tuple[str, int]], dict[tuple[str, str], dict[int, float]]]:
    """From the outbox's record: meter -> (time, reason), the (vehicle, time) of positions, and the
    counter values of the readings thinned away ((meter, field) -> {time: value}); ``counters``:
    meter -> its counter fields."""
    meters: dict[str, list[tuple[int, str]]] = {}
    positions: set[tuple[str, int]] = set()
    thinned: dict[tuple[str, str], dict[int, float]] = {}
    for reason, line in drops:
        try:
            p = parse_line(line)
        except LineProtocolError:
            continue
        if p.measurement == "meter" and "meter" in p.tags:
            mid = p.tags["meter"]
            meters.setdefault(mid, []).append((p.time_ns, reason))
            if reason == "thinned":
                for f in counters.get(mid, ()):
                    v = p.fields.get(f)
                    if isinstance(v, (int, float)) and not isinstance(v, bool):
                        thinned.setdefault((mid, f), {})[p.time_ns] = float(v)
        elif p.measurement == "position" and "vehicle" in p.tags:
            positions.add((p.tags["vehicle"], p.time_ns))
    return meters, positions, thinned


def counter_fields(layout: "Layout") -> dict[str, frozenset[str]]:
    """Meter -> the cumulative counter fields of its profile (registers marked ``counter: true``)."""
    by_profile = {}
    for prof in {m.profile for m in layout.meters}:
        doc, _ = read_profile(prof)
        by_profile[prof] = frozenset(r["name"] for r in doc["registers"] if r.get("counter"))
    return {m.meter_id: by_profile[m.profile] for m in layout.meters}


def dead_letters(path: Path) -> list[tuple[str, bytes, str]]:
    """(topic, payload, reason) of every payload dead letter."""
    if not path.exists():
        return []
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return [(t, bytes(p), r) for t, p, r in
                con.execute("SELECT topic, payload, reason FROM dead_letter WHERE kind = 'payload'").fetchall()]
    finally:
        con.close()


def rejected_positions(letters: list[tuple[str, bytes, str]]) -> list[tuple[str, int]]:
    """(vehicle, time) of dead-lettered payloads that decode (refused by validation, not malformed).

    The bench reads its own formats here (json: ISO ``time``; owntracks: ``tst`` seconds)."""
    from datetime import datetime
    out = []
    for topic, payload, _ in letters:
        try:
            doc = orjson.loads(payload)
            vid = topic.split("/")[-2]
            if "tst" in doc:
                t_ns = int(doc["tst"]) * 1_000_000_000
            else:
                dt = datetime.fromisoformat(doc["time"])
                t_ns = int(dt.timestamp()) * 1_000_000_000 + dt.microsecond // 1000 * 1_000_000
        except (orjson.JSONDecodeError, AttributeError, IndexError, KeyError, TypeError, ValueError):
            continue
        out.append((vid, t_ns))
    return out


async def _store_times(store: Store, layout: Layout, start_ns: int, end_ns: int,
                       with_counters: bool = False) -> tuple[dict, dict, dict]:
    q = build_query(store)
    try:
        meters: dict[str, list[int]] = {}
        counters: dict[tuple[str, str], dict[int, float]] = {}
        for prof in sorted({m.profile for m in layout.meters}):
            doc, regs = read_profile(prof)
            names = sorted({r.name for r in regs})
            counting = {r["name"] for r in doc["registers"] if r.get("counter")} if with_counters else set()
            seen: dict[str, set[int]] = {}
            for s in await q.raw("meter", names, start_ns, end_ns, Where(tags={"profile": prof})):
                seen.setdefault(s.tags["meter"], set()).update(int(t) for t in s.times_ns)
                if s.field in counting:
                    counters[(s.tags["meter"], s.field)] = {int(t): float(v) for t, v in zip(s.times_ns, s.values,
                                                                                             strict=True)}
            for mid, ts in seen.items():
                meters[mid] = sorted(ts)
        positions: dict[str, list[int]] = {}
        if layout.vehicles:
            for s in await q.raw("position", ["lat"], start_ns, end_ns):
                positions[s.tags["vehicle"]] = [int(t) for t in s.times_ns]
        return meters, positions, counters
    finally:
        await q.aclose()


def store_times(store: Store, layout: Layout, start_ns: int, end_ns: int, with_counters: bool = False
                ) -> tuple[dict, dict, dict]:
    """Meter -> stored times, vehicle -> stored times and, ``with_counters``, (meter, counter field)
    -> {time: value}."""
    return asyncio.run(_store_times(store, layout, start_ns, end_ns, with_counters))


# --- the run ----------------------------------------------------------------------------------

@dataclass
class Sample:
    t_s: float
    cpu_s: float
    rss_mb: float
    depth: int
    committed: int


@dataclass
class EdgeProc:
    index: int
    site_file: Path
    outbox_path: Path
    log: Path
    api_port: int = 0
    proc: PythonProc | None = None
    cpu_before_s: float = 0.0  # CPU of earlier (killed) incarnations
    last_cpu_s: float = 0.0
    kills: list[int] = field(default_factory=list)

    def start(self) -> None:
        self.proc = PythonProc(["-m", "edge.app.cli", "run", "-c", str(self.site_file), "--log-level", "warning"],
                               self.log, f"edge-{self.index}").start()
        self.last_cpu_s = 0.0

    def wait_ready(self, need_mqtt: bool, timeout_s: float = 60.0) -> None:
        """Until the API answers and, with vehicles, the MQTT subscription is in place."""
        import httpx
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.proc.alive:
                raise RuntimeError(f"edge-{self.index} exited: {self.log.read_text(errors='replace')[-2000:]}")
            try:
                doc = httpx.get(f"http://127.0.0.1:{self.api_port}/v1/health", timeout=2).json()
                if not need_mqtt or doc["components"].get("gps", {}).get("connected"):
                    return
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"edge-{self.index} not ready within {timeout_s} s")

    def intake_settled(self) -> bool:
        """The edge's MQTT intake is connected and not paused by a full outbox (positions the outbox
        held back may still wait in the broker until it is)."""
        import httpx
        try:
            gps = httpx.get(f"http://127.0.0.1:{self.api_port}/v1/health", timeout=2).json()["components"].get("gps")
        except (httpx.HTTPError, ValueError, KeyError):
            return False
        return gps is None or (bool(gps.get("connected")) and not gps.get("paused"))

    def kill9(self) -> None:
        self.sample()
        self.cpu_before_s += self.last_cpu_s
        self.kills.append(time.time_ns())
        self.proc.kill9()

    def sample(self) -> tuple[float, float] | None:
        s = self.proc.sample() if self.proc else None
        if s is not None:
            self.last_cpu_s = s[0]
        return s


class Bench:
    """The processes of one run. Use as a context manager; ``close`` stops whatever still runs."""

    def __init__(self, scn: Scenario, workdir: Path, *, store: str = "influxdb", chaos: bool = True,
                 edges: int = 1, shared_group: str | None = None, announce: Callable[[str], None] = lambda s: None) -> None:
        self.scn, self.store_kind, self.chaos_on = scn, store, chaos
        self.dir = Path(workdir).resolve()
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self.n_edges, self.shared_group = edges, shared_group
        self.announce = announce
        self.layout = plan_layout(scn)
        self.influx: Influx | None = None
        self.mosquitto: Mosquitto | None = None
        self.meter_procs: list[PythonProc] = []
        self.fleet_proc: PythonProc | None = None
        self.edges: list[EdgeProc] = []
        self.samples: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.store_cfg: Store | None = None
        self.outages: list[list[int]] = []  # [stop_ns, start_ns] of each store outage
        self._ports: dict[tuple[int, int], int] = {}

    def __enter__(self) -> "Bench":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.fleet_proc is not None:
            self.fleet_proc.stop()
        for p in self.meter_procs:
            p.stop()
        for e in self.edges:
            if e.proc is not None:
                e.proc.stop()
        if self.mosquitto is not None:
            self.mosquitto.stop()
        if self.influx is not None:
            self.influx.stop()

    # -- start --------------------------------------------------------------------------------
    def start_infrastructure(self) -> None:
        if self.store_kind == "influxdb":
            self.influx = Influx(self.dir / "influxd").start()
            self.influx.create_database(DB)
            self.store_cfg = Store(kind=StoreKind.influxdb_v1, url=self.influx.url, database=DB,
                                   flush_interval_ms=500, timeout_ms=5000)
        else:
            self.store_cfg = Store(kind=StoreKind.embedded, path=str(self.dir / "store.sqlite"), flush_interval_ms=500)
        if self.layout.vehicles:
            self.mosquitto = Mosquitto(self.dir / "mosquitto").start()

    def start_meters(self) -> dict[tuple[int, int], int]:
        chaos = self.scn.chaos if self.chaos_on else None
        events = [e.model_dump(mode="json") for e in (chaos.events if chaos else ())
                  if e.kind in (ChaosKind.meter_timeouts, ChaosKind.counter_reset)]
        ports: dict[tuple[int, int], int] = {}
        for i, servers in enumerate(self.layout.servers):
            if not servers:
                continue
            spec = {"servers": servers, "log": str(self.dir / f"served-{i}.log"), "ready": str(self.dir / f"meters-{i}.ready"),
                    "faults_log": str(self.dir / f"faults-{i}.json"), "events": events, "seed": self.scn.seed + i}
            (self.dir / f"meters-{i}.json").write_text(json.dumps(spec))
            self.meter_procs.append(PythonProc(["-m", "simulators.testbench.meterproc", str(self.dir / f"meters-{i}.json")],
                                               self.dir / f"meters-{i}.out", f"meters-{i}").start())
        for i, p in enumerate(self.meter_procs):
            got = json.loads(wait_file(self.dir / f"meters-{i}.ready", p))
            for j, port in enumerate(got["ports"]):
                ports[(i, j)] = port
        return ports

    def start_edges(self, ports: dict[tuple[int, int], int], meter_split: bool = True) -> None:
        chaos = self.scn.chaos if self.chaos_on else None
        for k in range(self.n_edges):
            edir = self.dir / f"edge-{k}"
            edir.mkdir()
            ob = Outbox(path=str(edir / "outbox.sqlite"),
                        **({"max_bytes": chaos.outbox_max_bytes} if chaos and chaos.outbox_max_bytes else {}))
            n = self.n_edges
            site = build_site(self.layout, ports, name=f"bench-{self.scn.name}", store=self.store_cfg, outbox=ob,
                              client_id=f"bench-edge-{k}", broker_url=self.mosquitto.url if self.mosquitto else "mqtt://127.0.0.1:1",
                              api_port=free_port(), shared_group=self.shared_group,
                              meter_filter=(lambda i, k=k, n=n: i % n == k) if meter_split else (lambda i: True))
            e = EdgeProc(k, write_site(site, edir / "site.yaml"), edir / "outbox.sqlite", edir / "edge.log",
                         api_port=site.api.port)
            e.start()
            self.edges.append(e)
        for e in self.edges:
            e.wait_ready(bool(self.layout.vehicles))

    def start_fleet(self, duration_s: float | None, ticks: int | None = None, burst: bool = False) -> None:
        if not self.layout.groups:
            return
        rate = self.scn.chaos.malformed_rate if self.chaos_on else 0.0
        groups = [dict(g, malformed_rate=rate) for g in self.layout.groups]
        spec = {"broker_url": self.mosquitto.url, "groups": groups, "seed": self.scn.seed, "duration_s": duration_s,
                "ticks": ticks, "burst": burst,
                "log": str(self.dir / "positions.log"), "summary": str(self.dir / "fleet.json"),
                "ready": str(self.dir / "fleet.ready")}
        (self.dir / "fleet-spec.json").write_text(json.dumps(spec))
        self.fleet_proc = PythonProc(["-m", "simulators.testbench.fleetproc", str(self.dir / "fleet-spec.json")],
                                     self.dir / "fleet.out", "fleet").start()
        wait_file(self.dir / "fleet.ready", self.fleet_proc)

    def store_down(self) -> None:
        self.outages.append([time.time_ns(), 0])
        self.influx.stop()

    def store_up(self) -> None:
        self.influx.start()
        self.outages[-1][1] = time.time_ns()

    # -- observe ------------------------------------------------------------------------------
    def sample(self, t_s: float) -> dict[str, Any]:
        row: dict[str, Any] = {"t_s": round(t_s, 2), "cpu_s": 0.0, "rss_mb": 0.0, "depth": 0, "committed": 0}
        for e in self.edges:
            s = e.sample()
            row["cpu_s"] += e.cpu_before_s + e.last_cpu_s
            if s is not None:
                row["rss_mb"] += s[1]
            st = outbox_state(e.outbox_path)
            row["depth"] += max(0, st.get("depth", 0))
            row["committed"] += st.get("committed", 0)
        self.samples.append(row)
        return row

    def event(self, t_s: float, what: str, **kw: Any) -> None:
        self.events.append({"t_s": round(t_s, 2), "event": what, **kw})
        self.announce(f"[{t_s:6.1f} s] {what} {kw if kw else ''}")


def _actions(bench: Bench) -> list[tuple[float, str, Callable[[], None]]]:
    """The chaos schedule as (time, label, action) steps, in order."""
    acts: list[tuple[float, str, Callable[[], None]]] = []
    if not bench.chaos_on:
        return acts
    for ev in bench.scn.chaos.events:
        if ev.kind is ChaosKind.edge_kill:
            e = bench.edges[0]
            acts.append((ev.at_s, "edge kill -9", e.kill9))
            acts.append((ev.at_s + max(ev.duration_s, 0.5), "edge restart", e.start))
        elif ev.kind is ChaosKind.mosquitto_restart and bench.mosquitto is not None:
            acts.append((ev.at_s, "mosquitto restart", bench.mosquitto.restart))
        elif ev.kind is ChaosKind.store_outage and bench.influx is not None:
            acts.append((ev.at_s, "influxdb stop", bench.store_down))
            acts.append((ev.at_s + ev.duration_s, "influxdb start", bench.store_up))
        elif ev.kind in (ChaosKind.meter_timeouts, ChaosKind.counter_reset):
            acts.append((ev.at_s, f"meters: {ev.kind.value} ({ev.fraction:.0%} of meters)", lambda: None))
    return sorted(acts, key=lambda a: a[0])


def read_served(bench: Bench) -> dict[str, list[tuple[int, int, int]]]:
    """Meter id -> (time, function, address) of every read its simulator answered."""
    by_port_unit: dict[tuple[int, int], str] = {}
    ports = bench._ports
    for m in bench.layout.meters:
        by_port_unit[(ports[(m.proc, m.server)], m.unit)] = m.meter_id
    out: dict[str, list[int]] = {}
    for i in range(len(bench.meter_procs)):
        p = bench.dir / f"served-{i}.log"
        if not p.exists():
            continue
        for line in p.read_text().splitlines():
            parts = line.split()
            if len(parts) != 6:
                continue
            mid = by_port_unit.get((int(parts[0]), int(parts[1])))
            if mid is not None:
                out.setdefault(mid, []).append((int(parts[5]), int(parts[2]), int(parts[3])))
    return out


def read_sent_positions(bench: Bench) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    p = bench.dir / "positions.log"
    if p.exists():
        for line in p.read_text().splitlines():
            vid, t = line.split()
            out.setdefault(vid, set()).add(int(t))
    return out


def run_scenario(scn: Scenario, workdir: Path, *, duration_s: float | None = None, chaos: bool = True,
                 store: str = "influxdb", announce: Callable[[str], None] = lambda s: None,
                 sample_every_s: float = 1.0) -> dict[str, Any]:
    """Run one scenario end to end and return its report (also written to ``workdir/report.json``)."""
    duration = duration_s or scn.duration_s
    if duration_s is not None and chaos and duration_s != scn.duration_s:
        scn = scn.model_copy(update={"chaos": scn.chaos.scaled(duration_s / scn.duration_s)})
    with Bench(scn, workdir, store=store, chaos=chaos, announce=announce) as bench:
        bench.start_infrastructure()
        ports = bench.start_meters()
        bench._ports = ports
        bench.start_edges(ports)
        run_start_ns = time.time_ns()
        t0 = time.monotonic()
        bench.event(0.0, "start", meters=scn.meter_count, vehicles=scn.vehicle_count, duration_s=duration,
                    chaos=chaos, store=store)
        bench.start_fleet(duration)
        acts = _actions(bench)
        next_sample = 0.0
        while True:
            now = time.monotonic() - t0
            while acts and acts[0][0] <= now:
                at, label, fn = acts.pop(0)
                bench.event(now, label)
                fn()
            if now >= duration:
                break
            if now >= next_sample:
                bench.sample(now)
                next_sample += sample_every_s
            time.sleep(min(0.2, max(0.0, duration - now)))
        for _at, label, fn in acts:  # anything scheduled past the end (an outage's end) happens now
            if "kill" not in label and "stop" not in label:
                bench.event(time.monotonic() - t0, label)
                fn()
        for e in bench.edges:
            if not e.proc.alive:
                e.start()
        report = finish(bench, t0, run_start_ns, duration)
    (Path(workdir) / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    return report


def finish(bench: Bench, t0: float, run_start_ns: int, duration: float) -> dict[str, Any]:
    """Stop the sources, let the edge drain, stop it, reconcile: the report of a run."""
    scn = bench.scn
    # sources stop: what was sent is now final
    if bench.fleet_proc is not None:
        bench.fleet_proc.stop(60)
    for p in bench.meter_procs:
        p.stop()
    end_ns = time.time_ns()
    bench.event(time.monotonic() - t0, "sources stopped")
    snap_meters, snap_pos, _ = store_times(bench.store_cfg, bench.layout, run_start_ns - 3_600_000_000_000,
                                           end_ns + 60_000_000_000)
    # drain: until the outbox is empty, nothing new arrives for a few seconds and no edge's MQTT
    # intake is paused by a full outbox (what it held back waits in the broker until it resumes)
    drain_t0 = time.monotonic()
    stable_since, last_committed = None, None
    drained = False
    while time.monotonic() - drain_t0 < scn.drain_timeout_s:
        row = bench.sample(time.monotonic() - t0)
        if row["depth"] == 0 and row["committed"] == last_committed and all(e.intake_settled() for e in bench.edges):
            stable_since = stable_since or time.monotonic()
            if time.monotonic() - stable_since >= 3.0:
                drained = True
                break
        else:
            stable_since = None
        last_committed = row["committed"]
        time.sleep(0.5)
    drain_s = time.monotonic() - drain_t0
    bench.event(time.monotonic() - t0, "drained" if drained else "drain timed out", drain_s=round(drain_s, 1))
    for e in bench.edges:
        e.sample()
        e.proc.stop(60)
    final_meters, final_pos, final_counters = store_times(bench.store_cfg, bench.layout,
                                                          run_start_ns - 3_600_000_000_000, end_ns + 60_000_000_000,
                                                          with_counters=True)
    report = _report(bench, duration, drain_s, drained, snap_meters, snap_pos, final_meters, final_pos, final_counters)
    return report


def _report(bench: Bench, duration: float, drain_s: float, drained: bool, snap_meters: dict, snap_pos: dict,
            final_meters: dict, final_pos: dict, final_counters: dict | None = None) -> dict[str, Any]:
    scn = bench.scn
    interval = {m.meter_id: m.interval_s for m in bench.layout.meters}
    served = read_served(bench)
    polls = {mid: accounting.group_polls(ts, interval[mid]) for mid, ts in served.items()}
    kills = [k for e in bench.edges for k in e.kills]
    # what a full outbox thinned or dropped, point by point (its own record), explains a loss of that identity
    counters = counter_fields(bench.layout)
    drop_m, drop_p, thinned = dropped_identities([d for e in bench.edges for d in outbox_drops(e.outbox_path)], counters)
    macc = accounting.reconcile_meters(polls, final_meters, snap_meters, kills, kill_window_ns=KILL_WINDOW_NS,
                                       interval_s=interval, dropped=drop_m)
    letters = [d for e in bench.edges for d in dead_letters(e.outbox_path)]
    sent = read_sent_positions(bench)
    pacc = accounting.reconcile_positions(sent, final_pos, snap_pos, rejected_positions(letters), dropped=drop_p)
    ob = [outbox_state(e.outbox_path) for e in bench.edges]
    dropped = sum(o.get("dropped", 0) + o.get("thinned", 0) for o in ob)
    rec = accounting.reconcile(macc, pacc, dropped, len(drop_p))
    # the energy of every meter, counter and local day from the stored readings against the same
    # with the readings the outbox thinned away put back: thinning must not change a kilowatt-hour
    energy = _energy_check(final_counters or {}, thinned, bench.layout)
    fleet = json.loads((bench.dir / "fleet.json").read_text()) if (bench.dir / "fleet.json").exists() else {}
    faults = []
    for i in range(len(bench.meter_procs)):
        p = bench.dir / f"faults-{i}.json"
        if p.exists():
            faults += json.loads(p.read_text())
    malformed_letters = sum(1 for _, _, r in letters if not r.startswith(("jump", "speed", "future", "zero", "invalid_fix")))
    samples = bench.samples
    run_samples = [s for s in samples if s["t_s"] <= duration]
    cpu_cores = None
    if len(run_samples) >= 2:
        a, b = run_samples[min(5, len(run_samples) - 2)], run_samples[-1]
        if b["t_s"] > a["t_s"]:
            cpu_cores = (b["cpu_s"] - a["cpu_s"]) / (b["t_s"] - a["t_s"])
    rss = [s["rss_mb"] for s in run_samples if s["rss_mb"] > 0]
    stored_total = macc.stored + pacc.stored
    return {
        "scenario": scn.name, "meters": scn.meter_count, "vehicles": scn.vehicle_count, "duration_s": duration,
        "store": bench.store_kind, "chaos": bench.chaos_on, "drained": drained, "drain_s": round(drain_s, 1),
        "events": bench.events, "kills_ns": kills, "outages_ns": bench.outages,
        "accounting": rec.as_dict(),
        "fleet": {k: v for k, v in fleet.items() if k != "malformed_payloads"},
        "meter_faults": {k: sum(1 for f in faults if f["kind"] == k) for k in ("meter_timeouts", "counter_reset")},
        "dead_letters": {"payloads": len(letters), "malformed_or_undecodable": malformed_letters},
        "outbox": ob,
        "outbox_full": {"held_back": sum(o.get("held_back", 0) for o in ob),
                        "thinned": sum(o.get("thinned", 0) for o in ob),
                        "dropped": sum(o.get("dropped", 0) for o in ob),
                        "recorded": {"meter_readings": sum(len(v) for v in drop_m.values()), "positions": len(drop_p)}},
        "energy": energy,
        "edge": {"cpu_cores": None if cpu_cores is None else round(cpu_cores, 3),
                 "rss_mb_max": round(max(rss), 1) if rss else None,
                 "rss_mb_last": round(rss[-1], 1) if rss else None,
                 "kills": len(kills)},
        "throughput_points_per_s": round(stored_total / duration, 1),
        "samples": samples,
    }


def _energy_check(stored: dict, thinned: dict, layout: Layout) -> dict[str, Any]:
    """Energy per meter, counter field and local day with and without the thinned readings."""
    times = [t for vals in list(stored.values()) + list(thinned.values()) for t in vals]
    if not thinned or not times:
        return {"meter_counters_thinned": 0, "days": 0, "changed": 0, "examples": []}
    cal = LocalCalendar()
    first_day = int(cal.local_day_index(min(times)))
    days = int(cal.local_day_index(max(times))) - first_day + 1
    changed = accounting.energy_changed(stored, thinned, int(cal.day_start_ns(first_day)), days)
    return {"meter_counters_thinned": sum(1 for v in thinned.values() if v), "days": days,
            "readings_thinned": sum(len(v) for v in thinned.values()), "changed": len(changed),
            "examples": [{"meter": m, "field": f, "day": d, "kwh_all": a, "kwh_stored": b}
                         for m, f, d, a, b in changed[:5]]}
