"""The MQTT shell of GPS ingest: subscribe, decode, validate, commit, then acknowledge.

Delivery: QoS 1 with a persistent session (fixed client id; clean session off for MQTT 3.1.1,
clean start off and a session expiry for MQTT 5), so the broker keeps what vehicles publish
while the edge is down. A message is acknowledged only after its points are committed to the
outbox (``await ingest.submit``) or its payload is in the dead-letter table: a crash between
receive and commit means a redelivery, never a loss.

The connection is paho-mqtt's client driven by asyncio through paho's documented external-loop
interface, with paho's public manual acknowledgement (``collector.gps.connection``). Messages are
taken in batches (whatever is waiting, up to ``MAX_BATCH``) and committed in one outbox
transaction: one fsync for many positions; the next batch is decoded while the previous one
commits. Acknowledgements go out in receive order, as MQTT requires. The socket is not read
while ``MAX_WAITING`` messages wait (back-pressure: a backlog stays in the broker).

When the outbox cannot take a batch (``OutboxFull``, or any other ``EdgeError`` from the
ingest), nothing of it is acknowledged: the collector disconnects, pauses with a growing
backoff, and reconnects; the broker redelivers every unacknowledged message of the persistent
session (MQTT redelivers only when a session resumes).

Bad input never stalls the loop: a payload that does not decode or validate goes to the
dead-letter table with its topic and reason and is acknowledged; duplicates (a QoS 1
redelivery, a terminal resending) are counted and acknowledged without a dead-letter row.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Sequence
from urllib.parse import urlsplit

import paho.mqtt.client as paho

from collector.gps.codecs import MEASUREMENT, decoder_for, fields_decoder_for
from collector.gps.connection import Message, MqttConnection, MqttConnectionError, paho_client
from collector.gps.crs import gcj02_to_wgs84
from collector.gps.validate import Tracker, check_point
from edge.clock import SYSTEM_CLOCK, Clock
from edge.config import Crs, Mqtt, MqttProtocol, UnknownVehiclePolicy, Vehicle
from edge.errors import ConfigError, EdgeError, OutboxFull, PayloadError
from edge.point import Point

log = logging.getLogger(__name__)

SOURCE = "mqtt"
UNKNOWN_ORG = "unknown"
MAX_BATCH = 2000
MAX_PAYLOAD_BYTES = 256 * 1024  # a position report is < 1 KiB; a 0x0704 batch or a JSON array a few dozen
MAX_WAITING = 2 * MAX_BATCH  # received and not yet taken: above this the socket is not read
SUBSCRIBE_TIMEOUT_S = 120.0  # the SUBACK comes after the backlog the broker held for us, read as fast as it is stored
BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 30.0
SESSION_EXPIRY_S = 7 * 86400  # MQTT 5: how long the broker keeps our session while we are away
KEEPALIVE_S = 30
TIMEOUT_S = 10.0  # TCP/TLS connect, CONNACK


# --- pure helpers ------------------------------------------------------------------------------


def topic_matches(pattern: str, topic: str) -> bool:
    """MQTT filter matching (``+`` one level, ``#`` the rest); ``$share/G/`` prefixes ignored."""
    return topic_wildcards(pattern, topic) is not None


def _strip_share(pattern: str) -> str:
    if pattern.startswith("$share/"):
        parts = pattern.split("/", 2)
        return parts[2] if len(parts) == 3 else ""
    return pattern


def topic_wildcards(pattern: str, topic: str) -> list[str] | None:
    """The topic levels matched by each ``+`` (and ``#``, joined), or None if no match."""
    p = _strip_share(pattern).split("/")
    t = topic.split("/")
    out: list[str] = []
    for i, lvl in enumerate(p):
        if lvl == "#":
            out.append("/".join(t[i:]))
            return out
        if i >= len(t):
            return None
        if lvl == "+":
            out.append(t[i])
        elif lvl != t[i]:
            return None
    return out if len(t) == len(p) else None


def vehicle_from_topic(pattern: str, topic: str) -> str | None:
    """The vehicle id a topic names: the level matched by the pattern's last ``+``."""
    p = _strip_share(pattern).split("/")
    w = topic_wildcards(pattern, topic)
    if not w or "+" not in p:
        return None
    n_plus = p.count("+")
    v = w[n_plus - 1]
    return v or None


@dataclass(frozen=True)
class Route:
    pattern: str
    decode: Callable[..., list[Point]]
    crs: Crs
    fmt: str
    fields: Callable[..., list[tuple[str, int, dict]]] | None = None  # decode to (vehicle, time_ns, fields)


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool


def parse_broker_url(url: str, embedded_port: int = 1883) -> BrokerAddress:
    """``mqtt://host:port``, ``mqtts://host:port``, ``tcp://``, ``ssl://``, or ``embedded``."""
    if url == "embedded":
        return BrokerAddress("127.0.0.1", embedded_port, False)
    u = urlsplit(url)
    if u.scheme not in ("mqtt", "mqtts", "tcp", "ssl") or not u.hostname:
        raise ConfigError(f"broker URL {url!r}: expected mqtt://host:port or mqtts://host:port",
                          obj="mqtt", field="broker")
    tls = u.scheme in ("mqtts", "ssl")
    try:
        port = u.port or (8883 if tls else 1883)
    except ValueError:
        raise ConfigError(f"broker URL {url!r}: bad port", obj="mqtt", field="broker") from None
    return BrokerAddress(u.hostname, port, tls)


def tls_context(mqtt: Mqtt, force: bool) -> ssl.SSLContext | None:
    t = mqtt.tls
    if t is None and not force:
        return None
    try:
        ctx = ssl.create_default_context(cafile=t.ca_file if t else None)
        if t and t.cert_file:
            ctx.load_cert_chain(t.cert_file, t.key_file)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"cannot load TLS files: {e}", obj="mqtt", field="tls") from None
    return ctx


# --- the collector -----------------------------------------------------------------------------


class GpsCollector:
    """Subscribe to vehicle positions and hand them to ``ingest``; ``await run()`` until cancelled.

    ``terminals`` maps a terminal id (a JT/T 808 phone number) to a configured vehicle id.
    """

    def __init__(self, mqtt: Mqtt, vehicles: Sequence[Vehicle], ingest: Any, clock: Clock = SYSTEM_CLOCK,
                 broker_url: str | None = None, terminals: dict[str, str] | None = None) -> None:
        self.mqtt = mqtt
        self.ingest = ingest
        self.clock = clock
        self.vehicles = {v.id: v for v in vehicles}
        self.terminals = dict(terminals or {})
        for v in vehicles:
            term = getattr(v, "terminal", None)
            if term:
                self.terminals[str(term)] = v.id
        self.address = parse_broker_url(broker_url or mqtt.broker, mqtt.embedded_port)
        self._tls = tls_context(mqtt, self.address.tls)
        self.routes = [Route(t.pattern, decoder_for(t.format.value), t.crs, t.format.value, fields_decoder_for(t.format.value))
                       for t in mqtt.topics]
        self.tracker = Tracker(mqtt.max_speed_kmh)
        self.connected = False
        self.received = 0
        self.stored = 0
        self.duplicates = 0
        self.rejected: Counter[str] = Counter()
        self.unknown: set[str] = set()
        self.unknown_count = 0
        self.reconnects = 0
        self.batches = 0
        self.outbox_full = 0  # sessions ended because the outbox was full (nothing of the batch acknowledged)
        self.submit_errors = 0  # sessions ended because the ingest failed otherwise (OutboxError, ...)
        self.paused: str | None = None  # why intake is paused (the ingest refused a batch), until a commit succeeds
        self._client: paho.Client | None = None  # made on the first connection, connected again after each loss
        self._routes_seen: dict[str, tuple[Route | None, str | None]] = {}
        self._last_error: str | None = None
        self._paused_at = 0.0

    # -- public ---------------------------------------------------------------------------------
    def stats(self) -> dict:
        return {
            "connected": self.connected,
            "received": self.received,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "rejected": dict(self.rejected),
            "rejected_total": sum(self.rejected.values()),
            "unknown_vehicles": len(self.unknown),
            "unknown_vehicle_ids": sorted(self.unknown)[:100],
            "unknown_vehicle_messages": self.unknown_count,
            "reconnects": self.reconnects,
            "batches": self.batches,
            "outbox_full": self.outbox_full,
            "submit_errors": self.submit_errors,
            "paused": self.paused,
        }

    def subscriptions(self) -> list[str]:
        g = self.mqtt.shared_group
        return [f"$share/{g}/{r.pattern}" if g else r.pattern for r in self.routes]

    async def run(self) -> None:
        backoff = BACKOFF_MIN_S
        while True:
            try:
                await self._session()
            except asyncio.CancelledError:
                self.connected = False
                raise
            except (MqttConnectionError, OSError) as e:
                was = self.connected
                self.connected = False
                msg = f"{type(e).__name__}: {e}"
                if was or msg != self._last_error:
                    log.warning("mqtt down broker=%s:%s reason=%r retry_in_s=%.1f",
                                self.address.host, self.address.port, msg, backoff)
                self._last_error = msg
                if was and self.paused is None:
                    backoff = BACKOFF_MIN_S
            except EdgeError as e:
                # the ingest refused a batch: nothing of it was acknowledged; the broker redelivers it
                # once the session resumes. The pause grows until a commit succeeds.
                self.connected = False
                if self.paused is None:  # the first refusal after commits went through
                    backoff = BACKOFF_MIN_S
                self._refused(e, backoff)
            except Exception:  # a bug of ours or of a library: log it, keep the collector alive
                self.connected = False
                log.exception("gps collector failed; restarting the session")
            await self.clock.sleep(backoff * (0.8 + 0.4 * random.random()))
            backoff = min(BACKOFF_MAX_S, backoff * 2)

    def _refused(self, e: EdgeError, pause_s: float) -> None:
        reason = "outbox_full" if isinstance(e, OutboxFull) else "submit_error"
        if isinstance(e, OutboxFull):
            self.outbox_full += 1
        else:
            self.submit_errors += 1
        self.ingest.count("gps_intake_paused", 1, reason=reason)
        if self.paused is None:
            self._paused_at = self.clock.monotonic()
            log.warning("gps intake paused reason=%s error=%r retry_in_s=%.1f", reason, f"{type(e).__name__}: {e}", pause_s)
        self.paused = reason

    # -- connection -----------------------------------------------------------------------------
    def _connection(self) -> MqttConnection:
        if self._client is None:  # one client for the process: paho keeps QoS 2 state across reconnects
            m = self.mqtt
            self._client = paho_client(m.client_id, v5=m.protocol is MqttProtocol.v5, username=m.username,
                                       password=m.password, tls=self._tls, timeout_s=TIMEOUT_S)
        return MqttConnection(self._client, self.address.host, self.address.port, keepalive_s=KEEPALIVE_S,
                              timeout_s=TIMEOUT_S, session_expiry_s=SESSION_EXPIRY_S, max_waiting=MAX_WAITING)

    async def _session(self) -> None:
        conn = self._connection()
        try:
            await conn.connect()
            await self._receive(conn)
        finally:
            await conn.close()

    async def _receive(self, conn: MqttConnection) -> None:
        # a persistent session's backlog comes before the SUBACK: take it in while subscribing
        subscribing = asyncio.ensure_future(self._subscribe(conn))
        committing: asyncio.Task | None = None  # the previous batch: commit, then ack
        prep: _Prepared | None = None
        try:
            while True:
                for f in (subscribing, committing):
                    if f is not None and f.done() and f.exception() is not None:
                        raise f.exception()  # type: ignore[misc]  # what was taken is redelivered
                if not conn.items:
                    await conn.wait(committing, subscribing)  # a message, a task done, or MqttConnectionError
                    continue
                batch = conn.take(MAX_BATCH)
                # decode and check this batch while the previous one commits (pipelining);
                # the tracker is updated at once and rolled back if a commit fails
                prep = self._prepare(conn, batch)
                if committing is not None:
                    await asyncio.shield(committing)
                committing = asyncio.ensure_future(self._commit(prep))
                prep = None
                await asyncio.sleep(0)  # let the commit reach the outbox's writer before the next decode
        except BaseException:
            if not subscribing.done():
                subscribing.cancel()
            if prep is not None:  # prepared, never handed to a commit: forget what it taught the tracker
                self.tracker.forget(prep.vehicles)
            if committing is not None and not committing.done():
                # stopping or failing: let the batch in flight finish its commit and ack
                await asyncio.wait([committing], timeout=10)
            raise

    async def _subscribe(self, conn: MqttConnection) -> None:
        for sub in self.subscriptions():
            await conn.subscribe(sub, self.mqtt.qos, SUBSCRIBE_TIMEOUT_S)
        self.connected = True
        if self._last_error is not None or self.reconnects:
            log.info("mqtt up broker=%s:%s client_id=%s", self.address.host, self.address.port, self.mqtt.client_id)
        self.reconnects += 1
        self._last_error = None

    # -- the batch ------------------------------------------------------------------------------
    def _route(self, topic: str) -> tuple[Route | None, str | None]:
        hit = self._routes_seen.get(topic)
        if hit is not None:
            return hit
        hit = (None, None)
        for r in self.routes:
            if topic_matches(r.pattern, topic):
                hit = (r, vehicle_from_topic(r.pattern, topic))
                break
        if len(self._routes_seen) > 100_000:  # topics are per vehicle: bounded by the fleet, but be safe
            self._routes_seen.clear()
        self._routes_seen[topic] = hit
        return hit

    def decode_message(self, topic: str, payload: bytes, now_ns: int) -> list[Point]:
        """Decode, convert, tag and check one payload (pure apart from the counters)."""
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise PayloadError("payload_too_large", f"{len(payload)} bytes > {MAX_PAYLOAD_BYTES}")
        hit = self._routes_seen.get(topic)
        r, vid = hit if hit is not None else self._route(topic)
        if r is None:
            raise PayloadError("no_route", f"topic {topic!r} matches no configured pattern")
        measurements: list[str] | None = None  # None: all MEASUREMENT
        if r.fields is not None:  # the codec's tuples: one Point per position, built here
            items = r.fields(payload, vehicle=vid, now_ns=now_ns)
        else:
            points = r.decode(payload, vehicle=vid, now_ns=now_ns)
            items = [(p.tags["vehicle"], p.time_ns, p.fields) for p in points]
            measurements = [p.measurement for p in points]
        out = []
        terminals, vehicles, gcj = self.terminals, self.vehicles, r.crs is Crs.gcj02
        max_speed = self.mqtt.max_speed_kmh
        max_past_s = self.mqtt.max_age_days * 86400.0
        for k, (v_raw, t, fields) in enumerate(items):
            v_id = terminals.get(v_raw, v_raw) if terminals else v_raw
            veh = vehicles.get(v_id)
            if veh is None:
                self.unknown.add(v_id)
                self.unknown_count += 1
                if self.mqtt.unknown_vehicles is UnknownVehiclePolicy.dead_letter:
                    raise PayloadError("unknown_vehicle", f"vehicle {v_id!r} is not configured")
                org = UNKNOWN_ORG
            else:
                org = veh.org
            if gcj:
                lat, lon = gcj02_to_wgs84(float(fields["lat"]), float(fields["lon"]))  # type: ignore[arg-type]
                fields = {**fields, "lat": round(lat, 7), "lon": round(lon, 7)}
            q = Point(MEASUREMENT if measurements is None else measurements[k], {"vehicle": v_id, "org": org}, fields, t)
            check_point(q, now_ns, max_speed_kmh=max_speed, max_past_s=max_past_s)
            out.append(q)
        return out

    def _prepare(self, conn: MqttConnection, batch: list[Message]) -> "_Prepared":
        """Decode and check a batch (no I/O). The tracker learns the accepted points now."""
        now_ns = self.clock.now_ns()
        good: list[Point] = []
        owner: list[int] = []  # index of the message each good point came from
        rejects: list[tuple[int, str, str]] = []  # (message index, reason, detail)
        decode = self.decode_message
        self.received += len(batch)
        for i, m in enumerate(batch):
            topic = m.topic
            if topic is None:
                rejects.append((i, "bad_topic", "the topic is not UTF-8"))
                continue
            try:
                pts = decode(topic, m.payload, now_ns)
            except PayloadError as e:
                rejects.append((i, e.reason, e.detail))
                continue
            except Exception as e:  # a codec bug must not stall ingest: dead-letter and count it
                log.exception("codec failure topic=%s", topic)
                rejects.append((i, "internal_error", f"{type(e).__name__}: {e}"[:200]))
                continue
            if len(pts) == 1:
                good.append(pts[0])
                owner.append(i)
            else:
                good.extend(pts)
                owner.extend([i] * len(pts))
        verdict = self.tracker.check(good)
        dups = 0
        if verdict.rejected:
            pos = {id(p): owner[k] for k, p in enumerate(good)}
            for p, err in verdict.rejected:
                if err.reason == "duplicate":
                    dups += 1
                else:
                    rejects.append((pos[id(p)], err.reason, err.detail))
        self.tracker.commit(verdict)
        return _Prepared(conn, batch, verdict.accepted, dups, rejects, tuple(verdict.staged))

    async def _commit(self, prep: "_Prepared") -> None:
        """Outbox commit and dead letters, then the acknowledgements (in arrival order)."""
        try:
            if prep.accepted:
                await self.ingest.submit(list(prep.accepted))
            seen: set[tuple[int, str]] = set()
            for i, reason, detail in prep.rejects:
                if (i, reason) in seen:
                    continue
                seen.add((i, reason))
                m = prep.batch[i]
                await self.ingest.reject(source=SOURCE, raw=m.payload, topic=m.topic or "",
                                         reason=f"{reason}: {detail}" if detail else reason)
                self.rejected[reason] += 1
                self.ingest.count("gps_rejected", 1, reason=reason)
        except BaseException:
            self.tracker.forget(prep.vehicles)  # nothing of it is acknowledged: it comes again
            raise
        self.stored += len(prep.accepted)
        self.duplicates += prep.dups
        if prep.accepted:
            self.ingest.count("gps_positions_stored", len(prep.accepted))
        if prep.dups:
            self.ingest.count("gps_duplicates", prep.dups)
        self.batches += 1
        if self.paused is not None:
            log.info("gps intake resumed after_s=%.1f", self.clock.monotonic() - self._paused_at)
            self.paused = None
        prep.conn.ack(prep.batch)  # a no-op if that connection is gone: the broker redelivers them


@dataclass(frozen=True)
class _Prepared:
    conn: MqttConnection  # the connection the batch came on: acknowledged there or not at all
    batch: list[Message]
    accepted: tuple[Point, ...]
    dups: int
    rejects: list[tuple[int, str, str]]
    vehicles: tuple[str, ...]
