"""Fixtures of the fleet tests: a track builder for hand-made drives and the Chinese calendar."""

from __future__ import annotations

import datetime as dt
import math

import chinese_calendar
import numpy as np
import pytest

from analytics.fleet.indicators import WorkingTime
from analytics.fleet.tracks import NS, Tracks

SHANGHAI = dt.timezone(dt.timedelta(hours=8))
HANGZHOU = (30.2741, 120.1551)
M_PER_DEG = 111_194.93


def local_ns(s: str) -> int:
    """'2025-10-14 23:40' (Asia/Shanghai) as ns UTC."""
    return int(dt.datetime.fromisoformat(s).replace(tzinfo=SHANGHAI).timestamp()) * NS


class ChineseCalendar:
    """The ``WorkdayCalendar`` protocol over chinese_calendar, as analytics.workcal will bind it."""

    def is_workday(self, day: dt.date) -> bool:
        return bool(chinese_calendar.is_workday(day))

    def is_statutory_holiday(self, day: dt.date) -> bool:
        on_holiday, name = chinese_calendar.get_holiday_detail(day)
        return bool(on_holiday and name is not None)


class TrackBuilder:
    """Builds one vehicle's fixes: drive, park, gap. Positions move in metres on a local plane."""

    def __init__(self, start: str | int, lat: float = HANGZHOU[0], lon: float = HANGZHOU[1],
                 interval_s: float = 10.0, seed: int = 0) -> None:
        self.t = local_ns(start) if isinstance(start, str) else int(start)
        self.lat0, self.lon0 = lat, lon
        self.x = self.y = 0.0
        self.dt = interval_s
        self.rng = np.random.default_rng(seed)
        self.rows: list[tuple] = []  # t, x, y, speed, acc, odo
        self.odo = 0.0
        self.emit(0.0, 0)

    def emit(self, speed: float, acc: int, jitter_m: float = 0.0) -> None:
        jx, jy = self.rng.normal(0, jitter_m, 2) if jitter_m else (0.0, 0.0)
        self.rows.append((self.t, self.x + jx, self.y + jy, speed, acc, self.odo))

    def drive(self, seconds: float, speed_kmh: float, heading_deg: float = 90.0, acc: int = 1) -> "TrackBuilder":
        n = max(int(round(seconds / self.dt)), 1)
        step = speed_kmh / 3.6 * self.dt
        h = math.radians(heading_deg)
        for _ in range(n):
            self.t += int(self.dt * NS)
            self.x += math.sin(h) * step
            self.y += math.cos(h) * step
            self.odo += step / 1000.0
            self.emit(speed_kmh, acc)
        return self

    def park(self, seconds: float, jitter_m: float = 0.0, acc: int = 0) -> "TrackBuilder":
        """Stand still for ``seconds`` after the current fix: fixes every interval, and one exactly
        at the end, so the vehicle is *seen* staying ``seconds``."""
        start = self.t
        k = 1
        while k * self.dt < seconds:
            self.t = start + int(k * self.dt * NS)
            self.emit(0.0, acc, jitter_m)
            k += 1
        self.t = start + int(seconds * NS)
        self.emit(0.0, acc, jitter_m)
        return self

    def gap(self, seconds: float, move_m: float = 0.0, heading_deg: float = 90.0) -> "TrackBuilder":
        """No fixes for ``seconds``; the vehicle may move ``move_m`` unseen."""
        h = math.radians(heading_deg)
        self.x += math.sin(h) * move_m
        self.y += math.cos(h) * move_m
        self.odo += move_m / 1000.0
        self.t += int(seconds * NS)
        return self

    def fix(self, speed: float = 0.0, acc: int = 0) -> "TrackBuilder":
        self.emit(speed, acc)
        return self

    def tracks(self, vehicle: str = "浙A·12345", acc: bool = True, speed: bool = True, odometer: bool = True) -> Tracks:
        a = np.array(self.rows, dtype=float)
        lat = self.lat0 + a[:, 2] / M_PER_DEG
        lon = self.lon0 + a[:, 1] / (M_PER_DEG * math.cos(math.radians(self.lat0)))
        return Tracks.single(vehicle, np.array([r[0] for r in self.rows], dtype=np.int64), lat, lon,
                             a[:, 3] if speed else None, a[:, 4].astype(np.int8) if acc else None,
                             a[:, 5] if odometer else None)


@pytest.fixture
def cn_working() -> WorkingTime:
    return WorkingTime(ChineseCalendar(), 8 * 60 + 30, 17 * 60 + 30, 8 * 3600,
                       ChineseCalendar().is_statutory_holiday)


@pytest.fixture
def builder():
    return TrackBuilder


@pytest.fixture
def at():
    """local_ns: 'YYYY-MM-DD HH:MM' Asia/Shanghai -> ns UTC."""
    return local_ns


@pytest.fixture
def cn_calendar() -> ChineseCalendar:
    return ChineseCalendar()
