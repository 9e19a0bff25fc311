"""OwnTracks location messages (``_type: location``), as published by the OwnTracks apps.

Fields used: ``lat``, ``lon`` (WGS-84), ``tst`` (Unix seconds of the fix), ``vel`` (km/h),
``cog`` (course over ground, degrees), ``alt`` (m), ``tid`` (two-character tracker id).
OwnTracks' ``acc`` is the fix *accuracy* in metres, not ignition: it is not mapped to ``acc``.
The vehicle is the topic's id (``owntracks/{user}/{device}``: the device), else ``tid``.
"""

from __future__ import annotations

import math

import orjson

from collector.gps.codecs.positions import check_vehicle_id, position
from edge.errors import PayloadError
from edge.point import Point

_MAX_S = 4_102_444_800


def _opt_num(doc: dict, key: str) -> float | None:
    v = doc.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
        raise PayloadError("bad_number", f"{key}={v!r}"[:80])
    return float(v)


def decode(payload: bytes, *, vehicle: str | None = None, now_ns: int | None = None) -> list[Point]:
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as e:
        raise PayloadError("bad_json", str(e)[:120]) from None
    if not isinstance(doc, dict):
        raise PayloadError("not_an_object", type(doc).__name__)
    kind = doc.get("_type")
    if kind != "location":
        raise PayloadError("owntracks_not_location", f"_type={kind!r}"[:80])
    vid = vehicle if vehicle is not None else doc.get("tid")
    if vid is None:
        raise PayloadError("no_vehicle_id", "no topic id and no tid")
    vid = check_vehicle_id(vid)
    tst = doc.get("tst")
    if isinstance(tst, bool) or not isinstance(tst, int) or not 0 <= tst <= _MAX_S:
        raise PayloadError("bad_time", f"tst={tst!r}"[:80])
    lat, lon = _opt_num(doc, "lat"), _opt_num(doc, "lon")
    if lat is None or lon is None:
        raise PayloadError("missing_field", "lat/lon")
    return [position(vid, tst * 1_000_000_000, lat, lon,
                     speed_kmh=_opt_num(doc, "vel"), heading_deg=_opt_num(doc, "cog"),
                     altitude_m=_opt_num(doc, "alt"))]
