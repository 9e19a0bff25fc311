"""Streaming geofence membership: enter and leave events, fed fix by fix.

Each vehicle's set of fences it is inside is kept; a fix that changes it yields one event per
fence crossed. The first fix of a vehicle only establishes where it is (no event): a restart of
the service must not announce every parked car "entering" its garage. Batch use over a track is
``crossings`` (vectorised over the fixes of one vehicle).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from analytics.fleet.geo import Fence


@dataclass(frozen=True)
class FenceEvent:
    vehicle: str
    fence: str
    kind: str  # "enter" | "leave"
    time_ns: int
    lat: float
    lon: float


class FenceTracker:
    """Per-vehicle fence membership. Not thread-safe; one tracker per consumer."""

    def __init__(self, fences: Sequence[Fence]) -> None:
        self.fences = tuple(fences)
        self._inside: dict[str, frozenset[str]] = {}

    def inside(self, vehicle: str) -> frozenset[str]:
        return self._inside.get(vehicle, frozenset())

    def update(self, vehicle: str, time_ns: int, lat: float, lon: float) -> list[FenceEvent]:
        now = frozenset(f.name for f in self.fences if f.contains_one(lat, lon))
        before = self._inside.get(vehicle)
        self._inside[vehicle] = now
        if before is None or before == now:
            return []
        ev = [FenceEvent(vehicle, n, "leave", time_ns, lat, lon) for n in sorted(before - now)]
        ev += [FenceEvent(vehicle, n, "enter", time_ns, lat, lon) for n in sorted(now - before)]
        return ev


def crossings(fence: Fence, t_ns: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> list[tuple[str, int]]:
    """Batch enter/leave of one vehicle's (sorted) track: [(kind, time_ns), ...]. Same rule as the
    tracker: the first fix sets the state."""
    inside = np.asarray(fence.contains(lat, lon), dtype=bool)
    if len(inside) < 2:
        return []
    ch = np.flatnonzero(inside[1:] != inside[:-1]) + 1
    return [("enter" if inside[i] else "leave", int(t_ns[i])) for i in ch]
