"""Validation of positions and GCJ-02 conversion (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from collector.gps.crs import gcj02_to_wgs84, wgs84_to_gcj02
from collector.gps.validate import JUMP_RESET, JUMP_SLACK_M, Tracker, check_point, haversine_m
from edge.errors import PayloadError
from edge.point import Point

NOW = 1_764_000_000 * 10**9
S = 10**9


def pos(t: int, lat: float = 30.2741, lon: float = 120.1551, v: str = "v1", **f) -> Point:
    return Point("position", {"vehicle": v}, {"lat": lat, "lon": lon, **f}, t)


@pytest.mark.parametrize("p,reason", [
    (pos(NOW, 0.0, 0.0), "zero_position"),
    (pos(NOW + 3600 * S), "time_in_future"),
    (pos(NOW - 30 * 86400 * S), "time_too_old"),
    (pos(NOW, speed_kmh=450.0), "speed_implausible"),
])
def test_check_point_rejects(p, reason):
    with pytest.raises(PayloadError) as e:
        check_point(p, NOW, max_speed_kmh=200)
    assert e.value.reason == reason


def test_check_point_accepts_a_normal_fix():
    check_point(pos(NOW - 5 * S, speed_kmh=60.0), NOW)


def test_tracker_duplicates_and_jumps_and_commit_only_after_commit():
    tr = Tracker(max_speed_kmh=120)
    v = tr.check([pos(NOW), pos(NOW), pos(NOW + S, 30.2742)])
    assert len(v.accepted) == 2 and [e.reason for _, e in v.rejected] == ["duplicate"]
    # not committed yet: the same points are new again (a failed outbox commit loses nothing)
    assert len(tr.check([pos(NOW)]).accepted) == 1
    tr.commit(v)
    assert tr.check([pos(NOW)]).rejected[0][1].reason == "duplicate"
    # 10 km in 10 s is 3,600 km/h
    far = tr.check([pos(NOW + 11 * S, 30.3641)])
    assert far.rejected[0][1].reason == "impossible_jump"
    # out of order but plausible: accepted
    assert len(tr.check([pos(NOW - 5 * S, 30.2740)]).accepted) == 1


def test_tracker_follows_a_vehicle_that_really_moved():
    tr = Tracker(max_speed_kmh=120)
    tr.commit(tr.check([pos(NOW)]))
    moved = [pos(NOW + (i + 1) * S, 31.2304, 121.4737) for i in range(JUMP_RESET)]  # Shanghai, consistently
    v = tr.check(moved)
    assert len(v.rejected) == JUMP_RESET - 1 and v.accepted == (moved[-1],)


@given(lat=st.floats(18, 53), lon=st.floats(74, 134))
def test_gcj02_round_trip_within_1e6(lat, lon):
    glat, glon = wgs84_to_gcj02(lat, lon)
    wlat, wlon = gcj02_to_wgs84(glat, glon)
    assert abs(wlat - lat) < 1e-6 and abs(wlon - lon) < 1e-6


def test_gcj02_offset_in_hangzhou_is_a_few_hundred_metres():
    glat, glon = wgs84_to_gcj02(30.2741, 120.1551)
    d = haversine_m(30.2741, 120.1551, glat, glon)
    assert 300 < d < 700  # the familiar "map is off by ~500 m" of Chinese web maps
    assert wgs84_to_gcj02(48.85, 2.35) == (48.85, 2.35)  # outside China: unchanged


def test_duplicates_are_caught_over_the_last_256_fixes_in_or_out_of_order():
    from collector.gps.validate import RECENT
    tr = Tracker(max_speed_kmh=120)
    times = [NOW + k * S for k in range(300)]
    for t in times:  # one commit per fix, like one MQTT batch each
        tr.commit(tr.check([pos(t)]))
    # a redelivered recent fix, and an out-of-order one: caught
    redelivered = tr.check([pos(times[-1]), pos(times[-RECENT])])
    assert [e.reason for _, e in redelivered.rejected] == ["duplicate", "duplicate"]
    # older than the window: taken as a new (late) fix, and InfluxDB overwrites the same point
    assert len(tr.check([pos(times[-RECENT - 1])]).accepted) == 1
    # a late fix that was never seen, inside the window's time span: accepted
    assert len(tr.check([pos(times[-3] + S // 2)]).accepted) == 1


@given(st.floats(-60, 60), st.floats(-179, 179), st.floats(-0.05, 0.05), st.floats(-0.05, 0.05),
       st.integers(1, 600))
def test_tracker_jump_decision_is_the_haversine_one(lat, lon, dlat, dlon, dt_s):
    """The cheap bound the tracker tries first never changes a decision: a second fix is refused
    as a jump exactly when the great-circle distance exceeds what the speed limit allows."""
    tr = Tracker(max_speed_kmh=120)
    tr.commit(tr.check([pos(NOW, lat, lon)]))
    v = tr.check([pos(NOW + dt_s * S, lat + dlat, lon + dlon)])
    jump = haversine_m(lat, lon, lat + dlat, lon + dlon) > 120 / 3.6 * dt_s + JUMP_SLACK_M
    assert [e.reason for _, e in v.rejected] == (["impossible_jump"] if jump else [])
