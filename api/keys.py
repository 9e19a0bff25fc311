"""API keys, org scoping, audit log and per-key rate limits (DB33/T 2474-2022 6.2.5-6.2.6, GB/T 22239).

A key is ``sek_<id>_<secret>``: ``id`` (10 hex characters) names the row, ``secret`` (32 random
bytes, URL-safe base64) is checked against an argon2id hash (argon2-cffi); the secret itself is
never stored. Each key carries an org path and a role:

==========  =====================================================================
role        may
==========  =====================================================================
viewer      read every resource of its org and of the orgs below it
operator    viewer, plus acknowledge alerts
admin       operator, plus dead letters, the audit log, and keys within its org
==========  =====================================================================

argon2 is slow on purpose (tens of ms), so a verified token is remembered in memory, keyed by
its SHA-256, for ``cache_s`` seconds; a revocation (here or by another process on the same file:
the table is re-read at most every ``reload_s`` seconds) ends it.

The audit log (table ``audit``) records every key use that changes something and every refused
access: time, key id, org, role, method, path, status and a short reason.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from edge.config import Site, check_org_path, org_within
from edge.errors import EdgeError

log = logging.getLogger(__name__)

TOKEN = re.compile(r"^sek_([0-9a-f]{10})_([A-Za-z0-9_-]{20,100})$")


class KeyError_(EdgeError):
    """A key could not be created, found or revoked (unknown id, bad org, bad role)."""


class Role(str, Enum):
    viewer = "viewer"
    operator = "operator"
    admin = "admin"

    @property
    def rank(self) -> int:
        return {"viewer": 0, "operator": 1, "admin": 2}[self.value]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: a key's id, org scope and role. ``org=None`` means the whole tree."""

    key_id: str
    org: str | None
    role: Role

    def sees(self, org_path: str | None) -> bool:
        """True when data tagged ``org_path`` is within this principal's org (segment-wise)."""
        if self.org is None:
            return True
        if not org_path:
            return False
        return org_within(org_path, self.org)

    def may(self, role: Role) -> bool:
        return self.role.rank >= role.rank


ANONYMOUS_ADMIN = Principal("anonymous", None, Role.admin)


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    org: str
    role: Role
    name: str
    created_ns: int
    revoked_ns: int | None

    @property
    def active(self) -> bool:
        return self.revoked_ns is None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at_ns: int
    key_id: str
    org: str
    role: str
    method: str
    path: str
    status: int
    action: str
    detail: str


_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_key (
  id TEXT PRIMARY KEY, hash TEXT NOT NULL, org TEXT NOT NULL, role TEXT NOT NULL, name TEXT NOT NULL DEFAULT '',
  created_ns INTEGER NOT NULL, revoked_ns INTEGER);
CREATE TABLE IF NOT EXISTS audit (
  id INTEGER PRIMARY KEY AUTOINCREMENT, at_ns INTEGER NOT NULL, key_id TEXT NOT NULL, org TEXT NOT NULL,
  role TEXT NOT NULL, method TEXT NOT NULL, path TEXT NOT NULL, status INTEGER NOT NULL,
  action TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '');
"""


def keys_path_for(site: Site, data_dir: Path | None = None) -> Path:
    """Where a site keeps its keys: ``api_keys.sqlite`` beside the outbox file."""
    ob = Path(site.outbox.path)
    base = data_dir if data_dir is not None else ob.parent
    return Path(base) / "api_keys.sqlite"


class KeyStore:
    """Keys and the audit table in one SQLite file. Thread-safe."""

    def __init__(self, path: str | Path, *, cache_s: float = 300.0, reload_s: float = 2.0,
                 hasher: PasswordHasher | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=30000")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._ph = hasher or PasswordHasher()
        self.cache_s, self.reload_s = cache_s, reload_s
        self._keys: dict[str, tuple[ApiKey, str]] = {}
        self._loaded_at = -1e18
        self._verified: dict[bytes, tuple[str, float]] = {}  # sha256(token) -> (key id, until monotonic)

    # -- management ------------------------------------------------------------------------------
    def create(self, org: str, role: Role | str, name: str = "", now_ns: int | None = None) -> tuple[ApiKey, str]:
        """Make a key; returns it and its token (shown once, never stored)."""
        try:
            check_org_path(org)
        except ValueError as e:
            raise KeyError_(str(e)) from None
        try:
            role = Role(role)
        except ValueError:
            raise KeyError_(f"role {role!r} is not one of viewer, operator, admin") from None
        kid = secrets.token_hex(5)
        secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
        token = f"sek_{kid}_{secret}"
        h = self._ph.hash(secret)
        now = time.time_ns() if now_ns is None else now_ns
        with self._lock:
            self._db.execute("INSERT INTO api_key (id, hash, org, role, name, created_ns) VALUES (?,?,?,?,?,?)",
                             (kid, h, org, role.value, name, now))
            self._loaded_at = -1e18
        log.info("api key created id=%s org=%s role=%s", kid, org, role.value)
        return ApiKey(kid, org, role, name, now, None), token

    def list(self, within: str | None = None, include_revoked: bool = True) -> list[ApiKey]:
        with self._lock:
            rows = self._db.execute("SELECT id, org, role, name, created_ns, revoked_ns FROM api_key "
                                    "ORDER BY created_ns, id").fetchall()
        out = [ApiKey(r[0], r[1], Role(r[2]), r[3], r[4], r[5]) for r in rows]
        if within is not None:
            out = [k for k in out if org_within(k.org, within)]
        if not include_revoked:
            out = [k for k in out if k.active]
        return out

    def get(self, key_id: str) -> ApiKey:
        for k in self.list():
            if k.id == key_id:
                return k
        raise KeyError_(f"no key {key_id!r}")

    def revoke(self, key_id: str, now_ns: int | None = None) -> ApiKey:
        now = time.time_ns() if now_ns is None else now_ns
        with self._lock:
            cur = self._db.execute("UPDATE api_key SET revoked_ns = ? WHERE id = ? AND revoked_ns IS NULL", (now, key_id))
            self._loaded_at = -1e18
            self._verified = {h: v for h, v in self._verified.items() if v[0] != key_id}
        if cur.rowcount == 0:
            k = self.get(key_id)  # raises for an unknown id
            return k
        log.info("api key revoked id=%s", key_id)
        return self.get(key_id)

    # -- verification ----------------------------------------------------------------------------
    def _reload(self) -> None:
        now = time.monotonic()
        if now - self._loaded_at < self.reload_s:
            return
        rows = self._db.execute("SELECT id, hash, org, role, name, created_ns, revoked_ns FROM api_key").fetchall()
        self._keys = {r[0]: (ApiKey(r[0], r[2], Role(r[3]), r[4], r[5], r[6]), r[1]) for r in rows}
        self._loaded_at = now

    def verify(self, token: str) -> Principal | None:
        """The principal of a valid, unrevoked token; ``None`` when it is not one (the caller refuses)."""
        digest = hashlib.sha256(token.encode("utf-8", "replace")).digest()
        now = time.monotonic()
        with self._lock:
            self._reload()
            hit = self._verified.get(digest)
            if hit is not None and hit[1] > now:
                entry = self._keys.get(hit[0])
                if entry is not None and entry[0].active:
                    k = entry[0]
                    return Principal(k.id, k.org, k.role)
                self._verified.pop(digest, None)
                return None
            m = TOKEN.match(token)
            if m is None:
                return None
            entry = self._keys.get(m.group(1))
        if entry is None or not entry[0].active:
            return None
        try:
            self._ph.verify(entry[1], m.group(2))
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        with self._lock:
            if len(self._verified) > 10_000:
                self._verified.clear()
            self._verified[digest] = (entry[0].id, now + self.cache_s)
        k = entry[0]
        return Principal(k.id, k.org, k.role)

    # -- audit -----------------------------------------------------------------------------------
    def audit(self, at_ns: int, principal: Principal | None, method: str, path: str, status: int,
              action: str, detail: str = "") -> None:
        p = principal
        with self._lock:
            self._db.execute("INSERT INTO audit (at_ns, key_id, org, role, method, path, status, action, detail) "
                             "VALUES (?,?,?,?,?,?,?,?,?)",
                             (at_ns, p.key_id if p else "-", (p.org or "") if p else "", p.role.value if p else "",
                              method, path[:500], status, action, detail[:500]))

    def audit_entries(self, limit: int = 100, before_id: int | None = None,
                      within: str | None = None) -> list[AuditEntry]:
        sql = "SELECT id, at_ns, key_id, org, role, method, path, status, action, detail FROM audit"
        args: list[Any] = []
        if before_id is not None:
            sql += " WHERE id < ?"
            args.append(before_id)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit * 4 if within else limit)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        out = [AuditEntry(*r) for r in rows]
        if within is not None:
            out = [e for e in out if e.org and org_within(e.org, within)]
        return out[:limit]

    def close(self) -> None:
        with self._lock:
            self._db.close()


class RateLimiter:
    """One token bucket per key: ``rate_per_s`` tokens a second, up to ``burst``."""

    def __init__(self, rate_per_s: float = 50.0, burst: float = 100.0, clock=time.monotonic) -> None:
        self.rate, self.burst, self._clock = rate_per_s, burst, clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> float:
        """0.0 when the request may go; else the seconds to wait before the next token."""
        now = self._clock()
        tokens, at = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate
