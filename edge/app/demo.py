"""``edge demo``: the whole system in one process on embedded defaults, on a district's data.

The edge service with its in-process MQTT broker (amqtt: the demo site says ``mqtt.broker:
embedded``, as a small site does, so ``edge demo`` and ``edge run`` start the broker the same way)
and the demo district of ``edge.app.district``: four institutions on two levels of the org tree,
five office buildings metered as real ones are (each a main incomer on Modbus TCP; lighting, HVAC
and power sub-meters behind it on the building's own RS-485 line reached through a serial gateway,
simulated at its real 9600 baud; a water and a gas meter: 30 meters), twenty simulated vehicles
publishing JSON over MQTT, the Modbus poller, GPS subscriber, outbox, embedded store, API and the
indicator job. With ``duration_s`` it runs that long, flushes, computes the indicators once more
and returns a summary.

``InstitutionSim`` builds and serves one building's meter tree; the district makes one per building.
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

from edge.app import district
from edge.app.backfill import Progress, backfill
from edge.app.service import EdgeService
from edge.app.site import compile_site
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
from simulators.history import EventLoad, LoadEvent, MeterModel, VehicleModel
from simulators.load import OfficeLoad, SumLoad
from simulators.meters import MeterServer
from simulators.vehicles import VehicleFleet

log = logging.getLogger(__name__)

DEMO_ORG = district.INST_CENTRE
HANGZHOU = (30.2741, 120.1551)
METER_INTERVAL_S = 5.0   # 30 meters: five RS-485 lines of three, each well inside its bus budget


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
    HVAC and power (lifts, pumps) boards behind it on one RS-485 line (CT-connected CHINT DTSU666s
    like the incomer), a water and a gas meter."""
    main = f"{prefix}-main"
    return (
        DemoMeter(main, "chint-dtsu666"),
        DemoMeter(f"{prefix}-lighting", "chint-dtsu666", parent=main, item="01A00", gateway_unit=1, peak_kw=6.0),
        DemoMeter(f"{prefix}-hvac", "chint-dtsu666", parent=main, item="01B00", gateway_unit=2, peak_kw=14.0),
        DemoMeter(f"{prefix}-power", "chint-dtsu666", parent=main, item="01C00", gateway_unit=3, peak_kw=4.0),
        DemoMeter(f"{prefix}-water", "tuf2000m-water", carrier="water", item="02000"),
        DemoMeter(f"{prefix}-gas", "fx-gas-corrector", carrier="gas", item="03A00"),
    )


UNMETERED_KW = 2.0  # what the incomer feeds that no sub-meter measures (at scale 1)
CT_RATIOS = (1, 2, 5, 10, 20, 40, 60, 80, 100, 150, 200)
METER_RATED_KW = 100.0  # the DTSU666's power register range (secondary side): a circuit above it needs a CT


def ct_ratio_for(peak_kw: float) -> int:
    """The smallest current transformer ratio that keeps a circuit's highest load (twice its working-day
    peak: HVAC on the hottest afternoon) within 80 % of the meter's range, as an installer sizes one."""
    return next((r for r in CT_RATIOS if 2.0 * peak_kw <= 0.8 * METER_RATED_KW * r), CT_RATIOS[-1])


class InstitutionSim:
    """The simulators of one building's meter tree, and the site's ``Meter`` entries for them.

    The incomer's load is the sum of its sub-meters' plus unmetered loads and 2 % losses, so its
    children add up below it, as in a real building; the sub-meters share one simulated serial
    gateway at ``baud`` (each frame held for its wire time). ``scale`` sizes every circuit (the
    peaks of ``institution_meters`` are a small building's)."""

    def __init__(self, prefix: str, building: str, org: str, seed: int = 0, interval_s: float = 2.0,
                 baud: int = 9600, scale: float = 1.0) -> None:
        self.prefix, self.building, self.org, self.seed = prefix, building, org, seed
        self.interval_s, self.baud, self.scale = interval_s, baud, scale
        self.spec = institution_meters(prefix)
        self.loads = {m.id: OfficeLoad(peak_kw=m.peak_kw * scale, seed=seed * 100 + i)
                      for i, m in enumerate(self.spec) if m.gateway_unit is not None}
        main = self.spec[0]
        self.main_load = SumLoad([self.loads[m.id] for m in self.spec if m.parent == main.id],
                                 unmetered=OfficeLoad(peak_kw=UNMETERED_KW * scale, seed=seed * 100 + 99),
                                 loss_share=0.02)
        self.servers: dict[str, MeterServer] = {}
        self.gateway: MeterServer | None = None
        subs = [m for m in self.spec if m.gateway_unit is not None]
        self.ct = {main.id: ct_ratio_for(self.main_load.peak_kw)}
        gateway_ct = ct_ratio_for(max(m.peak_kw for m in subs) * scale)   # one CT size on the board
        self.ct.update({m.id: gateway_ct for m in subs})

    async def start(self) -> None:
        sub = [m for m in self.spec if m.gateway_unit is not None]
        by_unit = {m.gateway_unit: self.loads[m.id] for m in sub}
        self.gateway = MeterServer(sub[0].profile, [m.gateway_unit for m in sub], framer="rtu", seed=self.seed,
                                   load=lambda u: by_unit[u], baud=self.baud, bits_per_char=11,
                                   response_delay_s=0.020, ct_ratio=self.ct[sub[0].id])
        await self.gateway.start()
        for i, m in enumerate(self.spec):
            if m.gateway_unit is None:
                load = self.main_load if m.id == self.spec[0].id else None
                srv = MeterServer(m.profile, unit_ids=[1], seed=self.seed * 10 + i, load=load,
                                  ct_ratio=self.ct.get(m.id, 1.0))
                await srv.start()
                self.servers[m.id] = srv

    async def stop(self) -> None:
        for srv in [*self.servers.values(), *([self.gateway] if self.gateway else [])]:
            with contextlib.suppress(Exception):
                await srv.stop()

    def _served(self, m: DemoMeter) -> tuple[MeterServer, int]:
        """The simulator serving meter ``m`` and its unit id there (after ``start``)."""
        if m.gateway_unit is not None:
            return self.gateway, m.gateway_unit
        return self.servers[m.id], 1

    def history_models(self, events: dict[str, list[LoadEvent]] | None = None) -> list[MeterModel]:
        """What drives each meter's counter, for ``simulators.history`` (after ``start``): the same loads
        and seeds as the live simulators, each counter starting from the one the simulator holds;
        ``events`` (by sub-meter id) are added to that circuit, and so to the incomer's sum."""
        events = events or {}
        loads = {k: EventLoad(v, events[k]) if k in events else v for k, v in self.loads.items()}
        main = self.main_load
        if any(k in events for k in self.loads):
            main = SumLoad([loads[k] for k in self.loads], unmetered=main.unmetered, loss_share=main.loss_share)
        out = []
        for m in self.spec:
            srv, unit = self._served(m)
            sim = srv.meters[unit]
            load = main if m.id == self.spec[0].id else loads.get(m.id)
            out.append(MeterModel(m.id, m.carrier, load, sim.seed, sim.counters[sim.counter_key()[0]]))
        return out

    def continue_from(self, ids: list[str], values, t_ns: int) -> None:
        """Live counters carry on from the history's end values (``CounterHistory.end_values``) at ``t_ns``."""
        where = {m.id: m for m in self.spec}
        for mid, v in zip(ids, values):
            if mid in where:
                srv, unit = self._served(where[mid])
                srv.continue_counter(unit, float(v), t_ns)

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
                             item=m.item, transport=tr, unit_id=unit, interval_s=self.interval_s, timeout_ms=300,
                             ct_ratio=self.ct.get(m.id, 1.0)))
        return tuple(out)


def demo_site(meters: tuple[Meter, ...], broker_port: int, api_port: int, data_dir: Path,
              weather_csv: str | None = None) -> Site:
    """The demo district's site (``edge.app.district``): ``broker_port`` is the embedded broker's (0:
    any free port), as on any site that says ``mqtt.broker: embedded``; ``weather_csv`` the hourly
    temperature the baselines use (the backfill writes it)."""
    return Site(
        site=SiteInfo(name="demo-xihu"),
        orgs=tuple(Org(path=p, name=n, level=lv) for p, n, lv in district.ORGS),
        buildings=tuple(Building(id=b.id, org=b.org, name=b.name, floor_area_m2=b.floor_area_m2,
                                 occupants=b.occupants, quota_class="A") for b in district.BUILDINGS),
        meters=meters,
        geofences=tuple(Geofence(name=y.name, org=y.org, circle=Circle(lat=y.lat, lon=y.lon, radius_m=y.radius_m))
                        for y in district.YARDS),
        vehicles=tuple(Vehicle(id=v.id, plate=v.plate, org=v.org, home=v.yard) for v in district.vehicles()),
        mqtt=Mqtt(broker="embedded", embedded_port=broker_port, client_id="edge-demo"),
        store=Store(kind=StoreKind.embedded, path=str(data_dir / "store.sqlite"), flush_interval_ms=500),
        outbox=Outbox(path=str(data_dir / "outbox.sqlite")),
        api=Api(port=api_port),
        analytics=Analytics(interval_s=5.0, fleet_interval_s=15.0, weather_csv=weather_csv),
    )


def building_sims(interval_s: float = METER_INTERVAL_S) -> list[InstitutionSim]:
    """One ``InstitutionSim`` per building of the district, each with its own serial gateway."""
    return [InstitutionSim(b.id, b.id, b.org, seed=b.seed, interval_s=interval_s, scale=b.scale)
            for b in district.BUILDINGS]


def fleet_depots() -> list[tuple[float, float]]:
    """Each vehicle's yard (lat, lon), in the order of ``district.vehicles()``."""
    yards = {y.name: (y.lat, y.lon) for y in district.YARDS}
    return [yards[v.yard] for v in district.vehicles()]


def history_events(sims: list[InstitutionSim], last_day_start_ns: int, end_ns: int) -> dict[str, list[LoadEvent]]:
    """The district's history events (``district.EVENTS``) placed before the last closed day."""
    day = 86_400 * 10**9
    out: dict[str, list[LoadEvent]] = {}
    loads = {k: v for sim in sims for k, v in sim.loads.items()}
    for ev in district.EVENTS:
        a = last_day_start_ns - ev.days_before * day
        b = end_ns if ev.days is None else a + ev.days * day
        out.setdefault(ev.meter, []).append(LoadEvent(a, b, loads[ev.meter].peak_kw * ev.extra_share, ev.factor, ev.what))
    return out


def vehicle_models() -> list[VehicleModel]:
    """The district's vehicles for the history: their yards, how busy each is (the pool's busiest,
    one of the education bureau's hardly used: an under-used vehicle to show), their odometers."""
    out = []
    for k, (v, yard) in enumerate(zip(district.vehicles(), fleet_depots())):
        activity = district.ACTIVITY.get(v.id, 0.35 + 0.45 * ((k * 7) % 10) / 10)
        out.append(VehicleModel(v.id, yard, activity, 8000.0 + 6100.0 * k))
    return out


DEFAULT_DAYS = 400


async def run_demo(duration_s: float | None = None, api_port: int = 8000, data_dir: Path = Path("var/demo"),
                   announce: Callable[[str], None] = print, days: int = DEFAULT_DAYS,
                   progress: Progress | None = None) -> dict[str, Any]:
    """Run the demo district; with ``days`` > 0 it starts from that many days of history
    (``edge.app.backfill``) and the live simulators carry on from its end."""
    data_dir = Path(data_dir)
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    sims = building_sims()
    for sim in sims:
        await sim.start()
    # the broker is the service's own, as under `edge run` with `mqtt.broker: embedded`
    site = demo_site(tuple(m for sim in sims for m in sim.meters()), 0, api_port, data_dir,
                     weather_csv=str(data_dir / "weather.csv") if days > 0 else None)
    compile_site(site, "<demo site>")  # what `edge check` refuses (a bus over its budget...) the demo does too
    service = EdgeService(site, data_dir=data_dir)
    history = None
    if days > 0:
        end_ns = service.clock.now_ns()
        events = history_events(sims, service.indicators.cal.midnight_ns(service.indicators.closed_day(end_ns)), end_ns)
        history = await backfill(service, [m for sim in sims for m in sim.history_models(events)], vehicle_models(),
                                 days, end_ns=end_ns, progress=progress)
        for sim in sims:  # live counters carry on from the history's
            sim.continue_from(list(history.counters_end), list(history.counters_end.values()), history.end_ns)
    n_vehicles = len(site.vehicles)
    odometers = [history.odometers_end_km[v.id] for v in site.vehicles] if history is not None else None
    fleet = VehicleFleet(n_vehicles, service.broker_url, fmt="json", base=HANGZHOU, rate_hz=1.0, seed=7,
                         always_on_duty=True, depots=fleet_depots(), odometers_km=odometers)
    tasks: list[asyncio.Task] = []
    live_from = time.time_ns()
    try:
        await service.start()
        if history is not None:  # the history's indicators, committed to the outbox, reach the store
            t0 = time.perf_counter()
            if progress is not None:
                progress.stage("storing", 1)
            await service.flush(timeout_s=300.0)
            if progress is not None:
                progress.advance("storing")
            history.seconds["storing"] = time.perf_counter() - t0
        announce(f"sensing-edge demo: API http://127.0.0.1:{service.api_bound_port}/docs  "
                 f"(health /v1/health; district {district.DISTRICT}: {len(site.orgs)} orgs, {len(site.buildings)} buildings, "
                 f"{len(site.meters)} meters, vehicles veh-0001..veh-{n_vehicles:04d}"
                 + (f"; history {history.first_day}..{history.last_day} in {history.total_s:.0f} s" if history else "")
                 + ")" + ("" if duration_s else "  Ctrl-C to stop"))
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
            # what the live simulators delivered (the history is in the store too: counted in "history")
            meters_read = len({r.tags.get("meter") for r in await q.latest("meter", since_ns=live_from)})
            vehicles_seen = len({r.tags.get("vehicle") for r in await q.latest("position", since_ns=live_from)})
            points_stored = await asyncio.to_thread(
                q.store.select, "SELECT count(*) FROM (SELECT DISTINCT series_id, time_ns FROM points WHERE time_ns >= ?)",
                (live_from,))
            errors = _collect(service)
            provisional = service.indicators.provisional_years()
        finally:
            await service.stop()
            for sim in sims:
                await sim.stop()
    out = {
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
    if history is not None:
        out["history"] = history.summary()
    return out


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
