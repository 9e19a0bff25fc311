"""Modbus collection service: compile a site's meters into plans, poll them, hand Points over.

``compile_site`` checks every meter against its profile at start-up (``edge check`` uses it) and
builds the ready-made read plan of each device. ``ModbusCollector`` runs one task per meter;
meters that share a connection (a gateway, a serial line) share its lock, connections run in
parallel. Polls are aligned to wall-clock multiples of the meter's ``interval_s``; a point's
timestamp is the time of the device's first successful read in that poll. A failed read loses
only its own registers. Values outside a register's plausible range are not stored: the point
carries a string field ``quality`` = ``"implausible:<field>,<field>"`` instead, and the counter
``modbus_implausible`` is bumped. Points go to ``ingest.submit`` in batches from one submitter task.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Sequence

from collector.modbus.bus import BusCycle, bus_budgets, is_serial
from collector.modbus.planner import Request, plan
from collector.modbus.poller import Connection
from collector.modbus.profiles import Profile, find_profile, load_profiles
from collector.modbus.registers import BlockDecoder, FieldSpec, PollDecoder, compile_field
from edge.clock import SYSTEM_CLOCK, Clock
from edge.config import Meter, Site
from edge.errors import ConfigError, DeviceError, PayloadError
from edge.ingest import Ingest
from edge.point import Point

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlannedRead:
    request: Request
    fields: tuple[FieldSpec, ...]
    decoder: BlockDecoder = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "decoder", BlockDecoder(self.fields))


@dataclass(frozen=True)
class DevicePlan:
    meter: Meter
    profile: Profile
    reads: tuple[PlannedRead, ...]
    tags: dict[str, str]
    connection_key: str
    # compiled for the poll loop: (function code, address, count) of each read, and the decoder of a full poll
    wire: tuple[tuple[int, int, int], ...] = field(init=False, repr=False, compare=False)
    decoder: PollDecoder = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "wire", tuple((r.request.function_code, r.request.address, r.request.count)
                                               for r in self.reads))
        object.__setattr__(self, "decoder", PollDecoder([(r.request.count, r.decoder) for r in self.reads]))

    @property
    def requests(self) -> tuple[Request, ...]:
        return tuple(r.request for r in self.reads)

    @property
    def registers(self) -> tuple:
        return tuple(reg for r in self.reads for reg in r.request.registers)

    @property
    def naive_requests(self) -> int:
        """Requests a collector reading one register at a time would send."""
        return sum(len(r.request.registers) for r in self.reads)


def compile_meter(m: Meter, profile: Profile, org: str) -> DevicePlan:
    where = f"meter {m.id}"
    if m.carrier.value != profile.carrier:
        raise ConfigError(f"carrier {m.carrier.value!r} but profile {profile.id!r} measures {profile.carrier!r}",
                          obj=where, field="carrier")
    names = m.registers if m.registers is not None else profile.names
    regs = []
    for n in names:
        try:
            regs.append(profile.register(n))
        except KeyError:
            raise ConfigError(f"unknown register {n!r} for profile {profile.id!r} (has: {', '.join(profile.names)})",
                              obj=where, field="registers") from None
    reqs = plan(regs, max_gap=profile.max_gap, max_registers=profile.max_registers)
    reads = tuple(PlannedRead(r, tuple(compile_field(reg, reg.address - r.address, m.pt_ratio, m.ct_ratio)
                                       for reg in r.registers)) for r in reqs)
    tags = {"meter": m.id, "org": org, "carrier": profile.carrier, "profile": profile.id}
    if m.building:
        tags["building"] = m.building
    return DevicePlan(m, profile, reads, tags, m.transport.connection_key())


def compile_site(site: Site, profiles_dir: str | None = None) -> tuple[DevicePlan, ...]:
    """Every meter's read plan. Raises ``ConfigError`` naming the meter and the field."""
    profiles = load_profiles(profiles_dir or site.profiles_dir)  # a bad profile raises ProfileError (a ConfigError)
    plans = []
    for m in site.meters:
        if m.virtual:  # computed by the analytics from other meters: nothing to poll
            continue
        try:
            prof = find_profile(profiles, m.profile)
        except KeyError:
            raise ConfigError(f"unknown profile {m.profile!r} (known: {', '.join(sorted(profiles))})",
                              obj=f"meter {m.id}", field="profile") from None
        plans.append(compile_meter(m, prof, site.meter_org(m)))
    return tuple(plans)


@dataclass
class DeviceHealth:
    meter: str
    up: bool | None = None
    last_success_ns: int | None = None
    last_failure_ns: int | None = None
    down_since_ns: int | None = None
    consecutive_failures: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    last_error: str = ""
    reads_ok: int = 0
    reads_failed: int = 0
    implausible: int = 0
    polls: int = 0
    bus: str | None = None                  # the serial line it shares (RTU, RTU over TCP)
    bus_cycle_s: float | None = None        # that line's last measured cycle: every meter on it polled once
    bus_wire_s: float | None = None         # the cycle's computed wire time (collector.modbus.bus)

    def as_dict(self) -> dict:
        return dict(self.__dict__, errors=dict(self.errors))


class ModbusCollector:
    def __init__(self, site: Site, ingest: Ingest, clock: Clock = SYSTEM_CLOCK, profiles_dir: str | None = None,
                 plans: Sequence[DevicePlan] | None = None, submit_batch: int = 5000) -> None:
        self.site = site
        self.ingest = ingest
        self.clock = clock
        self.plans = tuple(plans) if plans is not None else compile_site(site, profiles_dir)
        self.connections: dict[str, Connection] = {}
        for p in self.plans:
            c = self.connections.get(p.connection_key)
            t = p.meter.timeout_ms / 1000
            if c is None:
                self.connections[p.connection_key] = Connection(p.connection_key, p.meter.transport, t, clock)
            else:
                c.timeout_s = max(c.timeout_s, t)
        self._health = {p.meter.id: DeviceHealth(p.meter.id) for p in self.plans}
        # each serial line's measured cycle, beside its computed wire time
        wire = {b.key: b.cycle_s for b in bus_budgets(self.plans)}
        self.buses: dict[str, BusCycle] = {}
        for p in self.plans:
            if is_serial(p.meter.transport):
                self._health[p.meter.id].bus = p.connection_key
                self._health[p.meter.id].bus_wire_s = wire.get(p.connection_key)
        for key in wire:
            ps = [p for p in self.plans if p.connection_key == key]
            self.buses[key] = BusCycle(key, tuple(max(1, round(p.meter.interval_s * 1e9)) for p in ps), wire[key])
        self._bus_meters = {key: [p.meter.id for p in self.plans if p.connection_key == key] for key in self.buses}
        # points waiting for the submitter, in poll order; it sleeps on _pending_wakeup when none are
        self._pending: list[Point] = []
        self._pending_wakeup: asyncio.Future[None] | None = None
        self._submit_batch = submit_batch
        self._stopping = False
        self._submit_failing = False
        self._stats = {"reads_ok": 0, "reads_failed": 0, "points_submitted": 0, "polls": 0, "overruns": 0,
                       "implausible": 0, "submit_errors": 0, "points_lost": 0, "registers_read": 0}

    def health(self) -> dict[str, DeviceHealth]:
        return self._health

    def stats(self) -> dict:
        return dict(self._stats, devices=len(self.plans), connections=len(self.connections),
                    devices_down=sum(1 for h in self._health.values() if h.up is False),
                    buses={k: b.as_dict() for k, b in self.buses.items()})

    async def run(self) -> None:
        """Poll every device until cancelled."""
        self._stopping = False
        tasks = [asyncio.create_task(self._device_loop(p), name=f"modbus:{p.meter.id}") for p in self.plans]
        tasks.append(asyncio.create_task(self._submitter(), name="modbus:submit"))
        try:
            await asyncio.gather(*tasks)
        finally:
            self._stopping = True
            # Python 3.11's wait_for (inside pymodbus) can swallow a cancellation that races a
            # response: cancel again until every task is really done.
            pending = set(tasks)
            while pending:
                for t in pending:
                    t.cancel()
                _, pending = await asyncio.wait(pending, timeout=1.0)
            await self._flush()
            for c in self.connections.values():
                c.close()

    async def _device_loop(self, p: DevicePlan) -> None:
        """One poll per wall-clock window [k·interval, (k+1)·interval), started at the window's
        boundary; a poll that ran into a later window makes the next one start at once, late inside
        that window (an overrun), so no window gets two polls and a slow bus loses as little as possible."""
        interval_ns = max(1, round(p.meter.interval_s * 1e9))
        clock, stats, poll_once = self.clock, self._stats, self.poll_once
        bus = self.buses.get(p.connection_key)
        last_slot: int | None = None
        while not self._stopping:
            now = clock.now_ns()
            cur = now - now % interval_ns  # start of the current window
            if last_slot is None:
                slot = cur if now == cur else cur + interval_ns
            elif cur > last_slot:
                slot = cur
                stats["overruns"] += 1
            else:
                slot = last_slot + interval_ns
            if slot > now:
                await clock.sleep((slot - now) / 1e9)
            last_slot = slot
            if bus is not None:
                bus.begin(slot, clock.now_ns())
            try:
                await poll_once(p)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a bug or an untranslated library error: count it, keep polling
                h = self._health[p.meter.id]
                h.errors["internal"] = h.errors.get("internal", 0) + 1
                h.last_error = f"{type(e).__name__}: {e}"
                if h.errors["internal"] == 1:
                    log.exception("meter=%s internal error, polling continues", p.meter.id)
            if bus is not None:
                cycle = bus.end(slot, clock.now_ns())
                if cycle is not None:
                    for mid in self._bus_meters[p.connection_key]:
                        self._health[mid].bus_cycle_s = cycle

    async def poll_once(self, p: DevicePlan) -> Point | None:
        """Read every planned request of one device once and queue its point. Returns the point."""
        conn = self.connections[p.connection_key]
        h = self._health[p.meter.id]
        stats = self._stats
        h.polls += 1
        stats["polls"] += 1
        first_failure: tuple[int, DeviceError] | None = None
        last_failed = -1  # index of the last read that failed on the wire

        def failed(i: int, e: DeviceError, t: int) -> None:
            nonlocal first_failure, last_failed
            if first_failure is None:
                first_failure = (i, e)
            last_failed = i
            self._read_failed(p, h, e, t)

        words, times = await conn.read_each(p.wire, p.meter.unit_id, failed)
        fields: dict[str, float | str] | None = None
        t_read: int | None = None
        if first_failure is None and p.decoder.usable:  # the usual case: every read answered
            try:
                fields, bad = p.decoder.decode(words)  # type: ignore[arg-type]
            except PayloadError:
                fields = None  # find the bad response read by read below
            else:
                n = len(words)
                stats["reads_ok"] += n
                stats["registers_read"] += p.decoder.total
                h.reads_ok += n
                if n:
                    t_read = times[0]
        if fields is None:
            fields, bad = {}, []
            for i, (pr, w, t) in enumerate(zip(p.reads, words, times)):
                if w is None:
                    continue
                try:
                    dec = pr.decoder.decode(w)
                except PayloadError as e:
                    err = DeviceError(str(e), kind="protocol")
                    if first_failure is None or i < first_failure[0]:
                        first_failure = (i, err)
                    last = h.last_error, h.last_failure_ns
                    self._read_failed(p, h, err, t)
                    if last_failed > i:  # decoded after the reads: keep the later read's failure as the last
                        h.last_error, h.last_failure_ns = last
                    continue
                stats["reads_ok"] += 1
                stats["registers_read"] += pr.request.count
                h.reads_ok += 1
                if t_read is None:
                    t_read = t
                fields.update(dec.values)
                bad.extend(dec.implausible)
        if t_read is not None:
            if h.up is False:
                down_s = (t_read - (h.down_since_ns or t_read)) / 1e9
                log.info("meter=%s up after_s=%.0f", p.meter.id, down_s)
            h.up, h.last_success_ns, h.consecutive_failures, h.down_since_ns = True, t_read, 0, None
        else:
            h.consecutive_failures += 1
            if h.up is not False:
                kind = first_failure[1].kind if first_failure else "unknown"
                log.warning("meter=%s down reason=%s detail=%s", p.meter.id, kind,
                            first_failure[1] if first_failure else "")
                h.up, h.down_since_ns = False, self.clock.now_ns()
            return None
        if bad:
            fields["quality"] = "implausible:" + ",".join(bad)
            h.implausible += len(bad)
            stats["implausible"] += len(bad)
            self.ingest.count("modbus_implausible", len(bad), meter=p.meter.id)
        if not fields:
            return None
        pt = Point("meter", p.tags, fields, t_read)
        self._pending.append(pt)
        w = self._pending_wakeup
        if w is not None and not w.done():
            w.set_result(None)
        return pt

    def _read_failed(self, p: DevicePlan, h: DeviceHealth, e: DeviceError, t: int) -> None:
        self._stats["reads_failed"] += 1
        h.reads_failed += 1
        h.errors[e.kind] = h.errors.get(e.kind, 0) + 1
        h.last_error, h.last_failure_ns = str(e), t
        self.ingest.count("modbus_read_failed", 1, meter=p.meter.id, kind=e.kind)

    async def _submitter(self) -> None:
        while True:
            if not self._pending:
                self._pending_wakeup = asyncio.get_running_loop().create_future()
                try:
                    await self._pending_wakeup
                finally:
                    self._pending_wakeup = None
            batch, n = self._pending, self._submit_batch
            if len(batch) > n:
                batch, self._pending = batch[:n], batch[n:]
            else:
                self._pending = []
            await self._submit(batch)

    async def _submit(self, batch: list[Point]) -> None:
        try:
            await self.ingest.submit(batch)
        except Exception as e:  # the outbox counts its own failures; polling never stops for it
            self._stats["submit_errors"] += 1
            self._stats["points_lost"] = self._stats.get("points_lost", 0) + len(batch)
            if not self._submit_failing:
                log.error("modbus submit failing points=%d error=%s", len(batch), e)
            self._submit_failing = True
            return
        self._stats["points_submitted"] += len(batch)
        if self._submit_failing:
            log.info("modbus submit recovered")
            self._submit_failing = False

    async def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if batch:
            await self._submit(batch)
