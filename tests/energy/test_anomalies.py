"""Anomaly rules with their evidence."""

import numpy as np

from analytics.energy.anomalies import baseline_anomalies, counter_anomalies, night_load_anomalies
from analytics.energy.baseline import f_to_c, fit_daily_models
from analytics.energy.counters import CounterSpec, counter_deltas

H = 3600 * 10**9
D = 24 * H


def test_day_outside_prediction_interval():
    rng = np.random.default_rng(0)
    t = 16 - 12 * np.cos(2 * np.pi * np.arange(365) / 365) + rng.normal(0, 3, 365)
    y = 400 + 15 * np.maximum(f_to_c(58) - t, 0) + rng.normal(0, 10, 365)
    m = fit_daily_models(y, t)[0]
    rep = m.predict(t[:10]).copy()
    rep[4] += 200  # 20 sigma
    starts = np.arange(10) * D
    out = baseline_anomalies("m1", m, starts, rep, t[:10])
    assert [a.start_ns for a in out] == [4 * D]
    ev = out[0].evidence
    assert out[0].rule == "outside_prediction_interval" and ev["actual"] > ev["upper"] > ev["predicted"]


def test_night_and_holiday_load_above_base():
    q = np.full((3, 96), 1.0)      # 4 kW all day
    q[1, :24] = 3.0                # 12 kW at night on day 1 (a workday)
    q[2, :] = 2.5                  # 10 kW all day on a holiday
    out = night_load_anomalies("m1", np.arange(3) * D, q, np.array([True, True, False]), base_load_kw=4.0)
    assert [(a.rule, a.start_ns) for a in out] == [("night_load_above_base", D), ("holiday_load_above_base", 2 * D)]
    # the limit is the rule's own expression; the mean of 24 quarters of 3 kWh is exact
    assert out[0].evidence["limit_kw"] == 4.0 * 1.5 + 1.0 and out[0].evidence["mean_kw"] == 12.0
    assert out[0].end_ns == D + 6 * H


def test_stalled_and_jumping_counter():
    t = np.arange(60, dtype=np.int64) * H
    v = np.r_[np.arange(10.0), np.full(30, 9.0), 9.0 + np.arange(1, 21) * 1.0]
    v[50:] += 500.0                 # a jump that stays (a single reading off would be a glitch, dropped)
    v[55:] -= 300.0                 # a step back to a middle value: a reset
    spec = CounterSpec(rated_kw=10.0, max_gap_s=7200)
    d = counter_deltas(t, v, spec)
    out = counter_anomalies("m1", d, v, spec, stall_hours=24)
    rules = [a.rule for a in out]
    assert "counter_stalled" in rules and "counter_jump" in rules and "counter_reset" in rules
    st = next(a for a in out if a.rule == "counter_stalled")
    assert st.start_ns == 9 * H and st.end_ns == 39 * H and st.evidence["hours"] == 30.0
    j = next(a for a in out if a.rule == "counter_jump")
    assert j.evidence["after"] - j.evidence["before"] == 501.0 and j.evidence["counted"] == 0.0
