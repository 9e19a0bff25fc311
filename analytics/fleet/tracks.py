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
- ``outlier``: a position the vehicle could not have reached: one fix or a run of up to
  ``outlier_window`` fixes that the fixes around it cannot reach (or be reached from) at
  ``max_speed_kmh`` plus ``gps_error_m``, decided by a vote of the ``outlier_window`` fixes on
  each side; then any step still too fast is resolved by dropping the end whose removal leaves a
  plausible step;
- ``cold_start``: the same, for a vehicle's first fix or the first fix after a signal gap of at
  least ``cold_start_gap_s``: such a fix is judged against the fixes *after* it;
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
            raise TrackError(f"vehicle {vehicle!r}: t_ns looks like {unit} (max {hi}): "
                             "expected int64 nanoseconds since the epoch")
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
    gps_error_m: float = 50.0  # position error allowed on top of max speed when judging reachability
    outlier_window: int = 4  # fixes each side that vote on whether a fix is reachable
    cold_start_gap_s: float = 60.0  # after a gap this long, a fix is judged against the fixes after it
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


def _vote_outliers(idx: np.ndarray, g: np.ndarray, t, lat, lon, p: CleanParams) -> np.ndarray:
    """Among kept rows ``idx``: positions of the rows outvoted by their neighbours (bool over idx).

    Only rows within ``outlier_window`` of a too-fast step are examined (cheap on clean data). A
    row is an outlier when more of the ``outlier_window`` kept rows on each side (same vehicle)
    cannot reach it at ``max_speed_kmh`` (+ ``gps_error_m``) than can: a run of up to
    ``outlier_window`` bad fixes agrees only with itself and is outvoted.
    """
    m = len(idx)
    out = np.zeros(m, dtype=bool)
    if m < 3:
        return out
    vmax = p.max_speed_kmh / 3.6
    gi = g[idx]
    same = gi[1:] == gi[:-1]
    fast = same & ~_reach(lat, lon, t, idx[:-1], idx[1:], vmax, p.gps_error_m)
    if not fast.any():
        return out
    W = max(int(p.outlier_window), 1)
    near = np.zeros(m, dtype=bool)
    for s in np.flatnonzero(fast):  # steps s -> s+1 in idx space; a few per vehicle on real data
        near[max(0, s - W + 1):s + W + 1] = True
    c = np.flatnonzero(near)
    cons = np.zeros(len(c), dtype=np.int64)
    inc = np.zeros(len(c), dtype=np.int64)
    for off in range(1, W + 1):
        for sgn in (-1, 1):
            o = c + sgn * off
            ok = (o >= 0) & (o < m)
            oo = np.where(ok, o, 0)
            ok &= gi[oo] == gi[c]
            r = _reach(lat, lon, t, idx[c], idx[oo], vmax, p.gps_error_m)
            cons += ok & r
            inc += ok & ~r
    out[c] = inc > cons
    return out


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
    idx = np.flatnonzero(keep)
    out = _vote_outliers(idx, g, t, lat, lon, p)
    unreachable[idx[out]] = True
    keep &= ~unreachable
    for _ in range(p.spike_passes):
        idx = np.flatnonzero(keep)
        d = _bridge_fast_steps(idx, g, t, lat, lon, p)
        if not d.any():
            break
        unreachable[idx[d]] = True
        keep[idx[d]] = False
    # a dropped fix that was a vehicle's first, or the first after a gap, is a cold start
    cold = np.zeros(len(t), dtype=bool)
    if unreachable.any():
        cand = np.flatnonzero(unreachable)
        prev_ok = np.flatnonzero(~bad & ~dup & ~fast)  # rows that reached the position checks
        pos = np.searchsorted(prev_ok, cand) - 1
        has_prev = (pos >= 0)
        pr = prev_ok[np.maximum(pos, 0)]
        has_prev &= g[pr] == g[cand]
        gap = (t[cand] - t[pr]) >= int(p.cold_start_gap_s * NS)
        # the first of a run after a gap, and the rest of that run
        cold[cand[~has_prev | gap]] = True
        for _ in range(max(int(p.outlier_window), 1)):
            nxt = cand[1:][cold[cand[:-1]] & (g[cand[1:]] == g[cand[:-1]])
                           & (np.searchsorted(prev_ok, cand[1:]) - np.searchsorted(prev_ok, cand[:-1]) == 1)]
            if not (~cold[nxt]).any():
                break
            cold[nxt] = True
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
