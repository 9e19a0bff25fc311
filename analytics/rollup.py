"""A district's (city's, province's) institutions side by side: the arithmetic of the roll-up view.

DB33/T 2474-2022 6.2.5-6.2.6: county and city figures roll up to the province, each level sees what
lies under it. The indicator jobs already compute every org's and building's rows (``energy_indicator``
with carrier ``all``: kWh, kgce, per m² and per person; ``fleet_indicator`` at org scope:
utilisation, 出车率, holiday trips; ``energy_baseline``: savings per meter); the roll-up puts them
side by side. What it adds is small and pure, here:

- ``period_span``: the period containing a date (its first day, its days, and how many of them are
  closed by a given day);
- ``quota_for``: an org's quota (kWh/(m²·a)), the floor-area-weighted constraint value of its
  buildings' classes (GB/T 51161-2016; ``analytics.energy.factors.OFFICE_QUOTAS``, unconfirmed);
- ``quota_progress``: kWh/m² of the period ÷ the annual quota prorated to the period's length (a
  month counts its days of the year); 1 = the period's share of the quota used;
- ``savings_of``: savings of a scope against the weather-normalised baselines of its top electricity
  meters (the incomers: a meter behind another is inside its parent's figure): their sum and its
  fraction of what the baselines predict, only when every one of them reports savings (CalTRACK
  sufficiency), else none, with the reasons;
- ``rank``: rows ordered by a field, missing values last.
"""

from __future__ import annotations

import calendar
import datetime as dt
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from analytics.energy.factors import OFFICE_QUOTAS

PERIODS = ("day", "month", "year")


@dataclass(frozen=True)
class PeriodSpan:
    period: str
    first: dt.date
    days: int           # days in the period
    closed_days: int    # of them, days before ``today`` (what month and year rows cover)

    @property
    def end(self) -> dt.date:
        """The first day after the period."""
        return self.first + dt.timedelta(days=self.days)

    @property
    def year_days(self) -> int:
        return 366 if calendar.isleap(self.first.year) else 365

    @property
    def elapsed(self) -> float:
        return self.closed_days / self.days


def period_span(period: str, at: dt.date, today: dt.date) -> PeriodSpan:
    """The ``period`` (day, month, year) containing ``at``, as of ``today``."""
    if period == "day":
        first, days = at, 1
    elif period == "month":
        first = at.replace(day=1)
        days = calendar.monthrange(at.year, at.month)[1]
    elif period == "year":
        first = dt.date(at.year, 1, 1)
        days = 366 if calendar.isleap(at.year) else 365
    else:
        raise ValueError(f"period {period!r}: one of {', '.join(PERIODS)}")
    closed = min(max((today - first).days, 0), days)
    return PeriodSpan(period, first, days, closed)


def quota_for(buildings: Iterable[tuple[float, str | None]]) -> float | None:
    """The floor-area-weighted office quota (kWh/(m²·a)) of (floor area m², quota class) pairs;
    None when no building has a class."""
    area = total = 0.0
    for a, cls in buildings:
        q = OFFICE_QUOTAS.get(cls) if cls else None
        if q is not None and a > 0:
            area += a
            total += a * q.constraint
    return total / area if area > 0 else None


def quota_progress(kwh_per_m2: float | None, quota: float | None, span: PeriodSpan) -> float | None:
    """kWh/m² of the period ÷ (annual quota × the period's days ÷ the year's days)."""
    if kwh_per_m2 is None or quota is None or quota <= 0 or not math.isfinite(kwh_per_m2):
        return None
    return kwh_per_m2 / (quota * span.days / span.year_days)


@dataclass(frozen=True)
class Savings:
    kwh: float | None
    fraction: float | None
    uncertainty_kwh: float | None = None   # 68 %, the meters' combined in quadrature (taken as independent)
    reasons: tuple[str, ...] = ()


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def savings_of(meters: Sequence[str], reports: Mapping[str, Mapping[str, Any]]) -> Savings:
    """``reports``: per meter its savings row (``savings``, ``predicted`` and ``savings_uncertainty``
    (absolute, 68 %, ASHRAE G14) when reported; else ``reasons`` / ``reporting_reasons``, comma-separated
    codes). Savings only when every meter has them."""
    if not meters:
        return Savings(None, None, None, ("no_meter",))
    total = predicted = var = 0.0
    unknown_u = False
    reasons: list[str] = []
    for m in meters:
        r = reports.get(m)
        if r is None:
            reasons.append("no_baseline")
            continue
        s, p = r.get("savings"), r.get("predicted")
        if _finite(s) and _finite(p):
            total += float(s)
            predicted += float(p)
            u = r.get("savings_uncertainty")
            if _finite(u):
                var += float(u) ** 2
            else:
                unknown_u = True
            continue
        codes = [c for k in ("reasons", "reporting_reasons") for c in str(r.get(k) or "").split(",") if c]
        reasons.extend(codes or ["insufficient_data"])
    if reasons:
        return Savings(None, None, None, tuple(dict.fromkeys(reasons)))
    return Savings(total, total / predicted if predicted else None, None if unknown_u else math.sqrt(var))


def day_report(predicted: float, actual: float, lower: float | None, upper: float | None) -> dict[str, float]:
    """A meter's day against its baseline (``energy_baseline_day``) as a savings row: the 95 %
    prediction interval's half-width ÷ 1.96 as the 68 % uncertainty of that day's savings."""
    out = {"savings": predicted - actual, "predicted": predicted}
    if _finite(lower) and _finite(upper):
        out["savings_uncertainty"] = (float(upper) - float(lower)) / 2 / 1.96
    return out


def rank(rows: list[dict], key: str, descending: bool = True) -> list[dict]:
    """``rows`` ordered by ``key`` (missing values last, ties by ``org`` then ``building``), numbered ``rank``."""
    have = [r for r in rows if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    missing = [r for r in rows if r not in have]
    have.sort(key=lambda r: (-r[key] if descending else r[key], r.get("org", ""), r.get("building") or ""))
    missing.sort(key=lambda r: (r.get("org", ""), r.get("building") or ""))
    out = have + missing
    for i, r in enumerate(out, start=1):
        r["rank"] = i
    return out
