"""Calendar periods in a fixed-offset local zone (Asia/Shanghai by default): 15 min, hour, day,
month, year.

Timestamps are int ns UTC everywhere (the shared schema). A period is named by its start, also
int ns UTC; "day 2025-10-01" in Asia/Shanghai starts at 2025-09-30T16:00:00Z.

China has kept UTC+8 without daylight saving since 1991, so local time is UTC plus a constant
offset and every local day has 96 quarter hours. ``LocalCalendar`` checks that the zone's offset
is constant over the range it is asked about and refuses (``CalendarError``) otherwise, instead
of silently producing 23- or 25-hour days.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import Enum
from zoneinfo import ZoneInfo

import numpy as np

from edge.errors import ConfigError

NS_PER_S = 1_000_000_000
NS_PER_MIN = 60 * NS_PER_S
NS_PER_HOUR = 3600 * NS_PER_S
NS_PER_DAY = 86400 * NS_PER_S
QUARTER_NS = 15 * NS_PER_MIN
QUARTERS_PER_DAY = 96


class Period(str, Enum):
    quarter = "15min"
    hour = "hour"
    day = "day"
    month = "month"
    year = "year"


class CalendarError(ConfigError):
    """The time zone cannot be handled as a fixed offset over the requested range."""


@dataclass(frozen=True, slots=True)
class LocalCalendar:
    """A zone with one UTC offset over the range in use (checked on construction by ``for_range``)."""

    tz: str = "Asia/Shanghai"
    offset_ns: int = 8 * NS_PER_HOUR

    @classmethod
    def for_range(cls, tz: str, start_ns: int, end_ns: int) -> "LocalCalendar":
        """Build the calendar for ``[start_ns, end_ns)``; raise when the offset changes inside it."""
        try:
            zi = ZoneInfo(tz)
        except Exception as e:  # ZoneInfoNotFoundError, ValueError
            raise CalendarError(f"unknown time zone {tz!r}", field="timezone") from e
        offsets = set()
        # sample at every local day start is overkill: offsets change at most a few times a year,
        # so checking the ends and every 15 days catches any DST rule.
        step = 15 * NS_PER_DAY
        t = start_ns
        while True:
            d = dt.datetime.fromtimestamp(t / NS_PER_S, tz=dt.timezone.utc).astimezone(zi)
            offsets.add(int(d.utcoffset().total_seconds()) * NS_PER_S)
            if t >= end_ns:
                break
            t = min(t + step, end_ns)
        if len(offsets) != 1:
            raise CalendarError(f"time zone {tz!r} changes its UTC offset between {start_ns} and {end_ns}; "
                                "only fixed-offset zones (e.g. Asia/Shanghai) are supported", field="timezone")
        return cls(tz, offsets.pop())

    # --- conversions -------------------------------------------------------------------------

    def local_day_index(self, t_ns: np.ndarray | int) -> np.ndarray:
        """Days since 1970-01-01 local (int64), for each UTC timestamp."""
        return np.floor_divide(np.asarray(t_ns, dtype=np.int64) + self.offset_ns, NS_PER_DAY)

    def day_start_ns(self, day_index: np.ndarray | int) -> np.ndarray:
        """UTC ns of local midnight of the given local day index."""
        return np.asarray(day_index, dtype=np.int64) * NS_PER_DAY - self.offset_ns

    def day_of(self, date: dt.date) -> int:
        return (date - dt.date(1970, 1, 1)).days

    def date_of(self, day_index: int) -> dt.date:
        return dt.date(1970, 1, 1) + dt.timedelta(days=int(day_index))

    def midnight_ns(self, date: dt.date) -> int:
        """UTC ns of local midnight starting ``date``."""
        return int(self.day_start_ns(self.day_of(date)))

    def floor_ns(self, t_ns: np.ndarray | int, period: Period) -> np.ndarray:
        """Start (UTC ns) of the local period containing each timestamp."""
        t = np.asarray(t_ns, dtype=np.int64)
        local = t + self.offset_ns
        if period is Period.quarter:
            return local - np.mod(local, QUARTER_NS) - self.offset_ns
        if period is Period.hour:
            return local - np.mod(local, NS_PER_HOUR) - self.offset_ns
        days = np.floor_divide(local, NS_PER_DAY).astype("datetime64[D]")
        if period is Period.day:
            start = days
        elif period is Period.month:
            start = days.astype("datetime64[M]").astype("datetime64[D]")
        elif period is Period.year:
            start = days.astype("datetime64[Y]").astype("datetime64[D]")
        else:  # pragma: no cover - enum is closed
            raise ValueError(period)
        return start.astype(np.int64) * NS_PER_DAY - self.offset_ns

    def month_starts(self, first_day: int, n_days: int) -> tuple[np.ndarray, np.ndarray]:
        """For ``n_days`` local days from ``first_day``: (offsets into the day axis where each
        month starts, UTC ns of each month start)."""
        return self._starts(first_day, n_days, "M")

    def year_starts(self, first_day: int, n_days: int) -> tuple[np.ndarray, np.ndarray]:
        return self._starts(first_day, n_days, "Y")

    def _starts(self, first_day: int, n_days: int, unit: str) -> tuple[np.ndarray, np.ndarray]:
        days = np.arange(first_day, first_day + n_days).astype("datetime64[D]")
        key = days.astype(f"datetime64[{unit}]")
        idx = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        start_days = key[idx].astype("datetime64[D]").astype(np.int64)
        return idx, start_days * NS_PER_DAY - self.offset_ns

    def quarter_of_day(self, t_ns: np.ndarray | int) -> np.ndarray:
        """0..95: which local quarter hour of its day each timestamp falls in."""
        local = np.asarray(t_ns, dtype=np.int64) + self.offset_ns
        return np.floor_divide(np.mod(local, NS_PER_DAY), QUARTER_NS)


SHANGHAI = LocalCalendar()


def reduce_days(daily: np.ndarray, starts: np.ndarray, how: str = "sum") -> np.ndarray:
    """Aggregate a (..., days) array into (..., periods) at ``starts`` (from ``month_starts``)."""
    if how == "sum":
        return np.add.reduceat(daily, starts, axis=-1)
    if how == "max":
        return np.maximum.reduceat(daily, starts, axis=-1)
    if how == "min":
        return np.minimum.reduceat(daily, starts, axis=-1)
    raise ValueError(f"unknown reduction {how!r}")
