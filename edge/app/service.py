"""The service supervisor: builds every component from a Site and runs them until stopped.

    collectors ──Points──► ServiceIngest ──► Outbox (durable) ──► Deliverer ──► sink (InfluxDB / embedded)
                                   └──────► LiveState ──► API (latest values, live streams)

When the site says ``mqtt.broker: embedded`` (the default) and has vehicles, the service starts
the in-process broker (``edge.broker``) on ``mqtt.embedded_host:embedded_port`` before the
collectors and stops it after them; a port already taken fails the start.

Shutdown (Ctrl-C, SIGTERM): collectors stop first, then the deliverer flushes what the outbox
holds to the store (bounded by ``flush_timeout_s``), then the API stops, then the embedded broker.
Whatever was not delivered stays in the outbox for the next start.
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
from collector.jt808.registry import Registry
from collector.jt808.server import Jt808Server
from collector.modbus.service import ModbusCollector
from edge.broker import EmbeddedBroker, free_port
from edge.app.site import counter_defaults_for
from edge.clock import SYSTEM_CLOCK, Clock
from edge.config import Site, StoreKind, load_site
from edge.delivery import Deliverer, build_query, build_sink
from edge.errors import ConfigError
from edge.live import LiveState
from edge.metrics import Metrics
from edge.outbox import Outbox
from edge.point import Point

log = logging.getLogger(__name__)
CALENDAR_POLL_S = 10.0  # how often the site file is checked for holiday calendar edits (a stat call)


def _file_sig(path: Path | None) -> tuple[int, int] | None:
    try:
        st = Path(path).stat()
    except (OSError, TypeError):
        return None
    return st.st_mtime_ns, st.st_size


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
    site_file: Path | None = None  # the site's YAML: polled for holiday calendar edits (no restart needed)
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
        self.jt808: Jt808Server | None = None
        self.broker = None  # edge.broker.EmbeddedBroker when the site says mqtt.broker: embedded (and has vehicles)
        self._stop = asyncio.Event()
        self._api_server = None
        self._started = False
        self._site_sig: tuple[int, int] | None = None
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

    def _terminal_silent(self, t, now_ns: int, silent_s: float) -> list[Point]:
        return [a.to_point() for a in self.alerts.terminal_silent(t.vehicle, now_ns, silent_s, t.last_seen_ns)]

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
            if self.site.mqtt.broker == "embedded":
                # the site's own broker, in this process: started before the collectors, stopped after them
                mq = self.site.mqtt
                self.broker = EmbeddedBroker(mq.embedded_host, mq.embedded_port or free_port(mq.embedded_host))
            self.gps = GpsCollector(self.site.mqtt, self.site.vehicles, self.ingest, clock=self.clock,
                                    broker_url=self._broker_url())
            self.components.append(Component("gps", self.gps.run, self.gps.stats))
        if self.site.jt808 is not None:
            self.jt808 = Jt808Server(self.site.jt808, self.site.vehicles, self.ingest, Registry(self._path(self.site.jt808.auth_store)),
                                     clock=self.clock, on_silent=self._terminal_silent if self.alerts is not None else None)
            self.components.append(Component("jt808", self.jt808.run, self.jt808.stats))
        self.indicators = IndicatorJob(self.site, self.query, self.ingest, clock=self.clock,
                                       counter_defaults=counter_defaults_for(self.site))
        self.ingest.observers.append(self.indicators.observe)
        self.components.append(Component("indicators", self.indicators.run,
                                          lambda: {"passes": self.indicators.passes,
                                                   "last_closed_day": str(self.indicators.last_closed)}))
        if self.site_file is not None and (self.site.meters or self.site.vehicles):
            self._site_sig = _file_sig(self.site_file)
            self.components.append(Component("calendar_watch", self._watch_calendar,
                                              lambda: {"site_file": str(self.site_file)}))
        if self.upstream is not None:
            self.components.append(Component("upstream", self.upstream.run, self.upstream.stats))
        if self.alerts is not None:
            self.components.append(Component("alerts", self._alert_ticks, lambda: {"skipped": self.alerts.skipped}))
        self.components.append(Component("delivery", self.deliverer.run, self.deliverer.stats))

    async def _watch_calendar(self) -> None:
        """Poll the site file; when its ``analytics.holidays_extra`` / ``workdays_extra`` change, the
        indicator job and the live alerts take the new calendar and the affected days are recomputed."""
        while True:
            await self.clock.sleep(CALENDAR_POLL_S)
            self.reload_calendar()

    def reload_calendar(self) -> bool:
        """Read the site file again if it changed; True when the holiday calendar changed. Only the
        calendar's two lists are applied without a restart; a file that does not load is logged and
        the running calendar kept."""
        sig = _file_sig(self.site_file)
        if sig == self._site_sig:
            return False
        self._site_sig = sig
        from dataclasses import replace

        try:
            a = load_site(self.site_file).analytics
            cur = self.indicators.workcal
            if (tuple(a.holidays_extra), tuple(a.workdays_extra)) == (cur.holidays_extra, cur.workdays_extra):
                log.info("site file changed; only analytics.holidays_extra / workdays_extra apply without a restart",
                         extra={"site_file": str(self.site_file)})
                return False
            new = replace(cur, holidays_extra=tuple(a.holidays_extra), workdays_extra=tuple(a.workdays_extra)).checked()
        except (ConfigError, OSError) as e:
            log.warning("site file changed but does not load; keeping the running holiday calendar",
                        extra={"site_file": str(self.site_file), "reason": str(e)})
            return False
        self.indicators.use_calendar(new)
        if self.alerts is not None:
            self.alerts.working = WorkingTime.from_workcal(new)
        log.info("holiday calendar reloaded from the site file",
                 extra={"site_file": str(self.site_file), "holidays_extra": len(new.holidays_extra),
                        "workdays_extra": len(new.workdays_extra)})
        return True

    def _broker_url(self) -> str:
        """Where the GPS subscriber (and the demo's vehicles) connect: the embedded broker is reached
        on loopback when it listens on every interface."""
        if self.broker is None:
            return self.site.mqtt.broker
        host = "127.0.0.1" if self.broker.host in ("0.0.0.0", "", "::") else self.broker.host
        return f"mqtt://{host}:{self.broker.port}"

    @property
    def broker_url(self) -> str:
        return self._broker_url()

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
        if self.broker is not None:
            comps["broker"] = {"kind": "embedded", "host": self.broker.host, "port": self.broker.port,
                               "running": self.broker.running}
            if self._started and not self.broker.running:
                status = "degraded"
        elif self.gps is not None:
            comps["broker"] = {"kind": "external", "url": self.site.mqtt.broker}
        if self.gps is not None and not getattr(self.gps, "connected", True):
            status = "degraded"
        cal = self.indicators.calendar_status()
        comps["calendar"] = cal
        if cal["provisional_years"]:  # computing on, with weekends only, until the year's holidays are entered
            status = "degraded"
        if self.modbus is not None:
            down = [k for k, h in self.modbus.health().items() if getattr(h, "up", None) is False]
            comps["devices_down"] = down
            if down:
                status = "degraded"
        return {"status": status, "components": comps}

    def api_context(self):
        return ApiContext(site=self.site, live=self.live, health=self.health, query=self.query,
                          metrics_text=self.metrics.prometheus_text, extras={"service": self},
                          keys=KeyStore(keys_path_for(self.site, self.data_dir)), auth=self.site.api.auth,
                          rate_per_s=self.site.api.rate_per_s, rate_burst=self.site.api.rate_burst)

    # -- running --------------------------------------------------------------------------------
    async def start(self) -> None:
        if self.broker is not None:
            await self.broker.start()  # BrokerError (port taken...) fails the start, loudly
        self._started = True
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
        if self.broker is not None:  # after the subscriber is gone, so it does not log a broker outage
            try:
                await self.broker.stop()
            except Exception as e:
                log.warning("embedded broker did not stop cleanly", extra={"reason": str(e)})
        if self.upstream is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.upstream.flush(), flush_timeout_s)
            with contextlib.suppress(Exception):
                await self.upstream.close()
        with contextlib.suppress(Exception):
            await self.sink.aclose()
        with contextlib.suppress(Exception):
            await self.query.aclose()
        if self.jt808 is not None:
            self.jt808.registry.close()
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
