"""Fixtures of the bench tests: a short compound scenario with chaos, built in code."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from simulators.testbench.scenario import Chaos, ChaosEvent, ChaosKind, MeterGroup, Scenario, VehicleGroup


def _have(binary: str) -> bool:
    return shutil.which(binary) is not None or any(Path(d, binary).exists() for d in ("/usr/sbin", "/usr/bin"))


@pytest.fixture
def needs_influxd_and_mosquitto() -> None:
    if not (_have("influxd") and _have("mosquitto")):
        pytest.skip("needs influxd and mosquitto")


@pytest.fixture
def short_compound(needs_influxd_and_mosquitto) -> Scenario:
    """A compound shrunk to run in about 25 s: 12 meters polled every 5 s, 8 vehicles at 1 Hz,
    kill -9 of the edge, a Mosquitto restart, an 8-second InfluxDB outage that overflows a 16 kB
    outbox quota, meter timeouts, counter resets and 10 % malformed payloads."""
    return Scenario(
        name="compound-short", duration_s=25, drain_timeout_s=40, meter_processes=2,
        meters=(MeterGroup(profile="chint-dtsu666", count=6, interval_s=5, units_per_server=3),
                MeterGroup(profile="acrel-adl400", count=3, interval_s=5, transport="rtu_over_tcp", units_per_server=3),
                MeterGroup(profile="tuf2000m-water", count=3, interval_s=5, units_per_server=3)),
        vehicles=(VehicleGroup(count=6, format="json", rate_hz=1.0), VehicleGroup(count=2, format="owntracks", rate_hz=1.0)),
        chaos=Chaos(malformed_rate=0.10, outbox_max_bytes=16_000, events=(
            ChaosEvent(at_s=3, kind=ChaosKind.meter_timeouts, fraction=0.25, count=2),
            ChaosEvent(at_s=4, kind=ChaosKind.counter_reset, fraction=0.2),
            ChaosEvent(at_s=6, kind=ChaosKind.edge_kill, duration_s=1),
            ChaosEvent(at_s=11, kind=ChaosKind.mosquitto_restart),
            ChaosEvent(at_s=14, kind=ChaosKind.store_outage, duration_s=8),
        )),
    )
