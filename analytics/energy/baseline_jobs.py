"""Baselines and savings for a site's meters: the CalTRACK fit (``analytics.energy.baseline``) turned
into Points, and the ``edge analytics baseline`` verb that reads through the query layer.

Points written:

* ``energy_baseline`` (tags ``meter``, ``org``, ``model_type``; time = reporting period start):
  the model (balance points °C, coefficients, R², CV(RMSE), NMBE, G14 verdicts, data
  sufficiency) and the savings over the reporting period (predicted, actual, savings, fraction,
  fractional savings uncertainty at 68 %). A model that misses ASHRAE Guideline 14's limits is
  written with ``g14_ok=false``, never hidden.
* ``energy_anomaly`` (tags ``meter``, ``rule``; time = the day's start): reporting days outside
  the model's 95 % prediction interval, with the evidence.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Sequence

from analytics.energy.jobs import BaselineReport, MeterInfo
from edge.point import Point


def _num(v) -> float | int | bool | str | None:
    if isinstance(v, bool | str | int):
        return v
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def baseline_points(report: BaselineReport, meters: Sequence[MeterInfo], reporting_start_ns: int) -> list[Point]:
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
        }
        if s is not None:
            fields.update({"reporting_days": s.days, "predicted": s.predicted, "actual": s.actual, "savings": s.savings,
                           "savings_fraction": s.fraction, "fsu": s.fsu, "savings_uncertainty": s.savings_uncertainty})
        if model.notes:
            fields["notes"] = "; ".join(model.notes)
        clean = {k: v2 for k, v in fields.items() if (v2 := _num(v)) is not None}
        out.append(Point("energy_baseline", {"meter": mid, "org": orgs.get(mid, ""), "model_type": model.model_type},
                         clean, reporting_start_ns))
    for a in report.anomalies:
        ev = {k: v2 for k, v in a.evidence.items() if (v2 := _num(v)) is not None}
        out.append(Point("energy_anomaly", {"meter": a.meter, "org": orgs.get(a.meter, ""), "rule": a.rule},
                         ev or {"flag": True}, a.start_ns))
    return out


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
