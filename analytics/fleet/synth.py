"""Seeded synthetic vehicle tracks with ground truth, for tests, the benchmark and demos.

A vehicle alternates parking (GPS jitter around the parking spot, speed 0, ACC off, sometimes a
sleeping terminal that sends nothing for a while) and driving (smoothly turning heading, cruise
speeds of urban roads, traffic-light waits of 20-100 s with the engine on, GPS noise of a few
metres, a fix every ``interval_s`` with occasional dropped fixes and tunnel gaps). The true
driven distance of each drive is kept so tests can compare against it. Pure numpy, seeded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analytics.fleet.tracks import NS, Tracks

M_PER_DEG = 111_195.0


@dataclass(frozen=True)
class TrueTrip:
    start_ns: int
    end_ns: int
    distance_m: float


@dataclass(frozen=True)
class SynthParams:
    interval_s: float = 10.0
    drive_min_s: float = 300.0
    drive_max_s: float = 2400.0
    park_min_s: float = 600.0
    park_max_s: float = 7200.0
    cruise_kmh: tuple[float, float] = (25.0, 70.0)
    light_every_s: float = 240.0
    gps_sigma_m: float = 4.0
    park_sigma_m: float = 6.0
    drop_prob: float = 0.02
    sleep_prob: float = 0.3  # a parking where the terminal sleeps after a minute


def synth_vehicle(rng: np.random.Generator, vehicle: str, start_ns: int, n_fixes: int,
                  p: SynthParams = SynthParams(), home=(30.2741, 120.1551)) -> tuple[Tracks, list[TrueTrip]]:
    ts, xs, ys, vs, accs, odo = [], [], [], [], [], []
    truth: list[TrueTrip] = []
    t = float(start_ns) / NS
    x = y = 0.0  # metres east / north of home
    heading = rng.uniform(0, 2 * np.pi)
    total = 0.0
    count = 0
    parked = True
    while count < n_fixes:
        if parked:
            dur = rng.uniform(p.park_min_s, p.park_max_s)
            k = max(int(dur / p.interval_s), 2)
            tt = t + np.arange(k) * p.interval_s + rng.uniform(-0.5, 0.5, k)
            if rng.random() < p.sleep_prob and k > 8:  # terminal sleeps: keep the first and last fixes
                keep = np.zeros(k, dtype=bool)
                keep[:6] = True
                keep[-2:] = True
                tt = tt[keep]
                k = len(tt)
            # correlated jitter around the spot (AR(1))
            ex = np.empty(k)
            ey = np.empty(k)
            ex[0], ey[0] = rng.normal(0, p.park_sigma_m, 2)
            for i in range(1, k):
                ex[i] = 0.8 * ex[i - 1] + rng.normal(0, p.park_sigma_m * 0.6)
                ey[i] = 0.8 * ey[i - 1] + rng.normal(0, p.park_sigma_m * 0.6)
            ts.append(tt)
            xs.append(x + ex)
            ys.append(y + ey)
            vs.append(np.zeros(k))
            accs.append(np.zeros(k, dtype=np.int8))
            odo.append(np.full(k, total))
            t = tt[-1] + p.interval_s
            count += k
            parked = False
        else:
            dur = rng.uniform(p.drive_min_s, p.drive_max_s)
            k = max(int(dur / p.interval_s), 3)
            cruise = rng.uniform(*p.cruise_kmh) / 3.6
            # speed: cruise with slow variation; waits at lights (speed 0)
            sp = cruise * (1 + 0.25 * np.sin(np.cumsum(rng.normal(0, 0.2, k))))
            sp[:2] = [0.3 * cruise, 0.7 * cruise]
            tl = p.light_every_s / p.interval_s
            i = int(rng.uniform(0.5, 1.5) * tl)
            while i < k - 4:
                w = int(rng.uniform(20, 100) / p.interval_s)
                sp[i:i + w] = 0.0
                i += w + int(rng.uniform(0.5, 1.5) * tl)
            sp[-1] = 0.0
            turn = np.cumsum(rng.normal(0, 0.12, k))
            h = heading + turn
            heading = h[-1]
            step = sp * p.interval_s
            dx = np.sin(h) * step
            dy = np.cos(h) * step
            px = x + np.cumsum(dx)
            py = y + np.cumsum(dy)
            tt = t + np.arange(k) * p.interval_s + rng.uniform(-0.3, 0.3, k)
            odo_tr = total + np.cumsum(step)
            d_true = float(step.sum())
            truth.append(TrueTrip(int(t * NS), int(tt[-1] * NS), d_true))
            # drop a few fixes; sometimes a tunnel of 1-5 minutes
            keep = rng.random(k) > p.drop_prob
            if rng.random() < 0.1 and k > 40:
                a = int(rng.integers(10, k - 30))
                keep[a:a + int(rng.uniform(6, 30))] = False
            keep[0] = keep[-1] = True
            ts.append(tt[keep])
            xs.append(px[keep] + rng.normal(0, p.gps_sigma_m, keep.sum()))
            ys.append(py[keep] + rng.normal(0, p.gps_sigma_m, keep.sum()))
            vs.append(np.maximum(sp[keep] * 3.6 + rng.normal(0, 1.0, keep.sum()) * (sp[keep] > 0), 0))
            a_on = np.ones(keep.sum(), dtype=np.int8)
            accs.append(a_on)
            odo.append(odo_tr[keep])
            x, y = px[-1], py[-1]
            total += d_true
            t = tt[-1] + p.interval_s
            count += int(keep.sum())
            parked = True
    t_ns = (np.concatenate(ts)[:n_fixes] * NS).astype(np.int64)
    X = np.concatenate(xs)[:n_fixes]
    Y = np.concatenate(ys)[:n_fixes]
    lat = home[0] + Y / M_PER_DEG
    lon = home[1] + X / (M_PER_DEG * np.cos(np.radians(home[0])))
    od = np.floor(np.concatenate(odo)[:n_fixes] / 100.0) / 10.0  # 0.1 km resolution (JT/T 808)
    tr = Tracks.single(vehicle, t_ns, lat, lon, np.concatenate(vs)[:n_fixes], np.concatenate(accs)[:n_fixes], od)
    end = int(t_ns[-1])
    truth = [tt for tt in truth if tt.end_ns <= end]
    return tr, truth


def synth_fleet(n_vehicles: int, n_fixes: int, seed: int = 8, start_ns: int = 1_759_248_000 * NS,
                p: SynthParams = SynthParams()) -> tuple[Tracks, dict[str, list[TrueTrip]]]:
    """``n_vehicles`` tracks of ``n_fixes`` each. Default start 2025-09-30T16:00Z (Oct 1 local)."""
    rng = np.random.default_rng(seed)
    parts, truth = [], {}
    for i in range(n_vehicles):
        vid = f"veh-{i:04d}"
        home = (30.2741 + rng.uniform(-0.05, 0.05), 120.1551 + rng.uniform(-0.05, 0.05))
        tr, tt = synth_vehicle(rng, vid, start_ns + int(rng.uniform(0, 3600)) * NS, n_fixes, p, home)
        parts.append(tr)
        truth[vid] = tt
    return Tracks.concat(parts), truth
