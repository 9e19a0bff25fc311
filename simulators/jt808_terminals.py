"""Simulated JT/T 808 vehicle terminals speaking to a platform over TCP.

Each terminal behaves as official-vehicle terminals do with their usual settings:

- It connects to the platform's address and port. Without an auth code it registers (0x0100,
  answered by 0x8100 with a code, which it keeps: in memory and, given ``state_file``, across
  runs); then it authenticates (0x0102; the 2019 body carries IMEI and software version) on
  every connection. A failed authentication makes it forget the code and register again.
- It reports a fix (0x0200) every ``drive_interval_s`` (30 s) with the engine on, every
  ``park_interval_s`` (300 s) parked, and sends a heartbeat (0x0002) when nothing else went out
  for ``heartbeat_s`` (60 s).
- Every message waits for its answer (0x8001 / 0x8100); unanswered within ``ack_timeout_s`` it
  is sent again, the same frame (JT/T 808 5.x retransmission), up to ``retries`` times; then the
  link is taken for broken and made again.
- A fix is kept until the platform acknowledged it. In tunnels and garages (``Outages``) the
  network is gone: fixes pile up; back on the network, what is kept goes up in 0x0704 batches of
  type 1 (盲区补报, blind-area backlog), ``batch_size`` fixes each, ``window`` batches in
  flight. ``backlog_h`` starts every terminal with that many hours of fixes kept (it comes out
  of a long outage).
- Faults on demand (``TerminalFaults``): a report with a broken check code first (no answer
  comes: it is sent again after the timeout), a wrong auth code first, a frame sent byte by
  byte, garbage bytes between frames.

``ledger()`` is the terminal side's truth: per phone, the fix times generated and the ones the
platform acknowledged (0x8001 result 0). A bench reconciles it against the store: every
acknowledged fix must be there.

Independent of ``collector`` (a simulator is a peer of what it tests): the frames are built and
read here, with the location body of ``payloads.py``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import struct
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.clock import SYSTEM_CLOCK, Clock
from simulators.payloads import Fix, jt808_location_body
from simulators.vehicles import VehicleFleet

log = logging.getLogger(__name__)

REGISTER, AUTHENTICATE, HEARTBEAT, LOCATION, BATCH = 0x0100, 0x0102, 0x0002, 0x0200, 0x0704
PLATFORM_REPLY, REGISTER_REPLY = 0x8001, 0x8100
NS = 1_000_000_000


# --- the wire, terminal side ----------------------------------------------------------------------


def _bcd(digits: str, nbytes: int) -> bytes:
    return bytes.fromhex(digits.rjust(2 * nbytes, "0"))


def _xor(data: bytes) -> int:
    c = 0
    for b in data:
        c ^= b
    return c


def frame(msg_id: int, phone: str, serial: int, body: bytes, version: int | None = None, *, corrupt: bool = False) -> bytes:
    """A whole frame: 2013 header (``version`` None) or 2019 (version flag, version byte, BCD[10])."""
    if version is None:
        raw = struct.pack(">HH", msg_id, len(body)) + _bcd(phone, 6) + struct.pack(">H", serial & 0xFFFF) + body
    else:
        raw = struct.pack(">HHB", msg_id, len(body) | 0x4000, version) + _bcd(phone, 10) + struct.pack(">H", serial & 0xFFFF) + body
    check = _xor(raw) ^ (0x5A if corrupt else 0)
    esc = (raw + bytes((check,))).replace(b"\x7d", b"\x7d\x01").replace(b"\x7e", b"\x7d\x02")
    return b"\x7e" + esc + b"\x7e"


def read_frames(buf: bytes) -> tuple[list[tuple[int, int, bytes]], bytes]:
    """Complete frames in ``buf`` as (message id, serial, body), and the bytes left over.
    Frames with a wrong check code are skipped (a platform answer is never resent)."""
    out = []
    parts = buf.split(b"\x7e")
    rest = parts.pop()
    for p in parts:
        if not p:
            continue
        raw = p.replace(b"\x7d\x02", b"\x7e").replace(b"\x7d\x01", b"\x7d")
        if len(raw) < 13 or _xor(raw[:-1]) != raw[-1]:
            continue
        msg_id, props = struct.unpack_from(">HH", raw, 0)
        hlen = 17 if props & 0x4000 else 12
        serial = struct.unpack_from(">H", raw, hlen - 2)[0]
        out.append((msg_id, serial, raw[hlen:-1]))
    return out, rest


def registration_body(version: int | None, plate: str, terminal_id: str) -> bytes:
    if version is None:  # 2013: manufacturer 5, model 20, terminal id 7
        fixed = struct.pack(">HH", 33, 100) + b"SIMUL" + b"SIM-808".ljust(20, b"\x00") + terminal_id.encode()[-7:].rjust(7, b"0")
    else:  # 2019: 11, 30, 30
        fixed = (struct.pack(">HH", 33, 100) + b"SIMULATOR".ljust(11, b"\x00") + b"SIM-808-2019".ljust(30, b"\x00")
                 + terminal_id.encode()[-30:].ljust(30, b"\x00"))
    return fixed + bytes((2,)) + plate.encode("gbk")


def authentication_body(version: int | None, code: str, imei: str, software: str = "sim-1.0") -> bytes:
    c = code.encode("gbk")
    if version is None:
        return c
    return bytes((len(c),)) + c + imei.encode()[:15].ljust(15, b"0") + software.encode()[:20].ljust(20, b"\x00")


def batch_body(kind: int, bodies: list[bytes]) -> bytes:
    return struct.pack(">HB", len(bodies), kind) + b"".join(struct.pack(">H", len(b)) + b for b in bodies)


# --- terminals ------------------------------------------------------------------------------------


@dataclass
class Outages:
    """Losing the network: per report, a chance of a tunnel (short) or a garage (long)."""

    tunnel_rate: float = 0.0
    tunnel_s: tuple[float, float] = (30.0, 180.0)
    garage_rate: float = 0.0
    garage_s: tuple[float, float] = (600.0, 7200.0)


@dataclass
class TerminalFaults:
    """Rates per message (0..1) of faults the platform must survive; or ``inject`` them."""

    bad_checksum: float = 0.0
    wrong_auth: float = 0.0
    slow: float = 0.0
    garbage: float = 0.0
    slow_byte_s: float = 0.01


class LinkDown(Exception):
    """The connection to the platform is gone (closed, reset, or answers stopped coming)."""


@dataclass
class _Item:
    time_ns: int
    body: bytes


@dataclass
class _Terminal:
    phone: str
    car: Any
    code: str | None = None
    serial: int = 0
    unsent: deque = field(default_factory=deque)  # _Item, oldest first
    generated: list = field(default_factory=list)
    acked: set = field(default_factory=set)
    refused: set = field(default_factory=set)
    outage_until: float = 0.0
    last_sent: float = 0.0
    link: "_Link | None" = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def next_serial(self) -> int:
        self.serial = (self.serial + 1) & 0xFFFF
        return self.serial


class _Link:
    """One TCP connection: send frames, match answers to them by serial."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.pending: dict[int, asyncio.Future] = {}
        self.down = False
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        buf = b""
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                frames, buf = read_frames(buf + data)
                for msg_id, _serial, body in frames:
                    if msg_id == PLATFORM_REPLY and len(body) >= 5:
                        rs, rid, result = struct.unpack_from(">HHB", body)
                        fut = self.pending.pop(rs, None)
                        if fut is not None and not fut.done():
                            fut.set_result((result, rid, ""))
                    elif msg_id == REGISTER_REPLY and len(body) >= 3:
                        rs, result = struct.unpack_from(">HB", body)
                        fut = self.pending.pop(rs, None)
                        if fut is not None and not fut.done():
                            fut.set_result((result, REGISTER, body[3:].decode("gbk", "replace")))
        except (ConnectionError, OSError):
            pass
        finally:
            self.down = True
            for fut in self.pending.values():
                if not fut.done():
                    fut.set_exception(LinkDown("connection closed"))
            self.pending.clear()

    async def write(self, data: bytes, slow_byte_s: float = 0.0) -> None:
        if self.down:
            raise LinkDown("connection closed")
        try:
            if slow_byte_s > 0:
                for i in range(len(data)):
                    self.writer.write(data[i:i + 1])
                    await self.writer.drain()
                    await asyncio.sleep(slow_byte_s)
            else:
                self.writer.write(data)
                await self.writer.drain()
        except (ConnectionError, OSError) as e:
            raise LinkDown(str(e)) from None

    async def call(self, serial: int, frames: list[bytes], timeout_s: float, *, slow_byte_s: float = 0.0,
                   garbage: bytes = b"") -> tuple[int, int, str]:
        """Send ``frames[0]``, then each next one when no answer came in ``timeout_s``
        (the last is repeated); the answer as (result, reply id, auth code)."""
        for k, data in enumerate(frames):
            fut = self.pending.get(serial)
            if fut is None or fut.done():
                fut = self.pending[serial] = asyncio.get_running_loop().create_future()
            await self.write(garbage + data if k == 0 else data, slow_byte_s if k == 0 else 0.0)
            try:
                return await asyncio.wait_for(asyncio.shield(fut), timeout_s * (k + 1))  # JT/T 808: T(n+1) = T(n) x (n+1)
            except asyncio.TimeoutError:
                continue
        self.pending.pop(serial, None)
        raise LinkDown(f"no answer to serial {serial}")

    def close(self) -> None:
        self.down = True
        self.writer.transport.abort()
        self.task.cancel()


class TerminalFleet:
    """``count`` terminals (phones ``13800000000`` upwards) against ``server`` (``host:port``)."""

    def __init__(self, count: int, server: str, *, version: int = 2013, seed: int = 0, clock: Clock = SYSTEM_CLOCK,
                 drive_interval_s: float = 30.0, park_interval_s: float = 300.0, heartbeat_s: float = 60.0,
                 ack_timeout_s: float = 10.0, retries: int = 3, backlog_h: float = 0.0, batch_size: int = 20,
                 window: int = 4, outages: Outages | None = None, faults: TerminalFaults | None = None,
                 state_file: str | Path | None = None, codes: dict[str, str] | None = None, first_phone: int = 0,
                 always_on_duty: bool = True, reconnect_max_s: float = 30.0, connect_timeout_s: float = 10.0) -> None:
        host, _, port = server.rpartition(":")
        self.host, self.port = host.strip("[]") or "127.0.0.1", int(port)
        self.version = None if version == 2013 else 1
        self.clock = clock
        self.drive_interval_s, self.park_interval_s, self.heartbeat_s = drive_interval_s, park_interval_s, heartbeat_s
        self.ack_timeout_s, self.retries = ack_timeout_s, retries
        self.backlog_h, self.batch_size, self.window = backlog_h, batch_size, window
        self.outages = outages or Outages()
        self.faults = faults or TerminalFaults()
        self.reconnect_max_s, self.connect_timeout_s = reconnect_max_s, connect_timeout_s
        self.rng = random.Random(seed)
        self.motion = VehicleFleet(count, "", fmt="jt808", seed=seed, clock=clock, always_on_duty=always_on_duty)
        self.state_file = Path(state_file) if state_file else None
        known = dict(codes or {})
        if self.state_file is not None and self.state_file.exists():
            known.update(json.loads(self.state_file.read_text()))
        self.terminals = []
        for i, car in enumerate(self.motion.cars):
            phone = f"138{first_phone + i:08d}"
            car.id = phone
            self.terminals.append(_Terminal(phone, car, code=known.get(phone)))
        self.counts: Counter[str] = Counter()
        self._demand: Counter[str] = Counter()
        self._stop = asyncio.Event()
        self._stopping = False

    # -- control --------------------------------------------------------------------------------
    def inject(self, kind: str, n: int = 1) -> None:
        """Queue ``n`` faults: bad_checksum, wrong_auth, slow, garbage."""
        if kind not in ("bad_checksum", "wrong_auth", "slow", "garbage"):
            raise ValueError(kind)
        self._demand[kind] += n

    def stop(self) -> None:
        self._stop.set()

    def codes(self) -> dict[str, str]:
        return {t.phone: t.code for t in self.terminals if t.code}

    def ledger(self) -> dict[str, dict[str, list[int]]]:
        return {t.phone: {"generated": list(t.generated), "acked": sorted(t.acked), "refused": sorted(t.refused)}
                for t in self.terminals}

    def stats(self) -> dict[str, Any]:
        gen = sum(len(t.generated) for t in self.terminals)
        acked = sum(len(t.acked) for t in self.terminals)
        return {"terminals": len(self.terminals), "protocol": "2013" if self.version is None else "2019",
                "server": f"{self.host}:{self.port}", "generated": gen, "acknowledged": acked,
                "refused": sum(len(t.refused) for t in self.terminals),
                "kept": sum(len(t.unsent) for t in self.terminals), **dict(self.counts)}

    def _take(self, kind: str) -> bool:
        if self._demand[kind] > 0:
            self._demand[kind] -= 1
            return True
        rate = getattr(self.faults, kind)
        return rate > 0 and self.rng.random() < rate

    # -- running --------------------------------------------------------------------------------
    async def run(self, duration_s: float | None = None, drain_s: float = 30.0) -> dict[str, Any]:
        """Run until ``duration_s`` (or ``stop()``), then up to ``drain_s`` more to deliver what is kept
        (no new fixes then, and no outages: every terminal is back on the network)."""
        self._prefill()
        tasks = [asyncio.create_task(self._produce(t)) for t in self.terminals]
        senders = [asyncio.create_task(self._send(t)) for t in self.terminals]
        try:
            if duration_s is None:
                await self._stop.wait()
            else:
                try:
                    await asyncio.wait_for(self._stop.wait(), duration_s)
                except asyncio.TimeoutError:
                    pass
            self._stopping = True
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for term in self.terminals:
                term.outage_until = 0.0  # the network comes back for the drain
                term.wake.set()
            if drain_s > 0:
                await asyncio.wait(senders, timeout=drain_s)
        finally:
            for t in (*tasks, *senders):
                t.cancel()
            await asyncio.gather(*tasks, *senders, return_exceptions=True)
            for term in self.terminals:
                if term.link is not None:
                    term.link.close()
            self._save_codes()
        return self.stats()

    def _save_codes(self) -> None:
        if self.state_file is not None:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            self.state_file.write_text(json.dumps(self.codes(), indent=0, sort_keys=True))

    def _prefill(self) -> None:
        """``backlog_h`` hours of fixes each terminal kept while out of coverage."""
        if self.backlog_h <= 0:
            return
        now = self.clock.now_ns() // NS * NS
        for t in self.terminals:
            ts = now - int(self.backlog_h * 3600) * NS
            while ts < now - NS:
                step = self.drive_interval_s if t.car.acc else self.park_interval_s
                self.motion.advance(t.car, step, ts, step_s=5.0)
                self._keep(t, self.motion.fix(t.car, ts))
                ts += int(step * NS)

    def _keep(self, t: _Terminal, f: Fix) -> None:
        ts = f.time_ns // NS * NS
        if t.generated and ts <= t.generated[-1]:
            return  # the wire carries seconds: one fix per second at most
        f = Fix(t.phone, ts, f.lat, f.lon, f.speed_kmh, f.heading_deg, f.acc, f.odometer_km, f.fuel_l, f.altitude_m, f.satellites)
        t.generated.append(ts)
        t.unsent.append(_Item(ts, jt808_location_body(f)))

    async def _produce(self, t: _Terminal) -> None:
        """Fixes on the terminal's schedule, whatever the network does."""
        clock, o = self.clock, self.outages
        await clock.sleep(self.rng.uniform(0, min(self.drive_interval_s, 5.0)))  # terminals do not start in step
        last = clock.now_ns()
        while True:
            now = clock.now_ns()
            self.motion.advance(t.car, max(0.0, (now - last) / NS), now)
            last = now
            self._keep(t, self.motion.fix(t.car, now))
            r = self.rng.random()
            if t.outage_until <= clock.monotonic():
                dur = 0.0
                if r < o.tunnel_rate:
                    dur = self.rng.uniform(*o.tunnel_s)
                    self.counts["tunnels"] += 1
                elif r < o.tunnel_rate + o.garage_rate:
                    dur = self.rng.uniform(*o.garage_s)
                    self.counts["garages"] += 1
                if dur > 0:
                    t.outage_until = clock.monotonic() + dur
                    if t.link is not None:
                        t.link.close()  # the network is gone: the connection dies with it
            t.wake.set()
            await clock.sleep(self.drive_interval_s if t.car.acc else self.park_interval_s)

    async def _send(self, t: _Terminal) -> None:
        backoff = 0.5
        clock = self.clock
        while True:
            if self._stopping and not t.unsent:
                return
            wait = t.outage_until - clock.monotonic()
            if wait > 0:
                if self._stopping:
                    return
                await clock.sleep(wait)
                continue
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), self.connect_timeout_s)
            except (OSError, asyncio.TimeoutError):
                self.counts["connect_failures"] += 1
                await clock.sleep(backoff * self.rng.uniform(0.5, 1.0))
                backoff = min(self.reconnect_max_s, backoff * 2)
                continue
            link = t.link = _Link(reader, writer)
            self.counts["connections"] += 1
            try:
                await self._handshake(t, link)
                backoff = 0.5
                await self._talk(t, link)
            except LinkDown:
                self.counts["links_lost"] += 1
            finally:
                link.close()
                t.link = None
            if not self._stopping:
                await clock.sleep(backoff * self.rng.uniform(0.5, 1.0))
                backoff = min(self.reconnect_max_s, backoff * 2)

    async def _request(self, t: _Terminal, link: _Link, msg_id: int, body: bytes, *, corrupt_first: bool = False,
                       slow: bool = False, garbage: bool = False) -> tuple[int, int, str]:
        serial = t.next_serial()
        good = frame(msg_id, t.phone, serial, body, self.version)
        tries = [good] * (self.retries + 1)
        if corrupt_first:
            tries = [frame(msg_id, t.phone, serial, body, self.version, corrupt=True), *tries[:-1]]
            self.counts["fault_bad_checksum"] += 1
        junk = b""
        if garbage:
            junk = bytes(self.rng.choice(range(256)) for _ in range(self.rng.randint(1, 64))).replace(b"\x7e", b"\x00")
            self.counts["fault_garbage"] += 1
        if slow:
            self.counts["fault_slow"] += 1
        self.counts["messages"] += 1
        t.last_sent = self.clock.monotonic()
        return await link.call(serial, tries, self.ack_timeout_s, slow_byte_s=self.faults.slow_byte_s if slow else 0.0,
                               garbage=junk)

    async def _handshake(self, t: _Terminal, link: _Link) -> None:
        for _ in range(3):
            if t.code is None:
                result, _, code = await self._request(t, link, REGISTER, registration_body(self.version, f"浙A{t.phone[-5:]}", t.phone))
                if result != 0:
                    self.counts["register_refused"] += 1
                    raise LinkDown(f"registration refused ({result})")
                t.code = code
                self.counts["registered"] += 1
                self._save_codes()
            code = t.code
            if self._take("wrong_auth"):
                code = code + "x"
                self.counts["fault_wrong_auth"] += 1
            result, _, _ = await self._request(t, link, AUTHENTICATE, authentication_body(self.version, code, "86" + t.phone.rjust(13, "0")))
            if result == 0:
                self.counts["authenticated"] += 1
                return
            self.counts["auth_refused"] += 1
            if code == t.code:
                t.code = None  # the platform does not know it (any more): register again
        raise LinkDown("could not authenticate")

    async def _talk(self, t: _Terminal, link: _Link) -> None:
        clock = self.clock
        while True:
            if link.down:
                raise LinkDown("connection closed")
            if t.unsent:
                await self._upload(t, link)
                continue
            if self._stopping:
                return
            idle = clock.monotonic() - t.last_sent
            if idle >= self.heartbeat_s:
                result, _, _ = await self._request(t, link, HEARTBEAT, b"")
                self.counts["heartbeats"] += 1
                continue
            t.wake.clear()
            try:
                await asyncio.wait_for(t.wake.wait(), self.heartbeat_s - idle)
            except asyncio.TimeoutError:
                pass

    async def _upload(self, t: _Terminal, link: _Link) -> None:
        """What is kept: a fresh single fix as 0x0200, more as 0x0704 backlog batches, ``window`` in flight."""
        if len(t.unsent) == 1:
            item = t.unsent.popleft()
            await self._deliver(t, link, [item], LOCATION, item.body)
            return
        groups = []
        for _ in range(self.window):
            if not t.unsent:
                break
            items = [t.unsent.popleft() for _ in range(min(self.batch_size, len(t.unsent)))]
            groups.append(items)
        self.counts["batches"] += len(groups)
        results = await asyncio.gather(*(self._deliver(t, link, items, BATCH, batch_body(1, [i.body for i in items]))
                                         for items in groups), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r

    async def _deliver(self, t: _Terminal, link: _Link, items: list[_Item], msg_id: int, body: bytes) -> None:
        try:
            result, _, _ = await self._request(t, link, msg_id, body, corrupt_first=self._take("bad_checksum"),
                                               slow=self._take("slow"), garbage=self._take("garbage"))
        except BaseException:
            t.unsent.extendleft(reversed(items))  # not acknowledged: kept, sent again
            raise
        if result == 0:
            t.acked.update(i.time_ns for i in items)
            self.counts["positions_acknowledged"] += len(items)
        else:
            t.refused.update(i.time_ns for i in items)
            self.counts[f"refused_result_{result}"] += len(items)
