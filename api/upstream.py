"""Push to the province: forward indicators (and, if asked, raw points) to an upstream HTTP endpoint.

A county edge reports to the provincial platform (DB33/T 2474-2022 6.2.5: county and city data
roll up to the province). The upstream speaks InfluxDB's write API (1.x ``/write`` or 2.x/3.x
``/api/v2/write``), as the platform's time-series intake does; points go as line protocol.

The upstream is a consumer of the edge's one durable log (``edge.outbox``), beside the local
sink: consumer ``upstream``, taking the measurements in ``measurements`` (default the
indicators, ``energy_indicator`` and ``fleet_indicator``; with ``raw=True`` also ``meter`` and
``position``). An ``edge.delivery.Deliverer`` moves its points with the same retries, backoff,
splitting and dead letters as local delivery, and its cursor moves in the transaction that
records its progress. A point handed to the outbox therefore reaches the province whatever
crashes when: there is no second copy to make after the local commit, so no window in which a
crash loses it. An unreachable province only makes the upstream's lag grow; rows it does not
take never wait for it, and with ``raw=True`` the log's bound (``outbox.max_bytes``) is shared.

Wiring: ``Upstream(outbox, sink, ...)`` registers the consumer (durable; a new one starts at the
head of the log); the service runs ``run()`` as a component.
"""

from __future__ import annotations

from typing import Iterable

from edge.clock import SYSTEM_CLOCK, Clock
from edge.delivery import Deliverer
from edge.outbox import Outbox
from edge.sinks import Sink, influx_v1, influx_v2

INDICATORS = ("energy_indicator", "fleet_indicator")
RAW = ("meter", "position")
CONSUMER = "upstream"


class Upstream:
    def __init__(self, outbox: Outbox, sink: Sink, *, measurements: Iterable[str] = INDICATORS,
                 raw: bool = False, clock: Clock = SYSTEM_CLOCK, batch_points: int = 5000,
                 flush_interval_s: float = 2.0, consumer: str = CONSUMER) -> None:
        self.outbox = outbox
        self.sink = sink
        self.consumer = consumer
        self.measurements = frozenset(measurements) | (frozenset(RAW) if raw else frozenset())
        outbox.register_consumer(consumer, self.measurements)
        self.deliverer = Deliverer(outbox, sink, clock=clock, batch_points=batch_points,
                                   flush_interval_s=flush_interval_s, backoff_cap_s=60.0, consumer=consumer)

    @classmethod
    def influxdb(cls, outbox: Outbox, url: str, *, database: str = "sensing", org: str | None = None,
                 bucket: str | None = None, token: str | None = None, username: str | None = None,
                 password: str | None = None, **kw) -> "Upstream":
        """An upstream speaking InfluxDB 2.x/3.x when ``bucket`` is given, else 1.x."""
        if bucket:
            sink = influx_v2(url, org or "", bucket, token=token)
        else:
            sink = influx_v1(url, database, username=username, password=password)
        return cls(outbox, sink, **kw)

    async def run(self) -> None:
        await self.deliverer.run()

    async def flush(self, timeout_s: float | None = None) -> None:
        """Return when every point committed before the call that the upstream takes is delivered."""
        await self.deliverer.flush(timeout_s)

    def stats(self) -> dict:
        return {"measurements": sorted(self.measurements), **self.deliverer.stats()}

    async def close(self) -> None:
        """Stop delivering and close the sink (the outbox is the service's)."""
        self.deliverer.stop()
        await self.sink.aclose()
