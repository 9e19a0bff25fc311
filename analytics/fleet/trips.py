"""Trip and stop segmentation of cleaned tracks, vectorised over a whole fleet.

Two ways to find where a vehicle stopped (DOMAIN.md "trip"):

- **ACC** (ignition), used for a vehicle whose terminal reports ACC on at least
  ``acc_min_coverage`` of its fixes: a stop is a run of ACC-off fixes lasting at least
  ``min_stop_s`` (from the first ACC-off fix to the next ACC-on fix; a run at either end of the
  data is always a stop). Shorter engine-off pauses stay inside the trip.
- **Distance/time** otherwise: a stop is staying within ``stop_radius_m`` of an anchor fix for at
  least ``min_stop_s``, measured from the anchor to the last fix still inside the radius (the
  time the vehicle was *seen* staying). This is the sliding-window staypoint rule of Li et al.
  (2008), as in trackintel's ``generate_staypoints(method="sliding")``; see docs/fleet.md for
  how the two differ in detail. Stays that together lie within the radius of their place (the
  median of their fixes: a drift cloud cut up by the anchors) are joined; each is trimmed to the
  fixes within ``stop_core_m`` of its place, and is a stop only if the vehicle was seen there for
  ``min_stop_s`` (a bus crawling through the radius in a jam is driving).

Either way a gap between fixes longer than ``max_gap_s`` ends a trip (the vehicle may have moved
unseen; the gap's straight line is not put into any trip). A trip runs from the last fix of one
stop (departure) to the first fix of the next (arrival); trips shorter than ``min_trip_m`` or
``min_trip_s``, or that never get further than ``min_trip_extent_m`` from where they began (a drift
cloud at a stop that outgrew the stop radius), are dropped and counted.

Per trip: start/end time and place, distance (haversine sum over its steps), duration, max speed
(the cleaned speed: reported where the terminal sends it, else derived from positions over
``speed_window_s``; never above ``max_speed_kmh``), mean speed (distance ÷ duration),
idle time (standing still, speed <= ``idle_speed_kmh``, for at least ``min_idle_s`` in one go: a
traffic light is driving, a wait with the engine running is idle) and driving time (the rest).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

from analytics.fleet.geo import haversine_m, near_m
from analytics.fleet.tracks import NS, Tracks, time_key, window_edges


class Method(str, Enum):
    auto = "auto"  # ACC where the terminal reports it, distance/time elsewhere
    acc = "acc"
    distance = "distance"


@dataclass(frozen=True)
class TripParams:
    stop_radius_m: float = 200.0
    min_stop_s: float = 180.0
    max_gap_s: float = 3600.0
    min_trip_m: float = 300.0
    min_trip_s: float = 60.0
    min_trip_extent_m: float = 300.0  # a "trip" that never gets further than this from where it began is drift at a stop
    idle_speed_kmh: float = 3.0
    min_idle_s: float = 120.0
    stop_core_m: float = 50.0  # a distance stop's ends are trimmed to fixes this close to its place
    method: Method = Method.auto
    acc_min_coverage: float = 0.9
    max_speed_kmh: float = 200.0  # no speed above this is reported (the cleaning's limit)
    speed_window_s: float = 30.0  # a speed derived from positions is taken over this window, not one step


@dataclass(frozen=True)
class Trip:
    """One trip as plain values (SI-ish units in the names)."""

    vehicle: str
    start_ns: int
    end_ns: int
    start_lat: float
    start_lon: float
    end_lat: float
    end_lon: float
    distance_m: float
    duration_s: float
    max_speed_kmh: float
    mean_speed_kmh: float
    driving_s: float
    idle_s: float
    by_acc: bool
    first: int  # row of the departure fix in the cleaned tracks
    last: int  # row of the arrival fix


_TRIP_ARRAYS = ("vehicle_idx", "first", "last", "start_ns", "end_ns", "start_lat", "start_lon", "end_lat",
                "end_lon", "distance_m", "duration_s", "max_speed_kmh", "mean_speed_kmh", "driving_s",
                "idle_s", "by_acc")


@dataclass(frozen=True, eq=False)
class Trips:
    """Trips of a fleet as parallel arrays, ordered by vehicle then time."""

    vehicles: tuple[str, ...]
    vehicle_idx: np.ndarray
    first: np.ndarray
    last: np.ndarray
    start_ns: np.ndarray
    end_ns: np.ndarray
    start_lat: np.ndarray
    start_lon: np.ndarray
    end_lat: np.ndarray
    end_lon: np.ndarray
    distance_m: np.ndarray
    duration_s: np.ndarray
    max_speed_kmh: np.ndarray
    mean_speed_kmh: np.ndarray
    driving_s: np.ndarray
    idle_s: np.ndarray
    by_acc: np.ndarray
    dropped_short: np.ndarray  # int64[n_vehicles]: trips under min_trip_m / min_trip_s

    def __len__(self) -> int:
        return len(self.first)

    def rows(self) -> list[Trip]:
        cols = [getattr(self, n).tolist() for n in _TRIP_ARRAYS]
        return [Trip(self.vehicles[r[0]], *r[3:15], bool(r[15]), r[1], r[2]) for r in zip(*cols)]

    def of(self, vehicle: str) -> list[Trip]:
        return [t for t in self.rows() if t.vehicle == vehicle]


@dataclass(frozen=True, eq=False)
class Segmented:
    """Trips and stops, and per-row arrays for mileage: row ``i`` describes the step from fix
    ``i - 1`` to fix ``i`` (row 0 of each vehicle has no step)."""

    trips: Trips
    stop_first: np.ndarray  # fix rows of each stop (real stops, not gaps)
    stop_last: np.ndarray
    stop_vehicle: np.ndarray
    by_acc: np.ndarray  # bool[n_vehicles]: which vehicles were segmented on ACC
    step_m: np.ndarray = None  # haversine length of each step (m)
    trip_step: np.ndarray = None  # bool: the step lies in a kept trip (driven mileage)
    gap_step: np.ndarray = None  # bool: the step crosses a gap longer than max_gap_s (unobserved)
    speed_kmh: np.ndarray = None  # cleaned speed per fix: reported, else derived over speed_window_s


def derived_speed_kmh(tr: Tracks, step_m: np.ndarray, breaks: np.ndarray, window_s: float) -> np.ndarray:
    """Speed at each fix from positions over a window of ``window_s`` (at least one step each side
    where there is one), never across a break (``breaks[i]``: no step into row i). A timestamp off
    by a second at 1 Hz moves one step's speed by 100 %, the window's by a few percent."""
    n = len(tr)
    if n == 0:
        return np.zeros(0)
    g = tr.group
    seg = np.cumsum(breaks)
    seg_first = np.flatnonzero(np.concatenate([[True], seg[1:] != seg[:-1]]))
    seg_last = np.concatenate([seg_first[1:] - 1, [n - 1]])
    sid = seg - seg[0]
    key = time_key(tr.t_ns, g)
    lo, hi = window_edges(key, tr.offsets, g, window_s / 2, window_s / 2)
    ar = np.arange(n)
    lo = np.minimum(lo, np.maximum(ar - 1, 0))
    hi = np.maximum(hi, np.minimum(ar + 1, n - 1))
    lo = np.maximum(lo, seg_first[sid])
    hi = np.minimum(hi, seg_last[sid])
    cs = np.cumsum(np.where(breaks, 0.0, step_m))
    dt = (tr.t_ns[hi] - tr.t_ns[lo]) / NS
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.where(dt > 0, (cs[hi] - cs[lo]) / dt * 3.6, 0.0)
    return v


# --- stops ---------------------------------------------------------------------------------------


def _distance_stops(t, lat, lon, g, p: TripParams) -> tuple[np.ndarray, np.ndarray]:
    """Sliding-window stops. Returns (first, last) fix rows of each stop."""
    n = len(t)
    if n == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    # collapse runs of identical positions (parked, jitter snapped): one anchor per place
    new = np.ones(n, dtype=bool)
    new[1:] = (lat[1:] != lat[:-1]) | (lon[1:] != lon[:-1]) | (g[1:] != g[:-1])
    rf = np.flatnonzero(new)
    rl = np.empty_like(rf)
    rl[:-1] = rf[1:] - 1
    rl[-1] = n - 1
    rlat, rlon, rg, tf, tl = lat[rf], lon[rf], g[rf], t[rf], t[rl]
    m = len(rf)
    T = int(round(p.min_stop_s * NS))
    R = p.stop_radius_m
    cand = (tl - tf) >= T
    active = np.flatnonzero(~cand)
    k = 1
    # every anchor advances until it leaves the radius (no stop there) or has stayed T (a stop
    # candidate); the number of rounds is bounded by the distinct places seen within T.
    while active.size:
        j = active + k
        ok = j < m
        jj = np.where(ok, j, 0)
        ok &= rg[jj] == rg[active]
        d = near_m(rlat[active], rlon[active], rlat[jj], rlon[jj])
        inside = ok & (d <= R)
        conf = inside & ((tl[jj] - tf[active]) >= T)
        cand[active[conf]] = True
        active = active[inside & ~conf]
        k += 1
    ci = np.flatnonzero(cand)
    if ci.size == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    gb = np.concatenate([np.flatnonzero(np.diff(rg)) + 1, [m]])  # run index where each group ends
    firsts, lasts = [], []
    pos = 0
    while pos < ci.size:
        a = int(ci[pos])
        end = int(gb[np.searchsorted(gb, a, side="right")])
        e = end
        lo, step = a + 1, 32
        while lo < end:
            hi = min(end, lo + step)
            out = np.flatnonzero(near_m(rlat[a], rlon[a], rlat[lo:hi], rlon[lo:hi]) > R)
            if out.size:
                e = lo + int(out[0])
                break
            lo, step = hi, step * 4
        firsts.append(rf[a])
        lasts.append(rl[e - 1])
        pos = int(np.searchsorted(ci, e))
    return np.asarray(firsts, np.int64), np.asarray(lasts, np.int64)


def _trim_stops(S, E, t, lat, lon, p: TripParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Trim each stay to the vehicle's dwell at its place; returns (first, last, is_stop).

    The place is the median of the stay's fixes (a drift cloud's centre; one wild fix does not
    move it). The radius rule lets a stay begin at the first fix inside ``stop_radius_m``, up to
    200 m before the vehicle halts, and end as late after it starts off: the stay's first and
    last fix move to the first and last fix within ``stop_core_m`` of the place, so the approach
    and departure metres belong to the trips, unless the part cut off lasted ``min_stop_s`` or
    more (a dwell elsewhere inside the radius, not an approach). A stay is a stop when the
    vehicle was then at its place for ``min_stop_s``: from the fix before its first core fix to
    the fix after its last, within the stay (it had not left before it was seen again inside the
    radius). Slow driving through the radius, a bus crawling in a jam, passes the core faster
    than that (100 m in 3 min is 2 km/h) and is no stop.
    """
    if len(S) == 0:
        return S, E, np.zeros(0, dtype=bool)
    rows, k = _ranges(S, E + 1)
    clat, clon = _group_medians(lat[rows], lon[rows], k, len(S))
    d = near_m(clat[k], clon[k], lat[rows], lon[rows])
    at = np.concatenate([[0], np.cumsum(E + 1 - S)[:-1]])  # where each stay's rows begin
    nearest = np.minimum.reduceat(d, at)
    core = d <= np.maximum(p.stop_core_m, nearest[k])  # never empty: a ring of drift keeps its nearest fix
    first = np.minimum.reduceat(np.where(core, rows, np.iinfo(np.int64).max), at)
    last = np.maximum.reduceat(np.where(core, rows, -1), at)
    T = int(round(p.min_stop_s * NS))
    first = np.where(t[np.maximum(first - 1, S)] - t[S] < T, first, S)
    last = np.where(t[E] - t[np.minimum(last + 1, E)] < T, last, E)
    dwell = t[np.minimum(last + 1, E)] - t[np.maximum(first - 1, S)]
    return first, last, dwell >= T


def _merge_stays(S, E, lat, lon, g, radius_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Join consecutive stays whose fixes, and those between them, all lie within ``radius_m`` of
    their joint place (the median): the sliding window measures from an anchor, so a drift cloud
    up to ``radius_m`` around one spot comes out as several stays (an anchor at the cloud's edge
    sees the far side 2 x radius away); around its centre it is one."""
    if len(S) < 2:
        return S, E
    # necessary: any two fixes of a joint stay are within 2 x radius (a loop per candidate only)
    cand = (g[S[1:]] == g[E[:-1]]) & (near_m(lat[E[:-1]], lon[E[:-1]], lat[S[1:]], lon[S[1:]]) <= 2 * radius_m)
    if not cand.any():
        return S, E
    out_s, out_e = [int(S[0])], [int(E[0])]
    for i in range(1, len(S)):
        if cand[i - 1]:
            a, b = out_s[-1], int(E[i]) + 1
            c_lat, c_lon = np.median(lat[a:b]), np.median(lon[a:b])
            if near_m(c_lat, c_lon, lat[a:b], lon[a:b]).max() <= radius_m:
                out_e[-1] = b - 1
                continue
        out_s.append(int(S[i]))
        out_e.append(int(E[i]))
    return np.asarray(out_s, np.int64), np.asarray(out_e, np.int64)


def _group_medians(lat: np.ndarray, lon: np.ndarray, k: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Median latitude and longitude per group ``k`` (0..n-1, sorted, every group non-empty).

    Exact, on runs of repeated positions weighted by their length (a parked vehicle's snapped
    fixes are one run), with one argsort on value + group offset (groups never interleave)."""
    m = len(k)
    new = np.ones(m, dtype=bool)
    new[1:] = (lat[1:] != lat[:-1]) | (lon[1:] != lon[:-1]) | (k[1:] != k[:-1])
    rf = np.flatnonzero(new)
    w = np.diff(np.concatenate([rf, [m]]))
    kr = k[rf]
    total = np.bincount(kr, weights=w, minlength=n).astype(np.int64)
    base = np.concatenate([[0], np.cumsum(total)[:-1]])
    out = []
    for vals in (lat[rf], lon[rf]):
        lo_v = vals.min()
        order = np.argsort((vals - lo_v) + kr * (float(vals.max() - lo_v) + 1.0))
        cw = np.cumsum(w[order])
        sv = vals[order]
        lower = sv[np.searchsorted(cw, base + (total - 1) // 2 + 1)]
        upper = sv[np.searchsorted(cw, base + total // 2 + 1)]
        out.append(0.5 * (lower + upper))
    return out[0], out[1]


def _acc_stops(t, acc, g, p: TripParams) -> tuple[np.ndarray, np.ndarray]:
    n = len(t)
    if n == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    # a fix without ACC takes the state of the previous fix of the same vehicle (off at the start)
    known = acc >= 0
    gstart = np.ones(n, dtype=bool)
    gstart[1:] = g[1:] != g[:-1]
    src = np.maximum.accumulate(np.where(known | gstart, np.arange(n), 0))
    on = (acc[src] == 1)
    off = ~on
    prev_off = np.concatenate([[False], off[:-1]]) & ~gstart
    gend = np.ones(n, dtype=bool)
    gend[:-1] = g[1:] != g[:-1]
    next_off = np.concatenate([off[1:], [False]]) & ~gend
    S = np.flatnonzero(off & ~prev_off)
    E = np.flatnonzero(off & ~next_off)
    at_start = gstart[S]
    at_end = gend[E]
    nxt = np.minimum(E + 1, n - 1)
    dur = t[nxt] - t[S]
    keep = at_start | at_end | (dur >= int(round(p.min_stop_s * NS)))
    return S[keep], E[keep]


# --- trips ---------------------------------------------------------------------------------------


def _ranges(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated integer ranges [a_k, b_k) and the k each element came from."""
    lens = b - a
    k = np.repeat(np.arange(len(a)), lens)
    starts = np.repeat(a - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens)
    return starts + np.arange(lens.sum()), k


def segment(tr: Tracks, params: TripParams = TripParams()) -> Segmented:
    """Find stops and trips in cleaned tracks (``analytics.fleet.tracks.clean`` first). Pure."""
    p = params
    n = len(tr)
    nv = tr.n_vehicles
    g = tr.group
    t = tr.t_ns
    counts = np.diff(tr.offsets)
    known = np.bincount(g[tr.acc >= 0], minlength=nv) if n else np.zeros(nv, np.int64)
    coverage = np.where(counts > 0, known / np.maximum(counts, 1), 0.0)
    if p.method is Method.distance:
        use_acc = np.zeros(nv, dtype=bool)
    elif p.method is Method.acc:
        use_acc = known > 0
    else:
        use_acc = (known > 0) & (coverage >= p.acc_min_coverage)
    acc_rows = use_acc[g] if n else np.zeros(0, dtype=bool)

    parts_s, parts_e = [], []
    for mask, fn in ((acc_rows, "acc"), (~acc_rows, "dist")):
        if not mask.any():
            continue
        sub = np.flatnonzero(mask)
        if fn == "acc":
            s, e = _acc_stops(t[sub], tr.acc[sub], g[sub], p)
        else:
            s, e = _distance_stops(t[sub], tr.lat[sub], tr.lon[sub], g[sub], p)
            s, e = _merge_stays(s, e, tr.lat[sub], tr.lon[sub], g[sub], p.stop_radius_m)
            s, e, dwell = _trim_stops(s, e, t[sub], tr.lat[sub], tr.lon[sub], p)
            s, e = s[dwell], e[dwell]
        parts_s.append(sub[s])
        parts_e.append(sub[e])
    S = np.sort(np.concatenate(parts_s)) if parts_s else np.empty(0, np.int64)
    E = np.sort(np.concatenate(parts_e)) if parts_e else np.empty(0, np.int64)
    stop_first, stop_last = S, E

    # gaps end trips: add each gap (j-1, j) as a zero-time stop unless a real stop spans it
    stop_id = np.full(n, -1, dtype=np.int64)
    if len(S):
        rows, k = _ranges(S, E + 1)
        stop_id[rows] = k
    gaps = np.empty(0, np.int64)
    if n > 1:
        big = (np.diff(t) > int(round(p.max_gap_s * NS))) & (g[1:] == g[:-1])
        j = np.flatnonzero(big) + 1
        spanned = (stop_id[j] >= 0) & (stop_id[j] == stop_id[j - 1])
        gaps = j[~spanned]
    allS = np.sort(np.concatenate([S, gaps - 1]))
    allE = np.sort(np.concatenate([E, gaps]))
    nonempty = counts > 0
    gfirst = tr.offsets[:-1][nonempty]
    glast = tr.offsets[1:][nonempty] - 1
    a = np.sort(np.concatenate([gfirst, allE]))
    b = np.sort(np.concatenate([allS, glast]))
    real = b > a
    a, b = a[real], b[real]

    # per-step values (step i goes from fix i-1 to fix i)
    step_d = np.zeros(n)
    step_dt = np.zeros(n)
    first_of_group = tr.offsets[:-1][nonempty]
    if n > 1:
        step_d[1:] = haversine_m(tr.lat[:-1], tr.lon[:-1], tr.lat[1:], tr.lon[1:])
        step_dt[1:] = np.diff(t) / NS
        step_d[first_of_group] = 0.0
        step_dt[first_of_group] = 0.0
    gap_step = np.zeros(n, dtype=bool)
    gap_step[gaps] = True
    cs_d = np.cumsum(step_d)
    dist = cs_d[b] - cs_d[a]
    dur = (t[b] - t[a]) / NS
    ok = (dist >= p.min_trip_m) & (dur >= p.min_trip_s)
    if len(a) and p.min_trip_extent_m > 0:
        rows, kk = _ranges(a, b + 1)
        far = near_m(tr.lat[a][kk], tr.lon[a][kk], tr.lat[rows], tr.lon[rows])
        lens = b + 1 - a
        extent = np.maximum.reduceat(far, np.concatenate([[0], np.cumsum(lens)[:-1]])) if len(rows) else far
        ok &= extent > p.min_trip_extent_m
    trip_g = g[a] if len(a) else np.empty(0, np.int64)
    dropped = np.bincount(trip_g[~ok], minlength=nv).astype(np.int64)
    a, b, dist, dur, trip_g = a[ok], b[ok], dist[ok], dur[ok], trip_g[ok]
    nt = len(a)

    with np.errstate(divide="ignore", invalid="ignore"):
        step_v = np.where(step_dt > 0, step_d / step_dt * 3.6, 0.0)
    rep = tr.speed_kmh
    prev_rep = np.concatenate([[np.nan], rep[:-1]]) if n else rep
    breaks = gap_step.copy()
    breaks[first_of_group] = True
    derived = derived_speed_kmh(tr, step_d, breaks, p.speed_window_s)
    fix_speed = np.minimum(np.where(np.isnan(rep), derived, rep), p.max_speed_kmh)
    with np.errstate(invalid="ignore"):
        still = (step_v <= p.idle_speed_kmh) & ~(rep > p.idle_speed_kmh) & ~(prev_rep > p.idle_speed_kmh)

    max_speed = np.zeros(nt)
    idle = np.zeros(nt)
    trip_step = np.zeros(n, dtype=bool)
    if nt:
        # max over fixes a..b: reduceat on interleaved [a, b+1) bounds, keep even results
        bounds = np.column_stack([a, b + 1]).ravel()
        vals = np.concatenate([fix_speed, [np.nan]])
        max_speed = np.fmax.reduceat(vals, bounds)[::2]
        max_speed = np.where(np.isnan(max_speed), 0.0, max_speed)
        steps, k = _ranges(a + 1, b + 1)
        trip_step[steps] = True
        st = still[steps]
        # runs of standing still inside one trip; a run lasting min_idle_s or more is idle
        key = k * 2 + st
        brk = np.ones(len(key), dtype=bool)
        brk[1:] = key[1:] != key[:-1]
        run = np.cumsum(brk) - 1
        run_dt = np.bincount(run, weights=step_dt[steps])
        is_idle = st & (run_dt[run] >= p.min_idle_s)
        idle = np.bincount(k[is_idle], weights=step_dt[steps][is_idle], minlength=nt)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_speed = np.where(dur > 0, dist / dur * 3.6, 0.0)

    trips = Trips(tr.vehicles, trip_g, a, b, t[a], t[b], tr.lat[a], tr.lon[a], tr.lat[b], tr.lon[b], dist,
                  dur, max_speed, mean_speed, dur - idle, idle, use_acc[trip_g], dropped)
    return Segmented(trips, stop_first, stop_last, g[stop_first] if len(stop_first) else stop_first, use_acc,
                     step_d, trip_step, gap_step, fix_speed)
