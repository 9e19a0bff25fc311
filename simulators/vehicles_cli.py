"""``edge simulate vehicles``: run the simulated fleet against a broker, or JT/T 808 terminals
against a platform over TCP (``--format jt808 --transport tcp --server HOST:PORT``) (typer sub-app)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from pathlib import Path
from typing import Optional

import typer

from simulators.jt808_terminals import Outages, TerminalFaults, TerminalFleet
from simulators.payloads import FORMATS
from simulators.vehicles import Faults, VehicleFleet

# Mounted by edge.app.cli as ``edge simulate vehicles``: the callback is the command itself.
app = typer.Typer(help="A fleet of vehicles publishing positions over MQTT, or JT/T 808 terminals over TCP.",
                  invoke_without_command=True)


def simulate_vehicles(count: int, broker: str, fmt: str, rate_hz: float, duration_s: float | None, seed: int,
                      malformed: float, duplicates: float, out_of_order: float, jt808_version: int) -> dict:
    fleet = VehicleFleet(count, broker, fmt=fmt, rate_hz=rate_hz, seed=seed, jt808_version=jt808_version,
                         faults=Faults(malformed_rate=malformed, duplicate_rate=duplicates,
                                       out_of_order_rate=out_of_order))
    return asyncio.run(fleet.run(duration_s=duration_s))


def simulate_terminals(count: int, server: str, version: int, duration_s: float | None, seed: int, drive_s: float,
                       park_s: float, heartbeat_s: float, ack_timeout_s: float, backlog_h: float, tunnel_rate: float,
                       garage_rate: float, faults: TerminalFaults, state: Path | None, ledger: Path | None,
                       first_phone: int) -> dict:
    fleet = TerminalFleet(count, server, version=version, seed=seed, drive_interval_s=drive_s, park_interval_s=park_s,
                          heartbeat_s=heartbeat_s, ack_timeout_s=ack_timeout_s, backlog_h=backlog_h,
                          outages=Outages(tunnel_rate=tunnel_rate, garage_rate=garage_rate), faults=faults,
                          state_file=state, first_phone=first_phone)

    async def go() -> dict:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, fleet.stop)
        try:
            return await fleet.run(duration_s=duration_s)
        finally:
            if ledger is not None:
                ledger.write_text(json.dumps(fleet.ledger()))

    return asyncio.run(go())


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
    transport: str = typer.Option("mqtt", "--transport", help="mqtt (publish to a broker) or tcp (JT/T 808 terminals)"),
    server: str = typer.Option("127.0.0.1:6808", "--server", help="tcp: the platform's HOST:PORT"),
    drive_s: float = typer.Option(30.0, "--drive-interval-s", help="tcp: report interval with the engine on"),
    park_s: float = typer.Option(300.0, "--park-interval-s", help="tcp: report interval parked"),
    heartbeat_s: float = typer.Option(60.0, "--heartbeat-s", help="tcp: heartbeat when nothing else was sent"),
    ack_timeout_s: float = typer.Option(10.0, "--ack-timeout-s", help="tcp: wait this long for an answer, then resend"),
    backlog_h: float = typer.Option(0.0, "--backlog-h", help="tcp: start with this many hours of blind-area backlog"),
    tunnel_rate: float = typer.Option(0.0, "--tunnels", help="tcp: chance per report of a tunnel (30-180 s without network)"),
    garage_rate: float = typer.Option(0.0, "--garages", help="tcp: chance per report of a garage (10 min - 2 h)"),
    bad_checksum: float = typer.Option(0.0, "--bad-checksum", help="tcp: share of reports sent first with a broken check code"),
    wrong_auth: float = typer.Option(0.0, "--wrong-auth", help="tcp: share of authentications tried first with a wrong code"),
    slow: float = typer.Option(0.0, "--slow", help="tcp: share of frames sent byte by byte"),
    garbage: float = typer.Option(0.0, "--garbage", help="tcp: share of frames preceded by garbage bytes"),
    state: Optional[Path] = typer.Option(None, "--state", help="tcp: JSON file of auth codes kept across runs"),
    ledger: Optional[Path] = typer.Option(None, "--ledger", help="tcp: write each terminal's generated and acknowledged fix times here"),
    first_phone: int = typer.Option(0, "--first-phone", help="tcp: terminals are 138 + this number and up, 8 digits"),
) -> None:
    """Drive COUNT vehicles around Hangzhou and publish their positions to vehicles/{id}/position, or,
    with --transport tcp, run COUNT JT/T 808 terminals against the platform at --server."""
    if fmt not in FORMATS:
        raise typer.BadParameter(f"one of {', '.join(FORMATS)}", param_hint="--format")
    if transport not in ("mqtt", "tcp"):
        raise typer.BadParameter("mqtt or tcp", param_hint="--transport")
    if transport == "tcp":
        if fmt != "jt808":
            raise typer.BadParameter("terminals over TCP speak jt808", param_hint="--format")
        try:
            st = simulate_terminals(count, server, jt808_version, duration_s, seed, drive_s, park_s, heartbeat_s,
                                    ack_timeout_s, backlog_h, tunnel_rate, garage_rate,
                                    TerminalFaults(bad_checksum=bad_checksum, wrong_auth=wrong_auth, slow=slow, garbage=garbage),
                                    state, ledger, first_phone)
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        typer.echo(json.dumps(st, indent=2))
        return
    try:
        st = simulate_vehicles(count, broker, fmt, rate_hz, duration_s, seed, malformed, duplicates,
                               out_of_order, jt808_version)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    st.pop("per_vehicle", None)
    st.pop("malformed_payloads", None)
    typer.echo(json.dumps(st, indent=2))
