"""Energy indicators per meter, building, org and the whole org tree, per day, month and year.

Input is quarter-hour energy on a local-day grid: ``q`` of shape (rows, days, 96) in the
carrier's native unit (kWh, m3), NaN where unknown, with its ``coverage`` (same shape, 0..1),
from ``analytics.energy.counters.bin_energy`` reshaped. Every indicator is computed for all rows at
once (rows are meters, or buildings/orgs after ``rollup``).

Definitions (shared/DOMAIN.md):

- ``consumption``: Σ quarter energies (deltas of the counter, never raw readings).
- ``kgce`` = consumption × the carrier's kgce factor; ``kgco2`` = consumption × its CO₂ factor
  (grid factor configurable), see ``analytics.energy.factors``.
- ``peak_kw``: max 15-min mean power = max quarter kWh × 4 (electricity and heat); a quarter
  read only in part counts with its mean power over the time read, if that is at least 20 %.
- ``load_factor`` = mean kW ÷ peak kW; mean kW over the hours with data (coverage-weighted).
- ``base_load_kw``: 5th percentile of night-time 15-min kW (night = local quarters in
  ``night_quarters``, default 00:00-06:00), over the period's nights.
- ``off_hours_share`` = energy outside working time ÷ total (``analytics.workcal``).
- month-on-month and year-on-year: relative change against the previous month / the same
  month (or year) of the previous year: (current − previous) ÷ previous.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np

from analytics.energy.counters import CounterSpec, GapPolicy, bin_energy, counter_deltas
from analytics.energy.factors import CARRIER_FIELD, FIVE_YEAR_TARGETS, FactorSet
from analytics.periods import QUARTERS_PER_DAY, LocalCalendar, Period
from edge.point import Point

MEASUREMENT = "energy_indicator"
POWER_CARRIERS = ("electricity", "heat")
DEFAULT_NIGHT = np.arange(0, 24)  # quarters 0..23: 00:00-06:00 local


def nan_percentile(a: np.ndarray, pct: float) -> np.ndarray:
    """Percentile along the last axis ignoring NaN, linear interpolation (numpy's default),
    NaN where a row has no values. Much faster than ``np.nanpercentile`` on many rows."""
    n_all = a.shape[-1]
    nan = np.isnan(a)
    has_nan = bool(nan.any())
    if not has_nan and n_all > 64:
        # long rows without NaN: the two order statistics around the position, by partial sort
        pos = (n_all - 1) * (pct / 100.0)
        lo = int(np.floor(pos))
        hi = min(lo + 1, n_all - 1)
        part = np.partition(a, [lo, hi] if hi != lo else [lo], axis=-1)
        return part[..., lo] + (part[..., hi] - part[..., lo]) * (pos - lo)
    # NaN sorts last; for short rows (a day's night) sorting beats partition
    return _percentile_of_sorted(np.sort(a, axis=-1), pct, has_nan)


def _percentile_of_sorted(s: np.ndarray, pct: float, has_nan: bool | None = None) -> np.ndarray:
    """``nan_percentile`` of rows already sorted along the last axis (NaN last)."""
    n_all = s.shape[-1]
    if has_nan is None:
        has_nan = bool(np.isnan(s[..., -1]).any()) if n_all else False
    if not has_nan:
        pos = (n_all - 1) * (pct / 100.0)
        lo = int(np.floor(pos))
        hi = min(lo + 1, n_all - 1)
        return s[..., lo] + (s[..., hi] - s[..., lo]) * (pos - lo)
    n = n_all - np.sum(np.isnan(s), axis=-1)
    pos = (np.maximum(n, 1) - 1) * (pct / 100.0)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, np.maximum(n - 1, 0))
    frac = pos - lo
    vlo = np.take_along_axis(s, lo[..., None], axis=-1)[..., 0]
    vhi = np.take_along_axis(s, hi[..., None], axis=-1)[..., 0]
    out = vlo + (vhi - vlo) * frac
    return np.where(n > 0, out, np.nan)


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    out = np.full(np.broadcast(a, b).shape, np.nan)
    np.divide(a, b, out=out, where=(b != 0) & ~np.isnan(b))
    return out


def change(current: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """Relative change (current − previous) ÷ previous; NaN where previous is 0 or unknown."""
    return _safe_div(np.asarray(current) - np.asarray(previous), previous)


def month_on_month(monthly: np.ndarray) -> np.ndarray:
    """(..., months) → change against the previous month; the first month is NaN."""
    prev = np.full_like(monthly, np.nan, dtype=np.float64)
    prev[..., 1:] = monthly[..., :-1]
    return change(monthly, prev)


def year_on_year(values: np.ndarray, last_year: np.ndarray) -> np.ndarray:
    """Change of each period against the same period of the previous year (same calendar basis:
    month m of year y against month m of year y−1)."""
    return change(values, last_year)


@dataclass
class IndicatorTable:
    """Indicators for ``rows`` over consecutive periods. ``fields[name]`` is (rows, periods)."""

    scope: str                 # meter | building | org
    ids: list[str]
    orgs: list[str]
    carriers: list[str]
    period: Period
    starts_ns: np.ndarray      # (periods,) UTC ns of each local period start
    fields: dict[str, np.ndarray] = field(default_factory=dict)
    factor_set: str = "default"

    def value(self, row_id: str, name: str, k: int = 0) -> float:
        return float(self.fields[name][self.ids.index(row_id), k])


@dataclass(frozen=True)
class QuarterBlock:
    """Quarter-hour energy on a day grid: ``q`` (rows, days, 96), ``coverage`` same shape."""

    first_day: int             # local day index (days since 1970-01-01 local) of day 0
    q: np.ndarray
    coverage: np.ndarray
    ids: list[str]
    orgs: list[str]
    carriers: list[str]

    @property
    def n_days(self) -> int:
        return self.q.shape[1]


def _night_slice(night_quarters: np.ndarray) -> slice | np.ndarray:
    """The night quarters as a slice when they are a contiguous run (a strided view is far
    cheaper to copy than a fancy index), else as given."""
    nqs = np.asarray(night_quarters)
    if nqs.ndim == 1 and nqs.size and nqs.dtype.kind in "iu" and np.array_equal(nqs, np.arange(nqs[0], nqs[0] + nqs.size)):
        return slice(int(nqs[0]), int(nqs[0]) + nqs.size)
    return nqs


def _day_aggregates(q: np.ndarray, cov: np.ndarray, working: np.ndarray, night_quarters: np.ndarray,
                    chunk_rows: int = 16, base_pct: float | None = None, keep_night: bool = False):
    """Per row and day: Σ energy, known quarters, Σ off-hours energy, Σ coverage (in quarters),
    max quarter power (NaN when none), and the night quarters' power, or with ``base_pct`` the
    day's base load (that percentile of its night quarters' power, in quarter units) instead.

    The common day (every quarter known and fully covered) costs one reduction per aggregate
    over row chunks that stay in cache; the rare ones (a NaN quarter, a quarter covered in
    part) are found on the way and recomputed where they are with the exact rules. With
    ``base_pct`` and ``keep_night``, the night quarters' power comes back too, after the base load
    (for month and year base loads from the same pass)."""
    rows, n_days, nq = q.shape
    day_sum = np.empty((rows, n_days))
    day_off = np.empty((rows, n_days))
    day_peak = np.empty((rows, n_days))
    day_cov = np.empty((rows, n_days), dtype=np.result_type(cov.dtype, np.float32))
    off_mask = (~working).astype(np.float64)
    partial = []                                 # flat (row·days + day)·96 + quarter with coverage ≠ 1
    ns = _night_slice(night_quarters)
    per_day_base = base_pct is not None and isinstance(ns, slice)
    if per_day_base:
        n_night = ns.stop - ns.start
        day_base = np.empty((rows, n_days))
        nbuf = np.empty((min(chunk_rows, rows), n_days, n_night))
        night_all = np.empty((rows, n_days, n_night)) if keep_night else None
    for a in range(0, rows, chunk_rows):
        b = min(a + chunk_rows, rows)
        qc, cc = q[a:b], cov[a:b]
        np.add.reduce(qc, axis=2, out=day_sum[a:b])
        np.einsum("rdk,dk->rd", qc, off_mask, out=day_off[a:b])
        np.maximum.reduce(qc, axis=2, out=day_peak[a:b])
        ne = np.flatnonzero(cc != 1.0)
        if ne.size:
            partial.append(ne + a * n_days * nq)
        if per_day_base:
            # the day's night quarters, sorted in a buffer that stays in cache
            nc = nbuf[:b - a]
            nc[...] = qc[:, :, ns]
            if ne.size:
                _night_power_fix(nc, qc, cc, ne, ns)
            nc.sort(axis=-1)
            day_base[a:b] = _percentile_of_sorted(nc, base_pct)
            if night_all is not None:
                night_all[a:b] = nc
    partial_flat = np.concatenate(partial) if partial else np.empty(0, dtype=np.int64)
    # coverage: a day whose quarters are all fully covered sums to nq exactly; the others are summed
    day_cov.fill(nq)
    partial_days = np.unique(partial_flat // nq)
    if partial_days.size:
        day_cov.reshape(-1)[partial_days] = np.add.reduce(cov.reshape(-1, nq)[partial_days], axis=1)
    # days with an unknown quarter (their sums are NaN): sums over the known quarters
    nan_days = np.flatnonzero(np.isnan(day_sum))
    day_known = np.full((rows, n_days), nq, dtype=np.int64)
    q_days = q.reshape(-1, nq)
    if nan_days.size:
        qd = q_days[nan_days]
        nan = np.isnan(qd)
        qz = np.where(nan, 0.0, qd)
        day_known.reshape(-1)[nan_days] = nq - nan.sum(axis=1)
        day_sum.reshape(-1)[nan_days] = qz.sum(axis=1)
        day_off.reshape(-1)[nan_days] = (qz * off_mask[nan_days % n_days]).sum(axis=1)
    # peak: a day with an unknown or a partly covered quarter takes the quarters' power
    fix = np.union1d(nan_days, partial_flat // nq)
    if fix.size:
        with np.errstate(invalid="ignore", divide="ignore"):
            day_peak.reshape(-1)[fix] = np.fmax.reduce(_quarter_power(q_days[fix], cov.reshape(-1, nq)[fix]), axis=1)
    if per_day_base:
        if keep_night:
            return day_sum, day_known, day_off, day_cov, day_peak, day_base, night_all
        return day_sum, day_known, day_off, day_cov, day_peak, day_base
    if not isinstance(ns, slice):
        return day_sum, day_known, day_off, day_cov, day_peak, _quarter_power(q[:, :, ns], cov[:, :, ns])
    night = np.array(q[:, :, ns])
    if partial_flat.size:
        _night_power_fix(night, q, cov, partial_flat, ns)
    return day_sum, day_known, day_off, day_cov, day_peak, night


def _night_power_fix(night: np.ndarray, q: np.ndarray, cov: np.ndarray, partial_flat: np.ndarray, ns: slice) -> None:
    """In ``night`` (a copy of ``q[:, :, ns]``), the quarters covered in part (``partial_flat``:
    flat indexes into ``q``) get their power, as ``_quarter_power`` gives it."""
    nq = q.shape[-1]
    qi = partial_flat % nq
    keep = (qi >= ns.start) & (qi < ns.stop)
    at = partial_flat[keep]
    qv = q.reshape(-1)[at]
    cv = cov.reshape(-1)[at].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        pw = np.where(cv >= MIN_DEMAND_COVERAGE, qv / cv, np.nan)
    night.reshape(-1, night.shape[-1])[at // nq, qi[keep] - ns.start] = pw


MIN_DEMAND_COVERAGE = 0.2  # a quarter read for under 3 minutes says too little about demand


def _quarter_power(q: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """A quarter's energy over the time it was covered (kWh per quarter-hour of data), NaN for
    quarters covered less than ``MIN_DEMAND_COVERAGE``: a partly read quarter's energy is real,
    but as a demand it must not be spread over 15 minutes it was not measured in. A fully
    covered quarter's power is its energy."""
    if not (cov != 1.0).any():
        return q
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cov == 1.0, q, np.where(cov >= MIN_DEMAND_COVERAGE, q / cov, np.nan))


def compute_indicators(block: QuarterBlock, period: Period, cal: LocalCalendar, working: np.ndarray,
                       factors: FactorSet = FactorSet(), scope: str = "meter",
                       night_quarters: np.ndarray = DEFAULT_NIGHT, base_pct: float = 5.0) -> IndicatorTable:
    """All indicators of ``block`` per day, month or year.

    ``working``: bool (days, 96) working-time mask from ``WorkCalendar.working_quarters``.
    """
    return compute_indicators_many(block, (period,), cal, working, factors, scope, night_quarters, base_pct)[0]


def compute_indicators_many(block: QuarterBlock, periods, cal: LocalCalendar, working: np.ndarray,
                            factors: FactorSet = FactorSet(), scope: str = "meter",
                            night_quarters: np.ndarray = DEFAULT_NIGHT, base_pct: float = 5.0) -> list[IndicatorTable]:
    """``compute_indicators`` for several periods from one pass over the quarters (day, month and
    year rows are all sums, maxima and percentiles of the same day aggregates)."""
    q, cov = block.q, block.coverage
    rows, n_days, _ = q.shape
    if working.shape != (n_days, QUARTERS_PER_DAY):
        raise ValueError(f"working mask {working.shape} does not match {n_days} days")
    periods = list(periods)
    for period in periods:
        if period not in (Period.day, Period.month, Period.year):
            raise ValueError(f"compute_indicators takes day, month or year, not {period.value}")
    with_day = Period.day in periods
    longer = any(p is not Period.day for p in periods)
    agg = _day_aggregates(q, cov, working, night_quarters, base_pct=base_pct if with_day else None,
                          keep_night=longer)
    day_sum, day_known, day_off, day_cov, day_peak = agg[:5]
    if with_day and len(agg) == 7:            # per-day base loads and the nights for longer periods
        day_base, night = agg[5], agg[6]
    elif with_day and agg[5].ndim == 2:       # per-day base loads only
        day_base, night = agg[5], None
    else:                                     # the nights' power (base loads computed below)
        day_base, night = None, agg[5]
    return [_period_table(block, period, cal, factors, scope, base_pct, day_sum, day_known, day_off, day_cov,
                          day_peak, day_base, night) for period in periods]


def _period_table(block: QuarterBlock, period: Period, cal: LocalCalendar, factors: FactorSet, scope: str,
                  base_pct: float, day_sum, day_known, day_off, day_cov, day_peak, day_base, night) -> IndicatorTable:
    rows, n_days = day_sum.shape
    if period is Period.day:
        starts = cal.day_start_ns(block.first_day + np.arange(n_days))
        consumption = np.where(day_known > 0, day_sum, np.nan)
        off = day_off
        cov_q = day_cov
        peak_q = day_peak
        base_q = day_base if day_base is not None else nan_percentile(night, base_pct)
        n_q = np.full(n_days, QUARTERS_PER_DAY)
    else:
        if period is Period.month:
            idx, starts = cal.month_starts(block.first_day, n_days)
        else:
            idx, starts = cal.year_starts(block.first_day, n_days)
        known_p = np.add.reduceat(day_known, idx, axis=1)
        consumption = np.where(known_p > 0, np.add.reduceat(day_sum, idx, axis=1), np.nan)
        off = np.add.reduceat(day_off, idx, axis=1)
        cov_q = np.add.reduceat(day_cov, idx, axis=1)
        peak_q = np.fmax.reduceat(day_peak, idx, axis=1)
        bounds = np.r_[idx, n_days]
        base_q = np.stack([nan_percentile(night[:, a:b].reshape(rows, -1), base_pct)
                           for a, b in zip(bounds[:-1], bounds[1:])], axis=1)
        n_q = np.diff(bounds) * QUARTERS_PER_DAY
    kgce_f = np.array([factors.kgce_per_unit(c) for c in block.carriers])[:, None]
    co2_f = np.array([factors.kgco2_per_unit(c) for c in block.carriers])[:, None]
    power = np.array([c in POWER_CARRIERS for c in block.carriers])[:, None]
    unit = np.array([CARRIER_FIELD[c][1] for c in block.carriers])
    fields: dict[str, np.ndarray] = {}
    kwh_rows = (unit == "kWh")[:, None]
    fields["consumption_kwh"] = np.where(kwh_rows, consumption, np.nan)
    fields["consumption_m3"] = np.where(~kwh_rows, consumption, np.nan)
    fields["kgce"] = consumption * kgce_f
    fields["kgco2"] = consumption * co2_f
    hours = cov_q / 4.0
    mean_kw = _safe_div(consumption, hours)
    peak_kw = peak_q * 4.0
    fields["peak_kw"] = np.where(power, peak_kw, np.nan)
    fields["load_factor"] = np.where(power, _safe_div(mean_kw, peak_kw), np.nan)
    fields["base_load_kw"] = np.where(power, base_q * 4.0, np.nan)
    fields["off_hours_share"] = _safe_div(off, consumption)
    fields["coverage"] = cov_q / n_q[None, :]
    return IndicatorTable(scope, list(block.ids), list(block.orgs), list(block.carriers), period,
                          np.asarray(starts, dtype=np.int64), fields, factors.name)


# --- roll-up by building and org path ----------------------------------------------------------


def org_prefixes(path: str) -> list[str]:
    """``330000/330100/330106`` → [``330000``, ``330000/330100``, ``330000/330100/330106``]
    (segment-wise, so ``33010`` is never a parent of ``330106``)."""
    parts = path.split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


@dataclass(frozen=True)
class Rollup:
    """Groups × rows 0/1 matrix: which rows (meters) sum into which group."""

    scope: str
    ids: list[str]
    orgs: list[str]
    carriers: list[str]
    matrix: np.ndarray


def rollup_by_org(orgs: Sequence[str], carriers: Sequence[str]) -> Rollup:
    """Every org at every level of the tree gets the sum of the meters at or below it, per carrier."""
    keys: dict[tuple[str, str], int] = {}
    pairs = []
    for r, (o, c) in enumerate(zip(orgs, carriers)):
        for p in org_prefixes(o):
            k = keys.setdefault((p, c), len(keys))
            pairs.append((k, r))
    mat = np.zeros((len(keys), len(orgs)))
    for k, r in pairs:
        mat[k, r] = 1.0
    ks = list(keys)
    return Rollup("org", [k[0] for k in ks], [k[0] for k in ks], [k[1] for k in ks], mat)


def rollup_by_building(buildings: Sequence[str | None], orgs: Sequence[str], carriers: Sequence[str]) -> Rollup:
    keys: dict[tuple[str, str], int] = {}
    org_of: dict[str, str] = {}
    pairs = []
    for r, (b, o, c) in enumerate(zip(buildings, orgs, carriers)):
        if b is None:
            continue
        org_of.setdefault(b, o)
        pairs.append((keys.setdefault((b, c), len(keys)), r))
    mat = np.zeros((len(keys), len(orgs)))
    for k, r in pairs:
        mat[k, r] = 1.0
    ks = list(keys)
    return Rollup("building", [k[0] for k in ks], [org_of[k[0]] for k in ks], [k[1] for k in ks], mat)


def apply_rollup(block: QuarterBlock, rollup: Rollup) -> QuarterBlock:
    """Sum member rows' quarter energy (unknown quarters count 0 in the sum; coverage is the
    members' mean, so a group with a silent meter shows coverage < 1).

    Rows are first summed over runs of consecutive rows that belong to the same groups (the
    meters of one institution and carrier, usually listed together), one pass over the block;
    the groups are then sums of those few run totals. Rows in no useful order take one sparse
    product of the whole block instead."""
    from scipy import sparse

    rows, days, nq = block.q.shape
    mat = rollup.matrix
    starts = np.r_[0, np.flatnonzero(np.any(mat[:, 1:] != mat[:, :-1], axis=0)) + 1] if rows else np.zeros(0, int)
    if rows and len(starts) <= rows // 2:
        return _apply_rollup_runs(block, rollup, starts)
    mat = sparse.csr_matrix(rollup.matrix)       # each meter sits in a handful of groups
    members = rollup.matrix.sum(axis=1)
    inv_members = np.where(members > 0, 1.0 / np.maximum(members, 1), np.nan)[:, None]
    q2 = block.q.reshape(rows, -1)
    c2 = block.coverage.reshape(rows, -1)
    g, width = len(rollup.ids), q2.shape[1]
    q = np.empty((g, width))
    cov = np.empty((g, width))
    for a in range(0, width, 2048):                # column chunks stay in cache
        qc = q2[:, a:a + 2048]
        nan = np.isnan(qc)
        if nan.any():
            part = np.asarray(mat @ np.where(nan, 0.0, qc))
            known = np.asarray(mat @ (~nan).astype(np.float64)) > 0
            part[~known] = np.nan
        else:
            part = np.asarray(mat @ np.ascontiguousarray(qc))
            part[members == 0] = np.nan
        q[:, a:a + 2048] = part
        cov[:, a:a + 2048] = np.asarray(mat @ np.ascontiguousarray(c2[:, a:a + 2048])) * inv_members
    return QuarterBlock(block.first_day, q.reshape(-1, days, nq), cov.reshape(-1, days, nq),
                        rollup.ids, rollup.orgs, rollup.carriers)


def _apply_rollup_runs(block: QuarterBlock, rollup: Rollup, starts: np.ndarray) -> QuarterBlock:
    from scipy import sparse

    rows, days, nq = block.q.shape
    mat = rollup.matrix
    members = mat.sum(axis=1)
    inv_members = np.where(members > 0, 1.0 / np.maximum(members, 1), np.nan)[:, None]
    q2 = block.q.reshape(rows, -1)
    c2 = block.coverage.reshape(rows, -1)
    ends = np.r_[starts[1:], rows]
    width = q2.shape[1]
    run_q = np.empty((len(starts), width))                          # NaN where a member is
    run_c = np.empty((len(starts), width))
    for k, (a, b) in enumerate(zip(starts.tolist(), ends.tolist())):  # (np.add.reduceat on axis 0 is slow)
        np.add.reduce(q2[a:b], axis=0, out=run_q[k])
        # coverage is mostly exactly 1: a run without a partly covered quarter sums to its length
        if (c2[a:b] != 1.0).any():
            np.add.reduce(c2[a:b], axis=0, out=run_c[k], dtype=np.float64)
        else:
            run_c[k].fill(b - a)
    a_run = mat[:, starts]                                          # (groups, runs) 0/1
    bad = np.flatnonzero(np.isnan(run_q).any(axis=1))
    run_known = np.empty((bad.size, run_q.shape[1]))
    for i, k in enumerate(bad):                                     # runs with an unknown quarter
        sub = q2[starts[k]:ends[k]]
        nan = np.isnan(sub)
        run_q[k] = np.where(nan, 0.0, sub).sum(axis=0)
        run_known[i] = (~nan).sum(axis=0)
    a_sp = sparse.csr_matrix(a_run)
    q = np.asarray(a_sp @ run_q)
    q[members == 0] = np.nan
    if bad.size:
        clean = np.ones(len(starts), dtype=bool)
        clean[bad] = False
        need = np.flatnonzero((a_run[:, clean].sum(axis=1) == 0) & (members > 0))  # only runs with gaps
        if need.size:
            known = a_run[np.ix_(need, bad)] @ run_known > 0
            sub = q[need]
            sub[~known] = np.nan
            q[need] = sub
    cov = np.asarray(a_sp @ run_c)
    cov *= inv_members
    return QuarterBlock(block.first_day, q.reshape(-1, days, nq), cov.reshape(-1, days, nq),
                        rollup.ids, rollup.orgs, rollup.carriers)


# --- per area and per person -------------------------------------------------------------------


def per_area_and_person(kgce_year: float, kwh_year: float, water_m3_year: float, floor_area_m2: float,
                        occupants: int) -> dict[str, float]:
    """单位建筑面积能耗 kgce/m² and kWh/m², 人均综合能耗 kgce/person, 人均用水量 m³/person, for
    one building or org and one year. Vehicle fuel belongs in kgce_year for per-person only; the
    caller passes building energy (without fuel) here."""
    out = {
        "kgce_per_m2": kgce_year / floor_area_m2 if floor_area_m2 > 0 else float("nan"),
        "kwh_per_m2": kwh_year / floor_area_m2 if floor_area_m2 > 0 else float("nan"),
        "kgce_per_person": kgce_year / occupants if occupants > 0 else float("nan"),
        "water_m3_per_person": water_m3_year / occupants if occupants > 0 else float("nan"),
    }
    return out


# --- output records ----------------------------------------------------------------------------

FIELD_UNITS = {
    "consumption_kwh": "kWh", "consumption_m3": "m3", "kgce": "kgce", "kgco2": "kgCO2",
    "peak_kw": "kW", "load_factor": "1", "base_load_kw": "kW", "off_hours_share": "1", "coverage": "1",
    "mom_change": "1", "yoy_change": "1", "electricity_kwh": "kWh", "water_m3": "m3", "kgce_per_m2": "kgce/m2",
    "kwh_per_m2": "kWh/m2", "kgce_per_person": "kgce/person", "water_m3_per_person": "m3/person",
    "kgce_per_m2_target_ratio": "1", "kgce_per_person_target_ratio": "1", "water_m3_per_person_target_ratio": "1",
}


def to_points(tables: Iterable[IndicatorTable], provisional: Callable[[int], bool] | None = None):
    """Indicator tables → ``edge.point.Point`` list: measurement ``energy_indicator``; tags
    ``scope``, ``id``, ``org``, ``period``, ``carrier``; fields with units in their names (only
    finite values; a row-period with none is skipped); time = period start (UTC ns); a string
    field ``factor_set`` names the factors used; a boolean field ``provisional_calendar`` says
    whether the period lies in a year the holiday calendar does not cover (``provisional(start_ns)``;
    ``analytics.workcal``). It is written true or false on every point, so a recomputation with the
    year's real calendar overwrites it (a field left out would keep its old value in the store)."""

    out = []
    for t in tables:
        names = list(t.fields)
        stack = np.stack([t.fields[n] for n in names], axis=0)  # (fields, rows, periods)
        finite = np.isfinite(stack)
        flags = [bool(provisional(int(s))) if provisional is not None else False for s in t.starts_ns]
        for r, rid in enumerate(t.ids):
            for k in range(len(t.starts_ns)):
                fl = {names[i]: float(stack[i, r, k]) for i in np.flatnonzero(finite[:, r, k])}
                if not fl:
                    continue
                fl["factor_set"] = t.factor_set
                fl["provisional_calendar"] = flags[k]
                tags = {"scope": t.scope, "id": rid, "org": t.orgs[r], "period": t.period.value,
                        "carrier": t.carriers[r]}
                out.append(Point(MEASUREMENT, tags, fl, int(t.starts_ns[k])))
    return out


def add_changes(monthly: IndicatorTable, field_name: str = "consumption_kwh",
                last_year: IndicatorTable | None = None) -> None:
    """Add ``mom_change`` (and ``yoy_change`` when last year's months are given, aligned by
    position: month k of ``last_year`` is the same calendar month one year earlier)."""
    v = monthly.fields[field_name]
    monthly.fields["mom_change"] = month_on_month(v)
    if last_year is not None:
        monthly.fields["yoy_change"] = year_on_year(v, last_year.fields[field_name])


def block_from_counters(times_ns: np.ndarray, values: np.ndarray, specs, cal: LocalCalendar, first_day: int,
                        n_days: int, ids: Sequence[str], orgs: Sequence[str], carriers: Sequence[str],
                        gap_policy=None, chunk_rows: int = 32, extra_rows: int = 0):
    """Counter readings (m, n) on a shared time axis (NaN = missing) → ``QuarterBlock`` over
    ``n_days`` local days from ``first_day``, plus the counter events per row.

    ``specs``: one ``CounterSpec`` for all rows or a list of one per row (rows with equal specs
    are processed together). ``extra_rows``: rows after the ``m`` counters that the caller fills
    (virtual meters); ``ids``, ``orgs`` and ``carriers`` name them too. They start unknown."""

    gap_policy = gap_policy or GapPolicy.spread
    v = np.atleast_2d(np.asarray(values, dtype=np.float64))
    m = v.shape[0]
    spec_list = list(specs) if isinstance(specs, (list, tuple)) else [specs or CounterSpec()] * m
    start = int(cal.day_start_ns(first_day))
    nb = n_days * QUARTERS_PER_DAY
    q = np.empty((m + extra_rows, nb))
    cov = np.empty((m + extra_rows, nb), dtype=np.float32)     # a fraction 0..1: float32 halves its memory
    q[m:] = np.nan
    cov[m:] = 0.0
    events = []
    if v.shape[-1] == 0:                          # no reading at all: every quarter unknown
        q[:m] = np.nan
        cov[:m] = 0.0
        spec_list = []
    buf = np.empty((min(chunk_rows, m), v.shape[1])) if spec_list else None  # one delta buffer for every chunk
    groups: dict = {}
    for r, s in enumerate(spec_list):
        groups.setdefault(s, []).append(r)
    for s, rows in groups.items():
        for c0 in range(0, len(rows), chunk_rows):  # bounded memory: a few copies of one chunk
            part = rows[c0:c0 + chunk_rows]
            # contiguous rows (the usual case: one spec for all) are sliced, not copied
            sl = slice(part[0], part[-1] + 1) if part[-1] - part[0] == len(part) - 1 else np.asarray(part)
            vv = v[sl]
            d = counter_deltas(times_ns, vv, s, out=buf[:len(part)])
            if isinstance(sl, slice):
                b = bin_energy(d, start, nb, gap_policy=gap_policy, out=(q[sl], cov[sl]))
                if b.energy.base is None or not np.shares_memory(b.energy, q):  # general path: copy in
                    q[sl], cov[sl] = b.energy, b.coverage
            else:
                b = bin_energy(d, start, nb, gap_policy=gap_policy)
                q[sl], cov[sl] = b.energy, b.coverage
            for e in d.events(vv, s):
                events.append((ids[part[e.row]], e))
    mt = m + extra_rows
    blk = QuarterBlock(first_day, q.reshape(mt, n_days, QUARTERS_PER_DAY), cov.reshape(mt, n_days, QUARTERS_PER_DAY),
                       list(ids), list(orgs), list(carriers))
    return blk, events


def daily_consumption(times_ns: np.ndarray, values: np.ndarray, spec, cal: LocalCalendar, first_day: int,
                      n_days: int, chunk_rows: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Daily consumption only (rows × days, NaN for a day with no known quarter) and its
    coverage, with the same counter rules and the same 15-minute binning as
    ``block_from_counters``, without keeping the quarter-hour block."""

    v = np.atleast_2d(np.asarray(values, dtype=np.float64))
    m = v.shape[0]
    out = np.empty((m, n_days))
    cov = np.empty((m, n_days))
    start = int(cal.day_start_ns(first_day))
    nb = n_days * QUARTERS_PER_DAY
    buf = np.empty((min(chunk_rows, m), v.shape[1]))
    for c0 in range(0, m, chunk_rows):
        vv = v[c0:c0 + chunk_rows]
        d = counter_deltas(times_ns, vv, spec or CounterSpec(), out=buf[:vv.shape[0]])
        b = bin_energy(d, start, nb)
        e = b.energy.reshape(-1, n_days, QUARTERS_PER_DAY)
        known = ~np.isnan(e)
        out[c0:c0 + chunk_rows] = np.where(known.any(axis=2), np.where(known, e, 0.0).sum(axis=2), np.nan)
        cov[c0:c0 + chunk_rows] = b.coverage.reshape(-1, n_days, QUARTERS_PER_DAY).mean(axis=2)
    return out, cov


def combine_carriers(t: IndicatorTable, areas_m2: dict[str, float] | None = None,
                     occupants: dict[str, int] | None = None, targets: bool = True) -> IndicatorTable:
    """Rows with carrier ``all`` per id: 综合能耗 ``kgce`` and ``kgco2`` summed over carriers,
    ``electricity_kwh``, ``water_m3``; with areas/occupants per id (buildings: their own;
    orgs: the buildings at or below them), ``kgce_per_m2``, ``kwh_per_m2``, ``kgce_per_person``,
    ``water_m3_per_person`` for the period, and for year periods the ratio to the five-year
    targets (``*_target_ratio``, ≤ 1 = within; the targets' confidence is in analytics.energy.factors)."""

    ids: list[str] = []
    orgs: list[str] = []
    for i, o in zip(t.ids, t.orgs):
        if i not in ids:
            ids.append(i)
            orgs.append(o)
    k = len(t.starts_ns)
    pos = {i: n for n, i in enumerate(ids)}
    kgce = np.zeros((len(ids), k))
    kgco2 = np.zeros((len(ids), k))
    any_ = np.zeros((len(ids), k), dtype=bool)
    elec = np.full((len(ids), k), np.nan)
    water = np.full((len(ids), k), np.nan)
    for r, (i, c) in enumerate(zip(t.ids, t.carriers)):
        n = pos[i]
        ok = np.isfinite(t.fields["kgce"][r])
        kgce[n] += np.where(ok, t.fields["kgce"][r], 0.0)
        kgco2[n] += np.where(ok, t.fields["kgco2"][r], 0.0)
        any_[n] |= ok
        if c == "electricity":
            elec[n] = t.fields["consumption_kwh"][r]
        if c == "water":
            water[n] = t.fields["consumption_m3"][r]
    fields = {"kgce": np.where(any_, kgce, np.nan), "kgco2": np.where(any_, kgco2, np.nan),
              "electricity_kwh": elec, "water_m3": water}
    if areas_m2 is not None:
        area = np.array([areas_m2.get(i, np.nan) for i in ids])[:, None]
        fields["kgce_per_m2"] = _safe_div(fields["kgce"], area)
        fields["kwh_per_m2"] = _safe_div(elec, area)
    if occupants is not None:
        occ = np.array([occupants.get(i, np.nan) for i in ids], dtype=np.float64)[:, None]
        fields["kgce_per_person"] = _safe_div(fields["kgce"], occ)
        fields["water_m3_per_person"] = _safe_div(water, occ)
    if targets and t.period is Period.year:
        for name in ("kgce_per_m2", "kgce_per_person", "water_m3_per_person"):
            if name in fields:
                fields[f"{name}_target_ratio"] = fields[name] / FIVE_YEAR_TARGETS[name].target
    return IndicatorTable(t.scope, ids, orgs, ["all"] * len(ids), t.period, t.starts_ns, fields, t.factor_set)


def areas_for(scope: str, ids: Sequence[str], buildings: Sequence[tuple[str, str, float, int]]
              ) -> tuple[dict[str, float], dict[str, int]]:
    """Floor area and occupants per row id: ``buildings`` are (id, org, floor_area_m2,
    occupants); a building row gets its own, an org row the sum of the buildings at or below it."""
    area: dict[str, float] = {}
    occ: dict[str, int] = {}
    for i in ids:
        if scope == "building":
            sel = [b for b in buildings if b[0] == i]
        elif scope == "org":
            sel = [b for b in buildings if b[1].split("/")[: len(i.split("/"))] == i.split("/")]
        else:
            sel = []
        if sel:
            area[i] = float(sum(b[2] for b in sel))
            occ[i] = int(sum(b[3] for b in sel))
    return area, occ
