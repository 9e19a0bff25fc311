"""``edge testbench``: run a scenario (simulators, the edge as a process, the real store), inject chaos,
reconcile what was sent against what was stored, and report. Mounted by ``edge.app.cli`` as ``testbench``."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

app = typer.Typer(help="Test bench: scenarios with chaos, accounting, scale-out and soak.", no_args_is_help=True)
out = Console()
err = Console(stderr=True)


class StoreChoice(str, Enum):
    influxdb = "influxdb"
    embedded = "embedded"


def _announce(s: str) -> None:
    err.print(s, highlight=False, markup=False)


@app.command("run")
def run_cmd(scenario: str = typer.Argument(..., help="compound | county | stress, or a path to a scenario YAML"),
            duration: Optional[float] = typer.Option(None, "--duration", help="seconds (the chaos schedule is compressed to fit)"),
            chaos: bool = typer.Option(True, "--chaos/--no-chaos", help="run the scenario's fault schedule"),
            store: StoreChoice = typer.Option(StoreChoice.influxdb, "--store", help="influxdb (a real influxd) or embedded"),
            workdir: Path = typer.Option(Path("var/testbench"), help="where the run keeps its processes' files"),
            plot: Optional[Path] = typer.Option(None, help="PNG of throughput, memory and outbox depth (default: in workdir)"),
            as_json: bool = typer.Option(False, "--json", help="print the whole report as JSON")) -> None:
    """Run SCENARIO and print the reconciliation. Exit 1 when something was lost without explanation."""
    from edge.errors import ConfigError
    from simulators.testbench.report import markdown
    from simulators.testbench.report import plot as plot_png
    from simulators.testbench.runner import run_scenario
    from simulators.testbench.scenario import load_scenario
    try:
        scn = load_scenario(scenario)
    except ConfigError as e:
        err.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(2) from None
    wd = workdir / scn.name
    report = run_scenario(scn, wd, duration_s=duration, chaos=chaos, store=store.value, announce=_announce)
    png = plot_png(report, plot or wd / "plot.png")
    if as_json:
        out.print_json(json.dumps({k: v for k, v in report.items() if k != "samples"}, ensure_ascii=False))
    else:
        out.print(markdown(report), markup=False, highlight=False)
        out.print(f"edge: {report['edge']}; throughput {report['throughput_points_per_s']} points/s stored")
        out.print(f"report {wd / 'report.json'}, plot {png}")
    if report["accounting"]["unexplained"]:
        raise typer.Exit(1)


@app.command("scaleout")
def scaleout_cmd(vehicles: int = typer.Option(500, help="vehicles in the backlog fleet"),
                 ticks: int = typer.Option(60, help="positions per vehicle in the backlog"),
                 workdir: Path = typer.Option(Path("var/testbench/scaleout"))) -> None:
    """Throughput of two edge instances (shared subscription, meters split) against one."""
    from simulators.testbench.scaleout import run_scaleout
    r = run_scaleout(workdir, vehicles=vehicles, ticks=ticks, announce=_announce)
    for k in ("one", "two"):
        x = r[k]
        out.print(f"{x['edges']} edge(s): {x['positions']} positions in {x['seconds']:.2f} s = "
                  f"{x['positions_per_s']:.0f}/s, per edge {x['per_edge']}, meters per edge {x['meters_per_edge']}, "
                  f"{x['accounting']['verdict']}")
    out.print(f"ratio {r['ratio']:.2f} (goal >= 1.7); doubled {r['doubled']}; lost unexplained {r['lost_unexplained']}")


@app.command("soak")
def soak_cmd(duration: float = typer.Option(1800.0, "--duration", help="seconds"),
             warmup: float = typer.Option(300.0, help="seconds of warm-up before growth is measured"),
             workdir: Path = typer.Option(Path("var/testbench/soak"))) -> None:
    """The county scenario for a long time: RSS growth after warm-up (goal < 5 %)."""
    from simulators.testbench.report import plot as plot_png
    from simulators.testbench.soak import run_soak
    r = run_soak(workdir, duration_s=duration, warmup_s=warmup, announce=_announce)
    plot_png(r, workdir / "plot.png")
    out.print(f"memory growth after warm-up: {r['soak']['mem_growth_pct']}; outbox depth max {r['soak']['depth_max']}; "
              f"{r['accounting']['verdict']}")
