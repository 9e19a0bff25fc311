"""Auth codes of registered terminals, kept in a small SQLite file beside the outbox.

A terminal registers once (0x0100), keeps the code the platform answered (0x8100) and
authenticates with it on every connection (0x0102), for years. So the code must survive a
restart of the edge: it is committed (WAL, ``synchronous=FULL``) before the 0x8100 carrying it
is sent. Several edges behind a TCP load balancer each keep their own file; with a shared
``jt808.auth_secret`` the codes are derived from it (``derived_code``), so a terminal that
registered through one edge authenticates through any other. Reads come from memory (loaded at start); writes are rare (a registration, a logout)
and run in a thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from edge.errors import EdgeError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS terminal (
  phone TEXT PRIMARY KEY, auth_code TEXT NOT NULL, issued_ns INTEGER NOT NULL,
  plate TEXT NOT NULL DEFAULT '', model TEXT NOT NULL DEFAULT '', manufacturer TEXT NOT NULL DEFAULT '',
  terminal_id TEXT NOT NULL DEFAULT '')
"""


class RegistryError(EdgeError):
    """The auth-code file could not be read or written."""


@dataclass(frozen=True, slots=True)
class Registered:
    phone: str
    auth_code: str
    issued_ns: int
    plate: str = ""
    model: str = ""
    manufacturer: str = ""
    terminal_id: str = ""


def new_code() -> str:
    """A fresh auth code: 12 upper-case hex characters (terminals keep codes of 16 bytes and more)."""
    return secrets.token_hex(6).upper()


def derived_code(secret: str, phone: str) -> str:
    """The auth code of ``phone`` under a secret the edges share (``jt808.auth_secret``): every edge
    behind a load balancer issues and accepts the same code, with nothing shared but the secret."""
    return hmac.new(secret.encode(), phone.encode(), hashlib.sha256).hexdigest()[:16].upper()


class Registry:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            rows = self._db.execute("SELECT phone, auth_code, issued_ns, plate, model, manufacturer, terminal_id "
                                    "FROM terminal").fetchall()
        except sqlite3.Error as e:
            raise RegistryError(f"{self.path}: cannot open the terminal registry: {e}") from e
        self._known: dict[str, Registered] = {r[0]: Registered(*r) for r in rows}

    def __len__(self) -> int:
        return len(self._known)

    def get(self, phone: str) -> Registered | None:
        return self._known.get(phone)

    def code_of(self, phone: str) -> str | None:
        r = self._known.get(phone)
        return None if r is None else r.auth_code

    def save_sync(self, r: Registered) -> None:
        with self._lock:
            try:
                self._db.execute("INSERT INTO terminal(phone, auth_code, issued_ns, plate, model, manufacturer, terminal_id) "
                                 "VALUES (?,?,?,?,?,?,?) ON CONFLICT(phone) DO UPDATE SET auth_code=excluded.auth_code, "
                                 "issued_ns=excluded.issued_ns, plate=excluded.plate, model=excluded.model, "
                                 "manufacturer=excluded.manufacturer, terminal_id=excluded.terminal_id",
                                 (r.phone, r.auth_code, r.issued_ns, r.plate, r.model, r.manufacturer, r.terminal_id))
            except sqlite3.Error as e:
                raise RegistryError(f"{self.path}: cannot save terminal {r.phone}: {e}") from e
            self._known[r.phone] = r

    def drop_sync(self, phone: str) -> None:
        with self._lock:
            try:
                self._db.execute("DELETE FROM terminal WHERE phone = ?", (phone,))
            except sqlite3.Error as e:
                raise RegistryError(f"{self.path}: cannot drop terminal {phone}: {e}") from e
            self._known.pop(phone, None)

    async def save(self, r: Registered) -> None:
        await asyncio.to_thread(self.save_sync, r)

    async def drop(self, phone: str) -> None:
        await asyncio.to_thread(self.drop_sync, phone)

    def close(self) -> None:
        with self._lock:
            self._db.close()


def registered(phone: str, code: str, *, plate: str = "", model: str = "", manufacturer: str = "",
               terminal_id: str = "", now_ns: int | None = None) -> Registered:
    return Registered(phone, code, time.time_ns() if now_ns is None else now_ns, plate, model, manufacturer, terminal_id)
