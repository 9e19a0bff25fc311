"""Energy anomalies, each with the rule that fired and its evidence.

Rules (shared/DOMAIN.md):

- ``outside_prediction_interval``: a day's consumption outside the baseline model's prediction
  interval (default 95 %) for that day's temperature.
- ``night_load_above_base`` / ``holiday_load_above_base``: mean power in the night window of a
  day (or over a whole non-working day) above the reference base load × (1 + margin) + an
  absolute floor (so a 0.1 kW base load does not raise alarms for 0.2 kW).
- ``counter_stalled``: the counter did not move for at least ``stall_hours`` while it had been
  moving before (a frozen register, a dead CT); ``counter_jump`` / ``counter_reset`` /
  ``counter_replaced`` / ``counter_wrap`` / ``counter_glitch`` / ``counter_gap``: the events of
  ``analytics.energy.counters``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from analytics.energy.baseline import DailyModel
from analytics.energy.counters import CounterDeltas, CounterEvent, CounterSpec, Status
from analytics.periods import NS_PER_HOUR, NS_PER_S


@dataclass(frozen=True)
class Anomaly:
    rule: str
    meter: str
    start_ns: int
    end_ns: int
    evidence: dict = field(default_factory=dict)


def baseline_anomalies(meter: str, model: DailyModel, day_starts_ns: np.ndarray, y: np.ndarray,
                       temp_c: np.ndarray, level: float = 0.95) -> list[Anomaly]:
    lo, hi = model.prediction_interval(temp_c, level)
    yhat = model.predict(temp_c)
    y = np.asarray(y, dtype=np.float64)
    out = []
    bad = ~np.isnan(y) & ~np.isnan(temp_c) & ((y < lo) | (y > hi))
    for k in np.flatnonzero(bad):
        out.append(Anomaly("outside_prediction_interval", meter, int(day_starts_ns[k]),
                           int(day_starts_ns[k]) + 86400 * NS_PER_S,
                           {"actual": float(y[k]), "predicted": float(yhat[k]), "lower": float(lo[k]),
                            "upper": float(hi[k]), "level": level, "temp_c": float(temp_c[k]),
                            "model": model.model_type}))
    return out


def night_load_anomalies(meter: str, day_starts_ns: np.ndarray, q_kwh: np.ndarray, workday: np.ndarray,
                         base_load_kw: float, night_quarters: np.ndarray = np.arange(0, 24),
                         margin: float = 0.5, floor_kw: float = 1.0) -> list[Anomaly]:
    """``q_kwh`` (days, 96) quarter energy of one meter; ``workday`` (days,) bool; ``base_load_kw``
    the reference (e.g. the baseline period's 5th percentile of night kW)."""
    limit = base_load_kw * (1 + margin) + floor_kw
    out = []
    night_kw = np.nanmean(q_kwh[:, night_quarters], axis=1) * 4 if q_kwh.size else np.array([])
    day_kw = np.nanmean(q_kwh, axis=1) * 4 if q_kwh.size else np.array([])
    for k in range(q_kwh.shape[0]):
        if not workday[k] and np.isfinite(day_kw[k]) and day_kw[k] > limit:
            out.append(Anomaly("holiday_load_above_base", meter, int(day_starts_ns[k]),
                               int(day_starts_ns[k]) + 86400 * NS_PER_S,
                               {"mean_kw": float(day_kw[k]), "base_load_kw": base_load_kw, "limit_kw": limit,
                                "margin": margin, "floor_kw": floor_kw}))
        elif np.isfinite(night_kw[k]) and night_kw[k] > limit:
            a = int(day_starts_ns[k]) + int(night_quarters[0]) * 900 * NS_PER_S
            b = int(day_starts_ns[k]) + (int(night_quarters[-1]) + 1) * 900 * NS_PER_S
            out.append(Anomaly("night_load_above_base", meter, a, b,
                               {"mean_kw": float(night_kw[k]), "base_load_kw": base_load_kw, "limit_kw": limit,
                                "margin": margin, "floor_kw": floor_kw}))
    return out


def counter_anomalies(meter: str, d: CounterDeltas, values: np.ndarray, spec: CounterSpec,
                      stall_hours: float = 24.0) -> list[Anomaly]:
    """Stalled counters (1-D series of one meter) plus the counter events as anomalies."""
    out = [Anomaly(f"counter_{e.kind}", meter, e.start_ns, e.end_ns,
                   {"before": e.before, "after": e.after, "counted": e.delta, "rule": e.rule})
           for e in d.events(values, spec) if e.kind in ("jump", "reset", "replaced", "wrap", "glitch", "gap")]
    v = np.asarray(values, dtype=np.float64)
    sel = d.valid if d.valid.ndim == 1 else d.valid[0]
    t = d.times_ns[sel]
    vv = v[sel]
    if t.size < 2:
        return out
    moved = np.r_[True, np.diff(vv) != 0]
    starts = np.flatnonzero(moved)              # index where a run of equal values starts
    ends = np.r_[starts[1:] - 1, t.size - 1]
    for a, b in zip(starts, ends):
        dur_h = (t[b] - t[a]) / NS_PER_HOUR
        if dur_h >= stall_hours and a > 0:      # a > 0: it had been moving before the run
            out.append(Anomaly("counter_stalled", meter, int(t[a]), int(t[b]),
                               {"value": float(vv[a]), "hours": float(dur_h), "stall_hours": stall_hours,
                                "readings": int(b - a + 1)}))
    return out


def events_as_anomalies(meter: str, events: list[CounterEvent]) -> list[Anomaly]:
    return [Anomaly(f"counter_{e.kind}", meter, e.start_ns, e.end_ns,
                    {"before": e.before, "after": e.after, "counted": e.delta, "rule": e.rule}) for e in events]


__all__ = ["Anomaly", "baseline_anomalies", "night_load_anomalies", "counter_anomalies", "events_as_anomalies",
           "Status"]
