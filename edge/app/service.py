"""The service supervisor: builds every component from a Site and runs them until stopped.

    collectors ──Points──► ServiceIngest ──► Outbox (one durable log) ─┬─► Deliverer (consumer local) ──► sink (InfluxDB / embedded)
                                   │                                     └─► Upstream (consumer upstream) ──► provincial platform
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
from api.upstream import CONSUMER as UPSTREAM_CONSUMER
from api.upstream import Upstream
from collector.gps.subscriber import GpsCollector
from collector.jt808.registry import Registry
from collector.jt808.server import Jt808Server
from collector.modbus.service import DevicePlan, ModbusCollector, compile_site
from edge.broker import EmbeddedBroker, free_port
from edge.app.site import counter_defaults_for
from edge.clock import SYSTEM_CLOCK, Clock
from edge.config import Site, StoreKind, load_site
from edge.delivery import Deliverer, build_query, build_sink
from edge.errors import ConfigError
from edge.live import LiveState
from edge.metrics import Metrics
from edge.outbox import OnFull, Outbox
from edge.point import Point
from edge.thinning import ThinRule

log = logging.getLogger(__name__)
CALENDAR_POLL_S = 10.0  # how often the site file is checked for holiday calendar edits (a stat call)


def _file_sig(path: Path | None) -> tuple[int, int] | None:
    try:
        st = Path(path).stat()
    except (OSError, TypeError):
        return None
    return st.st_mtime_ns, st.st_size


# What a source can do when the outbox is full, by what it sends. Meter readings are polled: a
# reading not taken now is gone, but their counters are cumulative, so thinning them costs
# resolution, not energy. Records of what people did (API audit, alert acknowledgements) are few and
# told once: taken beyond the bound. Everything else is refused (``OutboxFull``) and held by its
# source: positions by the MQTT broker (not acknowledged) or the JT/T 808 terminal (no 0x8001);
# indicators by the job that computes them again at its next pass.
ON_FULL = {"meter": OnFull.thin, "audit": OnFull.admit, "alert_ack": OnFull.admit, "alert": OnFull.admit}


def on_full_for(points: Sequence[Point]) -> OnFull:
    """The policy of a batch: ``thin`` only when every point is of a measurement that thins."""
    policy = ON_FULL.get(points[0].measurement, OnFull.refuse)
    if policy is not OnFull.refuse and any(ON_FULL.get(p.measurement, OnFull.refuse) is not policy for p in points):
        return OnFull.refuse
    return policy


class ServiceIngest:
    """What collectors are handed (``edge.ingest.Ingest``): outbox first, then live state.

    ``submit`` raises ``OutboxFull`` (nothing committed) when the outbox is full and the points'
    source can hold them (see ``ON_FULL``): the source must not acknowledge them."""

    def __init__(self, outbox: Outbox, live: LiveState, metrics=None,
                 derive: Callable[[Sequence[Point]], list[Point]] | None = None) -> None:
        self.outbox = outbox
        self.metrics = metrics
        self.live = live
        self.counters: Counter[str] = Counter()
        self.derive = derive  # e.g. live alerts from positions; its points are stored like any other
        self.observers: list[Callable[[Sequence[Point]], None]] = []  # told of every committed batch

    async def submit(self, points: Sequence[Point]) -> None:
        if not points:
            return
        await self.outbox.put(points, on_full=on_full_for(points))
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
                # few, and made from points already committed: refusing them now would lose them
                await self.outbox.put(derived, on_full=OnFull.admit)
                self.live.update(derived)
                self.counters["points_derived"] += len(derived)
                points = [*points, *derived]
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
        self.modbus_plans: tuple[DevicePlan, ...] = compile_site(self.site, self.site.profiles_dir) if self.site.meters else ()
        thin = ThinRule(counter_fields=frozenset(reg.name for p in self.modbus_plans for reg in p.registers if reg.counter),
                        tz=self.site.analytics.timezone)
        self.outbox = Outbox(self._path(ob.path), max_bytes=ob.max_bytes, metrics=self.metrics, clock=self.clock,
                             thin=thin)
        self.live = LiveState()
        self.alerts = self._alert_engine()
        self.upstream = self._upstream()
        self.ingest = ServiceIngest(self.outbox, self.live, self.metrics,
                                    derive=self._derive_alerts if self.alerts is not None else None)
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

    def _upstream(self) -> Upstream | None:
        """The upstream push as a consumer of the outbox; without ``api.upstream``, no such consumer.

        An ``upstream_outbox.sqlite`` beside the outbox (the second outbox of earlier versions) is
        imported for the upstream at the first start, or, without an upstream now, left alone and
        reported."""
        up = self.site.api.upstream
        legacy = self.outbox.path.with_name("upstream_outbox.sqlite")
        if up is None:
            if any(c.name == UPSTREAM_CONSUMER for c in self.outbox.consumers()):
                self.outbox.drop_consumer(UPSTREAM_CONSUMER)  # logged: retention no longer waits for it
            if legacy.exists():
                log.warning("an upstream outbox of an earlier version is here, but no api.upstream is configured: "
                            "its points are not forwarded (configure the upstream to forward them, or delete it)",
                            extra={"path": str(legacy)})
            return None
        if "max_bytes" in up.model_fields_set:
            log.warning("api.upstream.max_bytes is no longer used: the upstream reads the outbox, bounded by "
                        "outbox.max_bytes")
        upstream = Upstream.influxdb(self.outbox, up.url, database=up.database, org=up.org, bucket=up.bucket,
                                     token=up.token, username=up.username, password=up.password,
                                     measurements=up.measurements, raw=up.raw, clock=self.clock)
        if legacy.exists():
            self.outbox.import_outbox(legacy, UPSTREAM_CONSUMER)
        return upstream

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
                await self.outbox.put(alerts, on_full=OnFull.admit)  # few, and told once: never refused
                self.live.update(alerts)

    def _path(self, p: str) -> Path:
        path = Path(p)
        if self.data_dir is not None and not path.is_absolute():
            path = self.data_dir / path.name
        return path

    def _build_collectors(self) -> None:
        if self.site.meters:
            self.modbus = ModbusCollector(self.site, self.ingest, clock=self.clock, profiles_dir=self.site.profiles_dir,
                                          plans=self.modbus_plans)
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
        comps["outbox"] = {"depth": self.outbox.depth(), "holding": self.outbox.holding,
                           "consumers": {c.name: c.lag_points for c in self.outbox.consumers()}}
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
