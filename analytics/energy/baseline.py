"""Weather-normalised daily baseline (CalTRACK daily method) and savings with ASHRAE Guideline 14
statistics, fitted for many meters at once.

Model (CalTRACK 2.0 daily, as in eemeter/OpenDSM's legacy model): daily use ``y`` against the
day's mean outdoor temperature ``T``:

- intercept-only: y = a
- HDD-only:       y = a + b_h · max(bp_h − T, 0)
- CDD-only:       y = a + b_c · max(T − bp_c, 0)
- HDD+CDD:        y = a + b_h · HDD(bp_h) + b_c · CDD(bp_c), bp_h ≤ bp_c

Balance points are searched on a grid (default 30-90 °F in 1 °F steps, i.e. −1.1 to 32.2 °C).
A candidate qualifies when each slope is positive with p < 0.1 and its degree days are
sufficient (≥ 10 days with non-zero degree days and ≥ 20 °F·days in total, CalTRACK 3.4.3).
The model with the best adjusted R² among qualifying candidates wins (intercept-only always
qualifies). Fits are ordinary least squares via sufficient statistics, so 1,000 meters sharing
one weather series cost a few matrix products per balance point.

Statistics (ASHRAE Guideline 14-2014): R², CV(RMSE) = √(SSE/(n−p)) ÷ ȳ, NMBE = Σ(y−ŷ) ÷
((n−p)·ȳ), with p the number of parameters. G14's limits: CV(RMSE) ≤ 15 % and |NMBE| ≤ 5 % for
monthly models, ≤ 30 % and ≤ 10 % for hourly. A daily model is checked on its daily residuals
against the hourly limits and on its residuals summed per calendar month against the monthly
limits; both verdicts are reported, a model that misses them is flagged, never hidden.

Fractional savings uncertainty (G14 Annex B): U = t · 1.26 · CV · √((n/n′)(1 + 2/n)/m) ÷ F with
n′ = n(1−ρ)/(1+ρ) (ρ: lag-1 autocorrelation of baseline residuals), m reporting days, F the
savings fraction; t at the requested confidence (two-sided), n − p degrees of freedom.

Data sufficiency (CalTRACK 2.0 2.2 and 3.5, as eemeter/OpenDSM checks them, codes named after
eemeter's ``sufficiency_criteria``): ``baseline_sufficiency`` and ``reporting_sufficiency`` return
the reasons a period cannot support a savings figure. A model whose baseline is insufficient, or a
reporting period that is, gets no savings figure from ``savings`` (the reasons say why), never a
number that looks valid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from edge.errors import PayloadError

F_PER_C = 9.0 / 5.0
PLAUSIBLE_C = (-50.0, 60.0)   # °C: outdoor air outside this is a sentinel, a wrong unit or a fault


def f_to_c(f: np.ndarray | float) -> np.ndarray | float:
    return (np.asarray(f) - 32.0) / F_PER_C


@dataclass(frozen=True, slots=True)
class BaselineSettings:
    bp_grid_f: tuple[float, float, float] = (30.0, 90.0, 1.0)   # start, stop (inclusive), step in °F
    p_max: float = 0.1
    min_nonzero_dd_days: int = 10
    min_total_dd_f: float = 20.0
    min_days: int = 329                  # CalTRACK 2.2.1: a 365-day baseline (eemeter: 329-365 days) ...
    max_days: int = 366                  # ... a calendar year in a leap year is 12 months too (eemeter: 365)
    min_coverage: float = 0.9            # ... ≥ 90 % of days with usage and temperature (2.2.1.2)
    plausible_c: tuple[float, float] = PLAUSIBLE_C
    stuck_run_days: int = 3              # this many consecutive days at one temperature ...
    stuck_tolerance_c: float = 1e-4      # ... identical within this: a stuck sensor or placeholder data
    g14_cvrmse_hourly: float = 0.30
    g14_nmbe_hourly: float = 0.10
    g14_cvrmse_monthly: float = 0.15
    g14_nmbe_monthly: float = 0.05

    def grid_c(self) -> np.ndarray:
        a, b, s = self.bp_grid_f
        return f_to_c(np.arange(a, b + s / 2, s))


MODEL_TYPES = ("intercept_only", "hdd_only", "cdd_only", "hdd_cdd")


@dataclass(frozen=True, slots=True)
class Reason:
    """Why a period cannot support (``refuses``) or weakens (a warning) a savings figure.
    ``code`` is eemeter's sufficiency-criteria name where it has one."""

    code: str
    text: str
    refuses: bool = True


@dataclass(frozen=True, slots=True)
class Sufficiency:
    """The verdict on one period of one meter: sufficient when no reason refuses."""

    reasons: tuple[Reason, ...] = ()

    @property
    def ok(self) -> bool:
        return not any(r.refuses for r in self.reasons)

    @property
    def refusals(self) -> tuple[Reason, ...]:
        return tuple(r for r in self.reasons if r.refuses)

    @property
    def codes(self) -> tuple[str, ...]:
        """Codes of the refusing reasons, in order."""
        return tuple(r.code for r in self.reasons if r.refuses)


@dataclass(frozen=True)
class DailyModel:
    """A fitted CalTRACK daily model. Temperatures in °C, y in the meter's unit per day."""

    model_type: str
    intercept: float
    beta_hdd: float
    beta_cdd: float
    hdd_bp_c: float          # NaN when the model has no HDD term
    cdd_bp_c: float
    n: int
    n_params: int
    r2: float
    adj_r2: float
    cvrmse: float
    nmbe: float
    cvrmse_monthly: float
    nmbe_monthly: float
    rmse: float
    mean_y: float
    rho: float               # lag-1 autocorrelation of residuals
    xtx_inv: np.ndarray      # (p, p) for prediction intervals
    g14_daily_ok: bool       # against G14's hourly limits (daily residuals)
    g14_monthly_ok: bool     # against G14's monthly limits (residuals summed per month)
    sufficient: bool         # baseline data sufficiency (CalTRACK 2.2, ``baseline_sufficiency``)
    notes: tuple[str, ...] = ()
    reasons: tuple[Reason, ...] = ()   # the baseline's sufficiency reasons (refusals and warnings)

    @property
    def refusals(self) -> tuple[Reason, ...]:
        return tuple(r for r in self.reasons if r.refuses)

    @property
    def g14_ok(self) -> bool:
        return self.g14_daily_ok and self.g14_monthly_ok

    def design(self, temp_c: np.ndarray) -> np.ndarray:
        t = np.asarray(temp_c, dtype=np.float64)
        cols = [np.ones_like(t)]
        if self.model_type in ("hdd_only", "hdd_cdd"):
            cols.append(np.maximum(self.hdd_bp_c - t, 0.0))
        if self.model_type in ("cdd_only", "hdd_cdd"):
            cols.append(np.maximum(t - self.cdd_bp_c, 0.0))
        return np.stack(cols, axis=-1)

    def predict(self, temp_c: np.ndarray) -> np.ndarray:
        t = np.asarray(temp_c, dtype=np.float64)
        y = np.full_like(t, self.intercept)
        if self.model_type in ("hdd_only", "hdd_cdd"):
            y = y + self.beta_hdd * np.maximum(self.hdd_bp_c - t, 0.0)
        if self.model_type in ("cdd_only", "hdd_cdd"):
            y = y + self.beta_cdd * np.maximum(t - self.cdd_bp_c, 0.0)
        return y

    def prediction_interval(self, temp_c: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """OLS prediction interval for single new days: ŷ ± t·s·√(1 + x₀ᵀ(XᵀX)⁻¹x₀)."""
        x = self.design(temp_c)
        lev = np.einsum("ij,jk,ik->i", x, self.xtx_inv, x)
        dof = max(self.n - self.n_params, 1)
        half = stats.t.ppf(0.5 + level / 2, dof) * self.rmse * np.sqrt(1.0 + lev)
        yhat = self.predict(temp_c)
        return yhat - half, yhat + half


def hours_with_readings(times_ns: np.ndarray, first_day: int, n_days: int,
                        offset_ns: int = 8 * 3600 * 10**9) -> np.ndarray:
    """Distinct clock hours with at least one reading in each local day (n_days,): CalTRACK 2.2.2
    counts a day built from higher-frequency data only if no more than half of them is missing."""
    t = np.asarray(times_ns, dtype=np.int64)
    hours = np.unique((t + offset_ns) // (3600 * 10**9))
    day = hours // 24 - first_day
    day = day[(day >= 0) & (day < n_days)]
    return np.bincount(day, minlength=n_days)[:n_days]


def counter_measured_days(times_ns: np.ndarray, first_day: int, n_days: int, offset_ns: int = 8 * 3600 * 10**9,
                          max_unmeasured_s: float = 12 * 3600.0) -> np.ndarray:
    """Local days (n_days,) whose usage a cumulative counter measured: a day's use is the counter
    at its end minus the counter at its start, so what is not measured is the time between the
    day's start and the first reading at or after it, plus the time between the last reading at
    or before its end and that end (interpolated across a gap). CalTRACK 2.2.2.1 allows no more
    than half of a day missing: a day counts when that time is ≤ ``max_unmeasured_s`` (12 h).
    ``times_ns`` ascending, the times of valid readings."""
    t = np.asarray(times_ns, dtype=np.int64)
    day_ns = 86400 * 10**9
    edges = (first_day + np.arange(n_days + 1, dtype=np.int64)) * day_ns - offset_ns
    if t.size == 0:
        return np.zeros(n_days, dtype=bool)
    nxt = np.searchsorted(t, edges[:-1], side="left")               # first reading ≥ day start
    prv = np.searchsorted(t, edges[1:], side="right") - 1           # last reading ≤ day end
    has = (nxt < t.size) & (prv >= 0)
    first_in = np.where(has, t[np.minimum(nxt, t.size - 1)], 0)
    last_in = np.where(has, t[np.maximum(prv, 0)], 0)
    has &= first_in <= edges[1:]                                    # some reading inside [start, end]
    unmeasured = (first_in - edges[:-1]) + (edges[1:] - last_in)
    return has & (unmeasured <= int(max_unmeasured_s * 10**9))


def implausible_temperature_days(times_ns: np.ndarray, temp_c: np.ndarray, first_day: int, n_days: int,
                                 offset_ns: int = 8 * 3600 * 10**9,
                                 plausible_c: tuple[float, float] = PLAUSIBLE_C) -> np.ndarray:
    """Readings outside ``plausible_c`` (°C) per local day (n_days,): sentinels such as −9999 or
    −3276.8, or a wrong unit; ``daily_mean_temperature`` leaves them out."""
    t = np.asarray(times_ns, dtype=np.int64)
    v = np.asarray(temp_c, dtype=np.float64)
    bad = ~np.isnan(v) & ((v < plausible_c[0]) | (v > plausible_c[1]))
    day = (t[bad] + offset_ns) // (86400 * 10**9) - first_day
    day = day[(day >= 0) & (day < n_days)]
    return np.bincount(day, minlength=n_days)[:n_days]


def daily_mean_temperature(times_ns: np.ndarray, temp_c: np.ndarray, first_day: int, n_days: int,
                           offset_ns: int = 8 * 3600 * 10**9, min_hours: int = 12,
                           plausible_c: tuple[float, float] = PLAUSIBLE_C) -> np.ndarray:
    """Mean of the readings in each local day (CalTRACK uses the day's average temperature);
    NaN for days with fewer than ``min_hours`` distinct hours of readings (CalTRACK 2.2.2.3: no
    more than 50 % of hourly values missing). Readings outside ``plausible_c`` are left out."""
    t = np.asarray(times_ns, dtype=np.int64)
    v = np.asarray(temp_c, dtype=np.float64)
    ok = ~np.isnan(v) & (v >= plausible_c[0]) & (v <= plausible_c[1])
    day = (t + offset_ns) // (86400 * 10**9) - first_day
    sel = ok & (day >= 0) & (day < n_days)
    s = np.bincount(day[sel], weights=v[sel], minlength=n_days)
    c = np.bincount(day[sel], minlength=n_days)
    hc = hours_with_readings(t[sel], first_day, n_days, offset_ns)
    out = np.full(n_days, np.nan)
    good = (c > 0) & (hc >= min_hours)
    out[good] = s[good] / c[good]
    return out


def _stuck_days(t: np.ndarray, run_days: int, tol: float) -> np.ndarray:
    """Days (mask) in runs of ≥ ``run_days`` consecutive valid days whose temperatures agree within
    ``tol``: outdoor air is never that steady, a stuck sensor or a placeholder series is."""
    out = np.zeros(t.shape, dtype=bool)
    idx = np.flatnonzero(~np.isnan(t))
    if idx.size < run_days or run_days < 2:
        return out
    same = np.abs(np.diff(t[idx])) <= tol                  # day k and the next valid day agree
    edges = np.diff(np.r_[0, same.astype(np.int8), 0])
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)   # runs of `same`: [s, e)
    for a, b in zip(starts.tolist(), ends.tolist()):
        if b - a + 1 >= run_days:                          # b − a agreeing steps join b − a + 1 days
            out[idx[a:b + 1]] = True
    return out


def _temperature_reasons(t: np.ndarray, implausible: np.ndarray | None, month_index: np.ndarray,
                         settings: BaselineSettings, what: str) -> tuple[list[Reason], np.ndarray]:
    """Reasons that come from the temperature alone (shared by every meter) and the mask of days
    with usable temperature."""
    nd = t.size
    lo, hi = settings.plausible_c
    present = ~np.isnan(t)
    bad_mean = present & ((t < lo) | (t > hi))
    t_ok = present & ~bad_mean
    bad_day = bad_mean | (np.asarray(implausible) > 0 if implausible is not None else False)
    reasons: list[Reason] = []
    need = settings.min_coverage
    n_t = int(t_ok.sum())
    low_cov = nd > 0 and n_t < need * nd
    # per calendar month (eemeter: missing_monthly_temperature_data)
    low_months = []
    if nd:
        per = np.bincount(month_index, weights=t_ok.astype(np.float64))
        cnt = np.bincount(month_index)
        frac = np.divide(per, cnt, out=np.ones_like(per), where=cnt > 0)
        low_months = np.flatnonzero((cnt > 0) & (frac < need)).tolist()
    if low_cov:
        reasons.append(Reason("too_many_days_with_missing_temperature_data",
                              f"{what}: {n_t} of {nd} days have a daily mean temperature (at least half the hours "
                              f"measured); CalTRACK wants >= {need:.0%}"))
    if low_months:
        reasons.append(Reason("missing_monthly_temperature_data",
                              f"{what}: {len(low_months)} calendar month(s) have temperature on fewer than "
                              f"{need:.0%} of their days"))
    n_bad = int(np.count_nonzero(bad_day))
    if n_bad:
        lost = int(np.count_nonzero(bad_day & ~t_ok))     # days left without a daily mean by it
        reasons.append(Reason("temperature_implausible",
                              f"{what}: {n_bad} day(s) had outdoor temperatures outside {lo:g}..{hi:g} °C, left "
                              f"out; {lost} day(s) lost their daily mean", refuses=bool(lost and (low_cov or low_months))))
    stuck = _stuck_days(np.where(t_ok, t, np.nan), settings.stuck_run_days, settings.stuck_tolerance_c)
    n_stuck = int(stuck.sum())
    if n_stuck:
        vals = t[stuck]
        same = float(np.ptp(vals)) <= settings.stuck_tolerance_c
        desc = (f"the same outdoor temperature ({vals[0]:.2f} °C) on {n_stuck} of {nd} days" if same else
                f"runs of {settings.stuck_run_days}+ days at one outdoor temperature on {n_stuck} of {nd} days")
        # such days carry no weather; CalTRACK tolerates 10 % of days without it
        reasons.append(Reason("temperature_constant",
                              f"{what}: {desc}: a stuck sensor or placeholder data cannot support a weather model",
                              refuses=n_stuck > (1 - need) * nd))
    return reasons, t_ok


def _month_index(month_of_day: np.ndarray | None, nd: int) -> np.ndarray:
    if month_of_day is None:
        month_of_day = np.arange(nd) // 30
    return np.unique(np.asarray(month_of_day), return_inverse=True)[1].reshape(-1)


def baseline_sufficiency(y: np.ndarray, temp_c: np.ndarray, month_of_day: np.ndarray | None = None,
                         settings: BaselineSettings = BaselineSettings(),
                         implausible_days: np.ndarray | None = None) -> list[Sufficiency]:
    """CalTRACK 2.0 baseline data sufficiency for each row of ``y`` ((m, days) or (days,), NaN =
    no usage that day) against the shared daily mean temperature ``temp_c`` (days,; NaN = none).
    The period is the ``days`` columns. Checks, as eemeter's ``DailySufficiencyCriteria``:

    - ``no_data``: no day with both usage and temperature;
    - ``incorrect_number_of_total_days``: the period is not 12 months (329..366 days; 2.2.1.1);
    - ``too_many_days_with_missing_data`` / ``..._meter_data`` / ``..._temperature_data``: under
      90 % of the period's days with usage and temperature / usage / temperature (2.2.1.2);
    - ``missing_monthly_temperature_data``: a calendar month with temperature on < 90 % of its days;
    - ``extreme_values_detected`` (a warning, 2.3.6): days above median + 3 IQR;

    and two of ours that eemeter does not make: ``temperature_implausible`` (days with readings
    outside ``settings.plausible_c``, left out; refuses when that leaves too little temperature)
    and ``temperature_constant`` (runs of days at one temperature; refuses beyond 10 % of days).
    ``implausible_days`` (days,) counts readings ``daily_mean_temperature`` left out."""
    y2 = np.atleast_2d(np.asarray(y, dtype=np.float64))
    t = np.asarray(temp_c, dtype=np.float64)
    m, nd = y2.shape
    month_index = _month_index(month_of_day, nd)
    shared, t_ok = _temperature_reasons(t, implausible_days, month_index, settings, "baseline")
    need = settings.min_coverage
    y_ok = ~np.isnan(y2)
    n_y = y_ok.sum(axis=1)
    n_both = (y_ok & t_ok[None, :]).sum(axis=1)
    length = None
    if not settings.min_days <= nd <= settings.max_days:
        length = Reason("incorrect_number_of_total_days",
                        f"baseline spans {nd} days: CalTRACK fits 12 months (365 days, at least "
                        f"{settings.min_days}, at most {settings.max_days})")
    # extreme values per row (a warning): only rows with usage, so no all-NaN slice
    ext = np.zeros(m, dtype=np.int64)
    has = n_y > 0
    if has.any():
        # quartiles per row as numpy's linear method, on rows sorted once (NaN sort last);
        # nanpercentile loops over rows in Python, 10x slower for 1,000 meters
        ys = np.sort(y2[has], axis=1)
        rows = np.arange(ys.shape[0])
        last = n_y[has] - 1

        def quantile(q: float) -> np.ndarray:
            pos = last * q
            lo = np.floor(pos).astype(np.int64)
            hi = np.minimum(lo + 1, last)
            return ys[rows, lo] + (pos - lo) * (ys[rows, hi] - ys[rows, lo])

        q25, med, q75 = quantile(0.25), quantile(0.5), quantile(0.75)
        lim = med + 3 * (q75 - q25)
        with np.errstate(invalid="ignore"):
            ext[has] = (y2[has] > lim[:, None]).sum(axis=1)
    out = []
    for r in range(m):
        reasons: list[Reason] = []
        if n_both[r] == 0:
            reasons.append(Reason("no_data", "baseline: no day has both usage and temperature"))
        if length is not None:
            reasons.append(length)
        if n_both[r] < need * nd:
            reasons.append(Reason("too_many_days_with_missing_data",
                                  f"baseline: {int(n_both[r])} of {nd} days have usage and temperature; "
                                  f"CalTRACK wants >= {need:.0%}"))
        if n_y[r] < need * nd:
            reasons.append(Reason("too_many_days_with_missing_meter_data",
                                  f"baseline: {int(n_y[r])} of {nd} days have measured usage; "
                                  f"CalTRACK wants >= {need:.0%}"))
        reasons.extend(shared)
        if ext[r]:
            reasons.append(Reason("extreme_values_detected",
                                  f"baseline: {int(ext[r])} day(s) above median + 3 IQR of daily use: "
                                  f"review them (CalTRACK 2.3.6)", refuses=False))
        out.append(Sufficiency(tuple(reasons)))
    return out


def reporting_sufficiency(y: np.ndarray, temp_c: np.ndarray, month_of_day: np.ndarray | None = None,
                          settings: BaselineSettings = BaselineSettings(),
                          implausible_days: np.ndarray | None = None) -> Sufficiency:
    """CalTRACK 2.0 reporting period sufficiency (3.5; eemeter's reporting checks): ``no_data``,
    ``too_many_days_with_missing_temperature_data`` (< 90 % of days), ``missing_monthly_temperature_data``,
    ``temperature_implausible`` and ``temperature_constant`` as for the baseline. Days without
    usage are left out of the savings (CalTRACK 3.5.4); under 90 % of them is a warning
    (``too_many_days_with_missing_meter_data``), since the savings then cover fewer days."""
    y1 = np.asarray(y, dtype=np.float64)
    t = np.asarray(temp_c, dtype=np.float64)
    nd = t.size
    shared, t_ok = _temperature_reasons(t, implausible_days, _month_index(month_of_day, nd), settings, "reporting")
    y_ok = ~np.isnan(y1)
    reasons: list[Reason] = []
    n_both = int((y_ok & t_ok).sum())
    if n_both == 0:
        reasons.append(Reason("no_data", "reporting: no day has both usage and temperature"))
    reasons.extend(shared)
    n_y = int(y_ok.sum())
    if n_both and n_y < settings.min_coverage * nd:
        reasons.append(Reason("too_many_days_with_missing_meter_data",
                              f"reporting: {n_y} of {nd} days have measured usage: the savings cover those days only",
                              refuses=False))
    return Sufficiency(tuple(reasons))


def _significant(beta: np.ndarray, var: np.ndarray, crit: np.ndarray) -> np.ndarray:
    """|t| > critical t (two-sided p < p_max), ``crit`` per row (degrees of freedom differ).
    ``var`` is a temporary: it is overwritten."""
    with np.errstate(divide="ignore", invalid="ignore"):
        tt = np.sqrt(var, out=var)
        np.divide(np.abs(beta), tt, out=tt)
    return (tt > crit) & (tt < np.inf)         # = isfinite(tt) & (tt > crit): NaN fails both


def _adj(r2: np.ndarray, n: np.ndarray, k: int) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1.0 - (1.0 - r2) * (n - 1) / (n - k - 1)


def _day_patterns(W: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Distinct rows of the 0/1 day mask ``W`` and each row's pattern (``None``: ``W`` itself,
    when a pattern per row is no saving; one pattern is broadcast, shape (1, days))."""
    m = W.shape[0]
    if m and (W == W[:1]).all():
        return W[:1], None                              # one pattern: broadcast
    keys = [r.tobytes() for r in np.packbits(W > 0, axis=1)]
    first: dict[bytes, int] = {}
    inv = np.array([first.setdefault(k, len(first)) for k in keys], dtype=np.int64)
    if len(first) > m // 2:
        return W, None
    _, rows = np.unique(inv, return_index=True)        # first row of each pattern
    return W[rows], inv


def fit_daily_models(y: np.ndarray, temp_c: np.ndarray, settings: BaselineSettings = BaselineSettings(),
                     month_of_day: np.ndarray | None = None,
                     implausible_days: np.ndarray | None = None) -> list[DailyModel]:
    """Fit one CalTRACK daily model per row of ``y`` ((m, days) or (days,); NaN = day missing)
    against the shared daily mean temperature ``temp_c`` (days,). ``month_of_day`` (days,)
    labels each day's calendar month for the monthly G14 check (default: 30-day blocks).
    The columns are the baseline period: each model carries ``baseline_sufficiency``'s verdict
    (``sufficient``, ``reasons``); a day whose temperature is implausible is left out."""
    y2 = np.atleast_2d(np.asarray(y, dtype=np.float64))
    t = np.asarray(temp_c, dtype=np.float64)
    m, nd = y2.shape
    if t.shape != (nd,):
        raise ValueError(f"temperature {t.shape} does not match {nd} days")
    if month_of_day is None:
        month_of_day = np.arange(nd) // 30
    verdicts = baseline_sufficiency(y2, t, month_of_day, settings, implausible_days)
    lo, hi = settings.plausible_c
    with np.errstate(invalid="ignore"):
        t = np.where((t >= lo) & (t <= hi), t, np.nan)
    W = (~np.isnan(y2) & ~np.isnan(t)[None, :]).astype(np.float64)
    tz = np.where(np.isnan(t), 0.0, t)
    Y = np.where(W > 0, y2, 0.0)
    n = W.sum(1)
    Sy = Y.sum(1)
    Syy = (Y * Y).sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        SST = Syy - Sy * Sy / n
    crit2 = stats.t.ppf(1 - settings.p_max / 2, np.maximum(n - 2, 1))[:, None]
    crit3 = stats.t.ppf(1 - settings.p_max / 2, np.maximum(n - 3, 1))[:, None]
    bp = settings.grid_c()
    H = np.maximum(bp[:, None] - tz[None, :], 0.0)      # (nb, days)
    C = np.maximum(tz[None, :] - bp[:, None], 0.0)
    min_tot = settings.min_total_dd_f / F_PER_C
    # Sums that depend only on which days a row has (W) are computed once per distinct pattern
    # of days (usually one: every meter has every day) and broadcast or gathered to the rows.
    pat, inv = _day_patterns(W)
    n_p = pat.sum(1)[:, None]

    def rows_of(a: np.ndarray) -> np.ndarray:
        return a if inv is None else a[inv]

    def single(X: np.ndarray):
        Sx_p = pat @ X.T                     # (patterns, nb)
        nz_p = pat @ (X > 0).T.astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            Vxx_p = pat @ (X * X).T - Sx_p * Sx_p / n_p
        ok_w = rows_of((nz_p >= settings.min_nonzero_dd_days) & (Sx_p >= min_tot) & (Vxx_p > 0))
        Sx, Vxx = rows_of(Sx_p), rows_of(Vxx_p)
        Sxy = Y @ X.T
        with np.errstate(divide="ignore", invalid="ignore"):
            Vxy = Sxy - Sx * Sy[:, None] / n[:, None]
            b = Vxy / Vxx
            sse = SST[:, None] - b * Vxy
            dof = n[:, None] - 2
            s2 = sse / dof
            sig = _significant(b, s2 / Vxx, crit2)
            r2 = 1 - sse / SST[:, None]
        ok = (b > 0) & sig & ok_w
        adj = np.where(ok, _adj(r2, n[:, None], 1), -np.inf)
        best = np.argmax(adj, axis=1)
        return adj[np.arange(m), best], best

    adj_h, best_h = single(H)
    adj_c, best_c = single(C)
    # HDD+CDD: loop over the heating balance point, all cooling balance points ≥ it at once.
    Sh_p, Shh_p = pat @ H.T, pat @ (H * H).T
    Sc_p, Scc_p = pat @ C.T, pat @ (C * C).T
    nzh_p, nzc_p = pat @ (H > 0).T.astype(np.float64), pat @ (C > 0).T.astype(np.float64)
    Shy_all, Scy_all = Y @ H.T, Y @ C.T
    with np.errstate(divide="ignore", invalid="ignore"):
        # per row and balance point, shared by every pair that uses it (the loop slices them)
        Vhy_all = Shy_all - rows_of(Sh_p) * Sy[:, None] / n[:, None]
        Vcy_all = Scy_all - rows_of(Sc_p) * Sy[:, None] / n[:, None]
        Vhh_all = Shh_p - Sh_p * Sh_p / n_p
        Vcc_all = Scc_p - Sc_p * Sc_p / n_p
    best_hc = np.full(m, -np.inf)
    best_hc_ij = np.zeros((m, 2), dtype=np.int64)
    nn = n[:, None]
    for i in range(len(bp)):
        j0 = i
        if j0 >= len(bp):
            break
        sh_p = Sh_p[:, i:i + 1]
        if not ((nzh_p[:, i] >= settings.min_nonzero_dd_days) & (sh_p[:, 0] >= min_tot)).any():
            continue                                     # no row has enough heating degree days
        # cooling balance points ≥ i with enough cooling degree days for some row: only those
        js = j0 + np.flatnonzero(((nzc_p[:, j0:] >= settings.min_nonzero_dd_days) & (Sc_p[:, j0:] >= min_tot)).any(axis=0))
        if not js.size:
            continue
        Shc_p = pat @ (H[i][None, :] * C[js]).T          # (patterns, candidates)
        sc_p = Sc_p[:, js]
        Vhh_p, Vcc_p = Vhh_all[:, i:i + 1], Vcc_all[:, js]
        with np.errstate(divide="ignore", invalid="ignore"):
            Vhc_p = Shc_p - sh_p * sc_p / n_p
            det_p = Vhh_p * Vcc_p - Vhc_p * Vhc_p
        ok_w = rows_of((det_p > 0) & (nzh_p[:, i:i + 1] >= settings.min_nonzero_dd_days)
                       & (nzc_p[:, js] >= settings.min_nonzero_dd_days) & (sh_p >= min_tot) & (sc_p >= min_tot))
        Vhh, Vcc, Vhc, det = rows_of(Vhh_p), rows_of(Vcc_p), rows_of(Vhc_p), rows_of(det_p)
        Vhy, Vcy = Vhy_all[:, i:i + 1], Vcy_all[:, js]
        with np.errstate(divide="ignore", invalid="ignore"):
            bh = (Vcc * Vhy - Vhc * Vcy) / det
            bc = (Vhh * Vcy - Vhc * Vhy) / det
            sse = SST[:, None] - bh * Vhy - bc * Vcy
            dof = nn - 3
            s2 = sse / dof
            sh = _significant(bh, s2 * Vcc / det, crit3)
            sc = _significant(bc, s2 * Vhh / det, crit3)
            r2 = 1 - sse / SST[:, None]
        ok = (bh > 0) & (bc > 0) & sh & sc & ok_w
        adj = np.where(ok, _adj(r2, nn, 2), -np.inf)
        j = np.argmax(adj, axis=1)
        a = adj[np.arange(m), j]
        better = a > best_hc
        best_hc = np.where(better, a, best_hc)
        best_hc_ij[better, 0] = i
        best_hc_ij[better, 1] = js[j[better]]

    adj_int = np.zeros(m)  # intercept-only: R² = adjusted R² = 0
    cand = np.stack([adj_int, adj_h, adj_c, best_hc], axis=1)
    cand = np.where(np.isnan(cand), -np.inf, cand)
    choice = np.argmax(cand, axis=1)
    _, month_index = np.unique(month_of_day, return_inverse=True)
    kinds = [MODEL_TYPES[c] for c in choice]
    hbp = np.where(np.isin(choice, (1, 3)), bp[np.where(choice == 3, best_hc_ij[:, 0], best_h)], np.nan)
    cbp = np.where(np.isin(choice, (2, 3)), bp[np.where(choice == 3, best_hc_ij[:, 1], best_c)], np.nan)
    return _final_fits(y2, t, kinds, hbp, cbp, settings, month_index, verdicts)


def _final_fits(y2: np.ndarray, t: np.ndarray, kinds: list[str], hbp: np.ndarray, cbp: np.ndarray,
                settings: BaselineSettings, month_index: np.ndarray, verdicts: list[Sufficiency]) -> list[DailyModel]:
    """Refit each row's chosen model by OLS and compute its statistics, all rows at once: every
    row gets a 3-column design [1, HDD, CDD]; a column the row's model does not use is zeroed
    and decoupled (identity in XᵀX), so its coefficient is 0 and the rest is that model's fit."""
    m, nd = y2.shape
    tz = np.where(np.isnan(t), 0.0, t)
    W = (~np.isnan(y2) & ~np.isnan(t)[None, :]).astype(np.float64)
    Y = np.where(W > 0, y2, 0.0)
    use_h = np.array([k in ("hdd_only", "hdd_cdd") for k in kinds])
    use_c = np.array([k in ("cdd_only", "hdd_cdd") for k in kinds])
    used = np.stack([np.ones(m, dtype=bool), use_h, use_c], axis=1)
    X = np.empty((m, nd, 3))
    X[:, :, 0] = 1.0
    X[:, :, 1] = np.where(use_h[:, None], np.maximum(np.where(use_h, hbp, 0.0)[:, None] - tz[None, :], 0.0), 0.0)
    X[:, :, 2] = np.where(use_c[:, None], np.maximum(tz[None, :] - np.where(use_c, cbp, 0.0)[:, None], 0.0), 0.0)
    Xw = X * W[:, :, None]
    xtx = np.matmul(Xw.transpose(0, 2, 1), X)   # batched XᵀWX (matmul: ~10x einsum's speed)
    both = used[:, :, None] & used[:, None, :]
    xtx = np.where(both, xtx, 0.0) + np.eye(3)[None] * (~used)[:, :, None]
    xty = np.matmul(Xw.transpose(0, 2, 1), Y[:, :, None])[:, :, 0] * used
    n = W.sum(axis=1)
    p = used.sum(axis=1)
    ok_rows = n > p
    xtx[~ok_rows] = np.eye(3)                     # too few days: fitted as NaN below
    xtx_inv = np.linalg.pinv(xtx)
    # pinv's SVD leaves round-off (1e-12) in the decoupled blocks, and which sign it takes depends on
    # the CPU's BLAS: cut the inverse back to the used block so an unused term is 0 by construction
    xtx_inv = np.where(both, xtx_inv, 0.0) + np.eye(3)[None] * (~used)[:, :, None]
    beta = np.einsum("mkl,ml->mk", xtx_inv, xty) * used
    resid = (Y - np.matmul(X, beta[:, :, None])[:, :, 0]) * W
    with np.errstate(divide="ignore", invalid="ignore"):
        sse = (resid * resid).sum(axis=1)
        ybar = Y.sum(axis=1) / n
        sst = (((Y - ybar[:, None]) ** 2) * W).sum(axis=1)
        r2 = np.where(sst > 0, 1 - sse / sst, 0.0)
        adj = 1 - (1 - r2) * (n - 1) / (n - p)
        rmse = np.sqrt(sse / (n - p))
        cv = rmse / ybar
        nmbe = resid.sum(axis=1) / ((n - p) * ybar)
        # per calendar month: residuals and actuals summed (G14's monthly check)
        nmonths = int(month_index.max()) + 1 if month_index.size else 0
        onehot = np.zeros((nd, nmonths))
        onehot[np.arange(nd), month_index] = 1.0
        m_res = resid @ onehot
        m_y = Y @ onehot
        present = (W @ onehot) > 0
        km = present.sum(axis=1)
        cv_m = np.sqrt((m_res ** 2).sum(axis=1) / (km - p)) / (m_y.sum(axis=1) / km)
        nmbe_m = m_res.sum(axis=1) / ((km - p) * (m_y.sum(axis=1) / km))
    # lag-1 autocorrelation of residuals over consecutive usable days
    rho = np.zeros(m)
    full = W.all(axis=1)
    if full.any():
        a, b = resid[full, :-1], resid[full, 1:]
        a = a - a.mean(axis=1, keepdims=True)
        b = b - b.mean(axis=1, keepdims=True)
        den = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
        with np.errstate(divide="ignore", invalid="ignore"):
            rho[full] = np.where(den > 0, (a * b).sum(axis=1) / den, 0.0)
    for r in np.flatnonzero(~full):
        e = resid[r][W[r] > 0]
        if e.size > 2:
            a, b = e[:-1] - e[:-1].mean(), e[1:] - e[1:].mean()
            den = np.sqrt((a @ a) * (b @ b))
            rho[r] = float(a @ b / den) if den > 0 else 0.0

    # each row's (p, p) block of (XᵀX)⁻¹, cut once per model type; plain floats for the loop
    key = use_h.astype(np.int64) + 2 * use_c
    inv_blocks: list = [None] * m
    for k in np.unique(key).tolist():
        rows_k = np.flatnonzero(key == k)
        cols = np.flatnonzero(used[rows_k[0]])
        blk = xtx_inv[rows_k][:, cols][:, :, cols]
        for i, r in enumerate(rows_k.tolist()):
            inv_blocks[r] = blk[i]
    b0, b1, b2 = beta[:, 0].tolist(), beta[:, 1].tolist(), beta[:, 2].tolist()
    hbp_l, cbp_l, n_l, p_l, km_l = hbp.tolist(), cbp.tolist(), n.tolist(), p.tolist(), km.tolist()
    r2_l, adj_l, cv_l, nmbe_l = r2.tolist(), adj.tolist(), cv.tolist(), nmbe.tolist()
    cvm_l, nmbem_l, rmse_l, ybar_l, rho_l = cv_m.tolist(), nmbe_m.tolist(), rmse.tolist(), ybar.tolist(), rho.tolist()
    ok_l = ok_rows.tolist()
    nan = float("nan")
    models = []
    for r in range(m):
        kind = kinds[r]
        pr = int(p_l[r])
        n_r = n_l[r]
        verdict = verdicts[r]
        if not ok_l[r]:
            models.append(DailyModel(kind, np.nan, np.nan, np.nan, hbp_l[r], cbp_l[r], int(n_r), pr,
                                     np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan,
                                     np.full((pr, pr), np.nan), False, False, False,
                                     ("too few days to fit", *(f"{x.code}: {x.text}" for x in verdict.reasons)), verdict.reasons))
            continue
        notes = [f"{x.code}: {x.text}" for x in verdict.reasons]
        sufficient = verdict.ok
        months_ok = km_l[r] > pr
        if not months_ok:
            notes.append("fewer months than parameters: monthly G14 check not possible")
        cv_r, nmbe_r, cvm_r, nmbem_r = cv_l[r], nmbe_l[r], cvm_l[r], nmbem_l[r]
        g14_d = bool(cv_r <= settings.g14_cvrmse_hourly and abs(nmbe_r) <= settings.g14_nmbe_hourly)
        g14_m = bool(months_ok and cvm_r <= settings.g14_cvrmse_monthly and abs(nmbem_r) <= settings.g14_nmbe_monthly)
        if not g14_d:
            notes.append(f"misses ASHRAE G14 (daily vs hourly limits): CV(RMSE) {cv_r:.1%}, NMBE {nmbe_r:.1%}")
        if not g14_m:
            notes.append(f"misses ASHRAE G14 monthly limits: CV(RMSE) {cvm_r:.1%}, NMBE {nmbem_r:.1%}")
        models.append(DailyModel(
            kind, b0[r], b1[r], b2[r], hbp_l[r], cbp_l[r], int(n_r), pr, r2_l[r], adj_l[r], cv_r, nmbe_r,
            cvm_r if months_ok else nan, nmbem_r if months_ok else nan, rmse_l[r], ybar_l[r], rho_l[r],
            inv_blocks[r], g14_d, g14_m, bool(sufficient), tuple(notes), verdict.reasons))
    return models


@dataclass(frozen=True)
class Savings:
    """Avoided energy use over a reporting period: predicted (baseline adjusted to the reporting
    period's weather) − actual, over days with both.

    ``reported`` is false when the baseline or the reporting period is insufficient (``refusals``
    says why, baseline reasons first): then there is no figure (``predicted``, ``actual``,
    ``savings``, ``fraction``, ``fsu``, ``savings_uncertainty`` are NaN), never a number that
    looks valid."""

    days: int
    predicted: float
    actual: float
    savings: float
    fraction: float             # savings ÷ predicted
    fsu: float                  # fractional savings uncertainty (G14), relative to the savings
    savings_uncertainty: float  # absolute, same unit as savings
    confidence: float
    model_g14_ok: bool
    reported: bool = True
    refusals: tuple[Reason, ...] = ()             # why not reported (baseline's, then reporting's)
    reporting_reasons: tuple[Reason, ...] = ()    # the reporting period's reasons, warnings too

    @property
    def reporting_sufficient(self) -> bool:
        return not any(r.refuses for r in self.reporting_reasons)


def savings(model: DailyModel, reporting_y: np.ndarray, reporting_temp_c: np.ndarray,
            confidence: float = 0.68, month_of_day: np.ndarray | None = None,
            implausible_days: np.ndarray | None = None,
            settings: BaselineSettings = BaselineSettings()) -> Savings:
    """Savings and G14 fractional savings uncertainty (default 68 %: G14 asks for savings to
    exceed twice their uncertainty at 68 % confidence), when the model's baseline and the
    reporting period (``reporting_sufficiency``) are sufficient; otherwise no figure, with the
    reasons. ``month_of_day`` and ``implausible_days`` as for ``fit_daily_models``."""
    y = np.asarray(reporting_y, dtype=np.float64)
    t = np.asarray(reporting_temp_c, dtype=np.float64)
    rep = reporting_sufficiency(y, t, month_of_day, settings, implausible_days)
    lo, hi = settings.plausible_c
    sel = ~np.isnan(y) & ~np.isnan(t) & (t >= lo) & (t <= hi)
    mdays = int(sel.sum())
    refusals = model.refusals + rep.refusals
    if not model.sufficient and not refusals:     # a model built without a verdict
        refusals = (Reason("insufficient_baseline", "the baseline is marked insufficient"),)
    if refusals:
        nan = float("nan")
        return Savings(mdays, nan, nan, nan, nan, nan, nan, confidence, model.g14_ok, False, refusals, rep.reasons)
    pred = float(model.predict(t[sel]).sum())
    act = float(y[sel].sum())
    s = pred - act
    frac = s / pred if pred else np.nan
    n = model.n
    rho = model.rho if np.isfinite(model.rho) else 0.0
    n_eff = n * (1 - rho) / (1 + rho) if rho < 1 else 1.0
    tval = stats.t.ppf(0.5 + confidence / 2, max(n - model.n_params, 1))
    if mdays and frac and np.isfinite(frac):
        fsu = float(tval * 1.26 * model.cvrmse * np.sqrt((n / n_eff) * (1 + 2 / n) / mdays) / abs(frac))
    else:
        fsu = float("inf")
    return Savings(mdays, pred, act, s, frac, fsu, abs(s) * fsu, confidence, model.g14_ok, True, (), rep.reasons)


def parse_temperature_csv(text: str, offset_ns: int = 8 * 3600 * 10**9) -> tuple[np.ndarray, np.ndarray]:
    """Hourly outdoor temperature from CSV text (the configured weather file): a header with a
    time column (``time``, ``local_time`` or ``timestamp``) and ``temp_c``. Times are ISO 8601;
    with an offset (``2025-01-01T00:00+08:00``, ``...Z``) they are taken as given, naive ones as
    local time at ``offset_ns``. Empty temperatures are NaN. Returns (times_ns UTC, temp_c)."""
    import csv
    import datetime as dt
    import io


    rows = csv.DictReader(io.StringIO(text))
    cols = rows.fieldnames or []
    tcol = next((c for c in ("time", "local_time", "timestamp") if c in cols), None)
    if tcol is None or "temp_c" not in cols:
        raise PayloadError("bad weather csv", f"need a time column and temp_c, got {cols}")
    times, temps = [], []
    for i, r in enumerate(rows, start=2):
        try:
            d = dt.datetime.fromisoformat(r[tcol].replace("Z", "+00:00"))
            v = float(r["temp_c"]) if r["temp_c"] not in ("", None) else np.nan
        except (TypeError, ValueError) as e:
            raise PayloadError("bad weather csv", f"line {i}: {e}") from None
        if d.tzinfo is None:
            ns = int(d.replace(tzinfo=dt.timezone.utc).timestamp()) * 10**9 - offset_ns
        else:
            ns = int(d.timestamp()) * 10**9
        times.append(ns)
        temps.append(v)
    t = np.asarray(times, dtype=np.int64)
    order = np.argsort(t, kind="stable")
    return t[order], np.asarray(temps)[order]
