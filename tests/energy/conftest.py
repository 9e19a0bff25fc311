"""Fixtures for the energy analytics tests: calendar, October 2025 working calendar, school data."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from analytics.periods import LocalCalendar
from analytics.workcal import WorkCalendar

# the real data set ships with the simulators (see simulators/data/SOURCES.md)
SCHOOL_CSV = Path(__file__).resolve().parents[2] / "simulators" / "data" / "school_hourly_2018.csv"


def school_csv_path() -> Path:
    assert SCHOOL_CSV.exists(), f"{SCHOOL_CSV} is missing: it is part of the repository"
    return SCHOOL_CSV


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
