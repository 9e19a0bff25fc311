"""The contract between collectors and the edge: hand over Points, or reject a payload.

Collectors (``collector.modbus``, ``collector.gps``) receive an ``Ingest`` and call only this.
``submit`` returns once the points are durably committed to the outbox (so an MQTT message may
be acknowledged after it); ``reject`` records a payload that could not be turned into points in
the dead-letter table, with its raw bytes and reason; ``count`` bumps a named error counter.
"""

from __future__ import annotations

from typing import Protocol, Sequence

from edge.point import Point


class Ingest(Protocol):
    async def submit(self, points: Sequence[Point]) -> None: ...

    async def reject(self, source: str, raw: bytes, reason: str, topic: str = "") -> None: ...

    def count(self, name: str, n: int = 1, **labels: str) -> None: ...
