"""``edge keys create|list|revoke``: API keys of a site (a thin shell over ``api.keys.KeyStore``).

The keys file is ``api_keys.sqlite`` beside the site's outbox file (``api.keys.keys_path_for``),
or ``--keys PATH``. ``create`` prints the token once; only its argon2 hash is stored.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import typer

from api.keys import KeyError_, KeyStore, keys_path_for

app = typer.Typer(help="API keys: each carries an org path and a role (viewer, operator, admin).",
                  no_args_is_help=True, add_completion=False)

ConfigOpt = typer.Option(None, "--config", "-c", help="site file (YAML); the keys live beside its outbox")
KeysOpt = typer.Option(None, "--keys", help="keys file (overrides --config)")


def open_store(config: Optional[Path], keys: Optional[Path]) -> KeyStore:
    if keys is not None:
        return KeyStore(keys)
    if config is None:
        raise typer.BadParameter("give --config SITE.yaml or --keys FILE")
    from edge.config import load_site
    return KeyStore(keys_path_for(load_site(config)))


def _t(ns: int | None) -> str:
    return "" if ns is None else datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).isoformat(timespec="seconds")


@app.command()
def create(org: str = typer.Option(..., help="org path, e.g. 330000/330100/330106"),
           role: str = typer.Option("viewer", help="viewer | operator | admin | metrics (reads /metrics only)"),
           name: str = typer.Option("", help="a note: who or what uses the key"),
           config: Optional[Path] = ConfigOpt, keys: Optional[Path] = KeysOpt) -> None:
    """Make a key and print its token (shown once)."""
    ks = open_store(config, keys)
    try:
        k, token = ks.create(org, role, name)
    except KeyError_ as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    finally:
        ks.close()
    typer.echo(f"id {k.id}  org {k.org}  role {k.role.value}")
    typer.echo(token)


@app.command("list")
def list_(config: Optional[Path] = ConfigOpt, keys: Optional[Path] = KeysOpt,
          org: Optional[str] = typer.Option(None, help="only keys at or under this org")) -> None:
    """List keys (never their secrets)."""
    ks = open_store(config, keys)
    try:
        rows = ks.list(within=org)
    finally:
        ks.close()
    for k in rows:
        state = f"revoked {_t(k.revoked_ns)}" if k.revoked_ns else "active"
        typer.echo(f"{k.id}\t{k.role.value}\t{k.org}\t{state}\tcreated {_t(k.created_ns)}\t{k.name}")


@app.command()
def revoke(key_id: str = typer.Argument(..., help="the key's id (the part after sek_)"),
           config: Optional[Path] = ConfigOpt, keys: Optional[Path] = KeysOpt) -> None:
    """Revoke a key; a running API stops accepting it within seconds."""
    ks = open_store(config, keys)
    try:
        k = ks.revoke(key_id)
    except KeyError_ as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    finally:
        ks.close()
    typer.echo(f"revoked {k.id} ({k.org}, {k.role.value})")
