"""Payload codecs: bytes in, ``list[Point]`` out, or a ``PayloadError`` with a short reason.

Every codec has the same signature::

    decode(payload: bytes, *, vehicle: str | None = None, now_ns: int | None = None) -> list[Point]

``vehicle`` is the id the subscriber took from the topic; a codec uses it when the payload does
not name the vehicle itself (see docs/gps.md for which wins). ``now_ns`` is only used where a
format leaves the date out (an NMEA GGA without an RMC). Points come out in measurement
``position`` with the single tag ``vehicle``; the subscriber adds ``org``. Coordinates are
returned as the payload states them (the subscriber converts GCJ-02 topics to WGS-84).

A payload that says it has no valid fix (JT/T 808 status bit 1 clear, NMEA RMC status ``V`` or
GGA quality 0, our JSON ``"fix": false``) raises ``PayloadError("no_fix")``.
"""

from __future__ import annotations

import math
import re
from typing import Callable, Mapping

from edge.errors import PayloadError
from edge.point import Point

MEASUREMENT = "position"

Decoder = Callable[..., list[Point]]
# the same, to ``(vehicle, time_ns, fields)`` tuples in measurement ``position``: no Point built
FieldsDecoder = Callable[..., list[tuple[str, int, dict[str, object]]]]

_VEHICLE_ID = re.compile(r"^[^\s\\,=\"]{1,64}$")


def check_vehicle_id(v: object) -> str:
    """A vehicle id is 1-64 characters, no whitespace, backslash, comma, quote or '='."""
    if isinstance(v, int) and not isinstance(v, bool):
        v = str(v)
    if not isinstance(v, str) or not _VEHICLE_ID.match(v):
        raise PayloadError("bad_vehicle_id", repr(v)[:80])
    return v


def check_range(lat: float, lon: float) -> None:
    """Finite WGS-84 degrees inside the globe, else ``coordinates_out_of_range``."""
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        raise PayloadError("coordinates_out_of_range", f"lat={lat} lon={lon}")


def position(vehicle: str, time_ns: int, lat: float, lon: float, **fields: object) -> Point:
    """Build a position Point; fields that are ``None`` are left out (only what the payload has)."""
    if not (math.isfinite(lat) and math.isfinite(lon)):
        raise PayloadError("bad_coordinates", f"lat={lat!r} lon={lon!r}")
    check_range(lat, lon)
    out: dict[str, object] = {"lat": float(lat), "lon": float(lon)}
    for k, v in fields.items():
        if v is None:
            continue
        if isinstance(v, float) and not math.isfinite(v):
            raise PayloadError("bad_number", f"{k}={v!r}")
        out[k] = v
    return Point(MEASUREMENT, {"vehicle": vehicle}, out, int(time_ns))


def decoder_for(fmt: str) -> Decoder:
    """The decode function of a format name (``json``, ``owntracks``, ``nmea``, ``jt808``)."""
    from collector.gps.codecs import json as json_codec, jt808, nmea, owntracks

    table: Mapping[str, Decoder] = {
        "json": json_codec.decode,
        "owntracks": owntracks.decode,
        "nmea": nmea.decode,
        "jt808": jt808.decode,
    }
    try:
        return table[fmt]
    except KeyError:
        raise PayloadError("unknown_format", fmt) from None


def fields_decoder_for(fmt: str) -> FieldsDecoder | None:
    """The format's ``decode_fields`` where it has one (our JSON), else ``None``.

    The subscriber uses it to build the one Point it stores (with ``org``) instead of a codec
    Point plus a copy; the checks and errors are those of ``decode``."""
    if fmt == "json":
        from collector.gps.codecs import json as json_codec

        return json_codec.decode_fields
    return None
