"""JT/T 808 location reports (0x0200, and 0x0704 batches of them), as gateways forward them.

Frame: ``0x7e | header | body | checksum | 0x7e``, with ``0x7e`` sent as ``0x7d 0x02`` and ``0x7d``
as ``0x7d 0x01`` inside. The checksum is the XOR of header and body. One payload may hold
several frames back to back; a payload without the ``0x7e`` flags is taken as one unframed
(already unescaped) frame.

Headers (2011/2013 and 2019), the check code and the 0x0200/0x0704 bodies are read by
``collector.jt808.protocol``, shared with the TCP access server (see there for the layouts).

The vehicle id is the terminal phone with leading zeros removed (``013912344323`` ->
``13912344323``); the subscriber maps it to a configured vehicle. Encrypted and subpackaged
location reports are refused (``jt808_encrypted``, ``jt808_subpackage``).
"""

from __future__ import annotations

from collector.gps.codecs.positions import position
from collector.jt808.protocol import (  # noqa: F401  (the shared pure pieces, re-exported for callers)
    ESC, FLAG, LOCATION as LOCATION_REPORT, LOCATION_BATCH, Header, Location, bcd, escape, location_fields,
    parse_batch, parse_frame, parse_header, parse_location, unescape, xor)
from edge.errors import PayloadError
from edge.point import Point

MAX_FRAMES = 64


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


def _location_point(vid: str, loc: Location) -> Point:
    return position(vid, loc.time_ns, loc.lat, loc.lon, **location_fields(loc, vid))


def decode_frame(frame: bytes) -> list[Point]:
    f = parse_frame(frame)
    h, body = f.header, f.body
    if h.msg_id not in (LOCATION_REPORT, LOCATION_BATCH):
        raise PayloadError("jt808_not_location", f"message 0x{h.msg_id:04x}")
    if h.encryption:
        raise PayloadError("jt808_encrypted", f"encryption bits {h.encryption}")
    if h.subpackage:
        raise PayloadError("jt808_subpackage", "subpackaged location reports are not reassembled")
    if h.msg_id == LOCATION_REPORT:
        return [_location_point(h.phone, parse_location(body))]
    _kind, items = parse_batch(body)
    return [_location_point(h.phone, parse_location(item)) for item in items]


def decode(payload: bytes, *, vehicle: str | None = None, now_ns: int | None = None) -> list[Point]:
    out: list[Point] = []
    for frame in split_frames(payload):
        out.extend(decode_frame(frame))
    return out
