"""Geometry on WGS-84 coordinates: great-circle distance, circles and polygons.

Distances use the haversine formula on a sphere of the WGS-84 mean radius (IUGG R1 =
6,371,008.8 m); over the lengths a vehicle drives between two fixes the spherical error against
the ellipsoid stays below 0.5 %. Every function takes scalars or numpy arrays (broadcast) and
returns metres.

Polygons are tested in the plane of (lon, lat) degrees with the even-odd ray rule: right for
fences the size of a compound or a district, where the meridian convergence inside one polygon is
negligible; not for fences that cross the antimeridian or a pole (none in China). Coordinates are
WGS-84 as stored; conversion from GCJ-02 (Chinese web maps) happens before they get here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

EARTH_RADIUS_M = 6_371_008.8


def haversine_m(lat1, lon1, lat2, lon2):
    """Great-circle distance in metres between (lat1, lon1) and (lat2, lon2), degrees, broadcast."""
    p1 = np.radians(lat1)
    p2 = np.radians(lat2)
    dp = p2 - p1
    dl = np.radians(np.asarray(lon2, dtype=float) - lon1)
    a = np.sin(dp * 0.5) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl * 0.5) ** 2
    return 2.0 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.minimum(a, 1.0)))


def near_m(lat1, lon1, lat2, lon2):
    """Fast short-distance approximation (equirectangular at the first point's latitude), metres.

    For the thresholds of cleaning and stop detection (tens to hundreds of metres) it differs
    from ``haversine_m`` by far less than GPS noise (relative error < 1e-3 below 10 km away from
    the poles); reported distances always use ``haversine_m``.
    """
    k = np.pi / 180.0
    dy = np.subtract(lat2, lat1)
    dx = np.subtract(lon2, lon1) * np.cos(np.multiply(lat1, k))
    return EARTH_RADIUS_M * k * np.sqrt(dx * dx + dy * dy)


def step_lengths_m(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Length of each step of a track: out[i] = distance(i-1, i), out[0] = 0. Metres."""
    out = np.zeros(len(lat))
    if len(lat) > 1:
        out[1:] = haversine_m(lat[:-1], lon[:-1], lat[1:], lon[1:])
    return out


def in_circle(lat, lon, c_lat: float, c_lon: float, radius_m: float):
    """True where (lat, lon) lies within ``radius_m`` metres of the centre (boundary included)."""
    return haversine_m(lat, lon, c_lat, c_lon) <= radius_m


def in_polygon(lat, lon, poly_lat: Sequence[float], poly_lon: Sequence[float]):
    """Even-odd point-in-polygon test in (lon, lat) degrees, vectorised over the points.

    The polygon is given by its vertices in order (closed implicitly). Points exactly on an edge
    may fall either side, as with any ray-casting test.
    """
    y = np.asarray(lat, dtype=float)
    x = np.asarray(lon, dtype=float)
    py = np.asarray(poly_lat, dtype=float)
    px = np.asarray(poly_lon, dtype=float)
    inside = np.zeros(np.broadcast(x, y).shape, dtype=bool)
    n = len(px)
    j = n - 1
    for i in range(n):
        yi, yj, xi, xj = py[i], py[j], px[i], px[j]
        crosses = (yi > y) != (yj > y)
        if yj != yi:
            x_at = xi + (y - yi) * (xj - xi) / (yj - yi)
            inside ^= crosses & (x < x_at)
        j = i
    return inside


@dataclass(frozen=True)
class Fence:
    """A geofence: a circle (centre, radius) or a polygon of (lat, lon) vertices."""

    name: str
    circle: tuple[float, float, float] | None = None  # lat, lon, radius_m
    polygon: tuple[tuple[float, float], ...] | None = None  # ((lat, lon), ...)
    org: str | None = None
    _plat: np.ndarray = field(init=False, repr=False, compare=False)
    _plon: np.ndarray = field(init=False, repr=False, compare=False)
    _bbox: tuple[float, float, float, float] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if (self.circle is None) == (self.polygon is None):
            raise ValueError(f"fence {self.name!r}: exactly one of circle or polygon")
        if self.polygon is not None:
            if len(self.polygon) < 3:
                raise ValueError(f"fence {self.name!r}: a polygon needs at least 3 vertices")
            plat = np.array([p[0] for p in self.polygon], dtype=float)
            plon = np.array([p[1] for p in self.polygon], dtype=float)
            bbox = (plat.min(), plat.max(), plon.min(), plon.max())
        else:
            c_lat, c_lon, r = self.circle
            if r <= 0:
                raise ValueError(f"fence {self.name!r}: radius must be > 0")
            plat = plon = np.empty(0)
            dlat = np.degrees(r / EARTH_RADIUS_M)
            dlon = dlat / max(np.cos(np.radians(c_lat)), 1e-6)
            bbox = (c_lat - dlat, c_lat + dlat, c_lon - dlon, c_lon + dlon)
        object.__setattr__(self, "_plat", plat)
        object.__setattr__(self, "_plon", plon)
        object.__setattr__(self, "_bbox", bbox)

    def contains(self, lat, lon):
        """Vectorised membership test (bool or bool array)."""
        if self.circle is not None:
            c_lat, c_lon, r = self.circle
            return in_circle(lat, lon, c_lat, c_lon, r)
        return in_polygon(lat, lon, self._plat, self._plon)

    def contains_one(self, lat: float, lon: float) -> bool:
        """Scalar test with a bounding-box shortcut, for the streaming path."""
        a, b, c, d = self._bbox
        if not (a <= lat <= b and c <= lon <= d):
            return False
        return bool(self.contains(lat, lon))


def fences_from_config(geofences: Iterable) -> tuple[Fence, ...]:
    """Compile ``edge.config.Geofence`` models (duck-typed) into ``Fence`` objects."""
    out = []
    for g in geofences:
        if g.circle is not None:
            out.append(Fence(g.name, circle=(g.circle.lat, g.circle.lon, g.circle.radius_m), org=g.org))
        else:
            out.append(Fence(g.name, polygon=tuple(tuple(p) for p in g.polygon), org=g.org))
    return tuple(out)
