"""Live state: the latest value of every series, in memory, for the API and the dashboard."""

from __future__ import annotations

import asyncio
from typing import Sequence

from edge.point import Point


class LiveState:
    """Latest point per (measurement, id tag), and a fan-out of new points to live listeners."""

    def __init__(self, id_tags: Sequence[str] = ("meter", "vehicle")) -> None:
        self._id_tags = tuple(id_tags)
        self._latest: dict[tuple[str, str], Point] = {}
        self._listeners: set[asyncio.Queue] = set()

    def _key(self, p: Point) -> tuple[str, str] | None:
        for t in self._id_tags:
            if t in p.tags:
                return p.measurement, p.tags[t]
        return None

    def update(self, points: Sequence[Point]) -> None:
        for p in points:
            k = self._key(p)
            if k is None:
                continue
            old = self._latest.get(k)
            if old is None or p.time_ns >= old.time_ns:
                if old is not None and old.time_ns == p.time_ns:
                    p = Point(p.measurement, p.tags, {**old.fields, **p.fields}, p.time_ns)
                self._latest[k] = p
        for q in list(self._listeners):
            try:
                q.put_nowait(points)
            except asyncio.QueueFull:
                pass  # a slow listener skips updates; it reads ``latest`` again when it catches up

    def latest(self, measurement: str, ident: str) -> Point | None:
        return self._latest.get((measurement, ident))

    def all_latest(self, measurement: str) -> dict[str, Point]:
        return {k[1]: p for k, p in self._latest.items() if k[0] == measurement}

    def listen(self, maxsize: int = 1000) -> asyncio.Queue:
        q: asyncio.Queue = asyncio.Queue(maxsize)
        self._listeners.add(q)
        return q

    def unlisten(self, q: asyncio.Queue) -> None:
        self._listeners.discard(q)
