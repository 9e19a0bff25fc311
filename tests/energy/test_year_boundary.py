"""The year the bundled holiday calendar does not cover (issue 15 §3): chinese_calendar ends with
2026. A service at 2027-01-04 10:00 (Monday) computes on with a provisional calendar (weekends
only), flags every indicator, says so once a day, and recomputes when the year's holidays come."""

import dataclasses
import datetime as dt
import logging

import pytest

from analytics.periods import LocalCalendar
from analytics.scheduler import IndicatorJob
from analytics.workcal import WorkCalendar
from edge.clock import FakeClock
from edge.config import Building, Meter, Org, Site, Transport
from edge.query import StoreQuery, Where
from edge.store import EmbeddedStore

from .test_scheduler import StoreIngest, readings

CAL = LocalCalendar()
ORG = "330000/330100"
H = 3600 * 10**9
HOLIDAYS_2027 = ("2027-01-01", "2027-02-06", "2027-02-07", "2027-02-08", "2027-02-09", "2027-02-10", "2027-02-11",
                 "2027-02-12")  # an operator's entry of the notice (New Year's Day, Spring Festival)
WORKDAYS_2027 = ("2027-02-14", "2027-02-20")


def site(**analytics) -> Site:
    s = Site(orgs=(Org(path="330000", name="Z"), Org(path=ORG, name="H")),
             buildings=(Building(id="hq", org=ORG, floor_area_m2=1000, occupants=10),),
             meters=(Meter(id="m1", profile="chint-dtsu666", building="hq",
                           transport=Transport(host="127.0.0.1", port=5020)),))
    return s.model_copy(update={"analytics": s.analytics.model_copy(update=analytics)}) if analytics else s


@pytest.fixture
def store(tmp_path):
    st = EmbeddedStore(tmp_path / "store.sqlite")
    # New Year's Day 2027 (a Friday) and Monday 2027-01-04 up to 10:00: 10 kW from 08:00
    st.write_points(readings(dt.date(2027, 1, 1), range(8, 18), 10.0, 1000.0))
    st.write_points(readings(dt.date(2027, 1, 4), range(8, 10), 10.0, 1100.0))
    yield st
    st.close()


def monday_10h() -> FakeClock:
    return FakeClock(CAL.midnight_ns(dt.date(2027, 1, 4)) + 10 * H)


async def rows(store, period: str, fld: str, scope: str = "meter"):
    series = await StoreQuery(store).raw("energy_indicator", [fld], 0, 2**62,
                                         Where(tags={"period": period, "scope": scope, "carrier": "electricity"}))
    return {CAL.date_of(int(CAL.local_day_index(int(t)))): v for s in series for t, v in zip(s.times_ns, s.values)}


async def test_2027_is_computed_provisionally_and_every_indicator_says_so(store, caplog):
    job = IndicatorJob(site(), StoreQuery(store), StoreIngest(store), clock=monday_10h())
    with caplog.at_level(logging.WARNING, logger="analytics.scheduler"):
        assert await job.compute_once() > 0
    days = await rows(store, "day", "consumption_kwh")
    assert days[dt.date(2027, 1, 4)] == pytest.approx(20.0)               # 10 kW x 2 h so far
    for period in ("day", "month", "year"):
        for scope in ("meter", "building", "org"):
            flags = await rows(store, period, "provisional_calendar", scope)
            assert flags and all(v is True or v == 1 for v in flags.values()), (period, scope, flags)
    assert job.provisional_years() == [2027]
    assert job.calendar_status()["fill"] == ["analytics.holidays_extra", "analytics.workdays_extra"]
    assert [r.getMessage() for r in caplog.records if "does not cover 2027" in r.getMessage()]


async def test_the_warning_is_logged_once_a_day_not_once_a_pass(store, caplog):
    clock = monday_10h()
    job = IndicatorJob(site(), StoreQuery(store), StoreIngest(store), clock=clock)
    with caplog.at_level(logging.WARNING, logger="analytics.scheduler"):
        for _ in range(5):
            await job.compute_once()
            clock.advance(60)
        assert sum("does not cover 2027" in r.getMessage() for r in caplog.records) == 1
        clock.advance(24 * 3600)
        await job.compute_once()
        assert sum("does not cover 2027" in r.getMessage() for r in caplog.records) == 2


async def test_adding_the_years_holidays_recomputes_the_provisional_days(store):
    clock = monday_10h()
    job = IndicatorJob(site(), StoreQuery(store), StoreIngest(store), clock=clock)
    await job.compute_once()
    before = await rows(store, "day", "off_hours_share")
    # 08:00-18:00 on a workday with 08:30-17:30 working hours: one hour of ten outside
    assert before[dt.date(2027, 1, 1)] == pytest.approx(0.1)
    new = dataclasses.replace(job.workcal, holidays_extra=HOLIDAYS_2027, workdays_extra=WORKDAYS_2027)
    changed = job.use_calendar(new)
    assert dt.date(2027, 1, 1) in changed and job.provisional_years() == []
    clock.advance(60)
    await job.compute_once()
    after = await rows(store, "day", "off_hours_share")
    assert after[dt.date(2027, 1, 1)] == pytest.approx(1.0)                # a statutory holiday now
    assert after[dt.date(2027, 1, 4)] == before[dt.date(2027, 1, 4)]
    for period in ("day", "month", "year"):
        flags = await rows(store, period, "provisional_calendar", "org")
        assert flags and not any(flags.values()), (period, flags)          # overwritten, not left behind


async def test_a_restart_with_the_year_covered_recomputes_what_was_provisional(store):
    await IndicatorJob(site(), StoreQuery(store), StoreIngest(store), clock=monday_10h()).compute_once()
    assert any((await rows(store, "day", "provisional_calendar", "org")).values())
    # the operator filled the site file (or a newer chinese_calendar came) and restarted in February:
    # the first pass redoes February so far and the year row, not January's day rows, unless it
    # reads back what was flagged
    clock = FakeClock(CAL.midnight_ns(dt.date(2027, 2, 3)) + 10 * H)
    job = IndicatorJob(site(holidays_extra=HOLIDAYS_2027, workdays_extra=WORKDAYS_2027), StoreQuery(store),
                       StoreIngest(store), clock=clock)
    await job.compute_once()
    flags = await rows(store, "day", "provisional_calendar", "org")
    assert not any(flags.values()), flags
    assert (await rows(store, "day", "off_hours_share"))[dt.date(2027, 1, 1)] == pytest.approx(1.0)
    assert job.provisional_years() == []


async def test_a_restart_still_uncovered_keeps_the_year_in_health(store):
    await IndicatorJob(site(), StoreQuery(store), StoreIngest(store), clock=monday_10h()).compute_once()
    job = IndicatorJob(site(), StoreQuery(store), StoreIngest(store),
                       clock=FakeClock(CAL.midnight_ns(dt.date(2027, 2, 3)) + 10 * H))
    await job.compute_once()
    assert job.provisional_years() == [2027]
    assert dt.date(2027, 1, 1) in job.provisional_days
    # and the year's holidays entered later still reach January's days
    job.use_calendar(dataclasses.replace(job.workcal, holidays_extra=HOLIDAYS_2027, workdays_extra=WORKDAYS_2027))
    await job.compute_once()
    assert not any((await rows(store, "day", "provisional_calendar", "org")).values())


def test_a_calendar_with_the_year_is_not_provisional():
    wc = WorkCalendar(holidays_extra=HOLIDAYS_2027, workdays_extra=WORKDAYS_2027)
    assert wc.provisional_years(dt.date(2027, 1, 1), dt.date(2027, 12, 31)) == ()
