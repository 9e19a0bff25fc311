"""NMEA 0183 sentences: RMC, GGA and VTG (any talker: GP, GN, GL, GA, BD, GB...).

A payload is one or more sentences separated by line breaks. Every sentence must carry its
checksum (``*hh``, XOR of the characters between ``$`` and ``*``) and it must match. Sentences
of other types (GSA, GSV...) are checked and skipped.

- RMC: UTC time and date, status (``A`` valid, ``V`` no fix), position, speed in knots (x 1.852
  to km/h), course over ground.
- GGA: UTC time (no date), position, fix quality (0 = no fix), satellites, altitude (m, MSL).
- VTG: course and speed; it carries no time, so it adds to the fix before it (or after it).

Sentences with the same UTC time are merged into one point. A GGA without an RMC of the same
time takes its date from ``now_ns`` (the date that puts the fix nearest to now).
NMEA names no vehicle: the vehicle is the topic's id.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from collector.gps.codecs.positions import check_vehicle_id, position
from edge.errors import PayloadError
from edge.point import Point

KNOT_KMH = 1.852
MAX_SENTENCES = 64
_SENTENCE = re.compile(r"^\$([A-Z]{2})([A-Z]{3}),([\x20-\x7e]*)\*([0-9A-Fa-f]{2})$")
_NUM = re.compile(r"^\d+(\.\d+)?$")
_TIME = re.compile(r"^(\d{2})(\d{2})(\d{2})(\.\d{1,6})?$")
_DATE = re.compile(r"^(\d{2})(\d{2})(\d{2})$")


def checksum(body: str) -> int:
    c = 0
    for ch in body.encode("ascii"):
        c ^= ch
    return c


def _float(s: str, what: str) -> float | None:
    if s == "":
        return None
    if not _NUM.match(s):
        raise PayloadError("nmea_bad_field", f"{what}={s!r}"[:60])
    return float(s)


def _coord(value: str, hemi: str, deg_digits: int, pos: str, neg: str) -> float | None:
    if value == "" and hemi == "":
        return None
    if not _NUM.match(value) or hemi not in (pos, neg):
        raise PayloadError("nmea_bad_coordinate", f"{value!r} {hemi!r}")
    intpart = value.split(".")[0]
    if len(intpart) < deg_digits + 2 or len(intpart) > deg_digits + 2:
        raise PayloadError("nmea_bad_coordinate", repr(value))
    deg = int(intpart[:deg_digits])
    minutes = float(value[deg_digits:])
    if minutes >= 60.0:
        raise PayloadError("nmea_bad_coordinate", repr(value))
    v = deg + minutes / 60.0
    return -v if hemi == neg else v


def _tod(s: str) -> tuple[int, int] | None:
    """hhmmss(.sss) -> (seconds of day, microseconds)."""
    m = _TIME.match(s)
    if not m:
        if s == "":
            return None
        raise PayloadError("nmea_bad_time", repr(s)[:40])
    h, mi, se = int(m.group(1)), int(m.group(2)), int(m.group(3))
    if h > 23 or mi > 59 or se > 60:
        raise PayloadError("nmea_bad_time", repr(s))
    frac = m.group(4)
    us = int(round(float(frac) * 1e6)) if frac else 0
    return h * 3600 + mi * 60 + min(se, 59), min(us, 999_999)


def _date(s: str) -> datetime:
    m = _DATE.match(s)
    if not m:
        raise PayloadError("nmea_bad_date", repr(s)[:40])
    dd, mm, yy = int(m.group(1)), int(m.group(2)), int(m.group(3))
    try:
        # two-digit years: 80-99 are 1980-1999 (GPS time starts in 1980), 00-79 are 2000-2079
        return datetime((1900 if yy >= 80 else 2000) + yy, mm, dd, tzinfo=timezone.utc)
    except ValueError:
        raise PayloadError("nmea_bad_date", repr(s)) from None


class _Fix:
    __slots__ = ("tod", "date", "lat", "lon", "fields", "valid")

    def __init__(self, tod: tuple[int, int] | None) -> None:
        self.tod = tod
        self.date: datetime | None = None
        self.lat: float | None = None
        self.lon: float | None = None
        self.fields: dict[str, object] = {}
        self.valid = True


def split_sentences(payload: bytes) -> list[tuple[str, str, list[str]]]:
    """Check framing and checksums; return (talker, type, fields) per sentence."""
    try:
        text = payload.decode("ascii")
    except UnicodeDecodeError:
        raise PayloadError("nmea_not_ascii") from None
    lines = [ln.strip() for ln in text.replace("\r", "\n").split("\n")]
    lines = [ln for ln in lines if ln]
    if not lines:
        raise PayloadError("nmea_empty")
    if len(lines) > MAX_SENTENCES:
        raise PayloadError("nmea_too_many_sentences", str(len(lines)))
    out = []
    for ln in lines:
        m = _SENTENCE.match(ln)
        if not m:
            if ln.startswith("$") and "*" not in ln:
                raise PayloadError("nmea_checksum_missing", ln[:40])
            raise PayloadError("nmea_bad_sentence", ln[:40])
        body = ln[1:ln.rindex("*")]
        if checksum(body) != int(m.group(4), 16):
            raise PayloadError("nmea_bad_checksum", ln[:40])
        out.append((m.group(1), m.group(2), m.group(3).split(",")))
    return out


def _field(f: list[str], i: int) -> str:
    return f[i] if i < len(f) else ""


def decode(payload: bytes, *, vehicle: str | None = None, now_ns: int | None = None) -> list[Point]:
    sentences = split_sentences(payload)
    if vehicle is None:
        raise PayloadError("no_vehicle_id", "NMEA needs the vehicle id in the topic")
    vid = check_vehicle_id(vehicle)
    fixes: list[_Fix] = []
    by_tod: dict[tuple[int, int], _Fix] = {}
    pending_vtg: dict[str, object] = {}

    def fix_for(tod: tuple[int, int] | None) -> _Fix:
        if tod is not None and tod in by_tod:
            return by_tod[tod]
        fx = _Fix(tod)
        if tod is not None:
            by_tod[tod] = fx
        fixes.append(fx)
        if pending_vtg:
            fx.fields.update(pending_vtg)
            pending_vtg.clear()
        return fx

    for _talker, kind, f in sentences:
        if kind == "RMC":
            if len(f) < 9:
                raise PayloadError("nmea_short_sentence", "RMC")
            fx = fix_for(_tod(f[0]))
            if f[1] not in ("A", "V"):
                raise PayloadError("nmea_bad_field", f"RMC status {f[1]!r}")
            if f[1] == "V" or _field(f, 11) == "N":
                fx.valid = False
            lat = _coord(f[2], f[3], 2, "N", "S")
            lon = _coord(f[4], f[5], 3, "E", "W")
            if lat is not None and lon is not None:
                fx.lat, fx.lon = lat, lon
            kn = _float(f[6], "speed")
            if kn is not None:
                fx.fields["speed_kmh"] = kn * KNOT_KMH
            cog = _float(f[7], "course")
            if cog is not None:
                fx.fields["heading_deg"] = cog
            if f[8]:
                fx.date = _date(f[8])
        elif kind == "GGA":
            if len(f) < 9:
                raise PayloadError("nmea_short_sentence", "GGA")
            fx = fix_for(_tod(f[0]))
            lat = _coord(f[1], f[2], 2, "N", "S")
            lon = _coord(f[3], f[4], 3, "E", "W")
            q = f[5]
            if not q.isdigit():
                raise PayloadError("nmea_bad_field", f"GGA quality {q!r}"[:60])
            if int(q) == 0:
                fx.valid = False
            if lat is not None and lon is not None and (fx.lat is None):
                fx.lat, fx.lon = lat, lon
            sats = f[6]
            if sats:
                if not sats.isdigit() or int(sats) > 1000:
                    raise PayloadError("nmea_bad_field", f"GGA satellites {sats!r}"[:60])
                fx.fields["satellites"] = int(sats)
            alt = f[8]
            if alt:
                try:
                    a = float(alt)
                except ValueError:
                    raise PayloadError("nmea_bad_field", f"GGA altitude {alt!r}"[:60]) from None
                if not -10_000 < a < 100_000:
                    raise PayloadError("nmea_bad_field", f"GGA altitude {alt!r}"[:60])
                fx.fields["altitude_m"] = a
        elif kind == "VTG":
            if _field(f, 8) == "N":
                continue
            extra: dict[str, object] = {}
            cog = _float(_field(f, 0), "course")
            if cog is not None:
                extra["heading_deg"] = cog
            kmh = _float(_field(f, 6), "speed_kmh")
            kn = _float(_field(f, 4), "speed_kn")
            if kmh is not None:
                extra["speed_kmh"] = kmh
            elif kn is not None:
                extra["speed_kmh"] = kn * KNOT_KMH
            if fixes:
                for k, v in extra.items():
                    fixes[-1].fields.setdefault(k, v)
            else:
                pending_vtg.update(extra)
        # other sentence types: checksum verified above, content ignored

    if not fixes:
        raise PayloadError("nmea_no_position", "no RMC or GGA sentence")
    points = []
    for fx in fixes:
        if not fx.valid:
            raise PayloadError("no_fix", f"vehicle {vid}")
        if fx.lat is None or fx.lon is None or fx.tod is None:
            raise PayloadError("nmea_no_position", "fix without position or time")
        date = fx.date
        secs, us = fx.tod
        if date is None:
            if now_ns is None:
                raise PayloadError("nmea_no_date", "GGA without RMC and no reference time")
            now = datetime.fromtimestamp(now_ns / 1e9, tz=timezone.utc)
            base = now.replace(hour=0, minute=0, second=0, microsecond=0)
            cands = [base + timedelta(days=d, seconds=secs) for d in (-1, 0, 1)]
            date = min(cands, key=lambda c: abs((c - now).total_seconds())) - timedelta(seconds=secs)
        t_ns = (int(date.timestamp()) + secs) * 1_000_000_000 + us * 1000
        points.append(position(vid, t_ns, fx.lat, fx.lon, **fx.fields))  # type: ignore[arg-type]
    return points


def sentence(body: str) -> str:
    """Wrap a sentence body (without ``$`` and ``*hh``) with its checksum: for tools and tests."""
    return f"${body}*{checksum(body):02X}"
