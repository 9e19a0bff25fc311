"""Scenario files: what a bench run starts, how long it runs and which faults it injects.

A scenario is YAML (``simulators/scenarios/<name>.yaml``), checked by frozen pydantic models with
``extra="forbid"``: meters by profile and transport (spread over several simulator processes,
many unit ids per Modbus server so 400 meters need a handful of ports), vehicles by payload
format, the chaos schedule (seconds from the start of the run) and the drain allowance.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edge.errors import ConfigError

SCENARIOS_DIR = Path(__file__).resolve().parents[1] / "scenarios"


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MeterTransport(str, Enum):
    tcp = "tcp"
    rtu_over_tcp = "rtu_over_tcp"


class MeterGroup(Frozen):
    """``count`` meters of one profile; ``units_per_server`` unit ids share one Modbus server (port)."""

    profile: str
    count: int = Field(gt=0)
    transport: MeterTransport = MeterTransport.tcp
    interval_s: float = Field(default=15.0, gt=0)
    timeout_ms: int = Field(default=3000, gt=0)
    units_per_server: int = Field(default=25, ge=1, le=247)


class VehicleGroup(Frozen):
    count: int = Field(gt=0)
    format: str = "json"
    rate_hz: float = Field(default=0.2, gt=0)


class ChaosKind(str, Enum):
    edge_kill = "edge_kill"              # kill -9 the edge, restart it after duration_s
    mosquitto_restart = "mosquitto_restart"
    store_outage = "store_outage"        # stop the store (InfluxDB) for duration_s
    meter_timeouts = "meter_timeouts"    # a fraction of meters stop answering for `count` requests
    counter_reset = "counter_reset"      # a fraction of meters reset their energy/volume counters


class ChaosEvent(Frozen):
    at_s: float = Field(ge=0)
    kind: ChaosKind
    duration_s: float = Field(default=0.0, ge=0)
    fraction: float = Field(default=0.1, gt=0, le=1)
    count: int = Field(default=3, gt=0)


class Chaos(Frozen):
    events: tuple[ChaosEvent, ...] = ()
    malformed_rate: float = Field(default=0.10, ge=0, le=1, description="share of vehicle messages that are malformed")
    outbox_max_bytes: int | None = Field(default=None, gt=0, description="a small outbox quota, so an outage fills it")

    def scaled(self, factor: float) -> "Chaos":
        """The same schedule compressed to a run ``factor`` times as long (outages shrink too)."""
        ev = tuple(e.model_copy(update={"at_s": e.at_s * factor, "duration_s": e.duration_s * factor})
                   for e in self.events)
        return self.model_copy(update={"events": ev})


class Scenario(Frozen):
    name: str
    description: str = ""
    duration_s: float = Field(default=300.0, gt=0)
    drain_timeout_s: float = Field(default=120.0, gt=0, description="how long the edge may take to deliver what it holds")
    meter_processes: int = Field(default=2, ge=1, description="simulator processes the Modbus servers are spread over")
    meters: tuple[MeterGroup, ...] = ()
    vehicles: tuple[VehicleGroup, ...] = ()
    chaos: Chaos = Chaos()
    seed: int = 1

    @model_validator(mode="after")
    def _formats(self) -> "Scenario":
        fmts = [g.format for g in self.vehicles]
        if len(set(fmts)) != len(fmts):
            raise ValueError("one vehicle group per payload format (each format has its own topic)")
        bad = [f for f in fmts if f not in ("json", "owntracks", "nmea")]
        if bad:
            raise ValueError(f"vehicle formats {bad}: the bench drives json, owntracks and nmea")
        return self

    @property
    def meter_count(self) -> int:
        return sum(g.count for g in self.meters)

    @property
    def vehicle_count(self) -> int:
        return sum(g.count for g in self.vehicles)


def load_scenario(ref: str | Path) -> Scenario:
    """A scenario by name (``county``) or by path. Raises ``ConfigError`` naming the file and field."""
    p = Path(ref)
    if not p.suffix:
        p = SCENARIOS_DIR / f"{ref}.yaml"
    if not p.exists():
        known = ", ".join(sorted(q.stem for q in SCENARIOS_DIR.glob("*.yaml")))
        raise ConfigError(f"no scenario {str(ref)!r} (known: {known})", file=str(p))
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        return Scenario.model_validate(raw)
    except yaml.YAMLError as e:
        raise ConfigError(f"not valid YAML: {e}", file=str(p)) from None
    except ValidationError as e:
        err = e.errors()[0]
        raise ConfigError(err["msg"], file=str(p), field=".".join(map(str, err["loc"]))) from None
