"""Counter deltas: wrap, reset, backstep, jump, gaps; binning never invents energy.

Hand-made readings have few significant bits (steps of 0.5 kWh and the like), so their deltas, and bins
that sit on readings, are exact and compare with ==; a bin interpolated between readings carries the
round-off of slope x time and compares with a tolerance."""

import numpy as np
import pytest

from analytics.energy.counters import CounterSpec, GapPolicy, Status, bin_energy, counter_deltas

Q = 900 * 10**9
ROLL = 42949672.96  # uint32 raw x 0.01 kWh


def test_plain_deltas_sum_to_last_minus_first():
    t = np.arange(5) * Q
    v = np.array([100.0, 101.0, 102.5, 104.0, 105.0])
    d = counter_deltas(t, v)
    assert d.delta.tolist() == [0.0, 1.0, 1.5, 1.5, 1.0]
    assert d.status.tolist() == [Status.none, Status.ok, Status.ok, Status.ok, Status.ok]
    b = bin_energy(d, 0, 4)
    assert b.energy.tolist() == [1.0, 1.5, 1.5, 1.0]
    assert b.coverage.tolist() == [1.0, 1.0, 1.0, 1.0]


def test_counter_wrap_at_uint32_rollover():
    t = np.arange(4) * Q
    v = np.array([ROLL - 3.0, ROLL - 1.0, 1.5, 3.5])
    d = counter_deltas(t, v, CounterSpec(rollover=ROLL))
    assert d.status[2] == Status.wrap
    # hand: (ROLL - (ROLL-1)) + 1.5 = 2.5
    assert d.delta[1:] == pytest.approx([2.0, 2.5, 2.0], abs=1e-6)
    ev = d.events(v, CounterSpec(rollover=ROLL))
    assert [e.kind for e in ev] == ["wrap"] and ev[0].before == ROLL - 1.0 and ev[0].after == 1.5


def test_meter_replaced_starts_new_segment_and_counts_nothing_unknown_across_it():
    t = np.arange(5) * Q
    v = np.array([5000.0, 5002.0, 3.0, 5.0, 6.0])  # replaced by a meter starting at 0, read at 3
    spec = CounterSpec(rollover=ROLL)
    d = counter_deltas(t, v, spec)
    assert d.status[2] == Status.replaced
    # no rating: nothing bounds what the new meter says it counted, so the interval counts 0
    assert d.delta.tolist() == [0.0, 2.0, 0.0, 2.0, 1.0]
    b = bin_energy(d, 0, 4)
    assert np.nansum(b.energy) == pytest.approx(5.0)
    assert b.coverage.tolist() == [1.0, 0.0, 1.0, 1.0]  # the replacement's interval is visibly uncovered
    assert [e.kind for e in d.events(v, spec)] == ["replaced"]
    # with a rating (40 kW: at most 15 kWh in 15 min) the new meter's 3 kWh since zero are counted
    rated = CounterSpec(rollover=ROLL, rated_kw=40.0)
    d = counter_deltas(t, v, rated)
    assert d.status[2] == Status.replaced and d.delta.tolist() == [0.0, 2.0, 3.0, 2.0, 1.0]
    assert "new reading counted" in d.events(v, rated)[0].rule


def test_negative_step_to_a_middle_value_is_a_reset_counting_nothing():
    d = counter_deltas(np.arange(3) * Q, np.array([5000.0, 3000.0, 3001.0]), CounterSpec(rated_kw=40.0))
    assert d.status[1] == Status.reset and d.delta.tolist() == [0.0, 0.0, 1.0]


def test_negative_step_without_rollover_is_not_a_wrap():
    d = counter_deltas(np.arange(3) * Q, np.array([ROLL - 1, 2.0, 3.0]))
    assert d.status[1] == Status.replaced


def test_small_backstep_counts_zero_and_holds_the_counter():
    d = counter_deltas(np.arange(3) * Q, np.array([10.0, 9.99, 11.0]))
    assert d.status[1] == Status.backstep
    # the re-read 9.99 is noise: from 10 to 11 is 1 kWh, not 1.01
    assert d.delta.tolist() == [0.0, 0.0, pytest.approx(1.0, abs=1e-12)]
    run = counter_deltas(np.arange(5) * Q, np.array([10.0, 9.99, 9.97, 10.5, 11.0]))
    assert run.status.tolist()[1:3] == [Status.backstep, Status.backstep]
    assert run.delta.sum() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("garbage", [4294967.295, 0.0, 1.0e9])
@pytest.mark.parametrize("rated", [None, 40.0])
def test_one_reading_out_of_line_is_dropped(garbage, rated):
    """A communication glitch decoding garbage: one reading far off, its neighbours agree."""
    t = np.arange(6) * Q
    v = np.array([5000.0, 5002.0, garbage, 5006.0, 5008.0, 5010.0])
    spec = CounterSpec(rollover=429496729.6, rated_kw=rated)
    d = counter_deltas(t, v, spec)
    assert d.delta.sum() == pytest.approx(10.0)          # never a giant or negative consumption
    assert d.delta[3] == pytest.approx(4.0)              # the interval across the dropped reading
    ev = d.events(v, spec)
    assert [e.kind for e in ev] == ["glitch"]
    assert ev[0].after == garbage and ev[0].before == 5002.0 and "dropped" in ev[0].rule


def test_implausible_jump_flagged_against_rated_power():
    # 100 kW rated: at most 25 kWh in 15 min, x1.5 margin = 37.5 kWh
    t = np.arange(4) * Q
    v = np.array([0.0, 20.0, 1020.0, 1030.0])
    spec = CounterSpec(rated_kw=100.0)
    d = counter_deltas(t, v, spec)
    assert d.status.tolist()[1:] == [Status.ok, Status.jump, Status.ok]
    assert d.delta.tolist() == [0.0, 20.0, 0.0, 10.0]
    kept = counter_deltas(t, v, CounterSpec(rated_kw=100.0, keep_jumps=True))
    assert kept.delta[2] == 1000.0 and kept.status[2] == Status.jump


def test_gap_is_reported_and_spread_without_inventing_energy():
    # readings at 0, 15 min, then nothing until 75 min: 4 quarters without readings
    t = np.array([0, 1, 5, 6]) * Q
    v = np.array([0.0, 1.0, 9.0, 10.0])
    spec = CounterSpec(max_gap_s=1800)
    d = counter_deltas(t, v, spec)
    assert d.gap.tolist() == [False, False, True, False]
    spread = bin_energy(d, 0, 6)
    assert spread.energy.tolist() == pytest.approx([1.0, 2.0, 2.0, 2.0, 2.0, 1.0], rel=1e-12)  # interpolated
    assert spread.coverage.tolist() == [1.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    last = bin_energy(d, 0, 6, gap_policy=GapPolicy.last_bin)
    assert last.energy.tolist() == [1.0, 0.0, 0.0, 0.0, 8.0, 1.0]
    assert [e.kind for e in d.events(v, spec)] == ["gap"]


def test_missing_readings_in_a_block_and_no_extrapolation():
    t = np.arange(5) * Q
    v = np.array([[0.0, 1.0, np.nan, 3.0, 4.0],
                  [np.nan, 10.0, 12.0, 14.0, np.nan]])
    d = counter_deltas(t, v)
    b = bin_energy(d, 0, 4)
    assert b.energy[0].tolist() == [1.0, 1.0, 1.0, 1.0]     # 1->3 over 30 min split evenly
    assert np.isnan(b.energy[1, 0]) and np.isnan(b.energy[1, 3])  # before first / after last reading
    assert b.energy[1, 1:3].tolist() == [2.0, 2.0]


def test_bin_split_in_proportion_to_time():
    # readings every 10 min across 15-min bins
    t = np.array([0, 600, 1200, 1800]) * 10**9
    v = np.array([0.0, 1.0, 2.0, 3.0])
    b = bin_energy(counter_deltas(t, v), 0, 2)
    assert b.energy.tolist() == pytest.approx([1.5, 1.5])


def test_unsorted_times_refused():
    with pytest.raises(ValueError):
        counter_deltas(np.array([0, 2, 1]), np.array([0.0, 1.0, 2.0]))


def reference_deltas(t, v, spec):
    """Plain loop, one reading at a time: the rules as the docstring states them."""
    tol = spec.backstep_tolerance

    def classify(v):
        delta = np.zeros_like(v)
        status = np.zeros(v.shape, dtype=np.int8)
        gap = np.zeros(v.shape, dtype=bool)
        for r in range(v.shape[0]):
            p = None
            carry = 0.0
            for j in range(v.shape[1]):
                if np.isnan(v[r, j]):
                    continue
                if p is not None:
                    d = v[r, j] - v[r, p]
                    dt_h = (t[j] - t[p]) / 3.6e12
                    st, c = Status.ok, d
                    if d < 0:
                        if d >= -tol:
                            st, c = Status.backstep, 0.0
                        elif (spec.rollover is not None and v[r, p] >= (1 - spec.wrap_zone) * spec.rollover
                              and v[r, j] <= spec.wrap_zone * spec.rollover):
                            st, c = Status.wrap, spec.rollover - v[r, p] + v[r, j]
                        elif spec.rated_kw is not None and 0 <= v[r, j] <= spec.rated_kw * dt_h * spec.jump_margin + tol:
                            st, c = Status.replaced, v[r, j]
                        elif spec.rated_kw is None and 0 <= v[r, j] <= spec.restart_zone * v[r, p]:
                            st, c = Status.replaced, 0.0
                        else:
                            st, c = Status.reset, 0.0
                    if (spec.rated_kw is not None and st in (Status.ok, Status.wrap)
                            and c > spec.rated_kw * dt_h * spec.jump_margin + tol):
                        st, c = Status.jump, (c if spec.keep_jumps else 0.0)
                    if st == Status.backstep:
                        carry += d
                    elif st == Status.ok:
                        c, carry = max(0.0, c + carry), 0.0
                    else:
                        carry = 0.0
                    delta[r, j], status[r, j] = c, st
                    gap[r, j] = (t[j] - t[p]) > spec.max_gap_s * 1e9
                p = j
        return delta, status, gap

    delta, status, gap = classify(v)
    # a single reading out of line next to a flagged interval, its neighbours agreeing: dropped
    suspect = (Status.wrap, Status.reset, Status.jump, Status.replaced)
    clean = v.copy()
    for r in range(v.shape[0]):
        cols = [j for j in range(v.shape[1]) if not np.isnan(v[r, j])]
        for k in range(1, len(cols) - 1):
            p, c, n = cols[k - 1], cols[k], cols[k + 1]
            if status[r, c] not in suspect and status[r, n] not in suspect:
                continue
            s1, s2, outer = v[r, c] - v[r, p], v[r, n] - v[r, c], v[r, n] - v[r, p]
            ok = outer >= -tol and (spec.rated_kw is None or outer <= spec.rated_kw * (t[n] - t[p]) / 3.6e12
                                    * spec.jump_margin + tol)
            if abs(s1) > tol and abs(s2) > tol and (s1 > 0) != (s2 > 0) and ok:
                clean[r, c] = np.nan
    return classify(clean) if np.isnan(clean).sum() > np.isnan(v).sum() else (delta, status, gap)


@pytest.mark.parametrize("seed", range(6))
def test_vectorised_rules_equal_the_plain_loop(seed):
    rng = np.random.default_rng(seed)
    n, m = 300, 7
    t = np.cumsum(rng.choice([900, 900, 900, 1800, 7200], n)).astype(np.int64) * 10**9
    steps = rng.exponential(2.0, (m, n))
    steps[rng.random((m, n)) < 0.01] = -rng.uniform(0.0, 0.04, 1)      # backsteps
    v = 900.0 + np.cumsum(steps, axis=1)
    v = np.mod(v, 1000.0)                                                  # wraps at 1000
    v[2, 150:] -= 400                                                      # a replacement
    v[3, 100] += 300                                                       # a spike (jump + reset)
    v[rng.random((m, n)) < 0.08] = np.nan                                  # missing readings, some in runs
    v[4, :20] = np.nan
    v[5, 50:90] = np.nan
    v[6] = np.nan
    spec = CounterSpec(rollover=1000.0, rated_kw=40.0, max_gap_s=3600)
    d = counter_deltas(t, v, spec)
    want_delta, want_status, want_gap = reference_deltas(t, v, spec)
    assert np.array_equal(d.status, want_status)
    assert np.allclose(d.delta, want_delta)
    assert np.array_equal(d.gap, want_gap)
    one = counter_deltas(t, v[3], spec)
    assert np.array_equal(one.status, want_status[3]) and np.allclose(one.delta, want_delta[3])


@pytest.mark.parametrize("policy", [GapPolicy.spread, GapPolicy.last_bin])
@pytest.mark.parametrize("seed", range(4))
def test_aligned_fast_path_equals_general_binning(seed, policy):
    rng = np.random.default_rng(seed)
    n, m = 400, 6
    t = np.arange(n, dtype=np.int64) * Q
    v = 500.0 + np.cumsum(rng.exponential(1.0, (m, n)), axis=1)
    v[1, 200:] -= 300                       # reset
    v[2, 50] += 400                         # jump
    v[rng.random((m, n)) < 0.1] = np.nan
    v[3, 100:110] = np.nan                  # a 2.5 h gap
    v[4, :5] = np.nan
    v[4, -5:] = np.nan
    v[5] = np.nan
    d = counter_deltas(t, v, CounterSpec(rated_kw=20.0, max_gap_s=1800))
    fast = bin_energy(d, 0, n - 1, gap_policy=policy)
    slow = bin_energy(d, 0, n - 1, gap_policy=policy, aligned_fast_path=False)
    assert np.allclose(fast.energy, slow.energy, equal_nan=True)
    assert np.allclose(fast.coverage, slow.coverage)
