"""Durable outbox: SQLite in WAL mode between the collectors and the sink.

A point handed to ``put`` is committed (fsync'd by SQLite's WAL, ``synchronous=FULL``) before
``put`` returns, so it survives a crash, a kill -9 and a power cut, and is replayed in order to
the sink until the sink confirms it (at-least-once; a point's identity is measurement + tags +
time, so a replay overwrites the same point in InfluxDB).

How it is built:

* **One writer thread** owns the write connection. ``put``, ``ack``, dead-letter and
  maintenance calls are queued to it; each time it wakes it takes *everything* queued and
  commits it in one transaction (group commit): many concurrent callers, one fsync. Latency is
  the time of one commit plus the wait for the one in progress; throughput grows with load.
* Points are stored as **line-protocol text**, what the sink sends: no re-encoding on the way
  out. The lines of one ``put`` share a row (``n`` points joined by ``\\x1e``), so a commit is a
  few rows, not one row per point.
* **Bounded by bytes**: when the stored text exceeds ``max_bytes``, the oldest rows are deleted
  in the same transaction, counted (``dropped``, metric ``edge_points_dropped_total``) and logged.
* **Dead letters**: points the store refused (with the server's reason), points that could not
  be encoded, and payloads collectors rejected, in table ``dead_letter``; listed, replayed and
  purged by ``edge outbox``.

Readers (``batch``, ``depth``, ``status``) use a second connection: WAL lets them read while
the writer commits.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sqlite3
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from edge.clock import SYSTEM_CLOCK, Clock
from edge.errors import EdgeError, LineProtocolError, OutboxError
from edge.metrics import Metrics
from edge.point import I64_MAX, I64_MIN, Point, _check_ident, _KEY, format_field_value, to_line

log = logging.getLogger(__name__)

SEP = "\x1e"  # ASCII record separator between the lines of one row
_ROW_POINTS = 1000  # at most this many points per row, so batches and drops stay fine-grained
_SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
  id INTEGER PRIMARY KEY AUTOINCREMENT, lines TEXT NOT NULL, bytes INTEGER NOT NULL,
  added_ns INTEGER NOT NULL, n INTEGER NOT NULL DEFAULT 1);
CREATE TABLE IF NOT EXISTS dead_letter (
  id INTEGER PRIMARY KEY AUTOINCREMENT, at_ns INTEGER NOT NULL, source TEXT NOT NULL,
  topic TEXT NOT NULL DEFAULT '', payload BLOB NOT NULL, reason TEXT NOT NULL, kind TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

# persistent counters (survive restarts; shown by `edge outbox status`)
C_COMMITTED, C_DROPPED, C_DEAD_POINTS, C_DEAD_PAYLOADS, C_REJECTED = (
    "committed", "dropped", "dead_lettered_points", "dead_lettered_payloads", "rejected")

KIND_POINT = "point"      # a line the store refused; payload = the line (UTF-8)
KIND_INVALID = "invalid"  # a Point that could not be written as line protocol; payload = repr
KIND_PAYLOAD = "payload"  # raw bytes a collector could not decode


@dataclass(frozen=True, slots=True)
class Batch:
    """Consecutive outbox rows, oldest first. ``ack(batch.last_id)`` confirms all of them."""

    ids: tuple[int, ...]
    lines: tuple[str, ...]

    @property
    def last_id(self) -> int:
        return self.ids[-1]

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


def _nbytes(text: str) -> int:
    """UTF-8 size of a row's text (what the bound counts); ASCII, the usual case, is its length."""
    return len(text) if text.isascii() else len(text.encode("utf-8"))


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
    """The durable outbox. Thread-safe; ``put`` is async, ``put_sync`` is for threads and tools."""

    def __init__(self, path: str | Path, *, max_bytes: int = 1 << 30, metrics: Metrics | None = None,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.path = Path(path)
        self.max_bytes = int(max_bytes)
        self.metrics = metrics
        self.clock = clock
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
            row = self._db.execute("SELECT count(*), coalesce(sum(n),0), coalesce(sum(bytes),0), "
                                   "coalesce(max(id),0) FROM outbox").fetchone()
            self._counters = dict(self._db.execute("SELECT name, value FROM counters").fetchall())
            seq = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name='outbox'").fetchone()
        except sqlite3.Error as e:
            raise OutboxError(f"{self.path}: cannot open outbox: {e}") from e
        self._rows, self._depth, self._bytes = row[0], row[1], row[2]
        self._last_id = max(row[3], seq[0] if seq else 0)
        self._rlock = threading.Lock()
        self._cond = threading.Condition()
        self._ops: deque[_Op] = deque()
        self._closing = False
        self._closed = False
        self.transactions = 0  # commits made by the writer thread (group commit: fewer than calls)
        self._dropping_since: float | None = None
        self._dropped_in_episode = 0
        if metrics is not None:
            metrics.bind_outbox(self.depth, lambda: self.oldest_age_s() or 0.0)
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
        db = self._db
        version = db.execute("PRAGMA user_version").fetchone()[0]
        cols = [r[1] for r in db.execute("PRAGMA table_info(outbox)").fetchall()]
        if cols and "line" in cols and "lines" not in cols:  # first version: one line per row
            db.execute("BEGIN IMMEDIATE")
            db.execute("ALTER TABLE outbox RENAME COLUMN line TO lines")
            db.execute("ALTER TABLE outbox ADD COLUMN n INTEGER NOT NULL DEFAULT 1")
            db.execute("COMMIT")
        db.executescript(_SCHEMA)
        if version != _SCHEMA_VERSION:
            db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")

    # -- public: producer side -----------------------------------------------------------------------

    async def put(self, points: Sequence[Point]) -> int:
        """Commit ``points`` durably; returns after the fsync, with the number committed.

        Points that cannot be written as line protocol (NaN, empty field set...) do not fail the
        others: they go to the dead-letter table (kind ``invalid``) and are counted.
        """
        if not points:
            return 0
        op = self._put_op(points)
        loop = asyncio.get_running_loop()
        op._loop, op._fut = loop, loop.create_future()
        self._submit(op)
        return await op._fut

    def put_sync(self, points: Sequence[Point]) -> int:
        if not points:
            return 0
        return self._call(self._put_op(points))

    _INLINE_ENCODE = 512

    def _put_op(self, points: Sequence[Point]) -> _Op:
        """Small puts (a poll, a GPS message) are encoded by the caller, so the writer thread's
        transaction is only SQL and fsync and callers do not wait for each other's encoding; big
        ones are encoded by the writer, off the caller's event loop."""
        if len(points) <= self._INLINE_ENCODE:
            lines, bad = self._encode(points)
            return _Op("put_enc", lines, bad, len(points))
        return _Op("put", points)

    async def put_lines(self, lines: Sequence[str]) -> int:
        """Commit already-encoded line-protocol lines (trusted: not re-validated)."""
        if not lines:
            return 0
        return await self._acall(_Op("put_lines", list(lines)))

    def dead_letter_payload(self, source: str, raw: bytes, reason: str, topic: str = "") -> None:
        """Keep a payload a collector could not decode, with its reason. Durable on return."""
        self._call(_Op("dead", [(source, topic, bytes(raw), reason, KIND_PAYLOAD)]))

    async def dead_letter_payload_async(self, source: str, raw: bytes, reason: str, topic: str = "") -> None:
        await self._acall(_Op("dead", [(source, topic, bytes(raw), reason, KIND_PAYLOAD)]))

    # -- public: consumer side ----------------------------------------------------------------------

    def batch(self, max_points: int = 5000, after_id: int = 0) -> Batch | None:
        """The oldest rows after ``after_id``, up to ``max_points`` points (at least one row).

        ``None`` means nothing is waiting (it is not an error).
        """
        ids: list[int] = []
        lines: list[str] = []
        with self._rlock:
            try:
                cur = self._rdb.execute("SELECT id, n, lines FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
                                        (after_id, max(1, max_points)))
                for rid, n, text in cur:
                    if ids and len(lines) + n > max_points:
                        break
                    ids.append(rid)
                    if n == 1:
                        lines.append(text)
                    else:
                        lines.extend(text.split(SEP))
                cur.close()
            except sqlite3.Error as e:
                raise OutboxError(f"{self.path}: cannot read: {e}") from e
        if not ids:
            return None
        return Batch(tuple(ids), tuple(lines))

    def ack(self, upto_id: int, rejected: Sequence[tuple[str, str]] = ()) -> None:
        """Delete every row up to ``upto_id`` (the sink confirmed them).

        ``rejected``: (line, reason) pairs the store refused, moved to the dead-letter table in the
        same transaction.
        """
        self._call(_Op("ack", upto_id, list(rejected)))

    async def ack_async(self, upto_id: int, rejected: Sequence[tuple[str, str]] = ()) -> None:
        await self._acall(_Op("ack", upto_id, list(rejected)))

    def depth(self) -> int:
        """Points waiting (kept in memory, exact)."""
        return self._depth

    def last_id(self) -> int:
        """Id of the newest row ever committed (0 if none)."""
        return self._last_id

    def oldest_age_s(self) -> float | None:
        """Age of the oldest waiting point in seconds, ``None`` when empty."""
        with self._rlock:
            if self._closed:
                return None
            row = self._rdb.execute("SELECT added_ns FROM outbox ORDER BY id LIMIT 1").fetchone()
        if row is None:
            return None
        return max(0.0, (self.clock.now_ns() - row[0]) / 1e9)

    @property
    def dropped(self) -> int:
        return self._counters.get(C_DROPPED, 0)

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

    def status(self) -> OutboxStatus:
        with self._rlock:
            row = self._rdb.execute("SELECT count(*), coalesce(sum(n),0), coalesce(sum(bytes),0) FROM outbox").fetchone()
            dl = dict(self._rdb.execute("SELECT kind, count(*) FROM dead_letter GROUP BY kind").fetchall())
            counters = dict(self._rdb.execute("SELECT name, value FROM counters").fetchall())
        size = 0
        for suffix in ("", "-wal"):
            try:
                size += Path(str(self.path) + suffix).stat().st_size
            except OSError:
                pass
        return OutboxStatus(str(self.path), row[1], row[0], row[2], self.max_bytes, self.oldest_age_s(),
                            size, dl, counters)

    def replay_dead_letters(self, ids: Iterable[int] | None = None,
                            decode: Callable[[str, str, bytes], Sequence[Point]] | None = None) -> int:
        """Move dead-lettered points back into the outbox (at its end); returns how many points.

        Refused points (kind ``point``) are replayed as they are. Payloads (kind ``payload``) are
        replayed only when ``decode(source, topic, raw)`` is given (the collector's decoder); one
        that still fails keeps its row with the new reason. ``invalid`` rows cannot be replayed.
        """
        return self._call(_Op("replay", None if ids is None else list(ids), decode))

    def purge_dead_letters(self, ids: Iterable[int] | None = None, kind: str | None = None) -> int:
        return self._call(_Op("purge_dead", None if ids is None else list(ids), kind))

    def purge_outbox(self) -> int:
        """Delete every waiting point (operator action; counted as dropped). Returns points deleted."""
        return self._call(_Op("purge_outbox"))

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

    def _encode(self, points: Sequence[Point]) -> tuple[list[str], list[tuple[str, str, bytes, str, str]]]:
        enc = self._enc.line
        lines: list[str] = []
        bad: list[tuple[str, str, bytes, str, str]] = []
        for p in points:
            try:
                lines.append(enc(p))
            except LineProtocolError as e:
                bad.append(("outbox", "", repr(p).encode("utf-8", "replace"), str(e), KIND_INVALID))
            except (AttributeError, TypeError, ValueError) as e:  # not a Point at all
                bad.append(("outbox", "", repr(p).encode("utf-8", "replace"), f"not a point: {e}", KIND_INVALID))
        return lines, bad

    @staticmethod
    def _make_rows(lines: list[str], now_ns: int) -> list[tuple[str, int, int, int]]:
        rows = []
        chunk: list[str] = []
        for ln in lines:
            if SEP in ln:  # a string field holding the separator gets a row of its own, in order
                if chunk:
                    text = SEP.join(chunk)
                    rows.append((text, _nbytes(text), now_ns, len(chunk)))
                    chunk = []
                rows.append((ln, _nbytes(ln), now_ns, 1))
                continue
            chunk.append(ln)
            if len(chunk) >= _ROW_POINTS:
                text = SEP.join(chunk)
                rows.append((text, _nbytes(text), now_ns, len(chunk)))
                chunk = []
        if chunk:
            text = SEP.join(chunk)
            rows.append((text, _nbytes(text), now_ns, len(chunk)))
        return rows

    def _commit(self, ops: list[_Op]) -> None:
        now = self.clock.now_ns()
        # encode before taking the write lock: CPU work does not need the database. The lines of
        # all puts of this commit are packed into few rows: each row costs the writer a round of
        # the GIL, and an event loop busy encoding makes every round slow.
        all_lines: list[str] = []
        all_bad: list[tuple] = []
        n_received = 0
        for op in ops:
            if op.kind == "put":
                lines, bad = self._encode(op.args[0])
                n_received += len(op.args[0])
            elif op.kind == "put_enc":
                lines, bad, n = op.args
                n_received += n
            elif op.kind == "put_lines":
                lines, bad = op.args[0], []
                n_received += len(lines)
            else:
                continue
            all_lines.extend(lines)
            all_bad.extend(bad)
            op.result = len(lines)
        rows = self._make_rows(all_lines, now)
        db = self._db
        delta = {C_COMMITTED: 0, C_DROPPED: 0, C_DEAD_POINTS: 0, C_DEAD_PAYLOADS: 0, C_REJECTED: 0}
        d_rows = d_points = d_bytes = 0
        try:
            db.execute("BEGIN IMMEDIATE")
            if rows:
                db.executemany("INSERT INTO outbox(lines, bytes, added_ns, n) VALUES (?,?,?,?)", rows)
                d_rows += len(rows)
                d_points += sum(r[3] for r in rows)
                d_bytes += sum(r[1] for r in rows)
            if all_bad:
                db.executemany("INSERT INTO dead_letter(at_ns, source, topic, payload, reason, kind) "
                               "VALUES (?,?,?,?,?,?)", [(now, *b) for b in all_bad])
                delta[C_REJECTED] += len(all_bad)
            delta[C_COMMITTED] = d_points
            if d_rows:
                self._last_id = db.execute("SELECT last_insert_rowid()").fetchone()[0]
            for op in ops:
                if op.kind in ("put", "put_enc", "put_lines"):
                    continue
                r, p, b = self._apply(op, now, delta)
                d_rows += r
                d_points += p
                d_bytes += b
            # the bound: drop the oldest rows until the text fits (keep at least the newest row)
            dropped_points = 0
            if self._bytes + d_bytes > self.max_bytes:
                excess = self._bytes + d_bytes - self.max_bytes
                freed = fr_rows = upto = 0
                for rid, n, nbytes in db.execute("SELECT id, n, bytes FROM outbox ORDER BY id"):
                    if freed >= excess or fr_rows + 1 >= self._rows + d_rows:
                        break
                    freed += nbytes
                    fr_rows += 1
                    dropped_points += n
                    upto = rid
                if fr_rows:
                    db.execute("DELETE FROM outbox WHERE id <= ?", (upto,))
                    d_rows -= fr_rows
                    d_points -= dropped_points
                    d_bytes -= freed
                    delta[C_DROPPED] += dropped_points
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
        self.transactions += 1
        self._rows += d_rows
        self._depth += d_points
        self._bytes += d_bytes
        for name, v in delta.items():
            if v:
                self._counters[name] = self._counters.get(name, 0) + v
        self._after_commit(ops, delta, dropped_points, n_received)

    def _apply(self, op: _Op, now: int, delta: dict[str, int]) -> tuple[int, int, int]:
        """Apply a non-put op inside the open transaction; returns (rows, points, bytes) added."""
        db = self._db
        if op.kind == "ack":
            upto, rejected = op.args
            r = db.execute("SELECT count(*), coalesce(sum(n),0), coalesce(sum(bytes),0) FROM outbox WHERE id <= ?",
                           (upto,)).fetchone()
            db.execute("DELETE FROM outbox WHERE id <= ?", (upto,))
            if rejected:
                db.executemany("INSERT INTO dead_letter(at_ns, source, topic, payload, reason, kind) "
                               "VALUES (?, 'sink', '', ?, ?, 'point')",
                               [(now, ln.encode("utf-8"), reason) for ln, reason in rejected])
                delta[C_DEAD_POINTS] += len(rejected)
            op.result = r[1]
            return -r[0], -r[1], -r[2]
        if op.kind == "dead":
            db.executemany("INSERT INTO dead_letter(at_ns, source, topic, payload, reason, kind) VALUES (?,?,?,?,?,?)",
                           [(now, *row) for row in op.args[0]])
            delta[C_DEAD_PAYLOADS] += len(op.args[0])
            return 0, 0, 0
        if op.kind == "replay":
            ids, decode = op.args
            q = "SELECT id, source, topic, payload, kind FROM dead_letter WHERE kind IN ('point', 'payload')"
            rows = db.execute(q + " ORDER BY id").fetchall()
            if ids is not None:
                wanted = set(ids)
                rows = [r for r in rows if r[0] in wanted]
            lines: list[str] = []
            done: list[int] = []
            for rid, source, topic, payload, kind in rows:
                if kind == KIND_POINT:
                    lines.append(bytes(payload).decode("utf-8"))
                    done.append(rid)
                elif decode is not None:
                    try:
                        pts = decode(source, topic, bytes(payload))
                        lines.extend(self._enc.line(p) for p in pts)
                        done.append(rid)
                    except EdgeError as e:
                        db.execute("UPDATE dead_letter SET reason = ?, at_ns = ? WHERE id = ?", (str(e), now, rid))
            new_rows = self._make_rows(lines, now)
            if new_rows:
                db.executemany("INSERT INTO outbox(lines, bytes, added_ns, n) VALUES (?,?,?,?)", new_rows)
                self._last_id = db.execute("SELECT last_insert_rowid()").fetchone()[0]
            db.executemany("DELETE FROM dead_letter WHERE id = ?", [(i,) for i in done])
            op.result = len(lines)
            delta[C_COMMITTED] += len(lines)
            return len(new_rows), sum(r[3] for r in new_rows), sum(r[1] for r in new_rows)
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
            return 0, 0, 0
        if op.kind == "purge_outbox":
            r = db.execute("SELECT count(*), coalesce(sum(n),0), coalesce(sum(bytes),0) FROM outbox").fetchone()
            db.execute("DELETE FROM outbox")
            delta[C_DROPPED] += r[1]
            op.result = r[1]
            log.warning("outbox purged path=%s points=%d", self.path, r[1])
            return -r[0], -r[1], -r[2]
        raise OutboxError(f"unknown outbox op {op.kind!r}")

    def _after_commit(self, ops: list[_Op], delta: dict[str, int], dropped: int, received: int) -> None:
        m = self.metrics
        now = time.perf_counter()
        if m is not None:
            if received:
                m.points_received.inc(received)
            if delta[C_COMMITTED]:
                m.points_committed.inc(delta[C_COMMITTED])
            if delta[C_DROPPED]:
                m.points_dropped.inc(delta[C_DROPPED])
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
        if dropped:
            if self._dropping_since is None:
                self._dropping_since = now
                log.warning("outbox full, dropping oldest points path=%s max_bytes=%d dropped=%d dropped_total=%d",
                            self.path, self.max_bytes, dropped, self.dropped)
            self._dropped_in_episode += dropped
        elif self._dropping_since is not None and any(op.kind == "ack" for op in ops):
            log.warning("outbox no longer full path=%s dropped_points=%d over_s=%.1f dropped_total=%d", self.path,
                        self._dropped_in_episode, now - self._dropping_since, self.dropped)
            self._dropping_since = None
            self._dropped_in_episode = 0
        if delta[C_COMMITTED]:
            for cb in list(self._listeners):
                try:
                    cb()
                except Exception:  # a listener's bug must not stop commits
                    log.exception("outbox on_commit callback failed")
