"""``edge analytics fleet --from ... --to ...``: recompute fleet indicators and trips.

A thin shell over ``analytics.fleet.jobs``. Positions come from the site's store through the query
layer (``--site``), or from a line-protocol file (``--positions``); the resulting Points are
written as line protocol (``--out``, default stdout).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
from pathlib import Path
from typing import Optional

import typer

from analytics.fleet.geo import fences_from_config
from analytics.fleet.indicators import VehicleInfo, WeekdayCalendar, WorkingTime, vehicle_infos
from analytics.fleet.jobs import PointsSource, recompute, run_fleet
from analytics.fleet.tracks import NS
from edge.errors import EdgeError
from edge.point import parse_lines, to_lines

app = typer.Typer(help="Fleet analytics: trips, mileage, utilisation, 出车率.", no_args_is_help=True)

SHANGHAI = dt.timezone(dt.timedelta(hours=8))


def parse_local(s: str) -> int:
    """ISO date or datetime; naive values are Asia/Shanghai local time. Returns ns UTC."""
    try:
        d = dt.datetime.fromisoformat(s)
    except ValueError:
        raise typer.BadParameter(f"{s!r} is not an ISO date or datetime") from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=SHANGHAI)
    return int(d.timestamp()) * NS


def working_time_for(site) -> WorkingTime:
    """The site's working time. Binds analytics.workcal when it is importable, else Mon-Fri."""
    a = site.analytics if site is not None else None
    try:
        from analytics.workcal import WorkCalendar
        if a is not None:
            return WorkingTime.from_workcal(WorkCalendar.from_config(a))
        return WorkingTime.from_workcal(WorkCalendar())
    except ImportError:  # pragma: no cover - workcal ships with analytics
        return WorkingTime(WeekdayCalendar())


async def _from_store(site, infos, start_ns: int, end_ns: int, now_ns: int, period: str):
    from edge.delivery import build_query
    query = build_query(site.store)
    try:
        return await run_fleet(query, infos, start_ns, end_ns, working_time_for(site), now_ns, period)
    finally:
        await query.aclose()


def fleet(
    from_: str = typer.Option(..., "--from", help="period start, local date/time (Asia/Shanghai)"),
    to: str = typer.Option(..., "--to", help="period end (exclusive)"),
    positions: Optional[Path] = typer.Option(None, "--positions",
                                             help="line-protocol file of `position` points instead of the store"),
    site_file: Optional[Path] = typer.Option(None, "--site", "--config", "-c",
                                             help="site YAML (vehicles, orgs, geofences, store)"),
    out: Optional[Path] = typer.Option(None, "--out", help="write Points here (line protocol); default stdout"),
    period: str = typer.Option("day", help="compute per day, week (Monday-Sunday), month, or custom (the whole range)"),
) -> None:
    """Recompute fleet indicators and trips for [--from, --to)."""
    start_ns, end_ns = parse_local(from_), parse_local(to)
    if end_ns <= start_ns:
        raise typer.BadParameter("--to must be after --from")
    if period not in ("day", "week", "month", "custom"):
        raise typer.BadParameter(f"--period {period!r}: day, week, month or custom")
    if positions is None and site_file is None:
        raise typer.BadParameter("give --site (read the store) or --positions FILE")
    now_ns = int(dt.datetime.now(dt.timezone.utc).timestamp() * NS)
    site = None
    try:
        if site_file is not None:
            from edge.config import load_site
            site = load_site(site_file)
        if positions is not None:
            source = PointsSource(parse_lines(positions.read_text(encoding="utf-8")))
            if site is not None:
                infos = vehicle_infos(site.vehicles, fences_from_config(site.geofences))
            else:
                infos = [VehicleInfo(v, source.org_of(v)) for v in source.vehicles]
            points_out, report = recompute(source, infos, start_ns, end_ns, working_time_for(site), now_ns, period)
        else:
            infos = vehicle_infos(site.vehicles, fences_from_config(site.geofences))
            points_out, report = asyncio.run(_from_store(site, infos, start_ns, end_ns, now_ns, period))
    except EdgeError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    text = to_lines(points_out) + "\n"
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text, encoding="utf-8")
    wt = working_time_for(site)
    if wt.provisional_between(start_ns, end_ns):
        from analytics.workcal import provisional_notice
        years = [y for y in range(wt.local_day(start_ns).year, wt.local_day(end_ns - 1).year + 1)
                 if wt.is_provisional(dt.date(y, 1, 1))]
        typer.echo(f"warning: {provisional_notice(years, getattr(wt.calendar, 'package_years', None))}", err=True)
    n_trips = sum(1 for p in points_out if p.measurement == "trip")
    typer.echo(f"vehicles={len(infos)} fixes={report.fixes_read} trips={n_trips} "
               f"points={len(points_out)} dropped={report.dropped}", err=True)


@app.callback()
def _group() -> None:
    """Fleet analytics verbs."""


app.command("fleet")(fleet)
