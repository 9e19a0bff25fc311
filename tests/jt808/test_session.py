"""The terminal state machine, message by message, over real TCP sockets and the real outbox."""

from __future__ import annotations

import asyncio
import struct
import time

import pytest

from collector.jt808.registry import Registry
from simulators import jt808_terminals as wire
from simulators.payloads import Fix, jt808_location_body
from tests.jt808.conftest import ORG, Client, make_site, wait_until

NS = 1_000_000_000


def fix(phone: str = "13800000000", t_ns: int | None = None, lat: float = 30.2741, lon: float = 120.1551,
        speed: float = 36.0) -> bytes:
    t = (time.time_ns() if t_ns is None else t_ns) // NS * NS
    return jt808_location_body(Fix(phone, t, lat, lon, speed, 90.0, True, 12345.6, 40.2, 12.0, 11))


async def test_registration_issues_a_code_kept_across_a_restart(serve, ingest, tmp_path):
    srv = await serve()
    c = await Client.connect(srv.address)
    result, code = await c.register()
    assert result == 0 and len(code) >= 8
    result2, code2 = await c.register()  # the 0x8100 was lost, the terminal asks again: same code
    assert (result2, code2) == (0, code)
    c.close()
    await srv.stop()
    reg = Registry(tmp_path / "terminals.sqlite")
    assert reg.code_of("13800000000") == code
    reg.close()
    srv2 = await serve()
    c2 = await Client.connect(srv2.address)
    assert await c2.authenticate(code) == 0  # no registration needed after the restart
    c2.close()


async def test_registration_of_an_unknown_terminal_is_refused_and_closed(serve):
    srv = await serve()
    c = await Client.connect(srv.address, phone="13999999999")
    result, code = await c.register()
    assert (result, code) == (4, "")  # 4: no such terminal in the platform's database
    assert await c.closed()
    assert srv.server.errors["unknown_terminal"] == 1 and srv.server.closed["unknown_terminal"] == 1


async def test_open_registration_admits_any_terminal(serve, ingest):
    srv = await serve(make_site(registration="open"))
    c = await Client.connect(srv.address, phone="13999999999")
    await c.login()
    s = await c.send(wire.LOCATION, fix("13999999999"))
    assert await c.reply() == (s, wire.LOCATION, 0)
    [p] = ingest.points()
    assert p.tags == {"vehicle": "13999999999", "org": "unknown"}
    c.close()


async def test_authentication_2019_carries_imei_and_software_version(serve):
    srv = await serve()
    c = await Client.connect(srv.address, phone="13800000001", version=1)
    code = await c.login()
    t = srv.server.terminal("13800000001")
    assert t.online and t.protocol == "2019" and t.protocol_version == 1
    assert (t.imei, t.software_version, t.vehicle, t.org) == ("860000000000001", "fw-2.1", "car-001", ORG)
    assert code
    c.close()
    await wait_until(lambda: not t.online)


async def test_answers_use_the_terminals_header_version_and_our_own_serials(serve):
    srv = await serve()
    c = await Client.connect(srv.address, phone="13800000002", version=1)
    await c.register()
    host, port = srv.address.split(":")
    r, w = await asyncio.open_connection(host, int(port))
    w.write(wire.frame(wire.HEARTBEAT, "13800000002", 7, b"", 1))
    await w.drain()
    data = await asyncio.wait_for(r.read(100), 5)
    raw = data[1:-1].replace(b"\x7d\x02", b"\x7e").replace(b"\x7d\x01", b"\x7d")
    props = struct.unpack_from(">H", raw, 2)[0]
    assert props & 0x4000 and raw[4] == 1  # a 2019 header with the terminal's version byte
    assert raw[5:15] == bytes.fromhex("00000000013800000002")
    w.transport.abort()
    c.close()


async def test_wrong_auth_code_fails_and_three_failures_close(serve):
    srv = await serve()
    c = await Client.connect(srv.address)
    code = await c.login()
    c.close()
    c = await Client.connect(srv.address)
    for _ in range(3):
        assert await c.authenticate(code + "x") == 1
    assert await c.closed()
    assert srv.server.errors["wrong_auth_code"] == 3 and srv.server.closed["auth_failures"] == 1


async def test_authentication_without_registration_fails_unless_codes_are_adopted(serve, ingest):
    srv = await serve()
    c = await Client.connect(srv.address)
    assert await c.authenticate("FROM-OLD-PLATFORM") == 1
    assert srv.server.errors["not_registered"] == 1
    c.close()
    srv2 = await serve(make_site(auth_codes="adopt"))
    c = await Client.connect(srv2.address)
    assert await c.authenticate("FROM-OLD-PLATFORM") == 0
    c.close()
    c = await Client.connect(srv2.address)
    assert await c.authenticate("ANOTHER") == 1  # adopted once, then it is the code
    c.close()


async def test_before_authentication_only_registration_and_authentication_are_served(serve, ingest):
    srv = await serve()
    c = await Client.connect(srv.address)
    s = await c.send(wire.LOCATION, fix())
    assert await c.reply() == (s, wire.LOCATION, 1)  # failure: not stored, the terminal keeps it
    s = await c.send(wire.HEARTBEAT)
    assert await c.reply() == (s, wire.HEARTBEAT, 1)
    assert ingest.points() == [] and srv.server.errors["not_authenticated"] == 2
    c.close()


async def test_heartbeat(serve):
    srv = await serve()
    c = await Client.connect(srv.address)
    await c.login()
    s = await c.send(wire.HEARTBEAT)
    assert await c.reply() == (s, wire.HEARTBEAT, 0)
    assert srv.server.terminal("13800000000").last_heartbeat_ns is not None
    c.close()


async def test_logout_forgets_the_code(serve):
    srv = await serve()
    c = await Client.connect(srv.address)
    code = await c.login()
    s = await c.send(0x0003)
    assert await c.reply() == (s, 0x0003, 0)
    assert await c.closed()
    assert srv.registry.code_of("13800000000") is None
    c = await Client.connect(srv.address)
    assert await c.authenticate(code) == 1  # must register again
    c.close()


async def test_location_is_acknowledged_only_once_committed(serve, ingest):
    srv = await serve()
    c = await Client.connect(srv.address)
    await c.login()
    ingest.gate.clear()  # the outbox is slow
    s = await c.send(wire.LOCATION, fix())
    with pytest.raises(TimeoutError):
        await c.reply(timeout_s=0.5)
    assert ingest.outbox.committed == 0
    ingest.gate.set()
    assert await c.reply() == (s, wire.LOCATION, 0)
    [p] = ingest.points()
    assert p.tags == {"vehicle": "car-000", "org": ORG}
    assert p.fields["odometer_km"] == pytest.approx(12345.6) and p.fields["satellites"] == 11
    assert p.fields["speed_kmh"] == pytest.approx(36.0) and p.fields["acc"] is True and "backlog" not in p.fields
    c.close()


async def test_batch_backlog_is_stored_marked_and_acknowledged_once(serve, ingest):
    srv = await serve()
    c = await Client.connect(srv.address)
    await c.login()
    t0 = time.time_ns() - 3 * 86400 * NS  # three days in a garage
    bodies = [fix(t_ns=t0 + i * 30 * NS, lat=30.27 + i * 1e-4) for i in range(20)]
    s = await c.send(wire.BATCH, wire.batch_body(1, bodies))
    assert await c.reply() == (s, wire.BATCH, 0)
    pts = ingest.points()
    assert len(pts) == 20 and all(p.fields["backlog"] is True for p in pts)
    t = srv.server.terminal("13800000000")
    assert t.positions == 20 and t.backlog_positions == 20
    c.close()


async def test_fixes_beyond_the_age_window_are_dead_lettered_and_still_answered(serve, ingest):
    srv = await serve(make_site(max_age_report_days=1, max_age_batch_days=10))
    c = await Client.connect(srv.address)
    await c.login()
    old = time.time_ns() - 5 * 86400 * NS
    s = await c.send(wire.LOCATION, fix(t_ns=old))  # 5 days: too old for a report here
    assert await c.reply() == (s, wire.LOCATION, 0)
    s = await c.send(wire.BATCH, wire.batch_body(1, [fix(t_ns=old), fix(t_ns=old + 30 * NS)]))  # fine in a batch
    assert await c.reply() == (s, wire.BATCH, 0)
    assert len(ingest.points()) == 2
    [d] = ingest.dead()
    assert d.reason == "time_too_old" and d.source == "jt808"
    c.close()


async def test_unsupported_message(serve):
    srv = await serve()
    c = await Client.connect(srv.address)
    await c.login()
    s = await c.send(0x0900, b"\x41hello")  # data uplink pass-through
    assert await c.reply() == (s, 0x0900, 3)
    c.close()


async def test_subpackaged_batch_is_reassembled_and_every_package_answered(serve, ingest):
    srv = await serve()
    c = await Client.connect(srv.address)
    await c.login()
    body = wire.batch_body(1, [fix(t_ns=time.time_ns() - (100 - i) * 60 * NS) for i in range(30)])
    parts = [body[:700], body[700:]]
    serials = []
    for i, part in enumerate(parts, 1):
        c.serial += 1
        serials.append(c.serial)
        raw = struct.pack(">HH", wire.BATCH, len(part) | 0x2000) + bytes.fromhex("013800000000") + struct.pack(">HHH", c.serial, 2, i) + part
        c.writer.write(b"\x7e" + (raw + bytes((wire._xor(raw),))).replace(b"\x7d", b"\x7d\x01").replace(b"\x7e", b"\x7d\x02") + b"\x7e")
    await c.writer.drain()
    got = {(await c.reply())[0] for _ in parts}
    assert got == set(serials)
    assert len(ingest.points()) == 30
    c.close()


async def test_bad_check_code_gets_no_answer_and_the_resend_is_served(serve, ingest):
    srv = await serve()
    c = await Client.connect(srv.address)
    await c.login()
    body = fix()
    s, bad = c.frame(wire.LOCATION, body, corrupt=True)
    c.writer.write(bad)
    with pytest.raises(TimeoutError):
        await c.reply(timeout_s=0.5)
    c.writer.write(wire.frame(wire.LOCATION, c.phone, s, body))  # the terminal's retransmission
    assert await c.reply() == (s, wire.LOCATION, 0)
    assert srv.server.errors["jt808_bad_checksum"] == 1 and len(ingest.points()) == 1
    c.close()


async def test_wrong_length_is_a_message_error(serve):
    srv = await serve()
    c = await Client.connect(srv.address)
    await c.login()
    c.serial += 1
    raw = struct.pack(">HH", wire.HEARTBEAT, 5) + bytes.fromhex("013800000000") + struct.pack(">H", c.serial) + b"\x01\x02"
    c.writer.write(b"\x7e" + raw + bytes((wire._xor(raw),)) + b"\x7e")
    assert await c.reply() == (c.serial, wire.HEARTBEAT, 2)
    assert srv.server.errors["jt808_bad_length"] == 1
    c.close()


async def test_bad_bcd_time_is_a_message_error_kept_as_a_dead_letter(serve, ingest):
    srv = await serve()
    c = await Client.connect(srv.address)
    await c.login()
    body = bytearray(fix())
    body[23] = 0x13  # month 13
    s = await c.send(wire.LOCATION, bytes(body))
    assert await c.reply() == (s, wire.LOCATION, 2)
    [d] = ingest.dead()
    assert d.reason == "jt808_bad_time" and d.topic == "13800000000"
    assert ingest.points() == []
    c.close()


async def test_duplicates_from_resends_are_acknowledged_and_stored_once(serve, ingest):
    srv = await serve()
    c = await Client.connect(srv.address)
    await c.login()
    body = fix()
    for _ in range(3):  # the acknowledgement was lost twice
        s = await c.send(wire.LOCATION, body)
        assert await c.reply() == (s, wire.LOCATION, 0)
    assert len(ingest.points()) == 1 and srv.server.duplicates == 2
    c.close()


async def test_a_new_connection_of_the_same_terminal_replaces_the_old(serve):
    srv = await serve()
    a = await Client.connect(srv.address)
    code = await a.login()
    b = await Client.connect(srv.address)
    assert await b.authenticate(code) == 0
    assert await a.closed()
    assert srv.server.closed["replaced"] == 1 and srv.server.terminal("13800000000").online
    b.close()


async def test_another_terminals_phone_on_an_authenticated_connection_is_refused(serve):
    srv = await serve()
    c = await Client.connect(srv.address)
    await c.login()
    s = await c.send(wire.LOCATION, fix("13800000001"), phone="13800000001")
    assert await c.reply() == (s, wire.LOCATION, 1)
    assert srv.server.errors["phone_mismatch"] == 1
    c.close()


async def test_edges_sharing_an_auth_secret_accept_each_others_codes(tmp_path, ingest):
    """Behind a load balancer a terminal registers through one edge and comes back through another."""
    from tests.jt808.conftest import start_server
    site = make_site(auth_secret="county-secret")
    a = await start_server(site, ingest, tmp_path / "a.sqlite")
    b = await start_server(site, ingest, tmp_path / "b.sqlite")
    other = await start_server(make_site(auth_secret="another"), ingest, tmp_path / "c.sqlite")
    try:
        c = await Client.connect(a.address)
        code = await c.login()
        c.close()
        c = await Client.connect(b.address)
        assert await c.authenticate(code) == 0  # b never saw this terminal register
        assert b.registry.code_of("13800000000") == code  # and now remembers it
        c.close()
        c = await Client.connect(other.address)
        assert await c.authenticate(code) == 1
        c.close()
    finally:
        for r in (a, b, other):
            await r.stop()
