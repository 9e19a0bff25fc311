"""Frames other implementations published (real devices' frames in Traccar's tests, SmallChi/JT808's
vectors), sent one by one through the real TCP server into the real outbox."""

from __future__ import annotations

import asyncio
import json
import struct
from collections import Counter
from pathlib import Path

import pytest

from collector.jt808 import protocol as P
from edge.errors import PayloadError
from simulators import jt808_terminals as wire
from tests.jt808.conftest import Client, make_site

VECTORS = Path(__file__).parent / "vectors"
TRACCAR = json.loads((VECTORS / "traccar_jt808.json").read_text())["frames"]
SMALLCHI = json.loads((VECTORS / "smallchi_jt808.json").read_text())["frames"]
FOREVER = {"registration": "open", "auth_codes": "adopt", "max_age_report_days": 10_000, "max_age_batch_days": 10_000}


def _header(raw: bytes) -> P.Header | None:
    segs = P.FrameSplitter(8192).feed(raw)
    try:
        return P.parse_frame(P.unescape(segs[0])).header
    except PayloadError:
        return None


def _length_error(raw: bytes) -> P.Header | None:
    """The header of a segment whose check code is right but whose length is not (answered 2)."""
    for seg in P.FrameSplitter(8192).feed(raw):
        try:
            P.parse_frame(P.unescape(seg))
        except P.FrameError as e:
            return e.header
        except PayloadError:
            pass
    return None


async def _send_alone(srv, raw: bytes, h: P.Header | None) -> tuple[int, int, int] | str | None:
    """Send one published frame on its own connection (authenticated first with an adopted code
    when it is not a registration or authentication): the answer, or None when none comes."""
    c = await Client.connect(srv.address, phone=h.phone if h else "0")
    if h is not None and h.msg_id not in (P.REGISTER, P.AUTHENTICATE):
        code = srv.registry.code_of(h.phone) or "PUBLISHED"
        c.writer.write(wire.frame(P.AUTHENTICATE, h.phone_digits, 1, wire.authentication_body(h.version, code, "861234567890123"),
                                  h.version))
        msg, _, body = await c.answer()
        assert struct.unpack_from(">B", body, 4)[0] == 0, "authentication with the adopted code"
    c.writer.write(raw)
    try:
        a = await c.answer(timeout_s=0.25)
    except TimeoutError:
        a = None
    c.close()
    if a is None:
        return None
    msg, _, body = a
    if msg == P.REGISTER_REPLY:
        return "registered" if body[2] == 0 else f"register_refused_{body[2]}"
    return struct.unpack_from(">HHB", body)


async def test_traccar_real_device_frames_through_the_server(serve, ingest):
    srv = await serve(make_site(n_vehicles=0, **FOREVER))
    outcome: Counter[str] = Counter()
    expected: set[tuple[str, int]] = set()
    # authentications first: their codes are adopted; a registration afterwards answers the same code
    frames = sorted((bytes.fromhex(v["hex"]) for v in TRACCAR if v["hex"].startswith("7e")),
                    key=lambda raw: 0 if (_header(raw) or P.Header(0, 0, 0, False, None, "", 0, 0)).msg_id == P.AUTHENTICATE else 1)
    for raw in frames:
        h = _header(raw)
        answer = await _send_alone(srv, raw, h)
        if h is None:
            bad = _length_error(raw)
            if bad is not None:  # the check code is right, the length is not: "message error"
                assert answer == (bad.serial, bad.msg_id, P.MESSAGE_ERROR)
                outcome["message_error"] += 1
            else:  # a check code, escape or BCD phone that is wrong: no answer, the terminal resends
                assert answer is None
                outcome["refused_unanswered"] += 1
            continue
        if h.msg_id == P.REGISTER:
            assert answer == "registered"
            outcome["registered"] += 1
            continue
        assert answer is not None and answer[:2] == (h.serial, h.msg_id), (hex(h.msg_id), answer)
        result = answer[2]
        if h.msg_id in (P.AUTHENTICATE, P.HEARTBEAT):
            assert result == P.OK
        elif h.msg_id in (P.LOCATION, P.LOCATION_BATCH):
            assert result == P.OK
            body = P.parse_frame(P.unescape(P.FrameSplitter(8192).feed(raw)[0])).body
            items = [body] if h.msg_id == P.LOCATION else P.parse_batch(body)[1]
            for i in items:
                loc = P.parse_location(i)
                if loc.positioned and (loc.lat, loc.lon) != (0, 0):
                    expected.add((h.phone, loc.time_ns))
        else:
            assert result in (P.UNSUPPORTED, P.MESSAGE_ERROR), hex(h.msg_id)
        outcome[f"{h.msg_id:#06x}:{result}"] += 1
    assert outcome["registered"] == 6
    assert outcome[f"{P.AUTHENTICATE:#06x}:0"] == 2 and outcome[f"{P.HEARTBEAT:#06x}:0"] == 1
    assert outcome[f"{P.LOCATION:#06x}:0"] == 59 and outcome[f"{P.LOCATION_BATCH:#06x}:0"] == 7
    stored = ingest.points()
    got = {(p.tags["vehicle"], p.time_ns) for p in stored}
    assert len(got) == len(stored)  # the repeated frames of Traccar's tests were stored once
    assert got == expected and len(got) > 50
    srv_stats = srv.server.stats()
    assert srv_stats["errors"].get("jt808_bad_checksum", 0) >= 10  # vendor frames Traccar accepts unchecked
    by_vehicle = {p.tags["vehicle"]: p for p in stored}
    # Traccar's own assertion on the first frame (a 0x0704 of terminal 014450376202): 14 satellites
    assert by_vehicle["14450376202"].fields["satellites"] == 14


async def test_smallchi_frames_through_the_server(serve, ingest):
    srv = await serve(make_site(n_vehicles=0, **FOREVER))
    by_name = {v["name"]: bytes.fromhex(v["hex"]) for v in SMALLCHI}
    for name in ("authenticate_2013", "heartbeat", "heartbeat_escaped_check_code", "location_2013", "batch_2013",
                 "authenticate_version_flag_on_2013_header", "location_version_flag_on_2013_header"):
        raw = by_name[name]
        h = _header(raw)
        answer = await _send_alone(srv, raw, h)
        assert answer == (h.serial, h.msg_id, 0), name
    for name in ("register_2013", "register_2019", "register_2019_left_padded"):
        assert await _send_alone(srv, by_name[name], _header(by_name[name])) == "registered"
    # the real device's two-package message (a JT/T 1078 resource list) is put together, then
    # answered "unsupported", once per package
    p1, p2 = by_name["subpackage_1_of_2"], by_name["subpackage_2_of_2"]
    h1, h2 = _header(p1), _header(p2)
    c = await Client.connect(srv.address)
    c.writer.write(wire.frame(P.AUTHENTICATE, h1.phone_digits, 1, (srv.registry.code_of(h1.phone) or "PUBLISHED").encode()))
    await c.answer()
    c.writer.write(p1 + p2)
    got = {(await c.reply())[:3] for _ in range(2)}
    assert got == {(h1.serial, 0x1205, 3), (h2.serial, 0x1205, 3)}
    c.close()
    pts = {p.tags["vehicle"]: p for p in ingest.points()}
    loc = pts["112233445566"]
    assert (loc.fields["lat"], loc.fields["lon"]) == (pytest.approx(12.222222), pytest.approx(132.444444))
    assert loc.fields["odometer_km"] == pytest.approx(10.0) and loc.fields["fuel_l"] == pytest.approx(5.5)
    assert pts["10030000681"].fields["satellites"] == 18


async def test_published_frames_split_anywhere_in_one_stream(serve, ingest):
    """A terminal's whole conversation in one TCP stream cut at awkward places."""
    srv = await serve(make_site(n_vehicles=0, **FOREVER))
    by_name = {v["name"]: bytes.fromhex(v["hex"]) for v in SMALLCHI}
    stream = by_name["authenticate_2013"] + by_name["heartbeat"] + by_name["heartbeat"]
    c = await Client.connect(srv.address)
    for i in range(0, len(stream), 7):
        c.writer.write(stream[i:i + 7])
        await c.writer.drain()
        await asyncio.sleep(0.001)
    results = [(await c.reply())[2] for _ in range(3)]
    assert results == [0, 0, 0]
    c.close()
