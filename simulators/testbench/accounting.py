"""Reconcile what the simulators sent with what the store holds: pure functions over plain data.

Meter readings are polled, not pushed, so a meter's "sent" is what its simulator *answered*: the
simulator logs every read it served. The reads of one poll form one expected reading; the edge stamps a reading with the time it sent the poll's
first successful request, so a stored reading at ``t`` matches the poll whose answers lie in
``[t, t + tolerance]``. An injected timeout is never served, so it is never expected.

Vehicle positions are pushed: "sent" is what the broker acknowledged at QoS 1 (PUBACK). A stored
position matches when vehicle and timestamp are equal (the point identity in the store).

Classes of difference, per source:

* ``lost``: sent, not stored. Explained when the edge refused it on purpose (a dead-letter row
  with the reason: validation), when it was read in the last moments before a ``kill -9`` (not yet
  handed to the outbox, which the design does not promise to keep), or when the full outbox
  thinned or dropped it: the outbox records each such point (its ``dropped`` table), and a loss is
  explained only by a recorded point of the same identity (meter and time, vehicle and time),
  never by a count. "The last moments" is the meter's last poll begun
  before the kill when it was unfinished (a poll's point is built after its last request; lock
  waits behind timed-out meters on a shared gateway can stretch a poll over many seconds) or had
  finished less than an interval plus ``kill_window_ns`` before it. The rest is
  ``unexplained``: the figure that must be 0.
* ``duplicated``: a reading stored twice (two points for one poll, or two rows for one identity).
* ``late``: stored only during the drain after the sources stopped (buffered through an outage).
* ``unexpected``: stored but never sent (should be 0; a phantom).
"""

from __future__ import annotations

import bisect
from dataclasses import asdict, dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np

from analytics.energy.counters import bin_energy, counter_deltas
from analytics.periods import NS_PER_DAY


@dataclass(frozen=True)
class Poll:
    first_ns: int
    last_ns: int
    reads: int = 1


@dataclass
class SourceAccount:
    source: str
    sent: int = 0
    stored: int = 0
    lost: int = 0
    duplicated: int = 0
    late: int = 0
    unexpected: int = 0
    explained: dict[str, int] = field(default_factory=dict)
    unexplained: int = 0
    examples: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Reconciliation:
    meters: SourceAccount
    positions: SourceAccount
    outbox_dropped: int  # the outbox's own count of points it thinned or dropped (for the record)
    positions_dropped: int  # positions in the outbox's record of drops (sources that hold: must be 0)
    unexplained: int

    def as_dict(self) -> dict:
        return {"meters": self.meters.as_dict(), "positions": self.positions.as_dict(),
                "outbox_dropped": self.outbox_dropped, "positions_dropped": self.positions_dropped,
                "unexplained": self.unexplained, "verdict": self.verdict()}

    def verdict(self) -> str:
        if self.unexplained == 0:
            return "zero unexplained loss"
        return f"{self.unexplained} readings/positions lost without explanation"


def group_polls(served: Sequence[tuple[int, int, int]], interval_s: float) -> list[Poll]:
    """Answered reads of one meter, ``(t_ns, function, address)``, grouped into polls.

    A poll reads its requests in ascending (function, address) order, each at most once (the
    collector's plan order), so a read at or below the previous one in that order starts a new
    poll. Lock waits behind timed-out meters on a shared gateway can spread one poll over several
    intervals, so order, not time, tells polls apart; only a silence of ten intervals also does.
    """
    gap = int(10 * interval_s * 1e9)
    polls: list[Poll] = []
    first = last = None
    n = 0
    prev_key: tuple[int, int] | None = None
    for t, fc, addr in sorted(served):
        key = (fc, addr)
        if first is None:
            first = last = t
            n = 1
        elif t - last > gap or (prev_key is not None and key <= prev_key):
            polls.append(Poll(first, last, n))
            first = last = t
            n = 1
        else:
            last = t
            n += 1
        prev_key = key
    if first is not None:
        polls.append(Poll(first, last, n))
    return polls


def in_flight_at_kill(p: Poll, next_first_ns: int | None, kills_ns: Sequence[int], window_ns: int,
                      interval_ns: int, planned_reads: int) -> bool:
    """The meter's last poll begun before a kill -9, and either unfinished (fewer answered reads than
    the meter's plan: the rest were still waiting for the gateway's lock) or finished less than an
    interval plus ``window_ns`` before the kill (its point may not have reached the outbox)."""
    for k in kills_ns:
        if p.first_ns <= k and (next_first_ns is None or next_first_ns > k):
            if p.reads < planned_reads or k - p.last_ns <= interval_ns + window_ns:
                return True
    return False


def _poll_at(ps: Sequence[Poll], firsts: Sequence[int], t: int, tolerance_ns: int) -> int | None:
    """The poll a reading stamped ``t`` came from: the one whose first answer is the first at or
    after ``t`` (within the tolerance), or None."""
    i = bisect.bisect_left(firsts, t)
    for j in (i, i - 1):
        if 0 <= j < len(ps) and ps[j].first_ns - tolerance_ns <= t <= ps[j].last_ns:
            return j
    return None


def reconcile_meters(polls: Mapping[str, Sequence[Poll]], stored: Mapping[str, Sequence[int]],
                     snapshot: Mapping[str, Sequence[int]], kills_ns: Sequence[int] = (),
                     tolerance_ns: int = 2_000_000_000, kill_window_ns: int = 3_000_000_000,
                     interval_s: Mapping[str, float] | float = 15.0,
                     dropped: Mapping[str, Sequence[tuple[int, str]]] | None = None) -> SourceAccount:
    """``polls``: meter -> expected readings; ``stored``/``snapshot``: meter -> stored times (final / at
    source stop); ``dropped``: meter -> (time, reason) of the readings the outbox recorded as thinned or
    dropped before the local store had them."""
    acc = SourceAccount("meters")
    explained = {"in_flight_at_kill": 0, "thinned_by_outbox": 0, "dropped_by_outbox": 0}
    dropped = dropped or {}
    for meter in sorted(set(polls) | set(stored)):
        ps = list(polls.get(meter, ()))
        times = sorted(stored.get(meter, ()))
        snap = set(snapshot.get(meter, ()))
        acc.sent += len(ps)
        uniq = sorted(set(times))
        acc.stored += len(uniq)
        acc.duplicated += len(times) - len(uniq)
        acc.late += sum(1 for t in uniq if t not in snap)
        firsts = [p.first_ns for p in ps]
        matched = [0] * len(ps)
        for t in uniq:
            hit = _poll_at(ps, firsts, t, tolerance_ns)
            if hit is None:
                acc.unexpected += 1
                if len(acc.examples) < 5:
                    acc.examples.append(f"unexpected {meter} t={t}")
                continue
            matched[hit] += 1
        acc.duplicated += sum(m - 1 for m in matched if m > 1)
        why_dropped: dict[int, str] = {}
        for t, reason in dropped.get(meter, ()):
            hit = _poll_at(ps, firsts, t, tolerance_ns)
            if hit is not None:
                why_dropped[hit] = reason
        planned = max((p.reads for p in ps), default=0)
        iv = interval_s if isinstance(interval_s, (int, float)) else interval_s.get(meter, 15.0)
        for j, (p, m) in enumerate(zip(ps, matched, strict=True)):
            if m:
                continue
            acc.lost += 1
            nxt = ps[j + 1].first_ns if j + 1 < len(ps) else None
            if j in why_dropped:
                explained[f"{why_dropped[j]}_by_outbox"] = explained.get(f"{why_dropped[j]}_by_outbox", 0) + 1
            elif in_flight_at_kill(p, nxt, kills_ns, kill_window_ns, int(iv * 1e9), planned):
                explained["in_flight_at_kill"] += 1
            else:
                acc.unexplained += 1
                if len(acc.examples) < 5:
                    acc.examples.append(f"lost {meter} poll at {p.first_ns}")
    acc.explained = explained
    return acc


def reconcile_positions(sent: Mapping[str, Iterable[int]], stored: Mapping[str, Sequence[int]],
                        snapshot: Mapping[str, Sequence[int]], rejected: Iterable[tuple[str, int]] = (),
                        dropped: Iterable[tuple[str, int]] = ()) -> SourceAccount:
    """``sent``: vehicle -> acknowledged times; ``rejected``: (vehicle, time) the edge dead-lettered on
    purpose; ``dropped``: (vehicle, time) the outbox recorded as dropped (a source that holds: none)."""
    acc = SourceAccount("positions")
    rej = set(rejected)
    drop = set(dropped)
    explained = {"rejected_by_validation": 0, "dropped_by_outbox": 0}
    for vid in sorted(set(sent) | set(stored)):
        s = set(sent.get(vid, ()))
        times = list(stored.get(vid, ()))
        st = set(times)
        snap = set(snapshot.get(vid, ()))
        acc.sent += len(s)
        acc.stored += len(st)
        acc.duplicated += len(times) - len(st)
        acc.late += len(st - snap)
        acc.unexpected += len(st - s)
        for t in sorted(s - st):
            acc.lost += 1
            if (vid, t) in rej:
                explained["rejected_by_validation"] += 1
            elif (vid, t) in drop:
                explained["dropped_by_outbox"] += 1
            else:
                acc.unexplained += 1
                if len(acc.examples) < 5:
                    acc.examples.append(f"lost {vid} t={t}")
    acc.explained = explained
    return acc


def reconcile(meters: SourceAccount, positions: SourceAccount, outbox_dropped: int = 0,
              positions_dropped: int = 0) -> Reconciliation:
    """Combine both sources: what is unexplained in either (drops are explained point by point, by
    the outbox's record, in ``reconcile_meters`` and ``reconcile_positions``)."""
    return Reconciliation(meters, positions, outbox_dropped, positions_dropped,
                          meters.unexplained + positions.unexplained)


def energy_by_day(times_ns: Sequence[int], values: Sequence[float], first_day_ns: int, days: int) -> list[float]:
    """Consumption of a cumulative counter per local day starting at ``first_day_ns``, as the energy
    indicators compute it (analytics' counter deltas: resets count 0, the interval across midnight
    is split by time); NaN for a day the readings do not cover."""
    order = sorted(range(len(times_ns)), key=lambda i: times_ns[i])
    t = np.array([times_ns[i] for i in order], dtype=np.int64)
    v = np.array([values[i] for i in order], dtype=np.float64)
    if t.size < 2:
        return [float("nan")] * days
    return [float(x) for x in bin_energy(counter_deltas(t, v), first_day_ns, days, NS_PER_DAY).energy]


def energy_changed(stored: Mapping[tuple[str, str], Mapping[int, float]],
                   thinned: Mapping[tuple[str, str], Mapping[int, float]], first_day_ns: int, days: int,
                   rel_tol: float = 1e-9) -> list[tuple[str, str, int, float, float]]:
    """(meter, counter field, day, energy from every reading, energy from the stored ones) wherever
    the readings the outbox thinned away change a day's consumption. ``stored``/``thinned``:
    (meter, field) -> {time_ns: value}."""
    out = []
    for key in sorted(thinned):
        if not thinned[key]:
            continue
        kept = dict(stored.get(key, {}))
        every = {**thinned[key], **kept}
        a = energy_by_day(list(every), list(every.values()), first_day_ns, days)
        b = energy_by_day(list(kept), list(kept.values()), first_day_ns, days)
        for d, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != x and y != y:  # both NaN: a day no reading covers
                continue
            if not abs(x - y) <= rel_tol * max(1.0, abs(x)):
                out.append((key[0], key[1], d, x, y))
    return out
