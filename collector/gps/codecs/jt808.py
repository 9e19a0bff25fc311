"""JT/T 808 location reports (0x0200, and 0x0704 batches of them), as gateways forward them.

Frame: ``0x7e | header | body | checksum | 0x7e``, with ``0x7e`` sent as ``0x7d 0x02`` and ``0x7d``
as ``0x7d 0x01`` inside. The checksum is the XOR of header and body. One payload may hold
several frames back to back; a payload without the ``0x7e`` flags is taken as one unframed
(already unescaped) frame.

Header, 2013 (JT/T 808-2013): message id (2), properties (2: bits 0-9 body length, 10-12
encryption, 13 subpackage, 14 version flag = 0), terminal phone (6, BCD), serial (2), then
package total (2) and index (2) when the subpackage bit is set.
Header, 2019 (JT/T 808-2019): version flag (bit 14) set, protocol version (1), phone (10, BCD).

0x0200 body: alarm (4), status (4: bit0 ACC, bit1 positioned, bit2 south, bit3 west),
latitude and longitude (4 each, 1e-6 degree), altitude (2, m), speed (2, 0.1 km/h), direction
(2, degrees), time (6, BCD ``YYMMDDhhmmss``, GMT+8), then extra items ``id (1), length (1),
value``: 0x01 mileage (4, 0.1 km), 0x02 fuel (2, 0.1 L), 0x30 signal strength (1),
0x31 satellites (1); others are skipped.

The vehicle id is the terminal phone with leading zeros removed (``013912344323`` ->
``13912344323``); the subscriber maps it to a configured vehicle. Encrypted and subpackaged
location reports are refused (``jt808_encrypted``, ``jt808_subpackage``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from collector.gps.codecs.positions import position
from edge.errors import PayloadError
from edge.point import Point

FLAG = 0x7E
ESC = 0x7D
LOCATION_REPORT = 0x0200
LOCATION_BATCH = 0x0704
GMT8 = timezone(timedelta(hours=8))
MAX_FRAMES = 64


@dataclass(frozen=True, slots=True)
class Header:
    msg_id: int
    body_len: int
    encryption: int
    subpackage: bool
    version: int | None  # None for 2013, else the 2019 protocol version byte
    phone: str
    serial: int
    size: int  # header length in bytes


@dataclass(frozen=True, slots=True)
class Location:
    alarm: int
    status: int
    lat: float
    lon: float
    altitude_m: int
    speed_kmh: float
    heading_deg: int
    time_ns: int
    extras: dict[int, bytes]

    @property
    def acc(self) -> bool:
        return bool(self.status & 1)

    @property
    def positioned(self) -> bool:
        return bool(self.status & 2)


def unescape(data: bytes) -> bytes:
    if ESC not in data:
        return data
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        b = data[i]
        if b == ESC:
            if i + 1 >= n or data[i + 1] not in (1, 2):
                raise PayloadError("jt808_bad_escape", f"at byte {i}")
            out.append(ESC if data[i + 1] == 1 else FLAG)
            i += 2
        else:
            out.append(b)
            i += 1
    return bytes(out)


def escape(data: bytes) -> bytes:
    return data.replace(b"\x7d", b"\x7d\x01").replace(b"\x7e", b"\x7d\x02")


def xor(data: bytes) -> int:
    c = 0
    for b in data:
        c ^= b
    return c


def bcd(data: bytes) -> str:
    digits = []
    for b in data:
        hi, lo = b >> 4, b & 0xF
        if hi > 9 or lo > 9:
            raise PayloadError("jt808_bad_bcd", data.hex())
        digits.append(chr(48 + hi))
        digits.append(chr(48 + lo))
    return "".join(digits)


def split_frames(payload: bytes) -> list[bytes]:
    """Unescaped frames (header + body + checksum) of a payload."""
    if not payload:
        raise PayloadError("jt808_empty")
    if payload[0] != FLAG:
        if FLAG in payload:
            raise PayloadError("jt808_bad_framing", "0x7e inside an unframed payload")
        return [unescape(payload)]
    if payload[-1] != FLAG or len(payload) < 2:
        raise PayloadError("jt808_bad_framing", "no closing 0x7e")
    parts = [p for p in payload[1:-1].split(bytes([FLAG])) if p]
    if not parts:
        raise PayloadError("jt808_empty")
    if len(parts) > MAX_FRAMES:
        raise PayloadError("jt808_too_many_frames", str(len(parts)))
    return [unescape(p) for p in parts]


def parse_header(frame: bytes) -> Header:
    if len(frame) < 12:
        raise PayloadError("jt808_short_frame", f"{len(frame)} bytes")
    msg_id, props = struct.unpack_from(">HH", frame, 0)
    body_len = props & 0x3FF
    encryption = (props >> 10) & 0x7
    sub = bool(props & (1 << 13))
    if props & (1 << 14):
        if len(frame) < 17:
            raise PayloadError("jt808_short_frame", f"{len(frame)} bytes for a 2019 header")
        version: int | None = frame[4]
        phone_raw = frame[5:15]
        serial = struct.unpack_from(">H", frame, 15)[0]
        size = 17
    else:
        version = None
        phone_raw = frame[4:10]
        serial = struct.unpack_from(">H", frame, 10)[0]
        size = 12
    if sub:
        size += 4
    phone = bcd(phone_raw).lstrip("0") or "0"
    return Header(msg_id, body_len, encryption, sub, version, phone, serial, size)


def parse_location(body: bytes) -> Location:
    if len(body) < 28:
        raise PayloadError("jt808_short_body", f"{len(body)} bytes < 28")
    alarm, status, lat_u, lon_u, alt, speed, heading = struct.unpack_from(">IIIIHHH", body, 0)
    ts = bcd(body[22:28])
    try:
        local = datetime(2000 + int(ts[0:2]), int(ts[2:4]), int(ts[4:6]),
                         int(ts[6:8]), int(ts[8:10]), int(ts[10:12]), tzinfo=GMT8)
    except ValueError:
        raise PayloadError("jt808_bad_time", ts) from None
    extras: dict[int, bytes] = {}
    i, n = 28, len(body)
    while i < n:
        if i + 2 > n:
            raise PayloadError("jt808_bad_extra", f"truncated item header at {i}")
        item, ln = body[i], body[i + 1]
        if i + 2 + ln > n:
            raise PayloadError("jt808_bad_extra", f"item 0x{item:02x} length {ln} past the end")
        extras[item] = body[i + 2:i + 2 + ln]
        i += 2 + ln
    lat = lat_u / 1e6 * (-1 if status & 4 else 1)
    lon = lon_u / 1e6 * (-1 if status & 8 else 1)
    return Location(alarm, status, lat, lon, alt, speed / 10.0, heading,
                    int(local.timestamp()) * 1_000_000_000, extras)


def _location_point(vid: str, loc: Location) -> Point:
    if not loc.positioned:
        raise PayloadError("no_fix", f"terminal {vid}: status bit 1 (positioned) clear")
    if loc.heading_deg > 360:
        raise PayloadError("jt808_bad_direction", str(loc.heading_deg))
    fields: dict[str, object] = {
        "speed_kmh": loc.speed_kmh, "heading_deg": float(loc.heading_deg), "acc": loc.acc,
        "altitude_m": float(loc.altitude_m),
    }
    ex = loc.extras
    if len(ex.get(0x01, b"")) == 4:
        fields["odometer_km"] = struct.unpack(">I", ex[0x01])[0] / 10.0
    if len(ex.get(0x02, b"")) == 2:
        fields["fuel_l"] = struct.unpack(">H", ex[0x02])[0] / 10.0
    if len(ex.get(0x31, b"")) == 1:
        fields["satellites"] = ex[0x31][0]
    return position(vid, loc.time_ns, loc.lat, loc.lon, **fields)


def decode_frame(frame: bytes) -> list[Point]:
    if len(frame) < 13:
        raise PayloadError("jt808_short_frame", f"{len(frame)} bytes")
    if xor(frame[:-1]) != frame[-1]:
        raise PayloadError("jt808_bad_checksum", f"computed 0x{xor(frame[:-1]):02x}, frame says 0x{frame[-1]:02x}")
    h = parse_header(frame[:-1])
    body = frame[h.size:-1]
    if len(body) != h.body_len:
        raise PayloadError("jt808_bad_length", f"header says {h.body_len}, body has {len(body)}")
    if h.msg_id not in (LOCATION_REPORT, LOCATION_BATCH):
        raise PayloadError("jt808_not_location", f"message 0x{h.msg_id:04x}")
    if h.encryption:
        raise PayloadError("jt808_encrypted", f"encryption bits {h.encryption}")
    if h.subpackage:
        raise PayloadError("jt808_subpackage", "subpackaged location reports are not reassembled")
    if h.msg_id == LOCATION_REPORT:
        return [_location_point(h.phone, parse_location(body))]
    # 0x0704: count (2), type (1), then count x (length (2), 0x0200 body)
    if len(body) < 3:
        raise PayloadError("jt808_short_body", "0x0704")
    count = struct.unpack_from(">H", body, 0)[0]
    i, out = 3, []
    for _ in range(count):
        if i + 2 > len(body):
            raise PayloadError("jt808_bad_batch", "truncated item length")
        ln = struct.unpack_from(">H", body, i)[0]
        if i + 2 + ln > len(body):
            raise PayloadError("jt808_bad_batch", "item past the end")
        out.append(_location_point(h.phone, parse_location(body[i + 2:i + 2 + ln])))
        i += 2 + ln
    if not out:
        raise PayloadError("jt808_empty")
    return out


def decode(payload: bytes, *, vehicle: str | None = None, now_ns: int | None = None) -> list[Point]:
    out: list[Point] = []
    for frame in split_frames(payload):
        out.extend(decode_frame(frame))
    return out
