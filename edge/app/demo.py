"""``edge demo``: the whole system in one process on embedded defaults.

The edge service with its in-process MQTT broker (amqtt: the demo site says ``mqtt.broker:
embedded``, as a small site does, so ``edge demo`` and ``edge run`` start the broker the same way),
two simulated meters on real Modbus TCP sockets, five simulated vehicles publishing JSON over MQTT,
the Modbus poller, GPS subscriber, outbox, embedded store, API and the indicator job. With ``duration_s`` it runs that long,
flushes, computes the indicators once more and returns a summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
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
from simulators.meters import MeterServer
from simulators.vehicles import VehicleFleet

log = logging.getLogger(__name__)

DEMO_ORG = "330000/330100/330106/inst-042"
HANGZHOU = (30.2741, 120.1551)
METERS = (("main-incomer", "chint-dtsu666"), ("hvac-plant", "acrel-adl400"))
PLATES = ("浙A·D0001", "浙A·D0002", "浙A·D0003", "浙A·D0004", "浙A·D0005")


def demo_site(meter_ports: dict[str, int], broker_port: int, api_port: int, data_dir: Path) -> Site:
    """The demo's site: ``broker_port`` is the embedded broker's (0: any free port), as on any site
    that says ``mqtt.broker: embedded``."""
    return Site(
        site=SiteInfo(name="demo-xihu"),
        orgs=(Org(path="330000", name="浙江省"), Org(path="330000/330100", name="杭州市"),
              Org(path="330000/330100/330106", name="西湖区"), Org(path=DEMO_ORG, name="西湖区机关事务管理中心")),
        buildings=(Building(id="hq", org=DEMO_ORG, name="办公主楼", floor_area_m2=12000, occupants=420),),
        meters=tuple(Meter(id=mid, profile=prof, building="hq", interval_s=2.0, timeout_ms=1000,
                           transport=Transport(kind=TransportKind.tcp, host="127.0.0.1", port=meter_ports[mid]))
                     for mid, prof in METERS),
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

    servers = {mid: MeterServer(prof, unit_ids=[1], host="127.0.0.1", port=0, seed=i) for i, (mid, prof) in enumerate(METERS)}
    for s in servers.values():
        await s.start()
    # the broker is the service's own, as under `edge run` with `mqtt.broker: embedded`
    site = demo_site({mid: s.port for mid, s in servers.items()}, 0, api_port, data_dir)
    service = EdgeService(site, data_dir=data_dir)
    fleet = VehicleFleet(5, service.broker_url, fmt="json", base=HANGZHOU, rate_hz=1.0, seed=7,
                         always_on_duty=True)
    tasks: list[asyncio.Task] = []
    try:
        await service.start()
        announce(f"sensing-edge demo: API http://127.0.0.1:{service.api_bound_port}/docs  "
                 f"(health /v1/health, meters {', '.join(m for m, _ in METERS)}, vehicles veh-0001..veh-0005)"
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
            for s in servers.values():
                with contextlib.suppress(Exception):
                    await s.stop()
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
