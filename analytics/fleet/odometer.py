"""The terminal's odometer as a second opinion on mileage (JT/T 808 additional item 0x01, 0.1 km).

Readings arrive on some or all fixes (``Tracks.odometer_km``, NaN where none). Distance by the
odometer is the sum of the deltas between consecutive readings of a vehicle, each delta judged:

- a backwards step of up to ``noise_km`` is a re-read (0 km);
- a rollover (a reading within 1 % of a display's or register's maximum followed by one within
  1 % of zero: 999,999.9 km on six-digit displays, 9,999,999.9 km, or 429,496,729.5 km, the
  uint32 of 0.1 km in JT/T 808) counts the distance to the maximum and on from zero;
- any other backwards step is a reset (a terminal replaced or re-initialised): the new counter
  starts there, nothing is subtracted, the delta counts 0;
- a lone reading off the series (its neighbours agree with each other, it agrees with neither: a
  glitch, e.g. one 0 in the middle of a day) is left out and noted, the series bridged over it;
- a forward step faster than ``max_speed_kmh`` allows (plus 1 km) is an implausible jump: left out
  and noted, and the odometer of that span is not trusted.

A span (a trip, a day) has an odometer figure when it holds at least two readings covering at
least ``min_coverage`` of its time. GPS and odometer *differ* when they are further apart than
``tolerance_pct`` of the larger and than ``tolerance_km`` (the 0.1 km resolution makes short trips
noisy).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from analytics.fleet.tracks import NS, Tracks

ROLLOVERS_KM = (999_999.9, 9_999_999.9, 429_496_729.5)
RESOLUTION_KM = 0.1


@dataclass(frozen=True)
class OdometerParams:
    tolerance_pct: float = 5.0
    tolerance_km: float = 0.2
    noise_km: float = 0.2
    max_speed_kmh: float = 200.0
    min_coverage: float = 0.9


@dataclass(frozen=True, eq=False)
class OdometerSteps:
    """Per row of a ``Tracks``: the km the odometer advanced since the vehicle's previous reading
    (0 where there is no reading or the delta is left out), and what happened there."""

    reading: np.ndarray  # bool: the row has a reading
    delta_km: np.ndarray
    reset: np.ndarray  # bool
    rollover: np.ndarray  # bool
    jump: np.ndarray  # bool: implausible jump, left out
    cum_km: np.ndarray  # running sum of delta_km
    glitch: np.ndarray = None  # bool: a lone reading off the series, left out

    @cached_property
    def cumulative(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Running counts of glitches (with a leading 0), resets, rollovers and jumps, and the rows with
        a reading: what ``spans`` looks up, computed once (a pass over many days asks for many spans)."""
        return (np.concatenate([[0], np.cumsum(self.glitch)]), np.cumsum(self.reset), np.cumsum(self.rollover),
                np.cumsum(self.jump), np.flatnonzero(self.reading))


def odometer_steps(tr: Tracks, p: OdometerParams = OdometerParams()) -> OdometerSteps:
    n = len(tr)
    odo = tr.odometer_km
    reading = np.isfinite(odo)
    delta = np.zeros(n)
    reset = np.zeros(n, dtype=bool)
    roll = np.zeros(n, dtype=bool)
    jump = np.zeros(n, dtype=bool)
    idx = np.flatnonzero(reading)
    glitch = np.zeros(n, dtype=bool)
    g = tr.group
    if len(idx) > 2:
        # lone readings off the series: prev -> next plausible, prev -> r and r -> next not
        a, r, b = idx[:-2], idx[1:-1], idx[2:]
        same3 = (g[a] == g[r]) & (g[r] == g[b])

        def plausible(i, j):
            d = odo[j] - odo[i]
            return (d >= -p.noise_km) & (d <= p.max_speed_kmh * (tr.t_ns[j] - tr.t_ns[i]) / NS / 3600.0 + 1.0)

        lone = same3 & plausible(a, b) & ~plausible(a, r) & ~plausible(r, b)
        glitch[r[lone]] = True
        reading = reading & ~glitch
        idx = np.flatnonzero(reading)
    if len(idx) > 1:
        same = g[idx[1:]] == g[idx[:-1]]
        prev, new = odo[idx[:-1]], odo[idx[1:]]
        d = new - prev
        dt_h = (tr.t_ns[idx[1:]] - tr.t_ns[idx[:-1]]) / NS / 3600.0
        r = np.zeros(len(d), dtype=bool)
        d_roll = np.zeros(len(d))
        for top in ROLLOVERS_KM:
            hit = ~r & (prev >= 0.99 * top) & (prev <= top + RESOLUTION_KM) & (new <= 0.01 * top)
            d_roll = np.where(hit, top - prev + RESOLUTION_KM + new, d_roll)
            r |= hit
        back = (d < -p.noise_km) & ~r
        d = np.where(r, d_roll, np.where(d < 0, 0.0, d))
        j = ~back & (d > p.max_speed_kmh * dt_h + 1.0)
        d = np.where(back | j, 0.0, d)
        rows = idx[1:]
        delta[rows] = np.where(same, d, 0.0)
        reset[rows] = same & back
        roll[rows] = same & r
        jump[rows] = same & j
    return OdometerSteps(reading, delta, reset, roll, jump, np.cumsum(delta), glitch)


@dataclass(frozen=True, eq=False)
class OdometerSpans:
    """Odometer km over row ranges [first, last] (one vehicle each); NaN where not covered."""

    km: np.ndarray
    readings: np.ndarray  # int: readings inside the span
    resets: np.ndarray
    rollovers: np.ndarray
    jumps: np.ndarray
    glitches: np.ndarray = None

    def notes(self) -> list[str]:
        out = []
        gl = self.glitches if self.glitches is not None else np.zeros(len(self.km), dtype=np.int64)
        for k, n, r, ro, j, gg in zip(self.km, self.readings, self.resets, self.rollovers, self.jumps, gl):
            if n == 0:
                out.append("absent")
            elif np.isnan(k):
                out.append("too few readings")
            elif j:
                out.append("implausible jump")
            elif gg:
                out.append("glitch")
            elif r:
                out.append("reset")
            elif ro:
                out.append("rollover")
            else:
                out.append("trusted")
        return out

    @property
    def trusted(self) -> np.ndarray:
        """A figure exists and no implausible jump was left out of it."""
        return ~np.isnan(self.km) & (self.jumps == 0)


def spans(steps: OdometerSteps, t_ns: np.ndarray, first: np.ndarray, last: np.ndarray,
          p: OdometerParams = OdometerParams()) -> OdometerSpans:
    """Odometer km between the first and last reading inside each [first, last] row range."""
    k = len(first)
    cg, cr, cro, cj, ridx = steps.cumulative
    top = len(cg) - 1  # rows 0..0 of empty tracks (vehicles without a fix) count nothing
    glitches = cg[np.minimum(last + 1, top)] - cg[np.minimum(first, top)] if k else np.zeros(0, dtype=np.int64)
    lo = np.searchsorted(ridx, first, side="left")
    hi = np.searchsorted(ridx, last, side="right") - 1
    count = np.maximum(hi - lo + 1, 0)
    km = np.full(k, np.nan)
    z = np.zeros(k, dtype=np.int64)
    if not len(ridx) or not k:
        return OdometerSpans(km, count, z, z.copy(), z.copy(), glitches)
    ok = count >= 2
    ra = ridx[np.clip(lo, 0, len(ridx) - 1)]
    rb = ridx[np.clip(hi, 0, len(ridx) - 1)]
    span_t = (t_ns[last] - t_ns[first]).astype(float)
    cover = np.where(span_t > 0, (t_ns[rb] - t_ns[ra]) / np.maximum(span_t, 1.0), 1.0)
    ok &= cover >= p.min_coverage
    km = np.where(ok, steps.cum_km[rb] - steps.cum_km[ra], np.nan)

    def events(c):  # events at readings ra+1..rb
        return np.where(count >= 2, c[rb] - c[ra], 0)

    return OdometerSpans(km, count, events(cr), events(cro), events(cj), glitches)


def differ(odometer_km, gps_km, p: OdometerParams = OdometerParams()) -> np.ndarray:
    """True where both figures exist and differ by more than the tolerance (relative and absolute)."""
    o = np.asarray(odometer_km, dtype=float)
    g = np.asarray(gps_km, dtype=float)
    diff = np.abs(o - g)
    with np.errstate(invalid="ignore"):
        return ~np.isnan(diff) & (diff > p.tolerance_pct / 100.0 * np.fmax(o, g)) & (diff > p.tolerance_km)
