"""The terminal's odometer: resets, rollovers, glitches, jumps, and the GPS comparison."""

from __future__ import annotations

import numpy as np
import pytest

from analytics.fleet.odometer import OdometerParams, differ, odometer_steps, spans
from analytics.fleet.tracks import NS, Tracks

T0 = 1_760_400_000 * NS


def track(odo, step_s=60):
    n = len(odo)
    return Tracks.single("v", T0 + np.arange(n) * step_s * NS, np.full(n, 30.27), np.full(n, 120.15),
                         odometer_km=np.asarray(odo, dtype=float))


def total(tr):
    s = spans(odometer_steps(tr), tr.t_ns, np.array([0]), np.array([len(tr) - 1]))
    return float(s.km[0]), s.notes()[0]


def test_a_reset_restarts_the_counter_and_subtracts_nothing():
    km, note = total(track([5000.0, 5000.5, 5001.0, 0.0, 0.5, 1.0]))
    assert km == pytest.approx(2.0) and note == "reset"


@pytest.mark.parametrize("top", [999_999.9, 429_496_729.5])
def test_a_rollover_counts_through_the_top(top):
    km, note = total(track([top - 0.5, top - 0.1, 0.3, 0.8]))
    assert km == pytest.approx(0.5 + 0.1 + 0.8, abs=0.11) and note == "rollover"


def test_an_implausible_jump_is_left_out_and_untrusted():
    tr = track([100.0, 100.5, 900.0, 900.5])
    s = spans(odometer_steps(tr), tr.t_ns, np.array([0]), np.array([3]))
    assert s.km[0] == pytest.approx(1.0) and s.notes() == ["implausible jump"] and not s.trusted[0]


def test_gps_and_odometer_differ_beyond_5_pct_and_the_resolution():
    p = OdometerParams()
    assert differ(10.6, 10.0, p) and not differ(10.4, 10.0, p)
    assert not differ(1.15, 1.0, p)  # 15 % of a short trip is within the 0.2 km floor
    assert not differ(np.nan, 10.0, p)


def test_vehicles_without_fixes_in_a_window_get_an_absent_odometer_not_an_index_error():
    """Regression (seen in the HAProxy two-edge test): an edge whose share of the fleet had no fix
    today asked spans() for rows 0..0 of empty tracks and crashed the indicator pass."""
    empty = Tracks.single("v", np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0), odometer_km=np.zeros(0))
    s = spans(odometer_steps(empty), empty.t_ns, np.array([0, 0]), np.array([0, 0]))
    assert np.isnan(s.km).all() and list(s.readings) == [0, 0] and s.notes() == ["absent", "absent"]
