"""Vehicle tracks as numpy arrays, their validation and their cleaning.

A ``Tracks`` holds the fixes of one or many vehicles in concatenated arrays (one slice per
vehicle, ``offsets`` as in a CSR matrix) so every step below runs vectorised over the whole
fleet at once. Times are int64 ns UTC; coordinates WGS-84 degrees; a value a terminal did not
report is NaN (floats) or -1 (``acc``, ``satellites``).

``Tracks.single`` refuses what cannot be a fix with a ``TrackError`` that names the field, the
unit expected and the first bad row: times that are not integer nanoseconds (seconds or
milliseconds by mistake), non-finite coordinates, negative or infinite speeds and odometers.

Cleaning (``clean``) follows DOMAIN.md "mileage" and reports every fix it drops or moves, per
reason and vehicle, never silently (docs/fleet.md has the rules and their defaults):

- ``invalid_fix``: out-of-range coordinates, or a reported satellite count below
  ``min_satellites`` (0 satellites = the terminal says it has no fix);
- ``zero_coords``: (0, 0), the usual "no fix yet" placeholder;
- ``future``: timestamps later than ``now_ns`` + ``future_tolerance_s``;
- ``duplicate``: a second fix of the same vehicle with the same timestamp (the first is kept);
- ``speed_above_max``: a *reported* speed above ``max_speed_kmh``;
- ``outlier``: a position the vehicle did not drive through: one fix or a run of up to
  ``outlier_window`` fixes that the track jumps into and out of (a jump: faster than
  ``max_speed_kmh``, or much faster than the steps around it), when the fixes either side join
  plausibly without it; then any step still faster than the maximum is resolved by dropping the
  end whose removal leaves a plausible step;
- ``cold_start``: a short run at a vehicle's start or after a signal gap, left by a jump: judged
  against the fixes *after* it (a receiver's first fix after a gap is often stale or wild);
- jitter (moved, not dropped: ``jitter_snapped``): fixes of a *parked* vehicle are moved onto
  the arrival position. Parked means: a reported speed at or below ``parked_speed_kmh`` or ACC
  off (then within ``parked_radius_m``), or, with neither reported, no fix within
  ``parked_window_s`` either side further than ``jitter_m`` (a moving vehicle never is).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping, Sequence

import numpy as np

from analytics.fleet.geo import near_m
from edge.errors import EdgeError

NS = 1_000_000_000
REASONS = ("invalid_fix", "zero_coords", "future", "duplicate", "speed_above_max", "outlier", "cold_start")
# int64 ns between 1971-01-01 and 2100-01-01: anything outside is another unit (s, ms, us) or garbage
_T_MIN_NS, _T_MAX_NS = 31_536_000 * NS, 4_102_444_800 * NS


class TrackError(EdgeError, ValueError):
    """Fixes that cannot be a track: the message names the field, the unit expected and the row."""


def _first_bad(mask: np.ndarray, values: np.ndarray, vehicle: str, field: str, what: str) -> None:
    if mask.any():
        i = int(np.flatnonzero(mask)[0])
        raise TrackError(f"vehicle {vehicle!r}: {field} has {int(mask.sum())} value(s) {what} "
                         f"(first at row {i}: {values[i].item()!r})")


def _check_times(t: np.ndarray, vehicle: str) -> np.ndarray:
    if t.dtype.kind == "f":
        if not np.all(np.isfinite(t)):
            _first_bad(~np.isfinite(t), t, vehicle, "t_ns", "not finite: expected int64 nanoseconds since the epoch")
        if np.any(t != np.round(t)):
            raise TrackError(f"vehicle {vehicle!r}: t_ns has fractions: expected int64 nanoseconds since the epoch")
    elif t.dtype.kind not in "iu":
        raise TrackError(f"vehicle {vehicle!r}: t_ns is {t.dtype}: expected int64 nanoseconds since the epoch")
    t = t.astype(np.int64)
    if len(t):
        hi = int(t.max())
        if hi < _T_MIN_NS:
            unit = "seconds" if hi < 10**11 else "milliseconds" if hi < 10**14 else "microseconds"
            raise TrackError(f"vehicle {vehicle!r}: t_ns looks like {unit}: "
                             f"expected int64 nanoseconds since the epoch (largest value {hi})")
        _first_bad((t < _T_MIN_NS) | (t > _T_MAX_NS), t, vehicle, "t_ns",
                   "outside 1971..2100: expected int64 nanoseconds since the epoch")
    return t


def _f(a, n: int) -> np.ndarray:
    if a is None:
        return np.full(n, np.nan)
    return np.asarray(a, dtype=np.float64)


def _i8(a, n: int) -> np.ndarray:
    if a is None:
        return np.full(n, -1, dtype=np.int8)
    a = np.asarray(a)
    if a.dtype == object:  # None for "not reported"
        return np.array([-1 if v is None else int(bool(v)) for v in a], dtype=np.int8)
    if a.dtype.kind == "f":
        out = np.where(np.isnan(a), -1, a != 0).astype(np.int8)
        return out
    return a.astype(np.int8)


@dataclass(frozen=True, eq=False)
class Tracks:
    """Fixes of one or more vehicles; vehicle ``k`` owns rows ``offsets[k]:offsets[k+1]``.

    Units: ``t_ns`` int ns UTC, ``lat``/``lon`` degrees WGS-84, ``speed_kmh`` km/h,
    ``odometer_km`` km, ``acc`` 1 on / 0 off / -1 not reported, ``satellites`` count or -1.
    """

    vehicles: tuple[str, ...]
    offsets: np.ndarray
    t_ns: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    speed_kmh: np.ndarray
    acc: np.ndarray
    odometer_km: np.ndarray
    satellites: np.ndarray

    @classmethod
    def single(cls, vehicle: str, t_ns, lat, lon, speed_kmh=None, acc=None, odometer_km=None,
               satellites=None) -> "Tracks":
        """One vehicle's fixes, checked: raises ``TrackError`` naming the field, unit and row of the
        first value that cannot be a fix (NaN speed / odometer = not reported; NaN coordinates are
        refused: a report without a position is not a fix)."""
        t = _check_times(np.asarray(t_ns), vehicle)
        n = len(t)
        sat = np.full(n, -1, dtype=np.int16) if satellites is None else np.asarray(satellites, dtype=np.int16)
        la, lo, sp, od = _f(lat, n), _f(lon, n), _f(speed_kmh, n), _f(odometer_km, n)
        for name, a in (("lat", la), ("lon", lo), ("speed_kmh", sp), ("odometer_km", od)):
            if len(a) != n:
                raise TrackError(f"vehicle {vehicle!r}: {name} has {len(a)} values for {n} times")
        _first_bad(~np.isfinite(la), la, vehicle, "lat", "not finite: expected WGS-84 degrees")
        _first_bad(~np.isfinite(lo), lo, vehicle, "lon", "not finite: expected WGS-84 degrees")
        with np.errstate(invalid="ignore"):
            _first_bad(np.isinf(sp) | (sp < 0), sp, vehicle, "speed_kmh",
                       "negative or infinite: expected km/h >= 0 (NaN = not reported)")
            _first_bad(np.isinf(od) | (od < 0), od, vehicle, "odometer_km",
                       "negative or infinite: expected km >= 0 (NaN = not reported)")
        return cls((vehicle,), np.array([0, n], dtype=np.int64), t, la, lo, sp, _i8(acc, n), od, sat)

    @classmethod
    def empty(cls, vehicle: str) -> "Tracks":
        return cls.single(vehicle, [], [], [])

    @classmethod
    def concat(cls, parts: Sequence["Tracks"]) -> "Tracks":
        if not parts:
            return cls((), np.zeros(1, dtype=np.int64), *(np.empty(0, dtype=d) for d in
                       (np.int64, float, float, float, np.int8, float, np.int16)))
        sizes = [p.offsets[1:] - p.offsets[:-1] for p in parts]
        offsets = np.concatenate([[0], np.cumsum(np.concatenate(sizes))]).astype(np.int64)
        cat = lambda name: np.concatenate([getattr(p, name) for p in parts])  # noqa: E731
        return cls(tuple(v for p in parts for v in p.vehicles), offsets, cat("t_ns"), cat("lat"),
                   cat("lon"), cat("speed_kmh"), cat("acc"), cat("odometer_km"), cat("satellites"))

    def __len__(self) -> int:
        return len(self.t_ns)

    @property
    def n_vehicles(self) -> int:
        return len(self.vehicles)

    @property
    def group(self) -> np.ndarray:
        """Vehicle index of every fix."""
        return np.repeat(np.arange(self.n_vehicles), np.diff(self.offsets))

    def of(self, vehicle: str) -> "Tracks":
        k = self.vehicles.index(vehicle)
        a, b = int(self.offsets[k]), int(self.offsets[k + 1])
        return Tracks((vehicle,), np.array([0, b - a], dtype=np.int64), self.t_ns[a:b], self.lat[a:b],
                      self.lon[a:b], self.speed_kmh[a:b], self.acc[a:b], self.odometer_km[a:b],
                      self.satellites[a:b])

    def take(self, keep: np.ndarray) -> "Tracks":
        """Rows where ``keep`` is True (vehicles kept even when left empty)."""
        counts = np.bincount(self.group[keep], minlength=self.n_vehicles)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return Tracks(self.vehicles, offsets, self.t_ns[keep], self.lat[keep], self.lon[keep],
                      self.speed_kmh[keep], self.acc[keep], self.odometer_km[keep], self.satellites[keep])



@dataclass(frozen=True)
class CleanParams:
    """Cleaning thresholds (DOMAIN.md defaults; docs/fleet.md explains each)."""

    max_speed_kmh: float = 200.0
    future_tolerance_s: float = 300.0
    min_satellites: int = 3
    gps_error_m: float = 50.0  # position error allowed on top of a speed when judging a step
    outlier_window: int = 4  # longest run of bad fixes recognised as one
    local_factor: float = 2.5  # a step this many times faster than its neighbours (and > 60 km/h) is a jump
    cold_start_gap_s: float = 20.0  # after a gap this long (and 2.5x the usual interval) a fix is judged by what follows
    jitter_m: float = 30.0
    parked_window_s: float = 60.0  # without speed or ACC: parked if nothing within this many s strays past jitter_m
    parked_speed_kmh: float = 3.0  # a reported speed at or below this may be parked jitter
    parked_radius_m: float = 150.0  # how far a fix reported standing (speed ~0 or ACC off) may wander
    spike_passes: int = 3


@dataclass(frozen=True, eq=False)
class Cleaned:
    """Result of ``clean``: the kept fixes, and what was dropped per reason and vehicle."""

    tracks: Tracks
    dropped: Mapping[str, np.ndarray] = field(default_factory=dict)  # reason -> int64[n_vehicles]
    jitter_snapped: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def dropped_total(self) -> dict[str, int]:
        return {k: int(v.sum()) for k, v in self.dropped.items()}


def _count(group: np.ndarray, mask: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(group[mask], minlength=n).astype(np.int64)


def time_key(t_ns: np.ndarray, group: np.ndarray) -> np.ndarray:
    """A float64 key, increasing over rows sorted by (vehicle, time), in seconds, with each
    vehicle's times shifted far past the previous vehicle's: ``searchsorted`` on it finds time
    windows within one vehicle for the whole fleet at once (resolution well under 1 ms)."""
    if len(t_ns) == 0:
        return np.zeros(0)
    t0 = int(t_ns.min())
    rel = (t_ns - t0) / NS
    span = float(rel.max()) + 1e6
    return rel + group * span


def window_edges(key: np.ndarray, offsets: np.ndarray, group: np.ndarray, before_s: float, after_s: float):
    """Per row: the last row at or before ``t - before_s`` and the first at or after ``t + after_s``,
    clipped to the row's vehicle. Returns (lo, hi) row indices."""
    n = len(key)
    ar = np.arange(n)
    first = offsets[:-1][group]
    last = offsets[1:][group] - 1
    lo = np.searchsorted(key, key - before_s, side="right") - 1
    hi = np.searchsorted(key, key + after_s, side="left")
    return np.clip(np.minimum(lo, ar), first, last), np.clip(np.maximum(hi, ar), first, last)


def _reach(lat, lon, t, i, j, vmax_ms: float, err_m: float) -> np.ndarray:
    """True where fix j is reachable from fix i (either order) at vmax plus the position error."""
    d = near_m(lat[i], lon[i], lat[j], lon[j])
    return d <= vmax_ms * np.abs(t[j] - t[i]) / NS + err_m


def _suspicious_runs(idx: np.ndarray, g: np.ndarray, t, lat, lon, p: CleanParams) -> tuple[np.ndarray, np.ndarray]:
    """Among kept rows ``idx``: runs of up to ``outlier_window`` fixes that the track jumps into
    and out of. Returns (drop, cold) as bools over idx.

    A step is a *jump* when it is faster than ``max_speed_kmh``, or faster than 60 km/h and
    ``local_factor`` times the speed of the steps around it (so a 1 km error shows
    at urban speeds even where it stays under the maximum). A step is a *break* at a vehicle's
    start or after a signal gap (at least ``cold_start_gap_s`` and 2.5 times the usual interval).
    A short run entered by a jump and left by a jump, whose neighbours join plausibly without
    it, is an outlier run; a short run after a break and left by a jump, followed by a longer
    run, is a cold start (judged against the fixes after it); likewise a short run entered by a
    jump and ending at a break or the vehicle's end.
    """
    m = len(idx)
    drop = np.zeros(m, dtype=bool)
    cold = np.zeros(m, dtype=bool)
    if m < 2:
        return drop, cold
    vmax = p.max_speed_kmh / 3.6
    gi = g[idx]
    same = gi[1:] == gi[:-1]
    d = near_m(lat[idx[:-1]], lon[idx[:-1]], lat[idx[1:]], lon[idx[1:]])
    dt = np.diff(t[idx]) / NS
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.where(same & (dt > 0), np.maximum(d - p.gps_error_m, 0) / dt, np.where(same & (d > p.gps_error_m), np.inf, 0))
    k = len(v)

    def shifted(a, s, fill):
        out = np.full(k, fill)
        if s > 0:
            out[s:] = a[:-s]
        else:
            out[:s] = a[-s:]
        return out

    def side_ref(a):
        """A step's reference from its neighbours: on each side the smaller of the two steps
        there (one wild step does not raise it), then the larger side (NaN-safe, cheap)."""
        a = np.where(same, a, np.nan)
        left = np.fmin(np.where(shifted(same, 1, False), shifted(a, 1, np.nan), np.nan),
                       np.where(shifted(same, 2, False) & shifted(same, 1, False), shifted(a, 2, np.nan), np.nan))
        right = np.fmin(np.where(shifted(same, -1, False), shifted(a, -1, np.nan), np.nan),
                        np.where(shifted(same, -2, False) & shifted(same, -1, False), shifted(a, -2, np.nan), np.nan))
        return np.fmax(left, right)

    v_med = side_ref(np.where(np.isinf(v), np.nan, v))
    dt_med = side_ref(dt)
    v_med = np.where(np.isnan(v_med), 0.0, v_med)
    floor = 60 / 3.6
    jump = same & ((v > vmax) | ((v > floor) & (v > p.local_factor * v_med)))
    brk = ~same | ((dt >= p.cold_start_gap_s) & ~(dt < 2.5 * np.where(np.isnan(dt_med), 0.0, dt_med)))
    if not jump.any():
        return drop, cold
    # pieces: runs of fixes between boundaries (a jump or a break before fix j, j = 1..m-1)
    bound = np.concatenate([[True], jump | brk])
    piece = np.cumsum(bound) - 1
    starts = np.flatnonzero(bound)
    ends = np.concatenate([starts[1:] - 1, [m - 1]])
    length = ends - starts + 1
    enter_jump = np.concatenate([[False], jump])[starts]
    exit_jump = np.concatenate([jump, [False]])[ends]
    W = max(int(p.outlier_window), 1)
    short = length <= W
    nxt_len = np.concatenate([length[1:], [0]])
    prv_len = np.concatenate([[0], length[:-1]])
    nxt_same = np.concatenate([gi[starts[1:]] == gi[ends[:-1]], [False]])
    prv_same = np.concatenate([[False], gi[starts[1:]] == gi[ends[:-1]]])
    # outlier run: jump in, jump out, and the fixes around it join plausibly without it
    a = np.maximum(starts - 1, 0)
    b = np.minimum(ends + 1, m - 1)
    dab = near_m(lat[idx[a]], lon[idx[a]], lat[idx[b]], lon[idx[b]])
    dtab = np.abs(t[idx[b]] - t[idx[a]]) / NS
    joins = dab <= vmax * dtab + p.gps_error_m
    run = short & enter_jump & exit_jump & joins & prv_same & nxt_same
    # cold start: after a break, left by a jump, followed by a longer run of the same vehicle
    first = short & ~enter_jump & exit_jump & nxt_same & (nxt_len > length)
    # a short run jumped into that ends at a break or the vehicle's end, after a longer run
    last = short & enter_jump & ~exit_jump & prv_same & (prv_len > length)
    bad_piece = run | first | last
    drop = bad_piece[piece]
    cold = first[piece]
    return drop, cold


def _bridge_fast_steps(idx: np.ndarray, g: np.ndarray, t, lat, lon, p: CleanParams) -> np.ndarray:
    """For each step still too fast, drop the end whose removal leaves the slower bridging step,
    when that bridge is plausible (a vehicle's first/last fix costs nothing to drop). Returns a
    bool over idx of rows to drop."""
    m = len(idx)
    drop = np.zeros(m, dtype=bool)
    if m < 2:
        return drop
    vmax = p.max_speed_kmh / 3.6
    gi = g[idx]
    same = gi[1:] == gi[:-1]
    fast = np.flatnonzero(same & ~_reach(lat, lon, t, idx[:-1], idx[1:], vmax, p.gps_error_m))
    if not len(fast):
        return drop
    a, b = fast, fast + 1

    def speed(i, j, valid):
        ii, jj = np.where(valid, i, 0), np.where(valid, j, 0)
        d = near_m(lat[idx[ii]], lon[idx[ii]], lat[idx[jj]], lon[idx[jj]])
        dt = np.abs(t[idx[jj]] - t[idx[ii]]) / NS
        need = d - p.gps_error_m  # the error allowance, as in the reachability test
        v = np.where(dt > 0, np.maximum(need, 0) / np.maximum(dt, 1e-9), np.where(need > 0, np.inf, 0.0))
        return np.where(valid, v, 0.0)  # nothing to bridge at a vehicle's end: dropping costs nothing

    pa_ok = (a - 1 >= 0) & (gi[np.maximum(a - 1, 0)] == gi[a])
    nb_ok = (b + 1 < m) & (gi[np.minimum(b + 1, m - 1)] == gi[b])
    va = speed(a - 1, b, pa_ok)  # drop a: prev(a) -> b
    vb = speed(a, b + 1, nb_ok)  # drop b: a -> next(b)
    pick_a = va <= vb
    best = np.where(pick_a, va, vb)
    ok = best <= vmax
    drop[np.where(pick_a, a, b)[ok]] = True
    return drop


def clean(tracks: Tracks, now_ns: int, params: CleanParams = CleanParams()) -> Cleaned:
    """Drop bad fixes and snap parked jitter. Pure; ``now_ns`` is the caller's clock."""
    p = params
    nv = tracks.n_vehicles
    g = tracks.group
    t = tracks.t_ns
    # sort by vehicle then time (terminals replay stored fixes late, out of order)
    if len(t) > 1 and np.any((np.diff(t) < 0) & (g[1:] == g[:-1])):
        order = np.lexsort((t, g))
        tracks = Tracks(tracks.vehicles, tracks.offsets, t[order], tracks.lat[order], tracks.lon[order],
                        tracks.speed_kmh[order], tracks.acc[order], tracks.odometer_km[order],
                        tracks.satellites[order])
        t = tracks.t_ns
    lat, lon, spd = tracks.lat, tracks.lon, tracks.speed_kmh
    dropped: dict[str, np.ndarray] = {}

    with np.errstate(invalid="ignore"):
        invalid = ~(np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90) & (np.abs(lon) <= 180))
    sat = tracks.satellites
    invalid |= (sat >= 0) & (sat < p.min_satellites)
    zero = ~invalid & (np.abs(lat) < 1e-9) & (np.abs(lon) < 1e-9)
    bad = invalid | zero
    future = ~bad & (t > now_ns + int(p.future_tolerance_s * NS))
    bad |= future
    keep = ~bad
    # duplicates: same vehicle, same timestamp as the previous kept fix
    idx = np.flatnonzero(keep)
    dup = np.zeros(len(t), dtype=bool)
    if len(idx) > 1:
        same = (t[idx[1:]] == t[idx[:-1]]) & (g[idx[1:]] == g[idx[:-1]])
        dup[idx[1:][same]] = True
    keep &= ~dup
    with np.errstate(invalid="ignore"):
        fast = keep & (spd > p.max_speed_kmh)
    keep &= ~fast
    dropped["invalid_fix"] = _count(g, invalid, nv)
    dropped["zero_coords"] = _count(g, zero, nv)
    dropped["future"] = _count(g, future, nv)
    dropped["duplicate"] = _count(g, dup, nv)
    dropped["speed_above_max"] = _count(g, fast, nv)

    # positions the vehicle could not have reached: runs outvoted by their neighbours, then the
    # remaining too-fast steps resolved one end at a time
    unreachable = np.zeros(len(t), dtype=bool)
    cold = np.zeros(len(t), dtype=bool)
    for _ in range(2):
        idx = np.flatnonzero(keep)
        out, first = _suspicious_runs(idx, g, t, lat, lon, p)
        if not out.any():
            break
        unreachable[idx[out]] = True
        cold[idx[first]] = True
        keep[idx[out]] = False
    for _ in range(p.spike_passes):
        idx = np.flatnonzero(keep)
        d = _bridge_fast_steps(idx, g, t, lat, lon, p)
        if not d.any():
            break
        unreachable[idx[d]] = True
        keep[idx[d]] = False
    dropped["outlier"] = _count(g, unreachable & ~cold, nv)
    dropped["cold_start"] = _count(g, cold, nv)

    out_tr = tracks.take(keep)
    snapped = _snap_jitter(out_tr, p)
    return Cleaned(out_tr, dropped, snapped)


def parked_mask(tr: Tracks, p: CleanParams = CleanParams()) -> tuple[np.ndarray, np.ndarray]:
    """Which fixes show a parked vehicle, and how far each may stray from the arrival (m).

    By reported speed (<= ``parked_speed_kmh``) or ACC off: up to ``parked_radius_m``. With
    neither reported: parked when the fixes just before and after, and those ``parked_window_s``
    before and after, all lie within ``jitter_m`` (a vehicle moving even at walking pace leaves
    that circle within the window, so it is never snapped).
    """
    n = len(tr)
    spd = tr.speed_kmh
    known = ~np.isnan(spd)
    with np.errstate(invalid="ignore"):
        slow = spd <= p.parked_speed_kmh
    by_report = np.where(known, slow, tr.acc == 0)
    reported = known | (tr.acc >= 0)
    lim = np.where(reported, p.parked_radius_m, p.jitter_m)
    parked = by_report.copy()
    rows = np.flatnonzero(~reported)
    if len(rows):
        g = tr.group
        key = time_key(tr.t_ns, g)
        lo, hi = window_edges(key, tr.offsets, g, p.parked_window_s, p.parked_window_s)
        first = tr.offsets[:-1][g]
        last = tr.offsets[1:][g] - 1
        prv = np.maximum(np.arange(n) - 1, first)
        nxt = np.minimum(np.arange(n) + 1, last)
        ok = np.ones(len(rows), dtype=bool)
        for j in (prv, nxt, lo, hi):
            jj = j[rows]
            ok &= near_m(tr.lat[rows], tr.lon[rows], tr.lat[jj], tr.lon[jj]) <= p.jitter_m
        # a window must actually span the time (a lone fix between gaps tells nothing)
        span = (tr.t_ns[hi[rows]] - tr.t_ns[lo[rows]]) > 0
        parked[rows] = ok & span
    return parked, lim


def _snap_jitter(tr: Tracks, p: CleanParams) -> np.ndarray:
    """Snap parked fixes onto the arrival position, in place. Returns snapped count per vehicle.

    Only fixes ``parked_mask`` says are parked move, each onto the fix before its run of parked
    fixes (the arrival), and only while it stays within its limit of that anchor; a fix that strays
    further starts a new anchor (checked a few passes, vectorised).
    """
    n = len(tr)
    nv = tr.n_vehicles
    if n < 2:
        return np.zeros(nv, dtype=np.int64)
    g = tr.group
    lat, lon = tr.lat, tr.lon
    d = np.empty(n)
    d[0] = np.inf
    d[1:] = near_m(lat[:-1], lon[:-1], lat[1:], lon[1:])
    d[np.flatnonzero(np.diff(g)) + 1] = np.inf
    state, lim = parked_mask(tr, p)
    parked = state & (d <= lim)
    orig_lat, orig_lon = lat.copy(), lon.copy()
    ar = np.arange(n)
    for _ in range(4):
        anchor = np.maximum.accumulate(np.where(parked, 0, ar))
        stray = parked & (near_m(orig_lat, orig_lon, orig_lat[anchor], orig_lon[anchor]) > lim)
        if not stray.any():
            break
        parked &= ~stray
    anchor = np.maximum.accumulate(np.where(parked, 0, ar))
    lat[:] = orig_lat[anchor]
    lon[:] = orig_lon[anchor]
    return np.bincount(g[parked], minlength=nv).astype(np.int64)


def with_arrays(tr: Tracks, **arrays) -> Tracks:
    """A copy of ``tr`` with some arrays replaced (same rows)."""
    return replace(tr, **arrays)
