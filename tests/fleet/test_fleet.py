"""Fleet indicators: calendar (holidays, 调休), utilisation, 出车率, org tree, odometer, nights."""

from __future__ import annotations

import datetime as dt
import math

import chinese_calendar
import pytest

from analytics.fleet.geo import Fence
from analytics.fleet.indicators import (
    VehicleInfo,
    WeekdayCalendar,
    WorkingTime,
    fleet_indicator_points,
    org_indicators,
    trip_flags,
    trip_points,
    under_used,
    vehicle_indicators,
)
from analytics.fleet.tracks import Tracks, clean
from analytics.fleet.trips import TripParams, segment
from edge.point import parse_line

ORG_A = "330000/330100/330106/inst-042"
ORG_B = "330000/330100/330106/inst-043"
ORG_C = "330000/330100/330108/inst-007"


def run(tracks, infos, start_ns, end_ns, wt, **kw):
    c = clean(tracks, now_ns=int(tracks.t_ns.max()) + 1)
    seg = segment(c.tracks, TripParams())
    return vehicle_indicators(c.tracks, seg, infos, start_ns, end_ns, wt, **kw), seg.trips


def test_calendar_facts_the_tests_rely_on():
    assert chinese_calendar.is_holiday(dt.date(2025, 10, 1))  # National Day
    assert chinese_calendar.is_workday(dt.date(2025, 10, 11))  # a 调休 working Saturday
    assert dt.date(2025, 10, 11).weekday() == 5
    assert not chinese_calendar.is_workday(dt.date(2025, 10, 18))  # an ordinary Saturday


@pytest.mark.parametrize("day,holiday,weekend,off_hours", [
    ("2025-10-01", True, False, True),    # National Day, a Wednesday
    ("2025-10-04", True, False, True),    # National Day holiday falling on a Saturday
    ("2025-10-11", False, False, False),  # 调休: Saturday worked in exchange for the holiday
    ("2025-10-18", False, True, True),    # ordinary Saturday
    ("2025-10-14", False, False, False),  # ordinary Tuesday
])
def test_trip_day_kind_from_the_chinese_calendar(builder, at, cn_working, day, holiday, weekend, off_hours):
    b = builder(f"{day} 09:50").park(600).drive(1800, 40).park(600)
    _, trips = run(b.tracks(), [VehicleInfo("浙A·12345", ORG_A)], at(day + " 00:00"), at(day + " 23:59"), cn_working)
    f = trip_flags(trips, cn_working)
    assert (bool(f.holiday[0]), bool(f.weekend[0]), bool(f.off_hours[0])) == (holiday, weekend, off_hours)


def test_trip_through_midnight_counts_on_its_first_day_and_is_off_hours(builder, at, cn_working):
    b = builder("2025-10-14 23:30").park(600).drive(50 * 60, 40).park(1800)
    info = [VehicleInfo("v", ORG_A)]
    (d1,), trips = run(b.tracks("v"), info, at("2025-10-14 00:00"), at("2025-10-15 00:00"), cn_working)
    (d2,), _ = run(b.tracks("v"), info, at("2025-10-15 00:00"), at("2025-10-16 00:00"), cn_working)
    assert (d1.trips, d2.trips) == (1, 0)
    assert d1.off_hours_trips == 1 and d1.utilisation == 0.0
    assert d1.driving_h == pytest.approx(50 / 60, abs=15 / 3600)  # ACC trip ends at the ACC-off fix
    # mileage follows the track: 20 minutes before midnight, 30 after
    assert d1.mileage_km == pytest.approx(40 * 20 / 60, rel=0.02)
    assert d2.mileage_km == pytest.approx(40 * 30 / 60, rel=0.02)


def test_utilisation_is_in_use_working_time_over_working_time(builder, at, cn_working):
    b = builder("2025-10-14 08:50").park(600).drive(7200, 30).park(3600).drive(3600, 30).park(600)
    (v,), _ = run(b.tracks("v"), [VehicleInfo("v", ORG_A)], at("2025-10-14 00:00"), at("2025-10-15 00:00"),
                  cn_working)
    assert v.available_h == 9.0  # integer ns of working time, then exact divisions
    assert v.utilisation == pytest.approx(3.0 / 9.0, abs=0.01)


def test_utilisation_on_the_tiaoxiu_saturday_counts_a_working_day(builder, at, cn_working):
    b = builder("2025-10-11 08:50").park(600).drive(9 * 3600, 20).park(600)
    (v,), _ = run(b.tracks("v"), [VehicleInfo("v", ORG_A)], at("2025-10-11 00:00"), at("2025-10-12 00:00"),
                  cn_working)
    # driving 09:00-18:00, of which 09:00-17:30 is working time
    assert v.available_h == 9.0 and v.utilisation == pytest.approx(8.5 / 9.0, abs=0.01)
    assert v.weekend_trips == 0 and v.holiday_trips == 0


def test_dispatch_rate_and_org_tree(builder, at, cn_working):
    day = "2025-10-14"
    parts = [
        builder(f"{day} 09:00").park(600).drive(1800, 40).park(600).tracks("a1"),
        builder(f"{day} 09:00").park(7200).tracks("a2"),  # parked all day
        builder(f"{day} 10:00").park(600).drive(1200, 40).park(600).tracks("b1"),
        builder(f"{day} 10:00").park(600).drive(1200, 40).park(600).tracks("c1"),  # out of service, still drove
    ]
    infos = [VehicleInfo("a1", ORG_A), VehicleInfo("a2", ORG_A), VehicleInfo("b1", ORG_B),
             VehicleInfo("c1", ORG_C, in_service=False)]
    per_v, _ = run(Tracks.concat(parts), infos, at(day + " 00:00"), at("2025-10-15 00:00"), cn_working)
    orgs = {o.org: o for o in org_indicators(per_v)}
    assert orgs[ORG_A].dispatch_rate == pytest.approx(0.5)
    assert orgs["330000/330100/330106"].dispatch_rate == pytest.approx(2 / 3)
    province = orgs["330000"]
    assert (province.vehicles_in_service, province.vehicles_dispatched, province.trips) == (3, 2, 3)
    assert province.dispatch_rate == pytest.approx(2 / 3)
    assert province.mileage_km == pytest.approx(sum(v.mileage_km for v in per_v))
    assert math.isnan(orgs[ORG_C].dispatch_rate)


def test_odometer_trusted_reported_beside_haversine_and_untrusted_left_out(builder, at, cn_working):
    b = builder("2025-10-14 09:00").park(600).drive(3600, 36).park(600)
    tr = b.tracks("v")
    (v,), _ = run(tr, [VehicleInfo("v", ORG_A)], at("2025-10-14 00:00"), at("2025-10-15 00:00"), cn_working)
    assert v.odometer_note == "trusted"
    assert v.odometer_km == pytest.approx(36.0, abs=0.01)
    assert v.mileage_km == pytest.approx(36.0, rel=0.01)
    odo = tr.odometer_km.copy()
    odo[200] = 0.0  # one reading of 0 between good ones: a glitch, left out and noted
    bad = Tracks.single("v", tr.t_ns, tr.lat, tr.lon, tr.speed_kmh, tr.acc, odo)
    (w,), _ = run(bad, [VehicleInfo("v", ORG_A)], at("2025-10-14 00:00"), at("2025-10-15 00:00"), cn_working)
    assert w.odometer_note == "glitch" and w.odometer_km == pytest.approx(36.0, abs=0.01)
    odo = tr.odometer_km.copy()
    odo[200:] += 500.0  # a jump no car can drive: left out, the odometer not trusted, GPS is the headline
    bad = Tracks.single("v", tr.t_ns, tr.lat, tr.lon, tr.speed_kmh, tr.acc, odo)
    (w,), _ = run(bad, [VehicleInfo("v", ORG_A)], at("2025-10-14 00:00"), at("2025-10-15 00:00"), cn_working)
    assert w.odometer_note == "implausible jump" and w.mileage_source == "gps"
    (p,) = fleet_indicator_points([w], [], "day", at("2025-10-14 00:00"))
    assert p.fields["mileage_km"] == pytest.approx(36.0, rel=0.01) and p.fields["mileage_source"] == "gps"


def test_overnight_away_from_home_fence(builder, at, cn_working):
    home = Fence("compound", circle=(30.2741, 120.1551, 300.0))
    stays = builder("2025-10-14 17:00").park(600).drive(600, 30).park(600).drive(600, 30, 270).park(14 * 3600)
    away = builder("2025-10-14 17:00").park(600).drive(600, 30).park(14 * 3600)
    infos = [VehicleInfo("home", ORG_A, home=home), VehicleInfo("away", ORG_A, home=home)]
    per_v, _ = run(Tracks.concat([stays.tracks("home"), away.tracks("away")]), infos, at("2025-10-14 00:00"),
                   at("2025-10-16 00:00"), cn_working)
    assert [v.overnight_away for v in per_v] == [0, 1]


def test_under_used_needs_n_weeks_below_threshold():
    from analytics.fleet.indicators import VehicleIndicators

    def week(vid, use_h):
        return VehicleIndicators(vid, ORG_A, True, 1, 0.0, math.nan, "absent", use_h, 0.0, use_h, use_h, 45.0,
                                 use_h / 45.0, 0, 0, 0, 0)

    weeks = [[week("busy", 30.0), week("idle", 2.0)] for _ in range(4)]
    (u,) = under_used(weeks, threshold=0.2, n_weeks=4)
    assert u.vehicle == "idle" and u.utilisation == pytest.approx(2 / 45)
    assert under_used(weeks[:3], threshold=0.2, n_weeks=4) == []


def test_points_follow_the_shared_schema(builder, at, cn_working):
    b = builder("2025-10-01 09:50").park(600).drive(1800, 40).park(600)
    per_v, trips = run(b.tracks("浙A·12345"), [VehicleInfo("浙A·12345", ORG_A)], at("2025-10-01 00:00"),
                       at("2025-10-02 00:00"), cn_working)
    pts = fleet_indicator_points(per_v, org_indicators(per_v), "day", at("2025-10-01 00:00"))
    v = pts[0]
    assert v.tags == {"scope": "vehicle", "id": "浙A·12345", "org": ORG_A, "period": "day"}
    assert v.fields["trips"] == 1 and v.fields["holiday_trips"] == 1 and v.fields["dispatched"] is True
    assert "utilisation" not in v.fields  # a holiday has no working time
    assert {p.tags["id"] for p in pts if p.tags["scope"] == "org"} >= {"330000", ORG_A}
    (tp,) = trip_points(trips, {"浙A·12345": ORG_A}, cn_working)
    assert tp.time_ns == at("2025-10-01 10:00")
    assert tp.fields["holiday"] is True and tp.fields["off_hours"] is True
    assert tp.fields["distance_km"] == pytest.approx(20.0, rel=1e-3)
    for p in pts + [tp]:
        assert parse_line(p.to_line()) == p


def test_weekday_calendar_fallback_and_workcal_binding(at):
    wt = WorkingTime(WeekdayCalendar(holidays=frozenset({dt.date(2030, 10, 1)})))
    assert wt.day_kind(dt.date(2030, 10, 1)) == "holiday"
    assert wt.day_kind(dt.date(2030, 10, 5)) == "weekend"
    assert wt.is_working(at("2030-10-02 09:00")) and not wt.is_working(at("2030-10-02 18:00"))
    from analytics.workcal import WorkCalendar
    bound = WorkingTime.from_workcal(WorkCalendar("09:00", "18:00"))
    assert (bound.start_min, bound.end_min) == (540, 1080)
    assert bound.calendar.is_workday(dt.date(2025, 10, 11))


def test_new_years_day_2027_is_provisional_until_entered_and_the_points_say_so(builder, at):
    # chinese_calendar ends with 2026: a trip on Friday 2027-01-01 at 10:00 is on a provisional
    # workday (weekends only), flagged, instead of an error that stops the fleet job
    from analytics.workcal import WorkCalendar
    wt = WorkingTime.from_workcal(WorkCalendar())
    assert wt.provisional_between(at("2026-12-31 00:00"), at("2027-01-01 00:00")) is False
    assert wt.provisional_between(at("2026-12-31 00:00"), at("2027-01-01 00:01")) is True
    b = builder("2027-01-01 09:50").park(600).drive(1800, 40).park(600)
    per_v, trips = run(b.tracks("v"), [VehicleInfo("v", ORG_A)], at("2027-01-01 00:00"), at("2027-01-02 00:00"), wt)
    assert per_v[0].holiday_trips == 0 and per_v[0].off_hours_trips == 0
    pts = fleet_indicator_points(per_v, org_indicators(per_v), "day", at("2027-01-01 00:00"),
                                 provisional_calendar=wt.provisional_between(at("2027-01-01 00:00"), at("2027-01-02 00:00")))
    assert all(p.fields["provisional_calendar"] is True for p in pts)
    (tp,) = trip_points(trips, {"v": ORG_A}, wt)
    assert tp.fields["provisional_calendar"] is True and tp.fields["holiday"] is False
    entered = WorkingTime.from_workcal(WorkCalendar(holidays_extra=("2027-01-01",)))
    (tp,) = trip_points(trips, {"v": ORG_A}, entered)
    assert tp.fields["provisional_calendar"] is False and tp.fields["holiday"] is True
