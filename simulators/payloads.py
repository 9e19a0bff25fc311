"""Payload encoders of the vehicle simulator: our JSON, OwnTracks, NMEA 0183, JT/T 808.

Written independently of ``collector.gps.codecs`` (a simulator is a peer of what it tests and
must not share its decoding code). ``Fix`` is one report; each encoder also says the time the
wire can carry (``wire_time_ns``): JSON keeps milliseconds, NMEA centiseconds, OwnTracks and
JT/T 808 whole seconds.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import orjson

GMT8 = timezone(timedelta(hours=8))
FORMATS = ("json", "owntracks", "nmea", "jt808")
_RESOLUTION_NS = {"json": 1_000_000, "nmea": 10_000_000, "owntracks": 1_000_000_000, "jt808": 1_000_000_000}


@dataclass(frozen=True)
class Fix:
    vehicle: str
    time_ns: int
    lat: float
    lon: float
    speed_kmh: float
    heading_deg: float
    acc: bool
    odometer_km: float
    fuel_l: float
    altitude_m: float
    satellites: int


def wire_time_ns(fmt: str, t_ns: int) -> int:
    r = _RESOLUTION_NS[fmt]
    return t_ns - t_ns % r


def encode(fmt: str, f: Fix, *, jt808_version: int = 2013) -> bytes:
    if fmt == "json":
        return encode_json(f)
    if fmt == "owntracks":
        return encode_owntracks(f)
    if fmt == "nmea":
        return encode_nmea(f)
    if fmt == "jt808":
        return encode_jt808(f, version=jt808_version)
    raise ValueError(f"unknown format {fmt!r}; one of {FORMATS}")


def encode_json(f: Fix) -> bytes:
    t_ms = f.time_ns // 1_000_000
    secs, ms = divmod(t_ms, 1000)
    local = datetime.fromtimestamp(secs, GMT8)
    iso = local.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms:03d}+08:00"
    return orjson.dumps({
        "vehicle": f.vehicle, "time": iso, "lat": round(f.lat, 7), "lon": round(f.lon, 7),
        "speed_kmh": round(f.speed_kmh, 1), "heading_deg": round(f.heading_deg, 1), "acc": f.acc,
        "odometer_km": round(f.odometer_km, 2), "fuel_l": round(f.fuel_l, 1),
        "altitude_m": round(f.altitude_m, 1), "satellites": f.satellites,
    })


def encode_owntracks(f: Fix) -> bytes:
    return orjson.dumps({
        "_type": "location", "tid": f.vehicle[-2:], "tst": f.time_ns // 1_000_000_000,
        "lat": round(f.lat, 7), "lon": round(f.lon, 7), "vel": int(round(f.speed_kmh)),
        "cog": int(round(f.heading_deg)) % 360, "alt": int(round(f.altitude_m)), "acc": 5, "batt": 90,
    })


def _nmea(body: str) -> str:
    c = 0
    for ch in body.encode("ascii"):
        c ^= ch
    return f"${body}*{c:02X}"


def _ddmm(v: float, deg_digits: int) -> str:
    v = abs(v)
    d = int(v)
    m = (v - d) * 60.0
    if round(m, 5) >= 60.0:
        d, m = d + 1, 0.0
    return f"{d:0{deg_digits}d}{m:08.5f}"


def encode_nmea(f: Fix) -> bytes:
    t = datetime.fromtimestamp(f.time_ns // 10_000_000 / 100, timezone.utc)
    cs = (f.time_ns // 10_000_000) % 100
    hms = t.strftime("%H%M%S") + f".{cs:02d}"
    dmy = t.strftime("%d%m%y")
    lat, ns = _ddmm(f.lat, 2), "N" if f.lat >= 0 else "S"
    lon, ew = _ddmm(f.lon, 3), "E" if f.lon >= 0 else "W"
    kn = f.speed_kmh / 1.852
    rmc = _nmea(f"GNRMC,{hms},A,{lat},{ns},{lon},{ew},{kn:.3f},{f.heading_deg:.1f},{dmy},,,A")
    gga = _nmea(f"GNGGA,{hms},{lat},{ns},{lon},{ew},1,{f.satellites:02d},0.9,{f.altitude_m:.1f},M,7.0,M,,")
    vtg = _nmea(f"GNVTG,{f.heading_deg:.1f},T,,M,{kn:.3f},N,{f.speed_kmh:.2f},K,A")
    return f"{rmc}\r\n{gga}\r\n{vtg}\r\n".encode("ascii")


def _bcd(digits: str) -> bytes:
    return bytes(int(digits[i]) << 4 | int(digits[i + 1]) for i in range(0, len(digits), 2))


def jt808_location_body(f: Fix, *, alarm: int = 0) -> bytes:
    """A 0x0200 body (JT/T 808 table 23): alarm, status, position, time in GMT+8, extra items
    0x01 odometer, 0x02 fuel, 0x30 signal, 0x31 satellites."""
    status = (1 if f.acc else 0) | 2 | (4 if f.lat < 0 else 0) | (8 if f.lon < 0 else 0)
    local = datetime.fromtimestamp(f.time_ns // 1_000_000_000, GMT8)
    body = struct.pack(">IIIIHHH", alarm, status, round(abs(f.lat) * 1e6), round(abs(f.lon) * 1e6),
                       max(0, int(round(f.altitude_m))), int(round(f.speed_kmh * 10)), int(round(f.heading_deg)) % 360)
    body += _bcd(local.strftime("%y%m%d%H%M%S"))
    body += bytes([0x01, 4]) + struct.pack(">I", int(round(f.odometer_km * 10)))
    body += bytes([0x02, 2]) + struct.pack(">H", int(round(f.fuel_l * 10)))
    body += bytes([0x30, 1, 25, 0x31, 1, f.satellites])
    return body


def encode_jt808(f: Fix, *, version: int = 2013, serial: int = 0, alarm: int = 0) -> bytes:
    body = jt808_location_body(f, alarm=alarm)
    if version == 2019:
        props = len(body) | (1 << 14)
        header = struct.pack(">HH", 0x0200, props) + bytes([1]) + _bcd(f.vehicle.rjust(20, "0")) + struct.pack(">H", serial)
    else:
        header = struct.pack(">HH", 0x0200, len(body)) + _bcd(f.vehicle.rjust(12, "0")) + struct.pack(">H", serial)
    raw = header + body
    c = 0
    for b in raw:
        c ^= b
    raw += bytes([c])
    esc = raw.replace(b"\x7d", b"\x7d\x01").replace(b"\x7e", b"\x7d\x02")
    return b"\x7e" + esc + b"\x7e"


def corrupt(fmt: str, payload: bytes, kind: int) -> bytes:
    """A payload that no correct decoder accepts (the simulator's malformed fault)."""
    if fmt in ("json", "owntracks"):
        if kind % 3 == 0:
            return payload[: len(payload) // 2]  # cut mid-object: never valid JSON
        if kind % 3 == 1:
            return payload.replace(b'"lat":', b'"lat":"x","_lat":', 1) if fmt == "json" else payload.replace(b'"tst":', b'"tst":"x","_tst":', 1)
        return b"\xff\xfe garbage \x00"
    if fmt == "nmea":
        if kind % 2 == 0:
            star = payload.index(b"*")
            bad = b"00" if payload[star + 1:star + 3] != b"00" else b"11"
            return payload[: star + 1] + bad + payload[star + 3:]
        return b"$GNRMC,garbage" + b"\r\n"
    # jt808: break the checksum (re-escaped), or cut the frame
    if kind % 2 == 0:
        inner = payload[1:-1].replace(b"\x7d\x02", b"\x7e").replace(b"\x7d\x01", b"\x7d")
        inner = inner[:-1] + bytes([inner[-1] ^ 0x5A])
        return b"\x7e" + inner.replace(b"\x7d", b"\x7d\x01").replace(b"\x7e", b"\x7d\x02") + b"\x7e"
    return payload[:20] + b"\x7e"
