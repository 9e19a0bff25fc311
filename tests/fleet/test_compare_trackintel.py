"""Our segmentation against trackintel (sliding staypoints + triplegs) on realistic tracks.

The tracks come from a seeded generator (analytics.fleet.synth) that mimics urban official-car
use: parking with correlated GPS jitter and sleeping terminals, drives with traffic-light waits,
dropped fixes and tunnel gaps, GPS noise. Both sides get the same cleaned fixes and the same
parameters (200 m, 3 min, 60 min gap). docs/fleet.md explains the remaining differences.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analytics.fleet.synth import synth_fleet
from analytics.fleet.tracks import clean
from analytics.fleet.trips import Method, TripParams, segment

gpd = pytest.importorskip("geopandas")
ti = pytest.importorskip("trackintel")


def trackintel_trips(tr):
    from trackintel.geogr import calculate_haversine_length
    df = pd.DataFrame({"user_id": tr.group, "tracked_at": pd.to_datetime(tr.t_ns, utc=True),
                       "lon": tr.lon, "lat": tr.lat})
    pfs = ti.Positionfixes(gpd.GeoDataFrame(df, geometry=gpd.points_from_xy(df.lon, df.lat), crs="EPSG:4326"))
    pfs, sp = pfs.generate_staypoints(method="sliding", dist_threshold=200, time_threshold=3.0,
                                      gap_threshold=60.0, include_last=True, exclude_duplicate_pfs=False)
    pfs, tpls = pfs.generate_triplegs(sp, method="overlap_staypoints", gap_threshold=60.0)
    tpls = tpls.copy()
    tpls["length_m"] = calculate_haversine_length(tpls)
    return tpls


@pytest.fixture(scope="module")
def both():
    tracks, truth = synth_fleet(8, 3000, seed=21)
    c = clean(tracks, now_ns=int(tracks.t_ns.max()) + 1)
    ours = segment(c.tracks, TripParams(method=Method.distance, min_trip_m=0, min_trip_s=0)).trips
    return c.tracks, ours, trackintel_trips(c.tracks), truth


def _theirs_per_ours(tr, ours, theirs):
    """For each of our trips: trackintel triplegs lying within it (by time), and their length."""
    out = []
    for k in range(tr.n_vehicles):
        th = theirs[theirs.user_id == k]
        ts = th.started_at.astype("int64").to_numpy()
        te = th.finished_at.astype("int64").to_numpy()
        ln = th.length_m.to_numpy()
        for i in np.flatnonzero(ours.vehicle_idx == k):
            inside = (np.minimum(te, ours.end_ns[i]) - np.maximum(ts, ours.start_ns[i])) > 0.5 * (te - ts)
            out.append((i, int(inside.sum()), float(ln[inside].sum())))
    return out


def test_trip_counts_agree_and_every_extra_split_is_a_wait_before_a_dropout(both):
    tr, ours, theirs, truth = both
    assert abs(len(ours) - len(theirs)) <= 0.1 * len(theirs)
    pairs = _theirs_per_ours(tr, ours, theirs)
    assert sum(n for _, n, _ in pairs) == len(theirs)  # every tripleg lies in one of our trips
    for i, n, _ in pairs:
        if n > 1:  # trackintel split our trip: there must be a signal dropout inside it
            steps = np.diff(tr.t_ns[ours.first[i]:ours.last[i] + 1]) / 1e9
            assert steps.max() >= 60, f"trip {i} split by trackintel without a dropout"
    # against the generator's ground truth, we find every drive exactly once
    for k, vid in enumerate(tr.vehicles):
        for tt in truth[vid]:
            ov = (np.minimum(ours.end_ns, tt.end_ns) - np.maximum(ours.start_ns, tt.start_ns) > 0) & \
                 (ours.vehicle_idx == k)
            assert ov.sum() == 1, (vid, tt)


def test_trip_distances_agree(both):
    tr, ours, theirs, _ = both
    assert ours.distance_m.sum() == pytest.approx(theirs.length_m.sum(), rel=0.01)
    diffs = np.abs([ours.distance_m[i] / length - 1 for i, n, length in _theirs_per_ours(tr, ours, theirs) if n])
    assert np.median(diffs) < 0.01
    assert np.percentile(diffs, 90) < 0.03


def test_our_distances_track_the_ground_truth(both):
    tr, ours, _, truth = both
    diffs = []
    for k, vid in enumerate(tr.vehicles):
        for tt in truth[vid]:
            ov = (np.minimum(ours.end_ns, tt.end_ns) - np.maximum(ours.start_ns, tt.start_ns) > 0) & \
                 (ours.vehicle_idx == k)
            diffs.append(ours.distance_m[ov].sum() / tt.distance_m - 1)
    diffs = np.abs(diffs)
    assert np.median(diffs) < 0.01
    assert np.percentile(diffs, 90) < 0.03
