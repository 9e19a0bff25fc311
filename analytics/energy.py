"""Energy indicators per meter, building, org and the whole org tree, per day, month and year.

Input is quarter-hour energy on a local-day grid: ``q`` of shape (rows, days, 96) in the
carrier's native unit (kWh, m3), NaN where unknown, with its ``coverage`` (same shape, 0..1),
from ``analytics.counters.bin_energy`` reshaped. Every indicator is computed for all rows at
once (rows are meters, or buildings/orgs after ``rollup``).

Definitions (shared/DOMAIN.md):

- ``consumption``: Σ quarter energies (deltas of the counter, never raw readings).
- ``kgce`` = consumption × the carrier's kgce factor; ``kgco2`` = consumption × its CO₂ factor
  (grid factor configurable), see ``analytics.factors``.
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
from typing import Iterable, Sequence

import numpy as np

from analytics.factors import CARRIER_FIELD, FactorSet
from analytics.periods import QUARTERS_PER_DAY, LocalCalendar, Period

MEASUREMENT = "energy_indicator"
POWER_CARRIERS = ("electricity", "heat")
DEFAULT_NIGHT = np.arange(0, 24)  # quarters 0..23: 00:00-06:00 local


def nan_percentile(a: np.ndarray, pct: float) -> np.ndarray:
    """Percentile along the last axis ignoring NaN, linear interpolation (numpy's default),
    NaN where a row has no values. Much faster than ``np.nanpercentile`` on many rows."""
    nan = np.isnan(a)
    if not nan.any():
        # no NaN: the two order statistics around the position, by partial sort (much cheaper)
        n_all = a.shape[-1]
        pos = (n_all - 1) * (pct / 100.0)
        lo = int(np.floor(pos))
        hi = min(lo + 1, n_all - 1)
        part = np.partition(a, [lo, hi] if hi != lo else [lo], axis=-1)
        return part[..., lo] + (part[..., hi] - part[..., lo]) * (pos - lo)
    s = np.sort(a, axis=-1)  # NaN sorts last
    n = np.sum(~nan, axis=-1)
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


def _day_aggregates(q: np.ndarray, cov: np.ndarray, working: np.ndarray, night_quarters: np.ndarray,
                    chunk_rows: int = 32):
    """Per row and day: Σ energy, known quarters, Σ off-hours energy, Σ coverage (in quarters),
    max quarter (NaN when none), and the night quarters. Row chunks keep temporaries in cache."""
    rows, n_days, nq = q.shape
    day_sum = np.empty((rows, n_days))
    day_known = np.empty((rows, n_days), dtype=np.int64)
    day_off = np.empty((rows, n_days))
    day_peak = np.empty((rows, n_days))
    off_mask = (~working).astype(np.float64)
    for a in range(0, rows, chunk_rows):
        qc = q[a:a + chunk_rows]
        nan = np.isnan(qc)
        if nan.any():
            qz = np.where(nan, 0.0, qc)
            day_known[a:a + chunk_rows] = nq - nan.sum(axis=2)
        else:
            qz = qc.copy()
            day_known[a:a + chunk_rows] = nq
        day_sum[a:a + chunk_rows] = qz.sum(axis=2)
        qz *= off_mask
        day_off[a:a + chunk_rows] = qz.sum(axis=2)
        with np.errstate(invalid="ignore", divide="ignore"):
            day_peak[a:a + chunk_rows] = np.fmax.reduce(_quarter_power(qc, cov[a:a + chunk_rows]), axis=2)
    night = _quarter_power(q[:, :, night_quarters], cov[:, :, night_quarters])
    return day_sum, day_known, day_off, cov.sum(axis=2), day_peak, night


MIN_DEMAND_COVERAGE = 0.2  # a quarter read for under 3 minutes says too little about demand


def _quarter_power(q: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """A quarter's energy over the time it was covered (kWh per quarter-hour of data), NaN for
    quarters covered less than ``MIN_DEMAND_COVERAGE``: a partly read quarter's energy is real,
    but as a demand it must not be spread over 15 minutes it was not measured in."""
    if not (cov < 1.0).any():
        return q
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cov >= MIN_DEMAND_COVERAGE, q / cov, np.nan)


def compute_indicators(block: QuarterBlock, period: Period, cal: LocalCalendar, working: np.ndarray,
                       factors: FactorSet = FactorSet(), scope: str = "meter",
                       night_quarters: np.ndarray = DEFAULT_NIGHT, base_pct: float = 5.0) -> IndicatorTable:
    """All indicators of ``block`` per day, month or year.

    ``working``: bool (days, 96) working-time mask from ``WorkCalendar.working_quarters``.
    """
    q, cov = block.q, block.coverage
    rows, n_days, _ = q.shape
    if working.shape != (n_days, QUARTERS_PER_DAY):
        raise ValueError(f"working mask {working.shape} does not match {n_days} days")
    day_sum, day_known, day_off, day_cov, day_peak, night = _day_aggregates(q, cov, working, night_quarters)

    if period is Period.day:
        starts = cal.day_start_ns(block.first_day + np.arange(n_days))
        consumption = np.where(day_known > 0, day_sum, np.nan)
        off = day_off
        cov_q = day_cov
        peak_q = day_peak
        base_q = nan_percentile(night, base_pct)
        n_q = np.full(n_days, QUARTERS_PER_DAY)
    else:
        if period is Period.month:
            idx, starts = cal.month_starts(block.first_day, n_days)
        elif period is Period.year:
            idx, starts = cal.year_starts(block.first_day, n_days)
        else:
            raise ValueError(f"compute_indicators takes day, month or year, not {period.value}")
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
    members' mean, so a group with a silent meter shows coverage < 1)."""
    from scipy import sparse

    rows, days, nq = block.q.shape
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


def to_points(tables: Iterable[IndicatorTable]):
    """Indicator tables → ``edge.point.Point`` list: measurement ``energy_indicator``; tags
    ``scope``, ``id``, ``org``, ``period``, ``carrier``; fields with units in their names (only
    finite values; a row-period with none is skipped); time = period start (UTC ns); a string
    field ``factor_set`` names the factors used."""
    from edge.point import Point

    out = []
    for t in tables:
        names = list(t.fields)
        stack = np.stack([t.fields[n] for n in names], axis=0)  # (fields, rows, periods)
        finite = np.isfinite(stack)
        for r, rid in enumerate(t.ids):
            for k in range(len(t.starts_ns)):
                fl = {names[i]: float(stack[i, r, k]) for i in np.flatnonzero(finite[:, r, k])}
                if not fl:
                    continue
                fl["factor_set"] = t.factor_set
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
                        gap_policy=None, chunk_rows: int = 32):
    """Counter readings (m, n) on a shared time axis (NaN = missing) → ``QuarterBlock`` over
    ``n_days`` local days from ``first_day``, plus the counter events per row.

    ``specs``: one ``CounterSpec`` for all rows or a list of one per row (rows with equal specs
    are processed together)."""
    from analytics.counters import CounterSpec, GapPolicy, bin_energy, counter_deltas

    gap_policy = gap_policy or GapPolicy.spread
    v = np.atleast_2d(np.asarray(values, dtype=np.float64))
    m = v.shape[0]
    spec_list = list(specs) if isinstance(specs, (list, tuple)) else [specs or CounterSpec()] * m
    start = int(cal.day_start_ns(first_day))
    nb = n_days * QUARTERS_PER_DAY
    q = np.empty((m, nb))
    cov = np.empty((m, nb), dtype=np.float32)     # a fraction 0..1: float32 halves its memory
    events = []
    groups: dict = {}
    for r, s in enumerate(spec_list):
        groups.setdefault(s, []).append(r)
    for s, rows in groups.items():
        for c0 in range(0, len(rows), chunk_rows):  # bounded memory: a few copies of one chunk
            part = rows[c0:c0 + chunk_rows]
            # contiguous rows (the usual case: one spec for all) are sliced, not copied
            sl = slice(part[0], part[-1] + 1) if part[-1] - part[0] == len(part) - 1 else np.asarray(part)
            vv = v[sl]
            d = counter_deltas(times_ns, vv, s)
            if isinstance(sl, slice):
                b = bin_energy(d, start, nb, gap_policy=gap_policy, out=(q[sl], cov[sl]))
                if b.energy.base is None or not np.shares_memory(b.energy, q):  # general path: copy in
                    q[sl], cov[sl] = b.energy, b.coverage
            else:
                b = bin_energy(d, start, nb, gap_policy=gap_policy)
                q[sl], cov[sl] = b.energy, b.coverage
            for e in d.events(vv, s):
                events.append((ids[part[e.row]], e))
    blk = QuarterBlock(first_day, q.reshape(m, n_days, QUARTERS_PER_DAY), cov.reshape(m, n_days, QUARTERS_PER_DAY),
                       list(ids), list(orgs), list(carriers))
    return blk, events


def daily_consumption(times_ns: np.ndarray, values: np.ndarray, spec, cal: LocalCalendar, first_day: int,
                      n_days: int, chunk_rows: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Daily consumption only (rows × days, NaN for a day with no known quarter) and its
    coverage, with the same counter rules and the same 15-minute binning as
    ``block_from_counters``, without keeping the quarter-hour block."""
    from analytics.counters import CounterSpec, bin_energy, counter_deltas

    v = np.atleast_2d(np.asarray(values, dtype=np.float64))
    m = v.shape[0]
    out = np.empty((m, n_days))
    cov = np.empty((m, n_days))
    start = int(cal.day_start_ns(first_day))
    nb = n_days * QUARTERS_PER_DAY
    for c0 in range(0, m, chunk_rows):
        d = counter_deltas(times_ns, v[c0:c0 + chunk_rows], spec or CounterSpec())
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
    targets (``*_target_ratio``, ≤ 1 = within; the targets' confidence is in analytics.factors)."""
    from analytics.factors import FIVE_YEAR_TARGETS

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
