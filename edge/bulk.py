"""Bulk import: history written straight to the store, as columns, not through the outbox.

Live points go collector → outbox → sink, one durable log between them, because a reading not
committed is lost. History is different: it is re-derivable (an export from another system, a
simulated year), large (a year of 30 meters at 15 minutes is a million readings) and old. Through
the outbox it would be committed twice, hold live points back behind it, be parsed back from line
protocol and, where an upstream is configured, be pushed to the province as if it were new. So a
bulk import writes to the site's store directly:

* ``Columns``: the points of one series as columns, a time array and one array per field (a NaN
  leaves the field out of that point). ``points()`` gives the very same data as ``Point``s.
* ``BulkWriter.for_sink(sink)``: into the embedded store, ``EmbeddedStore.write_columns`` (one
  transaction per series, no Point, no line protocol: about a million field values a second);
  into InfluxDB (1.x, 2.x, 3.x), line protocol through the sink's own ``write`` in batches of
  ``batch_lines``, gzip'd like any delivery.

The result in the store is what the Point path would have written: the same series (measurement and
tags), times and field types (a conformance test writes both ways and compares). Re-running an
import overwrites the same points. Indicators computed over the history are Points like any
other and go through the outbox (``edge.app.backfill``).
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np

from edge.point import Point, to_line

Progress = Callable[[int], None]  # told how many points were just written


@dataclass(frozen=True)
class Columns:
    """One series' points: ``times_ns`` (n,) and per field a column of n values (floats, ints, bools;
    NaN = that field absent at that time)."""

    measurement: str
    tags: Mapping[str, str]
    times_ns: np.ndarray
    fields: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.times_ns)

    def points(self) -> Iterator[Point]:
        """The same data as Points (a point with no field left is none)."""
        names = list(self.fields)
        cols = [_plain(self.fields[n]) for n in names]
        for i, t in enumerate(np.asarray(self.times_ns, dtype=np.int64).tolist()):
            f = {n: c[i] for n, c in zip(names, cols) if c[i] is not None}
            if f:
                yield Point(self.measurement, dict(self.tags), f, t)

    def lines(self) -> list[str]:
        """Line protocol, as ``edge.point.to_line`` writes each of ``points()``."""
        probe = to_line(Point(self.measurement, dict(self.tags), {"x": 1.0}, 0))
        prefix = probe[: -len(" x=1.0 0")]
        names = list(self.fields)
        cols = [_plain(self.fields[n]) for n in names]
        keys = [to_line(Point("m", {}, {n: 1.0}, 0))[2:-len("=1.0 0")] + "=" for n in names]
        out = []
        for i, t in enumerate(np.asarray(self.times_ns, dtype=np.int64).tolist()):
            parts = [k + _lp(c[i]) for k, c in zip(keys, cols) if c[i] is not None]
            if parts:
                out.append(f"{prefix} {','.join(parts)} {t}")
        return out


def _plain(col: np.ndarray) -> list[Any]:
    """A column as Python values, None where a float is not finite."""
    a = np.asarray(col)
    if np.issubdtype(a.dtype, np.floating):
        return [x if math.isfinite(x) else None for x in a.tolist()]
    return a.tolist()


def _lp(v: Any) -> str:
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        return f"{v}i"
    return repr(float(v))


class BulkWriter:
    """Writes ``Columns`` into the site's store: the embedded one directly, InfluxDB by its sink."""

    def __init__(self, write_columns: Callable[[Columns], int] | None = None, sink: Any = None,
                 batch_lines: int = 5000) -> None:
        self._write_columns = write_columns
        self._sink = sink
        self.batch_lines = batch_lines
        self.points = 0

    @classmethod
    def for_sink(cls, sink: Any, batch_lines: int = 5000) -> "BulkWriter":
        """The bulk path of a sink from ``edge.delivery.build_sink``: its embedded store's columnar
        write, or its own ``write`` (line protocol) for InfluxDB."""
        store = getattr(sink, "store", None)
        if store is not None and hasattr(store, "write_columns"):
            return cls(write_columns=lambda c: store.write_columns(c.measurement, dict(c.tags), c.times_ns, dict(c.fields)))
        return cls(sink=sink, batch_lines=batch_lines)

    async def write(self, batches: Iterable[Columns], progress: Progress | None = None) -> int:
        """Write every batch; returns the points written (a point: a series at a time)."""
        n = 0
        pending: list[str] = []
        for c in batches:
            if self._write_columns is not None:
                await asyncio.to_thread(self._write_columns, c)
            else:
                pending.extend(c.lines())
                while len(pending) >= self.batch_lines:
                    await self._sink.write(pending[: self.batch_lines])
                    del pending[: self.batch_lines]
            n += len(c)
            if progress is not None:
                progress(len(c))
        if pending:
            await self._sink.write(pending)
        self.points += n
        return n


def split(c: Columns, rows: int) -> list[Columns]:
    """``c`` in pieces of at most ``rows`` points (smaller transactions, a finer progress bar)."""
    if len(c) <= rows:
        return [c]
    return [Columns(c.measurement, c.tags, c.times_ns[i:i + rows], {k: v[i:i + rows] for k, v in c.fields.items()})
            for i in range(0, len(c), rows)]

