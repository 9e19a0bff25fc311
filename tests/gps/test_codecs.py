"""Codecs: published test vectors to the right values, and no input crashes them."""

from __future__ import annotations

import struct
from datetime import datetime, timezone

import orjson
import pynmea2
import pytest
from hypothesis import given, strategies as st

from collector.gps.codecs import decoder_for, json as json_codec, jt808, nmea, owntracks
from edge.errors import PayloadError


def ns(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp()) * 1_000_000_000


# --- JT/T 808 ----------------------------------------------------------------------------------
# 2019-header 0x0200 frames published with the xtream-codec JT/T 808 library's debug UI
# (makeclan/xtream-codec, codec-utils.ts): raw values alarm 111, status 22 (0b10110: positioned,
# south), lat 31234567, lon 121987654, altitude 123, speed 66, direction 3,
# time 2025-01-29 22:33:44 (GMT+8), extra 0x01 = 12 (1.2 km), 0x02 = 100 (10.0 L).
XTREAM_0200 = "7e02004026010000000001391234432900000000006f0000001601dc9a0707456246007b004200032501292233440202006401040000000c417e"
XTREAM_0200_2 = ("7e0200407c010000000001391234432900000000007b000000de01d907f2073d336c029a004e000014102119510901040000006f"
                 "020200de0302029a0402014d2504000003093001211206010000000001130700000001000000310137642f000000dedf6f034"
                 "20b0c0d0e0f04d201d907f2073d336c1410211951090001313233343536371410211951090101008e7e")


def test_jt808_2019_vector_xtream():
    [p] = jt808.decode(bytes.fromhex(XTREAM_0200))
    f = p.fields
    assert p.tags["vehicle"] == "13912344329"
    assert f["lat"] == pytest.approx(-31.234567, abs=1e-6)  # status bit 2: south
    assert f["lon"] == pytest.approx(121.987654, abs=1e-6)
    assert f["speed_kmh"] == pytest.approx(6.6)
    assert f["heading_deg"] == 3.0 and f["altitude_m"] == 123.0
    assert f["acc"] is False
    assert f["odometer_km"] == pytest.approx(1.2) and f["fuel_l"] == pytest.approx(10.0)
    assert p.time_ns == ns("2025-01-29T22:33:44+08:00")


def test_jt808_2019_vector_with_many_extra_items():
    [p] = jt808.decode(bytes.fromhex(XTREAM_0200_2))
    f = p.fields
    assert f["lat"] == pytest.approx(-31.000562, abs=1e-6) and f["lon"] == pytest.approx(-121.451372, abs=1e-6)
    assert f["altitude_m"] == 666.0 and f["speed_kmh"] == pytest.approx(7.8) and f["heading_deg"] == 0.0
    assert f["odometer_km"] == pytest.approx(11.1) and f["fuel_l"] == pytest.approx(22.2) and f["satellites"] == 55
    assert p.time_ns == ns("2014-10-21T19:51:09+08:00")


def _frame_2013(body: bytes, phone: str = "013912344323", msg: int = 0x0200, props_extra: int = 0) -> bytes:
    """A 2013 frame built by hand: header (id, properties, BCD phone, serial 0x007e), body, XOR."""
    raw = struct.pack(">HH", msg, len(body) | props_extra) + bytes.fromhex(phone) + b"\x00\x7e" + body
    c = 0
    for b in raw:
        c ^= b
    return b"\x7e" + jt808.escape(raw + bytes([c])) + b"\x7e"


def _body(status: int, lat: int, lon: int, t: str = "241125083000", extras: bytes = b"") -> bytes:
    return struct.pack(">IIIIHHH", 0, status, lat, lon, 12, 425, 270) + bytes.fromhex(t) + extras


def test_jt808_2013_header_escapes_and_status_bits():
    body = _body(0b0011, 30274100, 120155100, extras=bytes([0x01, 4]) + struct.pack(">I", 123456)
                 + bytes([0x30, 1, 0x7e, 0x31, 1, 0x7d]))  # 0x7e and 0x7d in the values: escaped on the wire
    frame = _frame_2013(body)
    assert b"\x7d\x02" in frame and b"\x7d\x01" in frame
    [p] = jt808.decode(frame)
    f = p.fields
    assert p.tags["vehicle"] == "13912344323"
    assert (f["lat"], f["lon"]) == (30.2741, 120.1551)  # raw / 1e6: one correctly rounded division, the literal
    assert f["acc"] is True and f["speed_kmh"] == pytest.approx(42.5) and f["heading_deg"] == 270.0
    assert f["odometer_km"] == pytest.approx(12345.6) and f["satellites"] == 0x7d
    assert p.time_ns == ns("2024-11-25T08:30:00+08:00")
    assert datetime.fromtimestamp(p.time_ns / 1e9, timezone.utc).hour == 0  # GMT+8 -> UTC


def test_jt808_west_and_not_positioned():
    [p] = jt808.decode(_frame_2013(_body(0b1010, 1, 2)))
    assert p.fields["lon"] == pytest.approx(-2e-6)
    with pytest.raises(PayloadError) as e:
        jt808.decode(_frame_2013(_body(0b0001, 30274100, 120155100)))
    assert e.value.reason == "no_fix"


@pytest.mark.parametrize("mutate,reason", [
    (lambda f: f[:-2] + bytes([f[-2] ^ 1]) + f[-1:], "jt808_bad_checksum"),
    (lambda f: f[:5] + b"\x7d\x05" + f[5:], "jt808_bad_escape"),
    (lambda f: f[:-1], "jt808_bad_framing"),
])
def test_jt808_broken_frames(mutate, reason):
    with pytest.raises(PayloadError) as e:
        jt808.decode(mutate(_frame_2013(_body(2, 30274100, 120155100))))
    assert e.value.reason == reason


def test_jt808_other_messages_subpackages_and_batches():
    with pytest.raises(PayloadError, match="jt808_not_location"):
        jt808.decode(_frame_2013(b"\x00\x01", msg=0x0002))
    with pytest.raises(PayloadError, match="jt808_bad_length"):
        jt808.decode(_frame_2013(_body(2, 1, 1), props_extra=1 << 13))  # header grows by 4: lengths disagree
    b1, b2 = _body(2, 30000000, 120000000), _body(2, 30000001, 120000001, t="241125083001")
    batch = struct.pack(">HB", 2, 0) + struct.pack(">H", len(b1)) + b1 + struct.pack(">H", len(b2)) + b2
    pts = jt808.decode(_frame_2013(batch, msg=0x0704))
    assert [p.fields["lat"] for p in pts] == [30.0, 30.000001]  # raw / 1e6, as above
    two = jt808.decode(_frame_2013(b1) + _frame_2013(b2))  # two frames in one payload
    assert len(two) == 2


# --- NMEA 0183 ----------------------------------------------------------------------------------
# The classic examples of the NMEA reference pages (gpsd's "NMEA revealed", Dale DePriest).
RMC = "$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A"
GGA = "$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47"
VTG = "$GPVTG,054.7,T,034.4,M,005.5,N,010.2,K*48"


def test_nmea_rmc_gga_vtg_vectors_merge_into_one_fix():
    [p] = nmea.decode(f"{RMC}\r\n{GGA}\r\n{VTG}\r\n".encode(), vehicle="浙A·12345")
    f = p.fields
    assert p.tags["vehicle"] == "浙A·12345"
    assert f["lat"] == pytest.approx(48 + 7.038 / 60, abs=1e-6)
    assert f["lon"] == pytest.approx(11 + 31.0 / 60, abs=1e-6)
    assert f["speed_kmh"] == pytest.approx(22.4 * 1.852)  # RMC wins over VTG for the same fix
    assert f["heading_deg"] == 84.4 and f["satellites"] == 8 and f["altitude_m"] == 545.4
    assert p.time_ns == ns("1994-03-23T12:35:19+00:00")


@pytest.mark.parametrize("line", [RMC, GGA, "$GNRMC,001031.00,A,3016.44600,N,12009.30600,E,0.004,77.52,091202,,,A*45"])
def test_nmea_agrees_with_pynmea2(line):
    ref = pynmea2.parse(line)
    [p] = nmea.decode(line.encode(), vehicle="v1", now_ns=ns("1994-03-23T13:00:00+00:00"))
    assert p.fields["lat"] == pytest.approx(ref.latitude, abs=1e-6)
    assert p.fields["lon"] == pytest.approx(ref.longitude, abs=1e-6)
    if ref.sentence_type == "RMC":
        assert p.fields["speed_kmh"] == pytest.approx(float(ref.spd_over_grnd) * 1.852)
        assert p.time_ns == int(ref.datetime.replace(tzinfo=timezone.utc).timestamp() * 1e9)
    else:
        assert p.fields["satellites"] == int(ref.num_sats)
        assert p.fields["altitude_m"] == pytest.approx(ref.altitude)


def test_nmea_gga_only_takes_date_from_now():
    [p] = nmea.decode(GGA.encode(), vehicle="v1", now_ns=ns("2026-11-25T00:10:00+00:00"))
    assert p.time_ns == ns("2026-11-24T12:35:19+00:00")


@pytest.mark.parametrize("payload,reason", [
    (RMC[:-2] + "00", "nmea_bad_checksum"),
    (RMC.split("*")[0], "nmea_checksum_missing"),
    ("$GPRMC,123519,V,,,,,,,230394,,*" + f"{nmea.checksum('GPRMC,123519,V,,,,,,,230394,,'):02X}", "no_fix"),
    ("$GPGGA,123519,4807.038,N,01131.000,E,0,00,,,M,,M,,*" + f"{nmea.checksum('GPGGA,123519,4807.038,N,01131.000,E,0,00,,,M,,M,,'):02X}", "no_fix"),
    (nmea.sentence("GPGSV,1,1,00"), "nmea_no_position"),
    ("", "nmea_empty"),
])
def test_nmea_rejects(payload, reason):
    with pytest.raises(PayloadError) as e:
        nmea.decode(payload.encode(), vehicle="v1", now_ns=0)
    assert e.value.reason == reason


# --- OwnTracks and our JSON ---------------------------------------------------------------------

def test_owntracks_location_vector():
    # the example location message of the OwnTracks JSON documentation (booklet)
    doc = b'{"_type":"location","acc":12,"alt":39,"batt":94,"conn":"w","lat":52.3702,"lon":4.8952,"tid":"ab","tst":1700000000,"vel":27,"cog":270}'
    [p] = owntracks.decode(doc, vehicle="car7")
    assert p.tags["vehicle"] == "car7"
    assert p.fields == {"lat": 52.3702, "lon": 4.8952, "speed_kmh": 27.0, "heading_deg": 270.0, "altitude_m": 39.0}
    assert p.time_ns == 1_700_000_000 * 10**9
    assert owntracks.decode(doc)[0].tags["vehicle"] == "ab"  # no topic id: the tracker id
    with pytest.raises(PayloadError, match="owntracks_not_location"):
        owntracks.decode(b'{"_type":"transition","tst":1}')


def test_our_json_schema_all_fields_and_time_zones():
    doc = {"vehicle": "浙A·12345", "time": "2026-11-25T08:30:00.250+08:00", "lat": 30.274100, "lon": 120.155100,
           "speed_kmh": 42.5, "heading_deg": 90, "acc": True, "odometer_km": 12345.6, "fuel_l": 31.2,
           "altitude_m": 12.0, "satellites": 11}
    [p] = json_codec.decode(orjson.dumps(doc))
    assert p.tags == {"vehicle": "浙A·12345"}
    assert p.time_ns == ns("2026-11-25T00:30:00+00:00") + 250_000_000
    assert p.fields["acc"] is True and p.fields["satellites"] == 11 and p.fields["heading_deg"] == 90.0
    epoch = json_codec.decode(b'{"time": 1764030600.5, "lat": 30.1, "lon": 120.1}', vehicle="v9")
    assert epoch[0].time_ns == 1764030600_500_000_000 and epoch[0].tags["vehicle"] == "v9"
    batch = json_codec.decode(b'[{"vehicle":"a","time":1,"lat":1,"lon":2},{"vehicle":"b","time":2,"lat":3,"lon":4}]')
    assert [p.tags["vehicle"] for p in batch] == ["a", "b"]


@pytest.mark.parametrize("doc,reason", [
    (b'{"vehicle":"v","time":"2026-11-25T08:30:00","lat":1,"lon":2}', "time_without_tz"),
    (b'{"vehicle":"v","time":1,"lat":"1","lon":2}', "bad_number"),
    (b'{"vehicle":"v","time":1,"lat":91,"lon":2}', "coordinates_out_of_range"),
    (b'{"time":1,"lat":1,"lon":2}', "no_vehicle_id"),
    (b'{"vehicle":"a b","time":1,"lat":1,"lon":2}', "bad_vehicle_id"),
    (b'{"vehicle":"v","time":1,"lat":1,"lon":2,"fix":false}', "no_fix"),
    (b'{"vehicle":"v","time":1,"lat":1,"lon":2,"acc":1}', "bad_field"),
    (b'{"vehicle":"v","lat":1', "bad_json"),
])
def test_our_json_rejects(doc, reason):
    with pytest.raises(PayloadError) as e:
        json_codec.decode(doc)
    assert e.value.reason == reason


# --- properties: any bytes in, points or PayloadError out ---------------------------------------

def _total(fmt: str, data: bytes) -> None:
    try:
        pts = decoder_for(fmt)(data, vehicle="v1", now_ns=1_764_000_000 * 10**9)
    except PayloadError as e:
        assert e.reason
        return
    assert pts and all(-90 <= p.fields["lat"] <= 90 and -180 <= p.fields["lon"] <= 180 for p in pts)
    for p in pts:
        p.to_line()  # every point is storable


@pytest.mark.parametrize("fmt", ["json", "owntracks", "nmea", "jt808"])
@given(data=st.binary(max_size=300))
def test_any_bytes_never_crash(fmt, data):
    _total(fmt, data)


@given(data=st.data())
def test_mutated_jt808_frames_never_crash(data):
    frame = bytearray(bytes.fromhex(XTREAM_0200_2 if data.draw(st.booleans()) else XTREAM_0200))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(frame) - 1))
        frame[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(frame)))
    _total("jt808", bytes(frame[:cut] if data.draw(st.booleans()) else frame))


@given(text=st.text(alphabet="$GPRMCGAVT,*0123456789.ANSEWK\r\n", max_size=200))
def test_nmea_like_text_never_crashes(text):
    _total("nmea", text.encode())
    body = text.replace("*", "").replace("$", "").replace("\r", "").replace("\n", "")
    _total("nmea", nmea.sentence(body).encode())


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
                           lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=5),
                           max_leaves=20)
keys = st.sampled_from(["vehicle", "time", "lat", "lon", "speed_kmh", "acc", "satellites", "fix", "_type", "tst", "tid", "vel", "cog", "alt"])


@pytest.mark.parametrize("fmt", ["json", "owntracks"])
@given(doc=st.dictionaries(keys, json_values, max_size=8))
def test_json_shaped_input_never_crashes(fmt, doc):
    try:
        raw = orjson.dumps(doc)
    except (TypeError, orjson.JSONEncodeError):
        return
    _total(fmt, raw)
