"""``edge profiles list|show``: the device profiles the collector knows (shipped and a site's own)."""

from __future__ import annotations

from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from collector.modbus.planner import plan
from collector.modbus.profiles import describe, find_profile, load_profiles
from edge.errors import ConfigError

app = typer.Typer(help="List and show device profiles (device_profiles/*.yaml).", no_args_is_help=True)
out = Console()
DirOpt = typer.Option(None, "--dir", help="a site's extra profiles directory (overrides shipped ones of the same id)")


def profile_rows(extra_dir: str | None = None) -> list[dict]:
    rows = []
    for p in sorted(load_profiles(extra_dir).values(), key=lambda p: p.id):
        reqs = plan(p.registers, p.max_gap, p.max_registers)
        rows.append({"id": p.id, "vendor": p.vendor, "model": p.model, "carrier": p.carrier,
                     "registers": len(p.registers), "requests": len(reqs), "file": p.file})
    return rows


@app.command("list")
def list_(dir: Optional[str] = DirOpt) -> None:
    """Every profile: id, vendor, model, carrier, registers and requests per full poll."""
    try:
        rows = profile_rows(dir)
    except ConfigError as e:
        out.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None
    t = Table("id", "vendor", "model", "carrier", "registers", "requests/poll")
    for r in rows:
        t.add_row(r["id"], r["vendor"], r["model"], r["carrier"], str(r["registers"]), str(r["requests"]))
    out.print(t)


@app.command()
def show(profile: str = typer.Argument(..., help="profile id (chint-dtsu666) or model (DTSU666)"),
         dir: Optional[str] = DirOpt) -> None:
    """One profile's registers (wire address, vendor numbering, type, order, scale, unit, ratio, range) and its read plan."""
    try:
        p = find_profile(load_profiles(dir), profile)
    except ConfigError as e:
        out.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None
    except KeyError:
        out.print(f"[red]error:[/] unknown profile {profile!r}")
        raise typer.Exit(2) from None
    out.print(f"[bold]{p.vendor} {p.model}[/] ({p.id}, {p.carrier}) - {p.file}")
    out.print(f"numbering: {p.numbering}; serial: {dict(p.serial)}; max registers/request {p.max_registers}, max gap {p.max_gap}")
    t = Table("name", "wire", "hex", "vendor", "fn", "type", "order", "scale", "offset", "unit", "ratio", "min", "max")
    for r in describe(p):
        t.add_row(*(str(r[k]) if r[k] is not None else "" for k in
                    ("name", "address", "hex", "vendor", "function", "type", "order", "scale", "offset", "unit", "ratio", "min", "max")))
    out.print(t)
    reqs = plan(p.registers, p.max_gap, p.max_registers)
    out.print(f"read plan: {len(reqs)} requests per poll (naive: {len(p.registers)})")
    for q in reqs:
        out.print(f"  {q.function} 0x{q.address:04X} x{q.count}: {', '.join(r.name for r in q.registers)}")
