"""Vehicle tracks as numpy arrays, and their cleaning.

A ``Tracks`` holds the fixes of one or many vehicles in concatenated arrays (one slice per
vehicle, ``offsets`` as in a CSR matrix) so every step below runs vectorised over the whole
fleet at once. Times are int64 ns UTC; coordinates WGS-84 degrees; a value a terminal did not
report is NaN (floats) or -1 (``acc``, ``satellites``).

Cleaning (``clean``) follows the filter list of DOMAIN.md "mileage" and reports what it removed
per reason, never silently:

- ``invalid_fix``: non-finite or out-of-range coordinates, or a reported satellite count below
  ``min_satellites`` (0 satellites = the terminal says it has no fix);
- ``zero_coords``: (0, 0), the usual "no fix yet" placeholder;
- ``future``: timestamps later than ``now_ns`` + ``future_tolerance_s``;
- ``duplicate``: a second fix of the same vehicle with the same timestamp (the first is kept);
- ``speed_above_max``: a reported speed above ``max_speed_kmh``, or a position spike: a fix that
  the vehicle would have to reach and leave faster than ``max_speed_kmh`` (both steps);
- ``jitter``: not removed but *snapped*: while parked (reported speed ~0 or ACC off, within
  ``parked_radius_m``; with neither reported, within ``jitter_m``), fixes are moved onto the
  arrival position, so a parked car collects no phantom mileage and a stop is one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping, Sequence

import numpy as np

from analytics.fleet.geo import near_m

NS = 1_000_000_000
REASONS = ("invalid_fix", "zero_coords", "future", "duplicate", "speed_above_max")


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
        t = np.asarray(t_ns, dtype=np.int64)
        n = len(t)
        sat = np.full(n, -1, dtype=np.int16) if satellites is None else np.asarray(satellites, dtype=np.int16)
        return cls((vehicle,), np.array([0, n], dtype=np.int64), t, _f(lat, n), _f(lon, n),
                   _f(speed_kmh, n), _i8(acc, n), _f(odometer_km, n), sat)

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
    """Cleaning thresholds (DOMAIN.md defaults)."""

    max_speed_kmh: float = 200.0
    future_tolerance_s: float = 300.0
    min_satellites: int = 3
    jitter_m: float = 30.0
    parked_speed_kmh: float = 3.0  # a reported speed at or below this may be parked jitter
    parked_radius_m: float = 100.0  # how far a fix reported standing (speed ~0 or ACC off) may wander
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


def clean(tracks: Tracks, now_ns: int, params: CleanParams = CleanParams()) -> Cleaned:
    """Drop bad fixes and snap parked jitter. Pure; ``now_ns`` is the caller's clock."""
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
    invalid |= (sat >= 0) & (sat < params.min_satellites)
    zero = ~invalid & (np.abs(lat) < 1e-9) & (np.abs(lon) < 1e-9)
    bad = invalid | zero
    future = ~bad & (t > now_ns + int(params.future_tolerance_s * NS))
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
        fast = keep & (spd > params.max_speed_kmh)
    keep &= ~fast
    dropped["invalid_fix"] = _count(g, invalid, nv)
    dropped["zero_coords"] = _count(g, zero, nv)
    dropped["future"] = _count(g, future, nv)
    dropped["duplicate"] = _count(g, dup, nv)

    # position spikes: implied speed from the previous kept fix and to the next kept fix both
    # above the maximum; at a vehicle's first or last fix the one step it has decides.
    vmax = params.max_speed_kmh / 3.6
    for _ in range(params.spike_passes):
        idx = np.flatnonzero(keep)
        if len(idx) < 2:
            break
        gi = g[idx]
        d = near_m(lat[idx[:-1]], lon[idx[:-1]], lat[idx[1:]], lon[idx[1:]])
        dt = (t[idx[1:]] - t[idx[:-1]]) / NS
        step_fast = (d > vmax * np.maximum(dt, 1e-9)) & (gi[1:] == gi[:-1])
        same_prev = np.concatenate([[False], gi[1:] == gi[:-1]])
        same_next = np.concatenate([gi[1:] == gi[:-1], [False]])
        in_fast = np.concatenate([[False], step_fast])
        out_fast = np.concatenate([step_fast, [False]])
        spike = in_fast & out_fast
        if not spike.any():  # only when no interior spike explains a fast step, blame an end fix
            spike = (in_fast & ~same_next) | (out_fast & ~same_prev)
        if not spike.any():
            break
        fast[idx[spike]] = True
        keep[idx[spike]] = False
    dropped["speed_above_max"] = _count(g, fast, nv)

    out = tracks.take(keep)
    snapped = _snap_jitter(out, params)
    return Cleaned(out, dropped, snapped)


def _snap_jitter(tr: Tracks, p: CleanParams) -> np.ndarray:
    """Snap parked fixes onto the arrival position, in place. Returns snapped count per vehicle.

    How far a fix may stray and still count as parked depends on what the terminal says: with a
    reported speed <= ``parked_speed_kmh`` or ACC off, up to ``parked_radius_m`` (Doppler speed
    and ignition are reliable, positions wander); with neither reported, up to ``jitter_m``. Each
    run of parked fixes is anchored on the fix before the run (the arrival); a fix that strays
    past its limit from the anchor starts a new anchor (checked a few passes, vectorised).
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
    spd = tr.speed_kmh
    known = ~np.isnan(spd)
    with np.errstate(invalid="ignore"):
        slow = spd <= p.parked_speed_kmh
    lim = np.where(known, np.where(slow, p.parked_radius_m, -1.0),
                   np.where(tr.acc == 0, p.parked_radius_m, p.jitter_m))
    parked = d <= lim
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
