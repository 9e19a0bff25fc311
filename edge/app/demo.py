"""``edge demo``: the whole system in one process on embedded defaults.

The edge service with its in-process MQTT broker (amqtt: the demo site says ``mqtt.broker:
embedded``, as a small site does, so ``edge demo`` and ``edge run`` start the broker the same way),
one office building metered as real ones are (a main incomer on Modbus TCP; lighting, HVAC and
power sub-meters behind it on an RS-485 line reached through a serial gateway, simulated at its
real 9600 baud; a water and a gas meter), five simulated vehicles publishing JSON over MQTT, the
Modbus poller, GPS subscriber, outbox, embedded store, API and the indicator job. With
``duration_s`` it runs that long, flushes, computes the indicators once more and returns a summary.

``InstitutionSim`` builds and serves one institution's meter tree; a bigger demo (several
institutions) makes one per institution.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from edge.app.service import EdgeService
from edge.config import (
    Analytics,
    Api,
    Building,
    Circle,
    Geofence,
    Meter,
    Mqtt,
    Org,
    Outbox,
    Site,
    SiteInfo,
    Store,
    StoreKind,
    Transport,
    TransportKind,
    Vehicle,
)
from simulators.load import OfficeLoad, SumLoad
from simulators.meters import MeterServer
from simulators.vehicles import VehicleFleet

log = logging.getLogger(__name__)

DEMO_ORG = "330000/330100/330106/inst-042"
HANGZHOU = (30.2741, 120.1551)
PLATES = ("浙A·D0001", "浙A·D0002", "浙A·D0003", "浙A·D0004", "浙A·D0005")


@dataclass(frozen=True)
class DemoMeter:
    id: str
    profile: str
    carrier: str = "electricity"
    parent: str | None = None
    item: str | None = None
    gateway_unit: int | None = None     # on the building's RS-485 line, behind the serial gateway
    peak_kw: float = 0.0                # the circuit's load (electricity sub-meters)


def institution_meters(prefix: str) -> tuple[DemoMeter, ...]:
    """One office building's meters as they are wired: the main incomer, the lighting and sockets,
    HVAC and power (lifts, pumps) boards behind it on one RS-485 line, a water and a gas meter."""
    main = f"{prefix}-main"
    return (
        DemoMeter(main, "chint-dtsu666"),
        DemoMeter(f"{prefix}-lighting", "eastron-sdm630", parent=main, item="01A00", gateway_unit=1, peak_kw=6.0),
        DemoMeter(f"{prefix}-hvac", "eastron-sdm630", parent=main, item="01B00", gateway_unit=2, peak_kw=14.0),
        DemoMeter(f"{prefix}-power", "eastron-sdm630", parent=main, item="01C00", gateway_unit=3, peak_kw=4.0),
        DemoMeter(f"{prefix}-water", "tuf2000m-water", carrier="water", item="02000"),
        DemoMeter(f"{prefix}-gas", "fx-gas-corrector", carrier="gas", item="03A00"),
    )


class InstitutionSim:
    """The simulators of one institution's meter tree, and the site's ``Meter`` entries for them.

    The incomer's load is the sum of its sub-meters' plus unmetered loads and 2 % losses, so its
    children add up below it, as in a real building; the sub-meters share one simulated serial
    gateway at ``baud`` (each frame held for its wire time)."""

    def __init__(self, prefix: str, building: str, org: str, seed: int = 0, interval_s: float = 2.0,
                 baud: int = 9600) -> None:
        self.prefix, self.building, self.org, self.seed = prefix, building, org, seed
        self.interval_s, self.baud = interval_s, baud
        self.spec = institution_meters(prefix)
        self.loads = {m.id: OfficeLoad(peak_kw=m.peak_kw, seed=seed * 100 + i)
                      for i, m in enumerate(self.spec) if m.gateway_unit is not None}
        main = self.spec[0]
        self.main_load = SumLoad([self.loads[m.id] for m in self.spec if m.parent == main.id],
                                 unmetered=OfficeLoad(peak_kw=2.0, seed=seed * 100 + 99), loss_share=0.02)
        self.servers: dict[str, MeterServer] = {}
        self.gateway: MeterServer | None = None

    async def start(self) -> None:
        sub = [m for m in self.spec if m.gateway_unit is not None]
        by_unit = {m.gateway_unit: self.loads[m.id] for m in sub}
        self.gateway = MeterServer(sub[0].profile, [m.gateway_unit for m in sub], framer="rtu", seed=self.seed,
                                   load=lambda u: by_unit[u], baud=self.baud, bits_per_char=11,
                                   response_delay_s=0.020)
        await self.gateway.start()
        for i, m in enumerate(self.spec):
            if m.gateway_unit is None:
                load = self.main_load if m.id == self.spec[0].id else None
                srv = MeterServer(m.profile, unit_ids=[1], seed=self.seed * 10 + i, load=load)
                await srv.start()
                self.servers[m.id] = srv

    async def stop(self) -> None:
        for srv in [*self.servers.values(), *([self.gateway] if self.gateway else [])]:
            with contextlib.suppress(Exception):
                await srv.stop()

    def meters(self) -> tuple[Meter, ...]:
        out = []
        for m in self.spec:
            if m.gateway_unit is not None:
                tr = Transport(kind=TransportKind.rtu_over_tcp, host="127.0.0.1", port=self.gateway.port,
                               baudrate=self.baud, parity="E", turnaround_ms=20)
                unit = m.gateway_unit
            else:
                tr = Transport(kind=TransportKind.tcp, host="127.0.0.1", port=self.servers[m.id].port)
                unit = 1
            out.append(Meter(id=m.id, profile=m.profile, building=self.building, carrier=m.carrier, parent=m.parent,
                             item=m.item, transport=tr, unit_id=unit, interval_s=self.interval_s, timeout_ms=1000))  # a loaded 2-core box stretches a 9600-baud reply
        return tuple(out)


def demo_site(meters: tuple[Meter, ...], broker_port: int, api_port: int, data_dir: Path) -> Site:
    """The demo's site: ``broker_port`` is the embedded broker's (0: any free port), as on any site
    that says ``mqtt.broker: embedded``."""
    return Site(
        site=SiteInfo(name="demo-xihu"),
        orgs=(Org(path="330000", name="浙江省"), Org(path="330000/330100", name="杭州市"),
              Org(path="330000/330100/330106", name="西湖区"), Org(path=DEMO_ORG, name="西湖区机关事务管理中心")),
        buildings=(Building(id="hq", org=DEMO_ORG, name="办公主楼", floor_area_m2=12000, occupants=420),),
        meters=meters,
        geofences=(Geofence(name="hq-yard", org=DEMO_ORG, circle=Circle(lat=HANGZHOU[0], lon=HANGZHOU[1], radius_m=300)),),
        vehicles=tuple(Vehicle(id=f"veh-{i + 1:04d}", plate=PLATES[i], org=DEMO_ORG, home="hq-yard") for i in range(5)),
        mqtt=Mqtt(broker="embedded", embedded_port=broker_port, client_id="edge-demo"),
        store=Store(kind=StoreKind.embedded, path=str(data_dir / "store.sqlite"), flush_interval_ms=500),
        outbox=Outbox(path=str(data_dir / "outbox.sqlite")),
        api=Api(port=api_port),
        analytics=Analytics(interval_s=5.0, fleet_interval_s=10.0),
    )


async def run_demo(duration_s: float | None = None, api_port: int = 8000, data_dir: Path = Path("var/demo"),
                   announce: Callable[[str], None] = print) -> dict[str, Any]:

    data_dir = Path(data_dir)
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    hq = InstitutionSim("hq", "hq", DEMO_ORG)
    await hq.start()
    # the broker is the service's own, as under `edge run` with `mqtt.broker: embedded`
    site = demo_site(hq.meters(), 0, api_port, data_dir)
    service = EdgeService(site, data_dir=data_dir)
    fleet = VehicleFleet(5, service.broker_url, fmt="json", base=HANGZHOU, rate_hz=1.0, seed=7,
                         always_on_duty=True)
    tasks: list[asyncio.Task] = []
    try:
        await service.start()
        announce(f"sensing-edge demo: API http://127.0.0.1:{service.api_bound_port}/docs  "
                 f"(health /v1/health, meters {', '.join(m.id for m in site.meters)}, vehicles veh-0001..veh-0005)"
                 + ("" if duration_s else "  Ctrl-C to stop"))
        tasks.append(asyncio.create_task(fleet.run(), name="fleet"))
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        import signal
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        if duration_s is None:
            await stop.wait()
        else:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), duration_s)
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        try:
            await service.stop_collectors()
            await service.flush()
            # the indicators over everything read, written back and delivered like any point
            indicators = await service.indicators.compute_once()
            await service.flush()
            q = service.query
            meters_read = len({r.tags.get("meter") for r in await q.latest("meter")})
            vehicles_seen = len({r.tags.get("vehicle") for r in await q.latest("position")})
            points_stored = await asyncio.to_thread(
                q.store.select, "SELECT count(*) FROM (SELECT DISTINCT series_id, time_ns FROM points)")
            errors = _collect(service)
            provisional = service.indicators.provisional_years()
        finally:
            await service.stop()
            await hq.stop()
    return {
        "ran_s": round(time.monotonic() - started, 1),
        "meters_read": meters_read,
        "points_stored": points_stored[0][0],
        "vehicles_seen": vehicles_seen,
        "indicators_computed": indicators,
        "provisional_calendar_years": provisional,  # years the holiday calendar lacks: computed weekends-only, flagged
        "errors": errors["errors"],
        "error_detail": errors["error_detail"],
        "data_dir": str(data_dir),
    }


def _collect(service) -> dict[str, Any]:
    c = service.ingest.counters
    detail = {k: v for k, v in c.items() if k.startswith("rejected.") or k.startswith("component_crash")}
    if service.modbus is not None:
        st = service.modbus.stats()
        for k in ("reads_failed",):
            if st.get(k):
                detail[f"modbus.{k}"] = st[k]
    dst = service.deliverer.stats()
    for k in ("dead_lettered", "dropped"):
        if dst.get(k):
            detail[f"delivery.{k}"] = dst[k]
    return {"errors": sum(detail.values()), "error_detail": detail}
