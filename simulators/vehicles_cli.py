"""``edge simulate vehicles``: run the simulated fleet against a broker (typer sub-app)."""

from __future__ import annotations

import asyncio
import json
from typing import Optional

import typer

from simulators.payloads import FORMATS
from simulators.vehicles import Faults, VehicleFleet

# Mounted by edge.app.cli as ``edge simulate vehicles``: the callback is the command itself.
app = typer.Typer(help="A fleet of vehicles publishing positions over MQTT.", invoke_without_command=True)


def simulate_vehicles(count: int, broker: str, fmt: str, rate_hz: float, duration_s: float | None, seed: int,
                      malformed: float, duplicates: float, out_of_order: float, jt808_version: int) -> dict:
    fleet = VehicleFleet(count, broker, fmt=fmt, rate_hz=rate_hz, seed=seed, jt808_version=jt808_version,
                         faults=Faults(malformed_rate=malformed, duplicate_rate=duplicates,
                                       out_of_order_rate=out_of_order))
    return asyncio.run(fleet.run(duration_s=duration_s))


@app.callback()
def vehicles(
    count: int = typer.Option(200, "--count", help="number of vehicles"),
    fmt: str = typer.Option("json", "--format", help=f"payload format: {', '.join(FORMATS)}"),
    broker: str = typer.Option("mqtt://127.0.0.1:1883", "--broker", help="mqtt://host:port"),
    rate_hz: float = typer.Option(1.0, "--rate-hz", help="positions per vehicle per second"),
    duration_s: Optional[float] = typer.Option(None, "--duration-s", help="stop after this long (default: run until Ctrl-C)"),
    seed: int = typer.Option(0, "--seed"),
    malformed: float = typer.Option(0.0, "--malformed", help="share of malformed payloads (0..1)"),
    duplicates: float = typer.Option(0.0, "--duplicates", help="share of messages sent twice"),
    out_of_order: float = typer.Option(0.0, "--out-of-order", help="share of messages held back one tick"),
    jt808_version: int = typer.Option(2013, "--jt808-version", help="2013 or 2019 header"),
) -> None:
    """Drive COUNT vehicles around Hangzhou and publish their positions to vehicles/{id}/position."""
    if fmt not in FORMATS:
        raise typer.BadParameter(f"one of {', '.join(FORMATS)}", param_hint="--format")
    try:
        st = simulate_vehicles(count, broker, fmt, rate_hz, duration_s, seed, malformed, duplicates,
                               out_of_order, jt808_version)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    st.pop("per_vehicle", None)
    st.pop("malformed_payloads", None)
    typer.echo(json.dumps(st, indent=2))
