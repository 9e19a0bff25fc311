"""The pure protocol layer against frames other implementations published (tests/jt808/vectors)."""

from __future__ import annotations

import json
import struct
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from collector.jt808 import protocol as P
from edge.errors import PayloadError

VECTORS = Path(__file__).parent / "vectors"
SMALLCHI = json.loads((VECTORS / "smallchi_jt808.json").read_text())
TRACCAR = json.loads((VECTORS / "traccar_jt808.json").read_text())
GMT8 = timezone(timedelta(hours=8))


def one_frame(hex_: str) -> P.Frame:
    [seg] = P.FrameSplitter(8192).feed(bytes.fromhex(hex_))
    return P.parse_frame(P.unescape(seg))


def smallchi(name: str) -> dict:
    return next(v for v in SMALLCHI["frames"] if v["name"] == name)


@pytest.mark.parametrize("name", ["register_2013", "register_2019", "register_2019_left_padded"])
def test_smallchi_registrations(name):
    v = smallchi(name)
    f = one_frame(v["hex"])
    assert f.header.msg_id == P.REGISTER and f.header.phone == v["phone"]
    assert f.header.version == v.get("protocol_version")
    r = P.parse_registration(f.body, f.header.version)
    assert (r.plate_color, r.plate) == (v["plate_color"], v["plate"])
    for k in ("province", "city", "manufacturer", "model", "terminal_id"):
        if k in v:
            assert getattr(r, k) == v[k]


def test_smallchi_authentication_2013_and_2019():
    v = smallchi("authenticate_2013")
    f = one_frame(v["hex"])
    assert (f.header.phone, f.header.serial) == (v["phone"], v["serial"])
    assert P.parse_authentication(f.body, None).code == v["code"]
    b = SMALLCHI["bodies"][0]
    a = P.parse_authentication(bytes.fromhex(b["hex"]), 1)
    assert (a.code, a.imei, a.software_version) == (b["code"], b["imei"], b["software_version"])


@pytest.mark.parametrize("name", ["heartbeat", "heartbeat_escaped_check_code", "logout"])
def test_smallchi_heartbeat_and_logout(name):
    v = smallchi(name)
    f = one_frame(v["hex"])
    assert (f.header.phone, f.header.serial, f.body) == (v["phone"], v["serial"], b"")


def test_smallchi_location_raw_values():
    v = smallchi("location_2013")
    f = one_frame(v["hex"])
    loc = P.parse_location(f.body)
    assert (loc.alarm, loc.status, loc.altitude_m) == (v["alarm"], v["status"], v["altitude_m"])
    assert loc.lat == pytest.approx(v["lat_raw"] / 1e6, abs=1e-9) and loc.lon == pytest.approx(v["lon_raw"] / 1e6, abs=1e-9)
    assert loc.speed_kmh == pytest.approx(v["speed_raw"] / 10, abs=1e-9)
    assert loc.time_ns == int(datetime.fromisoformat(v["time_gmt8"]).replace(tzinfo=GMT8).timestamp()) * 10**9
    fields = P.location_fields(loc)
    assert fields["odometer_km"] == pytest.approx(v["odometer_raw"] / 10) and fields["fuel_l"] == pytest.approx(v["fuel_raw"] / 10)


def test_smallchi_batch():
    v = smallchi("batch_2013")
    kind, items = P.parse_batch(one_frame(v["hex"]).body)
    assert (kind, len(items)) == (v["type"], v["count"])
    assert [P.parse_location(i).status for i in items] == [2, 1]  # the second: ACC on, no fix


def test_version_flag_on_a_2013_header_is_read_as_2013():
    """A real terminal (SmallChi's JTT2013Force case) sets bit 14 with a 6-byte phone."""
    a = one_frame(smallchi("authenticate_version_flag_on_2013_header")["hex"])
    loc = one_frame(smallchi("location_version_flag_on_2013_header")["hex"])
    for f in (a, loc):
        assert f.header.version is None and f.header.version_flag_only and f.header.phone == "10030000681"
    assert P.parse_location(loc.body).positioned


@pytest.mark.parametrize("v", SMALLCHI["replies"], ids=lambda v: v["name"])
def test_our_answers_are_byte_for_byte_smallchis(v):
    if v["name"] == "platform_reply":
        body = P.general_reply(v["reply_serial"], v["reply_id"], v["result"])
        msg = P.PLATFORM_REPLY
    else:
        body = P.register_reply(v["reply_serial"], v["result"], v.get("code", ""))
        msg = P.REGISTER_REPLY
    assert P.encode_frame(msg, v["phone"], v["serial"], body).hex() == v["hex"]


def test_real_two_package_message_reassembles_in_any_order():
    p1, p2 = (one_frame(smallchi(n)["hex"]) for n in ("subpackage_1_of_2", "subpackage_2_of_2"))
    assert (p1.header.packages, p1.header.index, p2.header.index) == (2, 1, 2)
    for order in ((p1, p2), (p2, p1)):
        r = P.Reassembler()
        assert r.add(order[0].header, order[0].body, 0.0) is None
        body, serials = r.add(order[1].header, order[1].body, 1.0)
        assert body == p1.body + p2.body and serials == [p1.header.serial, p2.header.serial]
        assert len(r) == 0 and r.size == 0


def test_reassembly_is_bounded_in_time_and_memory():
    h = P.parse_header(struct.pack(">HHBBBBBBHHH", 0x0704, 0x2000 | 10, 1, 0x23, 0x45, 0x67, 0x89, 0, 7, 3, 1))
    r = P.Reassembler(max_messages=2, max_bytes=25, timeout_s=60)
    assert r.add(h, b"x" * 10, 0.0) is None
    with pytest.raises(PayloadError, match="too_large"):
        r.add(P.Header(0x0704, 10, 0, True, None, "012345678900", 8, 16, 3, 2), b"y" * 20, 1.0)
    assert r.add(P.Header(0x0704, 10, 0, True, None, "012345678900", 20, 16, 2, 1), b"z", 1.0) is None
    with pytest.raises(PayloadError, match="too_many"):
        r.add(P.Header(0x0704, 10, 0, True, None, "012345678900", 30, 16, 2, 1), b"w", 1.0)
    assert r.expire(61.0) == 1 and len(r) == 1 and r.size == 1
    assert r.expire(62.0) == 1 and r.size == 0


# --- Traccar's frames of real devices --------------------------------------------------------------


def _traccar_frames():
    for v in TRACCAR["frames"]:
        raw = bytes.fromhex(v["hex"])
        if raw[:1] == b"\x7e":
            yield v


def test_traccar_standard_frames_parse_and_the_rest_fail_with_a_reason():
    served = {P.REGISTER: 0, P.AUTHENTICATE: 0, P.HEARTBEAT: 0, P.LOCATION: 0, P.LOCATION_BATCH: 0}
    reasons: dict[str, int] = {}
    for v in _traccar_frames():
        for seg in P.FrameSplitter(8192).feed(bytes.fromhex(v["hex"])):
            try:
                f = P.parse_frame(P.unescape(seg))
            except PayloadError as e:
                reasons[e.reason] = reasons.get(e.reason, 0) + 1
                continue
            m = f.header.msg_id
            if m == P.LOCATION:
                P.parse_location(f.body)
            elif m == P.LOCATION_BATCH:
                _, items = P.parse_batch(f.body)
                for item in items:
                    P.parse_location(item)
            elif m == P.REGISTER:
                P.parse_registration(f.body, f.header.version)
            elif m == P.AUTHENTICATE:
                P.parse_authentication(f.body, f.header.version)
            if m in served:
                served[m] += 1
    # the counts of the standard messages among Traccar's 112 frames that conform (check code,
    # length, escapes, BCD phone); the others are vendor frames that do not (see SOURCES.md)
    assert served == {P.REGISTER: 6, P.AUTHENTICATE: 2, P.HEARTBEAT: 1, P.LOCATION: 59, P.LOCATION_BATCH: 7}
    assert set(reasons) <= {"jt808_bad_checksum", "jt808_bad_length", "jt808_bad_escape", "jt808_short_frame", "jt808_bad_bcd"}


def test_traccar_satellites_where_traccar_checks_them():
    checked = 0
    for v in _traccar_frames():
        exp = v.get("traccar_expects", "")
        if not exp.startswith("Position.KEY_SATELLITES"):
            continue
        f = one_frame(v["hex"])
        body = f.body if f.header.msg_id == P.LOCATION else P.parse_batch(f.body)[1][0]
        assert P.location_fields(P.parse_location(body))["satellites"] == int(exp.split(",")[1])
        checked += 1
    assert checked == 2


# --- any input -------------------------------------------------------------------------------------


@given(st.binary(max_size=600))
def test_escape_round_trip(data):
    e = P.escape(data)
    assert b"\x7e" not in e and P.unescape(e) == data


@given(st.binary(max_size=400))
def test_any_bytes_are_a_frame_or_a_payload_error(data):
    try:
        f = P.parse_frame(data)
    except PayloadError as e:
        assert e.reason.startswith("jt808_")
    else:
        assert len(f.body) == f.header.body_len


@given(st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=8), st.data())
def test_splitter_finds_the_same_frames_however_the_stream_is_cut(bodies, data):
    frames = [P.encode_frame(P.LOCATION, "13800000001", i, b) for i, b in enumerate(bodies)]
    stream = b"".join(frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    sp = P.FrameSplitter(4096)
    segs = []
    for a, b in zip([0, *cuts], [*cuts, len(stream)]):
        segs += sp.feed(stream[a:b])
    assert [P.parse_frame(P.unescape(s)).body for s in segs] == bodies
    assert not sp.partial


def test_splitter_refuses_an_endless_frame():
    sp = P.FrameSplitter(100)
    assert sp.feed(b"\x7e" + b"a" * 99) == [] and sp.partial
    with pytest.raises(PayloadError, match="frame_too_large"):
        sp.feed(b"b" * 2)
    with pytest.raises(PayloadError, match="frame_too_large"):
        P.FrameSplitter(100).feed(b"\x7e" + b"c" * 101 + b"\x7e")


def test_bad_bcd_time_and_malformed_extras():
    body = struct.pack(">IIIIHHH", 0, 2, 30_000_000, 120_000_000, 5, 100, 90)
    with pytest.raises(PayloadError, match="jt808_bad_time"):
        P.parse_location(body + bytes.fromhex("2513450000a0"))  # month 13 is not a time
    with pytest.raises(PayloadError, match="jt808_bad_time"):
        P.parse_location(body + bytes.fromhex("25010100005a"))  # 0x5a is not BCD
    loc = P.parse_location(body + bytes.fromhex("250101000000") + bytes.fromhex("310109" "0104000000"))
    assert loc.extras == {0x31: b"\x09"} and "past the end" in loc.bad_extras  # the position stands


# --- the session state machine on any input ----------------------------------------------------------


def _session(tmp_path_factory):
    from collector.jt808.registry import Registry
    from collector.jt808.session import Fleet, Policy, Session
    from edge.config import AuthCodes, Registration
    reg = Registry(tmp_path_factory.mktemp("reg") / "r.sqlite")
    return Session(Fleet((), Registration.open), reg, Policy(Registration.open, AuthCodes.adopt)), reg


_MSGS = st.sampled_from([P.REGISTER, P.AUTHENTICATE, P.HEARTBEAT, P.LOGOUT, P.LOCATION, P.LOCATION_BATCH, 0x0900, 0x0001])


@given(frames=st.lists(st.tuples(_MSGS, st.binary(max_size=80), st.booleans(), st.integers(0, 255)), max_size=12),
       junk=st.lists(st.binary(max_size=40), max_size=4))
def test_any_conversation_is_answered_or_counted_never_a_crash(tmp_path_factory, frames, junk):
    from collector.jt808.session import Outcome
    s, reg = _session(tmp_path_factory)
    try:
        out = Outcome()
        now = 1_764_000_000 * 10**9
        for k, (msg, body, v2019, flip) in enumerate(frames):
            raw = P.encode_frame(msg, "13800000001", k, body, version=1 if v2019 else None)
            seg = raw[1:-1]
            if flip:  # a damaged byte somewhere
                i = flip % len(seg)
                seg = seg[:i] + bytes([seg[i] ^ 0x41]) + seg[i + 1:]
            s.handle(seg.replace(b"\x7e", b""), now, out)
        for j in junk:
            s.handle(j.replace(b"\x7e", b"") or b"\x00", now, out)
        assert out.frames == len(frames) + len(junk)
        for a in out.replies + out.acks:  # every answer is a sound frame
            f = P.parse_frame(P.unescape(a[1:-1]))
            assert f.header.msg_id in (P.PLATFORM_REPLY, P.REGISTER_REPLY)
    finally:
        reg.close()
