"""The GPS collector's message intake against a real Mosquitto.

The collector drives paho's client on asyncio (many packets per event-loop turn, a pause while
``MAX_WAITING`` messages wait, manual acknowledgement after the commit). These tests publish a
hostile mix (tiny to > 256 KiB payloads, packets around 64 KiB, multi-byte UTF-8 topics, JSON
arrays, QoS 0/1/2, MQTT 5 properties, garbage) while the edge is offline and while it is online,
over plain TCP and TLS, and check what lands in the real outbox.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import ssl
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
import orjson
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from collector.gps.subscriber import MAX_PAYLOAD_BYTES, MAX_WAITING, GpsCollector
from edge.config import Mqtt, MqttProtocol, PayloadFormat, Tls, Topic, Vehicle
from tests.support import certs as certs_mod
from tests.support.gps import start, stop
from tests.support.mosquitto import Mosquitto, available

pytestmark = pytest.mark.mosquitto

ORG = "330000/330100/330106/inst-042"
SOCKET_READ = 65536  # packets just under, at and just over 64 KiB: a common read size of socket code
LAT, LON = 30.2741, 120.1551  # every position at the same place: no impossible_jump verdicts
# ASCII ids, multi-byte ids, and one of 64 characters (192 bytes of UTF-8 in the topic)
VEHICLE_IDS = [f"v-{i:03d}" for i in range(5)] + [f"浙A·{i:05d}" for i in range(5)] + ["车" * 64]
VEHICLES = [Vehicle(id=v, org=ORG) for v in VEHICLE_IDS]


def topic_of(vid: str) -> str:
    return f"vehicles/{vid}/position"


# --- the mix -------------------------------------------------------------------------------------


@dataclass
class Sent:
    seq: int  # publish order
    topic: str
    payload: bytes
    qos: int
    keys: list[tuple[str, int]] = field(default_factory=list)  # (vehicle, time_ns) of each position
    reason: str | None = None  # the dead-letter reason expected (None: stored)


class Mix:
    """Messages with unique, increasing position times (seconds since the epoch, one per position)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.t = int(time.time()) - 86_400
        self.seq = 0
        self.sent: list[Sent] = []

    def _item(self, vid: str, full: bool) -> tuple[dict, tuple[str, int]]:
        self.t += 1
        obj: dict = {"time": self.t, "lat": LAT, "lon": LON, "odometer_km": float(self.t)}
        if full:
            obj.update(vehicle=vid, speed_kmh=42.5, heading_deg=90, acc=True, fuel_l=31.2,
                       altitude_m=12.0, satellites=11)
        return obj, (vid, self.t * 1_000_000_000)

    def _add(self, vid: str, payload: bytes, qos: int, keys=(), reason: str | None = None) -> Sent:
        m = Sent(self.seq, topic_of(vid), payload, qos, list(keys), reason)
        self.seq += 1
        self.sent.append(m)
        return m

    def single(self, qos: int) -> Sent:
        vid = self.rng.choice(VEHICLE_IDS)
        obj, key = self._item(vid, self.rng.random() < 0.5)
        return self._add(vid, orjson.dumps(obj), qos, [key])

    def array(self, size: int, qos: int, reason: str | None = None, vid: str | None = None) -> Sent:
        """A JSON array padded with whitespace to exactly ``size`` bytes (<= 1000 positions)."""
        vid = vid or self.rng.choice(VEHICLE_IDS)
        n = min(1000, max(1, (size - 2) // 80))
        items, keys = zip(*(self._item(vid, False) for _ in range(n)))
        body = orjson.dumps(list(items))
        assert len(body) <= size
        return self._add(vid, body + b" " * (size - len(body)), qos, [] if reason else keys, reason)

    def bad(self, payload: bytes, reason: str, qos: int = 1) -> Sent:
        return self._add(self.rng.choice(VEHICLE_IDS), payload, qos, reason=reason)

    def phase(self, n_small: int) -> list[Sent]:
        """``n_small`` single positions (QoS 0 and 1) with the awkward messages scattered among them."""
        start = len(self.sent)
        # the remaining length of an MQTT 3.1.1 PUBLISH (MQTT 5: one byte more, or a few with
        # properties): 2 (topic length) + topic + 2 (packet id, QoS > 0) + payload
        long_id = VEHICLE_IDS[-1]
        head = 2 + len(topic_of(long_id).encode())
        specials = [
            lambda: self.array(40_000, 1),
            lambda: self.array(SOCKET_READ - head - 2 - 1, 1, vid=long_id),  # a whole packet just under 64 KiB
            lambda: self.array(SOCKET_READ - head, 0, vid=long_id),  # exactly 64 KiB
            lambda: self.array(SOCKET_READ - head - 2 + 1, 1, vid=long_id),  # one byte more
            lambda: self.array(100_000, 0),
            lambda: self.array(MAX_PAYLOAD_BYTES, 1),  # the largest accepted
            lambda: self.array(MAX_PAYLOAD_BYTES + 1, 1, reason="payload_too_large"),
            lambda: self.single(2),  # QoS 2: PUBREC, PUBREL, then the PUBCOMP after the commit
            lambda: self.bad(b"", "bad_json", qos=0),
            lambda: self.bad(b"{", "bad_json"),
            lambda: self.bad(bytes(range(256)), "bad_json"),
            lambda: self.bad(b'{"time": 1700000000, "lat": 30.2}', "missing_field"),
            lambda: self.bad(b"[]", "empty_batch", qos=0),
        ]
        at = sorted(self.rng.sample(range(n_small + len(specials)), len(specials)))
        order = iter(specials)
        for i in range(n_small + len(specials)):
            if at and i == at[0]:
                at.pop(0)
                next(order)()
            else:
                self.single(self.rng.choice((0, 1)))
        return self.sent[start:]


def v5_properties(i: int) -> Properties | None:
    """Some PUBLISH properties Mosquitto forwards: none, short ones, and more than 127 bytes."""
    if i % 3 == 0:
        return None
    p = Properties(PacketTypes.PUBLISH)
    p.ContentType = "application/json"
    p.MessageExpiryInterval = 3600
    if i % 3 == 2:
        p.UserProperty = [("fleet", "测试" * 60), ("seq", str(i))]
    return p


async def publish(port: int, msgs: list[Sent], v5: bool = False, tls: ssl.SSLContext | None = None,
                  chunk: int = 500) -> None:
    """One publisher; the PUBLISH packets leave in ``seq`` order (paho writes them as the tasks
    start, in order, and no in-flight window holds QoS 1 back behind QoS 0); the PUBACKs of a
    chunk are awaited together."""
    async with aiomqtt.Client("127.0.0.1", port, identifier="intake-publisher", tls_context=tls,
                              protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
                              max_inflight_messages=chunk + 1) as c:
        c.pending_calls_threshold = chunk + 1  # aiomqtt warns above 10 publishes waiting for their PUBACK
        for i in range(0, len(msgs), chunk):
            await asyncio.gather(*(c.publish(m.topic, m.payload, qos=m.qos, timeout=30,
                                             properties=v5_properties(m.seq) if v5 else None)
                                   for m in msgs[i:i + chunk]))


# --- checks --------------------------------------------------------------------------------------


def assert_stored_once_in_order(ingest, sent: list[Sent]) -> None:
    points = ingest.points()
    keys = [(p.tags["vehicle"], p.time_ns) for p in points]
    expected = Counter(k for m in sent for k in m.keys)
    got = Counter(keys)
    missing, extra = expected - got, got - expected
    assert not missing and not extra, f"missing {len(missing)} positions, {len(extra)} extra/duplicated"
    assert max(got.values()) == 1
    owner = {k: m for m in sent for k in m.keys}
    for q in (0, 1, 2):  # MQTT orders messages of one QoS: so must the outbox
        seqs = [owner[k].seq for k in keys if owner[k].qos == q]
        assert seqs == sorted(seqs), f"QoS {q} positions stored out of publish order"
    for p in points:  # each payload's bytes went to its own message, topic and position
        assert p.fields["odometer_km"] == p.time_ns / 1e9  # whole seconds: exact both ways
        assert p.tags["org"] == ORG
        assert topic_of(p.tags["vehicle"]) == owner[(p.tags["vehicle"], p.time_ns)].topic

    def digest(topic: str, payload: bytes, reason: str) -> tuple:
        return topic, len(payload), hashlib.sha256(payload).hexdigest(), reason

    dead = ingest.dead()
    assert sorted(digest(d.topic, d.payload, d.reason.split(":")[0]) for d in dead) == \
        sorted(digest(m.topic, m.payload, m.reason) for m in sent if m.reason)
    assert all(d.source == "mqtt" for d in dead)


def collector_cfg(url: str, **kw) -> Mqtt:
    return Mqtt(broker=url, client_id="edge-intake", qos=kw.pop("qos", 2),
                topics=(Topic(pattern="vehicles/+/position", format=PayloadFormat.json),), **kw)


def broker(tmp_path: Path, **kw) -> Mosquitto:
    if not available():
        pytest.skip("mosquitto binary not installed")
    # QoS 0 messages are kept for an offline persistent session too (Mosquitto drops them by default)
    return Mosquitto(tmp_path / "mq", extra_config="queue_qos0_messages true", **kw).start()


# --- tests ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("transport", "protocol"), [
    ("tcp", MqttProtocol.v311),
    ("tcp", MqttProtocol.v5),
    ("tls", MqttProtocol.v311),
], ids=["mqtt3.1.1", "mqtt5", "tls"])
async def test_hostile_mix_offline_and_online_every_position_stored_once_in_order(
        tmp_path, ingest, transport, protocol):
    tls_cfg = tls_ctx = certs = None
    if transport == "tls":
        if not certs_mod.available():
            pytest.skip("openssl not installed")
        certs = certs_mod.make_certs(tmp_path / "certs")
        tls_cfg = Tls(ca_file=str(certs.ca), cert_file=str(certs.client_cert), key_file=str(certs.client_key))
        tls_ctx = ssl.create_default_context(cafile=str(certs.ca))
        tls_ctx.load_cert_chain(str(certs.client_cert), str(certs.client_key))
    mq = broker(tmp_path, tls=certs)
    v5 = protocol is MqttProtocol.v5
    try:
        cfg = collector_cfg(mq.url, protocol=protocol, tls=tls_cfg)
        await stop(await start(GpsCollector(cfg, VEHICLES, ingest)))  # the broker now keeps our session

        mix = Mix(seed=11)
        # while the edge is down. Kept under Mosquitto's in-flight window (1000): past it, Mosquitto
        # 2.0.11 holds queued QoS 1 messages of a backlog mixed with QoS 0 back until the next
        # connection (seen with a plain aiomqtt subscriber too).
        await publish(mq.port, mix.phase(800), v5, tls_ctx)
        col = GpsCollector(cfg, VEHICLES, ingest)  # a fresh process
        task = await start(col)
        await publish(mq.port, mix.phase(800), v5, tls_ctx)  # while it is up

        sent = mix.sent
        n_points = sum(len(m.keys) for m in sent)
        n_dead = sum(1 for m in sent if m.reason)
        await ingest.wait_for(n_points, n_dead, timeout_s=30)
        await asyncio.sleep(0.3)  # a redelivery or a duplicate would land now
        await stop(task)

        assert_stored_once_in_order(ingest, sent)
        s = col.stats()
        assert (s["received"], s["stored"], s["duplicates"], s["rejected_total"]) == \
            (len(sent), n_points, 0, n_dead)
        assert s["rejected"]["payload_too_large"] == 2
    finally:
        mq.stop()


class SlowIngest:
    """The real outbox, then a slow step before the collector may acknowledge (a busy disk)."""

    def __init__(self, ingest, delay_s: float) -> None:
        self.ingest, self.delay_s = ingest, delay_s

    async def submit(self, points) -> None:
        await self.ingest.submit(points)
        await asyncio.sleep(self.delay_s)  # committed, not yet acknowledged

    async def reject(self, **kw) -> None:
        await self.ingest.reject(**kw)

    def count(self, name: str, n: int = 1, **labels: str) -> None:
        self.ingest.count(name, n, **labels)


async def test_backlog_far_larger_than_the_read_ahead_stored_once_in_order(tmp_path, ingest):
    """12,000 waiting messages and a slow disk: the collector stops reading at MAX_WAITING
    and reads on as batches commit; nothing is dropped or reordered across the pauses."""
    assert MAX_WAITING < 12_000
    mq = broker(tmp_path)
    try:
        cfg = collector_cfg(mq.url, qos=1)
        await stop(await start(GpsCollector(cfg, VEHICLES, ingest)))
        mix = Mix(seed=7)
        for _ in range(12_000):
            mix.single(1)
        await publish(mq.port, mix.sent)
        col = GpsCollector(cfg, VEHICLES, SlowIngest(ingest, 0.05))
        task = await start(col)
        await ingest.wait_for(len(mix.sent), timeout_s=30)
        await asyncio.sleep(0.3)
        await stop(task)
        assert_stored_once_in_order(ingest, mix.sent)
        s = col.stats()
        assert (s["received"], s["duplicates"]) == (len(mix.sent), 0)
    finally:
        mq.stop()


async def test_mosquitto_restart_in_the_middle_of_a_backlog_loses_nothing_and_stores_nothing_twice(
        tmp_path, ingest):
    mq = broker(tmp_path)
    try:
        cfg = collector_cfg(mq.url, qos=1)
        await stop(await start(GpsCollector(cfg, VEHICLES, ingest)))
        mix = Mix(seed=5)
        # 330 vehicles, ~18 positions each: a redelivery is within the tracker's memory (256 per vehicle)
        for i in range(6000):
            vid = f"{VEHICLE_IDS[i % len(VEHICLE_IDS)][:60]}-{i % 30}"
            obj, key = mix._item(vid, full=False)
            mix._add(vid, orjson.dumps(obj), 1, [key])
        vehicles = [Vehicle(id=v, org=ORG) for v in {k[0] for m in mix.sent for k in m.keys}]
        await publish(mq.port, mix.sent)

        col = GpsCollector(cfg, vehicles, SlowIngest(ingest, 0.1))
        task = asyncio.create_task(col.run())
        deadline = time.monotonic() + 20
        while ingest.outbox.committed < 1000:
            assert time.monotonic() < deadline and not task.done(), "the backlog did not start coming in"
            await asyncio.sleep(0.005)
        committed, acked = ingest.outbox.committed, col.stats()["stored"]  # stored: committed and acknowledged
        mq.restart()  # SIGTERM (the session and its unacknowledged messages saved), then up on the same port
        assert acked < committed < len(mix.sent), "the restart did not fall in the middle of the backlog"

        await ingest.wait_for(len(mix.sent), timeout_s=30)
        deadline = time.monotonic() + 20
        # the batch committed but not acknowledged at the restart comes again, and is recognised
        while not (col.connected and col.stats()["reconnects"] >= 2 and col.stats()["duplicates"] >= committed - acked):
            assert time.monotonic() < deadline, f"no reconnect or no redelivery: {col.stats()}"
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.5)  # the rest of the redelivery
        await stop(task)
        got = Counter((p.tags["vehicle"], p.time_ns) for p in ingest.points())
        assert got == Counter(k for m in mix.sent for k in m.keys)
        s = col.stats()
        assert s["stored"] == len(mix.sent) and ingest.dead() == []

        # everything is acknowledged now: a fresh process (no memory of what it stored) gets nothing
        again = GpsCollector(cfg, vehicles, ingest)
        task = await start(again)
        await asyncio.sleep(0.5)
        await stop(task)
        assert again.stats()["received"] == 0
    finally:
        mq.stop()
