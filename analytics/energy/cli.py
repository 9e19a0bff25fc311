"""``edge analytics energy --from YYYY-MM-DD --to YYYY-MM-DD``: recompute energy indicators.

A typer sub-app for the lead to mount under ``edge analytics``. The verb's logic is
``run_energy`` (a library function taking a ``CounterSource``); the CLI only parses options.
The store is reached through the query layer, which analytics does not import: the lead sets
``QUERY_FACTORY`` (site → ``edge.query.Query``, e.g. ``StoreQuery(EmbeddedStore(path))`` or
``InfluxQLQuery(url, database)``) when mounting the app, with ``use_query_factory``. Readings can also come from a CSV
(``--readings``: columns ``meter,time_ns,value``, the counter values of each meter's carrier
field).
"""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np
import typer

from analytics.energy.factors import CARRIER_FIELD, FactorSet
from analytics.workcal import WorkCalendar, provisional_notice
from edge.errors import ConfigError, EdgeError
from edge.point import to_lines

# analytics.energy.jobs (and through it scipy, for baselines) is imported when a verb runs, not when the
# CLI starts: it would cost `edge --help` most of a second.
if TYPE_CHECKING:
    from analytics.energy.jobs import ArraySource, CounterSource

app = typer.Typer(help="Energy analytics: consumption, kgce, CO2, peaks, baselines.", no_args_is_help=True)

# The lead sets this to a function (site) -> edge.query.Query (an object with ``async raw`` and
# ``async aclose``); analytics never imports the query layer itself.
QUERY_FACTORY: Callable[[object], object] | None = None


# And this to a function (site) -> {meter id: (rollover, rated kW)} from the device profiles
# (the composition root's ``edge.app.site.counter_defaults_for``), so the CLI applies the same
# counter rules as the service.
COUNTER_DEFAULTS: Callable[[object], dict] | None = None


def use_counter_defaults(fn: Callable[[object], dict] | None) -> None:
    global COUNTER_DEFAULTS
    COUNTER_DEFAULTS = fn


def _meters(site):
    from analytics.energy.jobs import meters_from_site
    return meters_from_site(site, COUNTER_DEFAULTS(site) if COUNTER_DEFAULTS is not None else None)


def use_query_factory(factory: Callable[[object], object] | None) -> None:
    """How the mounting code hands the CLI its query layer: ``factory(site) -> Query``."""
    global QUERY_FACTORY
    QUERY_FACTORY = factory


def read_readings_csv(path: str | Path, site) -> ArraySource:
    """CSV ``meter,time_ns,value`` → ArraySource keyed by each meter's carrier counter field."""
    from analytics.energy.jobs import ArraySource
    field_of = {m.id: CARRIER_FIELD[m.carrier.value][0] for m in site.meters}
    rows: dict[str, list[tuple[int, float]]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for i, row in enumerate(csv.DictReader(f), start=2):
            try:
                rows.setdefault(row["meter"], []).append((int(row["time_ns"]), float(row["value"])))
            except (KeyError, ValueError) as e:
                raise ConfigError(f"bad row: {e}", file=str(path), line=i) from None
    src = ArraySource()
    for mid, rs in rows.items():
        if mid not in field_of:
            continue
        rs.sort()
        t = np.array([r[0] for r in rs], dtype=np.int64)
        v = np.array([r[1] for r in rs])
        keep = np.r_[True, np.diff(t) > 0]
        src.data[(mid, field_of[mid])] = (t[keep], v[keep])
    return src


def run_energy(source: CounterSource, site, first: dt.date, last: dt.date) -> list[str]:
    """Compute the range and return line-protocol lines of the indicator Points."""
    from analytics.energy.jobs import buildings_from_site, compute_energy_range
    a = site.analytics
    report = compute_energy_range(source, _meters(site), first, last, WorkCalendar.from_config(a),
                                  FactorSet().with_grid_factor(a.grid_kgco2_per_kwh),
                                  buildings=buildings_from_site(site))
    return to_lines(report.points).splitlines() if report.points else []


async def run_energy_query(query, site, first: dt.date, last: dt.date) -> list[str]:
    """The same through the query layer (``edge.query.Query``)."""
    from analytics.energy.jobs import buildings_from_site, compute_energy_from_query
    a = site.analytics
    report = await compute_energy_from_query(query, _meters(site), first, last,
                                             WorkCalendar.from_config(a),
                                             FactorSet().with_grid_factor(a.grid_kgco2_per_kwh),
                                             buildings=buildings_from_site(site))
    return to_lines(report.points).splitlines() if report.points else []


def _run_with_query(site, first: dt.date, last: dt.date) -> list[str]:
    import asyncio

    async def go() -> list[str]:
        query = QUERY_FACTORY(site)
        try:
            return await run_energy_query(query, site, first, last)
        finally:
            await query.aclose()

    return asyncio.run(go())


@app.command("energy")
def energy_cmd(
    from_: str = typer.Option(..., "--from", help="first local day, YYYY-MM-DD (Asia/Shanghai)"),
    to: str = typer.Option(..., "--to", help="last local day, inclusive"),
    site_file: Path = typer.Option(Path("site.yaml"), "--site", help="site file"),
    readings: Optional[Path] = typer.Option(None, "--readings", help="CSV meter,time_ns,value instead of the store"),
    out: Optional[Path] = typer.Option(None, "--out", help="write line protocol here instead of stdout"),
) -> None:
    """Recompute energy indicators for a range of days and print them as line protocol."""
    from edge.config import load_site

    try:
        first, last = dt.date.fromisoformat(from_), dt.date.fromisoformat(to)
    except ValueError:
        raise typer.BadParameter("dates are YYYY-MM-DD") from None
    if last < first:
        raise typer.BadParameter("--to is before --from")
    try:
        site = load_site(site_file)
        wc = WorkCalendar.from_config(site.analytics)
        if wc.provisional_years(first, last):
            typer.echo(f"warning: {provisional_notice(wc.provisional_years(first, last), wc.package_years)}", err=True)
        if readings is not None:
            lines = run_energy(read_readings_csv(readings, site), site, first, last)
        elif QUERY_FACTORY is not None:
            lines = _run_with_query(site, first, last)
        else:
            typer.echo("no query layer wired into this CLI: pass --readings FILE.csv", err=True)
            raise typer.Exit(2)
    except EdgeError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    text = "\n".join(lines) + ("\n" if lines else "")
    if out:
        out.write_text(text, encoding="utf-8")
        typer.echo(f"{len(lines)} points -> {out}", err=True)
    else:
        typer.echo(text, nl=False)


@app.command("baseline")
def baseline_cmd(
    baseline: str = typer.Option(..., "--baseline", help="baseline period FIRST:LAST (12 months, local dates)"),
    reporting: str = typer.Option(..., "--reporting", help="reporting period FIRST:LAST"),
    site_file: Path = typer.Option(Path("site.yaml"), "--site", "--config", "-c", help="site file"),
    weather: Optional[Path] = typer.Option(None, "--weather", help="hourly temperature CSV; default analytics.weather_csv"),
    out: Optional[Path] = typer.Option(None, "--out", help="write the Points here (line protocol); default stdout"),
) -> None:
    """Fit CalTRACK daily baselines per meter, report savings (ASHRAE G14 checks) and anomalous days."""
    import asyncio

    from analytics.energy.baseline import parse_temperature_csv
    from analytics.energy.baseline_jobs import baseline_points, describe, parse_range, summary
    from analytics.energy.jobs import compute_baselines, meters_from_site, prefetch_counters
    from analytics.periods import NS_PER_DAY, QUARTER_NS, LocalCalendar
    from edge.config import load_site
    from edge.errors import ConfigError

    try:
        site = load_site(site_file)
        b, r = parse_range(baseline, "--baseline"), parse_range(reporting, "--reporting")
    except (ConfigError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    wpath = weather or (Path(site.analytics.weather_csv) if site.analytics.weather_csv else None)
    if wpath is None:
        typer.echo("error: no weather: pass --weather or set analytics.weather_csv in the site file", err=True)
        raise typer.Exit(2)
    try:
        temp_t, temp_c = parse_temperature_csv(wpath.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        typer.echo(f"error: {wpath}: {e}", err=True)
        raise typer.Exit(2) from None
    meters = meters_from_site(site)
    cal = LocalCalendar()

    async def fetch():
        query = QUERY_FACTORY(site)
        try:
            start = cal.midnight_ns(min(b[0], r[0])) - QUARTER_NS
            end = cal.midnight_ns(max(b[1], r[1])) + NS_PER_DAY + QUARTER_NS + 1
            return await prefetch_counters(query, meters, start, end)
        finally:
            await query.aclose()

    src = asyncio.run(fetch())
    report = compute_baselines(src, meters, b, r, temp_t, temp_c, cal)
    for mid, model in report.models.items():
        for line in describe(mid, model, report.savings.get(mid)):
            typer.echo(line, err=True)
    typer.echo(summary(report), err=True)
    lines = to_lines(baseline_points(report, meters, cal.midnight_ns(r[0])))
    if out:
        out.write_text(lines + "\n", encoding="utf-8")
    else:
        typer.echo(lines)
