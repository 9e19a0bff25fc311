"""Baselines and savings for a site's meters: the CalTRACK fit (``analytics.energy.baseline``) turned
into Points, and the ``edge analytics baseline`` verb that reads through the query layer.

Points written:

* ``energy_baseline`` (tags ``meter``, ``org``, ``model_type``; time = reporting period start):
  the model (balance points °C, coefficients, R², CV(RMSE), NMBE, G14 verdicts), the data
  sufficiency of both periods (``sufficient`` and ``reasons`` for the baseline,
  ``reporting_sufficient`` and ``reporting_reasons``: comma-separated codes of the refusing
  reasons, their texts in ``notes``) and, only when both are sufficient, the savings over the
  reporting period (predicted, actual, savings, fraction, fractional savings uncertainty at
  68 %). A model that misses ASHRAE Guideline 14's limits is written with ``g14_ok=false``, never
  hidden; an insufficient period gets no savings fields at all.
* ``energy_anomaly`` (tags ``meter``, ``rule``; time = the day's start): reporting days outside
  the model's 95 % prediction interval, with the evidence.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Sequence

import numpy as np

from analytics.energy.baseline import daily_mean_temperature
from analytics.energy.jobs import BaselineReport, MeterInfo
from analytics.periods import LocalCalendar
from edge.point import Point


def _num(v) -> float | int | bool | str | None:
    if isinstance(v, bool | str | int):
        return v
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def baseline_points(report: BaselineReport, meters: Sequence[MeterInfo], reporting_start_ns: int,
                    period: str | None = None) -> list[Point]:
    """``period``: ``month`` or ``year`` for the service's reporting periods (a tag; the CLI's own
    ranges have none)."""
    orgs = {m.id: m.org for m in meters}
    out: list[Point] = []
    for mid, model in report.models.items():
        s = report.savings.get(mid)
        fields = {
            "hdd_bp_c": model.hdd_bp_c, "cdd_bp_c": model.cdd_bp_c, "intercept": model.intercept,
            "beta_hdd": model.beta_hdd, "beta_cdd": model.beta_cdd, "r2": model.r2, "adj_r2": model.adj_r2,
            "cvrmse": model.cvrmse, "nmbe": model.nmbe, "cvrmse_monthly": model.cvrmse_monthly,
            "nmbe_monthly": model.nmbe_monthly, "baseline_days": model.n, "g14_ok": model.g14_ok,
            "g14_daily_ok": model.g14_daily_ok, "g14_monthly_ok": model.g14_monthly_ok, "sufficient": model.sufficient,
            "reasons": ",".join(r.code for r in model.refusals),
        }
        notes = list(model.notes)
        if s is not None:
            fields["reporting_days"] = s.days
            fields["reporting_sufficient"] = s.reporting_sufficient
            fields["reporting_reasons"] = ",".join(r.code for r in s.reporting_reasons if r.refuses)
            notes += [f"{r.code}: {r.text}" for r in s.reporting_reasons]
            if s.reported:
                fields.update({"predicted": s.predicted, "actual": s.actual, "savings": s.savings,
                               "savings_fraction": s.fraction, "fsu": s.fsu,
                               "savings_uncertainty": s.savings_uncertainty})
        if notes:
            fields["notes"] = "; ".join(notes)
        clean = {k: v2 for k, v in fields.items() if (v2 := _num(v)) is not None}
        tags = {"meter": mid, "org": orgs.get(mid, ""), "model_type": model.model_type}
        if period is not None:
            tags["period"] = period
        out.append(Point("energy_baseline", tags, clean, reporting_start_ns))
    for a in report.anomalies:
        ev = {k: v2 for k, v in a.evidence.items() if (v2 := _num(v)) is not None}
        out.append(Point("energy_anomaly", {"meter": a.meter, "org": orgs.get(a.meter, ""), "rule": a.rule},
                         ev or {"flag": True}, a.start_ns))
    return out


DAY_MEASUREMENT = "energy_baseline_day"


def baseline_day_points(report: BaselineReport, meters: Sequence[MeterInfo], use, first: dt.date, last: dt.date,
                        reporting_first: dt.date, temp_times_ns: np.ndarray, temp_c: np.ndarray,
                        cal: LocalCalendar = LocalCalendar()) -> list[Point]:
    """Day by day, a meter's use against its baseline model (``energy_baseline_day``, tags ``meter``,
    ``org``; time = the day's start), for every meter whose baseline is sufficient: ``actual`` (the
    day's use; absent on a day not measured enough), ``predicted`` (the model at the day's mean
    temperature), ``lower`` / ``upper`` (its 95 % prediction interval), ``temp_c`` and ``reporting``
    (true from ``reporting_first`` on, false in the baseline period where it is the fit itself).
    ``use``: ``analytics.energy.jobs.DailyUse``."""
    fd, n = cal.day_of(first), (last - first).days + 1
    temp = daily_mean_temperature(temp_times_ns, temp_c, fd, n)
    ok_t = np.isfinite(temp)
    starts = cal.day_start_ns(fd + np.arange(n)).tolist()
    rep_from = cal.day_of(reporting_first) - fd
    phys = [m for m in meters if m.id in report.models]
    y = use.matrix(phys, fd, n)
    out: list[Point] = []
    for r, m in enumerate(phys):
        model = report.models[m.id]
        if not model.sufficient:
            continue
        tt = np.where(ok_t, temp, 0.0)
        pred = model.predict(tt)
        lo, hi = model.prediction_interval(tt)
        for k in np.flatnonzero(ok_t).tolist():
            f = {"predicted": float(pred[k]), "lower": float(lo[k]), "upper": float(hi[k]),
                 "temp_c": round(float(temp[k]), 2), "reporting": k >= rep_from}
            if np.isfinite(y[r, k]):
                f["actual"] = float(y[r, k])
            out.append(Point(DAY_MEASUREMENT, {"meter": m.id, "org": m.org}, f, int(starts[k])))
    return out


def describe(meter_id: str, model, s=None) -> list[str]:
    """What ``edge analytics baseline`` prints for one meter: the model line, then one line per
    reason. The line never contradicts the flags: an insufficient baseline says so instead of a
    G14 verdict and has no savings; a sufficient one says whether it meets G14, and shows savings
    only when the reporting period is sufficient too."""
    head = (f"{meter_id}: {model.model_type}, R2 {model.r2:.2f}, CV(RMSE) {model.cvrmse:.1%}, "
            f"NMBE {model.nmbe:+.1%}, ")
    if not model.sufficient:
        codes = ", ".join(r.code for r in model.refusals) or "insufficient_baseline"
        head += f"insufficient baseline: {codes}; no savings reported"
    else:
        head += "meets G14" if model.g14_ok else "MISSES G14"
        if s is not None and s.reported:
            head += f"; savings {s.savings:.1f} ({s.fraction:+.1%}, FSU {s.fsu:.0%})"
            if not model.g14_ok:
                head += " from a model outside G14's limits"
        elif s is not None:
            codes = ", ".join(r.code for r in s.refusals)
            head += f"; insufficient reporting period: {codes}; no savings reported"
    reasons = list(model.reasons) + (list(s.reporting_reasons) if s is not None else [])
    return [head] + [f"  {'refused' if r.refuses else 'warning'}: {r.code}: {r.text}" for r in reasons]


def summary(report: BaselineReport) -> str:
    """One line over all meters, counted from the same flags as the per-meter lines."""
    models = list(report.models.values())
    insufficient = sum(not m.sufficient for m in models)
    meets = sum(m.sufficient and m.g14_ok for m in models)
    misses = sum(m.sufficient and not m.g14_ok for m in models)
    reported = sum(s.reported for s in report.savings.values())
    return (f"{len(models)} meter(s): {meets} meet G14, {misses} miss G14, {insufficient} insufficient baseline(s); "
            f"savings reported for {reported}")


def parse_range(text: str, what: str) -> tuple[dt.date, dt.date]:
    """``2025-01-01:2025-12-31`` (both inclusive)."""
    try:
        a, b = text.split(":")
        first, last = dt.date.fromisoformat(a), dt.date.fromisoformat(b)
    except ValueError:
        raise ValueError(f"{what} must be FIRST:LAST local dates, e.g. 2025-01-01:2025-12-31, not {text!r}") from None
    if last < first:
        raise ValueError(f"{what}: {last} is before {first}")
    return first, last
