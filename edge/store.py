"""Embedded time-series store: one SQLite file with InfluxDB's data model, for small sites and the demo.

Data model, as in InfluxDB: a *series* is a measurement and a tag set; a *point* is a series, a
timestamp (ns) and some fields. A point written again with the same series and time overwrites
the fields it names and keeps the others (InfluxDB's merge). Each field has one type per
measurement (float, integer, unsigned, boolean, string); a point with a conflicting type is
refused with InfluxDB's message ("field type conflict: ...").

Tables (narrow, one row per field value)::

    series(id, measurement, tags)                 tags: canonical JSON, keys sorted
    fields(id, measurement, name, type)
    points(series_id, field_id, time_ns, value)   PRIMARY KEY (series_id, field_id, time_ns)
    latest(series_id, field_id, time_ns, value)   newest value of every series field
    write_gen(measurement, day, gen)              the last write into each measurement and UTC day

Queries (latest, raw range, windows) are in ``edge.query.StoreQuery``, which calls the
primitives here. ``generation(measurements, start_ns, end_ns)`` says whether anything was written
into those measurements and days since: every write transaction takes the next number of a
store-wide sequence and records it per measurement and UTC day it wrote (table ``write_gen``), so
a reader that keeps an answer (``api.cache``) knows when it is no longer the store's.

Retention: ``retention_days`` deletes points older than that (``apply_retention``, called about hourly
by the embedded sink).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from itertools import repeat
from pathlib import Path
from typing import Any, Iterable, Sequence

import orjson

from edge.clock import SYSTEM_CLOCK, Clock
from edge.errors import LineProtocolError, StoreError
from edge.point import I64_MAX, Point, UInt, parse_field_value, parse_line, parse_time

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS series (id INTEGER PRIMARY KEY, measurement TEXT NOT NULL, tags TEXT NOT NULL,
  UNIQUE (measurement, tags));
CREATE TABLE IF NOT EXISTS fields (id INTEGER PRIMARY KEY, measurement TEXT NOT NULL, name TEXT NOT NULL,
  type TEXT NOT NULL, UNIQUE (measurement, name));
CREATE TABLE IF NOT EXISTS points (series_id INTEGER NOT NULL, field_id INTEGER NOT NULL, time_ns INTEGER NOT NULL,
  value, PRIMARY KEY (series_id, field_id, time_ns)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS latest (series_id INTEGER NOT NULL, field_id INTEGER NOT NULL, time_ns INTEGER NOT NULL,
  value, PRIMARY KEY (series_id, field_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS write_gen (measurement TEXT NOT NULL, day INTEGER NOT NULL, gen INTEGER NOT NULL,
  PRIMARY KEY (measurement, day)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS write_gen_gen ON write_gen(gen);
"""
DAY_NS = 86_400 * 1_000_000_000
ALL = "*"  # the write_gen row every reader checks: a change of anything (retention)

FLOAT, INTEGER, UNSIGNED, BOOLEAN, STRING = "float", "integer", "unsigned", "boolean", "string"


def field_type(v: Any) -> str:
    if isinstance(v, bool):
        return BOOLEAN
    if isinstance(v, UInt):
        return UNSIGNED
    if isinstance(v, int):
        return INTEGER
    if isinstance(v, float):
        return FLOAT
    return STRING


_TYPE_OF = {float: FLOAT, int: INTEGER, bool: BOOLEAN, str: STRING, UInt: UNSIGNED}  # exact types, the usual case


def decode_value(ftype: str, v: Any) -> Any:
    if ftype == BOOLEAN:
        return bool(v)
    if ftype == UNSIGNED:
        return UInt(v)
    return v


def tags_key(tags: dict[str, str] | Iterable[tuple[str, str]]) -> str:
    items = tags.items() if isinstance(tags, dict) else tags
    return orjson.dumps(dict(sorted((k, v) for k, v in items if v != ""))).decode()


class EmbeddedStore:
    """A SQLite file holding series. Thread-safe: one write connection, one read connection."""

    def __init__(self, path: str | Path, *, retention_days: float | None = None, clock: Clock = SYSTEM_CLOCK) -> None:
        self.path = Path(path)
        self.retention_s = None if retention_days is None else float(retention_days) * 86400.0
        self.clock = clock
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # the outbox deletes what we acknowledge
            self._db.execute("PRAGMA busy_timeout=30000")
            self._db.executescript(_SCHEMA)
            self._rdb = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30.0)
            self._rdb.execute("PRAGMA busy_timeout=30000")
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: cannot open store: {e}") from e
        self._wlock = threading.Lock()
        self._rlock = threading.Lock()
        self._series: dict[tuple[str, str], int] = {}
        self._fields: dict[tuple[str, str], tuple[int, str]] = {}
        self._skeys: dict[tuple, tuple[str, str]] = {}
        self._head_sid: dict[str, tuple[str, int]] = {}  # a line's series part -> (measurement, series id)
        self._load_caches()
        self._read_series_max = -1
        self._read_series: dict[str, list[tuple[int, dict[str, str]]]] = {}
        self._read_fields: dict[int, tuple[str, str, str]] = {}
        self._closed = False

    def _load_caches(self) -> None:
        for sid, m, tags in self._db.execute("SELECT id, measurement, tags FROM series"):
            self._series[(m, tags)] = sid
        for fid, m, name, ftype in self._db.execute("SELECT id, measurement, name, type FROM fields"):
            self._fields[(m, name)] = (fid, ftype)

    # -- writing --------------------------------------------------------------------------------------

    def write_lines(self, lines: Sequence[str]) -> list[tuple[int, str]]:
        """Store lines of line protocol; returns (index, reason) for every line refused."""
        points: list[Point | tuple | None] = []
        rejected: list[tuple[int, str]] = []
        known = self._known_line
        heads = self._head_sid
        for i, ln in enumerate(lines):
            k = known(ln)
            if k is not None:
                points.append(k)
                continue
            try:
                p = parse_line(ln)
            except LineProtocolError as e:
                points.append(None)
                rejected.append((i, f"unable to parse '{ln[:200]}': {e}"))
                continue
            points.append(p)
            if "\\" not in ln and '"' not in ln and len(heads) < 100_000:
                sid = self._series.get(self._series_key(p))
                if sid is not None:  # a series stored before: its next lines take the fast path
                    heads[ln.partition(" ")[0]] = (p.measurement, sid)
        rejected.extend(self._write(points))
        rejected.sort()
        return rejected

    def _known_line(self, ln: str) -> tuple | None:
        """(series id, measurement, time, [(field id, value)]) of a plain line (no escapes, no strings)
        of a stored series whose fields are stored with the types the line has: what the outbox sends
        nearly always (the same vehicles and meters, again and again). None for any other line: it
        is parsed and checked in full, so errors and type conflicts read as they always do."""
        if "\\" in ln or '"' in ln:
            return None
        head, _, rest = ln.partition(" ")
        hs = self._head_sid.get(head)
        if hs is None:
            return None
        m, sid = hs
        fpart, sep, raw_t = rest.partition(" ")
        if not sep or " " in raw_t:
            return None
        t = parse_time(raw_t)
        if t is None:
            return None
        fields = self._fields
        vals = []
        for kv in fpart.split(","):
            name, eq, raw = kv.partition("=")
            f = fields.get((m, name))
            if not eq or f is None:
                return None
            try:
                v = parse_field_value(raw, name)
            except LineProtocolError:
                return None
            if _TYPE_OF.get(type(v)) != f[1] or type(v) is UInt:  # unsigned: the full path's conversions
                return None
            vals.append((f[0], int(v) if type(v) is bool else v))
        return sid, m, t, vals

    def write_points(self, points: Sequence[Point]) -> list[tuple[int, str]]:
        return self._write(list(points))

    def _write(self, points: Sequence[Point | None]) -> list[tuple[int, str]]:
        rejected: list[tuple[int, str]] = []
        touched: set[tuple[str, int]] = set()
        rows: list[tuple[int, int, int, Any]] = []
        newest: dict[tuple[int, int], tuple[int, Any]] = {}
        with self._wlock:
            if self._closed:
                raise StoreError(f"{self.path}: store is closed")
            db = self._db
            try:
                db.execute("BEGIN IMMEDIATE")
                new_fields: dict[tuple[str, str], tuple[int, str]] = {}
                new_series: dict[tuple[str, str], int] = {}
                for i, p in enumerate(points):
                    if p is None:
                        continue
                    if type(p) is tuple:  # a known line (``_known_line``): ids and types already checked
                        sid, m, t, vals = p
                    else:
                        reason = self._check(p, new_fields)
                        if reason:
                            rejected.append((i, reason))
                            continue
                        skey = self._series_key(p)
                        sid = self._series.get(skey) or new_series.get(skey)
                        if sid is None:
                            sid = db.execute("INSERT INTO series(measurement, tags) VALUES (?, ?)", skey).lastrowid
                            new_series[skey] = sid
                        m, t, vals = p.measurement, p.time_ns, []
                        for name, v in p.fields.items():
                            fkey = (m, name)
                            f = self._fields.get(fkey) or new_fields.get(fkey)
                            if f is None or f[0] < 0:
                                ftype = field_type(v)
                                fid = db.execute("INSERT INTO fields(measurement, name, type) VALUES (?, ?, ?)",
                                                 (m, name, ftype)).lastrowid
                                new_fields[fkey] = (fid, ftype)
                            else:
                                fid = f[0]
                            vals.append((fid, int(v) if isinstance(v, bool) else v))
                    touched.add((m, t // DAY_NS))
                    for fid, val in vals:
                        rows.append((sid, fid, t, val))
                        cur = newest.get((sid, fid))
                        if cur is None or t >= cur[0]:
                            newest[(sid, fid)] = (t, val)
                if rows:
                    db.executemany("INSERT OR REPLACE INTO points(series_id, field_id, time_ns, value) VALUES (?,?,?,?)", rows)
                    db.executemany(
                        "INSERT INTO latest(series_id, field_id, time_ns, value) VALUES (?,?,?,?) "
                        "ON CONFLICT(series_id, field_id) DO UPDATE SET time_ns = excluded.time_ns, value = excluded.value "
                        "WHERE excluded.time_ns >= latest.time_ns",
                        [(sid, fid, t, v) for (sid, fid), (t, v) in newest.items()])
                    self._mark(db, touched)
                db.execute("COMMIT")
            except sqlite3.Error as e:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise StoreError(f"{self.path}: write failed: {e}") from e
            self._series.update(new_series)
            self._fields.update(new_fields)
        return rejected

    def write_columns(self, measurement: str, tags: dict[str, str], times_ns: Sequence[int],
                      fields: dict[str, Sequence[Any]]) -> int:
        """Store one series' points given as columns (the bulk import, ``edge.bulk``): ``times_ns``
        and, per field, a sequence of the same length (Python or numpy floats, ints, bools; a NaN or
        None leaves that field out of that point). The same result as ``write_points`` with the
        Points these columns describe, in one transaction, without building them. A field whose type
        conflicts with the stored one is refused whole (``StoreError`` with InfluxDB's message).
        Returns how many field values were written."""
        import numpy as np  # the store itself needs no numpy; the bulk path hands it arrays

        t = np.asarray(times_ns, dtype=np.int64)
        cols: list[tuple[str, str, np.ndarray, np.ndarray]] = []   # (name, type, times, values) without gaps
        for name, col in fields.items():
            v = np.asarray(col)
            if v.shape != t.shape:
                raise StoreError(f"{self.path}: field {name!r} has {v.shape} values for {t.shape} times")
            if v.dtype == bool:
                ftype, keep = BOOLEAN, np.ones(len(v), dtype=bool)
            elif np.issubdtype(v.dtype, np.integer):
                ftype, keep = INTEGER, np.ones(len(v), dtype=bool)
            elif np.issubdtype(v.dtype, np.floating):
                ftype, keep = FLOAT, np.isfinite(v)
            else:
                raise StoreError(f"{self.path}: field {name!r}: the bulk path takes numbers and booleans, not {v.dtype}")
            cols.append((name, ftype, t[keep], v[keep]))
        written = 0
        with self._wlock:
            if self._closed:
                raise StoreError(f"{self.path}: store is closed")
            for name, ftype, _, _ in cols:
                f = self._fields.get((measurement, name))
                if f is not None and f[1] != ftype:
                    raise StoreError(f'field type conflict: input field "{name}" on measurement "{measurement}" is type '
                                     f"{ftype}, already exists as type {f[1]}")
            db = self._db
            new_fields: dict[tuple[str, str], tuple[int, str]] = {}
            new_series: dict[tuple[str, str], int] = {}
            try:
                db.execute("BEGIN IMMEDIATE")
                skey = (measurement, tags_key(tags))
                sid = self._series.get(skey)
                if sid is None:
                    sid = db.execute("INSERT INTO series(measurement, tags) VALUES (?, ?)", skey).lastrowid
                    new_series[skey] = sid
                for name, ftype, tt, vv in cols:
                    if not len(tt):
                        continue
                    f = self._fields.get((measurement, name))
                    if f is None:
                        fid = db.execute("INSERT INTO fields(measurement, name, type) VALUES (?, ?, ?)",
                                         (measurement, name, ftype)).lastrowid
                        new_fields[(measurement, name)] = (fid, ftype)
                    else:
                        fid = f[0]
                    vals = vv.astype(np.int64).tolist() if ftype == BOOLEAN else vv.tolist()
                    db.executemany("INSERT OR REPLACE INTO points(series_id, field_id, time_ns, value) VALUES (?,?,?,?)",
                                   zip(repeat(sid), repeat(fid), tt.tolist(), vals))
                    i = int(np.argmax(tt))
                    db.execute("INSERT INTO latest(series_id, field_id, time_ns, value) VALUES (?,?,?,?) "
                               "ON CONFLICT(series_id, field_id) DO UPDATE SET time_ns = excluded.time_ns, "
                               "value = excluded.value WHERE excluded.time_ns >= latest.time_ns",
                               (sid, fid, int(tt[i]), vals[i]))
                    written += len(tt)
                    self._mark(db, {(measurement, int(d)) for d in np.unique(tt // DAY_NS).tolist()})
                db.execute("COMMIT")
            except sqlite3.Error as e:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise StoreError(f"{self.path}: write failed: {e}") from e
            self._series.update(new_series)
            self._fields.update(new_fields)
        return written

    @staticmethod
    def _mark(db: sqlite3.Connection, touched: set[tuple[str, int]]) -> None:
        """Inside a write transaction: the next generation for every (measurement, UTC day) written."""
        if not touched:
            return
        gen = db.execute("SELECT coalesce(max(gen), 0) + 1 FROM write_gen").fetchone()[0]
        db.executemany("INSERT INTO write_gen(measurement, day, gen) VALUES (?, ?, ?) "
                       "ON CONFLICT(measurement, day) DO UPDATE SET gen = excluded.gen",
                       [(m, d, gen) for m, d in touched])

    def generation(self, measurements: Sequence[str], start_ns: int, end_ns: int) -> int:
        """The last write generation into ``measurements`` at times in ``[start_ns, end_ns)`` (by UTC day),
        or of a retention pass: equal numbers mean nothing there changed in between."""
        marks = ",".join("?" * len(measurements))
        row = self.select(f"SELECT coalesce(max(gen), 0) FROM write_gen WHERE (measurement IN ({marks}) "
                          "AND day >= ? AND day <= ?) OR measurement = ?",
                          [*measurements, int(start_ns) // DAY_NS, (int(end_ns) - 1) // DAY_NS, ALL])
        return int(row[0][0])

    def _check(self, p: Point, new_fields: dict[tuple[str, str], tuple[int, str]]) -> str:
        """InfluxDB's refusal for this point, or '' when it can be stored."""
        known = self._fields
        m = p.measurement
        fresh = None
        for name, v in p.fields.items():
            ftype = _TYPE_OF.get(type(v)) or field_type(v)
            if ftype == UNSIGNED and v > I64_MAX:
                return f"unsigned field {name!r} = {int(v)} is beyond the embedded store's range"
            key = (m, name)
            f = known.get(key) or new_fields.get(key)
            if f is None:
                if fresh is None:
                    fresh = []
                fresh.append((key, ftype))
            elif f[1] != ftype:
                return (f'field type conflict: input field "{name}" on measurement "{m}" is type '
                        f"{ftype}, already exists as type {f[1]}")
        # a new field's type is fixed by the first point that has it, also within one batch
        if fresh is not None:
            for key, ftype in fresh:
                new_fields.setdefault(key, (-1, ftype))  # placeholder; id assigned on insert
        return ""

    def _series_key(self, p: Point) -> tuple[str, str]:
        """(measurement, canonical tags) of a point, remembered by its tags as given (a pass writes
        thousands of points of the same few hundred series)."""
        k = (p.measurement, *p.tags.items())
        skey = self._skeys.get(k)
        if skey is None:
            skey = (p.measurement, tags_key(p.tags))
            if len(self._skeys) >= 100_000:
                self._skeys.clear()
            self._skeys[k] = skey
        return skey

    def apply_retention(self, now_ns: int | None = None) -> int:
        """Delete points older than the retention; returns how many field values were deleted."""
        if self.retention_s is None:
            return 0
        now = self.clock.now_ns() if now_ns is None else now_ns
        cutoff = now - int(self.retention_s * 1e9)
        deleted = 0
        with self._wlock:
            db = self._db
            pairs = db.execute("SELECT series_id, field_id FROM latest").fetchall()
            try:
                db.execute("BEGIN IMMEDIATE")
                for sid, fid in pairs:
                    deleted += db.execute("DELETE FROM points WHERE series_id = ? AND field_id = ? AND time_ns < ?",
                                          (sid, fid, cutoff)).rowcount
                db.execute("DELETE FROM latest WHERE time_ns < ?", (cutoff,))
                self._mark(db, {(ALL, -1)})
                db.execute("COMMIT")
            except sqlite3.Error as e:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise StoreError(f"{self.path}: retention failed: {e}") from e
        if deleted:
            log.info("store retention path=%s cutoff_ns=%d deleted_values=%d", self.path, cutoff, deleted)
        return deleted

    # -- reading (primitives for edge.query.StoreQuery) ----------------------------------------------

    def _refresh(self) -> None:
        top = self._rdb.execute("SELECT coalesce(max(id), 0) FROM series").fetchone()[0]
        ftop = self._rdb.execute("SELECT count(*) FROM fields").fetchone()[0]
        if top != self._read_series_max or ftop != len(self._read_fields):
            by_m: dict[str, list[tuple[int, dict[str, str]]]] = {}
            for sid, m, tags in self._rdb.execute("SELECT id, measurement, tags FROM series ORDER BY id"):
                by_m.setdefault(m, []).append((sid, orjson.loads(tags)))
            self._read_series = by_m
            self._read_fields = {fid: (m, n, t) for fid, m, n, t in
                                 self._rdb.execute("SELECT id, measurement, name, type FROM fields")}
            self._read_series_max = top

    def series(self, measurement: str) -> list[tuple[int, dict[str, str]]]:
        """(series id, tags) of every series of a measurement."""
        with self._rlock:
            self._refresh()
            return list(self._read_series.get(measurement, []))

    def fields(self, measurement: str) -> dict[str, tuple[int, str]]:
        """name -> (field id, type) for a measurement."""
        with self._rlock:
            self._refresh()
            return {n: (fid, t) for fid, (m, n, t) in self._read_fields.items() if m == measurement}

    def select(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        """Run a read-only query on the read connection (used by the query layer)."""
        with self._rlock:
            if self._closed:
                raise StoreError(f"{self.path}: store is closed")
            try:
                return self._rdb.execute(sql, args).fetchall()
            except sqlite3.Error as e:
                raise StoreError(f"{self.path}: query failed: {e}") from e

    def close(self) -> None:
        with self._wlock, self._rlock:
            if self._closed:
                return
            self._closed = True
            self._db.close()
            self._rdb.close()
