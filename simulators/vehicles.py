"""A simulated fleet of official vehicles publishing positions over MQTT.

Each vehicle lives on a road-like grid around a base (Hangzhou's West Lake by default, see
``roads.py``): it sleeps at its depot, leaves on working days (statutory holidays and 调休
weekends from ``chinese_calendar``) between 08:00 and 17:30 for trips to random places, stops
at junctions, parks with the engine off (ACC off) at destinations, and goes home in the evening.
Speeds follow the road type; positions carry GPS noise while driving and jitter while parked;
now and then a vehicle goes quiet for a while (a tunnel, a dead zone).

Publishing: one message per vehicle per tick (``rate_hz`` ticks per second of ``clock`` time)
to ``vehicles/{id}/position``, QoS 1, in any of the formats of ``payloads.py``. With a
``FakeClock`` the fleet runs as fast as the broker takes it (simulated time advances per tick).

Faults, by rate or on demand (``inject``): malformed payloads, duplicates (the same message
twice), out-of-order (a message held back one tick), bursts (a backlog of ticks sent at once).
``stats()`` says exactly what was sent, so a test or bench can reconcile what was stored.

This module must not import ``collector``: it is an independent peer of the subscriber.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Sequence
from urllib.parse import urlsplit

import aiomqtt

from edge.clock import SYSTEM_CLOCK, Clock
from simulators.payloads import FORMATS, Fix, corrupt, encode, wire_time_ns
from simulators.roads import SPEED_KMH, Grid

SHANGHAI = timezone(timedelta(hours=8))
TOPIC = "vehicles/{id}/position"
WORK_START_H, WORK_END_H = 8.0, 17.5


def is_workday(d: date) -> bool:
    try:
        import chinese_calendar

        return bool(chinese_calendar.is_workday(d))
    except (NotImplementedError, ImportError, ValueError):
        return d.weekday() < 5  # beyond the calendar's years: plain weekdays


@dataclass
class Faults:
    """Fault rates per message (0..1) and an optional burst every ``burst_every_ticks`` ticks."""

    malformed_rate: float = 0.0
    duplicate_rate: float = 0.0
    out_of_order_rate: float = 0.0
    gap_rate: float = 0.0002  # chance per vehicle per tick of going quiet for 5-60 ticks
    burst_every_ticks: int = 0  # every N ticks, hold N-1 ticks back and send them together


@dataclass(frozen=True, slots=True)
class Sent:
    """One message of a tick: ``vehicle`` and ``time_ns`` (the wire time) are None when malformed."""

    topic: str
    payload: bytes
    kind: str  # position | late | duplicate | malformed
    vehicle: str | None
    time_ns: int | None


@dataclass
class _Car:
    id: str  # the id on the wire (terminal phone digits for jt808)
    depot: tuple[int, int]
    node: tuple[int, int]
    x: float
    y: float
    heading: float = 0.0
    speed: float = 0.0
    acc: bool = False
    odometer_km: float = 0.0
    fuel_l: float = 40.0
    route: list = field(default_factory=list)
    wait_s: float = 0.0  # stopped at a junction or parked until this runs out
    parked: bool = True
    quiet_ticks: int = 0
    held: bytes | None = None  # an out-of-order message waiting for the next tick
    held_time: int = 0


class VehicleFleet:
    def __init__(self, count: int, broker_url: str, fmt: str = "json", base: tuple[float, float] = (30.2741, 120.1551),
                 rate_hz: float = 1.0, seed: int = 0, clock: Clock = SYSTEM_CLOCK, id_prefix: str = "veh-",
                 faults: Faults | None = None, jt808_version: int = 2013, topic: str = TOPIC,
                 client_id: str | None = None, always_on_duty: bool = False,
                 depots: Sequence[tuple[float, float]] | None = None,
                 odometers_km: Sequence[float] | None = None) -> None:
        """``always_on_duty``: drive as on a working day at any hour (the demo, benches at night).
        ``depots``: each vehicle's home (lat, lon), taken to the nearest junction of the grid; by
        default a random junction near the base. ``odometers_km``: each odometer's reading at the
        start (a history's end, ``simulators.history``); by default random."""
        if fmt not in FORMATS:
            raise ValueError(f"format {fmt!r}: one of {FORMATS}")
        if rate_hz <= 0:
            raise ValueError("rate_hz must be > 0")
        self.count, self.fmt, self.rate_hz = count, fmt, rate_hz
        self.broker_url, self.clock, self.topic = broker_url, clock, topic
        self.faults = faults or Faults()
        self.jt808_version = jt808_version
        self.always_on_duty = always_on_duty
        self.client_id = client_id or f"sim-fleet-{seed}"
        self.rng = random.Random(seed)
        self.grid = Grid(base[0], base[1])
        self.cars: list[_Car] = []
        for i in range(count):
            vid = f"138{i:08d}" if fmt == "jt808" else f"{id_prefix}{i + 1:04d}"
            h = self.grid.half
            depot = (self.rng.randint(-h // 2, h // 2), self.rng.randint(-h // 2, h // 2))
            if depots is not None:
                depot = self.grid.nearest_node(*depots[i])
            x, y = self.grid.node_xy(*depot)
            odo = self.rng.uniform(1000, 90000)
            if odometers_km is not None:
                odo = float(odometers_km[i])
            self.cars.append(_Car(vid, depot, depot, x, y, odometer_km=odo, fuel_l=self.rng.uniform(20, 55)))
        self.ids = [c.id for c in self.cars]
        self._pending: list[int] = []  # on-demand faults: "malformed", "duplicate", ...
        self._demand: Counter[str] = Counter()
        self._sent_times: dict[str, list[int]] = defaultdict(list)
        self._counts: Counter[str] = Counter()
        self._malformed: list[tuple[str, bytes]] = []
        self._burst: list[tuple[str, bytes]] = []
        self.ticks = 0

    # -- faults on demand ---------------------------------------------------------------------
    def inject(self, kind: str, n: int = 1) -> None:
        """Queue ``n`` faults of ``kind`` (malformed, duplicate, out_of_order) for the next messages."""
        if kind not in ("malformed", "duplicate", "out_of_order"):
            raise ValueError(kind)
        self._demand[kind] += n

    def stats(self) -> dict:
        """Exactly what was sent: per vehicle the wire times of its good positions (each once)."""
        return {
            "vehicles": self.count,
            "format": self.fmt,
            "ticks": self.ticks,
            "messages": self._counts["messages"],
            "positions": sum(len(v) for v in self._sent_times.values()),
            "malformed": self._counts["malformed"],
            "duplicates": self._counts["duplicates"],
            "out_of_order": self._counts["out_of_order"],
            "gaps": self._counts["gaps"],
            "per_vehicle": {k: list(v) for k, v in self._sent_times.items()},
            "malformed_payloads": list(self._malformed),
        }

    # -- motion -------------------------------------------------------------------------------
    def _local(self, t_ns: int) -> datetime:
        return datetime.fromtimestamp(t_ns / 1e9, SHANGHAI)

    def _plan(self, car: _Car, t_ns: int) -> None:
        """A parked car whose wait is over decides what to do next."""
        now = self._local(t_ns)
        hour = now.hour + now.minute / 60
        working = self.always_on_duty or (is_workday(now.date()) and WORK_START_H <= hour < WORK_END_H)
        rng = self.rng
        if car.node != car.depot and not working:
            goal = car.depot  # evening: home
        elif working or rng.random() < 0.02:
            h = self.grid.half
            goal = (rng.randint(-h, h), rng.randint(-h, h))
            if goal == car.node:
                car.wait_s = rng.uniform(300, 1800)
                return
        else:
            car.wait_s = rng.uniform(600, 3600)  # asleep at the depot: look again later
            return
        car.route = self.grid.route(car.node, goal)
        car.parked, car.acc = False, True
        car.wait_s = rng.uniform(20, 120)  # engine warming up, passengers boarding

    def _step(self, car: _Car, dt: float, t_ns: int) -> None:
        rng = self.rng
        if car.wait_s > 0:
            car.wait_s -= dt
            car.speed = 0.0
            if car.parked and car.wait_s <= 0:
                self._plan(car, t_ns)
            return
        if car.parked:
            self._plan(car, t_ns)
            return
        if not car.route:
            car.parked, car.acc, car.speed = True, False, 0.0
            car.wait_s = rng.uniform(600, 5400) if car.node != car.depot else rng.uniform(1800, 7200)
            return
        (ni, nj), kind = car.route[0]
        lo, hi = SPEED_KMH[kind]
        target = rng.uniform(lo, hi)
        car.speed += max(-8.0, min(4.0, target - car.speed)) * min(dt, 1.0)  # km/h per s, about 1 m/s2
        car.speed = max(5.0, car.speed)
        tx, ty = self.grid.node_xy(ni, nj)
        dx, dy = tx - car.x, ty - car.y
        dist = math.hypot(dx, dy)
        move = car.speed / 3.6 * dt
        if dist > 0:
            car.heading = (math.degrees(math.atan2(dx, dy)) + 360.0) % 360.0
        if move >= dist:
            car.x, car.y, car.node = tx, ty, (ni, nj)
            car.route.pop(0)
            move = dist
            if rng.random() < 0.25:  # a red light
                car.wait_s = rng.uniform(10, 60)
        else:
            car.x += dx / dist * move
            car.y += dy / dist * move
        car.odometer_km += move / 1000.0
        car.fuel_l = max(5.0, car.fuel_l - move / 1000.0 * 0.09)

    def _fix(self, car: _Car, t_ns: int) -> Fix:
        rng = self.rng
        sigma = 3.0 if not car.parked else 2.0
        lat, lon = self.grid.to_latlon(car.x + rng.gauss(0, sigma), car.y + rng.gauss(0, sigma))
        speed = car.speed if car.speed > 0 else 0.0
        return Fix(car.id, t_ns, lat, lon, round(speed, 1), round(car.heading, 1), car.acc,
                   car.odometer_km, car.fuel_l, 8.0 + rng.uniform(-1, 1), rng.randint(7, 16))

    def advance(self, car: _Car, dt: float, t_ns: int, step_s: float = 1.0) -> None:
        """Move ``car`` through ``dt`` seconds ending at ``t_ns``, in steps of at most ``step_s``
        (a terminal reports every 30 s or more; the car still drives second by second)."""
        n = max(1, int(math.ceil(dt / step_s)))
        for k in range(n):
            self._step(car, dt / n, t_ns - int((n - 1 - k) * dt / n * 1e9))

    def fix(self, car: _Car, t_ns: int) -> Fix:
        """Where ``car`` is at ``t_ns``, as its terminal would report it (GPS noise included)."""
        return self._fix(car, t_ns)

    # -- publishing ---------------------------------------------------------------------------
    def _take(self, kind: str, rate: float) -> bool:
        if self._demand[kind] > 0:
            self._demand[kind] -= 1
            return True
        return rate > 0 and self.rng.random() < rate

    def tick_messages(self, t_ns: int, dt: float) -> list[tuple[str, bytes]]:
        """Advance every car by ``dt`` seconds and return the (topic, payload) of this tick."""
        return [(r.topic, r.payload) for r in self.tick_records(t_ns, dt)]

    def tick_records(self, t_ns: int, dt: float) -> list["Sent"]:
        """Like ``tick_messages``, each message with what it is: a position of a vehicle at a wire
        time (``kind`` position, late = held back one tick, duplicate = sent again) or malformed."""
        out: list[Sent] = []
        f = self.faults
        for car in self.cars:
            self._step(car, dt, t_ns)
            topic = self.topic.format(id=car.id)
            if car.held is not None:  # out-of-order: last tick's message goes after this one's
                held, held_t = car.held, car.held_time
                car.held = None
            else:
                held = None
            if car.quiet_ticks > 0:
                car.quiet_ticks -= 1
            elif f.gap_rate and self.rng.random() < f.gap_rate:
                car.quiet_ticks = self.rng.randint(5, 60)
                self._counts["gaps"] += 1
            else:
                fix = self._fix(car, t_ns)
                payload = encode(self.fmt, fix, jt808_version=self.jt808_version)
                wt = wire_time_ns(self.fmt, t_ns)
                if self._take("malformed", f.malformed_rate):
                    bad = corrupt(self.fmt, payload, self._counts["malformed"])
                    self._counts["malformed"] += 1
                    self._malformed.append((topic, bad))
                    out.append(Sent(topic, bad, "malformed", None, None))
                elif wt in self._recent(car.id):
                    pass  # the wire cannot tell this tick from the last (rate above the format's resolution)
                elif held is None and self._take("out_of_order", f.out_of_order_rate):
                    car.held, car.held_time = payload, wt
                    self._counts["out_of_order"] += 1
                else:
                    self._sent_times[car.id].append(wt)
                    out.append(Sent(topic, payload, "position", car.id, wt))
                    if self._take("duplicate", f.duplicate_rate):
                        out.append(Sent(topic, payload, "duplicate", car.id, wt))
                        self._counts["duplicates"] += 1
            if held is not None:
                self._sent_times[car.id].append(held_t)
                out.append(Sent(topic, held, "late", car.id, held_t))
        return out

    def _recent(self, vid: str) -> list[int]:
        ts = self._sent_times.get(vid)
        return ts[-1:] if ts else []

    async def _publish_all(self, client: aiomqtt.Client, msgs: list[tuple[str, bytes]]) -> None:
        await asyncio.gather(*(client.publish(t, p, qos=1) for t, p in msgs))
        self._counts["messages"] += len(msgs)

    def _flush_held(self) -> list[tuple[str, bytes]]:
        out = []
        for car in self.cars:
            if car.held is not None:
                self._sent_times[car.id].append(car.held_time)
                out.append((self.topic.format(id=car.id), car.held))
                car.held = None
        return out

    async def run(self, duration_s: float | None = None, ticks: int | None = None) -> dict:
        """Publish until ``duration_s`` of clock time (or ``ticks`` ticks) have passed, or forever."""
        u = urlsplit(self.broker_url)
        dt = 1.0 / self.rate_hz
        async with aiomqtt.Client(u.hostname or "127.0.0.1", u.port or 1883, identifier=self.client_id,
                                  max_inflight_messages=1000, timeout=30) as client:
            client.pending_calls_threshold = 1 << 30
            t0 = self.clock.now_ns()
            t0 -= t0 % 1_000_000_000  # ticks on whole seconds, so every format can carry them
            start_mono = self.clock.monotonic()
            k = 0
            while True:
                if ticks is not None and k >= ticks:
                    break
                if duration_s is not None and k * dt >= duration_s:
                    break
                t_ns = t0 + int(round(k * dt * 1e9))
                msgs = self.tick_messages(t_ns, dt)
                self.ticks += 1
                f = self.faults
                if f.burst_every_ticks > 1:
                    self._burst.extend(msgs)
                    if (k + 1) % f.burst_every_ticks == 0:
                        msgs, self._burst = self._burst, []
                    else:
                        msgs = []
                if msgs:
                    await self._publish_all(client, msgs)
                k += 1
                delay = start_mono + k * dt - self.clock.monotonic()
                await self.clock.sleep(max(0.0, delay))
            tail = self._burst + self._flush_held()
            self._burst = []
            if tail:
                await self._publish_all(client, tail)
        return self.stats()
