"""Late data: blind-area backlog is history (kept out of live alerts), the age windows are set per path."""

from __future__ import annotations

import time

import pytest

from analytics.fleet.alerts import AlertEngine, AlertRules
from collector.gps.subscriber import GpsCollector
from edge.config import Mqtt, Topic, Vehicle
from edge.errors import PayloadError
from edge.point import Point
from simulators.payloads import Fix, encode_jt808

NS = 1_000_000_000


def _pos(t_ns: int, backlog: bool = False) -> Point:
    f = {"lat": 30.27, "lon": 120.15, "speed_kmh": 40.0, "acc": True}
    if backlog:
        f["backlog"] = True
    return Point("position", {"vehicle": "car-1", "org": "330000"}, f, t_ns)


def test_backlog_does_not_make_a_returning_vehicle_look_lost():
    """A terminal back from two days in a garage uploads its backlog before its next live report:
    the live alerts must not take the newest backlog fix for the vehicle's present."""
    now = time.time_ns()
    eng = AlertEngine(AlertRules(lost_signal_s=900))
    for k in range(100):
        assert eng.feed_point(_pos(now - 2 * 86400 * NS + k * 30 * NS, backlog=True)) == []
    assert eng.tick(now) == []  # without the rule: "silent for 2 days" while it is connected
    assert eng.skipped == 100
    eng.feed_point(_pos(now))
    assert eng.tick(now + 901 * NS)[0].kind == "lost_signal"  # live fixes still count


def test_terminal_silence_raises_lost_signal_once_per_episode():
    now = time.time_ns()
    eng = AlertEngine(orgs={"car-1": "330000"})
    eng.feed_point(_pos(now))
    [a] = eng.terminal_silent("car-1", now + 200 * NS, 200.0, now)
    assert a.kind == "lost_signal" and a.org == "330000" and a.evidence["source"] == "terminal"
    assert eng.tick(now + 2000 * NS) == []  # the same silence: not raised again by the fix rule


def _mqtt_jt808(max_age_days: float) -> GpsCollector:
    m = Mqtt(broker="mqtt://127.0.0.1:1", topics=(Topic(pattern="gw/+", format="jt808"),), max_age_days=max_age_days)
    return GpsCollector(m, [Vehicle(id="car-1", org="330000", terminal="13800000001")], ingest=None)


@pytest.mark.parametrize("days,ok", [(7, False), (30, True)])
def test_mqtt_age_window_is_configurable(days, ok):
    now = time.time_ns()
    old = (now - 10 * 86400 * NS) // NS * NS
    payload = encode_jt808(Fix("13800000001", old, 30.27, 120.15, 30.0, 90.0, True, 100.0, 30.0, 5.0, 9))
    c = _mqtt_jt808(days)
    if ok:
        [p] = c.decode_message("gw/13800000001", payload, now)
        assert p.tags["vehicle"] == "car-1" and p.time_ns == old
    else:
        with pytest.raises(PayloadError, match="time_too_old"):
            c.decode_message("gw/13800000001", payload, now)
