"""``edge outbox``: look into the durable outbox, list, replay and purge dead letters.

    edge outbox status        -c site.yaml            depth, bytes, each consumer's lag, drops, dead letters
    edge outbox dropped       -c site.yaml [--reason thinned|dropped] [--limit 20] [--json]
    edge outbox dead-letters  -c site.yaml [--kind point|payload|invalid] [--limit 20] [--json]
    edge outbox replay        -c site.yaml [--id 12 --id 13 | --all]
    edge outbox purge         -c site.yaml (--dead-letters [--kind K] [--id N] | --pending) --yes

``--outbox PATH`` names the SQLite file directly instead of a site file. The service may be
running meanwhile: SQLite's WAL lets both work on the file. The logic lives in ``edge.outbox``;
these verbs only print.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from edge.errors import ConfigError, EdgeError
from edge.outbox import Outbox

app = typer.Typer(help="The durable outbox: status, dead letters, replay, purge.", no_args_is_help=True)
out = Console()
err = Console(stderr=True)

ConfigOpt = typer.Option(None, "--config", "-c", help="site file (YAML); its outbox.path is used")
PathOpt = typer.Option(None, "--outbox", help="the outbox SQLite file (instead of --config)")


def resolve_path(config: Optional[Path], outbox: Optional[Path]) -> Path:
    """The outbox file from ``--outbox`` or from the site file's ``outbox.path``."""
    if outbox is not None:
        return outbox
    if config is None:
        raise ConfigError("give --config SITE.yaml or --outbox FILE")
    from edge.config import load_site
    return Path(load_site(config).outbox.path)


def _open(config: Optional[Path], outbox: Optional[Path]) -> Outbox:
    try:
        path = resolve_path(config, outbox)
        if not path.exists():
            raise ConfigError(f"no outbox at {path}")
        return Outbox(path)
    except EdgeError as e:
        err.print(f"[bold red]error:[/] {e}", highlight=False)
        raise typer.Exit(2) from None


def _when(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, timezone.utc).isoformat(timespec="seconds")


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


@app.command()
def status(config: Optional[Path] = ConfigOpt, outbox: Optional[Path] = PathOpt,
           as_json: bool = typer.Option(False, "--json", help="machine-readable")) -> None:
    """Points in the log, bytes used of the bound, each consumer's lag, drops and dead letters."""
    with _open(config, outbox) as ob:
        st = ob.status()
    if as_json:
        out.print_json(json.dumps(asdict(st)))
        return
    t = Table(show_header=False, title=f"outbox {st.path}")
    t.add_row("points in the log", f"{st.depth_points:,}")
    t.add_row("stored text", f"{_mb(st.bytes)} of {_mb(st.max_bytes)} ({100 * st.bytes / st.max_bytes:.1f} %)"
              + (" - full: holding back sources that can wait" if st.holding else ""))
    t.add_row("file size", _mb(st.file_bytes))
    t.add_row("oldest in the log", "-" if st.oldest_age_s is None else f"{st.oldest_age_s:,.1f} s ago")
    t.add_row("committed (all time)", f"{st.counters.get('committed', 0):,}")
    t.add_row("held back, outbox full (all time)", f"{st.counters.get('held_back', 0):,}")
    t.add_row("thinned, outbox full (all time)", f"{st.counters.get('thinned', 0):,}")
    t.add_row("dropped, outbox full (all time)", f"{st.counters.get('dropped', 0):,}")
    t.add_row("refused by a store (all time)", f"{st.counters.get('dead_lettered_points', 0):,}")
    for kind in ("point", "invalid", "payload"):
        t.add_row(f"dead letters now: {kind}", f"{st.dead_letters.get(kind, 0):,}")
    out.print(t)
    c = Table("consumer", "takes", "cursor (row id)", "lag (points)", "oldest not taken", title="consumers")
    for cs in st.consumers:
        c.add_row(cs.name, "all" if cs.measurements is None else ", ".join(cs.measurements), f"{cs.cursor:,}",
                  f"{cs.lag_points:,}", "-" if cs.oldest_age_s is None else f"{cs.oldest_age_s:,.1f} s ago")
    out.print(c)


@app.command()
def dropped(config: Optional[Path] = ConfigOpt, outbox: Optional[Path] = PathOpt,
            reason: Optional[str] = typer.Option(None, help="thinned | dropped"),
            limit: int = typer.Option(20, min=1), as_json: bool = typer.Option(False, "--json")) -> None:
    """The newest points the full outbox thinned or dropped (the record keeps the most recent ones)."""
    with _open(config, outbox) as ob:
        rows = ob.dropped_points(limit, reason=reason, newest=True)
    if as_json:
        out.print_json(json.dumps([{"id": r.id, "at": _when(r.at_ns), "reason": r.reason, "missed": list(r.missed),
                                    "line": r.line} for r in rows]))
        return
    t = Table("id", "at (UTC)", "reason", "never reached", "point", title="thinned and dropped points (newest last)")
    for r in rows:
        t.add_row(str(r.id), _when(r.at_ns), r.reason, ", ".join(r.missed), r.line[:160])
    out.print(t)



@app.command("dead-letters")
def dead_letters(config: Optional[Path] = ConfigOpt, outbox: Optional[Path] = PathOpt,
                 kind: Optional[str] = typer.Option(None, help="point | invalid | payload"),
                 limit: int = typer.Option(20, min=1), as_json: bool = typer.Option(False, "--json")) -> None:
    """The newest dead letters with their reason (the store's own message for refused points)."""
    with _open(config, outbox) as ob:
        rows = ob.dead_letters(limit, kind=kind)
    if as_json:
        out.print_json(json.dumps([{"id": r.id, "at": _when(r.at_ns), "kind": r.kind, "source": r.source,
                                    "topic": r.topic, "reason": r.reason, "payload": r.text()} for r in rows]))
        return
    t = Table("id", "at (UTC)", "kind", "source", "reason", "payload", title="dead letters (newest first)")
    for r in rows:
        t.add_row(str(r.id), _when(r.at_ns), r.kind, r.source + (f" {r.topic}" if r.topic else ""),
                  r.reason[:160], r.text()[:120])
    out.print(t)


@app.command()
def replay(config: Optional[Path] = ConfigOpt, outbox: Optional[Path] = PathOpt,
           ids: Optional[List[int]] = typer.Option(None, "--id", help="dead letter id (repeatable)"),
           all_: bool = typer.Option(False, "--all", help="every refused point")) -> None:
    """Put refused points back in the outbox, to be delivered again (after fixing their cause)."""
    if not ids and not all_:
        err.print("[bold red]error:[/] give --id N (repeatable) or --all")
        raise typer.Exit(2)
    with _open(config, outbox) as ob:
        n = ob.replay_dead_letters(None if all_ else ids)
    out.print(f"replayed {n} point(s) into the outbox")


@app.command()
def purge(config: Optional[Path] = ConfigOpt, outbox: Optional[Path] = PathOpt,
          dead: bool = typer.Option(False, "--dead-letters", help="delete dead letters"),
          pending: bool = typer.Option(False, "--pending", help="delete every point waiting for delivery"),
          kind: Optional[str] = typer.Option(None, help="with --dead-letters: only this kind"),
          ids: Optional[List[int]] = typer.Option(None, "--id", help="with --dead-letters: only these ids"),
          yes: bool = typer.Option(False, "--yes", help="really delete")) -> None:
    """Delete dead letters or waiting points. Deleted points are gone for good."""
    if dead == pending:
        err.print("[bold red]error:[/] give exactly one of --dead-letters or --pending")
        raise typer.Exit(2)
    if not yes:
        err.print("[bold red]error:[/] this deletes data; add --yes")
        raise typer.Exit(2)
    with _open(config, outbox) as ob:
        if dead:
            n = ob.purge_dead_letters(ids or None, kind)
            out.print(f"deleted {n} dead letter(s)")
        else:
            n = ob.purge_outbox()
            out.print(f"deleted {n} waiting point(s) (counted as dropped)")
