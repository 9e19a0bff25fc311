"""A road-like grid around a base point, for the vehicle simulator (metres east/north of base).

Every ``spacing_m`` there is a street; every 5th line is an arterial road, every 10th an
expressway-like ring road. Routes are L-shaped (along the start's row, then the goal's column),
which on a grid is a shortest path. Speeds by road type are km/h ranges (urban Hangzhou).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

EARTH_M_PER_DEG = 111_320.0

SPEED_KMH = {"local": (20.0, 40.0), "arterial": (40.0, 60.0), "expressway": (60.0, 80.0)}


def road_type(line: int) -> str:
    if line % 10 == 0:
        return "expressway"
    if line % 5 == 0:
        return "arterial"
    return "local"


@dataclass(frozen=True)
class Grid:
    base_lat: float
    base_lon: float
    half: int = 12  # nodes from the centre to an edge: the grid is (2*half+1)^2 nodes
    spacing_m: float = 400.0

    def node_xy(self, i: int, j: int) -> tuple[float, float]:
        return i * self.spacing_m, j * self.spacing_m

    def to_latlon(self, x: float, y: float) -> tuple[float, float]:
        lat = self.base_lat + y / EARTH_M_PER_DEG
        lon = self.base_lon + x / (EARTH_M_PER_DEG * math.cos(math.radians(self.base_lat)))
        return lat, lon

    def nearest_node(self, lat: float, lon: float) -> tuple[int, int]:
        """The junction closest to a position (clamped to the grid)."""
        x = (lon - self.base_lon) * EARTH_M_PER_DEG * math.cos(math.radians(self.base_lat))
        y = (lat - self.base_lat) * EARTH_M_PER_DEG
        return self.clamp(round(x / self.spacing_m)), self.clamp(round(y / self.spacing_m))

    def clamp(self, i: int) -> int:
        return max(-self.half, min(self.half, i))

    def route(self, a: tuple[int, int], b: tuple[int, int]) -> list[tuple[tuple[int, int], str]]:
        """Nodes from a (excluded) to b (included), each with the type of the road leading to it."""
        out = []
        (i, j), (bi, bj) = a, b
        step = 1 if bi > i else -1
        while i != bi:
            i += step
            out.append(((i, j), road_type(j)))
        step = 1 if bj > j else -1
        while j != bj:
            j += step
            out.append(((i, j), road_type(i)))
        return out
