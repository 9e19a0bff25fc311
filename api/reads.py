"""Reading series for the API through the query layer (``edge.query.Query``), and its pure helpers.

The query layer answers per field (``Series``: one field of one series, arrays of times and
values); the API answers per time (a row: time, tags, all fields). ``rows_from_series`` does that
join. ``page_raw`` reads a raw range page by page without reading the whole range: it asks for a
chunk that should hold a page (from the series' typical interval), and doubles it until the page
is full or the range is done.

Cursors are opaque to clients: ``base64url("<time_ns>.<skip>")``: resume at that time, skipping
the first ``skip`` rows at exactly that time (rows at one time are ordered by their tag set, so
the order is stable).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence
from zoneinfo import ZoneInfo

import numpy as np

from edge.query import Series, Where

NS = 1_000_000_000
MAX_NS = 4_102_444_800 * NS  # 2100-01-01: times beyond are clamped (the store holds int64 ns)


class BadCursor(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Row:
    time_ns: int
    tags: Mapping[str, str]
    values: dict[str, Any]


def iso(time_ns: int, tz: ZoneInfo) -> str:
    """ISO 8601 with the site's offset (``+08:00``), milliseconds."""
    return datetime.fromtimestamp(time_ns / 1e9, tz=timezone.utc).astimezone(tz).isoformat(timespec="milliseconds")


def to_ns(dt: datetime | None, default_ns: int, tz: ZoneInfo) -> int:
    """A query-string datetime to ns UTC; naive times are the site's local time; clamped to 1970..2100."""
    if dt is None:
        return default_ns
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=tz)
    try:
        ts = dt.timestamp()
    except (OverflowError, ValueError, OSError):
        return 0 if dt.year < 1970 else MAX_NS
    return int(min(max(ts, 0.0), MAX_NS / NS) * NS)


def encode_cursor(time_ns: int, skip: int) -> str:
    return base64.urlsafe_b64encode(f"{time_ns}.{skip}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        t, s = raw.split(".")
        t_ns, skip = int(t), int(s)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadCursor("cursor is not one this API gave out") from None
    if not (0 <= t_ns <= MAX_NS and 0 <= skip <= 1_000_000):
        raise BadCursor("cursor is not one this API gave out")
    return t_ns, skip


def encode_id_cursor(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def decode_id_cursor(cursor: str) -> str:
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("utf-8")
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadCursor("cursor is not one this API gave out") from None


def encode_int_cursor(i: int) -> str:
    """The cursor of a page of rows with integer ids, newest first (audit, dead letters): the last id shown."""
    return encode_id_cursor(str(i))


def decode_int_cursor(cursor: str) -> int:
    raw = decode_id_cursor(cursor)
    if not raw.isdigit() or len(raw) > 18:
        raise BadCursor("cursor is not one this API gave out")
    return int(raw)


def page_ids(items: Sequence[Any], key, limit: int, cursor: str | None) -> tuple[list[Any], str | None]:
    """Page a list sorted by ``key`` (a str per item): items after the cursor's key."""
    after = decode_id_cursor(cursor) if cursor else None
    if after is not None and not any(key(it) == after for it in items):
        # a cursor is the key of the last item of the previous page: anything else is not one of ours
        raise BadCursor("cursor is not one this API gave out")
    rest = [it for it in items if after is None or key(it) > after]
    page = rest[:limit]
    nxt = encode_id_cursor(key(page[-1])) if len(rest) > limit else None
    return page, nxt


def _plain(v: Any) -> Any:
    if isinstance(v, (np.floating,)):
        f = float(v)
        return f if np.isfinite(f) else None
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v


def rows_from_series(series: Sequence[Series]) -> list[Row]:
    """Join per-field series into rows (time, tags, fields), sorted by time then tag set."""
    by: dict[tuple[int, tuple], Row] = {}
    for s in series:
        tkey = tuple(sorted(s.tags.items()))
        for t, v in zip(s.times_ns.tolist(), s.values.tolist() if s.values.dtype != object else list(s.values)):
            r = by.get((t, tkey))
            if r is None:
                r = by[(t, tkey)] = Row(int(t), dict(s.tags), {})
            pv = _plain(v)
            if pv is not None:
                r.values[s.field] = pv
    return [by[k] for k in sorted(by, key=lambda k: (k[0], k[1]))]


async def field_names(query, measurement: str, where: Where) -> list[str]:
    """The fields a measurement has (for the series ``where`` selects), via ``latest``."""
    if hasattr(query, "store") and hasattr(query.store, "fields"):
        return sorted(query.store.fields(measurement))
    if hasattr(query, "field_keys"):
        return await query.field_keys(measurement)
    return sorted({r.field for r in await query.latest(measurement, None, where)})


async def page_raw(query, measurement: str, fields: Sequence[str], where: Where, start_ns: int, end_ns: int,
                   limit: int, cursor: str | None, hint_interval_s: float) -> tuple[list[Row], str | None]:
    """One page of raw rows in ``[start_ns, end_ns)`` after ``cursor``; and the next cursor or None."""
    skip = 0
    if cursor:
        c_t, skip = decode_cursor(cursor)
        start_ns = max(start_ns, c_t)
    if start_ns >= end_ns or not fields:
        return [], None
    chunk = max(int(hint_interval_s * NS * (limit + skip + 1) * 1.5), 60 * NS)
    while True:
        hi = min(end_ns, start_ns + chunk)
        rows = rows_from_series(await query.raw(measurement, list(fields), start_ns, hi, where))
        if skip:
            rows = [r for i, r in enumerate(rows) if not (i < skip and r.time_ns == start_ns)]
        if len(rows) > limit or hi >= end_ns:
            break
        chunk *= 4
    page = rows[:limit]
    if len(rows) <= limit and hi >= end_ns:
        return page, None
    if not page:
        return [], None
    last_t = page[-1].time_ns
    same = sum(1 for r in page if r.time_ns == last_t) + (skip if last_t == start_ns else 0)
    return page, encode_cursor(last_t, same)
