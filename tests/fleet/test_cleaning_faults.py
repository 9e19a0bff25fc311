"""The faults of issue "mileage a fleet manager can sign", each through the production path
(``compute_fleet`` with default parameters), shaped by the numbers the issue reports.

Each test is named after what broke; all failed before the cleaning was rebuilt (see the commit
that added them). Tracks are built in metres on a local plane around Hangzhou, then turned into
WGS-84; the true distance is known by construction.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from analytics.fleet.geo import haversine_m
from analytics.fleet.indicators import VehicleInfo
from analytics.fleet.jobs import PrefetchedSource, compute_fleet
from analytics.fleet.tracks import NS, Tracks, TrackError, clean

ORG = "330000/330100/330106/inst-042"
LAT0, LON0 = 30.2741, 120.1551
M_PER_DEG = 111_194.93
T0 = 1_760_400_000 * NS  # 2025-10-14 08:00 +08:00


def to_tracks(t_s, x, y, vehicle="浙A·12345", speed=None, acc=None, odometer=None) -> Tracks:
    lat = LAT0 + np.asarray(y) / M_PER_DEG
    lon = LON0 + np.asarray(x) / (M_PER_DEG * math.cos(math.radians(LAT0)))
    t = T0 + np.round(np.asarray(t_s, dtype=float) * NS).astype(np.int64)
    return Tracks.single(vehicle, t, lat, lon, speed, acc, odometer)


def drive(speed_kmh, seconds, interval_s, heading_deg=90.0, start=(0.0, 0.0), t_start=0.0, noise_m=0.0, seed=0):
    """A straight drive: times, x, y (fixes every interval_s, the first at t_start)."""
    n = int(round(seconds / interval_s)) + 1
    t = t_start + np.arange(n) * interval_s
    d = speed_kmh / 3.6 * (t - t_start)
    h = math.radians(heading_deg)
    rng = np.random.default_rng(seed)
    x = start[0] + math.sin(h) * d + rng.normal(0, noise_m, n) * (noise_m > 0)
    y = start[1] + math.cos(h) * d + rng.normal(0, noise_m, n) * (noise_m > 0)
    return t, x, y


def park(seconds, interval_s, at, t_start, cloud_m=0.0, seed=1):
    n = int(round(seconds / interval_s))
    t = t_start + (np.arange(n) + 1) * interval_s
    rng = np.random.default_rng(seed)
    if cloud_m:
        # a drift cloud (multipath at a stop): a mean-reverting walk, about cloud_m / 3 from the
        # spot typically, held within cloud_m
        pos = np.zeros((n, 2))
        s = cloud_m / 3
        for i in range(1, n):
            pos[i] = 0.9 * pos[i - 1] + rng.normal(0, s * math.sqrt(1 - 0.81), 2)
        r = np.hypot(pos[:, 0], pos[:, 1])
        pos *= np.minimum(1.0, cloud_m / np.maximum(r, 1e-9))[:, None]
    else:
        pos = np.zeros((n, 2))
    return t, at[0] + pos[:, 0], at[1] + pos[:, 1]


def cat(*parts):
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))


def fleet(tracks: Tracks, start_s=-3600, end_s=86_400, wt=None):
    from analytics.fleet.indicators import WeekdayCalendar, WorkingTime
    vid = tracks.vehicles[0]
    res, rep = compute_fleet(PrefetchedSource({vid: tracks}), [VehicleInfo(vid, ORG)], T0 + start_s * NS,
                             T0 + end_s * NS, wt or WorkingTime(WeekdayCalendar()), now_ns=T0 + 10 * 86_400 * NS)
    return res, rep


def only_trip(res):
    assert res.trips is not None and len(res.trips) == 1, f"expected one trip, got {len(res.trips)}"
    return res.trips.rows()[0]


# --- no speed column: parked snapping on a moving vehicle --------------------------------------


@pytest.mark.parametrize("speed_kmh,interval_s", [(45.0, 2.0), (108.0, 1.0)])
def test_moving_vehicle_without_speed_column_is_not_snapped_as_parked(speed_kmh, interval_s):
    # 45 km/h every 2 s = 25 m steps, 108 km/h every 1 s = 30 m: under the 30 m jitter radius;
    # before: every other fix snapped back, the next step doubled (116.6 and 216.8 km/h reported)
    t, x, y = cat(park(600, 10, (0, 0), -600), drive(speed_kmh, 900, interval_s, noise_m=2.0),
                  park(600, 10, (speed_kmh / 3.6 * 900, 0), 900))
    res, _ = fleet(to_tracks(t, x, y))
    trip = only_trip(res)
    true_m = speed_kmh / 3.6 * 900
    assert trip.distance_m == pytest.approx(true_m, rel=0.02)
    assert trip.max_speed_kmh <= speed_kmh * 1.1
    assert res.vehicles[0].mileage_km == pytest.approx(true_m / 1000, rel=0.02)


def test_one_second_timestamp_jitter_does_not_make_225_kmh():
    # a 1 Hz logger at 75.6 km/h (21 m/s) whose clock lags: every 30 s two fixes are lost and the
    # next is stamped 2 s early, so one step shows 63 m in "1 s" (227 km/h) and the next 21 m in 3 s
    t, x, y = drive(75.6, 1200, 1.0)
    t = t.copy()
    keep = np.ones(len(t), dtype=bool)
    for k in range(30, len(t) - 5, 30):
        keep[k + 1:k + 3] = False
        t[k + 3] -= 2.0
    t, x, y = t[keep], x[keep], y[keep]
    t, x, y = cat(park(600, 10, (0, 0), -600), (t, x, y), park(600, 10, (x[-1], y[-1]), t[-1]))
    res, _ = fleet(to_tracks(t, x, y))
    trip = only_trip(res)
    assert trip.max_speed_kmh <= 75.6 * 1.1
    assert trip.distance_m == pytest.approx(21.0 * 1200, rel=0.02)


# --- outliers ----------------------------------------------------------------------------------


def test_bad_fix_right_after_a_114_s_gap_is_dropped_as_a_cold_start():
    # 50 km/h, a fix every 10 s, a 114 s signal gap (the car drives on unseen), then the first fix
    # after the gap 1.8 km off the road: before, kept (829.7 km/h, 1.8 km of false distance)
    a = drive(50, 600, 10)
    gap_end = 600 + 114
    b = drive(50, 600, 10, start=(50 / 3.6 * gap_end, 0), t_start=gap_end)
    bx, by = b[1].copy(), b[2].copy()
    by[0] += 1800.0
    t, x, y = cat(park(600, 10, (0, 0), -600), a, (b[0], bx, by), park(600, 10, (bx[-1], by[-1]), b[0][-1]))
    res, rep = fleet(to_tracks(t, x, y))
    trip = only_trip(res)
    true_m = 50 / 3.6 * (gap_end + 600)
    assert trip.distance_m == pytest.approx(true_m, rel=0.02)
    assert trip.max_speed_kmh <= 55.0
    assert rep.dropped["cold_start"] == 1


@pytest.mark.parametrize("run,offset_m", [(2, 500_000.0), (3, 500_000.0), (2, 1_000.0), (1, 1_000.0)])
def test_runs_of_outlier_fixes_are_dropped(run, offset_m):
    # before: two fixes 500 km away gave 1,003 km and 1.8 million km/h; two 1 km away +74 % on the leg
    t, x, y = drive(50, 1200, 10)
    y = y.copy()
    y[60:60 + run] += offset_m
    t, x, y = cat(park(600, 10, (0, 0), -600), (t, x, y), park(600, 10, (x[-1], 0.0), t[-1]))
    res, rep = fleet(to_tracks(t, x, y))
    trip = only_trip(res)
    assert trip.distance_m == pytest.approx(50 / 3.6 * 1200, rel=0.02)
    assert trip.max_speed_kmh <= 55.0
    assert rep.dropped["outlier"] == run


def test_drift_cloud_of_150_m_at_a_stop_is_a_stop_and_no_mileage():
    # a 40 min stop whose fixes wander up to 150 m (urban multipath), no speed, no ACC
    a = drive(40, 900, 10)
    end = (40 / 3.6 * 900, 0.0)
    stop = park(2400, 10, end, 900, cloud_m=150.0, seed=4)
    b = drive(40, 900, 10, heading_deg=0, start=end, t_start=3300 + 10)
    t, x, y = cat(park(600, 10, (0, 0), -600), a, stop, b, park(600, 10, (b[1][-1], b[2][-1]), b[0][-1]))
    res, _ = fleet(to_tracks(t, x, y))
    assert len(res.trips) == 2
    true_km = 2 * 40 / 3.6 * 900 / 1000
    v = res.vehicles[0]
    assert v.mileage_km == pytest.approx(true_km, rel=0.03)
    cloud_path = float(np.sum(np.hypot(np.diff(stop[1]), np.diff(stop[2])))) / 1000
    assert cloud_path > 2.0  # the cloud alone walks kilometres


@pytest.mark.parametrize("seed", range(8))
def test_drift_cloud_at_a_stop_adds_nothing_to_the_approach_or_departure(seed):
    # a 30 min stop whose fixes drift up to 150 m, against the same drive with the parked fixes on
    # the spot; before: the sliding window split the cloud into stays, each trimmed around one
    # drifting fix, and the trips took up to 1.1 km of drift (seed 0: +169 m in, +1,147 m out)
    a = drive(40, 600, 10)
    spot = (a[1][-1], 0.0)
    trips = {}
    for cloud_m in (150.0, 0.0):
        stop = park(1800, 10, spot, 600, cloud_m=cloud_m, seed=seed)
        b = drive(40, 600, 10, heading_deg=0, start=spot, t_start=2410)
        t, x, y = cat(park(600, 10, (0, 0), -600), a, stop, b, park(600, 10, (b[1][-1], b[2][-1]), b[0][-1]))
        res, _ = fleet(to_tracks(t, x, y))
        trips[cloud_m] = res.trips.rows()
    drifting, still = trips[150.0], trips[0.0]
    assert len(drifting) == len(still) == 2
    for d, s in zip(drifting, still):
        assert d.distance_m == pytest.approx(s.distance_m, abs=5.0)
        assert d.distance_m == pytest.approx(40 / 3.6 * 600, rel=1e-3)
    assert drifting[0].end_ns == T0 + 600 * NS  # arrived at the spot
    assert drifting[1].start_ns == T0 + 2410 * NS  # left it


@pytest.mark.parametrize("speed_reported", [False, True])
def test_bus_crawling_at_walking_pace_in_a_jam_is_driven_not_a_stop(speed_reported):
    # 5 min at 40 km/h, 8 min crawling at 4 km/h (533 m, 3 m GPS noise: under 200 m in 3 min), 5 min
    # at 40 km/h; before: the crawl was taken for a stop, the drive split in two, 0.3 km missing
    a = drive(40, 300, 10)
    x0 = a[1][-1]
    crawl = drive(4, 480, 10, start=(x0, 0.0), t_start=310, noise_m=3.0, seed=5)
    x1 = x0 + 4 / 3.6 * 480
    b = drive(40, 300, 10, start=(x1, 0.0), t_start=800)
    t, x, y = cat(park(600, 10, (0, 0), -600), a, crawl, b, park(600, 10, (b[1][-1], 0.0), b[0][-1]))
    speed = None
    if speed_reported:
        speed = np.concatenate([np.zeros(60), np.full(len(a[0]), 40.0), np.full(len(crawl[0]), 4.0),
                                np.full(len(b[0]), 40.0), np.zeros(60)])
    res, _ = fleet(to_tracks(t, x, y, speed=speed))
    trip = only_trip(res)
    true_m = 2 * 40 / 3.6 * 300 + 4 / 3.6 * 480  # 7.2 km (the noise lengthens the crawl's path by ~0.5 %)
    assert trip.distance_m == pytest.approx(true_m, rel=0.01)
    assert res.vehicles[0].mileage_km == pytest.approx(true_m / 1000, rel=0.01)


def test_second_dwell_inside_the_stop_radius_is_part_of_the_stop_not_the_approach():
    # parked 20 min at A, moved 150 m to B, parked 20 min: one stay of the 200 m radius; before, the
    # stop was trimmed around its middle fix (at B) and the 20 min at A became the end of the trip
    a = drive(40, 600, 10)
    spot_a = (a[1][-1], 0.0)
    at_a = park(1200, 10, spot_a, 600)
    move = drive(5, 108, 10, heading_deg=0, start=spot_a, t_start=1810)
    spot_b = (spot_a[0], move[2][-1])
    at_b = park(1200, 10, spot_b, move[0][-1])
    b = drive(40, 600, 10, heading_deg=0, start=spot_b, t_start=at_b[0][-1] + 10)
    t, x, y = cat(park(600, 10, (0, 0), -600), a, at_a, move, at_b, b,
                  park(600, 10, (b[1][-1], b[2][-1]), b[0][-1]))
    res, _ = fleet(to_tracks(t, x, y))
    first, second = res.trips.rows()
    assert abs(first.end_ns - (T0 + 600 * NS)) <= 10 * NS  # arrival at A
    assert abs(second.start_ns - (T0 + int(at_b[0][-1]) * NS)) <= 10 * NS  # departure from B
    # the stop keeps its radius start there: at most the approach inside the radius is not counted
    for trip in (first, second):
        assert 40 / 3.6 * 600 - 200 <= trip.distance_m <= 40 / 3.6 * 600 + 1


# --- gaps ----------------------------------------------------------------------------------------


def test_straight_line_across_an_11_6_h_gap_is_unobserved_not_driven():
    # before: a day's mileage of 660.3 km where the trips total 19.6 km
    a = drive(40, 882, 10)  # 9.8 km
    p1 = park(1800, 30, (a[1][-1], 0.0), 882)
    b = drive(40, 882, 10, heading_deg=270, start=(a[1][-1], 0.0), t_start=882 + 1800 + 10)
    p2 = park(1800, 30, (b[1][-1], b[2][-1]), b[0][-1])
    gap_to = p2[0][-1] + 11.6 * 3600
    far = (b[1][-1], 639_500.0)
    p3 = park(1800, 30, far, gap_to - 30)
    t, x, y = cat(park(600, 30, (0, 0), -600), a, p1, b, p2, p3)
    res, _ = fleet(to_tracks(t, x, y))
    v = res.vehicles[0]
    trips_km = float(res.trips.distance_m.sum()) / 1000
    assert trips_km == pytest.approx(19.6, rel=0.02)
    assert v.gps_km == pytest.approx(trips_km, rel=1e-9)
    assert v.mileage_km == pytest.approx(19.6, rel=0.02)
    assert v.unobserved_km == pytest.approx(639.5, rel=0.01)
    (pt,) = [p for p in res.points if p.measurement == "fleet_indicator" and p.tags["scope"] == "vehicle"]
    assert pt.fields["unobserved_km"] == pytest.approx(639.5, rel=0.01)
    assert pt.fields["mileage_km"] == pytest.approx(19.6, rel=0.02)


# --- refused input -------------------------------------------------------------------------------


def test_negative_reported_speed_is_refused_with_the_field_and_unit():
    t, x, y = drive(50, 60, 10)
    speed = np.full(len(t), 50.0)
    speed[3] = -50.0  # before: accepted, the trip's top speed was -50
    with pytest.raises(TrackError, match=r"speed_kmh.*km/h.*row 3"):
        to_tracks(t, x, y, speed=speed)
    with pytest.raises(TrackError, match="speed_kmh"):
        to_tracks(t, x, y, speed=np.where(np.arange(len(t)) == 2, np.inf, 50.0))


@pytest.mark.parametrize("scale,unit", [(1, "seconds"), (1_000, "milliseconds"), (1_000_000, "microseconds")])
def test_times_in_the_wrong_unit_are_an_error_naming_the_unit_expected(scale, unit):
    # before: seconds were taken as nanoseconds and every step dropped as over-speed
    t = (1_760_400_000 + np.arange(10) * 10) * scale
    with pytest.raises(TrackError, match=f"t_ns looks like {unit}: .*expected int64 nanoseconds since the epoch"):
        Tracks.single("v", t, np.full(10, LAT0), np.full(10, LON0))


def test_non_finite_times_and_coordinates_are_refused():
    t = T0 + np.arange(5) * 10 * NS
    with pytest.raises(TrackError, match="lat"):
        Tracks.single("v", t, [LAT0, np.nan, LAT0, LAT0, LAT0], np.full(5, LON0))
    with pytest.raises(TrackError, match="lon"):
        Tracks.single("v", t, np.full(5, LAT0), [LON0, LON0, np.inf, LON0, LON0])
    with pytest.raises(TrackError, match="t_ns"):
        Tracks.single("v", np.array([1.7e18, np.nan]), np.full(2, LAT0), np.full(2, LON0))


def test_top_speed_never_exceeds_the_maximum_even_from_positions():
    # a genuine 260 km/h run (no outlier: every fix agrees) is capped at max_speed_kmh, not reported
    t, x, y = cat(park(600, 10, (0, 0), -600), drive(260, 300, 5), park(600, 10, (260 / 3.6 * 300, 0), 300))
    res, _ = fleet(to_tracks(t, x, y))
    assert res.trips.max_speed_kmh.max() <= 200.0


def test_cleaning_counts_every_moved_fix():
    t, x, y = cat(park(1200, 10, (0, 0), -1200, cloud_m=10.0), drive(40, 300, 10))
    c = clean(to_tracks(t, x, y), now_ns=T0 + 86_400 * NS)
    assert c.jitter_snapped.sum() > 100  # the parked fixes, not the moving ones
    moving = np.hypot(np.diff(x[-30:]), np.diff(y[-30:]))
    snapped_path = haversine_m(c.tracks.lat[-30:-1], c.tracks.lon[-30:-1], c.tracks.lat[-29:], c.tracks.lon[-29:])
    assert snapped_path.sum() == pytest.approx(moving.sum(), rel=0.01)
