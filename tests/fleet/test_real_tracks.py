"""Real vehicle tracks (tests/fleet/data, SOURCES.md): distance against a careful reference,
plausible top speeds, and the issue's faults injected into them with the clean track as reference.

The evaluation lives in bench/fleet.py (it also produces the bench figures); here it is held to
the issue's goals: every ride within 2 % of the hand-reviewed reference, no car trip above
150 km/h, at least 99 % of every kind of injected fault kept out of mileage.
"""

from __future__ import annotations

import pytest

from bench.fleet import FAULTS, injected_fault_results, real_track_results

pytest.importorskip("pyproj")


@pytest.fixture(scope="module")
def rides():
    return real_track_results()


def test_car_rides_are_within_2_pct_of_the_careful_reference(rides):
    cars = [r for r in rides if r["mode"] == "car"]
    assert len(cars) >= 8
    for r in cars:
        assert abs(r["error_pct"]) <= 2.0, r


def test_bus_rides_are_within_2_pct_of_the_careful_reference(rides):
    # before: 4.54 % short on ride 26, which moves at a steady 4-5 km/h for 6 minutes (under 200 m
    # in 3 min) inside its drive: that crawl was taken for stops (SOURCES.md: bus or walk)
    buses = [r for r in rides if r["mode"] == "bus"]
    assert len(buses) >= 4
    for r in buses:
        assert abs(r["error_pct"]) <= 2.0, r


def test_no_car_trip_reports_an_implausible_top_speed(rides):
    # before: lone multipath fixes and late timestamps on these rides gave 153-299 km/h
    for r in (r for r in rides if r["mode"] == "car"):
        assert r["top_speed_kmh"] <= 150.0, r


@pytest.fixture(scope="module")
def faults():
    return injected_fault_results()


# before: the drift cloud kept 1.2 % (the sliding window split it into stays trimmed around one
# drifting fix each, so the approach and departure took up drift)
@pytest.mark.parametrize("kind,goal_pct", [("run1", 99.9), ("run2", 99.9), ("run3", 99.9), ("near2", 99.0),
                                           ("cold", 99.0), ("jitter", 99.0), ("cloud", 99.0)])
def test_injected_faults_stay_out_of_mileage(faults, kind, goal_pct):
    fs = [f for f in faults if f["fault"] == kind]
    assert kind in FAULTS and len(fs) >= 10
    spurious = sum(f["spurious_km"] for f in fs)
    kept = sum(f["kept_km"] for f in fs)
    assert spurious > 0
    assert 100 * (1 - kept / spurious) >= goal_pct
