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

from typing import Callable, Mapping

from collector.gps.codecs import json as json_codec
from collector.gps.codecs import jt808, nmea, owntracks
from collector.gps.codecs.positions import MEASUREMENT, check_range, check_vehicle_id, position
from edge.errors import PayloadError
from edge.point import Point

__all__ = ["MEASUREMENT", "check_range", "check_vehicle_id", "position", "decoder_for", "fields_decoder_for"]

Decoder = Callable[..., list[Point]]
# the same, to ``(vehicle, time_ns, fields)`` tuples in measurement ``position``: no Point built
FieldsDecoder = Callable[..., list[tuple[str, int, dict[str, object]]]]


def decoder_for(fmt: str) -> Decoder:
    """The decode function of a format name (``json``, ``owntracks``, ``nmea``, ``jt808``)."""

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
        return json_codec.decode_fields
    return None
