"""Durable outbox: SQLite in WAL mode between the collectors and the sink.

A point handed to ``put`` is committed (fsync'd by SQLite's WAL) before ``put`` returns, so it
survives a crash, a kill -9 and a power cut, and is replayed in order to the sink until the sink
confirms it (at-least-once; a point's identity is measurement + tags + time, so a replay
overwrites the same point in InfluxDB).

Points are stored as line-protocol text: what the sink sends, with no re-encoding on the hot path.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from edge.errors import OutboxError
from edge.point import Point, to_line

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, line TEXT NOT NULL, bytes INTEGER NOT NULL, added_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS dead_letter (
  id INTEGER PRIMARY KEY AUTOINCREMENT, at_ns INTEGER NOT NULL, source TEXT NOT NULL,
  topic TEXT NOT NULL DEFAULT '', payload BLOB NOT NULL, reason TEXT NOT NULL, kind TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class Batch:
    ids: tuple[int, ...]
    lines: tuple[str, ...]

    @property
    def last_id(self) -> int:
        return self.ids[-1]


class Outbox:
    def __init__(self, path: str | Path, *, max_bytes: int = 1 << 30) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as e:
            raise OutboxError(f"{self.path}: cannot open outbox: {e}") from e
        self.committed = 0
        self.dropped = 0

    # -- producer side --------------------------------------------------------------------------
    def put_sync(self, points: Sequence[Point]) -> None:
        lines = [to_line(p) for p in points]
        now = time.time_ns()
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany("INSERT INTO outbox(line, bytes, added_ns) VALUES (?, ?, ?)",
                                     [(ln, len(ln), now) for ln in lines])
                self._db.execute("COMMIT")
            except sqlite3.Error as e:
                self._db.execute("ROLLBACK") if self._db.in_transaction else None
                raise OutboxError(f"{self.path}: commit failed: {e}") from e
        self.committed += len(lines)

    async def put(self, points: Sequence[Point]) -> None:
        await asyncio.to_thread(self.put_sync, points)

    def dead_letter_payload(self, source: str, raw: bytes, reason: str, topic: str = "") -> None:
        with self._lock:
            self._db.execute("INSERT INTO dead_letter(at_ns, source, topic, payload, reason, kind) VALUES (?,?,?,?,?, 'payload')",
                             (time.time_ns(), source, topic, bytes(raw), reason))

    # -- consumer side --------------------------------------------------------------------------
    def batch(self, max_points: int = 5000, after_id: int = 0) -> Batch | None:
        with self._lock:
            rows = self._db.execute("SELECT id, line FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
                                    (after_id, max_points)).fetchall()
        if not rows:
            return None
        return Batch(tuple(r[0] for r in rows), tuple(r[1] for r in rows))

    def ack(self, upto_id: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM outbox WHERE id <= ?", (upto_id,))

    def depth(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM outbox").fetchone()[0]

    def dead_letters(self, limit: int = 100) -> list[dict]:
        with self._lock:
            rows = self._db.execute("SELECT id, at_ns, source, topic, payload, reason, kind FROM dead_letter ORDER BY id DESC LIMIT ?",
                                    (limit,)).fetchall()
        return [dict(id=r[0], at_ns=r[1], source=r[2], topic=r[3], payload=r[4], reason=r[5], kind=r[6]) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
