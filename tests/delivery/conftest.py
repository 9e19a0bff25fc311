"""Fixtures of the delivery area: a real influxd (tests/support/influx.py), outboxes, both stores."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.clock import FakeClock
from edge.metrics import Metrics
from edge.outbox import Outbox
from edge.point import Point
from tests.support.influx import influx_db, influx_server  # noqa: F401  (fixtures)

ORG = "330000/330100/330106/inst-042"


def meter_point(i: int, seq: int, t0_ns: int = 1_700_000_000_000_000_000, **fields: float) -> Point:
    """Reading ``seq`` of meter ``i``: one per second, energy counting up."""
    f = {"active_energy_import_kwh": 1000.0 + seq * 0.25, "active_power_total_kw": 10.0 + (seq % 7)}
    f.update(fields)
    return Point("meter", {"meter": f"m-{i:04d}", "org": ORG, "carrier": "electricity", "profile": "em340"},
                 f, t0_ns + seq * 1_000_000_000)


class RecordingClock(FakeClock):
    """The fake clock, remembering every sleep (the deliverer's backoff waits)."""

    def __init__(self) -> None:
        super().__init__()
        self.slept: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        await super().sleep(seconds)


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def outbox(tmp_path: Path, metrics: Metrics):
    ob = Outbox(tmp_path / "outbox.sqlite", metrics=metrics)
    yield ob
    ob.close()
