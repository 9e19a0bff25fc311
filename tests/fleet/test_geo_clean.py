"""Geometry against independent references (pyproj's WGS-84 ellipsoid, shapely) and cleaning."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from pyproj import Geod

from analytics.fleet.geo import Fence, haversine_m, in_polygon, near_m
from analytics.fleet.tracks import NS, CleanParams, Tracks, clean


def test_haversine_matches_the_wgs84_ellipsoid_within_half_a_percent():
    rng = np.random.default_rng(1)
    lat1 = rng.uniform(18, 53, 500)
    lon1 = rng.uniform(73, 135, 500)
    lat2 = lat1 + rng.uniform(-2, 2, 500)
    lon2 = lon1 + rng.uniform(-2, 2, 500)
    _, _, ref = Geod(ellps="WGS84").inv(lon1, lat1, lon2, lat2)
    ours = haversine_m(lat1, lon1, lat2, lon2)
    assert np.max(np.abs(ours / ref - 1)) < 0.005
    # Hangzhou West Lake to Shanghai People's Square, ~165 km
    assert haversine_m(30.2592, 120.1490, 31.2304, 121.4737) == pytest.approx(164_800, rel=0.01)


def test_near_approximation_is_within_a_tenth_of_a_percent_below_10_km():
    rng = np.random.default_rng(2)
    lat1 = rng.uniform(18, 53, 1000)
    lon1 = rng.uniform(73, 135, 1000)
    lat2 = lat1 + rng.uniform(-0.06, 0.06, 1000)
    lon2 = lon1 + rng.uniform(-0.06, 0.06, 1000)
    h = haversine_m(lat1, lon1, lat2, lon2)
    assert np.max(np.abs(near_m(lat1, lon1, lat2, lon2) - h) / np.maximum(h, 1)) < 1e-3


def test_point_in_polygon_agrees_with_shapely_on_a_concave_fence():
    poly = [(30.0, 120.0), (30.0, 120.1), (30.1, 120.1), (30.05, 120.05), (30.1, 120.0)]  # (lat, lon)
    rng = np.random.default_rng(3)
    lat = rng.uniform(29.95, 30.15, 3000)
    lon = rng.uniform(119.95, 120.15, 3000)
    ref = shapely.contains_xy(shapely.Polygon([(b, a) for a, b in poly]), lon, lat)
    ours = in_polygon(lat, lon, [p[0] for p in poly], [p[1] for p in poly])
    assert (ours == ref).mean() > 0.999
    f = Fence("yard", polygon=tuple(poly))
    assert f.contains_one(30.02, 120.05) and not f.contains_one(30.09, 120.05)


def test_circle_fence():
    f = Fence("gate", circle=(30.27, 120.15, 100.0))
    assert f.contains_one(30.27 + 80 / 111_195, 120.15)
    assert not f.contains_one(30.27 + 120 / 111_195, 120.15)


def test_cleaning_drops_each_kind_of_bad_fix_and_says_why():
    t0 = 1_760_000_000 * NS
    t = t0 + np.arange(12) * 10 * NS
    lat = 30.27 + np.arange(12) * 0.001  # ~111 m per 10 s = 40 km/h
    lon = np.full(12, 120.15)
    spd = np.full(12, 40.0)
    lat[2], lon[2] = 0.0, 0.0  # (0, 0)
    lat[3] = 95.0  # out of range
    t[5] = t[4]  # duplicate timestamp
    lat[7] += 0.2  # 22 km spike in 10 s
    spd[9] = 260.0  # reported speed above max
    t[11] = t0 + 3600 * NS * 24  # in the future
    sat = np.full(12, 9)
    sat[10] = 0  # terminal says: no fix
    tr = Tracks.single("v", t, lat, lon, spd, satellites=sat)
    c = clean(tr, now_ns=t0 + 200 * NS, params=CleanParams())
    assert c.dropped_total() == {"invalid_fix": 2, "zero_coords": 1, "future": 1, "duplicate": 1,
                                 "speed_above_max": 1, "outlier": 1, "cold_start": 0}
    assert len(c.tracks) == 12 - 7


def test_out_of_order_fixes_are_sorted_not_dropped():
    t0 = 1_760_000_000 * NS
    t = t0 + np.array([30, 10, 20, 40]) * NS
    tr = Tracks.single("v", t, [30.1, 30.1, 30.1, 30.1], [120.003, 120.001, 120.002, 120.004])
    c = clean(tr, now_ns=t0 + 100 * NS)
    assert c.tracks.t_ns.tolist() == [t0 + 10 * NS, t0 + 20 * NS, t0 + 30 * NS, t0 + 40 * NS]
    assert c.tracks.lon.tolist() == [120.001, 120.002, 120.003, 120.004]
