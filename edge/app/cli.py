"""The ``edge`` command: a thin shell over library functions."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from edge import __version__
from edge.errors import ConfigError, EdgeError
from edge.logs import setup_logging

app = typer.Typer(name="edge", help="sensing-edge: energy meters over Modbus, vehicles over MQTT, indicators over HTTP.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
simulate = typer.Typer(help="Run simulators: Modbus meters and an MQTT vehicle fleet.", no_args_is_help=True)
analytics = typer.Typer(help="Recompute indicators over a range.", no_args_is_help=True)
app.add_typer(simulate, name="simulate")
app.add_typer(analytics, name="analytics")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

SiteOpt = typer.Option(..., "--config", "-c", help="site file (YAML)", exists=False)


def _fail(e: Exception, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {e}", markup=True, highlight=False)
    raise typer.Exit(code)


@app.command()
def version() -> None:
    """Print the version."""
    out.print(__version__)


@app.command()
def check(config: Path = SiteOpt) -> None:
    """Validate a site file and print what would run. Exit 2 with file, object and field on error."""
    from edge.app.site import compile_site
    try:
        compiled = compile_site(config)
    except ConfigError as e:
        _fail(e)
    site = compiled.site
    out.print(f"[bold]{config}[/]: site [cyan]{site.site.name}[/] is valid.")
    t = Table("org", "name", title="orgs")
    for o in site.orgs:
        t.add_row(o.path, o.name)
    out.print(t)
    if site.meters:
        t = Table("meter (behind its parent)", "item", "profile", "carrier", "transport", "unit", "every", "registers",
                  "requests/poll", title="meters")
        for m, depth in _meter_tree(site.meters):
            plan = compiled.modbus_plans.get(m.id)
            name = "  " * depth + ("└ " if depth else "") + m.id
            if m.virtual:
                t.add_row(name, m.item or "", f"= {m.formula}", m.carrier.value, "virtual", "", "", "", "")
                continue
            tr = m.transport
            where = tr.serial_port if tr.kind.value == "rtu" else f"{tr.host}:{tr.port}"
            t.add_row(name, m.item or "", m.profile, m.carrier.value, f"{tr.kind.value} {where}",
                      str(m.unit_id), f"{m.interval_s:g} s", str(plan.register_count) if plan else "?",
                      str(plan.request_count) if plan else "?")
        out.print(t)
    if compiled.buses:
        out.print("RS-485 bus budgets (wire time of one cycle, every meter once; docs/modbus.md):")
        for b in compiled.buses:
            colour = {"ok": "green", "warn": "yellow", "refuse": "red"}[b.verdict]
            out.print(f"  {b.key}: {b.baud} baud, {b.bits} bits/char, {len(b.meters)} meters, {b.requests} requests/cycle, "
                      f"{b.cycle_s:.2f} s per cycle, shortest interval {b.shortest_interval_s:g} s "
                      f"({100 * b.load:.0f} %): [{colour}]{b.verdict}[/]", markup=True, highlight=False)
        for b in compiled.buses:
            if b.verdict != "ok":
                err.print(f"[yellow]warning:[/] bus {b.key}: {b.reason}", markup=True, highlight=False)
    if site.vehicles:
        t = Table("vehicle", "plate", "org", "home", "terminal", title="vehicles")
        for v in site.vehicles:
            t.add_row(v.id, v.plate, v.org, v.home or "", v.terminal or "")
        out.print(t)
    mq = site.mqtt
    out.print(f"mqtt: {mq.broker} as {mq.client_id!r}, QoS {mq.qos}, topics: "
              + ", ".join(f"{tp.pattern} ({tp.format.value})" for tp in mq.topics)
              + (f", shared group {mq.shared_group}" if mq.shared_group else ""))
    if site.jt808 is not None:
        j = site.jt808
        out.print(f"jt808: terminals connect to {j.listen} (registration {j.registration.value}, "
                  f"{sum(1 for v in site.vehicles if v.terminal)} listed, heartbeat {j.heartbeat_s:g} s)")
    st = site.store
    out.print(f"store: {st.kind.value} " + (st.path if st.kind.value == "embedded" else st.url or ""))
    out.print(f"outbox: {site.outbox.path} (max {site.outbox.max_bytes / 2**20:.0f} MiB)")
    out.print(f"api: http://{site.api.host}:{site.api.port} (auth {'on' if site.api.auth else 'off'})")


def _meter_tree(meters) -> list:
    """Meters in tree order (each parent followed by what sits behind it) with their depth."""
    ids = {m.id for m in meters}
    kids: dict[str | None, list] = {}
    for m in meters:
        kids.setdefault(m.parent if m.parent in ids else None, []).append(m)
    out: list = []

    def walk(parent: str | None, depth: int) -> None:
        for m in kids.get(parent, []):
            out.append((m, depth))
            if len(out) <= len(meters):
                walk(m.id, depth + 1)

    walk(None, 0)
    return out


@app.command()
def run(config: Path = SiteOpt, log_level: str = typer.Option("info", help="debug|info|warning|error"),
        for_s: Optional[float] = typer.Option(None, "--for", help="stop after this many seconds")) -> None:
    """Run the edge service for a site until Ctrl-C or SIGTERM (the outbox is flushed on the way out)."""
    from edge.app.service import EdgeService
    from edge.app.site import compile_site
    setup_logging(log_level)
    if os.environ.get("EDGE_TRACEMALLOC"):
        from edge.memory import trace_on_signal
        trace_on_signal(os.environ["EDGE_TRACEMALLOC"])
    try:
        compiled = compile_site(config)
        asyncio.run(EdgeService(compiled.site, site_file=Path(config)).run_until_stopped(for_s))
    except EdgeError as e:
        _fail(e)


class RichProgress:
    """``edge.app.backfill.Progress`` as a rich progress bar on stderr, one line per stage."""

    LABELS = {"weather": "weather (hourly °C)", "meters": "meter readings", "vehicles": "vehicle positions",
              "indicators": "indicators", "storing": "storing indicators"}

    def __init__(self, console: Console) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
        self.bar = Progress(TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=console, transient=False)
        self.tasks: dict[str, int] = {}

    def __enter__(self) -> "RichProgress":
        self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.stop()

    def stage(self, name: str, total: float) -> None:
        for tid in self.tasks.values():  # a new stage: the previous ones are done
            t = self.bar.tasks[tid] if tid < len(self.bar.tasks) else None
            if t is not None and t.total is not None:
                self.bar.update(tid, completed=t.total)
        self.tasks[name] = self.bar.add_task(self.LABELS.get(name, name), total=total)

    def advance(self, name: str, n: float = 1) -> None:
        tid = self.tasks.get(name)
        if tid is not None:
            self.bar.advance(tid, n)


@app.command()
def demo(for_s: Optional[float] = typer.Option(None, "--for", help="run this many seconds, print a JSON summary, exit"),
         port: int = typer.Option(8000, help="API port on 127.0.0.1 (0: any free port)"),
         data_dir: Path = typer.Option(Path("var/demo"), help="where the demo keeps its outbox and store (wiped at start)"),
         days: int = typer.Option(400, "--days", min=0, max=3650,
                                  help="days of history to start from (simulated, then the indicators over them); 0: none"),
         log_level: str = typer.Option("warning", help="debug|info|warning|error")) -> None:
    """The whole system on embedded defaults: broker, simulated meters and vehicles, store, API and dashboard,
    on a district with a year of history."""
    from edge.app.demo import run_demo
    setup_logging(log_level)
    try:
        with RichProgress(err) as progress:
            summary = asyncio.run(run_demo(duration_s=for_s, api_port=port, data_dir=data_dir, days=days,
                                           progress=progress if days else None,
                                           announce=lambda s: err.print(s, highlight=False)))
    except EdgeError as e:
        _fail(e)
    out.print_json(json.dumps(summary, ensure_ascii=False))
    if summary.get("errors"):
        raise typer.Exit(1)


@app.command()
def backfill(config: Path = SiteOpt,
             days: int = typer.Option(400, "--days", min=1, max=3650, help="days of history before today"),
             log_level: str = typer.Option("warning", help="debug|info|warning|error")) -> None:
    """Write a simulated history into a site's store (its meters' counters from the load model, its
    vehicles' trips on the working calendar) and compute every indicator over it: a test bench or a demo
    that starts with a year of data. Run it before `edge run`, not beside it (they share the outbox)."""
    from edge.app.backfill import backfill as run_backfill, site_models
    from edge.app.service import EdgeService
    from edge.app.site import compile_site
    setup_logging(log_level)

    async def go() -> dict:
        site = compile_site(config).site
        meters, vehicles, skipped = site_models(site)
        service = EdgeService(site, site_file=None, with_api=False)
        try:
            with RichProgress(err) as progress:
                rep = await run_backfill(service, meters, vehicles, days, progress=progress)
                progress.stage("storing", 1)
                await service.flush(timeout_s=600.0)
                progress.advance("storing")
            return {**rep.summary(), "meters_left_out": skipped}
        finally:
            await service.stop()

    try:
        summary = asyncio.run(go())
    except (EdgeError, ValueError) as e:
        _fail(e)
    out.print_json(json.dumps(summary, ensure_ascii=False))


def _mount() -> None:
    """Sub-commands that live beside the code they drive."""
    from collector.modbus.cli import app as profiles_app
    from edge.outbox_cli import app as outbox_app
    from simulators.cli import meters_app
    from simulators.vehicles_cli import app as vehicles_app
    app.add_typer(profiles_app, name="profiles", help="List and show device profiles (device_profiles/*.yaml).")
    app.add_typer(outbox_app, name="outbox", help="Inspect the durable outbox: status, dead letters, replay, purge.")
    simulate.add_typer(meters_app, name="meters")
    simulate.add_typer(vehicles_app, name="vehicles")
    from api.keys_cli import app as keys_app
    app.add_typer(keys_app, name="keys", help="API keys: create, list, revoke (stored hashed with argon2).")
    from analytics.energy.cli import baseline_cmd, energy_cmd, use_counter_defaults, use_query_factory
    from edge.app.site import counter_defaults_for
    from edge.delivery import build_query
    use_query_factory(lambda site: build_query(site.store))
    use_counter_defaults(counter_defaults_for)
    analytics.command("energy")(energy_cmd)
    analytics.command("baseline")(baseline_cmd)
    from simulators.testbench_cli import app as testbench_app
    app.add_typer(testbench_app, name="testbench", help="Test bench: scenarios with chaos, accounting, scale-out and soak.")
    from analytics.fleet.cli import fleet as fleet_cmd, track as track_cmd
    analytics.command("fleet")(fleet_cmd)
    analytics.command("track")(track_cmd)


_mount()

if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
