"""``edge simulate meters``: a bench of simulated Modbus meters on real sockets."""

from __future__ import annotations

import asyncio
import logging

import typer

from simulators.meters import MeterServer

log = logging.getLogger(__name__)

meters_app = typer.Typer(help="Serve simulated Modbus meters (Modbus TCP or RTU over TCP).", invoke_without_command=True)


async def serve_meters(profile: str, count: int, host: str, port: int, framer: str, port_per_meter: bool,
                       seed: int, ready: asyncio.Event | None = None, for_s: float | None = None) -> list[MeterServer]:
    """Start ``count`` meters: unit ids 1..count behind one port (a gateway), or one port each."""
    if port_per_meter:
        servers = [MeterServer(profile, [1], host=host, port=port + i if port else 0, framer=framer, seed=seed + i)
                   for i in range(count)]
    else:
        servers = [MeterServer(profile, list(range(1, count + 1)), host=host, port=port, framer=framer, seed=seed)]
    for s in servers:
        await s.start()
    if ready is not None:
        ready.set()
    try:
        if for_s is None:
            await asyncio.Event().wait()
        else:
            await asyncio.sleep(for_s)
    finally:
        for s in servers:
            await s.stop()
    return servers


@meters_app.callback()
def meters(count: int = typer.Option(1, help="number of meters"),
           profile: str = typer.Option("chint-dtsu666", help="device profile id"),
           host: str = typer.Option("127.0.0.1", help="address to listen on"),
           port: int = typer.Option(5020, help="TCP port (first port with --port-per-meter)"),
           framer: str = typer.Option("socket", help="socket (Modbus TCP) or rtu (RTU frames over TCP, like a DTU)"),
           port_per_meter: bool = typer.Option(False, help="one port per meter instead of unit ids 1..count on one port"),
           seed: int = typer.Option(0, help="seed of the load model"),
           for_s: float = typer.Option(None, "--for", help="stop after this many seconds")) -> None:
    """Serve COUNT meters of PROFILE until Ctrl-C."""
    where = f"ports {port}..{port + count - 1}" if port_per_meter else f"port {port}, unit ids 1..{count}"
    typer.echo(f"serving {count} x {profile} ({framer}) on {host} {where}")
    try:
        asyncio.run(serve_meters(profile, count, host, port, framer, port_per_meter, seed, for_s=for_s))
    except KeyboardInterrupt:
        pass
