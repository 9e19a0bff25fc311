"""Bad input and hostile clients: each gets the protocol's answer or a close, is counted by reason,
and harms no other terminal's session. Back-pressure: a slow or full outbox is felt by the
terminals (no reads, no acknowledgements), never by our memory."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from simulators import jt808_terminals as wire
from simulators.jt808_terminals import TerminalFleet
from tests.jt808.conftest import Client, make_site, wait_until
from tests.jt808.test_session import fix


async def _healthy_neighbour(address: str) -> Client:
    n = await Client.connect(address, phone="13800000004")
    await n.login()
    return n


async def _neighbour_still_served(n: Client) -> None:
    s = await n.send(wire.LOCATION, fix("13800000004"))
    assert await n.reply() == (s, wire.LOCATION, 0)


async def test_frame_over_the_size_limit_is_closed(serve):
    srv = await serve(make_site(max_frame_bytes=2200))
    n = await _healthy_neighbour(srv.address)
    c = await Client.connect(srv.address)
    c.writer.write(b"\x7e" + b"\x01" * 5000)
    assert await c.closed()
    assert srv.server.errors["jt808_frame_too_large"] == 1
    await _neighbour_still_served(n)


async def test_garbage_is_counted_then_closed(serve):
    srv = await serve()
    n = await _healthy_neighbour(srv.address)
    c = await Client.connect(srv.address)
    c.writer.write(b"".join(b"\x7e" + os.urandom(30).replace(b"\x7e", b"\x00") + b"\x7e" for _ in range(40)))
    assert await c.closed()
    assert srv.server.closed["garbage"] == 1
    assert sum(srv.server.errors.values()) >= 32
    await _neighbour_still_served(n)


async def test_byte_by_byte_sender_is_served_within_the_frame_timeout_and_closed_beyond(serve):
    srv = await serve(make_site(frame_timeout_s=1.5, handshake_timeout_s=30))
    n = await _healthy_neighbour(srv.address)
    c = await Client.connect(srv.address)
    await c.login()
    s, data = c.frame(wire.LOCATION, fix())
    t0 = time.monotonic()
    for i in range(len(data)):  # about 70 bytes over 0.7 s: slow, but inside the limit
        c.writer.write(data[i:i + 1])
        await c.writer.drain()
        await asyncio.sleep(0.01)
        if i % 10 == 0:
            await _neighbour_still_served(n)  # the others do not wait for it
    assert await c.reply() == (s, wire.LOCATION, 0)
    assert time.monotonic() - t0 < 1.5
    s, data = c.frame(wire.LOCATION, fix(t_ns=time.time_ns() - 10**9))
    c.writer.write(data[:10])  # ... and then nothing more of this frame
    assert await c.closed(timeout_s=5)
    assert srv.server.closed["frame_timeout"] == 1
    await _neighbour_still_served(n)


async def test_a_flood_of_connections_from_one_address_is_refused_beyond_the_limit(serve):
    srv = await serve(make_site(max_per_address=20, handshake_timeout_s=30))
    n = await _healthy_neighbour(srv.address)
    flood = [await Client.connect(srv.address) for _ in range(60)]
    await wait_until(lambda: srv.server.refused["too_many_from_address"] >= 41)
    closed = await asyncio.gather(*(c.closed(timeout_s=0.3) for c in flood))
    assert sum(closed) == 41  # 20 allowed from 127.0.0.1, of which the neighbour is one
    assert srv.server.stats()["refused"] == {"too_many_from_address": 41}
    await _neighbour_still_served(n)


async def test_connections_beyond_max_connections_are_refused(serve):
    srv = await serve(make_site(max_connections=5, handshake_timeout_s=30))
    cs = [await Client.connect(srv.address) for _ in range(8)]
    await wait_until(lambda: srv.server.refused["too_many_connections"] == 3)
    assert len(srv.server.conns) == 5
    for c in cs:
        c.close()


async def test_no_authentication_within_the_handshake_time_is_closed(serve):
    srv = await serve(make_site(handshake_timeout_s=0.5))
    c = await Client.connect(srv.address)
    assert await c.closed(timeout_s=5)
    assert srv.server.closed["handshake_timeout"] == 1


async def test_silence_beyond_the_heartbeat_multiple_closes_and_raises_the_silence_hook(serve):
    calls = []
    srv = await serve(make_site(heartbeat_s=0.3, idle_multiple=2), on_silent=lambda t, now, s: calls.append((t.vehicle, s)) or [])
    c = await Client.connect(srv.address)
    await c.login()
    assert await c.closed(timeout_s=5)
    assert srv.server.closed["idle"] == 1
    await wait_until(lambda: calls)
    assert calls[0][0] == "car-000" and calls[0][1] >= 0.6
    assert not srv.server.terminal("13800000000").online


async def test_a_slow_outbox_stops_the_reading_not_the_memory(serve, ingest):
    """While commits wait, the server reads no more: what it has taken off the socket stays
    below a read and a stream buffer however much the terminal pushes."""
    srv = await serve(make_site(max_frame_bytes=4096))
    c = await Client.connect(srv.address)
    await c.login()
    ingest.gate.clear()
    before = srv.server.bytes_read
    frames = []
    t0 = time.time_ns() - 86400 * 10**9
    for k in range(400):  # 400 batches of 20: 8,000 fixes, about 400 KB on the wire
        frames.append(c.frame(wire.BATCH, wire.batch_body(1, [fix(t_ns=t0 + (k * 20 + i) * 10**9) for i in range(20)]))[1])
    pusher = asyncio.create_task(_push(c, b"".join(frames)))
    await asyncio.sleep(1.0)
    taken = srv.server.bytes_read - before
    assert taken <= 64 * 1024  # one read (16 KiB) and the stream's buffer, not the 400 KB pushed
    ingest.gate.set()
    await asyncio.wait_for(pusher, 30)
    await wait_until(lambda: ingest.outbox.committed >= 8000, timeout_s=30)
    acks = [await c.reply() for _ in range(400)]
    assert all(r[2] == 0 for r in acks)


async def _push(c: Client, data: bytes) -> None:
    c.writer.write(data)
    await c.writer.drain()


async def test_a_full_outbox_means_no_acknowledgement_and_the_terminals_resend(serve, ingest, tmp_path):
    """OutboxFull from submit: positions are not acknowledged; the simulated terminals keep them
    and send them again; once there is room, every one is stored, none twice."""
    srv = await serve(make_site(n_vehicles=3))
    ingest.full_cap = 0  # full from the start
    fleet = TerminalFleet(3, srv.address, drive_interval_s=0.2, park_interval_s=0.2, heartbeat_s=5,
                          ack_timeout_s=0.3, retries=1, reconnect_max_s=0.5)
    run = asyncio.create_task(fleet.run(duration_s=2.0, drain_s=20))
    await wait_until(lambda: srv.server.unacknowledged >= 5, timeout_s=10)
    assert ingest.outbox.committed == 0 and fleet.stats()["acknowledged"] == 0
    ingest.full_cap = None  # room again
    stats = await run
    assert stats["kept"] == 0 and stats["acknowledged"] == stats["generated"] > 5
    stored = {(p.tags["vehicle"], p.time_ns) for p in ingest.points()}
    assert len(stored) == len(ingest.points()) == stats["generated"]  # each once
    assert srv.server.stats()["unacknowledged"] >= 5
    assert ingest.counters["jt808_unacknowledged.reason=outbox_full"] >= 1


@pytest.mark.parametrize("kind", ["bad_checksum", "wrong_auth", "slow", "garbage"])
async def test_simulator_faults_on_demand_are_survived(serve, ingest, kind):
    srv = await serve(make_site(n_vehicles=2))
    fleet = TerminalFleet(2, srv.address, drive_interval_s=0.3, park_interval_s=0.3, heartbeat_s=5,
                          ack_timeout_s=0.4, retries=3, reconnect_max_s=0.5)
    fleet.inject(kind, 3)
    stats = await fleet.run(duration_s=1.5, drain_s=15)
    assert stats[f"fault_{kind}"] == 3
    assert stats["kept"] == 0 and stats["acknowledged"] == stats["generated"]
    assert len({(p.tags["vehicle"], p.time_ns) for p in ingest.points()}) == stats["generated"]
    if kind == "bad_checksum":
        assert srv.server.errors["jt808_bad_checksum"] == 3
    if kind == "wrong_auth":
        assert srv.server.errors["wrong_auth_code"] == 3


async def test_a_terminal_that_stops_sending_still_gets_the_answers_of_what_it_sent(serve):
    """A half-close (FIN) right after the last reports: they are stored and answered, then the
    connection closes as the terminal's."""
    srv = await serve()
    c = await Client.connect(srv.address)
    await c.login()
    t0 = time.time_ns() // 1_000_000_000 - 60
    serials = [await c.send(wire.LOCATION, fix(t_ns=(t0 + k) * 1_000_000_000)) for k in range(3)]
    c.writer.write_eof()
    got = [await c.reply() for _ in serials]
    assert got == [(s, wire.LOCATION, 0) for s in serials]
    assert await c.closed()
    await wait_until(lambda: srv.server.closed["peer_closed"] == 1)
    assert srv.server.positions == 3
