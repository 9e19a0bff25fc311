"""The MQTT ingest against real brokers: Mosquitto (Debian) and the embedded amqtt."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import orjson
import pytest

from collector.gps.subscriber import GpsCollector, parse_broker_url, topic_matches, vehicle_from_topic
from edge.clock import FakeClock
from edge.config import Mqtt, MqttProtocol, PayloadFormat, Tls, Topic, UnknownVehiclePolicy, Vehicle
from edge.errors import ConfigError, OutboxFull
from simulators.vehicles import Faults, VehicleFleet
from tests.support.gps import start, stop

ORG = "330000/330100/330106/inst-042"


def fleet_vehicles(fleet: VehicleFleet) -> list[Vehicle]:
    return [Vehicle(id=v, org=ORG, plate=f"浙A·{i:05d}") for i, v in enumerate(fleet.ids)]


def mqtt_cfg(url: str, fmt: str = "json", **kw) -> Mqtt:
    return Mqtt(broker=url, client_id=kw.pop("client_id", "edge-under-test"),
                topics=(Topic(pattern="vehicles/+/position", format=PayloadFormat(fmt)),), **kw)


def stored_keys(ingest) -> Counter:
    return Counter((p.tags["vehicle"], p.time_ns) for p in ingest.points())


def sent_keys(stats: dict) -> Counter:
    return Counter((v, t) for v, ts in stats["per_vehicle"].items() for t in ts)


# --- pure helpers --------------------------------------------------------------------------------

def test_topic_matching_and_vehicle_from_topic():
    assert topic_matches("vehicles/+/position", "vehicles/浙A·12345/position")
    assert not topic_matches("vehicles/+/position", "vehicles/a/b/position")
    assert topic_matches("gw/#", "gw/jt808/13912344323")
    assert topic_matches("$share/edge/vehicles/+/position", "vehicles/v1/position")
    assert vehicle_from_topic("vehicles/+/position", "vehicles/浙A·12345/position") == "浙A·12345"
    assert vehicle_from_topic("owntracks/+/+", "owntracks/alice/car7") == "car7"
    assert vehicle_from_topic("gps/all", "gps/all") is None


def test_broker_url_parsing():
    a = parse_broker_url("mqtts://broker.example:8883")
    assert (a.host, a.port, a.tls) == ("broker.example", 8883, True)
    assert parse_broker_url("embedded", 1999).port == 1999
    with pytest.raises(ConfigError, match="broker"):
        parse_broker_url("http://x")


# --- must show -------------------------------------------------------------------------------------

@pytest.mark.mosquitto
async def test_edge_down_while_1000_positions_published_all_stored_once(broker, ingest):
    fleet = VehicleFleet(100, broker.url, clock=FakeClock(time.time_ns()), faults=Faults(gap_rate=0))
    cfg = mqtt_cfg(broker.url)
    col = GpsCollector(cfg, fleet_vehicles(fleet), ingest)
    await stop(await start(col))  # first connection: the broker now holds our persistent session

    st = await fleet.run(ticks=10)  # 1,000 positions while the edge is down
    assert st["positions"] == 1000

    col2 = GpsCollector(cfg, fleet_vehicles(fleet), ingest)  # a fresh process: no memory
    task = await start(col2)
    await ingest.wait_for(1000, timeout_s=30)
    await asyncio.sleep(0.3)  # anything extra (a redelivery) would land now
    await stop(task)
    stored = stored_keys(ingest)
    assert stored == sent_keys(st)
    assert max(stored.values()) == 1
    assert all(p.tags["org"] == ORG for p in ingest.points())


@pytest.mark.mosquitto
async def test_mqtt5_persistent_session_keeps_positions(mosquitto, ingest):
    broker = mosquitto  # amqtt 0.12 speaks MQTT 3.1.1 only
    fleet = VehicleFleet(20, broker.url, clock=FakeClock(time.time_ns()), faults=Faults(gap_rate=0))
    cfg = mqtt_cfg(broker.url, protocol=MqttProtocol.v5, shared_group=None)
    col = GpsCollector(cfg, fleet_vehicles(fleet), ingest)
    await stop(await start(col))
    st = await fleet.run(ticks=5)
    task = await start(GpsCollector(cfg, fleet_vehicles(fleet), ingest))
    await ingest.wait_for(st["positions"])
    await stop(task)
    assert stored_keys(ingest) == sent_keys(st)


@pytest.mark.mosquitto
async def test_mosquitto_restart_mid_stream_loses_nothing(mosquitto, ingest):
    fleet = VehicleFleet(50, mosquitto.url, clock=FakeClock(time.time_ns()), faults=Faults(gap_rate=0))
    col = GpsCollector(mqtt_cfg(mosquitto.url), fleet_vehicles(fleet), ingest)
    task = await start(col)
    await fleet.run(ticks=5)
    await ingest.wait_for(250)
    await stop(task)
    await fleet.run(ticks=5)  # queued for the edge in Mosquitto's persistent store
    mosquitto.restart()  # SIGTERM: persistence saved, then up again on the same port
    task = await start(col)
    await fleet.run(ticks=5)
    try:
        await ingest.wait_for(750, timeout_s=5)
    except AssertionError:
        print(col.stats(), fleet.stats()["messages"])
        raise
    await asyncio.sleep(0.3)
    await stop(task)
    st = fleet.stats()
    assert st["positions"] == 750
    assert stored_keys(ingest) == sent_keys(st)


@pytest.mark.mosquitto
async def test_collector_reconnects_when_broker_comes_back(mosquitto, ingest):
    fleet = VehicleFleet(10, mosquitto.url, clock=FakeClock(time.time_ns()), faults=Faults(gap_rate=0))
    col = GpsCollector(mqtt_cfg(mosquitto.url), fleet_vehicles(fleet), ingest)
    task = await start(col)
    mosquitto.stop()
    deadline = time.monotonic() + 10
    while col.connected:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    mosquitto.start()
    deadline = time.monotonic() + 20
    while not col.connected:
        assert time.monotonic() < deadline, "no reconnect"
        await asyncio.sleep(0.05)
    st = await fleet.run(ticks=3)
    await ingest.wait_for(st["positions"])
    await stop(task)
    assert col.stats()["reconnects"] >= 2


@pytest.mark.mosquitto
@pytest.mark.parametrize("fmt", ["json", "owntracks", "nmea", "jt808"])
async def test_ten_percent_malformed_every_good_stored_every_bad_dead_lettered(broker, ingest, fmt):
    fleet = VehicleFleet(50, broker.url, fmt=fmt, clock=FakeClock(time.time_ns()),
                         faults=Faults(malformed_rate=0.10, gap_rate=0), seed=7)
    col = GpsCollector(mqtt_cfg(broker.url, fmt), fleet_vehicles(fleet), ingest)
    task = await start(col)
    st = await fleet.run(ticks=10)
    assert 20 <= st["malformed"] <= 90
    await ingest.wait_for(st["positions"], st["malformed"], timeout_s=30)
    await stop(task)
    assert stored_keys(ingest) == sent_keys(st)
    dead = ingest.dead()
    assert len(dead) == st["malformed"]
    assert sorted(d.payload for d in dead) == sorted(p for _, p in st["malformed_payloads"])
    assert all(d.reason and d.topic.startswith("vehicles/") and d.source == "mqtt" for d in dead)
    s = col.stats()
    assert s["rejected_total"] == st["malformed"] and s["stored"] == st["positions"]
    assert ingest.counters["gps_rejected"] == st["malformed"]


@pytest.mark.mosquitto
async def test_duplicates_and_out_of_order_are_handled(mosquitto, ingest):
    fleet = VehicleFleet(20, mosquitto.url, clock=FakeClock(time.time_ns()),
                         faults=Faults(duplicate_rate=0.1, out_of_order_rate=0.1, gap_rate=0), seed=3)
    col = GpsCollector(mqtt_cfg(mosquitto.url), fleet_vehicles(fleet), ingest)
    task = await start(col)
    st = await fleet.run(ticks=10)
    await ingest.wait_for(st["positions"])
    deadline = time.monotonic() + 10
    while col.stats()["duplicates"] < st["duplicates"]:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    await stop(task)
    assert st["duplicates"] > 0 and st["out_of_order"] > 0
    assert stored_keys(ingest) == sent_keys(st)
    assert max(stored_keys(ingest).values()) == 1
    assert ingest.dead() == []


@pytest.mark.mosquitto
async def test_unknown_vehicles_dead_lettered_by_policy(mosquitto, ingest):
    fleet = VehicleFleet(10, mosquitto.url, clock=FakeClock(time.time_ns()), faults=Faults(gap_rate=0))
    known = fleet_vehicles(fleet)[:5]
    col = GpsCollector(mqtt_cfg(mosquitto.url, unknown_vehicles=UnknownVehiclePolicy.dead_letter), known, ingest)
    task = await start(col)
    st = await fleet.run(ticks=2)
    await ingest.wait_for(10, 10)
    await stop(task)
    assert {p.tags["vehicle"] for p in ingest.points()} == {v.id for v in known}
    assert {d.reason.split(":")[0] for d in ingest.dead()} == {"unknown_vehicle"}
    assert col.stats()["unknown_vehicles"] == 5
    assert st["positions"] == 20


@pytest.mark.mosquitto
async def test_unknown_vehicles_accepted_with_org_unknown(mosquitto, ingest):
    fleet = VehicleFleet(3, mosquitto.url, clock=FakeClock(time.time_ns()), faults=Faults(gap_rate=0))
    col = GpsCollector(mqtt_cfg(mosquitto.url), [], ingest)
    task = await start(col)
    await fleet.run(ticks=2)
    await ingest.wait_for(6)
    await stop(task)
    assert {p.tags["org"] for p in ingest.points()} == {"unknown"}
    assert col.stats()["unknown_vehicles"] == 3


@pytest.mark.mosquitto
async def test_shared_subscription_splits_fleet_between_two_edges(mosquitto, ingest):
    fleet = VehicleFleet(40, mosquitto.url, clock=FakeClock(time.time_ns()), faults=Faults(gap_rate=0))
    vs = fleet_vehicles(fleet)
    a = GpsCollector(mqtt_cfg(mosquitto.url, client_id="edge-a", shared_group="edges"), vs, ingest)
    b = GpsCollector(mqtt_cfg(mosquitto.url, client_id="edge-b", shared_group="edges"), vs, ingest)
    ta, tb = await start(a), await start(b)
    st = await fleet.run(ticks=5)
    await ingest.wait_for(st["positions"])
    await asyncio.sleep(0.2)
    await stop(ta)
    await stop(tb)
    assert a.stats()["received"] > 0 and b.stats()["received"] > 0
    assert a.stats()["received"] + b.stats()["received"] == st["messages"]
    assert stored_keys(ingest) == sent_keys(st)


@pytest.mark.mosquitto
async def test_gcj02_topic_is_stored_as_wgs84(mosquitto, ingest):
    import aiomqtt
    import orjson

    from collector.gps.crs import wgs84_to_gcj02

    cfg = Mqtt(broker=mosquitto.url, client_id="edge-crs",
               topics=(Topic(pattern="amap/+/position", format=PayloadFormat.json, crs="gcj02"),))
    col = GpsCollector(cfg, [Vehicle(id="v1", org=ORG)], ingest)
    task = await start(col)
    glat, glon = wgs84_to_gcj02(30.2741, 120.1551)
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as c:
        await c.publish("amap/v1/position", orjson.dumps({"time": time.time(), "lat": glat, "lon": glon}), qos=1)
    await ingest.wait_for(1)
    await stop(task)
    p = ingest.points()[0]
    assert p.fields["lat"] == pytest.approx(30.2741, abs=1e-6)
    assert p.fields["lon"] == pytest.approx(120.1551, abs=1e-6)


@pytest.mark.mosquitto
async def test_tls_with_client_certificate_and_password(tmp_path, ingest):
    from tests.support import certs as certs_mod
    from tests.support.mosquitto import Mosquitto, available

    if not (available() and certs_mod.available()):
        pytest.skip("needs mosquitto and openssl")
    c = certs_mod.make_certs(tmp_path / "certs")
    m = Mosquitto(tmp_path / "mq-tls", users={"edge": "s3cret"}, tls=c).start()
    try:
        tls = Tls(ca_file=str(c.ca), cert_file=str(c.client_cert), key_file=str(c.client_key))
        ok = GpsCollector(mqtt_cfg(m.url, username="edge", password="s3cret", tls=tls), [], ingest)
        task = await start(ok)
        import ssl

        import aiomqtt
        import orjson

        ctx = ssl.create_default_context(cafile=str(c.ca))
        ctx.load_cert_chain(str(c.client_cert), str(c.client_key))
        async with aiomqtt.Client("127.0.0.1", m.port, username="edge", password="s3cret", tls_context=ctx) as pub:
            await pub.publish("vehicles/v1/position",
                              orjson.dumps({"time": time.time(), "lat": 30.27, "lon": 120.15}), qos=1)
        await ingest.wait_for(1)
        await stop(task)
        bad = GpsCollector(mqtt_cfg(m.url, username="edge", password="wrong", tls=tls, client_id="other"), [], ingest)
        t2 = asyncio.create_task(bad.run())
        await asyncio.sleep(1.0)
        assert not bad.connected
        await stop(t2)
    finally:
        m.stop()


@pytest.mark.mosquitto
async def test_outbox_failure_acks_nothing_and_the_broker_redelivers(mosquitto, ingest, tmp_path):
    from edge.outbox import Outbox

    fleet = VehicleFleet(20, mosquitto.url, clock=FakeClock(time.time_ns()), faults=Faults(gap_rate=0))
    col = GpsCollector(mqtt_cfg(mosquitto.url), fleet_vehicles(fleet), ingest)
    task = await start(col)
    path = ingest.outbox.path
    ingest.outbox.close()  # the disk goes away: every commit now fails with OutboxError
    st = await fleet.run(ticks=3)
    deadline = time.monotonic() + 10
    while col.connected or col.stats()["reconnects"] < 1:
        assert time.monotonic() < deadline, "collector kept going without a commit"
        await asyncio.sleep(0.02)
    ingest.outbox = Outbox(path)  # the disk is back
    await ingest.wait_for(st["positions"], timeout_s=30)
    await stop(task)
    assert stored_keys(ingest) == sent_keys(st)


class FullOutbox:
    """The real outbox behind a switch: while ``full``, every submit raises ``OutboxFull``."""

    def __init__(self, ingest) -> None:
        self.ingest, self.full, self.refused = ingest, True, Counter()

    async def submit(self, points) -> None:
        if self.full:
            self.refused.update((p.tags["vehicle"], p.time_ns) for p in points)
            raise OutboxFull("outbox full: 100 % of max_bytes")
        await self.ingest.submit(points)

    async def reject(self, **kw) -> None:
        await self.ingest.reject(**kw)

    def count(self, name: str, n: int = 1, **labels: str) -> None:
        self.ingest.count(name, n, **labels)


@pytest.mark.mosquitto
async def test_outbox_full_acks_nothing_pauses_and_the_broker_redelivers_once_there_is_room(mosquitto, ingest):
    fleet = VehicleFleet(20, mosquitto.url, clock=FakeClock(time.time_ns()), faults=Faults(gap_rate=0))
    full = FullOutbox(ingest)
    col = GpsCollector(mqtt_cfg(mosquitto.url), fleet_vehicles(fleet), full)
    task = await start(col)
    st = await fleet.run(ticks=3)
    deadline = time.monotonic() + 20
    # every position refused at least once, some twice: the broker redelivered what was not acknowledged
    while set(full.refused) != set(sent_keys(st)) or max(full.refused.values()) < 2:
        assert time.monotonic() < deadline, col.stats()
        await asyncio.sleep(0.02)
    s = col.stats()
    assert s["paused"] == "outbox_full" and s["stored"] == 0 and ingest.outbox.committed == 0
    assert s["outbox_full"] >= 2 and ingest.counters["gps_intake_paused"] == s["outbox_full"]
    full.full = False  # the sink drained: there is room again
    await ingest.wait_for(st["positions"], timeout_s=30)
    await asyncio.sleep(0.3)
    await stop(task)
    assert stored_keys(ingest) == sent_keys(st)
    assert max(stored_keys(ingest).values()) == 1
    assert col.stats()["paused"] is None and col.stats()["submit_errors"] == 0


# --- a scripted broker: what Mosquitto cannot be made to do on cue --------------------------------


async def read_packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One MQTT packet: (first byte, everything after the remaining length)."""
    b0 = (await reader.readexactly(1))[0]
    length, shift = 0, 0
    while True:
        d = (await reader.readexactly(1))[0]
        length |= (d & 127) << shift
        shift += 7
        if d < 128:
            break
    return b0, await reader.readexactly(length)


def publish_qos2(topic: str, mid: int, payload: bytes) -> bytes:
    t = topic.encode()
    body = len(t).to_bytes(2, "big") + t + mid.to_bytes(2, "big") + payload
    assert len(body) < 128
    return bytes([0x34, len(body)]) + body


async def test_qos2_message_whose_pubrel_comes_after_a_reconnect_is_delivered_and_completed(ingest):
    """The connection drops between the edge's PUBREC and the broker's PUBREL; the broker sends
    the PUBREL again when the session resumes (MQTT 3.1.1 4.4). The edge must deliver the message
    then and complete it (PUBCOMP), or the message is lost and the broker waits on it for ever."""
    payload = orjson.dumps({"time": int(time.time()), "lat": 30.27, "lon": 120.15})
    completed = asyncio.Event()
    connections: list[int] = []

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        n = len(connections)
        connections.append(n)
        try:
            assert (await read_packet(reader))[0] == 0x10  # CONNECT
            writer.write(bytes([0x20, 2, 1 if n else 0, 0]))  # CONNACK, session present on the second
            if n:
                writer.write(bytes([0x62, 2, 0, 7]))  # PUBREL 7 again, first thing on the resumed session
            while True:
                b0, body = await read_packet(reader)
                if b0 == 0x82:  # SUBSCRIBE: grant QoS 2
                    writer.write(bytes([0x90, 3]) + body[:2] + b"\x02")
                    if not n:
                        writer.write(publish_qos2("vehicles/v1/position", 7, payload))
                elif b0 == 0x50 and body == b"\x00\x07" and not n:  # PUBREC 7: drop the line before PUBREL
                    writer.transport.abort()
                    return
                elif b0 == 0x70 and body == b"\x00\x07":  # PUBCOMP 7
                    completed.set()
                elif b0 == 0xC0:
                    writer.write(b"\xd0\x00")
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(session, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    col = GpsCollector(mqtt_cfg(f"mqtt://127.0.0.1:{port}", qos=2), [Vehicle(id="v1", org=ORG)], ingest)
    task = asyncio.create_task(col.run())
    try:
        await asyncio.wait_for(completed.wait(), 10)
        await ingest.wait_for(1)
    finally:
        await stop(task)
        server.close()
        await server.wait_closed()
    assert len(connections) == 2
    assert [(p.tags["vehicle"], p.fields["lat"]) for p in ingest.points()] == [("v1", 30.27)]
