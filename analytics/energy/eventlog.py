"""What the energy passes found about each meter's data, for its health: counter events by rule
(wrap, replaced, reset, backstep, glitch, jump, gap) and data-quality alerts.

The service recomputes today on every pass, so the same event is found again and again: an event
is counted once, by its identity (meter, rule, the quarter hour its interval ends in; a reading
and the 15-minute window that holds it end in the same quarter).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from typing import Iterable

from analytics.periods import NS_PER_S, QUARTER_NS


def _iso(ns: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ns / NS_PER_S, tz=dt.timezone(dt.timedelta(hours=8))).isoformat(
        timespec="seconds")


class MeterEventLog:
    def __init__(self, keep: int = 500) -> None:
        self.keep = keep
        self._events: dict[str, OrderedDict] = {}
        self._counts: dict[str, Counter] = {}
        self._alerts: dict[str, OrderedDict] = {}
        self._new: Counter = Counter()

    def add(self, events: Iterable) -> int:
        """``(meter id, CounterEvent)`` pairs; returns how many were new."""
        n = 0
        for meter, e in events:
            key = (e.kind, -(-e.end_ns // QUARTER_NS))
            seen = self._events.setdefault(meter, OrderedDict())
            if key in seen:
                continue
            seen[key] = e
            if len(seen) > self.keep:
                seen.popitem(last=False)
            self._counts.setdefault(meter, Counter())[e.kind] += 1
            self._new[e.kind] += 1
            n += 1
        return n

    def add_alert(self, alert) -> None:
        """An ``analytics.energy.quality.DataQualityAlert`` (the latest version of a run replaces the
        earlier one: a run still going on grows)."""
        seen = self._alerts.setdefault(alert.meter, OrderedDict())
        seen[(alert.rule, alert.start_ns)] = alert
        seen.move_to_end((alert.rule, alert.start_ns))
        if len(seen) > self.keep:
            seen.popitem(last=False)

    def take_new(self) -> Counter:
        """Counter events by kind found since the last call (for the service's metrics)."""
        out, self._new = self._new, Counter()
        return out

    def for_meter(self, meter: str, last: int = 5) -> dict:
        """The meter's counter events by rule, the last few with their evidence, and its recent
        data-quality alerts (JSON-ready)."""
        evs = list(self._events.get(meter, {}).values())[-last:]
        alerts = list(self._alerts.get(meter, {}).values())[-last:]
        return {
            "counter_events": dict(self._counts.get(meter, Counter())),
            "last_counter_events": [{"kind": e.kind, "from": _iso(e.start_ns), "to": _iso(e.end_ns),
                                     "before": e.before, "after": e.after, "counted": e.delta, "rule": e.rule}
                                    for e in reversed(evs)],
            "data_quality_alerts": [{"kind": a.rule, "from": _iso(a.start_ns), "to": _iso(a.end_ns),
                                     "message": a.message} for a in reversed(alerts)],
        }
