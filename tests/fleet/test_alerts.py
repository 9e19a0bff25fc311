"""Live alerts: a state machine fed fix by fix, as the MQTT stream delivers them."""

from __future__ import annotations

import pytest

from analytics.fleet.alerts import AlertEngine, AlertRules, Fix, fix_from_point
from analytics.fleet.geo import Fence
from analytics.fleet.tracks import NS
from edge.errors import PayloadError
from edge.point import Point, parse_line

ORG = "330000/330100/330106/inst-042"
LAT, LON = 30.2741, 120.1551


def feed(engine, vid, fixes):
    out = []
    for f in fixes:
        out += engine.feed(vid, f)
    return out


def run_at(t0, speeds, step_s=1.0, acc=True, lat=LAT):
    return [Fix(t0 + int(i * step_s * NS), lat + i * 1e-5, LON, s, acc) for i, s in enumerate(speeds)]


@pytest.mark.parametrize("seconds,raised", [(29, 0), (31, 1)])
def test_overspeed_needs_the_grace_time(at, seconds, raised):
    e = AlertEngine(AlertRules(overspeed_kmh=100, overspeed_grace_s=30), orgs={"v": ORG})
    t0 = at("2025-10-14 10:00")
    alerts = feed(e, "v", run_at(t0, [80] * 5 + [120] * (seconds + 1) + [80] * 5))
    assert len(alerts) == raised
    if raised:
        a = alerts[0]
        assert a.kind == "overspeed" and a.org == ORG
        assert a.evidence["max_speed_kmh"] == 120 and a.evidence["duration_s"] == pytest.approx(31)
        assert a.evidence["since_ns"] == t0 + 5 * NS


def test_one_overspeed_alert_per_episode(at):
    e = AlertEngine(AlertRules(overspeed_kmh=100, overspeed_grace_s=10))
    speeds = [120] * 60 + [60] * 10 + [130] * 20
    alerts = feed(e, "v", run_at(at("2025-10-14 10:00"), speeds))
    assert [a.kind for a in alerts] == ["overspeed", "overspeed"]
    assert alerts[1].evidence["max_speed_kmh"] == 130


def test_long_idle_needs_acc_on(at):
    e = AlertEngine(AlertRules(long_idle_s=600))
    t0 = at("2025-10-14 10:00")
    engine_on = [Fix(t0 + i * 30 * NS, LAT, LON, 0.0, True) for i in range(25)]
    (a,) = feed(e, "running", engine_on)
    assert a.kind == "long_idle" and a.evidence["duration_s"] == 600
    parked = [Fix(t0 + i * 30 * NS, LAT, LON, 0.0, False) for i in range(25)]
    assert feed(e, "parked", parked) == []


def test_out_of_hours_movement_once_per_episode(at, cn_working):
    e = AlertEngine(working=cn_working)
    assert feed(e, "v", run_at(at("2025-10-14 10:00"), [40] * 30)) == []  # a working Tuesday
    night = feed(e, "v", run_at(at("2025-10-14 22:00"), [40] * 30))
    assert [a.kind for a in night] == ["out_of_hours"]
    assert night[0].evidence["day"] == "workday"
    more_night = feed(e, "v", run_at(at("2025-10-14 22:10"), [40] * 30))
    assert more_night == []  # same episode: no standing still in between
    holiday = feed(e, "h", run_at(at("2025-10-01 10:00"), [0] * 200 + [40] * 30))
    assert [a.evidence["day"] for a in holiday] == ["holiday"]
    tiaoxiu = feed(e, "s", run_at(at("2025-10-11 10:00"), [40] * 30))
    assert tiaoxiu == []  # 调休 working Saturday


def test_lost_signal_only_for_active_vehicles(at):
    e = AlertEngine(AlertRules(lost_signal_s=900))
    t0 = at("2025-10-14 10:00")
    feed(e, "driving", run_at(t0, [50] * 10, acc=True))
    feed(e, "parked", [Fix(t0, LAT, LON, 0.0, False)])
    assert e.tick(t0 + 600 * NS) == []
    (a,) = e.tick(t0 + 1000 * NS)
    assert a.kind == "lost_signal" and a.vehicle == "driving" and a.evidence["silent_s"] > 900
    assert e.tick(t0 + 2000 * NS) == []  # raised once
    feed(e, "driving", run_at(t0 + 3000 * NS, [50] * 2))
    assert [x.vehicle for x in e.tick(t0 + 4000 * NS)] == ["driving"]  # back, then lost again


def test_geofence_enter_and_leave_first_fix_silent(at):
    gate = Fence("compound", circle=(LAT, LON, 200.0))
    e = AlertEngine(fences=[gate])
    t0 = at("2025-10-14 10:00")
    fixes = [Fix(t0 + i * 10 * NS, LAT + i * 0.001, LON, 40.0, True) for i in range(6)]  # 111 m a fix, outwards
    fixes += [Fix(t0 + (10 + i) * 10 * NS, LAT + (5 - i) * 0.001, LON, 40.0, True) for i in range(6)]
    alerts = feed(e, "v", fixes)
    assert [(a.kind, a.evidence["fence"]) for a in alerts] == [("geofence_leave", "compound"),
                                                               ("geofence_enter", "compound")]


def test_stale_and_invalid_fixes_are_skipped_and_counted(at):
    e = AlertEngine()
    t0 = at("2025-10-14 10:00")
    feed(e, "v", [Fix(t0, LAT, LON, 10.0), Fix(t0 - NS, LAT, LON, 10.0), Fix(t0 + NS, 0.0, 0.0),
                  Fix(t0 + 2 * NS, float("nan"), LON)])
    assert e.skipped == 3
    with pytest.raises(PayloadError):
        fix_from_point(Point("position", {"vehicle": "v"}, {"speed_kmh": 3.0}, t0))
    assert e.feed_point(Point("position", {"vehicle": "v"}, {"speed_kmh": 3.0}, t0 + 5 * NS)) == []
    assert e.skipped == 4


def test_alert_points_keep_evidence(at):
    e = AlertEngine(AlertRules(overspeed_kmh=100, overspeed_grace_s=2), orgs={"浙A·12345": ORG})
    pts = [Point("position", {"vehicle": "浙A·12345", "org": ORG},
                 {"lat": LAT, "lon": LON + i * 1e-4, "speed_kmh": 130.0, "acc": True}, at("2025-10-14 10:00") + i * NS)
           for i in range(5)]
    alerts = [a for p in pts for a in e.feed_point(p)]
    p = alerts[0].to_point()
    assert p.measurement == "alert" and p.tags == {"kind": "overspeed", "vehicle": "浙A·12345", "org": ORG}
    assert p.fields["limit_kmh"] == 100 and "130" in p.fields["message"]
    assert parse_line(p.to_line()) == p
