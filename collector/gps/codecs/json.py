"""Our JSON position payload (the schema is documented in docs/gps.md).

One object, or an array of objects (a terminal's buffered batch)::

    {"vehicle": "veh-001", "time": "2026-11-25T08:30:00+08:00", "lat": 30.274100, "lon": 120.155100,
     "speed_kmh": 42.5, "heading_deg": 90, "acc": true, "odometer_km": 12345.6, "fuel_l": 31.2,
     "altitude_m": 12.0, "satellites": 11}

``vehicle`` may be left out when the topic carries it. ``time`` is ISO 8601 with an offset
(``Z`` or ``+08:00``; a time without an offset is refused) or a number of seconds since the Unix
epoch (fractions allowed). ``"fix": false`` marks a report without a valid position.
"""

from __future__ import annotations

import math
from datetime import datetime

import orjson

from collector.gps.codecs.positions import MEASUREMENT, check_range, check_vehicle_id
from edge.errors import PayloadError
from edge.point import Point

# field name -> (kind): "num" floats, "int" integers, "bool"
OPTIONAL = {
    "speed_kmh": "num",
    "heading_deg": "num",
    "acc": "bool",
    "odometer_km": "num",
    "fuel_l": "num",
    "altitude_m": "num",
    "satellites": "int",
}
MAX_ITEMS = 1000
# 1970 .. 2100: anything outside is a unit mistake (ms sent as s), not a time
_MIN_S, _MAX_S = 0.0, 4_102_444_800.0


def parse_time(v: object) -> int:
    """ISO 8601 with offset, or Unix seconds, to int ns UTC."""
    if isinstance(v, bool):
        raise PayloadError("bad_time", repr(v))
    if isinstance(v, (int, float)):
        f = float(v)
        if not math.isfinite(f) or not _MIN_S <= f <= _MAX_S:
            raise PayloadError("bad_time", f"epoch seconds {v!r} out of range")
        if isinstance(v, int):
            return v * 1_000_000_000
        return round(f * 1e6) * 1000  # microsecond resolution, no float noise in the ns digits
    if isinstance(v, str):
        try:
            dt = datetime.fromisoformat(v.strip().replace("z", "Z"))
        except ValueError:
            raise PayloadError("bad_time", repr(v)[:60]) from None
        if dt.tzinfo is None or dt.utcoffset() is None:
            raise PayloadError("time_without_tz", repr(v)[:60])
        if not 1970 <= dt.year <= 2100:
            raise PayloadError("bad_time", repr(v)[:60])
        whole = int(dt.timestamp())
        return whole * 1_000_000_000 + dt.microsecond * 1000
    raise PayloadError("bad_time", f"time is {type(v).__name__}")


def _num(obj: dict, key: str, required: bool = False) -> float | None:
    v = obj.get(key)
    if v is None:
        if required:
            raise PayloadError("missing_field", key)
        return None
    t = type(v)
    if t is float:
        if not math.isfinite(v):
            raise PayloadError("bad_number", f"{key}={v!r}")
        return v
    if t is int and -(2**63) <= v < 2**64:
        return float(v)
    raise PayloadError("bad_number", f"{key}={v!r}"[:80])


_TIMES: dict[str, int] = {}  # time text -> ns: a fleet reports the same few seconds over and over
_TIMES_MAX = 4096
_IDS: set[str] = set()  # vehicle ids already checked by check_vehicle_id
_IDS_MAX = 100_000


def _time_ns(v: object) -> int:
    """``parse_time`` with the ISO 8601 texts remembered (parse_time is a pure function of the text)."""
    if type(v) is str:
        t = _TIMES.get(v)
        if t is None:
            t = parse_time(v)
            if len(_TIMES) >= _TIMES_MAX:
                _TIMES.clear()
            _TIMES[v] = t
        return t
    return parse_time(v)


def _item_fields(obj: object, vehicle: str | None) -> tuple[str, int, dict[str, object]]:
    """One object to (vehicle, time_ns, fields): the checks of ``position`` included, no Point built."""
    if type(obj) is not dict:
        raise PayloadError("not_an_object", type(obj).__name__)
    vid = obj.get("vehicle", vehicle)
    if vid is None:
        raise PayloadError("no_vehicle_id", "neither payload nor topic names the vehicle")
    if type(vid) is not str or vid not in _IDS:
        vid = check_vehicle_id(vid)
        if len(_IDS) < _IDS_MAX:
            _IDS.add(vid)
    if obj.get("fix", True) is False:
        raise PayloadError("no_fix", f"vehicle {vid}")
    if "time" not in obj:
        raise PayloadError("missing_field", "time")
    t = _time_ns(obj["time"])
    lat = _num(obj, "lat", True)
    lon = _num(obj, "lon", True)
    fields: dict[str, object] = {"lat": lat, "lon": lon}
    for k, kind in OPTIONAL.items():
        v = obj.get(k)
        if v is None:
            continue
        if kind == "num":
            v = _num(obj, k)
        elif kind == "bool":
            if type(v) is not bool:
                raise PayloadError("bad_field", f"{k}={v!r}"[:80])
        elif type(v) is not int or not 0 <= v <= 1000:
            raise PayloadError("bad_field", f"{k}={v!r}"[:80])
        fields[k] = v
    check_range(lat, lon)  # type: ignore[arg-type]  # finite floats here: _num refused the others
    return vid, t, fields


def decode_fields(payload: bytes, *, vehicle: str | None = None,
                  now_ns: int | None = None) -> list[tuple[str, int, dict[str, object]]]:
    """``decode`` without the Points: ``(vehicle, time_ns, fields)`` per position, same checks and
    errors. The subscriber builds the one Point it stores from these (tags with ``org``)."""
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as e:
        raise PayloadError("bad_json", str(e)[:120]) from None
    if isinstance(doc, list):
        if not doc:
            raise PayloadError("empty_batch")
        if len(doc) > MAX_ITEMS:
            raise PayloadError("batch_too_large", f"{len(doc)} > {MAX_ITEMS}")
        return [_item_fields(o, vehicle) for o in doc]
    return [_item_fields(doc, vehicle)]


def decode(payload: bytes, *, vehicle: str | None = None, now_ns: int | None = None) -> list[Point]:
    return [Point(MEASUREMENT, {"vehicle": v}, f, t) for v, t, f in decode_fields(payload, vehicle=vehicle)]


def encode(vehicle: str | None, time_ns: int, lat: float, lon: float, **fields: object) -> bytes:
    """The inverse, for tools and docs (the simulators keep their own encoder)."""
    obj: dict[str, object] = {}
    if vehicle is not None:
        obj["vehicle"] = vehicle
    obj["time"] = time_ns / 1e9
    obj["lat"], obj["lon"] = lat, lon
    obj.update({k: v for k, v in fields.items() if v is not None})
    return orjson.dumps(obj)
