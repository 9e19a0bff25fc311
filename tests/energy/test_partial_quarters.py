"""Regressions: energy measured inside partly covered quarters is counted, never dropped."""

import datetime as dt

import numpy as np
import pytest

from analytics.energy.jobs import ArraySource, MeterInfo, compute_energy_range
from analytics.periods import LocalCalendar, Period

CAL = LocalCalendar()
DAY = dt.date(2026, 11, 25)


def _today(span_s: float, step_s: float = 2.0):
    t0 = CAL.midnight_ns(DAY) + int((21.5 * 3600 + 100) * 1e9)  # 21:31:40 local, inside a quarter
    t = t0 + (np.arange(0, span_s, step_s) * 1e9).astype(np.int64)
    v = 100 + np.arange(len(t)) * 0.01
    src = ArraySource()
    src.data[("m1", "active_energy_import_kwh")] = (t, v)
    rep = compute_energy_range(src, [MeterInfo("m1", "330000")], DAY, DAY, periods=(Period.day,))
    return next(p for p in rep.points if p.tags["scope"] == "meter"), (len(t) - 1) * 0.01


def test_readings_all_inside_one_quarter_still_count():
    """A 20-second demo run: no quarter boundary between the readings."""
    p, expected = _today(20)
    assert p.fields["consumption_kwh"] == pytest.approx(expected)
    assert 0 < p.fields["coverage"] < 0.001


@pytest.mark.parametrize("span_s", [2400, 7200])
def test_first_partial_quarter_counted_when_readings_are_thinned_to_the_grid(span_s):
    p, expected = _today(span_s)
    assert p.fields["consumption_kwh"] == pytest.approx(expected)


def test_load_factor_of_a_partly_read_day_stays_within_one():
    """Regression: the demo showed load_factor 32 when peak used a partial quarter's kWh x 4."""
    p, _ = _today(2400)
    assert p.fields["peak_kw"] == pytest.approx(18.0)  # 0.01 kWh every 2 s
    assert 0 < p.fields["load_factor"] <= 1.0 + 1e-9


def test_a_few_seconds_of_data_give_energy_but_no_demand_figure():
    p, expected = _today(20)
    assert p.fields["consumption_kwh"] == pytest.approx(expected)
    assert "peak_kw" not in p.fields and "load_factor" not in p.fields
