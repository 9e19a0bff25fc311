"""The position Point every codec builds, and the checks they share (vehicle id, coordinates)."""

from __future__ import annotations

import math
import re

from edge.errors import PayloadError
from edge.point import Point

MEASUREMENT = "position"

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
