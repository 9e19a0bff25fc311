"""Trip segmentation on hand-built tracks: the cases a dispatcher would notice."""

from __future__ import annotations

import numpy as np
import pytest

from analytics.fleet.tracks import clean
from analytics.fleet.trips import Method, TripParams, segment

DIST = TripParams(method=Method.distance)
ACC = TripParams(method=Method.acc)


def trips_of(tr, params=DIST):
    c = clean(tr, now_ns=int(tr.t_ns.max()) + 1)
    return segment(c.tracks, params).trips.rows()


def test_trip_through_midnight_is_one_trip(builder, at):
    b = builder("2025-10-14 23:30").park(600).drive(50 * 60, 40).park(1800)
    (trip,) = trips_of(b.tracks())
    assert trip.start_ns == at("2025-10-14 23:40")
    assert trip.end_ns == at("2025-10-15 00:30")
    assert trip.distance_m == pytest.approx(40 / 3.6 * 3000, rel=1e-3)
    assert trip.duration_s == pytest.approx(3000)


@pytest.mark.parametrize("stay_s,n_trips", [(179, 1), (181, 2)])
def test_stop_of_179_s_is_not_a_stop_181_s_is(builder, stay_s, n_trips):
    # 90 km/h at 10 s per fix: 250 m steps, so only the standing fixes lie within 200 m
    b = builder("2025-10-14 09:00").park(600).drive(600, 90).park(stay_s).drive(600, 90, heading_deg=0).park(900)
    trips = trips_of(b.tracks())
    assert len(trips) == n_trips
    assert sum(t.distance_m for t in trips) == pytest.approx(2 * 15_000, rel=1e-3)
    if n_trips == 2:
        assert (trips[1].start_ns - trips[0].end_ns) / 1e9 == pytest.approx(181)


@pytest.mark.parametrize("stay_s,n_trips", [(179, 1), (181, 2)])
def test_acc_off_for_179_s_is_not_a_stop_181_s_is(builder, stay_s, n_trips):
    b = builder("2025-10-14 09:00").park(600).drive(600, 90).park(stay_s).drive(600, 90, heading_deg=0).park(900)
    b.rows[-1] = b.rows[-1]  # ends parked, ACC off
    trips = trips_of(b.tracks(), ACC)
    assert len(trips) == n_trips
    assert all(t.by_acc for t in trips)


def test_parked_jitter_makes_no_trip_and_no_mileage(builder):
    b = builder("2025-10-14 18:00", seed=1).park(4 * 3600, jitter_m=10.0)
    tr = b.tracks(acc=False)
    raw = np.sum(np.hypot(np.diff(tr.lat) * 111_195, np.diff(tr.lon) * 111_195 * np.cos(np.radians(30.27))))
    c = clean(tr, now_ns=int(tr.t_ns.max()) + 1)
    lat, lon = c.tracks.lat, c.tracks.lon
    cleaned = np.sum(np.hypot(np.diff(lat) * 111_195, np.diff(lon) * 111_195 * np.cos(np.radians(30.27))))
    assert raw > 10_000  # 4 h of 10 m jitter walks kilometres
    assert cleaned < 0.05 * raw
    assert c.jitter_snapped.sum() > 0.9 * len(tr)
    assert segment(c.tracks, DIST).trips.rows() == []


def test_parked_jitter_spike_within_stop_radius_stays_one_stop(builder):
    b = builder("2025-10-14 08:00").drive(900, 50).park(1800, jitter_m=8.0)
    b.x += 120.0  # a multipath jump of 120 m, past the jitter radius but inside the stop
    b.park(60)
    b.x -= 120.0
    b.park(1800, jitter_m=8.0).drive(900, 50, heading_deg=180).park(600)
    trips = trips_of(b.tracks(acc=False))
    assert len(trips) == 2


def test_gap_longer_than_max_ends_trip_and_its_line_is_not_mileage(builder):
    b = builder("2025-10-14 09:00").park(600).drive(900, 60).gap(2 * 3600, move_m=30_000).fix(60, 1) \
        .drive(900, 60).park(600)
    trips = trips_of(b.tracks())
    assert len(trips) == 2
    assert [t.distance_m for t in trips] == pytest.approx([15_000, 15_000], abs=0.5)  # haversine sums


def test_gap_shorter_than_max_keeps_the_trip(builder):
    b = builder("2025-10-14 09:00").park(600).drive(900, 60).gap(600, move_m=8000).fix(60, 1) \
        .drive(900, 60).park(600)
    (trip,) = trips_of(b.tracks())
    assert trip.distance_m == pytest.approx(15_000 + 8000 + 15_000, rel=1e-3)


def test_sleeping_terminal_while_parked_is_a_stop(builder):
    b = builder("2025-10-14 09:00").park(60).drive(900, 60).park(60).gap(3 * 3600).park(60).drive(900, 60).park(300)
    assert len(trips_of(b.tracks(acc=False))) == 2


def test_acc_and_distance_segmentation_agree_on_the_same_drive(builder):
    b = builder("2025-10-14 07:50", seed=3)
    b.park(600, jitter_m=5)
    for heading in (90, 0, 270):
        b.drive(300, 35, heading).park(60, acc=1).drive(900, 55, heading)  # a 60 s light
        b.park(1800, jitter_m=5)
    by_acc = trips_of(b.tracks(), ACC)
    by_dist = trips_of(b.tracks(acc=False), DIST)
    assert len(by_acc) == len(by_dist) == 3
    for a, d in zip(by_acc, by_dist):
        assert a.distance_m == pytest.approx(d.distance_m, rel=0.01)
        assert abs(a.start_ns - d.start_ns) <= 20e9 and abs(a.end_ns - d.end_ns) <= 20e9
        assert a.by_acc and not d.by_acc


def test_auto_uses_acc_when_reported(builder):
    b = builder("2025-10-14 09:00").park(600).drive(600, 50).park(600)
    assert trips_of(b.tracks(), TripParams())[0].by_acc
    assert not trips_of(b.tracks(acc=False), TripParams())[0].by_acc


def test_short_trip_is_dropped_and_counted(builder):
    b = builder("2025-10-14 09:00").park(600).drive(20, 36).park(600)  # 200 m hop
    c = clean(b.tracks(), now_ns=int(b.t) + 1)
    seg = segment(c.tracks, TripParams(method=Method.acc))
    assert len(seg.trips) == 0
    assert seg.trips.dropped_short.tolist() == [1]


def test_idle_with_engine_on_counts_as_idle_not_driving(builder):
    b = builder("2025-10-14 09:00").park(600).drive(600, 50).park(600, acc=1).drive(600, 50).park(600)
    (trip,) = trips_of(b.tracks(), ACC)
    assert trip.idle_s == pytest.approx(600, abs=10)
    assert trip.driving_s == pytest.approx(trip.duration_s - trip.idle_s)
    assert trip.max_speed_kmh == pytest.approx(50)
    assert trip.mean_speed_kmh == pytest.approx(trip.distance_m / trip.duration_s * 3.6)


def test_traffic_light_wait_is_driving(builder):
    b = builder("2025-10-14 09:00").park(600).drive(600, 50).park(90, acc=1).drive(600, 50).park(600)
    (trip,) = trips_of(b.tracks(), ACC)
    assert trip.idle_s == 0


def test_many_vehicles_are_segmented_independently(builder):
    from analytics.fleet.tracks import Tracks
    a = builder("2025-10-14 09:00").park(600).drive(600, 50).park(600).tracks("A", acc=False)
    b = builder("2025-10-14 09:05").park(300).drive(1200, 30).park(900).drive(300, 30).park(600).tracks("B", acc=False)
    both = Tracks.concat([a, b])
    rows = trips_of(both)
    assert [t.vehicle for t in rows] == ["A", "B", "B"]
    assert rows[0].distance_m == pytest.approx(trips_of(a)[0].distance_m)


def test_parked_jitter_without_speed_or_acc_is_snapped_within_jitter_radius(builder):
    b = builder("2025-10-14 18:00", seed=2).park(2 * 3600, jitter_m=5.0)
    c = clean(b.tracks(acc=False, speed=False), now_ns=int(b.t) + 1)
    assert c.jitter_snapped.sum() > 0.98 * (len(c.tracks) - 1)


def test_slow_crawl_without_speed_is_not_snapped(builder):
    b = builder("2025-10-14 18:00").drive(600, 15)  # 42 m per fix
    c = clean(b.tracks(acc=False, speed=False), now_ns=int(b.t) + 1)
    assert c.jitter_snapped.sum() == 0
