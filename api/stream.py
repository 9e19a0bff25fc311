"""Live events for Server-Sent Events: latest meter values, vehicle positions and alerts.

One ``EventHub`` per app listens to ``edge.live.LiveState`` (its ``listen()`` queue of point
batches), turns each meter / position / alert point into an event with a increasing integer id,
and keeps the last ``ring_size`` events in a ring buffer. A client that reconnects with
``Last-Event-ID`` gets every event after that id still in the ring (then live ones); a client whose
id has already left the ring gets an ``event: reset`` and a fresh snapshot.

Events are filtered per client by org (always the key's scope), by topic, and by meter or vehicle
ids. The hub starts on the first subscriber, inside the server's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import orjson

from edge.live import LiveState
from edge.point import Point

log = logging.getLogger(__name__)

TOPICS = ("meter", "position", "alert")


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    topic: str
    org: str | None
    subject: str | None  # meter or vehicle id
    point: Point


class EventHub:
    def __init__(self, live: LiveState, org_of: Callable[[Point], str | None], ring_size: int = 5000) -> None:
        self.live = live
        self.org_of = org_of
        self.ring: deque[Event] = deque(maxlen=ring_size)
        self.head = 0
        self._cond: asyncio.Condition | None = None
        self._task: asyncio.Task | None = None
        self._queue: asyncio.Queue | None = None

    def ensure_started(self) -> None:
        if self._task is None or self._task.done():
            self._cond = asyncio.Condition()
            self._queue = self.live.listen(maxsize=10_000)
            self._task = asyncio.get_running_loop().create_task(self._pump(), name="api-event-hub")

    async def _pump(self) -> None:
        q = self._queue
        try:
            while True:
                batch = await q.get()
                added = self.add(batch)
                if added:
                    async with self._cond:
                        self._cond.notify_all()
        finally:
            self.live.unlisten(q)

    def add(self, points: Iterable[Point]) -> int:
        n = 0
        for p in points:
            topic = p.measurement
            if topic not in TOPICS:
                continue
            subject = p.tags.get("meter") if topic == "meter" else p.tags.get("vehicle") or p.tags.get("meter")
            self.head += 1
            self.ring.append(Event(self.head, topic, self.org_of(p), subject, p))
            n += 1
        return n

    def after(self, last_id: int) -> tuple[list[Event], bool]:
        """Events with id > last_id still in the ring, and whether some were lost (left the ring)."""
        if not self.ring or last_id >= self.head:
            return [], False
        lost = last_id < self.ring[0].id - 1
        start = max(0, last_id - self.ring[0].id + 1)
        return [e for e in list(self.ring)[start:]], lost

    async def wait(self, last_id: int, timeout_s: float) -> None:
        self.ensure_started()
        with contextlib.suppress(asyncio.TimeoutError):
            async with self._cond:
                await asyncio.wait_for(self._cond.wait_for(lambda: self.head > last_id), timeout_s)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


def sse(event: str, data: Any, ident: int | None = None) -> bytes:
    head = f"id: {ident}\n" if ident is not None else ""
    return (head + f"event: {event}\ndata: ").encode() + orjson.dumps(data) + b"\n\n"
