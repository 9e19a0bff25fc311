"""The MQTT shell of GPS ingest: subscribe, decode, validate, commit, then acknowledge.

Delivery: QoS 1 with a persistent session (fixed client id; clean session off for MQTT 3.1.1,
clean start off and a session expiry for MQTT 5), so the broker keeps what vehicles publish
while the edge is down. A message is acknowledged only after its points are committed to the
outbox (``await ingest.submit``) or its payload is in the dead-letter table: a crash between
receive and commit means a redelivery, never a loss.

Messages are taken in batches (whatever is queued, up to ``MAX_BATCH``) and committed in one
outbox transaction: one fsync for many positions; the next batch is decoded while the previous
one commits. PUBACKs go out in receive order, as MQTT requires. aiomqtt 2.5 has no manual-ack option of its own, so the collector switches the
underlying paho client to manual acknowledgement and acks through it (the one place that
touches aiomqtt's internals; see ``_paho``).

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

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from collector.gps.codecs import decoder_for
from collector.gps.crs import gcj02_to_wgs84
from collector.gps.validate import Tracker, check_point
from edge.clock import SYSTEM_CLOCK, Clock
from edge.config import Crs, Mqtt, MqttProtocol, UnknownVehiclePolicy, Vehicle
from edge.errors import ConfigError, EdgeError, PayloadError
from edge.point import Point

log = logging.getLogger(__name__)

SOURCE = "mqtt"
UNKNOWN_ORG = "unknown"
MAX_BATCH = 2000
MAX_PAYLOAD_BYTES = 256 * 1024  # a position report is < 1 KiB; a 0x0704 batch or a JSON array a few dozen
BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 30.0
SESSION_EXPIRY_S = 7 * 86400  # MQTT 5: how long the broker keeps our session while we are away


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
        self.routes = [Route(t.pattern, decoder_for(t.format.value), t.crs, t.format.value) for t in mqtt.topics]
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
        self._conn_gen = 0
        self._routes_seen: dict[str, tuple[Route | None, str | None]] = {}
        self._last_error: str | None = None

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
        async with client:
            self._conn_gen += 1
            gen = self._conn_gen
            for sub in self.subscriptions():
                await client.subscribe(sub, qos=self.mqtt.qos)
            self.connected = True
            if self._last_error is not None or self.reconnects:
                log.info("mqtt up broker=%s:%s client_id=%s", self.address.host, self.address.port, self.mqtt.client_id)
            self.reconnects += 1
            self._last_error = None
            it = client.messages
            committing: asyncio.Task | None = None  # the previous batch: commit, then ack
            prep: _Prepared | None = None
            nxt: asyncio.Future | None = None
            try:
                while True:
                    nxt = asyncio.ensure_future(anext(it))
                    if committing is not None and not committing.done():
                        await asyncio.wait([nxt, committing], return_when=asyncio.FIRST_COMPLETED)
                    if committing is not None and committing.done() and committing.exception() is not None:
                        nxt.cancel()  # a message taken but not handled is redelivered after the reconnect
                        raise committing.exception()  # type: ignore[misc]
                    batch = [await nxt]
                    await _drain(client, it, batch)
                    # decode and check this batch while the previous one commits (pipelining);
                    # the tracker is updated at once and rolled back if a commit fails
                    prep = self._prepare(gen, batch)
                    if committing is not None:
                        await asyncio.shield(committing)
                    committing = asyncio.ensure_future(self._commit(client, prep))
                    prep = None
            except BaseException:
                if nxt is not None and not nxt.done():
                    nxt.cancel()
                if prep is not None:  # prepared, never handed to a commit: forget what it taught the tracker
                    self.tracker.forget(prep.vehicles)
                if committing is not None and not committing.done():
                    # stopping or failing: let the batch in flight finish its commit and ack
                    await asyncio.wait([committing], timeout=10)
                raise

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
        r, vid = self._route(topic)
        if r is None:
            raise PayloadError("no_route", f"topic {topic!r} matches no configured pattern")
        points = r.decode(payload, vehicle=vid, now_ns=now_ns)
        out = []
        for p in points:
            v_raw = p.tags["vehicle"]
            v_id = self.terminals.get(v_raw, v_raw)
            veh = self.vehicles.get(v_id)
            if veh is None:
                self.unknown.add(v_id)
                self.unknown_count += 1
                if self.mqtt.unknown_vehicles is UnknownVehiclePolicy.dead_letter:
                    raise PayloadError("unknown_vehicle", f"vehicle {v_id!r} is not configured")
                org = UNKNOWN_ORG
            else:
                org = veh.org
            fields = p.fields
            if r.crs is Crs.gcj02:
                lat, lon = gcj02_to_wgs84(float(fields["lat"]), float(fields["lon"]))  # type: ignore[arg-type]
                fields = {**fields, "lat": round(lat, 7), "lon": round(lon, 7)}
            q = Point(p.measurement, {"vehicle": v_id, "org": org}, fields, p.time_ns)
            check_point(q, now_ns, max_speed_kmh=self.mqtt.max_speed_kmh)
            out.append(q)
        return out

    def _prepare(self, gen: int, batch: list[aiomqtt.Message]) -> "_Prepared":
        """Decode and check a batch (no I/O). The tracker learns the accepted points now."""
        now_ns = self.clock.now_ns()
        good: list[Point] = []
        owner: list[int] = []  # index of the message each good point came from
        rejects: list[tuple[int, str, str]] = []  # (message index, reason, detail)
        for i, m in enumerate(batch):
            self.received += 1
            try:
                pts = self.decode_message(m.topic.value, _payload(m), now_ns)
            except PayloadError as e:
                rejects.append((i, e.reason, e.detail))
                continue
            except Exception as e:  # a codec bug must not stall ingest: dead-letter and count it
                log.exception("codec failure topic=%s", m.topic.value)
                rejects.append((i, "internal_error", f"{type(e).__name__}: {e}"[:200]))
                continue
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
                await self.ingest.reject(source=SOURCE, raw=_payload(m), topic=m.topic.value,
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
        if prep.gen != self._conn_gen:
            return  # the connection these came on is gone; the broker redelivers them
        pc = _paho(client)
        for m in prep.batch:
            if m.qos > 0:
                pc.ack(m.mid, m.qos)


@dataclass(frozen=True)
class _Prepared:
    gen: int
    batch: list
    accepted: tuple[Point, ...]
    dups: int
    rejects: list[tuple[int, str, str]]
    vehicles: tuple[str, ...]


def _payload(m: aiomqtt.Message) -> bytes:
    p = m.payload
    return bytes(p) if isinstance(p, (bytes, bytearray)) else str(p).encode()


async def _drain(client: aiomqtt.Client, it: Any, batch: list) -> None:
    """Take what is already queued without awaiting: aiomqtt's iterator makes a task per message,
    which costs more than decoding it, so read its queue directly when it is there."""
    q = getattr(client, "_queue", None)
    if isinstance(q, asyncio.Queue):
        while len(batch) < MAX_BATCH:
            try:
                batch.append(q.get_nowait())
            except asyncio.QueueEmpty:
                return
    # unknown aiomqtt internals: fall back to the public iterator (nothing is lost, only slower)
    while len(it) and len(batch) < MAX_BATCH:
        batch.append(await anext(it))


def _paho(client: aiomqtt.Client) -> paho.Client:
    """The paho client under aiomqtt (for manual acknowledgement, which aiomqtt 2.5 lacks)."""
    return client._client  # noqa: SLF001
