"""Durable outbox: one log in SQLite (WAL) between the collectors and every consumer of their points.

A point handed to ``put`` is committed (fsync'd by SQLite's WAL, ``synchronous=FULL``) before
``put`` returns, so it survives a crash, a kill -9 and a power cut. It is then read by every
*consumer* of the log (the local sink; the upstream push to the province; any later one), each
with its own cursor in table ``consumer``. A consumer's cursor moves in the transaction that
records its progress (``ack``), so whatever crashes when, each consumer resumes where it had
confirmed and no copy is lost (at-least-once per consumer; a point's identity is measurement +
tags + time, so a replay overwrites the same point). A row is removed once every consumer has
it (retention). A consumer may take only some measurements (the upstream takes indicators): it
reads past the rest, and rows it does not want never wait for it.

How it is built:

* **One writer thread** owns the write connection. ``put``, ``ack``, dead-letter and
  maintenance calls are queued to it; each time it wakes it takes *everything* queued and
  commits it in one transaction (group commit): many concurrent callers, one fsync.
* Points are stored as **line-protocol text**, what the sinks send. The lines of one
  measurement in one commit share a row (``n`` points joined by ``\\x1e``), so a commit is a
  few rows, not one row per point, and a consumer that filters by measurement reads only its rows.
* **Bounded by bytes, and a full log holds back before it drops.** Each put says what its source
  can do when the log is full (``OnFull``): a source that keeps its data (MQTT, JT/T 808
  positions) is refused (``OutboxFull``: it is not acknowledged and comes again) from the moment
  the log reaches its bound until its consumers have brought it below ``resume_fraction`` of it
  (a put is taken while the log is under its bound, so one batch may pass it: a batch larger than
  the room left is not refused for ever); readings of cumulative counters (polled meters, which
  cannot wait) make room by *thinning* earlier readings of their kind (``edge.thinning``: every
  Nth reading per series kept, each day's first and last, both sides of a reset, so consumption
  is unchanged), then by dropping whole spans of them, oldest first. Rows of sources that can
  hold are never dropped. Whatever is thinned or dropped is recorded point by point in table
  ``dropped`` (bounded) and counted.
* **Dead letters**: points a consumer's store refused (with the server's reason), points that
  could not be encoded, and payloads collectors rejected, in table ``dead_letter``; listed,
  replayed and purged by ``edge outbox``.

Readers (``batch``, ``status``) use a second connection: WAL lets them read while the writer commits.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import sqlite3
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from edge.clock import SYSTEM_CLOCK, Clock
from edge.errors import EdgeError, LineProtocolError, OutboxError, OutboxFull
from edge.metrics import Metrics
from edge.point import I64_MAX, I64_MIN, Point, _check_ident, _KEY, format_field_value, parse_line, to_line
from edge.thinning import LocalDays, ThinRule, keep, reading_of

log = logging.getLogger(__name__)

SEP = "\x1e"  # ASCII record separator between the lines of one row
_ROW_POINTS = 1000  # at most this many points per row, so batches and drops stay fine-grained
_SCHEMA_VERSION = 3

LOCAL = "local"  # the consumer every log has: the local sink (InfluxDB or the embedded store)
LANE_HOLD, LANE_THIN = 0, 1  # rows never dropped / rows of readings that may be thinned, then dropped

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
  id INTEGER PRIMARY KEY AUTOINCREMENT, lines TEXT NOT NULL, bytes INTEGER NOT NULL,
  added_ns INTEGER NOT NULL, n INTEGER NOT NULL DEFAULT 1, measurement TEXT NOT NULL DEFAULT '',
  lane INTEGER NOT NULL DEFAULT 0, level INTEGER NOT NULL DEFAULT 0, target TEXT);
CREATE INDEX IF NOT EXISTS outbox_measurement ON outbox(measurement, id);
CREATE TABLE IF NOT EXISTS consumer (
  name TEXT PRIMARY KEY, cursor INTEGER NOT NULL, measurements TEXT, added_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS dropped (
  id INTEGER PRIMARY KEY AUTOINCREMENT, at_ns INTEGER NOT NULL, reason TEXT NOT NULL,
  missed TEXT NOT NULL, line TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS dead_letter (
  id INTEGER PRIMARY KEY AUTOINCREMENT, at_ns INTEGER NOT NULL, source TEXT NOT NULL,
  topic TEXT NOT NULL DEFAULT '', payload BLOB NOT NULL, reason TEXT NOT NULL, kind TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

# persistent counters (survive restarts; shown by `edge outbox status`)
C_COMMITTED, C_DROPPED, C_THINNED, C_HELD, C_DEAD_POINTS, C_DEAD_PAYLOADS, C_REJECTED = (
    "committed", "dropped", "thinned", "held_back", "dead_lettered_points", "dead_lettered_payloads", "rejected")

KIND_POINT = "point"      # a line the store refused; payload = the line (UTF-8)
KIND_INVALID = "invalid"  # a Point that could not be written as line protocol; payload = repr
KIND_PAYLOAD = "payload"  # raw bytes a collector could not decode

REASON_THINNED, REASON_DROPPED = "thinned", "dropped"

_CONSUMER_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")


class OnFull(str, Enum):
    """What a put's source can do when the log is full (``Outbox.put(..., on_full=...)``)."""

    refuse = "refuse"  # it keeps its data and offers it again: raise OutboxFull, commit nothing
    thin = "thin"      # it cannot wait (polled counter readings): thin, then drop, readings of this kind
    admit = "admit"    # commit beyond the bound: small streams derived from committed points, replays


@dataclass(frozen=True, slots=True)
class Batch:
    """Rows of the log for one consumer, oldest first. ``ack(batch.last_id)`` confirms all of them.

    ``upto_id``: the last row the read examined (a consumer that takes some measurements only
    reads past the others; its cursor moves there), at least the last row returned."""

    ids: tuple[int, ...]
    lines: tuple[str, ...]
    upto_id: int = 0

    @property
    def last_id(self) -> int:
        return max(self.ids[-1], self.upto_id) if self.ids else self.upto_id

    @property
    def first_id(self) -> int:
        return self.ids[0]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    at_ns: int
    source: str
    topic: str
    payload: bytes
    reason: str
    kind: str

    def text(self) -> str:
        return self.payload.decode("utf-8", "replace")

    # dict-style access kept for callers written against the first version (``row["reason"]``)
    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)


@dataclass(frozen=True, slots=True)
class DroppedPoint:
    """A point the full log thinned or dropped: its line, why, and the consumers that never got it."""

    id: int
    at_ns: int
    reason: str
    missed: tuple[str, ...]
    line: str

    def point(self) -> Point:
        return parse_line(self.line)


@dataclass(frozen=True, slots=True)
class ConsumerStatus:
    name: str
    cursor: int
    measurements: tuple[str, ...] | None  # None: every measurement
    lag_points: int  # points after its cursor that it takes
    oldest_age_s: float | None = None  # age of the oldest of them (only in ``status()``)


@dataclass(frozen=True, slots=True)
class OutboxStatus:
    path: str
    depth_points: int
    rows: int
    bytes: int
    max_bytes: int
    oldest_age_s: float | None
    file_bytes: int
    dead_letters: dict[str, int]
    counters: dict[str, int]
    consumers: list[ConsumerStatus] = field(default_factory=list)
    holding: bool = False  # refusing puts of sources that can hold (until consumers make room)
    dropped_recorded: int = 0  # rows in the ``dropped`` record


def _nbytes(text: str) -> int:
    """UTF-8 size of a row's text (what the bound counts); ASCII, the usual case, is its length."""
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def _measurement_of(line: str) -> str:
    """The measurement of a line-protocol line (identifiers hold no backslash but escapes)."""
    i, n = 0, len(line)
    while i < n:
        c = line[i]
        if c == "\\":
            i += 2
            continue
        if c == "," or c == " ":
            break
        i += 1
    return line[:i].replace("\\,", ",").replace("\\ ", " ")


def _group_lines(lines: Iterable[str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for ln in lines:
        groups.setdefault(_measurement_of(ln), []).append(ln)
    return groups


@dataclass(slots=True)
class _Consumer:
    name: str
    cursor: int
    measurements: frozenset[str] | None
    lag: int = 0  # points after the cursor that it takes (exact, kept by the writer)

    def wants(self, measurement: str, target: str | None) -> bool:
        return ((target is None or target == self.name)
                and (self.measurements is None or measurement in self.measurements))

    def want_sql(self) -> tuple[str, list[Any]]:
        sql, args = "(target IS NULL OR target = ?)", [self.name]
        if self.measurements is not None:
            ms = sorted(self.measurements)
            sql += f" AND measurement IN ({','.join('?' * len(ms))})" if ms else " AND 0"
            args += ms
        return sql, args

    def status(self) -> ConsumerStatus:
        return ConsumerStatus(self.name, self.cursor, None if self.measurements is None else tuple(sorted(self.measurements)),
                              self.lag)


@dataclass(slots=True)
class _State:
    """What the writer knows of the log; copied per commit, published (one reference) after COMMIT."""

    rows: int
    points: int
    bytes: int
    head: int  # id of the newest row ever committed
    consumers: dict[str, _Consumer]
    holding: bool = False
    kept_upto: int = 0  # rows in (min cursor, kept_upto] still there are wanted by a lagging consumer
    dropped_bytes: int = 0  # text in the ``dropped`` record

    def copy(self) -> "_State":
        return _State(self.rows, self.points, self.bytes, self.head, {k: replace(c) for k, c in self.consumers.items()},
                      self.holding, self.kept_upto, self.dropped_bytes)


# --- fast line encoding ---------------------------------------------------------------------------


class LineEncoder:
    """``edge.point.to_line`` with the measurement+tags prefix and field keys cached.

    Produces exactly the same text as ``to_line`` (a property test checks it); a meter's series
    prefix is escaped and validated once instead of on every reading.
    """

    _MAX_CACHE = 200_000

    def __init__(self) -> None:
        self._prefix: dict[tuple, str] = {}
        self._fkey: dict[str, str] = {}

    def line(self, p: Point) -> str:
        tags = p.tags
        key = (p.measurement, *tags.items()) if tags else (p.measurement,)
        prefix = self._prefix.get(key)
        if prefix is None:
            probe = to_line(Point(p.measurement, tags, {"x": 1.0}, 0))
            prefix = probe[: -len(" x=1.0 0")]
            if len(self._prefix) >= self._MAX_CACHE:
                self._prefix.clear()
            self._prefix[key] = prefix
        parts = []
        fkeys = self._fkey
        for k, v in p.fields.items():
            fk = fkeys.get(k)
            if fk is None:
                _check_ident("field key", k)
                fk = k.translate(_KEY) + "="
                if len(fkeys) < self._MAX_CACHE:
                    fkeys[k] = fk
            if type(v) is float and math.isfinite(v):
                parts.append(fk + repr(v))
            else:
                parts.append(fk + format_field_value(k, v))
        if not parts:
            raise LineProtocolError("no fields", f"point {p.measurement!r} has no fields")
        t = p.time_ns
        if type(t) is not int or not I64_MIN <= t <= I64_MAX:
            if not isinstance(t, int) or isinstance(t, bool) or not I64_MIN <= t <= I64_MAX:
                raise LineProtocolError("bad timestamp", f"{t!r}")
        return f"{prefix} {','.join(parts)} {int(t)}"


# --- the writer's queue ---------------------------------------------------------------------------


class _Op:
    __slots__ = ("kind", "args", "t0", "result", "error", "_done", "_event", "_loop", "_fut")

    def __init__(self, kind: str, *args: Any) -> None:
        self.kind, self.args = kind, args
        self.t0 = time.perf_counter()
        self.result: Any = None
        self.error: BaseException | None = None
        self._event: threading.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fut: asyncio.Future | None = None

    def finish(self) -> None:
        if self._fut is not None:
            loop = self._loop
            try:
                loop.call_soon_threadsafe(self._resolve)  # type: ignore[union-attr]
            except RuntimeError:
                pass  # the caller's loop has closed; nobody waits any more
        if self._event is not None:
            self._event.set()

    def _resolve(self) -> None:
        fut = self._fut
        if fut is None or fut.done():
            return
        if self.error is not None:
            fut.set_exception(self.error)
        else:
            fut.set_result(self.result)


class Outbox:
    """The durable log. Thread-safe; ``put`` is async, ``put_sync`` is for threads and tools.

    ``thin``: how readings put with ``OnFull.thin`` are thinned when full (the service passes the
    counter fields of its device profiles and the site's time zone). ``dropped_keep_bytes``: the
    ``dropped`` record keeps the newest drops up to this much line text (default half of
    ``max_bytes``, at least 8 MiB); the counters stay exact. ``resume_fraction``: once full, sources that can hold
    are refused until consumers have brought the log below this share of ``max_bytes``.
    """

    def __init__(self, path: str | Path, *, max_bytes: int = 1 << 30, metrics: Metrics | None = None,
                 clock: Clock = SYSTEM_CLOCK, thin: ThinRule | None = None, dropped_keep_bytes: int | None = None,
                 resume_fraction: float = 0.9) -> None:
        self.path = Path(path)
        self.max_bytes = int(max_bytes)
        self.metrics = metrics
        self.clock = clock
        self.thin = thin or ThinRule()
        self._days = LocalDays(self.thin.tz)
        self.dropped_keep_bytes = max(8 << 20, self.max_bytes // 2) if dropped_keep_bytes is None else dropped_keep_bytes
        self.resume_bytes = int(self.max_bytes * resume_fraction)
        self._enc = LineEncoder()
        self._listeners: list[Callable[[], None]] = []
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = self._connect()
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA journal_size_limit=67108864")
            # checkpoints run in a thread of their own (below), not inside a commit: a commit then
            # costs one WAL append and one fsync, never a copy of the WAL into the database file
            self._db.execute("PRAGMA wal_autocheckpoint=0")
            self._migrate()
            self._rdb = self._connect()
            self._rdb.execute("PRAGMA query_only=1")
            self._state = self._load()
            self._counters = dict(self._db.execute("SELECT name, value FROM counters").fetchall())
        except sqlite3.Error as e:
            raise OutboxError(f"{self.path}: cannot open outbox: {e}") from e
        self._rlock = threading.Lock()
        self._cond = threading.Condition()
        self._ops: deque[_Op] = deque()
        self._closing = False
        self._closed = False
        self.transactions = 0  # commits made by the writer thread (group commit: fewer than calls)
        self._full_since: float | None = None  # monotonic start of the current full episode
        self._episode: dict[str, int] = {}
        if metrics is not None:
            metrics.bind_outbox(self.depth, lambda: self.oldest_age_s() or 0.0)
            for name in self._state.consumers:
                metrics.bind_consumer(name, lambda name=name: self.lag(name))
        self._thread = threading.Thread(target=self._writer, name=f"outbox-writer:{self.path.name}", daemon=True)
        self._thread.start()
        self._ckpt_wake = threading.Event()
        self._ckpt_thread = threading.Thread(target=self._checkpointer, name=f"outbox-checkpoint:{self.path.name}",
                                             daemon=True)
        self._ckpt_thread.start()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30.0)
        db.execute("PRAGMA busy_timeout=30000")
        return db

    def _migrate(self) -> None:
        """Bring an outbox file of any earlier version to this one, in place.

        v1 had one line per row (column ``line``); v2 packed lines into rows and had a single reader
        (a row was deleted once the sink had it). v3 adds each row's measurement, lane, thinning
        level and target, the ``consumer`` table and the ``dropped`` record. Rows of an earlier
        version keep measurement '' (read by the local sink, which is where they were going) and the
        hold lane (never thinned: what they hold is unknown)."""
        db = self._db
        version = db.execute("PRAGMA user_version").fetchone()[0]
        cols = [r[1] for r in db.execute("PRAGMA table_info(outbox)").fetchall()]
        db.execute("BEGIN IMMEDIATE")
        try:
            if cols and "line" in cols and "lines" not in cols:  # first version: one line per row
                db.execute("ALTER TABLE outbox RENAME COLUMN line TO lines")
                db.execute("ALTER TABLE outbox ADD COLUMN n INTEGER NOT NULL DEFAULT 1")
                cols = [*cols, "n"]
            if cols and "measurement" not in cols:  # v2: one reader
                db.execute("ALTER TABLE outbox ADD COLUMN measurement TEXT NOT NULL DEFAULT ''")
                db.execute("ALTER TABLE outbox ADD COLUMN lane INTEGER NOT NULL DEFAULT 0")
                db.execute("ALTER TABLE outbox ADD COLUMN level INTEGER NOT NULL DEFAULT 0")
                db.execute("ALTER TABLE outbox ADD COLUMN target TEXT")
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    db.execute(stmt)
            # the local sink: every row still here is one it has not confirmed (v1, v2 deleted on ack)
            db.execute("INSERT OR IGNORE INTO consumer(name, cursor, measurements, added_ns) VALUES (?, coalesce("
                       "(SELECT min(id) - 1 FROM outbox), (SELECT seq FROM sqlite_sequence WHERE name = 'outbox'), 0), "
                       "NULL, ?)", (LOCAL, self.clock.now_ns()))
            if version != _SCHEMA_VERSION:
                db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        if cols and version < _SCHEMA_VERSION:
            log.info("outbox migrated path=%s from_version=%d to_version=%d", self.path, version, _SCHEMA_VERSION)

    def _load(self) -> _State:
        db = self._db
        row = db.execute("SELECT count(*), coalesce(sum(n),0), coalesce(sum(bytes),0), coalesce(max(id),0) "
                         "FROM outbox").fetchone()
        seq = db.execute("SELECT seq FROM sqlite_sequence WHERE name='outbox'").fetchone()
        consumers = {}
        for name, cursor, ms in db.execute("SELECT name, cursor, measurements FROM consumer ORDER BY name").fetchall():
            c = _Consumer(name, cursor, None if ms is None else frozenset(m for m in ms.split(",") if m))
            w, args = c.want_sql()
            c.lag = db.execute(f"SELECT coalesce(sum(n),0) FROM outbox WHERE id > ? AND {w}", [cursor, *args]).fetchone()[0]
            consumers[name] = c
        dropped_bytes = db.execute("SELECT coalesce(sum(length(line)),0) FROM dropped").fetchone()[0]
        return _State(row[0], row[1], row[2], max(row[3], seq[0] if seq else 0), consumers,
                      dropped_bytes=dropped_bytes)

    # -- public: producer side -----------------------------------------------------------------------

    async def put(self, points: Sequence[Point], *, on_full: OnFull = OnFull.refuse) -> int:
        """Commit ``points`` durably; returns after the fsync, with the number committed.

        ``on_full`` says what to do when the log is full: ``refuse`` raises ``OutboxFull`` and
        commits nothing (the source keeps the points and offers them again); ``thin`` makes room
        by thinning, then dropping, earlier ``thin`` readings (and drops these when nothing is
        left to thin: the return value is then 0); ``admit`` commits beyond the bound.
        Points that cannot be written as line protocol (NaN, empty field set...) do not fail the
        others: they go to the dead-letter table (kind ``invalid``) and are counted.
        """
        if not points:
            return 0
        op = self._put_op(points, OnFull(on_full))
        loop = asyncio.get_running_loop()
        op._loop, op._fut = loop, loop.create_future()
        self._submit(op)
        return await op._fut

    def put_sync(self, points: Sequence[Point], *, on_full: OnFull = OnFull.refuse) -> int:
        if not points:
            return 0
        return self._call(self._put_op(points, OnFull(on_full)))

    _INLINE_ENCODE = 512

    def _put_op(self, points: Sequence[Point], on_full: OnFull) -> _Op:
        """Small puts (a poll, a GPS message) are encoded by the caller, so the writer thread's
        transaction is only SQL and fsync and callers do not wait for each other's encoding; big
        ones are encoded by the writer, off the caller's event loop."""
        if len(points) <= self._INLINE_ENCODE:
            groups, bad = self._encode(points)
            return _Op("put_enc", groups, bad, len(points), on_full)
        return _Op("put", points, on_full)

    async def put_lines(self, lines: Sequence[str], *, on_full: OnFull = OnFull.refuse) -> int:
        """Commit already-encoded line-protocol lines (trusted: not re-validated)."""
        if not lines:
            return 0
        return await self._acall(_Op("put_lines", list(lines), OnFull(on_full)))

    def dead_letter_payload(self, source: str, raw: bytes, reason: str, topic: str = "") -> None:
        """Keep a payload a collector could not decode, with its reason. Durable on return."""
        self._call(_Op("dead", [(source, topic, bytes(raw), reason, KIND_PAYLOAD)]))

    async def dead_letter_payload_async(self, source: str, raw: bytes, reason: str, topic: str = "") -> None:
        await self._acall(_Op("dead", [(source, topic, bytes(raw), reason, KIND_PAYLOAD)]))

    # -- public: consumers ----------------------------------------------------------------------------

    def register_consumer(self, name: str, measurements: Iterable[str] | None = None) -> ConsumerStatus:
        """A consumer of the log, durable across restarts: ``measurements`` it takes (None: all).

        A new consumer starts at the head: it gets what is committed from now on (what the log
        still holds is there only because another consumer has not taken it yet: an accident of
        timing, not a history). Registering an existing one keeps its cursor; a changed set of
        measurements applies from its cursor on."""
        if not _CONSUMER_NAME.match(name):
            raise OutboxError(f"consumer name {name!r}: lower-case letters, digits, '-' and '_', up to 64")
        if name == LOCAL and measurements is not None:
            raise OutboxError("the local consumer takes every measurement")
        ms = None if measurements is None else frozenset(measurements)
        st = self._call(_Op("register", name, ms))
        if self.metrics is not None:
            self.metrics.bind_consumer(name, lambda: self.lag(name))
        return st

    def drop_consumer(self, name: str) -> int:
        """Forget a consumer (and what it had not taken: retention no longer waits for it).
        Returns the points it had not taken. Logged."""
        if name == LOCAL:
            raise OutboxError("the local consumer cannot be dropped")
        n = self._call(_Op("unregister", name))
        if self.metrics is not None:
            self.metrics.unbind_consumer(name)
        return n

    def consumers(self) -> list[ConsumerStatus]:
        return [c.status() for c in self._state.consumers.values()]

    def lag(self, consumer: str = LOCAL) -> int:
        """Points after ``consumer``'s cursor that it takes (kept in memory, exact); 0 if unknown."""
        c = self._state.consumers.get(consumer)
        return 0 if c is None else c.lag

    def batch(self, max_points: int = 5000, after_id: int | None = None, consumer: str = LOCAL) -> Batch | None:
        """The oldest rows for ``consumer`` after its cursor (or after ``after_id`` when that is
        further on), up to ``max_points`` points (at least one row).

        ``None`` means nothing is waiting for it (it is not an error).
        """
        st = self._state
        c = st.consumers.get(consumer)
        if c is None:
            raise OutboxError(f"{self.path}: no consumer {consumer!r}")
        after = c.cursor if after_id is None else max(after_id, c.cursor)
        limit = max(1, max_points)
        if c.measurements is None:
            sql, args = "SELECT id, n, lines, target FROM outbox WHERE id > ? ORDER BY id LIMIT ?", [after, limit]
        else:
            ms = sorted(c.measurements)
            if not ms:
                return None
            sql = (f"SELECT id, n, lines, target FROM outbox WHERE measurement IN ({','.join('?' * len(ms))}) "
                   "AND id > ? ORDER BY id LIMIT ?")
            args = [*ms, after, limit]
        head = st.head  # committed before the read below starts: every row up to it is in its snapshot
        ids: list[int] = []
        lines: list[str] = []
        upto = after
        examined = 0
        cut = False
        with self._rlock:
            if self._closed:
                raise OutboxError(f"{self.path}: outbox is closed")
            try:
                cur = self._rdb.execute(sql, args)
                for rid, n, text, target in cur:
                    examined += 1
                    if target is not None and target != consumer:
                        upto = rid
                        continue
                    if ids and len(lines) + n > max_points:
                        cut = True
                        break
                    ids.append(rid)
                    upto = rid
                    if n == 1:
                        lines.append(text)
                    else:
                        lines.extend(text.split(SEP))
                cur.close()
            except sqlite3.Error as e:
                raise OutboxError(f"{self.path}: cannot read: {e}") from e
        if not ids:
            return None
        if c.measurements is not None and not cut and examined < limit:
            upto = max(upto, head)  # everything up to the head was examined: the rest is not for it
        return Batch(tuple(ids), tuple(lines), upto)

    def ack(self, upto_id: int, rejected: Sequence[tuple[str, str]] = (), consumer: str = LOCAL) -> int:
        """``consumer`` has every row up to ``upto_id``: its cursor moves there, in one transaction
        with the removal of rows every consumer now has. Returns the points it confirmed.

        ``rejected``: (line, reason) pairs its store refused, moved to the dead-letter table in the
        same transaction.
        """
        return self._call(_Op("ack", consumer, upto_id, list(rejected)))

    async def ack_async(self, upto_id: int, rejected: Sequence[tuple[str, str]] = (), consumer: str = LOCAL) -> int:
        return await self._acall(_Op("ack", consumer, upto_id, list(rejected)))

    def waiting(self, consumer: str = LOCAL, upto_id: int | None = None) -> bool:
        """Whether a row for ``consumer`` after its committed cursor (and at most ``upto_id``) is there."""
        st = self._state
        c = st.consumers.get(consumer)
        if c is None:
            return False
        w, args = c.want_sql()
        hi = st.head if upto_id is None else upto_id
        with self._rlock:
            if self._closed:
                return False
            row = self._rdb.execute(f"SELECT 1 FROM outbox WHERE id > ? AND id <= ? AND {w} LIMIT 1",
                                    [c.cursor, hi, *args]).fetchone()
        return row is not None

    def depth(self) -> int:
        """Points in the log, waiting for at least one consumer (kept in memory, exact)."""
        return self._state.points

    def last_id(self) -> int:
        """Id of the newest row ever committed (0 if none)."""
        return self._state.head

    @property
    def holding(self) -> bool:
        """Refusing puts of sources that can hold, until consumers bring the log below ``resume_bytes``."""
        return self._state.holding

    def oldest_age_s(self) -> float | None:
        """Age of the oldest point in the log in seconds, ``None`` when empty."""
        with self._rlock:
            if self._closed:
                return None
            row = self._rdb.execute("SELECT added_ns FROM outbox ORDER BY id LIMIT 1").fetchone()
        if row is None:
            return None
        return max(0.0, (self.clock.now_ns() - row[0]) / 1e9)

    @property
    def dropped(self) -> int:
        """Points the full log dropped or thinned (all time)."""
        return self._counters.get(C_DROPPED, 0) + self._counters.get(C_THINNED, 0)

    @property
    def committed(self) -> int:
        return self._counters.get(C_COMMITTED, 0)

    def counters(self) -> dict[str, int]:
        return dict(self._counters)

    def on_commit(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` (from the writer thread) after every commit that added points.

        Returns a function that removes the callback.
        """
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback) if callback in self._listeners else None

    # -- public: inspection and maintenance (``edge outbox``) ---------------------------------------

    def dead_letters(self, limit: int = 100, kind: str | None = None, offset_id: int | None = None) -> list[DeadLetter]:
        """Newest first. ``kind``: ``point``, ``invalid`` or ``payload``; ``offset_id``: ids below it."""
        q = "SELECT id, at_ns, source, topic, payload, reason, kind FROM dead_letter WHERE 1=1"
        args: list[Any] = []
        if kind:
            q += " AND kind = ?"
            args.append(kind)
        if offset_id is not None:
            q += " AND id < ?"
            args.append(offset_id)
        q += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        with self._rlock:
            rows = self._rdb.execute(q, args).fetchall()
        return [DeadLetter(r[0], r[1], r[2], r[3], bytes(r[4]), r[5], r[6]) for r in rows]

    def dropped_points(self, limit: int | None = None, after_id: int = 0, reason: str | None = None,
                       newest: bool = False) -> list[DroppedPoint]:
        """The record of thinned and dropped points, oldest first (it keeps the newest
        ``dropped_keep_bytes``); ``newest``: the last ``limit`` of them."""
        q = "SELECT id, at_ns, reason, missed, line FROM dropped WHERE id > ?"
        args: list[Any] = [after_id]
        if reason:
            q += " AND reason = ?"
            args.append(reason)
        q += " ORDER BY id DESC" if newest else " ORDER BY id"
        if limit is not None:
            q += " LIMIT ?"
            args.append(limit)
        with self._rlock:
            rows = self._rdb.execute(q, args).fetchall()
        if newest:
            rows.reverse()
        return [DroppedPoint(r[0], r[1], r[2], tuple(m for m in r[3].split(",") if m), r[4]) for r in rows]

    def status(self) -> OutboxStatus:
        st = self._state
        cons = []
        with self._rlock:
            row = self._rdb.execute("SELECT count(*), coalesce(sum(n),0), coalesce(sum(bytes),0) FROM outbox").fetchone()
            dl = dict(self._rdb.execute("SELECT kind, count(*) FROM dead_letter GROUP BY kind").fetchall())
            counters = dict(self._rdb.execute("SELECT name, value FROM counters").fetchall())
            n_dropped = self._rdb.execute("SELECT count(*) FROM dropped").fetchone()[0]
            for c in st.consumers.values():
                w, args = c.want_sql()
                r = self._rdb.execute(f"SELECT added_ns FROM outbox WHERE id > ? AND {w} ORDER BY id LIMIT 1",
                                      [c.cursor, *args]).fetchone()
                age = None if r is None else max(0.0, (self.clock.now_ns() - r[0]) / 1e9)
                cons.append(replace(c.status(), oldest_age_s=age))
        size = 0
        for suffix in ("", "-wal"):
            try:
                size += Path(str(self.path) + suffix).stat().st_size
            except OSError:
                pass
        return OutboxStatus(str(self.path), row[1], row[0], row[2], self.max_bytes, self.oldest_age_s(),
                            size, dl, counters, cons, st.holding, n_dropped)

    def replay_dead_letters(self, ids: Iterable[int] | None = None,
                            decode: Callable[[str, str, bytes], Sequence[Point]] | None = None) -> int:
        """Move dead-lettered points back into the log (at its end); returns how many points.

        Refused points (kind ``point``) are replayed as they are, to the consumer whose store
        refused them. Payloads (kind ``payload``) are replayed only when ``decode(source, topic,
        raw)`` is given (the collector's decoder), to every consumer; one that still fails keeps
        its row with the new reason. ``invalid`` rows cannot be replayed.
        """
        return self._call(_Op("replay", None if ids is None else list(ids), decode))

    def purge_dead_letters(self, ids: Iterable[int] | None = None, kind: str | None = None) -> int:
        return self._call(_Op("purge_dead", None if ids is None else list(ids), kind))

    def purge_outbox(self) -> int:
        """Delete every point in the log, for every consumer (operator action; counted as dropped).
        Returns points deleted."""
        return self._call(_Op("purge_outbox"))

    def import_outbox(self, path: str | Path, consumer: str) -> int:
        """Take over an outbox file of an earlier version that fed one consumer (the upstream's
        ``upstream_outbox.sqlite``): its waiting points go into this log for ``consumer`` only, its
        dead letters into this one's (source = the consumer), in one transaction; then the file is
        renamed ``<name>.imported``. Returns the points imported.

        A crash between the commit and the rename imports the file again at the next start: the
        consumer then gets those points twice, which a store treats as the same points."""
        path = Path(path)
        if consumer not in self._state.consumers:
            raise OutboxError(f"{self.path}: no consumer {consumer!r} to import {path} for")
        try:
            old = sqlite3.connect(path, timeout=30.0)
            try:
                cols = [r[1] for r in old.execute("PRAGMA table_info(outbox)").fetchall()]
                col = "lines" if "lines" in cols else "line"
                has_n = "n" in cols
                lines: list[str] = []
                for text, n in old.execute(f"SELECT {col}, {'n' if has_n else '1'} FROM outbox ORDER BY id"):
                    lines.extend(text.split(SEP) if n > 1 else [text])
                dead: list[tuple] = []
                if old.execute("SELECT 1 FROM sqlite_master WHERE name = 'dead_letter'").fetchone():
                    dead = [(at, consumer if src == "sink" else src, topic, bytes(payload), reason, kind) for
                            at, src, topic, payload, reason, kind in
                            old.execute("SELECT at_ns, source, topic, payload, reason, kind FROM dead_letter ORDER BY id")]
            finally:
                old.close()
        except sqlite3.Error as e:
            raise OutboxError(f"{path}: cannot read the earlier outbox: {e}") from e
        n = self._call(_Op("import", lines, consumer, dead))
        done = path.with_name(path.name + ".imported")
        path.replace(done)
        for suffix in ("-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        log.warning("earlier outbox imported path=%s consumer=%s points=%d dead_letters=%d renamed_to=%s",
                    path, consumer, n, len(dead), done)
        return n

    def close(self) -> None:
        with self._cond:
            if self._closing:
                already = True
            else:
                already = False
                self._closing = True
                self._cond.notify_all()
        if not already:
            self._thread.join()
            self._ckpt_wake.set()
            self._ckpt_thread.join()
            with self._rlock:
                self._closed = True
                self._rdb.close()
            self._db.close()

    def __enter__(self) -> "Outbox":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the checkpointer thread ----------------------------------------------------------------------

    _CKPT_EVERY_S = 0.5

    def _checkpointer(self) -> None:
        """Copy the WAL into the database file in the background (PASSIVE: never blocks commits)."""
        db = self._connect()
        try:
            last = self.transactions
            while not self._closing:
                self._ckpt_wake.wait(self._CKPT_EVERY_S)
                if self.transactions == last and not self._closing:
                    continue
                last = self.transactions
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as e:  # busy or I/O trouble: the next round tries again
                    log.debug("outbox checkpoint skipped path=%s error=%s", self.path, e)
            try:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            except sqlite3.Error:
                pass
        finally:
            db.close()

    # -- the writer thread --------------------------------------------------------------------------

    def _submit(self, op: _Op) -> None:
        with self._cond:
            if self._closing:
                raise OutboxError(f"{self.path}: outbox is closed")
            self._ops.append(op)
            self._cond.notify()

    def _call(self, op: _Op) -> Any:
        if threading.current_thread() is self._thread:
            raise OutboxError("outbox method called from its own writer thread (from an on_commit callback?)")
        op._event = threading.Event()
        self._submit(op)
        op._event.wait()
        if op.error is not None:
            raise op.error
        return op.result

    async def _acall(self, op: _Op) -> Any:
        loop = asyncio.get_running_loop()
        op._loop, op._fut = loop, loop.create_future()
        self._submit(op)
        return await op._fut

    def _writer(self) -> None:
        while True:
            with self._cond:
                while not self._ops and not self._closing:
                    self._cond.wait()
                if not self._ops and self._closing:
                    return
                ops = list(self._ops)
                self._ops.clear()
            try:
                self._commit(ops)
            except BaseException as e:  # never let the writer die: fail the callers instead
                err = e if isinstance(e, EdgeError) else OutboxError(f"{self.path}: commit failed: {e}")
                for op in ops:
                    if op.error is None:
                        op.error = err
                log.error("outbox commit failed path=%s ops=%d error=%s", self.path, len(ops), e)
            for op in ops:
                op.finish()

    def _encode(self, points: Sequence[Point]) -> tuple[dict[str, list[str]], list[tuple[str, str, bytes, str, str]]]:
        """Lines per measurement (in order within each), and the points that are not line protocol."""
        enc = self._enc.line
        groups: dict[str, list[str]] = {}
        bad: list[tuple[str, str, bytes, str, str]] = []
        cur_m: str | None = None
        cur: list[str] = []
        for p in points:
            try:
                ln = enc(p)
                m = p.measurement
            except LineProtocolError as e:
                bad.append(("outbox", "", repr(p).encode("utf-8", "replace"), str(e), KIND_INVALID))
                continue
            except (AttributeError, TypeError, ValueError) as e:  # not a Point at all
                bad.append(("outbox", "", repr(p).encode("utf-8", "replace"), f"not a point: {e}", KIND_INVALID))
                continue
            if m is not cur_m and m != cur_m:
                got = groups.get(m)
                cur = groups[m] = [] if got is None else got
                cur_m = m
            cur.append(ln)
        return groups, bad

    @staticmethod
    def _make_rows(groups: dict[tuple[str, int, str | None], list[str]], now_ns: int) -> list[tuple]:
        """Rows (lines, bytes, added_ns, n, measurement, lane, target) of up to ``_ROW_POINTS`` lines."""
        rows = []
        for (m, lane, target), lines in groups.items():
            chunk: list[str] = []
            for ln in lines:
                if SEP in ln:  # a string field holding the separator gets a row of its own, in order
                    if chunk:
                        text = SEP.join(chunk)
                        rows.append((text, _nbytes(text), now_ns, len(chunk), m, lane, target))
                        chunk = []
                    rows.append((ln, _nbytes(ln), now_ns, 1, m, lane, target))
                    continue
                chunk.append(ln)
                if len(chunk) >= _ROW_POINTS:
                    text = SEP.join(chunk)
                    rows.append((text, _nbytes(text), now_ns, len(chunk), m, lane, target))
                    chunk = []
            if chunk:
                text = SEP.join(chunk)
                rows.append((text, _nbytes(text), now_ns, len(chunk), m, lane, target))
        return rows

    def _insert(self, s: _State, rows: list[tuple]) -> int:
        """Append rows (in the open transaction); returns the points added."""
        if not rows:
            return 0
        db = self._db
        sql = "INSERT INTO outbox(lines, bytes, added_ns, n, measurement, lane, target) VALUES (?,?,?,?,?,?,?)"
        if len(rows) == 1:  # a group commit of positions: one row, and its id without another statement
            s.head = db.execute(sql, rows[0]).lastrowid
        else:
            db.executemany(sql, rows)
            s.head = db.execute("SELECT last_insert_rowid()").fetchone()[0]
        pts = 0
        for r in rows:
            pts += r[3]
            s.bytes += r[1]
        s.rows += len(rows)
        s.points += pts
        cons = s.consumers.values()
        if len(rows) == 1 or any(c.measurements is not None for c in cons) or any(r[6] is not None for r in rows):
            for r in rows:
                for c in cons:
                    if c.wants(r[4], r[6]):
                        c.lag += r[3]
        else:  # every consumer takes every row
            for c in cons:
                c.lag += pts
        return pts

    def _commit(self, ops: list[_Op]) -> None:
        now = self.clock.now_ns()
        # encode before taking the write lock: CPU work does not need the database
        puts: list[tuple[_Op, dict[str, list[str]], int, int, OnFull]] = []
        all_bad: list[tuple] = []
        n_received = 0
        for op in ops:
            if op.kind == "put":
                groups, bad = self._encode(op.args[0])
                policy = op.args[1]
                n_received += len(op.args[0])
            elif op.kind == "put_enc":
                groups, bad, n, policy = op.args
                n_received += n
            elif op.kind == "put_lines":
                groups, bad, policy = _group_lines(op.args[0]), [], op.args[1]
                n_received += len(op.args[0])
            else:
                continue
            all_bad.extend(bad)
            nl = nb = 0
            for lines in groups.values():  # the bytes these lines take in rows (exact unless split over rows)
                nl += len(lines)
                nb += _nbytes("".join(lines)) + len(lines) - 1
            puts.append((op, groups, nl, nb, policy))
        s = self._state.copy()
        db = self._db
        delta = {C_COMMITTED: 0, C_DROPPED: 0, C_THINNED: 0, C_HELD: 0, C_DEAD_POINTS: 0, C_DEAD_PAYLOADS: 0,
                 C_REJECTED: 0}
        events: list[str] = []
        was_holding = s.holding
        try:
            db.execute("BEGIN IMMEDIATE")
            moved = False
            for op in ops:
                if op.kind not in ("put", "put_enc", "put_lines"):
                    moved |= self._apply(op, now, s, delta)
            if moved:
                self._retain(s)
                if s.holding and s.bytes <= self.resume_bytes:
                    s.holding = False
            pending: dict[tuple[str, int, str | None], list[str]] = {}
            added = 0
            for op, groups, nl, nb, policy in puts:
                if policy is OnFull.refuse:
                    # taken while the log is under its bound, so a batch larger than the room left (a
                    # subscriber's 2,000 positions) is not refused for ever: the bound may be passed by
                    # one put of a source that can hold, never by readings that thin
                    if s.holding or ((s.rows or added) and s.bytes + added >= self.max_bytes):
                        s.holding = True
                        op.error = OutboxFull(f"{self.path}: outbox full ({s.bytes:,} of {self.max_bytes:,} bytes): "
                                              f"{nl} point(s) not taken; offer them again later")
                        delta[C_HELD] += nl
                        continue
                    lane = LANE_HOLD
                elif policy is OnFull.thin:
                    lane = LANE_THIN
                    over = s.bytes + added + nb - self.max_bytes
                    if over > 0:
                        self._make_room(s, over, now, delta, events)
                        if s.bytes + added + nb > self.max_bytes and (s.rows or added):
                            # nothing left to thin or drop (the log holds what sources that can wait
                            # left with us): these readings are the ones dropped
                            self._record(s, now, REASON_DROPPED, 1 << 62, [ln for v in groups.values() for ln in v],
                                         groups)
                            delta[C_DROPPED] += nl
                            events.append(REASON_DROPPED)
                            op.result = 0
                            continue
                else:
                    lane = LANE_HOLD
                for m, lines in groups.items():
                    got = pending.get((m, lane, None))
                    if got is None:
                        pending[(m, lane, None)] = list(lines)
                    else:
                        got.extend(lines)
                added += nb
                op.result = nl
            delta[C_COMMITTED] += self._insert(s, self._make_rows(pending, now))
            if all_bad:
                db.executemany("INSERT INTO dead_letter(at_ns, source, topic, payload, reason, kind) "
                               "VALUES (?,?,?,?,?,?)", [(now, *b) for b in all_bad])
                delta[C_REJECTED] += len(all_bad)
            if s.dropped_bytes > self.dropped_keep_bytes:
                self._trim_dropped(s)
            bumps = [(name, v) for name, v in delta.items() if v]
            if bumps:  # one statement: every call into SQLite is a round of the GIL for this thread
                db.executemany("INSERT INTO counters(name, value) VALUES (?, ?) "
                               "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value", bumps)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            for op in ops:
                op.result = None
            raise
        # committed: publish the new state
        self._state = s
        self.transactions += 1
        for name, v in delta.items():
            if v:
                self._counters[name] = self._counters.get(name, 0) + v
        if s.holding and not was_holding:
            events.append("hold")
        self._after_commit(ops, delta, n_received, events, released=was_holding and not s.holding)

    def _apply(self, op: _Op, now: int, s: _State, delta: dict[str, int]) -> bool:
        """Apply a non-put op inside the open transaction; True when cursors moved or consumers changed."""
        db = self._db
        if op.kind == "ack":
            name, upto, rejected = op.args
            c = s.consumers.get(name)
            if c is None:
                op.error = OutboxError(f"{self.path}: no consumer {name!r}")
                return False
            upto = min(upto, s.head)
            n = 0
            moved = upto > c.cursor
            if moved:
                w, args = c.want_sql()
                n = db.execute(f"SELECT coalesce(sum(n),0) FROM outbox WHERE id > ? AND id <= ? AND {w}",
                               [c.cursor, upto, *args]).fetchone()[0]
                db.execute("UPDATE consumer SET cursor = ? WHERE name = ?", (upto, name))
                c.cursor = upto
                c.lag -= n
            if rejected:
                source = "sink" if name == LOCAL else name
                db.executemany("INSERT INTO dead_letter(at_ns, source, topic, payload, reason, kind) "
                               "VALUES (?, ?, '', ?, ?, 'point')",
                               [(now, source, ln.encode("utf-8"), reason) for ln, reason in rejected])
                delta[C_DEAD_POINTS] += len(rejected)
            op.result = n
            return moved
        if op.kind == "dead":
            db.executemany("INSERT INTO dead_letter(at_ns, source, topic, payload, reason, kind) VALUES (?,?,?,?,?,?)",
                           [(now, *row) for row in op.args[0]])
            delta[C_DEAD_PAYLOADS] += len(op.args[0])
            return False
        if op.kind == "replay":
            ids, decode = op.args
            q = "SELECT id, source, topic, payload, kind FROM dead_letter WHERE kind IN ('point', 'payload')"
            rows = db.execute(q + " ORDER BY id").fetchall()
            if ids is not None:
                wanted = set(ids)
                rows = [r for r in rows if r[0] in wanted]
            groups: dict[tuple[str, int, str | None], list[str]] = {}
            done: list[int] = []
            n = 0
            for rid, source, topic, payload, kind in rows:
                if kind == KIND_POINT:
                    # back to the consumer whose store refused it (``sink``: the local one)
                    target = LOCAL if source == "sink" else source if source in s.consumers else None
                    ln = bytes(payload).decode("utf-8")
                    groups.setdefault((_measurement_of(ln), LANE_HOLD, target), []).append(ln)
                    done.append(rid)
                    n += 1
                elif decode is not None:
                    try:
                        pts = decode(source, topic, bytes(payload))
                        for p in pts:
                            groups.setdefault((p.measurement, LANE_HOLD, None), []).append(self._enc.line(p))
                        n += len(pts)
                        done.append(rid)
                    except EdgeError as e:
                        db.execute("UPDATE dead_letter SET reason = ?, at_ns = ? WHERE id = ?", (str(e), now, rid))
            self._insert(s, self._make_rows(groups, now))
            db.executemany("DELETE FROM dead_letter WHERE id = ?", [(i,) for i in done])
            op.result = n
            delta[C_COMMITTED] += n
            return False
        if op.kind == "import":
            lines, target, dead = op.args
            groups = {(m, LANE_HOLD, target): ls for m, ls in _group_lines(lines).items()}
            n = self._insert(s, self._make_rows(groups, now))
            if dead:
                db.executemany("INSERT INTO dead_letter(at_ns, source, topic, payload, reason, kind) "
                               "VALUES (?,?,?,?,?,?)", dead)
            delta[C_COMMITTED] += n
            op.result = n
            return False
        if op.kind == "purge_dead":
            ids, kind = op.args
            q, args = "DELETE FROM dead_letter WHERE 1=1", []
            if kind:
                q += " AND kind = ?"
                args.append(kind)
            if ids is None:
                op.result = db.execute(q, args).rowcount
            else:
                op.result = sum(db.execute(q + " AND id = ?", [*args, i]).rowcount for i in ids)
            return False
        if op.kind == "purge_outbox":
            r = db.execute("SELECT coalesce(sum(n),0) FROM outbox").fetchone()
            db.execute("DELETE FROM outbox")
            db.execute("UPDATE consumer SET cursor = ?", (s.head,))
            for c in s.consumers.values():
                c.cursor, c.lag = s.head, 0
            s.rows = s.points = s.bytes = 0
            delta[C_DROPPED] += r[0]
            op.result = r[0]
            log.warning("outbox purged path=%s points=%d", self.path, r[0])
            return True
        if op.kind == "register":
            name, ms = op.args
            text = None if ms is None else ",".join(sorted(ms))
            c = s.consumers.get(name)
            if c is None:
                db.execute("INSERT INTO consumer(name, cursor, measurements, added_ns) VALUES (?,?,?,?)",
                           (name, s.head, text, now))
                c = s.consumers[name] = _Consumer(name, s.head, ms)
                log.info("outbox consumer added path=%s consumer=%s measurements=%s starts_after_id=%d",
                         self.path, name, text or "all", s.head)
            elif c.measurements != ms:
                db.execute("UPDATE consumer SET measurements = ? WHERE name = ?", (text, name))
                c.measurements = ms
                w, args = c.want_sql()
                c.lag = db.execute(f"SELECT coalesce(sum(n),0) FROM outbox WHERE id > ? AND {w}",
                                   [c.cursor, *args]).fetchone()[0]
                log.info("outbox consumer now takes other measurements path=%s consumer=%s measurements=%s",
                         self.path, name, text or "all")
            s.kept_upto = 0
            op.result = c.status()
            return True
        if op.kind == "unregister":
            (name,) = op.args
            c = s.consumers.pop(name, None)
            if c is None:
                op.result = 0
                return False
            db.execute("DELETE FROM consumer WHERE name = ?", (name,))
            r = db.execute("SELECT count(*), coalesce(sum(n),0), coalesce(sum(bytes),0) FROM outbox WHERE target = ?",
                           (name,)).fetchone()
            if r[0]:  # rows for it alone (replays of what its store refused, an imported earlier outbox)
                db.execute("DELETE FROM outbox WHERE target = ?", (name,))
                s.rows, s.points, s.bytes = s.rows - r[0], s.points - r[1], s.bytes - r[2]
            s.kept_upto = 0
            op.result = c.lag
            log.warning("outbox consumer removed path=%s consumer=%s points_it_had_not_taken=%d "
                        "(no longer kept for it)", self.path, name, c.lag)
            return True
        raise OutboxError(f"unknown outbox op {op.kind!r}")

    # -- retention, thinning and dropping (inside the writer's open transaction) ---------------------

    def _retain(self, s: _State) -> None:
        """Delete the rows every consumer has: below every cursor, or not wanted by the consumers
        whose cursor is below them. Rows kept for a lagging consumer are examined once
        (``kept_upto``), not at every acknowledgement of the others."""
        db = self._db
        cons = list(s.consumers.values())
        lo = min(c.cursor for c in cons)
        hi = max(c.cursor for c in cons)
        gone = [0, 0, 0]
        r = db.execute("SELECT count(*), coalesce(sum(n),0), coalesce(sum(bytes),0) FROM outbox WHERE id <= ?",
                       (lo,)).fetchone()
        if r[0]:
            db.execute("DELETE FROM outbox WHERE id <= ?", (lo,))
            gone = list(r)
        start = max(lo, s.kept_upto)
        if hi > start:
            where, args = "id > ? AND id <= ?", [start, hi]
            for c in cons:
                if c.cursor < hi:  # rows after its cursor that it takes stay
                    w, a = c.want_sql()
                    where += f" AND NOT (id > ? AND {w})"
                    args += [c.cursor, *a]
            r = db.execute(f"SELECT count(*), coalesce(sum(n),0), coalesce(sum(bytes),0) FROM outbox WHERE {where}",
                           args).fetchone()
            if r[0]:
                db.execute(f"DELETE FROM outbox WHERE {where}", args)
                gone = [gone[0] + r[0], gone[1] + r[1], gone[2] + r[2]]
            # with two consumers exact; with more, a row kept for one laggard waits for the slowest
            s.kept_upto = hi
        s.rows -= gone[0]
        s.points -= gone[1]
        s.bytes -= gone[2]

    def _missed(self, s: _State, rid: int, m: str, target: str | None) -> str:
        return ",".join(c.name for c in s.consumers.values() if c.cursor < rid and c.wants(m, target))

    def _record(self, s: _State, now: int, reason: str, rid: int, lines: list[str],
                groups: dict[str, list[str]] | None = None, m: str = "", target: str | None = None) -> None:
        """Keep the lines thinned or dropped in the ``dropped`` record (trimmed at the commit's end)."""
        if groups is not None:
            rows = [(now, reason, self._missed(s, rid, gm, None), ln) for gm, ls in groups.items() for ln in ls]
        else:
            missed = self._missed(s, rid, m, target)
            rows = [(now, reason, missed, ln) for ln in lines]
        self._db.executemany("INSERT INTO dropped(at_ns, reason, missed, line) VALUES (?,?,?,?)", rows)
        s.dropped_bytes += sum(len(r[3]) for r in rows)

    def _trim_dropped(self, s: _State) -> None:
        db = self._db
        excess = s.dropped_bytes - self.dropped_keep_bytes
        freed, upto = 0, None
        for rid, nb in db.execute("SELECT id, length(line) FROM dropped ORDER BY id"):
            freed += nb
            upto = rid
            if freed >= excess:
                break
        if upto is not None:
            db.execute("DELETE FROM dropped WHERE id <= ?", (upto,))
            s.dropped_bytes -= freed

    def _make_room(self, s: _State, need: int, now: int, delta: dict[str, int], events: list[str]) -> None:
        """Free ``need`` bytes of thin-lane rows: thin them (pass after pass), then drop spans, oldest first."""
        freed = 0
        while freed < need:
            f = self._thin_pass(s, need - freed, now, delta)
            if f is None:
                break
            freed += f
            if REASON_THINNED not in events and delta[C_THINNED]:
                events.append(REASON_THINNED)
        if freed < need:
            if self._drop_spans(s, need - freed, now, delta):
                events.append(REASON_DROPPED)

    def _thin_pass(self, s: _State, need: int, now: int, delta: dict[str, int]) -> int | None:
        """Thin one span of the least-thinned thin-lane rows; bytes freed, None when nothing is left."""
        db = self._db
        level = db.execute("SELECT min(level) FROM outbox WHERE lane = ? AND level < ?",
                           (LANE_THIN, self.thin.max_passes)).fetchone()[0]
        if level is None:
            return None
        chunk: list[tuple[int, int, int, list[str], str, str | None]] = []
        series: dict[Any, list[tuple[tuple[int, int], int, tuple]]] = {}
        counters = self.thin.counter_fields
        nbytes = nlines = 0
        cur = db.execute("SELECT id, n, bytes, lines, measurement, target FROM outbox WHERE lane = ? AND level = ? "
                         "ORDER BY id", (LANE_THIN, level))
        # a span big enough to free what is needed and to hold several readings of each series in it
        for rid, n, nb, text, m, target in cur:
            lines = text.split(SEP) if n > 1 else [text]
            ci = len(chunk)
            chunk.append((rid, n, nb, lines, m, target))
            for li, ln in enumerate(lines):
                key, t, vals = reading_of(ln, counters)
                series.setdefault(key, []).append(((ci, li), t, vals))
            nbytes += nb
            nlines += len(lines)
            if nbytes >= 4 * need and nlines >= 8 * len(series):
                break
        cur.close()
        kept_refs = keep(series, self.thin, self._days)
        updates: list[tuple] = []
        untouched: list[tuple[int, int]] = []
        deletes: list[tuple[int]] = []
        freed = 0
        for ci, (rid, _n, nb, lines, m, target) in enumerate(chunk):
            kept = [ln for li, ln in enumerate(lines) if (ci, li) in kept_refs]
            if len(kept) == len(lines) or (len(kept) > 1 and any(SEP in ln for ln in kept)):
                untouched.append((level + 1, rid))
                continue
            gone = [ln for li, ln in enumerate(lines) if (ci, li) not in kept_refs]
            self._record(s, now, REASON_THINNED, rid, gone, m=m, target=target)
            if kept:
                text = SEP.join(kept)
                size = _nbytes(text)
                updates.append((text, size, len(kept), level + 1, rid))
            else:
                size = 0
                deletes.append((rid,))
                s.rows -= 1
            freed += nb - size
            s.bytes -= nb - size
            s.points -= len(gone)
            delta[C_THINNED] += len(gone)
            for c in s.consumers.values():
                if c.cursor < rid and c.wants(m, target):
                    c.lag -= len(gone)
        if updates:
            db.executemany("UPDATE outbox SET lines = ?, bytes = ?, n = ?, level = ? WHERE id = ?", updates)
        if untouched:
            db.executemany("UPDATE outbox SET level = ? WHERE id = ?", untouched)
        if deletes:
            db.executemany("DELETE FROM outbox WHERE id = ?", deletes)
        return freed

    def _drop_spans(self, s: _State, need: int, now: int, delta: dict[str, int]) -> bool:
        """Drop whole thin-lane rows, oldest first, until ``need`` bytes are free (or none is left)."""
        db = self._db
        victims = []
        freed = 0
        cur = db.execute("SELECT id, n, bytes, lines, measurement, target FROM outbox WHERE lane = ? ORDER BY id",
                         (LANE_THIN,))
        for row in cur:
            victims.append(row)
            freed += row[2]
            if freed >= need:
                break
        cur.close()
        if not victims:
            return False
        for rid, n, nb, text, m, target in victims:
            self._record(s, now, REASON_DROPPED, rid, text.split(SEP) if n > 1 else [text], m=m, target=target)
            for c in s.consumers.values():
                if c.cursor < rid and c.wants(m, target):
                    c.lag -= n
            s.points -= n
            s.bytes -= nb
            delta[C_DROPPED] += n
        s.rows -= len(victims)
        db.executemany("DELETE FROM outbox WHERE id = ?", [(v[0],) for v in victims])
        return True

    def _after_commit(self, ops: list[_Op], delta: dict[str, int], received: int, events: list[str],
                      released: bool) -> None:
        m = self.metrics
        now = time.perf_counter()
        if m is not None:
            if received:
                m.points_received.inc(received)
            if delta[C_COMMITTED]:
                m.points_committed.inc(delta[C_COMMITTED])
            if delta[C_DROPPED] or delta[C_THINNED]:
                m.points_dropped.inc(delta[C_DROPPED] + delta[C_THINNED])
            if delta[C_THINNED]:
                m.points_thinned.inc(delta[C_THINNED])
            if delta[C_HELD]:
                m.points_held_back.inc(delta[C_HELD])
            if delta[C_DEAD_POINTS]:
                m.points_dead_lettered.inc(delta[C_DEAD_POINTS])
            if delta[C_DEAD_PAYLOADS]:
                m.payloads_dead_lettered.inc(delta[C_DEAD_PAYLOADS])
            if delta[C_REJECTED]:
                m.points_rejected.inc(delta[C_REJECTED])
            for op in ops:
                if op.kind in ("put", "put_enc"):
                    m.commit_latency.observe(now - op.t0)
        if delta[C_REJECTED]:
            log.warning("outbox refused points reason=invalid_line_protocol count=%d (dead-lettered)", delta[C_REJECTED])
        ep = self._episode
        for k in (C_HELD, C_THINNED, C_DROPPED):
            if delta[k]:
                ep[k] = ep.get(k, 0) + delta[k]
        if events:
            if self._full_since is None:
                self._full_since = now
            for ev in events:
                if "logged:" + ev in ep:  # "hold", "thinned", "dropped": the first of each in an episode is logged
                    continue
                ep["logged:" + ev] = 1
                what = {"hold": "holding back sources that can wait (their points are not acknowledged)",
                        REASON_THINNED: "thinning readings of counters (every Nth, each day's first and last kept)",
                        REASON_DROPPED: "dropping readings of counters, oldest spans first"}[ev]
                log.warning("outbox full path=%s max_bytes=%d: %s", self.path, self.max_bytes, what)
        if released or (self._full_since is not None and not self._state.holding
                        and self._state.bytes <= self.resume_bytes and any(op.kind == "ack" for op in ops)):
            if self._full_since is not None:
                log.warning("outbox has room again path=%s over_s=%.1f held_back_points=%d thinned_points=%d "
                            "dropped_points=%d", self.path, now - self._full_since, ep.get(C_HELD, 0),
                            ep.get(C_THINNED, 0), ep.get(C_DROPPED, 0))
            self._full_since = None
            self._episode = {}
        if delta[C_COMMITTED]:
            for cb in list(self._listeners):
                try:
                    cb()
                except Exception:  # a listener's bug must not stop commits
                    log.exception("outbox on_commit callback failed")
