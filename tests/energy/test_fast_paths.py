"""The vectorised paths (the 1,000-meter benchmark's) against plain, obviously correct references:
day aggregates with unknown and partly covered quarters, the roll-up's run path against its
sparse path, interval lengths built on demand, a reused delta buffer, and baselines fitted for
many meters with different missing days against each meter fitted alone."""

import datetime as dt
import warnings

import numpy as np
import pytest

from analytics.energy.baseline import fit_daily_models
from analytics.energy.counters import CounterSpec, bin_energy, counter_deltas
from analytics.energy.indicators import QuarterBlock, apply_rollup, compute_indicators, rollup_by_org
from analytics.periods import Period

Q = 900 * 10**9


def messy_block(cal, seed: int, rows: int = 9, n_days: int = 40, cov_dtype=np.float32):
    rng = np.random.default_rng(seed)
    q = rng.exponential(1.0, (rows, n_days, 96))
    q[rng.random(q.shape) < 0.01] = np.nan           # unknown quarters
    q[1, :3] = np.nan                                # whole unknown days
    q[2] = np.nan                                    # a silent meter
    cov = np.ones(q.shape, dtype=cov_dtype)
    part = rng.random(q.shape) < 0.03
    cov[part] = rng.choice([0.0, 0.1, 0.5, 0.9], part.sum())   # partly covered quarters
    cov[3, :, 2] = 0.15                              # a night quarter never covered enough
    orgs = [f"330000/33010{r // 4}/inst-{r // 2}" for r in range(rows)]
    blk = QuarterBlock(cal.day_of(dt.date(2025, 3, 1)), q, cov, [f"m{r}" for r in range(rows)], orgs,
                       ["electricity"] * rows)
    return blk


def reference_day(q, cov, off, night, pct):
    """The definitions, one quarter at a time (numpy's nan-functions)."""
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        known = ~np.isnan(q)
        cons = np.where(known.any(axis=2), np.nansum(q, axis=2), np.nan)
        power = np.where(cov >= 0.2, q / cov, np.nan)
        peak = np.nanmax(power, axis=2) * 4
        base = np.nanpercentile(power[:, :, night], pct, axis=2) * 4
        off_kwh = np.nansum(q * off[None], axis=2)
        cov_q = cov.astype(np.float64).sum(axis=2)
    return {"consumption_kwh": cons, "peak_kw": peak, "base_load_kw": base,
            "off_hours_share": np.where(cons != 0, off_kwh / cons, np.nan), "coverage": cov_q / 96,
            "load_factor": (cons / (cov_q / 4)) / peak}


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("night", [np.arange(0, 24), np.array([0, 1, 2, 94, 95])])
@pytest.mark.parametrize("cov_dtype", [np.float32, np.float64])
def test_day_indicators_equal_the_definitions(cal, workcal, seed, night, cov_dtype):
    blk = messy_block(cal, seed, cov_dtype=cov_dtype)
    working = workcal.working_quarters(dt.date(2025, 3, 1), blk.n_days)
    got = compute_indicators(blk, Period.day, cal, working, night_quarters=night)
    want = reference_day(blk.q, blk.coverage, ~working, night, 5.0)
    for k, w in want.items():
        g = got.fields[k]
        # coverage is summed in its own dtype (float32 for meters): exact to float32 only
        rtol = 1e-6 if k in ("coverage", "load_factor") and cov_dtype is np.float32 else 1e-12
        assert np.array_equal(np.isnan(g), np.isnan(w) | ~np.isfinite(w)), k
        assert np.allclose(g[np.isfinite(g)], w[np.isfinite(g)], rtol=rtol, atol=0), k


@pytest.mark.parametrize("seed", range(3))
def test_rollup_run_path_equals_sparse_path(cal, seed, monkeypatch):
    import analytics.energy.indicators as energy

    used = []
    run_path = energy._apply_rollup_runs
    monkeypatch.setattr(energy, "_apply_rollup_runs", lambda *a: used.append(1) or run_path(*a))
    blk = messy_block(cal, seed, rows=12)
    ro = rollup_by_org(blk.orgs, blk.carriers)
    runs = apply_rollup(blk, ro)                     # rows listed by institution: the run path
    assert used == [1]
    perm = np.random.default_rng(seed).permutation(len(blk.ids))
    perm = np.r_[perm[perm % 2 == 0], perm[perm % 2 == 1]]
    shuffled = QuarterBlock(blk.first_day, blk.q[perm], blk.coverage[perm], [blk.ids[i] for i in perm],
                            [blk.orgs[i] for i in perm], [blk.carriers[i] for i in perm])
    ro2 = rollup_by_org(shuffled.orgs, shuffled.carriers)
    sparse = apply_rollup(shuffled, ro2)             # interleaved rows: the sparse product
    assert used == [1]
    order = [ro2.ids.index(i) for i in ro.ids]
    assert np.array_equal(np.isnan(runs.q), np.isnan(sparse.q[order]))
    assert np.allclose(runs.q, sparse.q[order], rtol=1e-13, equal_nan=True)
    assert np.allclose(runs.coverage, sparse.coverage[order], rtol=1e-13, equal_nan=True)
    # and both against the definition: members' sum, unknown only where every member is
    members = ro.matrix > 0
    for g in range(len(ro.ids)):
        sub = blk.q[members[g]]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            want = np.where(np.isnan(sub).all(axis=0), np.nan, np.nansum(sub, axis=0))
        assert np.allclose(runs.q[g], want, rtol=1e-12, equal_nan=True)


def test_interval_lengths_on_demand_and_a_reused_buffer():
    rng = np.random.default_rng(3)
    n, m = 200, 5
    t = np.cumsum(rng.choice([900, 900, 1800, 7200], n)).astype(np.int64) * 10**9
    v = 100.0 + np.cumsum(rng.exponential(1.0, (m, n)), axis=1)
    v[rng.random((m, n)) < 0.1] = np.nan
    v[1, :7] = np.nan
    spec = CounterSpec(rated_kw=10.0, max_gap_s=3600)
    d = counter_deltas(t, v, spec)
    for r in range(m):                               # time since the previous valid reading
        want = np.zeros(n, dtype=np.int64)
        last = None
        for j in range(n):
            if np.isnan(v[r, j]):
                continue
            if last is not None:
                want[j] = t[j] - t[last]
            last = j
        assert np.array_equal(d.dt_ns[r], want)
    buf = np.full((m, n), 7.0)
    d2 = counter_deltas(t, v, spec, out=buf)
    assert d2.delta is buf and np.array_equal(d2.delta, d.delta) and np.array_equal(d2.status, d.status)
    assert [e for e in d2.events(v, spec)] == [e for e in d.events(v, spec)]
    with pytest.raises(ValueError):
        counter_deltas(t, v, spec, out=np.empty((m, n - 1)))
    ta = np.arange(n, dtype=np.int64) * Q
    a, b = bin_energy(counter_deltas(ta, v, spec), 0, n - 1), bin_energy(counter_deltas(ta, v, spec), 0, n - 1,
                                                                          aligned_fast_path=False)
    assert np.allclose(a.energy, b.energy, equal_nan=True) and np.allclose(a.coverage, b.coverage)


def test_baselines_with_different_missing_days_equal_each_meter_alone():
    rng = np.random.default_rng(5)
    nd = 365
    temp = 17 - 11 * np.cos(2 * np.pi * (np.arange(nd) - 20) / 365) + rng.normal(0, 2.5, nd)
    y = (200 + rng.uniform(5, 20, (8, 1)) * np.maximum(12 - temp, 0) + rng.uniform(5, 30, (8, 1))
         * np.maximum(temp - 22, 0) + rng.normal(0, 20, (8, nd)))
    y[1, 10:20] = np.nan                              # meters with their own missing days
    y[2, 100:104] = np.nan
    y[3, 10:20] = np.nan                              # the same pattern as meter 1
    y[4] = 300 + rng.normal(0, 5, nd)                 # no weather dependence
    together = fit_daily_models(y, temp)
    for r in range(y.shape[0]):
        alone = fit_daily_models(y[r], temp)[0]
        m = together[r]
        assert m.model_type == alone.model_type and m.n == alone.n
        for f in ("intercept", "beta_hdd", "beta_cdd", "r2", "cvrmse"):
            assert getattr(m, f) == pytest.approx(getattr(alone, f), rel=1e-9, abs=1e-9), (r, f)
        assert np.array_equal(m.hdd_bp_c, alone.hdd_bp_c, equal_nan=True)
        assert np.array_equal(m.cdd_bp_c, alone.cdd_bp_c, equal_nan=True)
