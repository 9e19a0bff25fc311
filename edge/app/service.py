"""The service supervisor: builds every component from a Site and runs them until stopped.

    collectors ──Points──► ServiceIngest ──► Outbox (durable) ──► Deliverer ──► sink (InfluxDB / embedded)
                                   └──────► LiveState ──► API (latest values, live streams)

Shutdown (Ctrl-C, SIGTERM): collectors stop first, then the deliverer flushes what the outbox
holds to the store (bounded by ``flush_timeout_s``), then the API stops. Whatever was not
delivered stays in the outbox for the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Sequence

from analytics.fleet.alerts import AlertEngine
from analytics.fleet.geo import fences_from_config
from analytics.fleet.indicators import WorkingTime
from analytics.fleet.jobs import params_from_config
from analytics.scheduler import IndicatorJob
from analytics.workcal import WorkCalendar
from api.app import create_app
from api.context import ApiContext
from api.keys import KeyStore, keys_path_for
from api.upstream import Upstream
from collector.gps.subscriber import GpsCollector
from collector.modbus.service import ModbusCollector
from edge.app.site import counter_defaults_for
from edge.clock import SYSTEM_CLOCK, Clock
from edge.config import Site, StoreKind
from edge.delivery import Deliverer, build_query, build_sink
from edge.live import LiveState
from edge.metrics import Metrics
from edge.outbox import Outbox
from edge.point import Point

log = logging.getLogger(__name__)


class ServiceIngest:
    """What collectors are handed (``edge.ingest.Ingest``): outbox first, then live state."""

    def __init__(self, outbox: Outbox, live: LiveState, metrics=None,
                 derive: Callable[[Sequence[Point]], list[Point]] | None = None, forwards: Sequence[Any] = ()) -> None:
        self.outbox = outbox
        self.forwards = list(forwards)  # e.g. api.upstream.Upstream: its own durable outbox
        self.metrics = metrics
        self.live = live
        self.counters: Counter[str] = Counter()
        self.derive = derive  # e.g. live alerts from positions; its points are stored like any other
        self.observers: list[Callable[[Sequence[Point]], None]] = []  # told of every committed batch

    async def submit(self, points: Sequence[Point]) -> None:
        if not points:
            return
        await self.outbox.put(points)
        self.counters["points_submitted"] += len(points)
        self.live.update(points)
        if self.derive is not None:
            try:
                derived = self.derive(points)
            except Exception:  # a bug in a derived stream never costs the readings themselves
                log.exception("deriving points failed")
                self.count("derive_failed")
                derived = []
            if derived:
                await self.outbox.put(derived)
                self.live.update(derived)
                self.counters["points_derived"] += len(derived)
                points = [*points, *derived]
        for fw in self.forwards:  # committed before submit returns, like the local copy
            await fw.offer(points)
        for obs in self.observers:
            obs(points)

    async def reject(self, source: str, raw: bytes, reason: str, topic: str = "") -> None:
        await self.outbox.dead_letter_payload_async(source, raw, reason, topic)
        self.counters[f"rejected.{source}.{reason}"] += 1
        if self.metrics is not None:
            self.metrics.count("payloads_rejected", source=source, reason=reason)
        self.counters["errors"] += 1

    def count(self, name: str, n: int = 1, **labels: str) -> None:
        key = name + "".join(f".{k}={v}" for k, v in sorted(labels.items()))
        self.counters[key] += n
        if self.metrics is not None:
            self.metrics.count(name, n, **labels)


@dataclass
class Component:
    name: str
    run: Callable[[], Awaitable[Any]]
    status: Callable[[], dict[str, Any]] = lambda: {}
    task: asyncio.Task | None = None


@dataclass
class EdgeService:
    site: Site
    clock: Clock = SYSTEM_CLOCK
    data_dir: Path | None = None
    api_port: int | None = None
    with_api: bool = True
    components: list[Component] = field(default_factory=list)

    def __post_init__(self) -> None:

        self.metrics = Metrics()
        ob = self.site.outbox
        self.outbox = Outbox(self._path(ob.path), max_bytes=ob.max_bytes, metrics=self.metrics, clock=self.clock)
        self.live = LiveState()
        self.alerts = self._alert_engine()
        self.upstream = self._upstream()
        self.ingest = ServiceIngest(self.outbox, self.live, self.metrics,
                                    derive=self._derive_alerts if self.alerts is not None else None,
                                    forwards=[self.upstream] if self.upstream is not None else [])
        store_cfg = self.site.store
        if store_cfg.kind is StoreKind.embedded:
            store_cfg = store_cfg.model_copy(update={"path": str(self._path(store_cfg.path))})
        self.store_cfg = store_cfg
        self.sink = build_sink(store_cfg, clock=self.clock)
        self.query = build_query(store_cfg)
        self.deliverer = Deliverer.from_config(self.outbox, self.sink, store_cfg, self.metrics, self.clock)
        self.modbus = None
        self.gps = None
        self._stop = asyncio.Event()
        self._api_server = None
        self._build_collectors()

    def _upstream(self):
        up = self.site.api.upstream
        if up is None:
            return None
        return Upstream.influxdb(self._path(str(Path(self.site.outbox.path).with_name("upstream_outbox.sqlite"))), up.url,
                                 database=up.database, org=up.org, bucket=up.bucket, token=up.token,
                                 username=up.username, password=up.password, measurements=up.measurements,
                                 raw=up.raw, max_bytes=up.max_bytes, clock=self.clock)

    def _alert_engine(self):
        """Live fleet alerts (overspeed, long idle, out of hours, geofences, lost signal) as positions arrive."""
        if not self.site.vehicles:
            return None
        _, rules = params_from_config(self.site.fleet)
        working = WorkingTime.from_workcal(WorkCalendar.from_config(self.site.analytics))
        return AlertEngine(rules, fences_from_config(self.site.geofences), working,
                           {v.id: v.org for v in self.site.vehicles})

    def _derive_alerts(self, points: Sequence[Point]) -> list[Point]:
        out: list[Point] = []
        for p in points:
            if p.measurement == "position":
                out.extend(a.to_point() for a in self.alerts.feed_point(p))
        return out

    async def _alert_ticks(self) -> None:
        """Alerts that come from silence (lost signal) need a clock, not a fix."""
        while True:
            await self.clock.sleep(10.0)
            alerts = [a.to_point() for a in self.alerts.tick(self.clock.now_ns())]
            if alerts:
                await self.outbox.put(alerts)
                self.live.update(alerts)

    def _path(self, p: str) -> Path:
        path = Path(p)
        if self.data_dir is not None and not path.is_absolute():
            path = self.data_dir / path.name
        return path

    def _build_collectors(self) -> None:
        if self.site.meters:
            self.modbus = ModbusCollector(self.site, self.ingest, clock=self.clock, profiles_dir=self.site.profiles_dir)
            self.components.append(Component("modbus", self.modbus.run, self.modbus.stats))
            buses = self.modbus.buses
            self.metrics.gauge_source("edge_modbus_bus_cycle_seconds",
                                      "Measured cycle of each RS-485 line: every meter on it polled once (mean of the last ~20)",
                                      ("bus",), lambda: [((k,), b.mean_s) for k, b in buses.items()])
            self.metrics.gauge_source("edge_modbus_bus_wire_seconds",
                                      "Computed wire time of one cycle of each RS-485 line (collector.modbus.bus)",
                                      ("bus",), lambda: [((k,), b.wire_s) for k, b in buses.items()])
        if self.site.vehicles or self.site.mqtt.broker != "embedded":
            self.gps = GpsCollector(self.site.mqtt, self.site.vehicles, self.ingest, clock=self.clock,
                                    broker_url=self._broker_url())
            self.components.append(Component("gps", self.gps.run, self.gps.stats))
        self.indicators = IndicatorJob(self.site, self.query, self.ingest, clock=self.clock,
                                       counter_defaults=counter_defaults_for(self.site))
        self.ingest.observers.append(self.indicators.observe)
        self.components.append(Component("indicators", self.indicators.run,
                                          lambda: {"passes": self.indicators.passes,
                                                   "last_closed_day": str(self.indicators.last_closed)}))
        if self.upstream is not None:
            self.components.append(Component("upstream", self.upstream.run, self.upstream.stats))
        if self.alerts is not None:
            self.components.append(Component("alerts", self._alert_ticks, lambda: {"skipped": self.alerts.skipped}))
        self.components.append(Component("delivery", self.deliverer.run, self.deliverer.stats))

    def _broker_url(self) -> str:
        b = self.site.mqtt.broker
        return f"mqtt://127.0.0.1:{self.site.mqtt.embedded_port}" if b == "embedded" else b

    # -- status ---------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        comps: dict[str, Any] = {}
        status = "ok"
        for c in self.components:
            st = dict(c.status())
            dead = c.task is not None and c.task.done() and not c.task.cancelled()
            st["running"] = c.task is not None and not c.task.done()
            if dead:
                status = "degraded"
            comps[c.name] = st
        comps["outbox"] = {"depth": self.outbox.depth()}
        if self.gps is not None and not getattr(self.gps, "connected", True):
            status = "degraded"
        if self.modbus is not None:
            down = [k for k, h in self.modbus.health().items() if getattr(h, "up", None) is False]
            comps["devices_down"] = down
            if down:
                status = "degraded"
        return {"status": status, "components": comps}

    def api_context(self):
        return ApiContext(site=self.site, live=self.live, health=self.health, query=self.query,
                          metrics_text=self.metrics.text, extras={"service": self},
                          keys=KeyStore(keys_path_for(self.site, self.data_dir)), auth=self.site.api.auth,
                          rate_per_s=self.site.api.rate_per_s, rate_burst=self.site.api.rate_burst)

    # -- running --------------------------------------------------------------------------------
    async def start(self) -> None:
        for c in self.components:
            c.task = asyncio.create_task(self._guard(c), name=c.name)
        if self.with_api:
            await self._start_api()
        log.info("edge started", extra={"site": self.site.site.name, "meters": len(self.site.meters),
                                        "vehicles": len(self.site.vehicles), "store": self.store_cfg.kind.value})

    async def _guard(self, c: Component) -> None:
        """Run a component; if it crashes, log it and restart it after a pause: one part never stops the rest."""
        delay = 1.0
        while True:
            try:
                await c.run()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("component crashed, restarting", extra={"component": c.name, "in_s": delay})
                self.ingest.count("component_crash", component=c.name)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def _start_api(self) -> None:
        import uvicorn
        app = create_app(self.api_context())
        self._app = app
        port = self.site.api.port if self.api_port is None else self.api_port
        config = uvicorn.Config(app, host=self.site.api.host, port=port, log_level="warning", lifespan="off")
        self._api_server = uvicorn.Server(config)
        self._api_server.install_signal_handlers = lambda: None  # we own the signals
        self._api_task = asyncio.create_task(self._api_server.serve(), name="api")
        for _ in range(200):
            if self._api_server.started or self._api_task.done():
                break
            await asyncio.sleep(0.02)
        if self._api_task.done():
            self._api_task.result()
        self.api_bound_port = self._api_server.servers[0].sockets[0].getsockname()[1]
        log.info("api listening", extra={"url": f"http://{self.site.api.host}:{self.api_bound_port}"})

    async def stop_collectors(self) -> None:
        """Stop everything that produces points (the deliverer keeps running)."""
        for c in self.components:
            if c.name != "delivery" and c.task is not None:
                c.task.cancel()
        for c in self.components:
            if c.name != "delivery" and c.task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await c.task

    async def flush(self, timeout_s: float = 10.0) -> bool:
        """Deliver what the outbox holds now; False when the store did not take it all in time."""
        try:
            await asyncio.wait_for(self.deliverer.flush(), timeout_s)
            return True
        except asyncio.TimeoutError:
            log.warning("flush timed out; points stay in the outbox", extra={"depth": self.outbox.depth()})
            return False

    async def stop(self, flush_timeout_s: float = 10.0) -> None:
        await self.stop_collectors()
        await self.flush(flush_timeout_s)
        for c in self.components:
            if c.task is not None:
                c.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await c.task
        if self._api_server is not None:
            self._api_server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._api_task, 5)
            with contextlib.suppress(Exception):
                await self._app.state.hub.close()
        if self.upstream is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.upstream.flush(), flush_timeout_s)
            with contextlib.suppress(Exception):
                await self.upstream.close()
        with contextlib.suppress(Exception):
            await self.sink.aclose()
        with contextlib.suppress(Exception):
            await self.query.aclose()
        self.outbox.close()
        log.info("edge stopped")

    def request_stop(self) -> None:
        self._stop.set()

    async def run_until_stopped(self, duration_s: float | None = None) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)
        await self.start()
        try:
            if duration_s is None:
                await self._stop.wait()
            else:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), duration_s)
        finally:
            await self.stop()
