"""The query layer: the one way analytics and the API read series back.

One interface, ``Query``, two implementations that give the same answers (a conformance suite in
``tests/delivery`` runs the same cases on both):

* ``InfluxQLQuery``: InfluxQL over HTTP ``/query`` (served by InfluxDB 1.x, 2.x through its v1
  compatibility API, and 3.x). No Flux.
* ``StoreQuery``: SQL on the embedded SQLite store (``edge.store.EmbeddedStore``).

Three questions (and ``field_keys(measurement)``, the fields a measurement has):

* ``latest``: the newest value of each field of each series (optionally only since a time).
* ``raw``: every value in ``[start_ns, end_ns)``.
* ``windows``: one aggregate (mean, sum, min, max, first, last, count, spread) per window.
  ``every`` is a fixed interval in seconds (``900``, or ``"15m"``, ``"1h"``) aligned to midnight in
  ``tz``, or a calendar ``"day"`` / ``"month"`` in ``tz`` (``Asia/Shanghai`` by default, never UTC).
  A window is labelled with its start; windows without data are left out (InfluxQL ``fill(none)``);
  the first and last windows may be cut by ``start_ns`` / ``end_ns``.

Filters (``Where``): tag equality (one value or any of several) and org scoping: ``org="330000/330100"``
keeps series whose ``org`` tag is that path or below it, compared segment by segment
(``330000/3301000`` is *not* under ``330000/330100``).

Results are plain dataclasses: ``Latest`` rows and ``Series`` with numpy arrays
(``times_ns`` int64, ``values`` float64 for numbers, bool for booleans, object for strings).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Iterable, Literal, Mapping, Protocol, Sequence, runtime_checkable
from zoneinfo import ZoneInfo

import httpx
import numpy as np
import orjson

from edge.config import org_within
from edge.errors import StoreError
from edge.store import decode_value

Agg = Literal["mean", "sum", "min", "max", "first", "last", "count", "spread"]
AGGS: tuple[str, ...] = ("mean", "sum", "min", "max", "first", "last", "count", "spread")
DEFAULT_TZ = "Asia/Shanghai"
NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Where:
    """Series filter. ``tags``: key -> value or tuple of values (any of); ``org``: org at or under this path."""

    tags: Mapping[str, str | tuple[str, ...]] = field(default_factory=dict)
    org: str | None = None

    def matches(self, tags: Mapping[str, str]) -> bool:
        for k, want in self.tags.items():
            have = tags.get(k)
            if isinstance(want, str):
                if have != want:
                    return False
            elif have not in want:
                return False
        if self.org is not None:
            org = tags.get("org")
            if org is None or not org_within(org, self.org):
                return False
        return True


@dataclass(frozen=True, slots=True)
class Latest:
    measurement: str
    tags: Mapping[str, str]
    field: str
    time_ns: int
    value: float | int | bool | str


@dataclass(frozen=True, slots=True, eq=False)
class Series:
    """One field of one series: parallel arrays of times (ns, UTC) and values."""

    measurement: str
    tags: Mapping[str, str]
    field: str
    times_ns: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.times_ns)

    def key(self) -> tuple:
        return (self.measurement, tuple(sorted(self.tags.items())), self.field)


@runtime_checkable
class Query(Protocol):
    async def field_keys(self, measurement: str) -> list[str]: ...

    async def latest(self, measurement: str, fields: Sequence[str] | None = None, where: Where = Where(),
                     since_ns: int | None = None) -> list[Latest]: ...

    async def raw(self, measurement: str, fields: Sequence[str], start_ns: int, end_ns: int,
                  where: Where = Where()) -> list[Series]: ...

    async def windows(self, measurement: str, fields: Sequence[str], start_ns: int, end_ns: int,
                      every: int | str, agg: Agg, where: Where = Where(), tz: str = DEFAULT_TZ) -> list[Series]: ...

    async def aclose(self) -> None: ...


# --- pure planning ---------------------------------------------------------------------------------

_DUR = re.compile(r"^(\d+)(s|m|h|d|w)$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(frozen=True, slots=True)
class FixedWindows:
    """Windows of ``every_ns``, starting where ``(t + offset_ns) % every_ns == 0``."""

    every_ns: int
    offset_ns: int

    def start_of(self, t: int) -> int:
        return (t + self.offset_ns) // self.every_ns * self.every_ns - self.offset_ns


@dataclass(frozen=True, slots=True)
class CalendarWindows:
    """Explicit windows: (label = calendar start, lo, hi) with lo/hi cut to the query range."""

    windows: tuple[tuple[int, int, int], ...]


def _to_ns(dt: datetime) -> int:
    return int(dt.timestamp()) * NS


def plan_windows(start_ns: int, end_ns: int, every: int | str, tz: str = DEFAULT_TZ) -> FixedWindows | CalendarWindows:
    """How to cut ``[start_ns, end_ns)`` into windows. Pure; both implementations use it."""
    if end_ns <= start_ns:
        raise StoreError(f"empty time range [{start_ns}, {end_ns})")
    zone = ZoneInfo(tz)
    if every in ("day", "month"):
        first = datetime.fromtimestamp(start_ns // NS, zone).replace(hour=0, minute=0, second=0, microsecond=0)
        if every == "month":
            first = first.replace(day=1)
        bounds = [first]
        while _to_ns(bounds[-1]) < end_ns:
            b = bounds[-1]
            if every == "day":
                nxt = (b.replace(tzinfo=None) + timedelta(days=1)).replace(tzinfo=zone)
            else:
                nxt = b.replace(year=b.year + (b.month == 12), month=b.month % 12 + 1)
            bounds.append(nxt)
        ns = [_to_ns(b) for b in bounds]
        if every == "day" and all(b - a == 86400 * NS for a, b in zip(ns, ns[1:], strict=False)):
            off = int(bounds[0].utcoffset().total_seconds()) * NS  # type: ignore[union-attr]
            fw = FixedWindows(86400 * NS, off)
            if fw.start_of(ns[0]) == ns[0]:
                return fw
        return CalendarWindows(tuple((a, max(a, start_ns), min(b, end_ns)) for a, b in zip(ns, ns[1:], strict=False)))
    if isinstance(every, str):
        m = _DUR.match(every.strip())
        if not m:
            raise StoreError(f"window {every!r}: use seconds, '15m', '1h', '1d', 'day' or 'month'")
        every_s = int(m.group(1)) * _UNIT_S[m.group(2)]
    else:
        every_s = int(every)
    if every_s <= 0:
        raise StoreError(f"window of {every_s} s")
    off = int(datetime.fromtimestamp(start_ns // NS, zone).utcoffset().total_seconds()) * NS  # type: ignore[union-attr]
    return FixedWindows(every_s * NS, off)


def to_array(values: Sequence[Any]) -> np.ndarray:
    if values and all(isinstance(v, bool) for v in values):
        return np.array(values, dtype=bool)
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return np.array(values, dtype=np.float64)
    return np.array(values, dtype=object)


def _series(measurement: str, tags: Mapping[str, str], fname: str, times: list[int], values: list[Any],
            agg: str | None = None) -> Series:
    t = np.array(times, dtype=np.int64)
    if agg == "count":
        v = np.array(values, dtype=np.int64)
    elif agg is not None:
        v = np.array(values, dtype=np.float64)
    else:
        v = to_array(values)
    return Series(measurement, dict(tags), fname, t, v)


def _sorted(out: list) -> list:
    return sorted(out, key=lambda s: (s.measurement, tuple(sorted(s.tags.items())), s.field))


# --- InfluxQL over HTTP ----------------------------------------------------------------------------


def quote_ident(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_str(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def regex_literal(text: str) -> str:
    """Escape ``text`` to match literally inside an InfluxQL ``/regex/`` (Go RE2)."""
    return "".join("\\" + c if c in r".-^$*+?()[]{}|\/" else c for c in text)


def influxql_where(where: Where, start_ns: int | None = None, end_ns: int | None = None) -> str:
    """The WHERE clause (without the keyword) for a filter and a time range; '' when empty."""
    parts = []
    if start_ns is not None:
        parts.append(f"time >= {int(start_ns)}")
    if end_ns is not None:
        parts.append(f"time < {int(end_ns)}")
    for k, want in sorted(where.tags.items()):
        if isinstance(want, str):
            parts.append(f"{quote_ident(k)} = {quote_str(want)}")
        elif not want:
            parts.append("false")  # nothing can match an empty set
        else:
            parts.append("(" + " OR ".join(f"{quote_ident(k)} = {quote_str(v)}" for v in want) + ")")
    if where.org is not None:
        scope = where.org.strip("/")
        parts.append(f"(\"org\" = {quote_str(scope)} OR \"org\" =~ /^{regex_literal(scope + '/')}/)")
    return " AND ".join(parts)


def influxql_duration(every_ns: int) -> str:
    for unit, size in (("w", 7 * 86400 * NS), ("d", 86400 * NS), ("h", 3600 * NS), ("m", 60 * NS), ("s", NS),
                       ("ms", 1_000_000), ("u", 1000)):
        if every_ns % size == 0:
            return f"{every_ns // size}{unit}"
    return f"{every_ns}ns"


class InfluxQLQuery:
    """``Query`` over InfluxDB's ``/query`` endpoint (1.x; 2.x v1-compat with a DBRP mapping; 3.x)."""

    def __init__(self, url: str, database: str, *, retention_policy: str | None = None,
                 username: str | None = None, password: str | None = None, token: str | None = None,
                 timeout_s: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.database = database
        self.retention_policy = retention_policy
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Token {token}"
        auth = (username, password or "") if username else None
        self._client = httpx.AsyncClient(base_url=self.url, headers=headers, auth=auth,
                                         timeout=httpx.Timeout(timeout_s))

    def _from(self, measurement: str) -> str:
        if self.retention_policy:
            return f"{quote_ident(self.database)}.{quote_ident(self.retention_policy)}.{quote_ident(measurement)}"
        return quote_ident(measurement)

    async def statements(self, statements: Sequence[str]) -> list[list[dict]]:
        """Run statements in one request; per statement, its list of series (wire format)."""
        if not statements:
            return []
        params = {"db": self.database, "epoch": "ns"}
        if self.retention_policy:
            params["rp"] = self.retention_policy
        try:
            r = await self._client.post("/query", params=params, data={"q": ";\n".join(statements)})
        except httpx.HTTPError as e:
            raise StoreError(f"{self.url}/query: {type(e).__name__}: {e}") from e
        try:
            doc = orjson.loads(r.content)
        except orjson.JSONDecodeError:
            raise StoreError(f"{self.url}/query: HTTP {r.status_code}: {r.text[:500]}") from None
        if r.status_code != 200 or "error" in doc:
            raise StoreError(f"{self.url}/query: HTTP {r.status_code}: {doc.get('error', r.text[:500])}")
        results = doc.get("results", [])
        out: list[list[dict]] = [[] for _ in statements]
        for res in results:
            i = res.get("statement_id", 0)
            if "error" in res:
                raise StoreError(f"{self.url}/query: {res['error']} (statement: {statements[i][:300]})")
            if 0 <= i < len(out):
                out[i] = res.get("series", [])
        return out

    async def field_keys(self, measurement: str) -> list[str]:
        (series,) = await self.statements([f"SHOW FIELD KEYS FROM {self._from(measurement)}"])
        return sorted({v[0] for s in series for v in s.get("values", [])})

    async def latest(self, measurement: str, fields: Sequence[str] | None = None, where: Where = Where(),
                     since_ns: int | None = None) -> list[Latest]:
        names = list(fields) if fields is not None else await self.field_keys(measurement)
        cond = influxql_where(where, since_ns, None)
        wh = f" WHERE {cond}" if cond else ""
        stmts = [f"SELECT last({quote_ident(f)}) FROM {self._from(measurement)}{wh} GROUP BY *" for f in names]
        out = []
        for fname, series in zip(names, await self.statements(stmts), strict=True):
            for s in series:
                tags = {k: v for k, v in (s.get("tags") or {}).items() if v != ""}
                for t, v in s.get("values", []):
                    if v is not None:
                        out.append(Latest(measurement, tags, fname, int(t), v))
        return sorted(out, key=lambda r: (tuple(sorted(r.tags.items())), r.field))

    async def raw(self, measurement: str, fields: Sequence[str], start_ns: int, end_ns: int,
                  where: Where = Where()) -> list[Series]:
        if not fields:
            return []
        sel = ", ".join(quote_ident(f) for f in fields)
        stmt = (f"SELECT {sel} FROM {self._from(measurement)} WHERE {influxql_where(where, start_ns, end_ns)} "
                f"GROUP BY * ORDER BY time ASC")
        (series,) = await self.statements([stmt])
        return _sorted(self._columns(measurement, series, list(fields), None))

    @staticmethod
    def _columns(measurement: str, series: list[dict], names: list[str], agg: str | None,
                 label_ns: int | None = None) -> list[Series]:
        out = []
        for s in series:
            tags = {k: v for k, v in (s.get("tags") or {}).items() if v != ""}
            cols = s.get("columns", [])
            rows = s.get("values", [])
            for fname in names:
                j = cols.index(fname) if fname in cols else None
                if j is None:
                    continue
                times = [int(r[0]) if label_ns is None else label_ns for r in rows if r[j] is not None]
                vals = [r[j] for r in rows if r[j] is not None]
                if vals:
                    out.append(_series(measurement, tags, fname, times, vals, agg))
        return out

    async def windows(self, measurement: str, fields: Sequence[str], start_ns: int, end_ns: int,
                      every: int | str, agg: Agg, where: Where = Where(), tz: str = DEFAULT_TZ) -> list[Series]:
        if agg not in AGGS:
            raise StoreError(f"unknown aggregate {agg!r}; one of {', '.join(AGGS)}")
        if not fields:
            return []
        plan = plan_windows(start_ns, end_ns, every, tz)
        sel = ", ".join(f"{agg}({quote_ident(f)}) AS {quote_ident(f)}" for f in fields)
        src = self._from(measurement)
        if isinstance(plan, FixedWindows):
            stmt = (f"SELECT {sel} FROM {src} WHERE {influxql_where(where, start_ns, end_ns)} "
                    f"GROUP BY time({influxql_duration(plan.every_ns)}), * fill(none) tz({quote_str(tz)})")
            (series,) = await self.statements([stmt])
            return _sorted(self._columns(measurement, series, list(fields), agg))
        stmts = [f"SELECT {sel} FROM {src} WHERE {influxql_where(where, lo, hi)} GROUP BY *"
                 for _, lo, hi in plan.windows]
        merged: dict[tuple, tuple[dict, list[int], list[Any]]] = {}
        for (label, _, _), series in zip(plan.windows, await self.statements(stmts), strict=True):
            for s in self._columns(measurement, series, list(fields), None, label_ns=label):
                k = s.key()
                entry = merged.setdefault(k, (dict(s.tags), [], []))
                entry[1].extend(s.times_ns.tolist())
                entry[2].extend(s.values.tolist())
        out = [_series(measurement, tags, k[2], ts, vs, agg) for k, (tags, ts, vs) in merged.items()]
        return _sorted(out)

    async def aclose(self) -> None:
        await self._client.aclose()


# --- SQL on the embedded store ---------------------------------------------------------------------

_SQL_AGG = {
    "mean": "avg(value)", "sum": "sum(value)", "min": "min(value)", "max": "max(value)",
    "count": "count(value)", "spread": "max(value) - min(value)",
    # SQLite: with a single max()/min() aggregate, bare columns come from the row holding it
    "last": "value, max(time_ns)", "first": "value, min(time_ns)",
}


class StoreQuery:
    """``Query`` on the embedded store (runs its SQL in a thread)."""

    def __init__(self, store) -> None:  # store: edge.store.EmbeddedStore
        self.store = store

    def _select_series(self, measurement: str, where: Where) -> dict[int, dict[str, str]]:
        return {sid: tags for sid, tags in self.store.series(measurement) if where.matches(tags)}

    def _fields(self, measurement: str, fields: Iterable[str] | None) -> dict[int, tuple[str, str]]:
        known = self.store.fields(measurement)
        names = known.keys() if fields is None else fields
        return {known[n][0]: (n, known[n][1]) for n in names if n in known}

    def _latest(self, measurement: str, fields: Sequence[str] | None, where: Where, since_ns: int | None) -> list[Latest]:
        series = self._select_series(measurement, where)
        fids = self._fields(measurement, fields)
        if not series or not fids:
            return []
        sql = ("SELECT series_id, field_id, time_ns, value FROM latest "
               "WHERE series_id IN (SELECT value FROM json_each(?)) AND field_id IN (SELECT value FROM json_each(?))")
        args: list[Any] = [orjson.dumps(list(series)).decode(), orjson.dumps(list(fids)).decode()]
        if since_ns is not None:
            sql += " AND time_ns >= ?"
            args.append(since_ns)
        out = []
        for sid, fid, t, v in self.store.select(sql, args):
            name, ftype = fids[fid]
            out.append(Latest(measurement, dict(series[sid]), name, t, decode_value(ftype, v)))
        return sorted(out, key=lambda r: (tuple(sorted(r.tags.items())), r.field))

    def _raw(self, measurement: str, fields: Sequence[str], start_ns: int, end_ns: int, where: Where) -> list[Series]:
        series = self._select_series(measurement, where)
        fids = self._fields(measurement, fields)
        if not series or not fids:
            return []
        rows = self.store.select(
            "SELECT series_id, field_id, time_ns, value FROM points "
            "WHERE series_id IN (SELECT value FROM json_each(?)) AND field_id IN (SELECT value FROM json_each(?)) "
            "AND time_ns >= ? AND time_ns < ? ORDER BY series_id, field_id, time_ns",
            [orjson.dumps(list(series)).decode(), orjson.dumps(list(fids)).decode(), start_ns, end_ns])
        groups: dict[tuple[int, int], tuple[list[int], list[Any]]] = {}
        for sid, fid, t, v in rows:
            g = groups.setdefault((sid, fid), ([], []))
            g[0].append(t)
            g[1].append(decode_value(fids[fid][1], v))
        return _sorted([_series(measurement, series[sid], fids[fid][0], ts, vs) for (sid, fid), (ts, vs) in groups.items()])

    def _windows(self, measurement: str, fields: Sequence[str], start_ns: int, end_ns: int, every: int | str,
                 agg: str, where: Where, tz: str) -> list[Series]:
        if agg not in AGGS:
            raise StoreError(f"unknown aggregate {agg!r}; one of {', '.join(AGGS)}")
        plan = plan_windows(start_ns, end_ns, every, tz)
        series = self._select_series(measurement, where)
        fids = self._fields(measurement, fields)
        if not series or not fids:
            return []
        sel = _SQL_AGG[agg]
        ids = [orjson.dumps(list(series)).decode(), orjson.dumps(list(fids)).decode()]
        base = ("FROM points WHERE series_id IN (SELECT value FROM json_each(?)) "
                "AND field_id IN (SELECT value FROM json_each(?)) AND time_ns >= ? AND time_ns < ?")
        groups: dict[tuple[int, int], tuple[list[int], list[Any]]] = {}
        if isinstance(plan, FixedWindows):
            # t >= 0 here in practice; floor division written out so negative times bucket right too
            bucket = "((time_ns + :off) - (((time_ns + :off) % :ev) + :ev) % :ev) / :ev"
            sql = (f"SELECT series_id, field_id, {bucket} AS b, {sel} "
                   + base.replace("?", "{}").format(":s", ":f", ":lo", ":hi")
                   + " GROUP BY series_id, field_id, b ORDER BY series_id, field_id, b")
            rows = self.store.select(sql, {"s": ids[0], "f": ids[1], "lo": start_ns, "hi": end_ns,
                                           "off": plan.offset_ns, "ev": plan.every_ns})
            for sid, fid, b, v, *_ in rows:
                g = groups.setdefault((sid, fid), ([], []))
                g[0].append(b * plan.every_ns - plan.offset_ns)
                g[1].append(v)
        else:
            for label, lo, hi in plan.windows:
                rows = self.store.select(f"SELECT series_id, field_id, {sel} {base} GROUP BY series_id, field_id "
                                         "ORDER BY series_id, field_id", [*ids, lo, hi])
                for sid, fid, v, *_ in rows:
                    g = groups.setdefault((sid, fid), ([], []))
                    g[0].append(label)
                    g[1].append(v)
        return _sorted([_series(measurement, series[sid], fids[fid][0], ts, vs, agg)
                        for (sid, fid), (ts, vs) in groups.items()])

    async def latest(self, measurement: str, fields: Sequence[str] | None = None, where: Where = Where(),
                     since_ns: int | None = None) -> list[Latest]:
        return await asyncio.to_thread(self._latest, measurement, fields, where, since_ns)

    async def raw(self, measurement: str, fields: Sequence[str], start_ns: int, end_ns: int,
                  where: Where = Where()) -> list[Series]:
        return await asyncio.to_thread(self._raw, measurement, fields, start_ns, end_ns, where)

    async def windows(self, measurement: str, fields: Sequence[str], start_ns: int, end_ns: int,
                      every: int | str, agg: Agg, where: Where = Where(), tz: str = DEFAULT_TZ) -> list[Series]:
        return await asyncio.to_thread(self._windows, measurement, fields, start_ns, end_ns, every, agg, where, tz)

    async def field_keys(self, measurement: str) -> list[str]:
        """The field names a measurement has, sorted."""
        return sorted((await asyncio.to_thread(self.store.fields, measurement)).keys())

    def generation(self, measurements: Sequence[str], start_ns: int, end_ns: int) -> int:
        """The store's write generation of these measurements over ``[start_ns, end_ns)``
        (``EmbeddedStore.generation``): unchanged means the same answers. Synchronous: one indexed lookup."""
        return self.store.generation(measurements, start_ns, end_ns)

    def count_points(self, measurement: str | None = None) -> int:
        """Points stored (distinct series and time), for summaries; embedded store only, synchronous."""
        sql = "SELECT count(*) FROM (SELECT DISTINCT p.series_id, p.time_ns FROM points p"
        args: list[Any] = []
        if measurement is not None:
            sql += " JOIN series s ON s.id = p.series_id WHERE s.measurement = ?"
            args.append(measurement)
        return int(self.store.select(sql + ")", args)[0][0])

    async def aclose(self) -> None:
        await asyncio.to_thread(self.store.close)
