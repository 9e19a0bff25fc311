"""Data quality a metered building has: named alerts instead of numbers averaged into indicators.

Rules (docs/energy.md, "Data quality"):

- ``children_exceed_parent``: the physical meters behind a parent measure more than the parent
  itself, by more than ``excess_share`` of the parent's energy and ``excess_min`` (per quarter hour,
  in the carrier's unit), for at least ``min_quarters`` consecutive quarters. Energy cannot come
  out of nowhere: a current transformer ratio entered wrong, a crossed wire or a unit mismatch.
  One alert per run, on the parent and on each of its children, with both totals over the run.
- ``virtual_negative``: a virtual meter (a parent minus what is behind it) below
  ``−excess_min`` for ``min_quarters`` consecutive quarters: the same fault seen from the
  remainder.

A quarter unknown on either side breaks a run (no evidence, no alert). The alert's identity is
(meter, rule, start of the run): recomputing a period writes the same point again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.point import Point

MEASUREMENT = "alert"


@dataclass(frozen=True)
class QualityRules:
    excess_share: float = 0.05
    excess_min: float = 0.05        # kWh (or m3) per quarter hour: 0.2 kW of noise floor
    min_quarters: int = 4           # one hour


@dataclass(frozen=True)
class DataQualityAlert:
    rule: str                       # children_exceed_parent | virtual_negative
    meter: str                      # the meter the alert is on
    org: str
    start_ns: int
    end_ns: int
    parent: str
    children: tuple[str, ...]
    parent_total: float             # over the run, in the carrier's unit
    children_total: float
    unit: str
    quarters: int

    @property
    def message(self) -> str:
        if self.rule == "virtual_negative":
            return (f"virtual meter {self.meter} below zero for {self.quarters} quarters: {self.parent} measured "
                    f"{self.parent_total:.2f} {self.unit}, the meters taken from it {self.children_total:.2f}")
        return (f"meters behind {self.parent} ({', '.join(self.children)}) measured {self.children_total:.2f} "
                f"{self.unit}, more than {self.parent} itself ({self.parent_total:.2f} {self.unit}) for "
                f"{self.quarters} quarters: check CT ratios, wiring and units")

    def to_point(self) -> Point:
        fields = {"message": self.message, "parent": self.parent, "children": ",".join(self.children),
                  f"parent_{self.unit.lower()}": self.parent_total, f"children_{self.unit.lower()}": self.children_total,
                  "excess_share": (self.children_total - self.parent_total) / self.parent_total
                  if self.parent_total > 0 else float("inf") if self.children_total > 0 else 0.0,
                  "quarters": self.quarters, "end_ns": self.end_ns}
        if not np.isfinite(fields["excess_share"]):
            fields.pop("excess_share")
        return Point(MEASUREMENT, {"kind": self.rule, "meter": self.meter, "org": self.org}, fields, self.start_ns)


def runs(flag: np.ndarray, min_len: int) -> list[tuple[int, int]]:
    """[start, end) of every run of True at least ``min_len`` long."""
    if not flag.any():
        return []
    d = np.diff(np.r_[0, flag.astype(np.int8), 0])
    starts = np.flatnonzero(d == 1)
    ends = np.flatnonzero(d == -1)
    keep = ends - starts >= min_len
    return list(zip(starts[keep].tolist(), ends[keep].tolist()))


def children_exceed_parent(parent_q: np.ndarray, children_q: np.ndarray, rules: QualityRules = QualityRules()
                           ) -> list[tuple[int, int, float, float]]:
    """``parent_q`` (quarters,) and ``children_q`` (children, quarters) energy per quarter → the runs
    (first quarter, end quarter, parent total, children total) where the children exceed the parent."""
    c = np.atleast_2d(children_q)
    csum = c.sum(axis=0)
    with np.errstate(invalid="ignore"):
        flag = csum - parent_q > rules.excess_share * np.abs(parent_q) + rules.excess_min
    flag &= ~np.isnan(parent_q) & ~np.isnan(csum)
    return [(a, b, float(parent_q[a:b].sum()), float(csum[a:b].sum())) for a, b in runs(flag, rules.min_quarters)]


def negative_runs(q: np.ndarray, rules: QualityRules = QualityRules()) -> list[tuple[int, int, float]]:
    with np.errstate(invalid="ignore"):
        flag = q < -rules.excess_min
    return [(a, b, float(q[a:b].sum())) for a, b in runs(flag, rules.min_quarters)]
