"""fleet.segment_1m_fixes_s: clean + segment 1 M fixes (200 vehicles x 5,000) vs trackintel.

Data: seeded synthetic urban tracks (analytics.fleet.synth: parking jitter, sleeping terminals,
traffic-light waits, dropped fixes, tunnel gaps), one fix every 10 s.

Ours: ``analytics.fleet.tracks.clean`` then ``analytics.fleet.trips.segment`` (distance/time method, the one
trackintel also implements), over all 200 vehicles at once; best of 5 runs (median reported too).

Baseline: trackintel 1.4 ``generate_staypoints(method="sliding")`` + ``generate_triplegs`` on the
same cleaned fixes with the same thresholds (200 m, 3 min, 60 min gap), on all 1 M fixes, one
run (about 20-40 s: trackintel walks every fix in a Python loop). The quick mode runs it on a
subset and scales linearly; ``baseline_what`` says which. The baseline does no cleaning, so it
does less work than ours.

    python -m bench.fleet            # full size
    python -m bench.fleet --quick    # 10 vehicles x 1,000 fixes
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import warnings


def _trackintel(tr) -> int:
    import geopandas as gpd
    import pandas as pd
    import trackintel as ti

    df = pd.DataFrame({"user_id": tr.group, "tracked_at": pd.to_datetime(tr.t_ns, utc=True),
                       "lon": tr.lon, "lat": tr.lat})
    pfs = ti.Positionfixes(gpd.GeoDataFrame(df, geometry=gpd.points_from_xy(df.lon, df.lat), crs="EPSG:4326"))
    pfs, sp = pfs.generate_staypoints(method="sliding", dist_threshold=200, time_threshold=3.0,
                                      gap_threshold=60.0, include_last=True, exclude_duplicate_pfs=False)
    pfs, tpls = pfs.generate_triplegs(sp, method="overlap_staypoints", gap_threshold=60.0)
    return len(tpls)


def run(quick: bool = False) -> dict:
    from analytics.fleet.synth import synth_fleet
    from analytics.fleet.tracks import clean
    from analytics.fleet.trips import Method, TripParams, segment

    n_veh, n_fix, n_base = (10, 1000, 2) if quick else (200, 5000, 200)
    tracks, _ = synth_fleet(n_veh, n_fix, seed=8)
    now = int(tracks.t_ns.max()) + 1
    params = TripParams(method=Method.distance)
    times = []
    n_trips = 0
    for _ in range(1 if quick else 5):
        t0 = time.perf_counter()
        c = clean(tracks, now)
        seg = segment(c.tracks, params)
        times.append(time.perf_counter() - t0)
        n_trips = len(seg.trips)
    ours = min(times)  # best of N on both sides: the machine is shared, the minimum is the least disturbed

    sub = c.tracks.take(c.tracks.group < n_base)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import trackintel  # noqa: F401  (import and first-call costs stay out of the timing)
        _trackintel(c.tracks.take(c.tracks.group < 1))
        base_runs = []
        for _ in range(1):
            t0 = time.perf_counter()
            n_ti = _trackintel(sub)
            base_runs.append(time.perf_counter() - t0)
        base_sub = min(base_runs)
    scale = len(c.tracks) / max(len(sub), 1)
    baseline = base_sub * scale
    ratio = baseline / ours if ours > 0 else None
    label = f"{n_veh} vehicles x {n_fix:,} fixes"
    return {
        "fleet.segment_1m_fixes_s": {
            "value": round(ours, 3), "unit": "s",
            "baseline": round(baseline, 2),
            "baseline_what": (f"trackintel 1.4 sliding staypoints + triplegs (200 m, 3 min, 60 min gap) on the same "
                              f"cleaned fixes: {base_sub:.2f} s on {n_base} vehicles ({len(sub):,} fixes)"
                              + (f", scaled x{scale:.1f} to {len(c.tracks):,}" if scale > 1.0001 else "")
                              + "; no cleaning on that side"),
            "ratio": round(ratio, 1) if ratio else None,
            "goal": "<= 3 s, ratio >= 10",
            "met": bool(ours <= 3.0 and ratio is not None and ratio >= 10),
            "size": label, "fixes": len(tracks), "trips": n_trips,
            "trips_per_vehicle_ours": round(float((seg.trips.vehicle_idx < n_base).sum()) / n_base, 2),
            "trips_per_vehicle_trackintel": round(n_ti / n_base, 2),
            "runs_s": [round(t, 3) for t in times],
            "median_s": round(statistics.median(times), 3),
            "baseline_runs_s": [round(t, 2) for t in base_runs],
        }
    }


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2, ensure_ascii=False))
