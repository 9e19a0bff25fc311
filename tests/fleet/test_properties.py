"""Any fixes in, consistent trips out: cleaning and segmentation never crash on odd input."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.fleet.tracks import NS, Tracks, clean
from analytics.fleet.trips import Method, TripParams, segment

T0 = 1_760_000_000 * NS


@st.composite
def fleets(draw):
    parts = []
    for v in range(draw(st.integers(0, 4))):
        n = draw(st.integers(0, 60))
        seed = draw(st.integers(0, 2**32 - 1))
        rng = np.random.default_rng(seed)
        t = T0 + np.cumsum(rng.choice([0, 1, 5, 10, 30, 600, 5000], n)).astype(np.int64) * NS
        rng.shuffle(t[: n // 5])
        walk = rng.choice([0.0, 1e-5, 1e-3, 0.5], n)
        lat = 30 + np.cumsum(walk * rng.normal(size=n))
        lon = 120 + np.cumsum(walk * rng.normal(size=n))
        lat[rng.random(n) < 0.05] = 91.0  # out of range: an invalid fix, counted
        lon[rng.random(n) < 0.05] = 0.0
        spd = np.where(rng.random(n) < 0.3, np.nan, rng.uniform(0, 250, n))
        acc = rng.choice([-1, 0, 1], n).astype(np.int8) if draw(st.booleans()) else None
        parts.append(Tracks.single(f"v{v}", t, lat, lon, spd, acc, None))
    return Tracks.concat(parts)


@settings(max_examples=150)
@given(fleets(), st.sampled_from(list(Method)))
def test_clean_and_segment_are_total_and_consistent(tracks, method):
    now = int(tracks.t_ns.max()) if len(tracks) else 0
    c = clean(tracks, now_ns=now)
    tr = c.tracks
    assert len(tr) + sum(c.dropped_total().values()) == len(tracks)
    assert np.all(np.isfinite(tr.lat)) and np.all(np.abs(tr.lat) <= 90)
    seg = segment(tr, TripParams(method=method, min_trip_m=0, min_trip_s=0))
    trips = seg.trips
    g = tr.group
    for i in range(len(trips)):
        a, b = trips.first[i], trips.last[i]
        assert a < b and g[a] == g[b] == trips.vehicle_idx[i]
        assert trips.distance_m[i] >= 0 and trips.idle_s[i] >= 0
        assert abs(trips.driving_s[i] + trips.idle_s[i] - trips.duration_s[i]) < 1e-6
        if i and trips.vehicle_idx[i] == trips.vehicle_idx[i - 1]:
            assert trips.first[i] >= trips.last[i - 1]
