"""Which readings of cumulative counters a full outbox keeps when it thins them (pure, no I/O).

A polled meter cannot hold its readings when the outbox is full, but its energy counters are
cumulative (``active_energy_import_kwh`` only grows), so a dropped reading costs resolution, not
kilowatt-hours: consumption between two readings is their difference, whatever lies between.
Thinning a span of readings keeps, per series:

* every ``keep_every``-th reading (resolution halves with each pass at the default 2);
* the first and the last reading of each local day (``tz``): a day's consumption, the last
  reading minus the first (and the interval across midnight, split by time), is unchanged;
* both readings around any backward step of a counter field (a reset, a replaced meter, a
  wrap): consumption is summed per segment between resets, and each segment keeps its ends.

What changes: the profile within a day (15-minute bins get interpolated energy), and an
implausible step (a "jump", judged by the meter's rating against the interval's length) merged
into a longer interval is judged against the longer time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Hashable, Mapping, Sequence
from zoneinfo import ZoneInfo

from edge.errors import LineProtocolError
from edge.point import parse_line


@dataclass(frozen=True, slots=True)
class ThinRule:
    """How readings put with ``OnFull.thin`` are thinned (see the module docstring).

    ``counter_fields``: field names of cumulative counters (a device profile's ``counter: true``
    registers). ``max_passes``: a row thinned this often (every 16th reading with the defaults) is
    not thinned again; whole spans are dropped instead.
    """

    counter_fields: frozenset[str] = frozenset()
    tz: str = "Asia/Shanghai"
    keep_every: int = 2
    max_passes: int = 4


class LocalDays:
    """Local day numbers in a time zone, with the UTC offset cached per hour."""

    def __init__(self, tz: str) -> None:
        self.tz = ZoneInfo(tz)
        self._offset: dict[int, int] = {}

    def day(self, t_ns: int) -> int:
        t_s = t_ns // 1_000_000_000
        hour = t_s // 3600
        off = self._offset.get(hour)
        if off is None:
            u = datetime.fromtimestamp(hour * 3600, self.tz).utcoffset()
            off = int(u.total_seconds()) if u is not None else 0
            if len(self._offset) > 100_000:
                self._offset.clear()
            self._offset[hour] = off
        return (t_s + off) // 86400


Reading = tuple[Hashable, int, tuple]  # series identity, time_ns, counter values (None where absent)


def reading_of(line: str, counter_fields: frozenset[str]) -> Reading:
    """Series identity (measurement and sorted tags), time and counter values of a line."""
    try:
        p = parse_line(line)
    except LineProtocolError:
        return line, 0, ()  # a series of its own: always kept (its day's first and last)
    vals: tuple = ()
    if counter_fields:
        f = p.fields
        vals = tuple(v if type(v) in (int, float) else None for v in (f.get(k) for k in sorted(counter_fields)))
    return (p.measurement, tuple(sorted(p.tags.items()))), p.time_ns, vals


def keep(series: Mapping[Hashable, Sequence[tuple[Any, int, tuple]]], rule: ThinRule, days: LocalDays) -> set:
    """The references to keep: ``series`` maps a series to its readings ``(ref, time_ns, counter
    values)`` in log order."""
    kept: set = set()
    every = max(1, rule.keep_every)
    for items in series.values():
        first: dict[int, Any] = {}
        last: dict[int, Any] = {}
        prev_ref: Any = None
        prev_vals: tuple = ()
        for i, (ref, t, vals) in enumerate(items):
            if i % every == 0:
                kept.add(ref)
            d = days.day(t)
            first.setdefault(d, ref)
            last[d] = ref
            if prev_ref is not None and vals and any(a is not None and b is not None and b < a
                                                     for a, b in zip(prev_vals, vals)):
                kept.add(prev_ref)  # a segment's end and the next one's start
                kept.add(ref)
            prev_ref, prev_vals = ref, vals
        kept.update(first.values())
        kept.update(last.values())
    return kept
