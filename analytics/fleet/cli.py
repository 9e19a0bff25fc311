"""``edge analytics fleet --from ... --to ...``: recompute fleet indicators and trips;
``edge analytics track FILE``: check an exported track (GPX, CSV, NMEA).

Thin shells over ``analytics.fleet.jobs`` and ``analytics.fleet.trackcheck``. For ``fleet``,
positions come from the site's store through the query layer (``--site``), or from a line-protocol
file (``--positions``); the resulting Points are written as line protocol (``--out``, default
stdout). ``track`` prints trips, stops, driven and unobserved distance and the cleaning report as
tables, or ``--json``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Optional

import typer

from analytics.fleet.geo import fences_from_config
from analytics.fleet.indicators import VehicleInfo, WeekdayCalendar, WorkingTime, vehicle_infos
from analytics.fleet.jobs import JobParams, PointsSource, params_from_config, recompute, run_fleet
from analytics.fleet.trackcheck import as_dict, check_track
from analytics.fleet.trackfiles import FORMATS, read_track
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


def track(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="GPX, CSV or NMEA file of fixes"),
    fmt: str = typer.Option("auto", "--format", help="gpx, csv, nmea or auto (by extension, then content)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of tables"),
    vehicle: Optional[str] = typer.Option(None, help="name of the track (default: the file name; a CSV vehicle column wins)"),
    site_file: Optional[Path] = typer.Option(None, "--site", "--config", "-c",
                                             help="site YAML: take the fleet section's thresholds (defaults otherwise)"),
) -> None:
    """Check an exported track: the service's cleaning and segmentation, trips, stops, driven and
    unobserved distance, and what the cleaning dropped or moved."""
    if fmt not in ("auto", *FORMATS):
        raise typer.BadParameter(f"--format {fmt!r}: auto, {', '.join(FORMATS)}")
    try:
        params = JobParams()
        if site_file is not None:
            from edge.config import load_site
            params, _ = params_from_config(load_site(site_file).fleet)
        tracks, rep = read_track(file, fmt, vehicle)
        now_ns = max(int(dt.datetime.now(dt.timezone.utc).timestamp() * NS), int(tracks.t_ns.max()) + 1)
        checks = check_track(tracks, now_ns, params.clean, params.trips, params.fleet, SHANGHAI)
    except EdgeError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        doc = {"file": str(file), "format": rep.format, "rows": rep.rows, "skipped": rep.skipped, **as_dict(checks)}
        sys.stdout.write(json.dumps(doc, ensure_ascii=False, indent=2) + "\n")
        return
    from rich.console import Console
    from rich.table import Table
    con = Console()
    con.print(f"[bold]{file}[/bold]: {rep.format}, {rep.rows} rows" + (f", skipped {rep.skipped}" if rep.skipped else ""))
    for v in checks:
        odo = f", odometer {v.odometer_km} km ({v.odometer_note}{', DIFFERS from GPS' if v.odometer_mismatch else ''})" \
            if v.odometer_km is not None else ""
        con.print(f"\n[bold]{v.vehicle}[/bold]: driven {v.driven_km:.3f} km, unobserved {v.unobserved_km:.3f} km "
                  f"(straight lines across signal gaps){odo}")
        con.print(f"cleaning: {v.fixes} fixes, kept {v.kept}, dropped {v.dropped or 'none'}, snapped {v.snapped}")
        t = Table("start", "end", "km", "min", "max km/h", "mean km/h", "idle min", "by", "odometer km", title="trips")
        for r in v.trips:
            odo_s = "" if r.odometer_km is None else f"{r.odometer_km:.1f}" + (" ≠" if r.odometer_mismatch else "")
            t.add_row(r.start, r.end, f"{r.distance_km:.3f}", f"{r.duration_min:.1f}", f"{r.max_speed_kmh:.1f}",
                      f"{r.mean_speed_kmh:.1f}", f"{r.idle_min:.1f}", r.method, odo_s)
        con.print(t)
        s = Table("start", "end", "min", "lat", "lon", title="stops")
        for r in v.stops:
            s.add_row(r.start, r.end, f"{r.duration_min:.1f}", f"{r.lat:.6f}", f"{r.lon:.6f}")
        con.print(s)


@app.callback()
def _group() -> None:
    """Fleet analytics verbs."""


app.command("fleet")(fleet)
app.command("track")(track)
