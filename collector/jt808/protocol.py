"""JT/T 808 on the wire, pure: framing, escapes, check code, headers, the bodies we serve.

JT/T 808-2011/2013 and JT/T 808-2019, 道路运输车辆卫星定位系统 终端通讯协议及数据格式.

Frame: ``0x7e | header | body | check code | 0x7e``. Inside, ``0x7e`` is sent as ``0x7d 0x02``
and ``0x7d`` as ``0x7d 0x01``. The check code is the XOR of every byte of header and body.

Header, 2011/2013: message id (WORD), body properties (WORD: bits 0-9 body length, 10-12
encryption, 13 sub-packaged, 14 reserved), terminal phone (BCD[6]), serial (WORD), then package
total (WORD) and package index (WORD, from 1) when bit 13 is set.
Header, 2019: bit 14 of the properties is the version flag (1), then protocol version (BYTE,
1 for the first 2019 version) before the phone, which is BCD[10]. Some terminals set bit 14
with a 2013 header (the bit was reserved then): when only the 2013 layout makes the lengths
agree, the frame is read as 2013 (``Header.version_flag_only``).

Bodies (tables of the standard):

- 0x0100 registration: province (WORD), city (WORD), manufacturer (BYTE[5]; 2019: [11]),
  model (2011: BYTE[8]; 2013: [20]; 2019: [30]), terminal id (BYTE[7]; 2019: [30]), plate colour
  (BYTE), plate (STRING, GBK). Answer 0x8100: reply serial (WORD), result (BYTE: 0 success,
  1 vehicle already registered, 2 no such vehicle, 3 terminal already registered, 4 no such
  terminal), auth code (STRING, only on success).
- 0x0102 authentication: 2013 the whole body is the auth code; 2019 code length (BYTE), code,
  IMEI (BYTE[15]), software version (BYTE[20], zero padded).
- 0x0200 location: alarm (DWORD), status (DWORD: bit0 ACC, bit1 positioned, bit2 south, bit3
  west), latitude, longitude (DWORD, 1e-6 degree), altitude (WORD, m), speed (WORD, 0.1 km/h),
  direction (WORD, 0-359 degrees), time (BCD[6] ``YYMMDDhhmmss``, GMT+8), then extra items
  ``id (BYTE), length (BYTE), value``: 0x01 odometer (DWORD, 0.1 km), 0x02 fuel (WORD, 0.1 L),
  0x30 signal strength, 0x31 satellites (BYTE).
- 0x0704 location batch: count (WORD), type (BYTE: 0 normal batch, 1 blind-area backlog 盲区补报),
  then ``count`` items of length (WORD) and a 0x0200 body.
- 0x8001 platform general reply: reply serial (WORD), reply id (WORD), result (BYTE: 0 success,
  1 failure, 2 message error, 3 unsupported, 4 alarm acknowledged).

Everything here is a function of its arguments (no clock, no I/O): bytes in, values or a
``PayloadError`` with a short stable reason out.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from edge.errors import PayloadError

FLAG = 0x7E
ESC = 0x7D
GMT8 = timezone(timedelta(hours=8))

# message ids
TERMINAL_REPLY = 0x0001
HEARTBEAT = 0x0002
LOGOUT = 0x0003
REGISTER = 0x0100
AUTHENTICATE = 0x0102
LOCATION = 0x0200
LOCATION_BATCH = 0x0704
PLATFORM_REPLY = 0x8001
REGISTER_REPLY = 0x8100

# 0x8001 results
OK, FAILURE, MESSAGE_ERROR, UNSUPPORTED = 0, 1, 2, 3
# 0x8100 results
REG_OK, REG_VEHICLE_TAKEN, REG_NO_VEHICLE, REG_TERMINAL_TAKEN, REG_NO_TERMINAL = 0, 1, 2, 3, 4

BATCH_NORMAL, BATCH_BACKLOG = 0, 1
MAX_BODY = 0x3FF  # 10 bits of body length
MIN_FRAME = 13  # a 2013 header (12) and the check code
LOCATION_MIN = 28

_HEADER_13 = struct.Struct(">HH6sH")
_HEADER_19 = struct.Struct(">HHB10sH")
_PACKAGES = struct.Struct(">HH")
_LOC = struct.Struct(">IIIIHHH")
_WORD = struct.Struct(">H")
_REPLY = struct.Struct(">HHB")


class FrameError(PayloadError):
    """A frame whose header could be read (check code right) but whose body is wrong:
    ``header`` says whom to answer."""

    def __init__(self, reason: str, detail: str, header: "Header") -> None:
        super().__init__(reason, detail)
        self.header = header


# --- escapes, check code, BCD ----------------------------------------------------------------------


def unescape(data: bytes) -> bytes:
    if ESC not in data:
        return data
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        j = data.find(ESC, i)
        if j < 0:
            out += data[i:]
            break
        out += data[i:j]
        if j + 1 >= n or data[j + 1] not in (1, 2):
            raise PayloadError("jt808_bad_escape", f"at byte {j}")
        out.append(ESC if data[j + 1] == 1 else FLAG)
        i = j + 2
    return bytes(out)


def escape(data: bytes) -> bytes:
    return data.replace(b"\x7d", b"\x7d\x01").replace(b"\x7e", b"\x7d\x02")


def xor(data: bytes) -> int:
    c = 0
    for b in data:
        c ^= b
    return c


_BCD = {b: f"{b >> 4}{b & 15}" for b in range(256) if b >> 4 < 10 and b & 15 < 10}


def bcd(data: bytes) -> str:
    try:
        return "".join([_BCD[b] for b in data])
    except KeyError:
        raise PayloadError("jt808_bad_bcd", data.hex()) from None


def to_bcd(digits: str, nbytes: int) -> bytes:
    """``digits`` right-aligned in ``nbytes`` BCD bytes (zero padded on the left)."""
    if not digits.isdigit() or len(digits) > 2 * nbytes:
        raise PayloadError("jt808_bad_phone", repr(digits)[:40])
    d = digits.rjust(2 * nbytes, "0")
    return bytes.fromhex(d)


def normal_phone(digits: str) -> str:
    """A terminal phone as we key it: the BCD digits without leading zeros (``013912344323``
    and the 2019 ``00000000013912344323`` are both ``13912344323``)."""
    return digits.lstrip("0") or "0"


# --- headers and frames ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Header:
    msg_id: int
    body_len: int
    encryption: int
    subpackage: bool
    version: int | None  # None: a 2011/2013 header; else the 2019 protocol version byte
    phone_digits: str  # as on the wire (12 or 20 digits): answers carry it back
    serial: int
    size: int  # header length in bytes
    packages: int = 0
    index: int = 0
    version_flag_only: bool = False  # bit 14 set on a 2013 header

    @property
    def phone(self) -> str:
        return normal_phone(self.phone_digits)

    @property
    def protocol(self) -> str:
        return "2019" if self.version is not None else "2013"


@dataclass(frozen=True, slots=True)
class Frame:
    header: Header
    body: bytes


def parse_header(frame: bytes, *, force_2013: bool = False) -> Header:
    """The header of an unescaped frame (header + body, the check code may follow)."""
    if len(frame) < 12:
        raise PayloadError("jt808_short_frame", f"{len(frame)} bytes")
    props = frame[2] << 8 | frame[3]
    sub = bool(props & 0x2000)
    flag = bool(props & 0x4000)
    if flag and not force_2013:
        if len(frame) < 17:
            raise PayloadError("jt808_short_frame", f"{len(frame)} bytes for a 2019 header")
        msg_id, _, version, phone_raw, serial = _HEADER_19.unpack_from(frame, 0)
        size = 17
    else:
        msg_id, _, phone_raw, serial = _HEADER_13.unpack_from(frame, 0)
        version = None
        size = 12
    packages = index = 0
    if sub:
        if len(frame) < size + 4:
            raise PayloadError("jt808_short_frame", "no room for the package fields")
        packages, index = _PACKAGES.unpack_from(frame, size)
        size += 4
    return Header(msg_id, props & MAX_BODY, (props >> 10) & 7, sub, version, bcd(phone_raw), serial, size,
                  packages, index, flag and version is None)


def parse_frame(frame: bytes) -> Frame:
    """An unescaped frame (without the 0x7e flags, with its check code) as header and body.

    ``PayloadError`` reasons: ``jt808_short_frame``, ``jt808_bad_checksum``, ``jt808_bad_bcd``
    (no answer is possible: the header cannot be trusted); ``FrameError`` ``jt808_bad_length``
    and ``jt808_bad_package`` (the header is sound: the terminal can be told)."""
    n = len(frame)
    if n < MIN_FRAME:
        raise PayloadError("jt808_short_frame", f"{n} bytes")
    c = xor(frame[:-1])
    if c != frame[-1]:
        raise PayloadError("jt808_bad_checksum", f"computed 0x{c:02x}, frame says 0x{frame[-1]:02x}")
    flag = bool(frame[2] & 0x40)
    try:
        h: Header | None = parse_header(frame)
    except PayloadError:
        if not flag:
            raise
        h = None
    if flag and (h is None or h.size + h.body_len != n - 1):
        # bit 14 set by a 2013 terminal (reserved in 2013): take the layout whose lengths agree
        try:
            alt = parse_header(frame, force_2013=True)
        except PayloadError:
            alt = None
        if alt is not None and alt.size + alt.body_len == n - 1:
            h = alt
        elif h is None:
            parse_header(frame)  # raises the 2019 layout's own error
    assert h is not None
    if h.size + h.body_len != n - 1:
        raise FrameError("jt808_bad_length", f"header says {h.body_len} body bytes, frame has {n - 1 - h.size}", h)
    if h.subpackage and not (1 <= h.index <= h.packages):
        raise FrameError("jt808_bad_package", f"package {h.index} of {h.packages}", h)
    return Frame(h, frame[h.size:n - 1])


def encode_frame(msg_id: int, phone_digits: str, serial: int, body: bytes = b"", *, version: int | None = None) -> bytes:
    """A whole frame, escaped and delimited, with a 2013 header (``version`` None) or a 2019 one."""
    if len(body) > MAX_BODY:
        raise PayloadError("jt808_body_too_long", f"{len(body)} bytes")
    if version is None:
        raw = _HEADER_13.pack(msg_id, len(body), to_bcd(phone_digits, 6), serial & 0xFFFF) + body
    else:
        raw = _HEADER_19.pack(msg_id, len(body) | 0x4000, version, to_bcd(phone_digits, 10), serial & 0xFFFF) + body
    return b"\x7e" + escape(raw + bytes((xor(raw),))) + b"\x7e"


def general_reply(serial: int, msg_id: int, result: int) -> bytes:
    """Body of a 0x8001 platform general reply."""
    return _REPLY.pack(serial & 0xFFFF, msg_id, result)


def register_reply(serial: int, result: int, code: str = "") -> bytes:
    """Body of a 0x8100 registration reply; the auth code only on success."""
    body = _WORD.pack(serial & 0xFFFF) + bytes((result,))
    if result == REG_OK:
        body += code.encode("gbk")
    return body


# --- stream framing --------------------------------------------------------------------------------


class FrameSplitter:
    """Cut a TCP byte stream into frames at the 0x7e flags.

    ``feed`` returns the contents between flags (still escaped; empty ones, as between a closing
    and the next opening flag, skipped). Bytes before the first flag or between frames come out
    as segments too and fail as frames: counted, never silently skipped. A segment longer than
    ``max_frame_bytes``, or that many bytes without a flag, raise ``jt808_frame_too_large``.
    """

    __slots__ = ("max_frame_bytes", "buf")

    def __init__(self, max_frame_bytes: int = 4096) -> None:
        self.max_frame_bytes = max_frame_bytes
        self.buf = b""

    @property
    def partial(self) -> bool:
        """Part of a frame is waiting for the rest."""
        return bool(self.buf)

    def feed(self, data: bytes) -> list[bytes]:
        buf = self.buf + data if self.buf else data
        out: list[bytes] = []
        start = 0
        limit = self.max_frame_bytes
        find = buf.find
        while True:
            i = find(b"\x7e", start)
            if i < 0:
                break
            if i > start:
                if i - start > limit:
                    self.buf = b""
                    raise PayloadError("jt808_frame_too_large", f"{i - start} bytes > {limit}")
                out.append(buf[start:i])
            start = i + 1
        rest = buf[start:] if start else buf
        if len(rest) > limit:
            self.buf = b""
            raise PayloadError("jt808_frame_too_large", f"{len(rest)} bytes and no end flag > {limit}")
        self.buf = rest
        return out


# --- sub-packages ----------------------------------------------------------------------------------


@dataclass
class _Partial:
    first_serial: int
    packages: int
    started_s: float
    parts: dict[int, bytes]
    serials: list[int]
    size: int = 0


class Reassembler:
    """Sub-packaged messages (properties bit 13) put back together, bounded in time and memory.

    Packages of one message carry consecutive serials (JT/T 808 7.12), so a message is keyed by
    (message id, package total, serial of package 1). At most ``max_messages`` messages and
    ``max_bytes`` bytes wait at a time; a message not complete within ``timeout_s`` is dropped
    (``expire``): its packages were never acknowledged, so the terminal sends them again.
    """

    def __init__(self, *, max_messages: int = 4, max_bytes: int = 64 * 1024, timeout_s: float = 60.0) -> None:
        self.max_messages, self.max_bytes, self.timeout_s = max_messages, max_bytes, timeout_s
        self._parts: dict[tuple[int, int, int], _Partial] = {}
        self.size = 0

    def __len__(self) -> int:
        return len(self._parts)

    def add(self, h: Header, body: bytes, now_s: float) -> tuple[bytes, list[int]] | None:
        """Take one package. Returns (the whole body, every package's serial) once complete."""
        key = (h.msg_id, h.packages, (h.serial - h.index + 1) & 0xFFFF)
        p = self._parts.get(key)
        if p is None:
            if len(self._parts) >= self.max_messages:
                raise PayloadError("jt808_too_many_subpackaged", f"{len(self._parts)} messages waiting")
            p = self._parts[key] = _Partial(key[2], h.packages, now_s, {}, [])
        if h.index not in p.parts:
            if self.size + len(body) > self.max_bytes:
                raise PayloadError("jt808_subpackages_too_large", f"{self.size + len(body)} bytes > {self.max_bytes}")
            p.parts[h.index] = body
            p.serials.append(h.serial)
            p.size += len(body)
            self.size += len(body)
        if len(p.parts) < p.packages:
            return None
        del self._parts[key]
        self.size -= p.size
        return b"".join(p.parts[i] for i in range(1, p.packages + 1)), sorted(p.serials)

    def expire(self, now_s: float) -> int:
        """Drop messages older than ``timeout_s``; returns how many."""
        old = [k for k, p in self._parts.items() if now_s - p.started_s > self.timeout_s]
        for k in old:
            self.size -= self._parts.pop(k).size
        return len(old)


# --- bodies ----------------------------------------------------------------------------------------


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
    bad_extras: str = ""  # why the extra items stopped short (kept: the ones before; the position stands)

    @property
    def acc(self) -> bool:
        return bool(self.status & 1)

    @property
    def positioned(self) -> bool:
        return bool(self.status & 2)


_TIMES: dict[bytes, int] = {}  # BCD time -> ns: a batch and its resends repeat the same few seconds


def bcd_time_ns(raw: bytes) -> int:
    """``YYMMDDhhmmss`` BCD in GMT+8 (the standard's time zone) as ns since the epoch."""
    t = _TIMES.get(raw)
    if t is not None:
        return t
    ts = bcd(raw)
    try:
        local = datetime(2000 + int(ts[0:2]), int(ts[2:4]), int(ts[4:6]), int(ts[6:8]), int(ts[8:10]),
                         int(ts[10:12]), tzinfo=GMT8)
    except ValueError:
        raise PayloadError("jt808_bad_time", ts) from None
    t = int(local.timestamp()) * 1_000_000_000
    if len(_TIMES) >= 4096:
        _TIMES.clear()
    _TIMES[raw] = t
    return t


def parse_location(body: bytes) -> Location:
    if len(body) < LOCATION_MIN:
        raise PayloadError("jt808_short_body", f"{len(body)} bytes < {LOCATION_MIN}")
    alarm, status, lat_u, lon_u, alt, speed, heading = _LOC.unpack_from(body, 0)
    try:
        t = bcd_time_ns(body[22:28])
    except PayloadError as e:
        raise PayloadError("jt808_bad_time", e.detail) from None
    extras: dict[int, bytes] = {}
    bad = ""
    i, n = 28, len(body)
    while i < n:  # a vendor's malformed extra items cost those items, not the position
        if i + 2 > n:
            bad = f"truncated item header at {i}"
            break
        item, ln = body[i], body[i + 1]
        if i + 2 + ln > n:
            bad = f"item 0x{item:02x} length {ln} past the end"
            break
        extras[item] = body[i + 2:i + 2 + ln]
        i += 2 + ln
    lat = lat_u / 1e6 * (-1 if status & 4 else 1)
    lon = lon_u / 1e6 * (-1 if status & 8 else 1)
    return Location(alarm, status, lat, lon, alt, speed / 10.0, heading, t, extras, bad)


def location_fields(loc: Location, terminal: str = "") -> dict[str, object]:
    """The fields of a position Point (besides lat/lon): ``speed_kmh``, ``heading_deg``, ``acc``,
    ``altitude_m``, and where the terminal sends them ``odometer_km`` (item 0x01, 0.1 km),
    ``fuel_l`` (0x02, 0.1 L), ``satellites`` (0x31). ``PayloadError`` ``no_fix`` when status
    bit 1 (positioned) is clear, ``jt808_bad_direction`` above 360 degrees."""
    if not loc.status & 2:
        raise PayloadError("no_fix", f"terminal {terminal}: status bit 1 (positioned) clear")
    if loc.heading_deg > 360:
        raise PayloadError("jt808_bad_direction", str(loc.heading_deg))
    fields: dict[str, object] = {
        "speed_kmh": loc.speed_kmh, "heading_deg": float(loc.heading_deg), "acc": bool(loc.status & 1),
        "altitude_m": float(loc.altitude_m),
    }
    ex = loc.extras
    if ex:
        v = ex.get(0x01)
        if v is not None and len(v) == 4:
            fields["odometer_km"] = (v[0] << 24 | v[1] << 16 | v[2] << 8 | v[3]) / 10.0
        v = ex.get(0x02)
        if v is not None and len(v) == 2:
            fields["fuel_l"] = (v[0] << 8 | v[1]) / 10.0
        v = ex.get(0x31)
        if v is not None and len(v) == 1:
            fields["satellites"] = v[0]
    return fields


def parse_batch(body: bytes) -> tuple[int, list[bytes]]:
    """A 0x0704 body: (type, the 0x0200 bodies of its items)."""
    if len(body) < 3:
        raise PayloadError("jt808_short_body", f"0x0704 of {len(body)} bytes")
    count = _WORD.unpack_from(body, 0)[0]
    kind = body[2]
    i, n, items = 3, len(body), []
    for _ in range(count):
        if i + 2 > n:
            raise PayloadError("jt808_bad_batch", f"{len(items)} of {count} items, then the body ends")
        ln = _WORD.unpack_from(body, i)[0]
        if i + 2 + ln > n:
            raise PayloadError("jt808_bad_batch", f"item {len(items) + 1} of {ln} bytes runs past the end")
        items.append(body[i + 2:i + 2 + ln])
        i += 2 + ln
    if not items:
        raise PayloadError("jt808_empty_batch", "0x0704 with no items")
    return kind, items


@dataclass(frozen=True, slots=True)
class Registration:
    province: int
    city: int
    manufacturer: str
    model: str
    terminal_id: str
    plate_color: int
    plate: str


def _text(raw: bytes) -> str:
    """A fixed-length text field: zero padded (right, or left as some 2019 terminals do)."""
    return raw.strip(b"\x00 ").decode("gbk", "replace")


def parse_registration(body: bytes, version: int | None) -> Registration:
    if version is not None:  # 2019: manufacturer 11, model 30, terminal id 30
        sizes = (11, 30, 30)
    elif len(body) >= 37:  # 2013: 5, 20, 7
        sizes = (5, 20, 7)
    else:  # 2011: 5, 8, 7
        sizes = (5, 8, 7)
    fixed = 4 + sum(sizes) + 1
    if len(body) < fixed:
        raise PayloadError("jt808_short_body", f"0x0100 of {len(body)} bytes < {fixed}")
    province, city = struct.unpack_from(">HH", body, 0)
    i = 4
    parts = []
    for s in sizes:
        parts.append(_text(body[i:i + s]))
        i += s
    color = body[i]
    plate = body[i + 1:].rstrip(b"\x00").decode("gbk", "replace")
    return Registration(province, city, parts[0], parts[1], parts[2], color, plate)


@dataclass(frozen=True, slots=True)
class Authentication:
    code: str
    imei: str = ""
    software_version: str = ""


def parse_authentication(body: bytes, version: int | None) -> Authentication:
    """2013: the body is the code. 2019: code length, code, IMEI (15), software version (20)."""
    if version is None:
        return Authentication(body.rstrip(b"\x00").decode("gbk", "replace"))
    if not body:
        raise PayloadError("jt808_short_body", "0x0102 2019 without a code length")
    n = body[0]
    if len(body) < 1 + n:
        raise PayloadError("jt808_short_body", f"auth code of {n} bytes in a body of {len(body)}")
    code = body[1:1 + n].decode("gbk", "replace")
    rest = body[1 + n:]
    imei = rest[:15].strip(b"\x00 ").decode("ascii", "replace")
    sw = rest[15:35].strip(b"\x00 ").decode("ascii", "replace")
    return Authentication(code, imei, sw)
