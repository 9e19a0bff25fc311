"""Working time: workdays from the Chinese statutory holiday calendar, with adjusted working
weekends (调休), and working hours of the day.

The ``chinese_calendar`` package (PyPI ``chinesecalendar``) knows the State Council's holiday
notices for 2004-2026 and raises for other years. A site adds later years in its config: the
dates of the year's statutory holidays (``holidays_extra``) and of its 调休 working weekends
(``workdays_extra``). A year is *covered* when the package knows it or when the config lists at
least one holiday in it (every real year has New Year's Day).

A year that is neither is computed *provisionally* (DOMAIN.md, "the calendar"): Monday-Friday
are workdays, weekends are rest days, there are no statutory holidays and no 调休. The service
must not stop computing on New Year's Day because a notice has not been entered yet; instead
every indicator of such a year carries ``provisional_calendar=true`` and is recomputed once the
year is covered (``analytics.scheduler``). ``provisional_years`` tells a job which years of a range
are provisional.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Sequence

import numpy as np

from analytics.periods import QUARTERS_PER_DAY
from edge.errors import ConfigError

log = logging.getLogger(__name__)

try:  # the package is a declared dependency; import lazily-safe so the message is ours
    import chinese_calendar as _cc
except ImportError:  # pragma: no cover - dependency missing
    _cc = None


FILL_FIELDS = ("analytics.holidays_extra", "analytics.workdays_extra")  # what an operator fills for a year


def provisional_notice(years: Sequence[int], package_years: tuple[int, int] | None) -> str:
    """The operator's message for years computed provisionally: which, why, and what to fill."""
    known = f"chinese_calendar covers {package_years[0]}-{package_years[1]}" if package_years else \
        "chinese_calendar is not installed"
    ys = ", ".join(str(y) for y in years)
    return (f"the holiday calendar does not cover {ys} ({known}): computed provisionally with weekends as rest "
            f"days and no statutory holidays, indicators flagged provisional_calendar=true; add the year's "
            f"statutory holidays to analytics.holidays_extra and its 调休 working weekends to "
            f"analytics.workdays_extra (a running service recomputes the year's days when the site file changes)")


def _package_years() -> tuple[int, int] | None:
    if _cc is None:
        return None
    years = sorted({d.year for d in _cc.holidays})
    return years[0], years[-1]


def _parse_hhmm(s: str, what: str) -> int:
    try:
        h, m = s.split(":")
        minutes = int(h) * 60 + int(m)
    except ValueError:
        raise ConfigError(f"{s!r} is not HH:MM", obj="analytics", field=what) from None
    if not 0 <= minutes <= 24 * 60:
        raise ConfigError(f"{s!r} is not a time of day", obj="analytics", field=what)
    return minutes


@lru_cache(maxsize=None)
def _package_workday(d: dt.date) -> bool:
    """``chinese_calendar.is_workday``, remembered: the package checks its year range on every call
    (about 0.1 ms), and a fleet pass over a month asks for the same days thousands of times."""
    return bool(_cc.is_workday(d))


@lru_cache(maxsize=None)
def _package_holiday(d: dt.date) -> bool:
    on_holiday, name = _cc.get_holiday_detail(d)
    return bool(on_holiday and name is not None)


@dataclass(frozen=True)
class WorkCalendar:
    """Workdays and working hours. Dates are local (Asia/Shanghai) calendar dates.

    ``workday_start``/``workday_end`` are local HH:MM; working time is ``[start, end)`` on
    workdays. Quarter hours count as working when their start lies inside that window.
    """

    workday_start: str = "08:30"
    workday_end: str = "17:30"
    holidays_extra: tuple[str, ...] = ()
    workdays_extra: tuple[str, ...] = ()
    package_years: tuple[int, int] | None = field(default_factory=_package_years)

    @classmethod
    def from_config(cls, analytics) -> "WorkCalendar":
        """From ``edge.config.Analytics`` (duck-typed: any object with the same attributes)."""
        return cls(analytics.workday_start, analytics.workday_end,
                   tuple(analytics.holidays_extra), tuple(analytics.workdays_extra))

    @cached_property
    def _extra(self) -> tuple[frozenset[dt.date], frozenset[dt.date]]:
        def parse(items: tuple[str, ...], fld: str) -> frozenset[dt.date]:
            out = set()
            for s in items:
                try:
                    out.add(dt.date.fromisoformat(s))
                except ValueError:
                    raise ConfigError(f"{s!r} is not an ISO date (YYYY-MM-DD)", obj="analytics", field=fld) from None
            return frozenset(out)
        hol = parse(self.holidays_extra, "holidays_extra")
        work = parse(self.workdays_extra, "workdays_extra")
        both = hol & work
        if both:
            raise ConfigError(f"{sorted(both)[0]} is both a holiday and a workday", obj="analytics",
                              field="workdays_extra")
        return hol, work

    def checked(self) -> "WorkCalendar":
        """This calendar, once its dates and hours parse (``ConfigError`` naming the field otherwise)."""
        _ = self._extra, self.window_minutes
        return self

    @cached_property
    def window_minutes(self) -> tuple[int, int]:
        a = _parse_hhmm(self.workday_start, "workday_start")
        b = _parse_hhmm(self.workday_end, "workday_end")
        if b <= a:
            raise ConfigError("workday_end must be after workday_start", obj="analytics", field="workday_end")
        return a, b

    def covers(self, year: int) -> bool:
        if self.package_years and self.package_years[0] <= year <= self.package_years[1]:
            return True
        return any(d.year == year for d in self._extra[0])

    def is_provisional(self, year: int) -> bool:
        """True for a year computed provisionally (weekends only): neither the package nor the config covers it."""
        return not self.covers(year)

    def provisional_years(self, first: dt.date, last: dt.date) -> tuple[int, ...]:
        """The years of ``[first, last]`` that are computed provisionally."""
        return tuple(y for y in range(first.year, last.year + 1) if not self.covers(y))

    def is_workday(self, d: dt.date) -> bool:
        hol, work = self._extra
        if d in work:
            return True
        if d in hol:
            return False
        if self.package_years and self.package_years[0] <= d.year <= self.package_years[1]:
            return _package_workday(d)
        return d.weekday() < 5  # a config-covered year's other days, or a provisional year

    def is_statutory_holiday(self, d: dt.date) -> bool:
        """A statutory holiday day off (New Year, Spring Festival, National Day...), as opposed
        to an ordinary weekend. Config ``holidays_extra`` dates count as statutory; a provisional
        year has none."""
        hol, work = self._extra
        if d in work:
            return False
        if d in hol:
            return True
        if self.package_years and self.package_years[0] <= d.year <= self.package_years[1]:
            return _package_holiday(d)
        return False

    def changed_days(self, other: "WorkCalendar", first: dt.date, last: dt.date) -> list[dt.date]:
        """Days of ``[first, last]`` that ``other`` classifies differently (workday, statutory holiday,
        or provisional): what must be recomputed when the calendar changes from this one to ``other``."""
        out = []
        d = first
        while d <= last:
            if (self.is_workday(d) != other.is_workday(d) or self.is_statutory_holiday(d) != other.is_statutory_holiday(d)
                    or self.is_provisional(d.year) != other.is_provisional(d.year)):
                out.append(d)
            d += dt.timedelta(days=1)
        return out

    def is_holiday_or_weekend(self, d: dt.date) -> bool:
        return not self.is_workday(d)

    def workday_mask(self, first: dt.date, n_days: int) -> np.ndarray:
        """bool[n_days]: True on workdays (调休 weekends included, holidays excluded)."""
        return np.fromiter((self.is_workday(first + dt.timedelta(days=i)) for i in range(n_days)),
                           dtype=bool, count=n_days)

    def working_quarters(self, first: dt.date, n_days: int) -> np.ndarray:
        """bool[n_days, 96]: True for quarter hours of working time."""
        a, b = self.window_minutes
        q_start_min = np.arange(QUARTERS_PER_DAY) * 15
        in_window = (q_start_min >= a) & (q_start_min < b)
        return self.workday_mask(first, n_days)[:, None] & in_window[None, :]
