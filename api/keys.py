"""API keys, org scoping, audit log, per-key rate limits and failed-attempt limits
(DB33/T 2474-2022 6.2.5-6.2.6, GB/T 22239).

A key is ``sek_<id>_<secret>``: ``id`` (10 hex characters) names the row, ``secret`` (32 random
bytes, URL-safe base64) is checked against an argon2id hash (argon2-cffi); the secret itself is
never stored. Each key carries an org path and a role:

==========  =====================================================================
role        may
==========  =====================================================================
metrics     read ``/metrics`` only (a Prometheus scraper); no ``/v1`` resource
viewer      read every resource of its org and of the orgs below it
operator    viewer, plus acknowledge alerts
admin       operator, plus dead letters, the audit log, and keys within its org
==========  =====================================================================

argon2 is slow on purpose (tens to hundreds of ms), so verification is split in two:
``lookup`` (no hashing: the cache of verified tokens, the token's shape, its key id) and
``check`` (the argon2 verification, which the API runs in a worker thread, see
``api.security``). A verified token is remembered in memory, keyed by its SHA-256, for ``cache_s``
seconds; a revocation (here or by another process on the same file: the table is re-read at most
every ``reload_s`` seconds) ends it.

The last active admin key of a top-level org (the root of a site's org tree: the config requires
every parent org to be declared, so roots are single codes such as ``330000``) cannot be revoked:
a site would lock its administrators out (``LastAdminKey``).

The audit log (table ``audit``) records every key use that changes something and every refused
access: time, key id, org, role, client address, method, path, status, a short reason and a
``count`` (refusals are aggregated by ``api.audit``). No key material is ever written to it:
``redact_target`` and ``scrub`` take secrets out of paths and details, and rows written by older
versions are redacted when the store opens.
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
from urllib.parse import parse_qsl, urlencode

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from edge.config import Site, check_org_path, org_within
from edge.errors import EdgeError

log = logging.getLogger(__name__)

TOKEN = re.compile(r"^sek_([0-9a-f]{10})_([A-Za-z0-9_-]{20,100})$")
# a token anywhere in a text (a pasted URL, a mistyped header in a filter...): keep the id, drop the secret
_TOKEN_IN_TEXT = re.compile(r"(?i)sek_([0-9a-f]{10})_[A-Za-z0-9_\-]+")
# query parameters that carry credentials, ours (``key`` on the live stream) or a client's habit
SECRET_PARAMS = frozenset({"key", "api_key", "apikey", "token", "access_token", "authorization", "x-api-key"})
REDACTED = "[redacted]"


def scrub(text: str) -> str:
    """``text`` with the secret part of every token in it replaced (the key id stays, to tell whose)."""
    if "sek_" not in text.lower():
        return text
    return _TOKEN_IN_TEXT.sub(lambda m: f"sek_{m.group(1)}_{REDACTED}", text)


def redact_target(path: str, query: str = "") -> str:
    """``path?query`` as it may be recorded: values of credential parameters replaced, tokens scrubbed."""
    if not query:
        return scrub(path)
    pairs = parse_qsl(query, keep_blank_values=True)
    clean = [(k, REDACTED if k.strip().lower() in SECRET_PARAMS else scrub(v)) for k, v in pairs]
    return scrub(path) + "?" + scrub(urlencode(clean, safe="/,:[]"))


class KeyError_(EdgeError):
    """A key could not be created, found or revoked (unknown id, bad org, bad role)."""


class LastAdminKey(KeyError_):
    """Revoking this key would leave a top-level org without an active admin key."""


class Role(str, Enum):
    metrics = "metrics"
    viewer = "viewer"
    operator = "operator"
    admin = "admin"

    @property
    def rank(self) -> int:
        # metrics ranks below viewer: it may read no /v1 resource (api.security refuses it there)
        return {"metrics": -1, "viewer": 0, "operator": 1, "admin": 2}[self.value]


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
class PendingCheck:
    """A token whose key exists and is active, but whose secret still needs the argon2 check."""

    key_id: str
    digest: bytes
    hash: str
    secret: str


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
    client: str = ""
    count: int = 1


_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_key (
  id TEXT PRIMARY KEY, hash TEXT NOT NULL, org TEXT NOT NULL, role TEXT NOT NULL, name TEXT NOT NULL DEFAULT '',
  created_ns INTEGER NOT NULL, revoked_ns INTEGER);
CREATE TABLE IF NOT EXISTS audit (
  id INTEGER PRIMARY KEY AUTOINCREMENT, at_ns INTEGER NOT NULL, key_id TEXT NOT NULL, org TEXT NOT NULL,
  role TEXT NOT NULL, method TEXT NOT NULL, path TEXT NOT NULL, status INTEGER NOT NULL,
  action TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '');
"""
# columns added after the first release; added to older files when they open
_AUDIT_ADDED = (("client", "TEXT NOT NULL DEFAULT ''"), ("count", "INTEGER NOT NULL DEFAULT 1"))
_AUDIT_COLUMNS = "id, at_ns, key_id, org, role, method, path, status, action, detail, client, count"


def keys_path_for(site: Site, data_dir: Path | None = None) -> Path:
    """Where a site keeps its keys: ``api_keys.sqlite`` beside the outbox file."""
    ob = Path(site.outbox.path)
    base = data_dir if data_dir is not None else ob.parent
    return Path(base) / "api_keys.sqlite"


def is_top_level(org: str) -> bool:
    return "/" not in org


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
        self.hash_checks = 0  # argon2 verifications run (the expensive part; tests and metrics read it)
        self._migrate_audit()
        self.redacted_at_open = self._redact_audit()

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
            raise KeyError_(f"role {role!r} is not one of {', '.join(r.value for r in Role)}") from None
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
        """Revoke a key. Refuses (``LastAdminKey``) the last active admin key of a top-level org."""
        now = time.time_ns() if now_ns is None else now_ns
        with self._lock:
            # one write transaction: two revocations at once (API and CLI) cannot both pass the check
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT org, role, revoked_ns FROM api_key WHERE id = ?", (key_id,)).fetchone()
                if row is not None and row[2] is None and row[1] == Role.admin.value and is_top_level(row[0]):
                    (others,) = self._db.execute(
                        "SELECT COUNT(*) FROM api_key WHERE org = ? AND role = ? AND revoked_ns IS NULL AND id != ?",
                        (row[0], Role.admin.value, key_id)).fetchone()
                    if others == 0:
                        raise LastAdminKey(f"key {key_id!r} is the last active admin key of org {row[0]!r}: "
                                           "create another admin key for that org first, then revoke this one")
                cur = self._db.execute("UPDATE api_key SET revoked_ns = ? WHERE id = ? AND revoked_ns IS NULL",
                                       (now, key_id))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._loaded_at = -1e18
            self._verified = {h: v for h, v in self._verified.items() if v[0] != key_id}
        if cur.rowcount == 0:
            return self.get(key_id)  # raises for an unknown id; an already revoked key stays as it is
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

    def lookup(self, token: str) -> Principal | PendingCheck | None:
        """Everything short of hashing: the principal of a token verified recently, a ``PendingCheck`` for
        a well-formed token of an active key, or ``None`` (malformed, unknown id, revoked)."""
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
        return PendingCheck(entry[0].id, digest, entry[1], m.group(2))

    def check(self, pending: PendingCheck) -> Principal | None:
        """The argon2 verification of a ``PendingCheck`` (slow: run it off the event loop); remembers success."""
        with self._lock:
            self.hash_checks += 1
        try:
            self._ph.verify(pending.hash, pending.secret)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        now = time.monotonic()
        with self._lock:
            self._reload()
            entry = self._keys.get(pending.key_id)
            if entry is None or not entry[0].active:  # revoked while we hashed
                return None
            if len(self._verified) > 10_000:
                self._verified.clear()
            self._verified[pending.digest] = (pending.key_id, now + self.cache_s)
        k = entry[0]
        return Principal(k.id, k.org, k.role)

    def verify(self, token: str) -> Principal | None:
        """The principal of a valid, unrevoked token; ``None`` when it is not one (the caller refuses)."""
        found = self.lookup(token)
        if isinstance(found, PendingCheck):
            return self.check(found)
        return found

    # -- audit -----------------------------------------------------------------------------------
    def _migrate_audit(self) -> None:
        with self._lock:
            have = {r[1] for r in self._db.execute("PRAGMA table_info(audit)").fetchall()}
            for name, decl in _AUDIT_ADDED:
                if name not in have:
                    self._db.execute(f"ALTER TABLE audit ADD COLUMN {name} {decl}")

    def _redact_audit(self) -> int:
        """Take key material out of rows written before redaction existed; returns the rows changed."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, path, detail FROM audit WHERE instr(lower(path), 'sek_') OR instr(lower(detail), 'sek_') "
                "OR instr(path, '?')").fetchall()
            changed = []
            for rid, path, detail in rows:
                p, _, q = path.partition("?")
                new_path, new_detail = redact_target(p, q)[:500], scrub(detail)[:500]
                if (new_path, new_detail) != (path, detail):
                    changed.append((new_path, new_detail, rid))
            if changed:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany("UPDATE audit SET path = ?, detail = ? WHERE id = ?", changed)
                self._db.execute("COMMIT")
        if changed:
            log.warning("audit rows redacted at open rows=%d (they held key material)", len(changed))
        return len(changed)

    def audit(self, at_ns: int, principal: Principal | None, method: str, path: str, status: int,
              action: str, detail: str = "", *, client: str = "", org: str | None = None, count: int = 1) -> int:
        """Append one entry (path and detail redacted here too); returns its id. ``org`` overrides the key's."""
        p = principal
        row_org = org if org is not None else ((p.org or "") if p else "")
        pth, _, q = path.partition("?")
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO audit (at_ns, key_id, org, role, method, path, status, action, detail, client, count) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (at_ns, p.key_id if p else "-", row_org, p.role.value if p else "", method,
                 redact_target(pth, q)[:500], status, action, scrub(detail)[:500], client[:100], count))
            return int(cur.lastrowid)

    def audit_counts(self, counts: dict[int, int]) -> None:
        """Set the ``count`` of aggregated entries (id -> count), in one transaction."""
        if not counts:
            return
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("UPDATE audit SET count = ? WHERE id = ?", [(c, i) for i, c in counts.items()])
            self._db.execute("COMMIT")

    def prune_audit(self, max_rows: int) -> tuple[int, int]:
        """Delete the oldest entries beyond ``max_rows``; returns (rows deleted, events they counted)."""
        with self._lock:
            row = self._db.execute("SELECT id FROM audit ORDER BY id DESC LIMIT 1 OFFSET ?", (max_rows,)).fetchone()
            if row is None:
                return 0, 0
            self._db.execute("BEGIN IMMEDIATE")
            n, events = self._db.execute("SELECT COUNT(*), COALESCE(SUM(count), 0) FROM audit WHERE id <= ?",
                                         (row[0],)).fetchone()
            self._db.execute("DELETE FROM audit WHERE id <= ?", (row[0],))
            self._db.execute("COMMIT")
        return int(n), int(events)

    def audit_rows(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM audit").fetchone()[0])

    def audit_entries(self, limit: int = 100, before_id: int | None = None,
                      within: str | None = None) -> list[AuditEntry]:
        """Entries newest first; ``within`` keeps those of that org and below (scanned in chunks)."""
        out: list[AuditEntry] = []
        before = before_id
        while len(out) < limit:
            sql = f"SELECT {_AUDIT_COLUMNS} FROM audit"
            args: list[Any] = []
            if before is not None:
                sql += " WHERE id < ?"
                args.append(before)
            chunk = max(limit * 4, 200) if within else limit
            sql += " ORDER BY id DESC LIMIT ?"
            args.append(chunk)
            with self._lock:
                rows = self._db.execute(sql, args).fetchall()
            for r in rows:
                e = AuditEntry(*r)
                if within is None or (e.org and org_within(e.org, within)):
                    out.append(e)
            if len(rows) < chunk:
                break
            before = rows[-1][0]
        return out[:limit]

    def close(self) -> None:
        with self._lock:
            self._db.close()


class RateLimiter:
    """One token bucket per key: ``rate_per_s`` tokens a second, up to ``burst``.

    Buckets that have filled up again are forgotten once there are more than ``max_buckets``, so a
    client inventing names (addresses, key ids) cannot grow the table without bound."""

    def __init__(self, rate_per_s: float = 50.0, burst: float = 100.0, clock=time.monotonic,
                 max_buckets: int = 100_000) -> None:
        self.rate, self.burst, self._clock = rate_per_s, burst, clock
        self.max_buckets = max_buckets
        self._buckets: dict[str, tuple[float, float]] = {}

    def _level(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (self.burst, now))
        return min(self.burst, tokens + (now - at) * self.rate)

    def take(self, key: str) -> float:
        """0.0 when the request may go; else the seconds to wait before the next token."""
        now = self._clock()
        tokens = self._level(key, now)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            if len(self._buckets) > self.max_buckets:
                self._forget_full(now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def wait(self, key: str) -> float:
        """What ``take`` would answer, without taking."""
        tokens = self._level(key, self._clock())
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def give_back(self, key: str) -> None:
        """Return a token taken for an attempt that turned out fine."""
        now = self._clock()
        self._buckets[key] = (min(self.burst, self._level(key, now) + 1.0), now)

    def _forget_full(self, now: float) -> None:
        full = [k for k in self._buckets if self._level(k, now) >= self.burst]
        for k in full:
            del self._buckets[k]
        if len(self._buckets) > self.max_buckets:  # still too many: a flood of names; start over
            self._buckets.clear()


class FailedAttempts:
    """Limits on argon2 checks that may fail, taken *before* hashing: a bucket per client address and one
    per key id (``burst`` attempts, then one every ``refill_s``); a success gives both tokens back.

    An address that verified a key within ``known_s`` is not held back by that key's bucket (only by its
    own), so a flood against one key id from elsewhere does not lock its usual clients out."""

    def __init__(self, burst: int = 10, refill_s: float = 10.0, known_s: float = 86400.0,
                 clock=time.monotonic, max_known: int = 10_000) -> None:
        self.by_client = RateLimiter(1.0 / refill_s, burst, clock)
        self.by_key = RateLimiter(1.0 / refill_s, burst, clock)
        self.known_s, self.max_known, self._clock = known_s, max_known, clock
        self._known: dict[tuple[str, str], float] = {}

    def reserve(self, client: str, key_id: str) -> float:
        """0.0 when an attempt may be hashed (tokens taken); else seconds to wait (nothing taken)."""
        wait = self.by_client.wait(client)
        known = self._known.get((key_id, client), -1.0) > self._clock()
        if not known:
            wait = max(wait, self.by_key.wait(key_id))
        if wait > 0:
            return wait
        self.by_client.take(client)
        if not known:
            self.by_key.take(key_id)
        return 0.0

    def succeeded(self, client: str, key_id: str) -> None:
        known = self._known.get((key_id, client), -1.0) > self._clock()
        self.by_client.give_back(client)
        if not known:
            self.by_key.give_back(key_id)
        if len(self._known) >= self.max_known:
            now = self._clock()
            self._known = {k: t for k, t in self._known.items() if t > now}
            if len(self._known) >= self.max_known:
                self._known.clear()
        self._known[(key_id, client)] = self._clock() + self.known_s
