"""Indicators on hand-computed cases: consumption, kgce, kgCO2, peak, load factor, base load,
off-hours share across the October 2025 holidays, roll-up by org path, changes, quotas, Points.

Where the quarter energies are whole kWh, their sums, maxima, percentiles of equal values and full
coverage are exact in any summation order (any BLAS, any SIMD width) and compare with ==; anything
else (0.1 m3 quarters, factors, ratios) compares with pytest.approx."""

import datetime as dt

import numpy as np
import pytest

from analytics.energy.factors import FIVE_YEAR_TARGETS, Confidence, FactorSet, quota_progress, target_progress
from analytics.energy.indicators import (
    QuarterBlock,
    apply_rollup,
    change,
    compute_indicators,
    month_on_month,
    nan_percentile,
    org_prefixes,
    per_area_and_person,
    rollup_by_building,
    rollup_by_org,
    to_points,
    year_on_year,
)
from analytics.energy.jobs import ArraySource, MeterInfo, compute_energy_range
from analytics.periods import Period


def office_block(cal, workcal, first: dt.date, n_days: int, rows=1, carriers=None, orgs=None):
    """1 kWh every quarter (4 kW), 3 kWh (12 kW) in working quarters."""
    working = workcal.working_quarters(first, n_days)
    q = np.where(working, 3.0, 1.0)[None].repeat(rows, axis=0)
    blk = QuarterBlock(cal.day_of(first), q, np.ones_like(q), [f"m{i}" for i in range(rows)],
                       orgs or ["330000/330100/330106/inst-042"] * rows, carriers or ["electricity"] * rows)
    return blk, working


def test_daily_indicators_on_a_working_saturday(cal, workcal):
    # 2025-10-11 is a Saturday worked in exchange for the National Day holiday (调休)
    blk, working = office_block(cal, workcal, dt.date(2025, 10, 11), 2)
    t = compute_indicators(blk, Period.day, cal, working)
    assert t.starts_ns.tolist() == [cal.midnight_ns(dt.date(2025, 10, 11)), cal.midnight_ns(dt.date(2025, 10, 12))]
    f = {k: v[0].tolist() for k, v in t.fields.items()}
    # Saturday (working): 60 quarters x 1 + 36 x 3 = 168 kWh; Sunday: 96 kWh
    assert f["consumption_kwh"] == [168.0, 96.0]
    assert f["kgce"] == pytest.approx([168 * 0.1229, 96 * 0.1229])
    assert f["kgco2"] == pytest.approx([168 * 0.5617, 96 * 0.5617])
    assert f["peak_kw"] == [12.0, 4.0]
    assert f["load_factor"] == pytest.approx([7.0 / 12.0, 1.0])
    assert f["base_load_kw"] == [4.0, 4.0]
    assert f["off_hours_share"] == pytest.approx([60 / 168, 1.0])
    assert f["coverage"] == [1.0, 1.0]
    assert np.isnan(f["consumption_m3"]).all()


def test_month_across_national_day_and_mid_autumn(cal, workcal):
    blk, working = office_block(cal, workcal, dt.date(2025, 10, 1), 31)
    t = compute_indicators(blk, Period.month, cal, working)
    # 18 workdays x 168 + 13 days off x 96
    assert t.fields["consumption_kwh"][0, 0] == 18 * 168 + 13 * 96 == 4272
    assert t.fields["off_hours_share"][0, 0] == pytest.approx((18 * 60 + 13 * 96) / 4272)
    assert t.fields["peak_kw"][0, 0] == 12.0
    assert t.fields["load_factor"][0, 0] == pytest.approx(4272 / 744 / 12)
    assert t.fields["base_load_kw"][0, 0] == 4.0
    y = compute_indicators(blk, Period.year, cal, working)
    assert y.starts_ns.tolist() == [cal.midnight_ns(dt.date(2025, 1, 1))]
    assert y.fields["consumption_kwh"][0, 0] == 4272
    assert y.fields["coverage"][0, 0] == 1.0   # coverage is of the days in range


def test_base_load_is_5th_percentile_of_night_kw(cal, workcal):
    first = dt.date(2025, 10, 13)
    working = workcal.working_quarters(first, 1)
    q = np.full((1, 1, 96), 2.0)
    q[0, 0, :24] = np.arange(24) / 4.0  # night kW 0..23
    t = compute_indicators(QuarterBlock(cal.day_of(first), q, np.ones_like(q), ["m"], ["o"], ["electricity"]),
                           Period.day, cal, working)
    assert t.fields["base_load_kw"][0, 0] == pytest.approx(np.percentile(np.arange(24.0), 5)) == pytest.approx(1.15)


def test_nan_percentile_matches_numpy():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(5, 40))
    a[1, :7] = np.nan
    a[3] = np.nan
    got = nan_percentile(a, 5)
    with np.errstate(all="ignore"):
        want = np.array([np.percentile(r[~np.isnan(r)], 5) if (~np.isnan(r)).any() else np.nan for r in a])
    assert np.allclose(got, want, equal_nan=True)
    full = rng.normal(size=(3, 4, 24))               # no NaN: the partial-sort path
    assert np.allclose(nan_percentile(full, 5), np.percentile(full, 5, axis=-1))
    assert np.allclose(nan_percentile(full, 50), np.percentile(full, 50, axis=-1))


def test_gap_shows_as_coverage_and_mean_power_uses_covered_hours(cal, workcal):
    first = dt.date(2025, 10, 13)
    blk, working = office_block(cal, workcal, first, 1)
    q = blk.q.copy()
    cov = blk.coverage.copy()
    q[0, 0, :48] = np.nan
    cov[0, 0, :48] = 0.0
    t = compute_indicators(QuarterBlock(blk.first_day, q, cov, blk.ids, blk.orgs, blk.carriers), Period.day, cal,
                           working)
    assert t.fields["coverage"][0, 0] == 0.5
    e = 14 * 3 + 34 * 1  # afternoon: working quarters 48..69 = 22? computed below
    e = float(np.where(working[0, 48:], 3.0, 1.0).sum())
    assert t.fields["consumption_kwh"][0, 0] == e
    assert t.fields["load_factor"][0, 0] == pytest.approx(e / 12 / 12)


def test_org_prefixes_are_segment_wise():
    assert org_prefixes("330000/330100/330106") == ["330000", "330000/330100", "330000/330100/330106"]
    r = rollup_by_org(["330000/330100/330106", "330000/330100/33010"], ["electricity", "electricity"])
    i = r.ids.index("330000/330100/33010")
    assert r.matrix[i].tolist() == [0.0, 1.0]  # 33010 is not a parent of 330106


def test_rollup_peak_is_peak_of_the_sum_and_carriers_stay_apart(cal, workcal):
    first = dt.date(2025, 10, 13)
    working = workcal.working_quarters(first, 1)
    q = np.zeros((3, 1, 96))
    q[0, 0, 40] = 5.0   # 20 kW at 10:00
    q[1, 0, 80] = 5.0   # 20 kW at 20:00
    q[2, 0, :] = 0.1    # water m3
    blk = QuarterBlock(cal.day_of(first), q, np.ones_like(q), ["a", "b", "w"],
                       ["330000/330100/330106/inst-1", "330000/330100/330106/inst-2", "330000/330100/330106/inst-1"],
                       ["electricity", "electricity", "water"])
    org = apply_rollup(blk, rollup_by_org(blk.orgs, blk.carriers))
    t = compute_indicators(org, Period.day, cal, working, scope="org")
    rows = {(i, c): k for k, (i, c) in enumerate(zip(t.ids, t.carriers))}
    top = rows[("330000", "electricity")]
    assert t.fields["consumption_kwh"][top, 0] == 10.0
    assert t.fields["peak_kw"][top, 0] == 20.0           # not 40: the peaks are at different times
    w = rows[("330000", "water")]
    assert t.fields["consumption_m3"][w, 0] == pytest.approx(9.6)
    assert t.fields["kgce"][w, 0] == 0.0
    assert np.isnan(t.fields["peak_kw"][w, 0])
    inst2 = rows[("330000/330100/330106/inst-2", "electricity")]
    assert t.fields["consumption_kwh"][inst2, 0] == 5.0
    b = apply_rollup(blk, rollup_by_building(["b1", "b1", None], blk.orgs, blk.carriers))
    assert b.ids == ["b1"] and b.q.sum() == 10.0


def test_changes():
    assert change(np.array([110.0]), np.array([100.0]))[0] == pytest.approx(0.10)
    assert np.isnan(change(np.array([1.0]), np.array([0.0]))[0])
    mom = month_on_month(np.array([[100.0, 90.0, 99.0]]))
    assert np.isnan(mom[0, 0]) and mom[0, 1:].tolist() == pytest.approx([-0.1, 0.1])
    assert year_on_year(np.array([95.0]), np.array([100.0]))[0] == pytest.approx(-0.05)


def test_factors_and_grid_override():
    f = FactorSet()
    assert f.kgce_per_unit("electricity") == 0.1229
    assert f.kgce_per_unit("heat") == pytest.approx(0.03412 * 3.6)
    assert "gas_kgce_per_m3" in f.unconfirmed()
    g = f.with_grid_factor(0.5366)
    assert g.grid_region == "national-2022" and g.grid_kgco2_per_kwh.confidence is Confidence.confirmed
    h = f.with_grid_factor(0.6)
    assert h.grid_kgco2_per_kwh.value == 0.6 and "grid_kgco2_per_kwh" in h.unconfirmed()


def test_per_area_person_and_targets():
    r = per_area_and_person(kgce_year=175_560.0, kwh_year=700_000.0, water_m3_year=4_000.0, floor_area_m2=10_000.0,
                            occupants=200)
    # each is one correctly rounded division whose exact quotient is the literal: the same double
    assert r == {"kgce_per_m2": 17.556, "kwh_per_m2": 70.0, "kgce_per_person": 877.8, "water_m3_per_person": 20.0}
    p = target_progress("kgce_per_m2", 17.556)
    assert FIVE_YEAR_TARGETS["kgce_per_m2"].target == pytest.approx(17.556)
    assert p.met and p.ratio == pytest.approx(1.0) and p.reduction_vs_baseline == pytest.approx(0.05)
    q = quota_progress("A", 75.0)
    assert not q.met and q.confidence is Confidence.unconfirmed
    # a value exactly at a published target meets it (329.56 x 0.94 is 309.78639999999996 in binary)
    assert all(target_progress(k, float(v)).met for k, v in (("kgce_per_person", "309.7864"),
                                                                ("kgce_per_m2", "17.556"), ("water_m3_per_person", "20.2382")))


def test_points_shape(cal, workcal):
    blk, working = office_block(cal, workcal, dt.date(2025, 10, 11), 1)
    pts = to_points([compute_indicators(blk, Period.day, cal, working)])
    assert len(pts) == 1
    p = pts[0]
    assert p.measurement == "energy_indicator"
    assert p.tags == {"scope": "meter", "id": "m0", "org": "330000/330100/330106/inst-042", "period": "day",
                      "carrier": "electricity"}
    assert p.time_ns == cal.midnight_ns(dt.date(2025, 10, 11))
    assert p.fields["consumption_kwh"] == 168.0 and "consumption_m3" not in p.fields
    assert p.fields["factor_set"] == "default"
    assert p.to_line().startswith("energy_indicator,carrier=electricity,id=m0,")


def test_job_from_counter_readings_with_wrap_and_shanghai_midnight(cal):
    """End to end through the CounterSource protocol: readings every 15 min in UTC, days cut at
    local midnight, a register wrap in the middle."""
    roll = 1000.0
    start = cal.midnight_ns(dt.date(2025, 10, 13)) - 900 * 10**9
    t = start + np.arange(2 * 96 + 3, dtype=np.int64) * 900 * 10**9
    v = (990.0 + np.arange(t.size) * 0.5) % roll     # 2 kW, wraps after 20 readings
    src = ArraySource({("m1", "active_energy_import_kwh"): (t, v)})
    from analytics.energy.counters import CounterSpec
    rep = compute_energy_range(src, [MeterInfo("m1", "330000/330100", spec=CounterSpec(rollover=roll))],
                               dt.date(2025, 10, 13), dt.date(2025, 10, 14))
    day = next(x for x in rep.tables if x.scope == "meter" and x.period is Period.day)
    assert day.fields["consumption_kwh"][0].tolist() == pytest.approx([48.0, 48.0])
    assert day.fields["coverage"][0].tolist() == [1.0, 1.0]   # exact: whole-second ns times are exact in a double
    assert [e.kind for _, e in rep.events] == ["wrap"]
    org = [p for p in rep.points if p.tags["scope"] == "org" and p.tags["period"] == "day"]
    assert {p.tags["id"] for p in org} == {"330000", "330000/330100"}
    assert all(p.time_ns in (cal.midnight_ns(dt.date(2025, 10, 13)), cal.midnight_ns(dt.date(2025, 10, 14)))
               for p in org)


def test_daily_consumption_shortcut_equals_indicator_consumption(cal, workcal):
    from analytics.energy.counters import CounterSpec
    from analytics.energy.indicators import block_from_counters, daily_consumption

    first = dt.date(2025, 10, 1)
    fd = cal.day_of(first)
    t = cal.midnight_ns(first) + np.arange(3 * 96 + 1, dtype=np.int64) * 900 * 10**9
    rng = np.random.default_rng(0)
    v = 100 + np.cumsum(rng.uniform(0, 2, (4, t.size)), axis=1)
    v[rng.random(v.shape) < 0.05] = np.nan
    v[2, 100:] -= 50
    blk, _ = block_from_counters(t, v, CounterSpec(), cal, fd, 3, list("abcd"), ["o"] * 4, ["electricity"] * 4)
    ind = compute_indicators(blk, Period.day, cal, workcal.working_quarters(first, 3))
    got, cov = daily_consumption(t, v, CounterSpec(), cal, fd, 3)
    assert np.allclose(got, ind.fields["consumption_kwh"], equal_nan=True)
    assert np.allclose(cov, ind.fields["coverage"])


def test_baseline_job_through_the_counter_source(cal):
    """A year of hourly-ish counters with a heating load, then a reporting month 20 % lower."""
    from analytics.energy.baseline import f_to_c
    from analytics.energy.jobs import compute_baselines

    first = dt.date(2024, 1, 1)
    n_days = 366 + 31
    rng = np.random.default_rng(3)
    temp_day = 16 - 12 * np.cos(2 * np.pi * (np.arange(n_days) - 15) / 365) + rng.normal(0, 2, n_days)
    kwh_day = 300 + 12 * np.maximum(f_to_c(60) - temp_day, 0) + rng.normal(0, 5, n_days)
    kwh_day[366:] *= 0.8
    t = cal.midnight_ns(first) + np.arange(n_days * 96 + 1, dtype=np.int64) * 900 * 10**9
    v = np.r_[0.0, np.cumsum(np.repeat(kwh_day / 96, 96))]
    temp_t = cal.midnight_ns(first) + np.arange(n_days * 24, dtype=np.int64) * 3600 * 10**9
    temp_v = np.repeat(temp_day, 24)
    src = ArraySource({("m1", "active_energy_import_kwh"): (t, v)})
    rep = compute_baselines(src, [MeterInfo("m1", "330000")], (first, dt.date(2024, 12, 31)),
                            (dt.date(2025, 1, 1), dt.date(2025, 1, 31)), temp_t, temp_v)
    model = rep.models["m1"]
    assert model.model_type == "hdd_only" and model.g14_ok and model.sufficient
    assert rep.savings["m1"].fraction == pytest.approx(0.2, abs=0.02)
    assert len(rep.anomalies) > 20       # a 20 % drop puts most reporting days below the interval


def test_scheduler_days_closed_at_shanghai_midnight_and_late_data(cal):
    from analytics.energy.jobs import days_to_compute

    # 2025-10-02 00:20 local = 2025-10-01 16:20 UTC: Oct 1 closed (settled 15 min after midnight)
    now = cal.midnight_ns(dt.date(2025, 10, 2)) + 20 * 60 * 10**9
    assert days_to_compute(now, dt.date(2025, 9, 29)) == [dt.date(2025, 9, 30), dt.date(2025, 10, 1)]
    early = cal.midnight_ns(dt.date(2025, 10, 2)) + 10 * 60 * 10**9
    assert days_to_compute(early, dt.date(2025, 9, 30)) == []
    late = [cal.midnight_ns(dt.date(2025, 9, 20)) + 5, now]      # one late reading for Sep 20, one for today
    assert days_to_compute(now, dt.date(2025, 10, 1), late) == [dt.date(2025, 9, 20)]
    assert days_to_compute(now, None, backfill_days=2) == [dt.date(2025, 9, 30), dt.date(2025, 10, 1)]
