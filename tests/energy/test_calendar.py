"""Asia/Shanghai periods and the working calendar with statutory holidays and 调休."""

import datetime as dt

import numpy as np
import pytest

from analytics.periods import NS_PER_HOUR, LocalCalendar, Period
from analytics.workcal import WorkCalendar, provisional_notice

NS = 10**9


def utc_ns(*a):
    return int(dt.datetime(*a, tzinfo=dt.timezone.utc).timestamp()) * NS


def test_shanghai_midnight_is_16h_utc_the_day_before(cal):
    assert cal.midnight_ns(dt.date(2025, 10, 1)) == utc_ns(2025, 9, 30, 16)
    t = np.array([utc_ns(2025, 9, 30, 15, 59), utc_ns(2025, 9, 30, 16, 0)])
    d = cal.local_day_index(t)
    assert cal.date_of(d[0]) == dt.date(2025, 9, 30) and cal.date_of(d[1]) == dt.date(2025, 10, 1)


def test_period_floors(cal):
    t = utc_ns(2025, 12, 31, 16, 7)  # 2026-01-01 00:07 local
    assert cal.floor_ns(t, Period.quarter) == utc_ns(2025, 12, 31, 16)
    assert cal.floor_ns(t, Period.hour) == utc_ns(2025, 12, 31, 16)
    assert cal.floor_ns(t, Period.day) == utc_ns(2025, 12, 31, 16)
    assert cal.floor_ns(t, Period.month) == utc_ns(2025, 12, 31, 16)
    assert cal.floor_ns(t, Period.year) == utc_ns(2025, 12, 31, 16)
    t2 = utc_ns(2025, 12, 31, 15, 59)  # still 2025-12-31 local
    assert cal.floor_ns(t2, Period.month) == utc_ns(2025, 11, 30, 16)
    assert cal.floor_ns(t2, Period.year) == utc_ns(2024, 12, 31, 16)


def test_month_starts_across_a_year(cal):
    first = cal.day_of(dt.date(2025, 11, 15))
    idx, starts = cal.month_starts(first, 60)  # to 2026-01-13
    assert idx.tolist() == [0, 16, 47]
    assert starts.tolist() == [utc_ns(2025, 10, 31, 16), utc_ns(2025, 11, 30, 16), utc_ns(2025, 12, 31, 16)]


def test_zone_with_dst_refused():
    with pytest.raises(Exception, match="changes its UTC offset"):
        LocalCalendar.for_range("Europe/Berlin", utc_ns(2025, 1, 1), utc_ns(2025, 12, 31))
    assert LocalCalendar.for_range("Asia/Shanghai", utc_ns(2025, 1, 1), utc_ns(2025, 12, 31)).offset_ns == 8 * NS_PER_HOUR


def test_october_2025_national_day_and_mid_autumn_with_adjusted_weekends(workcal):
    # State Council 2025: Oct 1-8 off; Sunday Sep 28 and Saturday Oct 11 are working days (调休)
    first = dt.date(2025, 9, 27)
    mask = workcal.workday_mask(first, 20)
    days = {first + dt.timedelta(i): bool(mask[i]) for i in range(20)}
    assert days[dt.date(2025, 9, 27)] is False          # ordinary Saturday
    assert days[dt.date(2025, 9, 28)] is True           # 调休 Sunday
    assert not any(days[dt.date(2025, 10, d)] for d in range(1, 9))
    assert days[dt.date(2025, 10, 9)] is True
    assert days[dt.date(2025, 10, 11)] is True          # 调休 Saturday
    assert days[dt.date(2025, 10, 12)] is False
    wq = workcal.working_quarters(dt.date(2025, 10, 1), 31)
    # October 2025: 23 weekdays - 6 holiday weekdays (1,2,3,6,7,8) + 1 adjusted Saturday (11) = 18 workdays
    assert int(wq.any(axis=1).sum()) == 18
    assert int(wq[10].sum()) == 36                      # 08:30-17:30 = 9 h = 36 quarters
    assert wq[10, 34] and not wq[10, 33] and wq[10, 69] and not wq[10, 70]


def test_a_year_not_covered_is_computed_provisionally_weekends_only():
    # regression: 2027 raised CalendarNotCovered, so every pass failed from New Year's Day on
    wc = WorkCalendar()
    assert wc.package_years == (2004, 2026)
    assert wc.provisional_years(dt.date(2026, 12, 30), dt.date(2027, 1, 5)) == (2027,)
    mask = wc.workday_mask(dt.date(2026, 12, 30), 7)         # Wed 2026-12-30 .. Tue 2027-01-05
    assert mask.tolist() == [True, True, True, False, False, True, True]
    # 2026-12-31 is a workday by the package; 2027-01-01 (Friday, New Year's Day) is a workday
    # provisionally: no statutory holidays until the notice is entered
    assert not wc.is_statutory_holiday(dt.date(2027, 1, 1))
    assert wc.working_quarters(dt.date(2027, 1, 4), 1).sum() == 36  # Monday 08:30-17:30
    msg = provisional_notice([2027], wc.package_years)
    assert "does not cover 2027" in msg and "analytics.holidays_extra" in msg and "analytics.workdays_extra" in msg


def test_changed_days_when_the_years_holidays_are_added():
    before = WorkCalendar()
    after = WorkCalendar(holidays_extra=("2027-01-01", "2027-02-05"), workdays_extra=("2027-02-07",))
    assert after.provisional_years(dt.date(2027, 1, 1), dt.date(2027, 12, 31)) == ()
    # every day of the formerly provisional year changes (its flag), the covered year's days do not
    changed = before.changed_days(after, dt.date(2026, 12, 28), dt.date(2027, 1, 10))
    assert changed == [dt.date(2027, 1, d) for d in range(1, 11)]
    # an edit within a covered year changes only the days it reclassifies
    fixed = WorkCalendar(holidays_extra=("2027-01-01", "2027-02-04", "2027-02-05"), workdays_extra=("2027-02-07",))
    assert after.changed_days(fixed, dt.date(2027, 1, 1), dt.date(2027, 2, 28)) == [dt.date(2027, 2, 4)]


def test_config_adds_a_year():
    wc = WorkCalendar(holidays_extra=("2027-01-01", "2027-02-05"), workdays_extra=("2027-02-07",))
    mask = wc.workday_mask(dt.date(2027, 1, 1), 40)
    assert not mask[0]                                   # New Year's Day (Friday) off
    assert mask[3]                                       # Monday 2027-01-04
    assert mask[37]                                      # Sunday 2027-02-07 adjusted workday
    assert not mask[35]                                  # Friday 2027-02-05 holiday


def test_bad_extra_date_names_the_field():
    with pytest.raises(Exception, match="holidays_extra"):
        WorkCalendar(holidays_extra=("2027-13-01",)).is_workday(dt.date(2027, 1, 4))


def test_statutory_holiday_is_not_an_ordinary_weekend(workcal):
    assert workcal.is_statutory_holiday(dt.date(2025, 10, 4))        # Saturday inside National Day
    assert not workcal.is_statutory_holiday(dt.date(2025, 10, 12))   # ordinary Sunday
    assert not workcal.is_statutory_holiday(dt.date(2025, 10, 11))   # 调休 working Saturday
    assert workcal.is_statutory_holiday(dt.date(2026, 2, 17))        # Spring Festival 2026
    wc = WorkCalendar(holidays_extra=("2027-01-01",))
    assert wc.is_statutory_holiday(dt.date(2027, 1, 1)) and not wc.is_statutory_holiday(dt.date(2027, 1, 2))
