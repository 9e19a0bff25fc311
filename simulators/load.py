"""Office load model for the meter simulators, shaped by a real building's hourly data.

From ``data/school_hourly_2018.csv`` (a real school, one year hourly kWh and outdoor °C) we take:
the working-day and non-working-day daily profiles (normalised to the working-day peak), the
night base load (5th percentile of 00:00-05:00), and the temperature sensitivity of daytime load
above the base (cooling slope above 18 °C, heating slope below 14 °C, least squares). The
outdoor temperature of the same hour-of-year drives HVAC.

On top of that shape: an office lunch dip (12:00-13:30, Chinese offices break for lunch),
statutory holidays and 调休 working weekends from ``chinese_calendar`` (plain weekdays outside
its years), a per-meter peak and phase split, and deterministic noise from a seed. Time is
Asia/Shanghai (UTC+8, no DST). All functions are pure: time in, numbers out.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent / "data" / "school_hourly_2018.csv"
TZ_OFFSET_S = 8 * 3600


@dataclass(frozen=True)
class BuildingShape:
    """What the real data says about a building's load, as fractions of the working-day peak."""

    workday: np.ndarray        # 24 hourly fractions
    offday: np.ndarray         # 24 hourly fractions
    base: float                # night base load fraction
    cooling_per_c: float       # extra fraction of the above-base load per °C above 18
    heating_per_c: float       # per °C below 14
    temp_c: np.ndarray         # 8760 hourly outdoor temperatures


def fit_shape(kwh: np.ndarray, temp_c: np.ndarray, weekday: np.ndarray, hour: np.ndarray) -> BuildingShape:
    """Fit the shape from hourly arrays (NaN kWh allowed). Pure."""
    ok = np.isfinite(kwh)
    wk = np.array([np.nanmean(kwh[ok & (weekday < 5) & (hour == h)]) for h in range(24)])
    we = np.array([np.nanmean(kwh[ok & (weekday >= 5) & (hour == h)]) for h in range(24)])
    peak = float(wk.max())
    night = kwh[ok & (hour < 5)]
    base = float(np.percentile(night, 5)) / peak
    day = ok & (weekday < 5) & (hour >= 9) & (hour <= 15)
    above = kwh[day] / peak - base
    cdd = np.maximum(0.0, temp_c[day] - 18.0)
    hdd = np.maximum(0.0, 14.0 - temp_c[day])
    X = np.column_stack([np.ones_like(cdd), cdd, hdd])
    coef, *_ = np.linalg.lstsq(X, above, rcond=None)
    mean_above = max(float(coef[0]), 1e-6)
    return BuildingShape(workday=wk / peak, offday=we / peak, base=base,
                         cooling_per_c=max(0.0, float(coef[1])) / mean_above,
                         heating_per_c=max(0.0, float(coef[2])) / mean_above,
                         temp_c=temp_c.astype(float))


@lru_cache(maxsize=1)
def school_shape(path: str = str(DATA)) -> BuildingShape:
    kwh, temp, wd, hr = [], [], [], []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            t = dt.datetime.fromisoformat(row["local_time"])
            kwh.append(float(row["kwh"]) if row["kwh"] else math.nan)
            temp.append(float(row["temp_c"]))
            wd.append(t.weekday())
            hr.append(t.hour)
    return fit_shape(np.array(kwh), np.array(temp), np.array(wd), np.array(hr))


@lru_cache(maxsize=4096)
def is_workday(day: dt.date) -> bool:
    """Statutory calendar with 调休 where ``chinese_calendar`` knows the year, else Mon-Fri."""
    try:
        import chinese_calendar
        return bool(chinese_calendar.is_workday(day))
    except (NotImplementedError, ImportError):
        return day.weekday() < 5


def _noise(seed: int, k: int) -> float:
    """Deterministic uniform noise in [-1, 1] for integer step ``k``."""
    x = (k * 2654435761 + seed * 40503 + 0x9E3779B9) & 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x45D9F3B) & 0xFFFFFFFF
    x ^= x >> 16
    return x / 0x7FFFFFFF - 1.0


def smooth_noise(seed: int, t_s: float, period_s: float = 60.0) -> float:
    k = math.floor(t_s / period_s)
    a = (t_s / period_s) - k
    return _noise(seed, k) * (1 - a) + _noise(seed, k + 1) * a


def _noise_many(seed: int, k: np.ndarray) -> np.ndarray:
    """``_noise`` for an array of non-negative integer steps, bit for bit (uint64 arithmetic, masked)."""
    m = np.uint64(0xFFFFFFFF)
    x = (k.astype(np.uint64) * np.uint64(2654435761) + np.uint64(seed * 40503 + 0x9E3779B9)) & m
    x ^= x >> np.uint64(16)
    x = (x * np.uint64(0x45D9F3B)) & m
    x ^= x >> np.uint64(16)
    return x.astype(np.float64) / 0x7FFFFFFF - 1.0


def smooth_noise_many(seed: int, t_s: np.ndarray, period_s: float = 60.0) -> np.ndarray:
    """``smooth_noise`` over an array of times (s), the same values."""
    u = np.asarray(t_s, dtype=np.float64) / period_s
    k = np.floor(u)
    a = u - k
    ki = k.astype(np.int64)
    return _noise_many(seed, ki) * (1 - a) + _noise_many(seed, ki + 1) * a


@dataclass(frozen=True)
class Conditions:
    """One instant's drivers: occupancy fraction (0 base .. 1 full), outdoor temperature, workday."""

    load_frac: float
    occupancy: float
    temp_c: float
    workday: bool


def conditions(t_ns: int, shape: BuildingShape | None = None) -> Conditions:
    shape = shape or school_shape()
    local = t_ns / 1e9 + TZ_OFFSET_S
    day = dt.date(1970, 1, 1) + dt.timedelta(days=int(local // 86400))
    hour_f = (local % 86400) / 3600.0
    work = is_workday(day)
    prof = shape.workday if work else shape.offday
    h0 = int(hour_f) % 24
    a = hour_f - int(hour_f)
    frac = float(prof[h0] * (1 - a) + prof[(h0 + 1) % 24] * a)
    if work and 12.0 <= hour_f < 13.5:
        frac = shape.base + (frac - shape.base) * 0.8  # lunch dip: lights and PCs off in offices
    hoy = (day.timetuple().tm_yday - 1) * 24 + h0
    n = len(shape.temp_c)
    temp = float(shape.temp_c[hoy % n] * (1 - a) + shape.temp_c[(hoy + 1) % n] * a)
    occ = max(0.0, (frac - shape.base) / max(1e-6, 1.0 - shape.base))
    return Conditions(frac, min(1.0, occ), temp, work)


@dataclass(frozen=True)
class ConditionsMany:
    """``Conditions`` for an array of instants (the history backfill evaluates a year at once)."""

    load_frac: np.ndarray
    occupancy: np.ndarray
    temp_c: np.ndarray
    workday: np.ndarray      # bool
    local_hour: np.ndarray   # local hour of day, fractional


def conditions_many(t_ns: np.ndarray, shape: BuildingShape | None = None) -> ConditionsMany:
    """``conditions`` for every instant of ``t_ns`` (int64 ns UTC), vectorised, the same values."""
    shape = shape or school_shape()
    t = np.asarray(t_ns, dtype=np.int64)
    local = t / 1e9 + TZ_OFFSET_S
    day = np.floor_divide(local, 86400).astype(np.int64)
    hour_f = np.mod(local, 86400) / 3600.0
    uniq, inv = np.unique(day, return_inverse=True)
    epoch = dt.date(1970, 1, 1)
    work = np.array([is_workday(epoch + dt.timedelta(days=int(d))) for d in uniq], dtype=bool)[inv]
    h0i = hour_f.astype(np.int64)
    a = hour_f - h0i
    h0 = h0i % 24
    h1 = (h0 + 1) % 24
    frac = np.where(work, shape.workday[h0] * (1 - a) + shape.workday[h1] * a,
                    shape.offday[h0] * (1 - a) + shape.offday[h1] * a)
    lunch = work & (hour_f >= 12.0) & (hour_f < 13.5)
    frac = np.where(lunch, shape.base + (frac - shape.base) * 0.8, frac)
    ddays = uniq.astype("datetime64[D]")
    yday = (ddays - ddays.astype("datetime64[Y]").astype("datetime64[D]")).astype(np.int64)[inv]  # 0-based
    hoy = yday * 24 + h0
    n = len(shape.temp_c)
    temp = shape.temp_c[hoy % n] * (1 - a) + shape.temp_c[(hoy + 1) % n] * a
    occ = np.minimum(1.0, np.maximum(0.0, (frac - shape.base) / max(1e-6, 1.0 - shape.base)))
    return ConditionsMany(frac, occ, temp, work, hour_f)


def hourly_temperature(start_ns: int, hours: int, shape: BuildingShape | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The outdoor temperature the load model uses, on the hour for ``hours`` hours from ``start_ns``
    (a whole local hour): the school's 2018 year mapped onto these dates by hour of the year (as
    ``conditions`` does). Returns (times_ns, temp_c): what a weather CSV for the same days holds."""
    t = int(start_ns) + np.arange(hours, dtype=np.int64) * 3600 * 10**9
    return t, conditions_many(t, shape).temp_c


class OfficeLoad:
    """Electric power of one office circuit/building (kW), with HVAC following the temperature."""

    def __init__(self, peak_kw: float = 40.0, seed: int = 0, shape: BuildingShape | None = None) -> None:
        self.peak_kw = peak_kw
        self.seed = seed
        self.shape = shape or school_shape()

    def power_kw(self, t_ns: int) -> float:
        c = conditions(t_ns, self.shape)
        s = self.shape
        hvac = s.cooling_per_c * max(0.0, c.temp_c - 18.0) + s.heating_per_c * max(0.0, 14.0 - c.temp_c)
        frac = s.base + (c.load_frac - s.base) * (1.0 + hvac)
        frac *= 1.0 + 0.03 * smooth_noise(self.seed, t_ns / 1e9)
        return max(0.0, self.peak_kw * frac)

    def power_kw_many(self, t_ns: np.ndarray, cond: ConditionsMany | None = None) -> np.ndarray:
        """``power_kw`` at every instant of ``t_ns``; ``cond``: ``conditions_many(t_ns, self.shape)``
        when the caller has it (loads of one shape share it)."""
        c = cond if cond is not None else conditions_many(t_ns, self.shape)
        s = self.shape
        hvac = s.cooling_per_c * np.maximum(0.0, c.temp_c - 18.0) + s.heating_per_c * np.maximum(0.0, 14.0 - c.temp_c)
        frac = s.base + (c.load_frac - s.base) * (1.0 + hvac)
        frac = frac * (1.0 + 0.03 * smooth_noise_many(self.seed, np.asarray(t_ns) / 1e9))
        return np.maximum(0.0, self.peak_kw * frac)


def phase_weights(seed: int) -> tuple[float, float, float]:
    """An uneven split of load over L1..L3 (real buildings are never balanced)."""
    w = np.array([0.37, 0.34, 0.29]) + 0.03 * np.array([_noise(seed, 1), _noise(seed, 2), _noise(seed, 3)])
    w = np.roll(w, seed % 3)
    return tuple(float(x) for x in w / w.sum())  # type: ignore[return-value]


class SumLoad:
    """A parent circuit (a main incomer): the circuits behind it, plus what is not sub-metered and the
    distribution losses. Its meter reads their sum, as a real incomer does, so a simulated building
    wired as a tree gives children that add up below their parent."""

    def __init__(self, parts: "list[OfficeLoad | SumLoad]", unmetered: OfficeLoad | None = None,
                 loss_share: float = 0.02) -> None:
        self.parts = list(parts)
        self.unmetered = unmetered
        self.loss_share = loss_share
        self.shape = self.parts[0].shape if self.parts else (unmetered.shape if unmetered else school_shape())
        self.peak_kw = (sum(p.peak_kw for p in self.parts) + (unmetered.peak_kw if unmetered else 0.0)) * (1 + loss_share)
        self.seed = self.parts[0].seed if self.parts else 0

    def power_kw(self, t_ns: int) -> float:
        kw = sum(p.power_kw(t_ns) for p in self.parts)
        if self.unmetered is not None:
            kw += self.unmetered.power_kw(t_ns)
        return kw * (1.0 + self.loss_share)

    def power_kw_many(self, t_ns: np.ndarray, cond: ConditionsMany | None = None) -> np.ndarray:
        kw = np.zeros(len(t_ns))
        for p in self.parts:
            kw += p.power_kw_many(t_ns, cond)
        if self.unmetered is not None:
            kw += self.unmetered.power_kw_many(t_ns, cond)
        return kw * (1.0 + self.loss_share)
