"""Push to the province: forward indicators (and, if asked, raw points) to an upstream HTTP endpoint.

A county edge reports to the provincial platform (DB33/T 2474-2022 6.2.5: county and city data
roll up to the province). The upstream speaks InfluxDB's write API (1.x ``/write`` or 2.x/3.x
``/api/v2/write``), as the platform's time-series intake does; points go as line protocol.

Same durability as local delivery: points to forward are committed to a second outbox of their
own (``edge.outbox.Outbox``, SQLite WAL, file ``upstream_outbox.sqlite``) and moved by an
``edge.delivery.Deliverer`` with the same retries, backoff, splitting and dead letters; an
unreachable province only makes the upstream outbox grow (bounded, oldest dropped and counted).

What is forwarded: the measurements in ``measurements`` (default the indicators,
``energy_indicator`` and ``fleet_indicator``); with ``raw=True`` also ``meter`` and ``position``.

Wiring: the service hands every submitted batch to ``tap`` (``ServiceIngest(on_points=up.tap)``)
and runs ``run()`` as a component. ``tap`` is synchronous (the ingest's hook is), so it schedules
the commit: a crash in the few milliseconds between the local commit and the upstream commit can
lose the upstream copy of that batch (the local store has it; indicators are recomputed and so
forwarded again by the next job run).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Iterable, Sequence

from edge.clock import SYSTEM_CLOCK, Clock
from edge.delivery import Deliverer
from edge.outbox import Outbox
from edge.point import Point
from edge.sinks import Sink, influx_v1, influx_v2

log = logging.getLogger(__name__)

INDICATORS = ("energy_indicator", "fleet_indicator")
RAW = ("meter", "position")


class Upstream:
    def __init__(self, outbox_path: str | Path, sink: Sink, *, measurements: Iterable[str] = INDICATORS,
                 raw: bool = False, max_bytes: int = 256 << 20, clock: Clock = SYSTEM_CLOCK,
                 batch_points: int = 5000, flush_interval_s: float = 2.0) -> None:
        self.outbox = Outbox(outbox_path, max_bytes=max_bytes, clock=clock)
        self.sink = sink
        self.measurements = frozenset(measurements) | (frozenset(RAW) if raw else frozenset())
        self.deliverer = Deliverer(self.outbox, sink, clock=clock, batch_points=batch_points,
                                   flush_interval_s=flush_interval_s, backoff_cap_s=60.0)
        self._pending: set[asyncio.Task] = set()
        self.offered = 0

    @classmethod
    def influxdb(cls, outbox_path: str | Path, url: str, *, database: str = "sensing", org: str | None = None,
                 bucket: str | None = None, token: str | None = None, username: str | None = None,
                 password: str | None = None, **kw) -> "Upstream":
        """An upstream speaking InfluxDB 2.x/3.x when ``bucket`` is given, else 1.x."""
        if bucket:
            sink = influx_v2(url, org or "", bucket, token=token)
        else:
            sink = influx_v1(url, database, username=username, password=password)
        return cls(outbox_path, sink, **kw)

    def select(self, points: Sequence[Point]) -> list[Point]:
        return [p for p in points if p.measurement in self.measurements]

    async def offer(self, points: Sequence[Point]) -> int:
        """Commit the points to forward; returns how many were selected."""
        sel = self.select(points)
        if sel:
            await self.outbox.put(sel)
            self.offered += len(sel)
        return len(sel)

    def tap(self, points: Sequence[Point]) -> None:
        """Synchronous hook for ``ServiceIngest(on_points=...)``: schedules ``offer``."""
        if not self.select(points):
            return
        task = asyncio.get_running_loop().create_task(self.offer(points))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def run(self) -> None:
        await self.deliverer.run()

    async def flush(self, timeout_s: float | None = None) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        await self.deliverer.flush(timeout_s)

    def stats(self) -> dict:
        return {"offered": self.offered, **self.deliverer.stats()}

    async def close(self) -> None:
        self.deliverer.stop()
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        await self.sink.aclose()
        self.outbox.close()
