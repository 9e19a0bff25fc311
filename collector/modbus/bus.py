"""RS-485 bus budgets, pure: does one polling cycle of the meters on a serial line fit their interval?

A serial line (a port of the edge box, or the serial side of an RTU-over-TCP gateway) carries one
conversation at a time. Each read is a request frame of 8 characters (address, function, start,
count, CRC) and a response of 5 + 2n characters for n registers (address, function, byte count,
data, CRC); a character is 1 start bit + 8 data bits + a parity bit or a second stop bit + 1 stop
bit = 11 bits in the Modbus standard's framing (8E1 or 8N2; 10 for the common but non-standard
8N1); frames are separated by a silence of 3.5 characters (at least 1.75 ms, as the standard
fixes it above 19,200 baud), and the meter takes its turnaround time (``turnaround_ms``, often
10-50 ms) to start answering. At 9600 baud a character takes 1.15 ms: about 870 characters a
second, so 32 meters of 5 requests each need several seconds per cycle.

Verdicts (docs/modbus.md, "Bus budgets"):

- ``refuse`` when the cycle is longer than the shortest ``interval_s`` on the bus: the meters of
  that interval could never all be read in their window; every window would overrun and be
  skipped, so the site would silently get fewer readings than it asks for.
- ``warn`` when it fits but with no room: the cycle takes more than ``HEADROOM`` of the shortest
  interval, or one meter that stops answering (each of its requests then waits ``timeout_ms``)
  would push the cycle past it.
- ``ok`` otherwise.

``BusCycle`` is the poller's side: it measures each bus's real cycle (from the first poll of a
window starting to the last one of that window ending), for the meters' health and the metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

from edge.config import Parity, Transport, TransportKind

REQUEST_CHARS = 8
RESPONSE_OVERHEAD_CHARS = 5
GAP_CHARS = 3.5
MIN_GAP_S = 0.00175
HEADROOM = 0.7


def bits_per_char(t: Transport) -> int:
    """1 start bit, the data bits, a parity bit unless none, the stop bits."""
    return 1 + t.bytesize + (0 if t.parity is Parity.none else 1) + t.stopbits


def char_s(t: Transport) -> float:
    return bits_per_char(t) / t.baudrate


def gap_s(t: Transport) -> float:
    """The silence between frames: 3.5 characters of the standard's 11 bits (also on an 8N1 line: the
    longer silence is the safe one), at least 1.75 ms."""
    return max(GAP_CHARS * 11 / t.baudrate, MIN_GAP_S)


def read_wire_s(t: Transport, registers: int) -> float:
    """Wire time of one read of ``registers`` registers: request, silence, turnaround, response, silence."""
    chars = REQUEST_CHARS + RESPONSE_OVERHEAD_CHARS + 2 * registers
    return chars * char_s(t) + 2 * gap_s(t) + t.turnaround_ms / 1000.0


def is_serial(t: Transport) -> bool:
    return t.kind in (TransportKind.rtu, TransportKind.rtu_over_tcp)


@dataclass(frozen=True)
class MeterLoad:
    """What one meter puts on its bus per poll."""

    meter: str
    interval_s: float
    timeout_s: float
    reads: tuple[int, ...]          # registers per read

    @classmethod
    def of(cls, plan) -> "MeterLoad":
        """From a ``collector.modbus.service.DevicePlan``."""
        return cls(plan.meter.id, plan.meter.interval_s, plan.meter.timeout_ms / 1000.0,
                   tuple(r.request.count for r in plan.reads))


@dataclass(frozen=True)
class BusBudget:
    key: str                        # the connection key: rtu:/dev/ttyUSB0, rtu_over_tcp:10.0.3.20:502
    transport: Transport
    meters: tuple[str, ...]
    requests: int                   # per cycle (every meter once)
    cycle_s: float                  # wire time of one cycle
    shortest_interval_s: float
    worst_timeout_s: float          # what the cycle becomes when the slowest-to-fail meter does not answer
    verdict: str                    # ok | warn | refuse
    reason: str

    @property
    def baud(self) -> int:
        return self.transport.baudrate

    @property
    def bits(self) -> int:
        return bits_per_char(self.transport)

    @property
    def load(self) -> float:
        """Cycle over the shortest interval (> 1: does not fit)."""
        return self.cycle_s / self.shortest_interval_s


def budget(key: str, transport: Transport, loads: Sequence[MeterLoad], headroom: float = HEADROOM) -> BusBudget:
    wire = [sum(read_wire_s(transport, n) for n in m.reads) for m in loads]
    cycle = sum(wire)
    shortest = min(m.interval_s for m in loads)
    # a meter that stops answering: each of its reads waits its timeout instead of its wire time
    worst = max(cycle - w + len(m.reads) * (m.timeout_s + transport.turnaround_ms / 1000.0)
                for m, w in zip(loads, wire))
    fastest = [m.meter for m in loads if m.interval_s == shortest]
    per_s = len(loads) and sum(len(m.reads) for m in loads)
    if cycle > shortest:
        verdict = "refuse"
        reason = (f"one cycle ({per_s} reads) takes {cycle:.2f} s on the wire at {transport.baudrate} baud, longer than "
                  f"the shortest interval_s {shortest:g} s ({', '.join(fastest[:3])}{'...' if len(fastest) > 3 else ''}): "
                  f"every window would overrun and be skipped. Raise interval_s to at least {_round_up(cycle / headroom)} s, "
                  f"split the meters over more lines, or raise the baud rate")
    elif cycle > headroom * shortest:
        verdict = "warn"
        reason = (f"one cycle takes {cycle:.2f} s of the shortest interval_s {shortest:g} s ({100 * cycle / shortest:.0f} %): "
                  f"no room for a retry or a late answer; interval_s {_round_up(cycle / headroom)} s would leave "
                  f"{100 * (1 - headroom):.0f} %")
    elif worst > shortest:
        verdict = "warn"
        reason = (f"fits ({cycle:.2f} s of {shortest:g} s), but a meter that stops answering makes it {worst:.2f} s: each "
                  f"of its reads waits its timeout_ms. Lower timeout_ms or raise interval_s")
    else:
        verdict = "ok"
        reason = f"{cycle:.2f} s of {shortest:g} s ({100 * cycle / shortest:.0f} %), {worst:.2f} s with a meter not answering"
    return BusBudget(key, transport, tuple(m.meter for m in loads), sum(len(m.reads) for m in loads), cycle, shortest,
                     worst, verdict, reason)


def _round_up(x: float) -> str:
    for step in (1, 5, 10, 15, 30, 60, 300, 900):
        if x <= step * 60:
            v = -(-x // step) * step
            return f"{v:g}"
    return f"{x:.0f}"


def bus_budgets(plans: Iterable, headroom: float = HEADROOM) -> list[BusBudget]:
    """One budget per serial line (RTU port or RTU-over-TCP gateway) among ``plans``
    (``DevicePlan``s); Modbus TCP meters answer on their own network link and have none."""
    groups: dict[str, list] = {}
    for p in plans:
        if is_serial(p.meter.transport):
            groups.setdefault(p.connection_key, []).append(p)
    return [budget(k, ps[0].meter.transport, [MeterLoad.of(p) for p in ps], headroom) for k, ps in groups.items()]


@dataclass
class BusCycle:
    """The measured cycle of one bus: every meter of the bus due in a window polled once, from the
    first poll starting to the last one ending. ``due(slot_ns)`` is how many meters poll in that
    window (those whose interval divides it)."""

    key: str
    intervals_ns: tuple[int, ...]
    wire_s: float | None = None
    cycles: int = 0
    last_s: float | None = None
    max_s: float = 0.0
    mean_s: float | None = None     # exponentially weighted (the last ~20 cycles)
    _open: dict[int, list] = field(default_factory=dict)

    def due(self, slot_ns: int) -> int:
        return sum(1 for i in self.intervals_ns if slot_ns % i == 0)

    def begin(self, slot_ns: int, now_ns: int) -> None:
        w = self._open.get(slot_ns)
        if w is None:
            if len(self._open) > 16:              # a window that never completed (a poll cancelled)
                self._open.pop(min(self._open))
            self._open[slot_ns] = [now_ns, now_ns, 0]
        else:
            w[0] = min(w[0], now_ns)

    def end(self, slot_ns: int, now_ns: int) -> float | None:
        """A poll of the window finished; returns the cycle time when it was the window's last."""
        w = self._open.get(slot_ns)
        if w is None:
            return None
        w[1] = max(w[1], now_ns)
        w[2] += 1
        if w[2] < self.due(slot_ns):
            return None
        del self._open[slot_ns]
        s = (w[1] - w[0]) / 1e9
        self.cycles += 1
        self.last_s = s
        self.max_s = max(self.max_s, s)
        self.mean_s = s if self.mean_s is None else self.mean_s + (s - self.mean_s) / min(self.cycles, 20)
        return s

    def as_dict(self) -> dict:
        return {"bus": self.key, "cycles": self.cycles, "last_cycle_s": self.last_s, "mean_cycle_s": self.mean_s,
                "max_cycle_s": self.max_s, "wire_s": self.wire_s,
                "cycle_over_wire": (self.mean_s / self.wire_s) if self.mean_s and self.wire_s else None}
