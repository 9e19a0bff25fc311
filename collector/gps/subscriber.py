"""The MQTT shell of GPS ingest: subscribe, decode, validate, commit, then acknowledge.

Delivery: QoS 1 with a persistent session (fixed client id; clean session off for MQTT 3.1.1,
clean start off and a session expiry for MQTT 5), so the broker keeps what vehicles publish
while the edge is down. A message is acknowledged only after its points are committed to the
outbox (``await ingest.submit``) or its payload is in the dead-letter table: a crash between
receive and commit means a redelivery, never a loss.

Messages are taken in batches (whatever is queued, up to ``MAX_BATCH``) and committed in one
outbox transaction: one fsync for many positions; the next batch is decoded while the previous
one commits. PUBACKs go out in receive order, as MQTT requires. aiomqtt 2.5 has no manual-ack option of its own, so the collector switches the
underlying paho client to manual acknowledgement and acks through it (see ``_paho``).

The receive path is the hot one, so the collector does not take messages through aiomqtt's
iterator (a task, an aiomqtt ``Message`` and ``Topic`` per message, one packet per event-loop
turn) but through ``_Inbox``, the other place that uses aiomqtt's and paho's internals, with a
fallback to the public iterator: on a plain TCP connection it reads the socket 64 KiB at a
time and parses the PUBLISH packets itself, paho still handling every other packet from the
same bytes; it stops reading while two batches wait (back-pressure). A batch's PUBACKs leave
in one write.

When the outbox is full (``OutboxFull``: it holds back sources that can wait), nothing of the
batch is acknowledged: the collector ends the session, pauses (growing to ``HOLD_PAUSE_MAX_S``),
reconnects, and the broker redelivers every unacknowledged message of the persistent session
(MQTT redelivers when a session resumes). Counted (``gps_intake_paused{reason=outbox_full}``),
logged when intake pauses and when it resumes.

Bad input never stalls the loop: a payload that does not decode or validate goes to the
dead-letter table with its topic and reason and is acknowledged; duplicates (a QoS 1
redelivery, a terminal resending) are counted and acknowledged without a dead-letter row.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import ssl
import struct
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Sequence
from urllib.parse import urlsplit

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from collector.gps.codecs import MEASUREMENT, decoder_for, fields_decoder_for
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
READ_AHEAD = 65536  # bytes taken from the socket per event-loop turn (a few hundred positions)
READ_AHEAD_MESSAGES = 2 * MAX_BATCH  # received and not yet taken: above this the socket is not read
SUBSCRIBE_TIMEOUT_S = 120.0  # the SUBACK comes after the backlog the broker held for us, read as fast as it is stored
BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 30.0
SESSION_EXPIRY_S = 7 * 86400  # MQTT 5: how long the broker keeps our session while we are away
HOLD_PAUSE_MAX_S = 4.0  # longest pause before trying again while the outbox is full (it frees as the store drains)


class MqttConnectionError(EdgeError):
    """The broker could not be reached or dropped us (translated from aiomqtt.MqttError)."""


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
        self.outbox_full = 0  # sessions ended because the outbox refused a batch (OutboxFull)
        self.paused_since: float | None = None  # monotonic, while intake is paused for a full outbox
        self._conn_gen = 0
        self._routes_seen: dict[str, tuple[Route | None, str | None]] = {}
        self._last_error: str | None = None
        self.intake: str | None = None  # how the current connection's messages come in: see _Inbox.mode

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
            "paused": self.paused_since is not None,
            "intake": self.intake,
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
            except OutboxFull as e:
                # nothing of the refused batch was acknowledged: the broker keeps it and redelivers it
                # when the session resumes; pause (briefly: the outbox frees as its consumers drain)
                self.connected = False
                self._held(e, min(backoff, HOLD_PAUSE_MAX_S))
                backoff = min(backoff, HOLD_PAUSE_MAX_S)
            except (aiomqtt.MqttError, MqttConnectionError, EdgeError, OSError) as e:
                was = self.connected
                self.connected = False
                msg = f"{type(e).__name__}: {e}"
                if was or msg != self._last_error:
                    log.warning("mqtt down broker=%s:%s reason=%r retry_in_s=%.1f",
                                self.address.host, self.address.port, msg, backoff)
                self._last_error = msg
                if was:
                    backoff = BACKOFF_MIN_S
            except Exception:  # a bug of ours or of a library: log it, keep the collector alive
                self.connected = False
                log.exception("gps collector failed; restarting the session")
            await self.clock.sleep(backoff * (0.8 + 0.4 * random.random()))
            backoff = min(BACKOFF_MAX_S, backoff * 2)

    def _held(self, e: OutboxFull, pause_s: float) -> None:
        self.outbox_full += 1
        self.ingest.count("gps_intake_paused", 1, reason="outbox_full")
        if self.paused_since is None:
            self.paused_since = self.clock.monotonic()
            log.warning("gps intake paused reason=outbox_full (positions left unacknowledged with the broker) "
                        "retry_in_s=%.1f error=%r", pause_s, str(e))

    # -- connection -----------------------------------------------------------------------------
    def _client(self) -> aiomqtt.Client:
        m = self.mqtt
        v5 = m.protocol is MqttProtocol.v5
        props = None
        if v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = SESSION_EXPIRY_S
        client = aiomqtt.Client(
            self.address.host, self.address.port,
            identifier=m.client_id,
            username=m.username,
            password=m.password,
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            clean_session=None if v5 else False,
            clean_start=False if v5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
            properties=props,
            tls_context=self._tls,
            keepalive=30,
            timeout=10,
        )
        _paho(client).manual_ack_set(True)
        return client

    async def _session(self) -> None:
        client = self._client()
        inbox = _Inbox(client)  # before connecting: a persistent session's backlog comes right after CONNACK
        async with client:
            inbox.attach()
            self.intake = inbox.mode
            self._conn_gen += 1
            gen = self._conn_gen
            # a persistent session's backlog comes before the SUBACK: take it in while subscribing
            subscribing = asyncio.ensure_future(self._subscribe(client))
            committing: asyncio.Task | None = None  # the previous batch: commit, then ack
            prep: _Prepared | None = None
            try:
                while True:
                    for f in (subscribing, committing):
                        if f is not None and f.done() and f.exception() is not None:
                            raise f.exception()  # type: ignore[misc]  # what was taken is redelivered
                    if not inbox.ready():
                        await inbox.wait(committing, subscribing)  # a message, a task done, or MqttError
                        continue
                    batch = inbox.take(MAX_BATCH)
                    # decode and check this batch while the previous one commits (pipelining);
                    # the tracker is updated at once and rolled back if a commit fails
                    prep = self._prepare(gen, batch)
                    if committing is not None:
                        await asyncio.shield(committing)
                    committing = asyncio.ensure_future(self._commit(client, prep))
                    prep = None
                    await asyncio.sleep(0)  # let the commit reach the outbox's writer before the next decode
            except BaseException:
                inbox.close()
                if not subscribing.done():
                    subscribing.cancel()
                if prep is not None:  # prepared, never handed to a commit: forget what it taught the tracker
                    self.tracker.forget(prep.vehicles)
                if committing is not None and not committing.done():
                    # stopping or failing: let the batch in flight finish its commit and ack
                    await asyncio.wait([committing], timeout=10)
                raise

    async def _subscribe(self, client: aiomqtt.Client) -> None:
        for sub in self.subscriptions():
            await client.subscribe(sub, qos=self.mqtt.qos, timeout=SUBSCRIBE_TIMEOUT_S)
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
            check_point(q, now_ns, max_speed_kmh=max_speed)
            out.append(q)
        return out

    def _prepare(self, gen: int, batch: list) -> "_Prepared":
        """Decode and check a batch (no I/O). The tracker learns the accepted points now."""
        now_ns = self.clock.now_ns()
        good: list[Point] = []
        owner: list[int] = []  # index of the message each good point came from
        rejects: list[tuple[int, str, str]] = []  # (message index, reason, detail)
        decode = self.decode_message
        self.received += len(batch)
        for i, m in enumerate(batch):
            try:
                topic = m.topic  # a str from paho, an aiomqtt Topic from aiomqtt's queue
                if type(topic) is not str:
                    topic = topic.value
                payload = m.payload
                pts = decode(topic, payload if type(payload) is bytes else _payload(m), now_ns)
            except PayloadError as e:
                rejects.append((i, e.reason, e.detail))
                continue
            except Exception as e:  # a codec bug must not stall ingest: dead-letter and count it
                log.exception("codec failure topic=%s", _topic(m))
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
        return _Prepared(gen, batch, verdict.accepted, dups, rejects, tuple(verdict.staged))

    async def _commit(self, client: aiomqtt.Client, prep: "_Prepared") -> None:
        """Outbox commit and dead letters, then the PUBACKs (in arrival order)."""
        try:
            if prep.accepted:
                await self.ingest.submit(list(prep.accepted))
            seen: set[tuple[int, str]] = set()
            for i, reason, detail in prep.rejects:
                if (i, reason) in seen:
                    continue
                seen.add((i, reason))
                m = prep.batch[i]
                await self.ingest.reject(source=SOURCE, raw=_payload(m), topic=_topic(m),
                                         reason=f"{reason}: {detail}" if detail else reason)
                self.rejected[reason] += 1
                self.ingest.count("gps_rejected", 1, reason=reason)
        except BaseException:
            self.tracker.forget(prep.vehicles)  # nothing of it is acknowledged: it comes again
            raise
        if self.paused_since is not None:
            log.info("gps intake resumed after_s=%.1f sessions_refused=%d", self.clock.monotonic() - self.paused_since,
                     self.outbox_full)
            self.paused_since = None
        self.stored += len(prep.accepted)
        self.duplicates += prep.dups
        if prep.accepted:
            self.ingest.count("gps_positions_stored", len(prep.accepted))
        if prep.dups:
            self.ingest.count("gps_duplicates", prep.dups)
        self.batches += 1
        if prep.gen != self._conn_gen:
            return  # the connection these came on is gone; the broker redelivers them
        _ack(_paho(client), prep.batch)


@dataclass(frozen=True)
class _Prepared:
    gen: int
    batch: list
    accepted: tuple[Point, ...]
    dups: int
    rejects: list[tuple[int, str, str]]
    vehicles: tuple[str, ...]


def _payload(m: Any) -> bytes:
    p = m.payload
    return bytes(p) if isinstance(p, (bytes, bytearray)) else str(p).encode()


def _topic(m: Any) -> str:
    """The topic of a paho message (``str``) or of an aiomqtt one (``Topic``)."""
    try:
        t = m.topic
    except UnicodeDecodeError:  # paho decodes on access; a broker should have refused it
        return repr(getattr(m, "_topic", b""))
    return t if type(t) is str else t.value


_PUBACK = struct.Struct("!BBH")


def _ack(pc: paho.Client, batch: list) -> None:
    """Acknowledge every QoS 1 and 2 message of ``batch``, in order.

    QoS 1: one 4-byte PUBACK each, the bytes ``paho.Client.ack`` sends, queued to paho as one
    write instead of a queued packet, a log line and a ``send`` per message. A batch with QoS 2
    messages goes through ``paho.Client.ack`` (PUBCOMP)."""
    queue = getattr(pc, "_packet_queue", None)
    if queue is None or any(m.qos > 1 for m in batch):
        for m in batch:
            if m.qos > 0:
                pc.ack(m.mid, m.qos)
        return
    pack = _PUBACK.pack
    data = b"".join([pack(paho.PUBACK, 2, m.mid) for m in batch if m.qos == 1])
    if data:
        queue(paho.PUBACK, data, 0, 0)


class _Msg:
    """A PUBLISH parsed by ``_Inbox``: what the collector reads of paho's ``MQTTMessage``."""

    __slots__ = ("topic", "payload", "qos", "mid")

    def __init__(self, topic: str, payload: bytes, qos: int, mid: int) -> None:
        self.topic, self.payload, self.qos, self.mid = topic, payload, qos, mid


class _Stream:
    """What paho sees as its socket once ``_Inbox`` reads the real one.

    ``_Inbox`` receives into ``buf``; paho's ``recv`` calls are served from ``buf[pos:limit]``,
    the packet the inbox hands over (``limit``), and see ``BlockingIOError`` past it, so paho
    never reads ahead of the inbox. A receive error or the peer's close is kept and shown to
    paho once the whole buffer is read, so paho ends the connection as it would have. Everything
    else (``send``, ``fileno``, ``close``...) is the socket's."""

    __slots__ = ("_sock", "buf", "pos", "limit", "error", "eof")

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.buf = b""
        self.pos = 0
        self.limit = 0
        self.error: OSError | None = None
        self.eof = False

    def recv(self, n: int) -> bytes:
        pos = self.pos
        avail = self.limit - pos
        if avail <= 0:
            if pos >= len(self.buf):  # all read: now the end of the stream, if it came
                if self.error is not None:
                    raise self.error
                if self.eof:
                    return b""
            raise BlockingIOError
        end = pos + (n if n < avail else avail)
        self.pos = end
        return self.buf[pos:end]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


_VARINT_SHORT, _VARINT_BAD = -1, -2


def _varint(buf: bytes, i: int, end: int) -> tuple[int, int]:
    """The MQTT variable byte integer at ``buf[i:end]``: (value, index after it), the index being
    ``_VARINT_SHORT`` when ``end`` comes first and ``_VARINT_BAD`` past 4 bytes (malformed)."""
    value = shift = 0
    while i < end:
        d = buf[i]
        i += 1
        value |= (d & 127) << shift
        if d < 128:
            return value, i
        shift += 7
        if shift >= 28:
            return value, _VARINT_BAD
    return value, _VARINT_SHORT


class _Inbox:
    """Messages from paho to the collector for one connection.

    Made before connecting: paho's ``on_message`` appends paho's own message to a list (aiomqtt's
    queue stays empty). Once connected (``attach``), the inbox reads a plain TCP socket itself,
    ``READ_AHEAD`` bytes per event-loop turn (paho makes three ``recv`` calls per packet and
    aiomqtt lets it read one packet per turn): QoS 0 and 1 PUBLISH packets are parsed here into
    ``_Msg`` (topic, payload, qos, packet id: no paho ``MQTTMessage`` with its lock, log line and
    callback dispatch), every other packet (CONNACK, SUBACK, PINGRESP, QoS 2, a malformed one)
    is read by paho from the same bytes through ``_Stream``, in stream order. The socket is not
    read while ``READ_AHEAD_MESSAGES`` wait to be taken (back-pressure: a persistent session's
    backlog stays in the broker, not in our memory; before the SUBACK too, so the subscription
    is made while the batches go on). Disconnection is aiomqtt's ``_disconnected`` future, as
    for aiomqtt's own iterator. Where those internals are missing (another aiomqtt), the inbox
    falls back to ``client.messages``: slower, nothing lost.
    """

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.items: list = []
        self._waiter: asyncio.Future | None = None
        self._next: asyncio.Future | None = None  # fallback: an ``anext`` of aiomqtt's iterator in flight
        self._it = client.messages
        self._loop = asyncio.get_running_loop()
        self._pc = _paho(client)
        self._st: _Stream | None = None
        self._fd = -1
        self._paused = False
        self._v5 = False
        self._topics: dict[bytes, str] = {}
        self.fast = (isinstance(getattr(client, "_queue", None), asyncio.Queue)
                     and isinstance(getattr(client, "_disconnected", None), asyncio.Future))
        if self.fast:
            self._pc.on_message = self._on_message

    def attach(self) -> None:
        """Connected: take over paho's socket (the read-ahead and the reader)."""
        if not self.fast:
            return
        pc = self._pc
        sock = getattr(pc, "_sock", None)
        in_packet = getattr(pc, "_in_packet", None)
        # TLS stays with aiomqtt's reader (ssl buffers on its own); so does a paho we do not know
        if type(sock) is socket.socket and sock.fileno() >= 0 and isinstance(in_packet, dict) and "command" in in_packet:
            self._st = _Stream(sock)
            self._v5 = pc._protocol == paho.MQTTv5  # noqa: SLF001
            pc._sock = self._st  # noqa: SLF001
            self._fd = sock.fileno()
            self._loop.add_reader(self._fd, self._on_readable)  # replaces aiomqtt's reader for this socket

    @property
    def mode(self) -> str:
        """``socket``: read and parsed here; ``paho``: paho's reader (TLS), messages from its
        ``on_message``; ``iterator``: aiomqtt's own iterator (internals missing)."""
        if self._st is not None:
            return "socket"
        return "paho" if self.fast else "iterator"

    # -- paho's side (event-loop thread) --------------------------------------------------------
    def _on_message(self, client: Any, userdata: Any, msg: paho.MQTTMessage) -> None:
        self.items.append(msg)
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)

    def _on_readable(self) -> None:
        st = self._st
        if self._paused or st is None:
            return
        try:
            data = st._sock.recv(READ_AHEAD)  # noqa: SLF001
        except BlockingIOError:
            return
        except OSError as e:  # paho gets it once the buffered packets are through
            st.error = e
            data = b""
        else:
            if not data:
                st.eof = True
        if data:
            st.buf = st.buf[st.pos:] + data if st.pos < len(st.buf) else data
            st.pos = st.limit = 0
        self._parse()

    def _parse(self) -> None:
        """Every complete packet in the buffer, in order (stops early when paused)."""
        st, pc = self._st, self._pc
        assert st is not None
        buf, pos = st.buf, st.pos
        n = len(buf)
        items, topics, v5 = self.items, self._topics, self._v5
        got = len(items)
        try:
            while pos < n:
                if len(items) >= READ_AHEAD_MESSAGES:
                    self._paused = True  # ``take`` reads on
                    self._loop.remove_reader(self._fd)
                    break
                if pc._in_packet["command"]:  # noqa: SLF001  # paho is inside a packet: it reads on
                    st.pos, st.limit = pos, n
                    pc.loop_read()
                    if pc._sock is not st or st.pos == pos:  # noqa: SLF001  # closed, or waiting for more
                        return
                    pos = st.pos
                    continue
                # fixed header: type and flags, remaining length (1 to 4 bytes)
                b0 = buf[pos]
                length, i = _varint(buf, pos + 1, n)
                if i == _VARINT_SHORT:
                    break  # the length is not all here yet
                if i == _VARINT_BAD:
                    i = n + 1  # more than 4 bytes: malformed, paho says so
                end = i + length
                if end > n:
                    if i <= n and length <= READ_AHEAD:
                        break  # the packet is not all here yet
                    end = n  # malformed, or large: paho reads it (in pieces, as it comes)
                    complete = False
                else:
                    complete = True
                qos = (b0 >> 1) & 3
                if complete and b0 & 0xF0 == 0x30 and qos < 2 and end - i >= 2:
                    tl = buf[i] << 8 | buf[i + 1]
                    j = i + 2 + tl
                    mid = 0
                    if qos:
                        mid = buf[j] << 8 | buf[j + 1] if j + 2 <= end else 0
                        j += 2
                    if v5:  # properties: a length, then what we do not use
                        plen, k = _varint(buf, j, end)
                        if k < 0:
                            k = end + 1  # no property length: malformed
                        j = k + plen
                    if j <= end and (qos == 0 or mid > 0):
                        tb = buf[i + 2:i + 2 + tl]
                        topic = topics.get(tb)
                        if topic is None:
                            try:
                                topic = tb.decode("utf-8")
                            except UnicodeDecodeError:
                                topic = None
                            else:
                                if len(topics) >= 100_000:
                                    topics.clear()
                                topics[tb] = topic
                        if topic is not None:
                            items.append(_Msg(topic, buf[j:end], qos, mid))
                            pos = end
                            continue
                # anything else: paho reads exactly this packet from the buffer
                st.pos, st.limit = pos, end
                pc.loop_read()
                if pc._sock is not st:  # noqa: SLF001  # closed (paho has told aiomqtt)
                    return
                if st.pos == pos:
                    break
                pos = st.pos
            st.pos = st.limit = pos
            if (st.error is not None or st.eof) and not self._paused:
                st.limit = n  # what is left can never complete: paho reads it, meets the end, closes
                pc.loop_read()
        except Exception as exc:  # as aiomqtt's reader: a broken socket ends the connection
            d = self.client._disconnected  # noqa: SLF001
            if not d.done():
                d.set_exception(exc)
        finally:
            if len(items) > got:
                try:
                    pc._last_bytes_received = time.monotonic()  # noqa: SLF001  # paho's keepalive
                except AttributeError:
                    pass
                self._wake()

    def _read_on(self) -> None:
        self._paused = False
        st = self._st
        if st is not None and self._pc._sock is st and st.fileno() == self._fd:  # noqa: SLF001  # still open
            self._loop.add_reader(self._fd, self._on_readable)
            self._loop.call_soon(self._parse_if_open)

    def _parse_if_open(self) -> None:
        if not self._paused and self._st is not None and self._pc._sock is self._st:  # noqa: SLF001
            self._parse()

    # -- the collector's side -------------------------------------------------------------------
    def ready(self) -> bool:
        if not self.items and not self.fast:
            n = self._next
            if n is not None and n.done():
                self._next = None
                self.items.append(n.result())  # raises the iterator's MqttError
        return bool(self.items)

    def take(self, n: int) -> list:
        items = self.items
        if self._paused and len(items) - n < READ_AHEAD_MESSAGES // 2:
            self._read_on()
        if len(items) <= n:
            self.items = []
            q = None if self.fast else getattr(self.client, "_queue", None)
            if isinstance(q, asyncio.Queue):  # whatever else aiomqtt has queued, without awaiting
                while len(items) < n:
                    try:
                        items.append(q.get_nowait())
                    except asyncio.QueueEmpty:
                        break
            return items
        self.items = items[n:]
        return items[:n]

    async def wait(self, *tasks: asyncio.Future | None) -> None:
        """Until a message is there, or one of ``tasks`` is done; ``MqttError`` when disconnected."""
        others = [t for t in tasks if t is not None and not t.done()]
        if not self.fast:
            if self._next is None:
                self._next = asyncio.ensure_future(anext(self._it))
            await asyncio.wait([self._next, *others], return_when=asyncio.FIRST_COMPLETED)
            return
        d = self.client._disconnected  # noqa: SLF001
        if not d.done():
            w = self._waiter = self._loop.create_future()
            try:
                await asyncio.wait([w, d, *others], return_when=asyncio.FIRST_COMPLETED)
            finally:
                self._waiter = None
                w.cancel()
        if d.done() and not self.items:
            raise aiomqtt.MqttError("Disconnected during message iteration") from d.exception()

    def close(self) -> None:
        if self._next is not None:
            self._next.cancel()
            self._next = None


def _paho(client: aiomqtt.Client) -> paho.Client:
    """The paho client under aiomqtt (for manual acknowledgement, which aiomqtt 2.5 lacks)."""
    return client._client  # noqa: SLF001
