"""Fixtures for the API tests: a multi-org site, a real embedded store filled with data, live state.

The org tree has two districts under Hangzhou and a look-alike sibling code (``330000/3301000``
next to ``330000/330100``) so that prefix comparisons would leak and segment comparisons do not.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher

from api.context import ApiContext
from api.keys import KeyStore
from collector.jt808.session import Fleet
from edge.config import Api, Building, Circle, Geofence, Meter, Org, Site, SiteInfo, Transport, Vehicle
from edge.live import LiveState
from edge.point import Point
from edge.query import StoreQuery
from edge.store import EmbeddedStore

XIHU = "330000/330100/330106"
GONGSHU = "330000/330100/330105"
INST42 = f"{XIHU}/inst-042"
INST07 = f"{GONGSHU}/inst-007"
TRICK = "330000/3301000"
NS = 1_000_000_000


def make_site(auth: bool = False) -> Site:
    t = Transport(host="127.0.0.1", port=5020)
    return Site(
        site=SiteInfo(name="test-county"),
        orgs=(Org(path="330000", name="浙江省"), Org(path="330000/330100", name="杭州市"),
              Org(path=XIHU, name="西湖区"), Org(path=INST42, name="西湖区机关事务管理中心"),
              Org(path=GONGSHU, name="拱墅区"), Org(path=INST07, name="拱墅区某局"),
              Org(path=TRICK, name="look-alike code")),
        buildings=(Building(id="hq", org=INST42, name="办公主楼", floor_area_m2=12000, occupants=420),
                   Building(id="b7", org=INST07, name="七号楼", floor_area_m2=5000, occupants=150),
                   Building(id="bx", org=TRICK, name="trick", floor_area_m2=100, occupants=3)),
        meters=(Meter(id="m-hq-main", profile="chint-dtsu666", building="hq", transport=t, interval_s=60),
                Meter(id="m-hq-hvac", profile="acrel-adl400", building="hq", transport=t, interval_s=60,
                      parent="m-hq-main", item="01B00"),                   # the HVAC plant behind the incomer
                Meter(id="m-b7", profile="chint-dtsu666", building="b7", transport=t, interval_s=60),
                Meter(id="m-x", profile="chint-dtsu666", building="bx", transport=t, interval_s=60)),
        geofences=(Geofence(name="hq-yard", org=INST42, circle=Circle(lat=30.2741, lon=120.1551, radius_m=300)),
                   Geofence(name="b7-yard", org=INST07, polygon=((30.30, 120.17), (30.30, 120.18), (30.31, 120.18))),
                   Geofence(name="city-centre", circle=Circle(lat=30.25, lon=120.16, radius_m=2000))),  # site-wide
        vehicles=(Vehicle(id="veh-01", plate="浙A·D0001", org=INST42, terminal="13800000001"),
                  Vehicle(id="veh-07", plate="浙A·G0007", org=INST07, terminal="13800000007"),
                  Vehicle(id="veh-x", plate="浙A·X0000", org=TRICK, terminal="13800000009")),
        api=Api(auth=auth),
    )


METER_ORG = {"m-hq-main": INST42, "m-hq-hvac": INST42, "m-b7": INST07, "m-x": TRICK}
METER_BUILDING = {"m-hq-main": "hq", "m-hq-hvac": "hq", "m-b7": "b7", "m-x": "bx"}
VEHICLE_ORG = {"veh-01": INST42, "veh-07": INST07, "veh-x": TRICK}
VEHICLE_TERMINAL = {"veh-01": "13800000001", "veh-07": "13800000007", "veh-x": "13800000009"}


def sample_points(now_ns: int, minutes: int = 120) -> list[Point]:
    """Readings every minute for ``minutes``, a position a minute, trips, indicators and alerts."""
    pts: list[Point] = []
    start = now_ns - minutes * 60 * NS
    # the dashboard lists today's trips and alerts (local day): keep them after local midnight at any hour
    local_midnight = now_ns - (now_ns + 8 * 3600 * NS) % (86400 * NS)
    trip_t = max(start + 10 * 60 * NS, min(local_midnight + NS, now_ns - 2 * NS))
    alert_t = max(start + 20 * 60 * NS, min(local_midnight + 2 * NS, now_ns - NS))
    for k, (mid, org) in enumerate(METER_ORG.items()):
        tags = {"meter": mid, "org": org, "building": METER_BUILDING[mid], "carrier": "electricity",
                "profile": "chint-dtsu666"}
        for i in range(minutes):
            t = start + i * 60 * NS
            pts.append(Point("meter", tags, {"active_energy_import_kwh": 1000.0 * (k + 1) + i * 0.5,
                                             "active_power_total_kw": 30.0 + k + (i % 7), "voltage_l1_v": 230.0 + k,
                                             "frequency_hz": 50.0}, t))
    for k, (vid, org) in enumerate(VEHICLE_ORG.items()):
        for i in range(minutes):
            t = start + i * 60 * NS
            pts.append(Point("position", {"vehicle": vid, "org": org},
                             {"lat": 30.27 + 0.001 * i + 0.01 * k, "lon": 120.15 + 0.001 * i, "speed_kmh": 30.0 + k,
                              "heading_deg": 90.0, "acc": True}, t))
        pts.append(Point("trip", {"vehicle": vid, "org": org},
                         {"distance_km": 12.5 + k, "duration_s": 1800.0, "end": "", "start_lat": 30.27,
                          "start_lon": 120.15}, trip_t))
        pts.append(Point("alert", {"vehicle": vid, "org": org, "kind": "overspeed"},
                         {"speed_kmh": 95.0, "limit_kmh": 80.0, "message": f"{vid} over the limit"}, alert_t))
    day = now_ns - 2 * 86400 * NS
    for scope, ident, org in (("org", INST42, INST42), ("org", XIHU, XIHU), ("org", INST07, INST07),
                              ("org", GONGSHU, GONGSHU), ("org", TRICK, TRICK), ("org", "330000", "330000"),
                              ("building", "hq", INST42), ("building", "b7", INST07), ("building", "bx", TRICK),
                              ("meter", "m-hq-main", INST42), ("meter", "m-b7", INST07), ("meter", "m-x", TRICK)):
        pts.append(Point("energy_indicator", {"scope": scope, "id": ident, "org": org, "period": "day",
                                              "carrier": "electricity"},
                         {"consumption_kwh": 100.0 + len(ident), "kgce": 12.29, "off_hours_share": 0.3,
                          "factor_set": "gb2589-2020"}, day))
    for t_day in (local_midnight - 2 * 86400 * NS, local_midnight):   # itemised days (today's and one before)
        for ident, org in (("hq", INST42), ("b7", INST07)):
            for code, kwh in (("01B00", 60.0), ("unmetered", 40.0)):
                pts.append(Point("energy_item", {"scope": "building", "id": ident, "org": org, "period": "day",
                                                 "carrier": "electricity", "level": "2", "item": code},
                                 {"consumption_kwh": kwh, "share": kwh / 100.0}, t_day))
    for scope, ident, org in (("org", INST42, INST42), ("org", INST07, INST07), ("org", TRICK, TRICK),
                              ("vehicle", "veh-01", INST42), ("vehicle", "veh-07", INST07), ("vehicle", "veh-x", TRICK)):
        pts.append(Point("fleet_indicator", {"scope": scope, "id": ident, "org": org, "period": "day"},
                         {"trips": 3.0, "mileage_km": 40.0, "utilisation": 0.4}, day))
    return pts


@dataclass
class Env:
    site: Site
    live: LiveState
    store: EmbeddedStore
    query: StoreQuery
    keys: KeyStore | None
    ctx: ApiContext
    now_ns: int


def build_env(tmp_path: Path, auth: bool = False, rate_per_s: float = 1000.0, burst: float = 1000.0,
              points: bool = True) -> Env:
    site = make_site(auth)
    live = LiveState()
    store = EmbeddedStore(tmp_path / "store.sqlite")
    now = time.time_ns()
    if points:
        pts = sample_points(now)
        store.write_points(pts)
        live.update([p for p in pts if p.measurement in ("meter", "position")])
    # argon2 with light parameters: the tests create many keys; the default cost is tested in test_auth
    keys = KeyStore(tmp_path / "keys.sqlite", hasher=PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1),
                    reload_s=0.2) if auth else None
    terminals = Fleet(site.vehicles).terminals  # JT/T 808 terminals as the access server keeps them
    ctx = ApiContext(site=site, live=live, query=StoreQuery(store), keys=keys, auth=auth,
                     rate_per_s=rate_per_s, rate_burst=burst, extras={"terminals": lambda: list(terminals.values())})
    return Env(site, live, store, ctx.query, keys, ctx, now)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def serve(app, port: int | None = None):
    """Run ``app`` under a real uvicorn on loopback, in this event loop; yields the base URL."""
    import uvicorn
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    server.install_signal_handlers = lambda: None
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    if task.done():
        task.result()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        server.force_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 5)
        await app.state.hub.close()


class ThreadedServer:
    """uvicorn in a thread with its own event loop (for sync clients such as selenium).

    ``call(fn, *args)`` runs ``fn`` in the server's loop (LiveState is not thread-safe)."""

    def __init__(self, app) -> None:
        import threading
        import uvicorn
        self.app = app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="off", timeout_graceful_shutdown=1))
        self.server.install_signal_handlers = lambda: None
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.server.serve())
        hub = getattr(self.app.state, "hub", None)  # the API's live stream, started by the dashboard
        if hub is not None:
            self.loop.run_until_complete(hub.close())
        self.loop.close()

    def __enter__(self) -> "ThreadedServer":
        self.thread.start()
        for _ in range(500):
            if self.server.started:
                break
            time.sleep(0.01)
        return self

    def call(self, fn, *args) -> None:
        self.loop.call_soon_threadsafe(fn, *args)

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
