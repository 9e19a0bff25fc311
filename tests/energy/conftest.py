"""Fixtures for the energy analytics tests: calendar, October 2025 working calendar, school data."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from analytics.periods import LocalCalendar
from analytics.workcal import WorkCalendar

SCHOOL_CSV = Path("/work/shared/data/school_hourly_2018.csv")


def school_csv_path() -> Path:
    here = Path(__file__).resolve()
    for p in [here.parents[2].parent / "shared/data/school_hourly_2018.csv", SCHOOL_CSV,
              here.parents[2] / "shared/data/school_hourly_2018.csv"]:
        if p.exists():
            return p
    pytest.skip("shared/data/school_hourly_2018.csv not found")


@pytest.fixture
def cal() -> LocalCalendar:
    return LocalCalendar()


@pytest.fixture
def workcal() -> WorkCalendar:
    return WorkCalendar()


@pytest.fixture
def school_daily():
    """Daily kWh (NaN for days with a missing hour) and daily mean °C, rows paired as SOURCES.md says."""
    raw = np.genfromtxt(school_csv_path(), delimiter=",", skip_header=1, usecols=(1, 2))
    k = raw[:, 0].reshape(-1, 24)
    t = raw[:, 1].reshape(-1, 24)
    y = np.where(np.isnan(k).any(axis=1), np.nan, k.sum(axis=1))
    return y, t.mean(axis=1), dt.date(2018, 1, 1)
