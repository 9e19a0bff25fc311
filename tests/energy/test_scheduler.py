"""The service's indicator scheduler over the real embedded store, on a fake clock:
today each pass, the closed day with its month and year, late readings recomputed."""

import datetime as dt

import pytest

from analytics.periods import LocalCalendar
from analytics.scheduler import IndicatorJob
from edge.clock import FakeClock
from edge.config import Building, Meter, Org, Site, Transport
from edge.errors import OutboxFull
from edge.point import Point
from edge.query import StoreQuery, Where
from edge.store import EmbeddedStore

CAL = LocalCalendar()
ORG = "330000/330100"
H = 3600 * 10**9


class StoreIngest:
    """Submits straight into the embedded store (the outbox is tested elsewhere)."""

    def __init__(self, store: EmbeddedStore) -> None:
        self.store, self.counts = store, {}

    async def submit(self, points):
        self.store.write_points(list(points))

    async def reject(self, source, raw, reason, topic=""):
        raise AssertionError(reason)

    def count(self, name, n=1, **labels):
        self.counts[name] = self.counts.get(name, 0) + n


def readings(day: dt.date, hours: range, kw: float, start_kwh: float) -> list[Point]:
    """A counter read every 15 minutes at a constant load."""
    t0 = CAL.midnight_ns(day)
    out = []
    for q in range(hours.start * 4, hours.stop * 4 + 1):
        t = t0 + q * H // 4
        out.append(Point("meter", {"meter": "m1", "org": ORG, "building": "hq", "carrier": "electricity"},
                         {"active_energy_import_kwh": start_kwh + kw * (q - hours.start * 4) / 4}, t))
    return out


@pytest.fixture
def setup(tmp_path):
    site = Site(orgs=(Org(path="330000", name="Z"), Org(path=ORG, name="H")),
                buildings=(Building(id="hq", org=ORG, floor_area_m2=1000, occupants=10),),
                meters=(Meter(id="m1", profile="chint-dtsu666", building="hq",
                              transport=Transport(host="127.0.0.1", port=5020)),))
    store = EmbeddedStore(tmp_path / "store.sqlite")
    ingest = StoreIngest(store)
    # "now" is 2025-10-10 12:00 Shanghai; yesterday had 10 kW from 08:00 to 18:00
    clock = FakeClock(CAL.midnight_ns(dt.date(2025, 10, 10)) + 12 * H)
    store.write_points(readings(dt.date(2025, 10, 9), range(8, 18), 10.0, 1000.0))
    store.write_points(readings(dt.date(2025, 10, 10), range(8, 12), 20.0, 1100.0))
    job = IndicatorJob(site, StoreQuery(store), ingest, clock=clock)
    return job, store, clock


async def _day_rows(store, period: str, scope: str = "meter"):
    q = StoreQuery(store)
    series = await q.raw("energy_indicator", ["consumption_kwh"], 0, 2**62,
                         Where(tags={"period": period, "scope": scope, "carrier": "electricity"}))
    return {dt.datetime.fromtimestamp(int(t) / 1e9, tz=dt.timezone(dt.timedelta(hours=8))).date(): float(v)
            for s in series for t, v in zip(s.times_ns, s.values, strict=True)}


async def test_first_pass_computes_today_the_closed_day_its_month_and_year(setup):
    job, store, clock = setup
    assert await job.compute_once() > 0
    days = await _day_rows(store, "day")
    assert days[dt.date(2025, 10, 9)] == pytest.approx(100.0)   # 10 kW x 10 h
    assert days[dt.date(2025, 10, 10)] == pytest.approx(80.0)   # 20 kW x 4 h so far
    months = await _day_rows(store, "month")
    assert months[dt.date(2025, 10, 1)] == pytest.approx(100.0)  # closed days only: today joins when it closes
    years = await _day_rows(store, "year")
    assert years[dt.date(2025, 1, 1)] == pytest.approx(100.0)


async def test_late_readings_for_a_closed_day_are_recomputed_on_the_next_pass(setup):
    job, store, clock = setup
    await job.compute_once()
    # a meter that buffered through an outage delivers 18:00-20:00 of yesterday at 15 kW
    late = readings(dt.date(2025, 10, 9), range(18, 20), 15.0, 1100.0)[1:]
    store.write_points(late)
    job.observe(late)
    clock.advance(60)
    await job.compute_once()
    days = await _day_rows(store, "day")
    assert days[dt.date(2025, 10, 9)] == pytest.approx(130.0)
    months = await _day_rows(store, "month")
    assert months[dt.date(2025, 10, 1)] == pytest.approx(130.0)


async def test_a_new_day_closes_after_the_settle_time(setup):
    job, store, clock = setup
    await job.compute_once()
    clock.advance(12 * 3600 + job.site.analytics.settle_s + 1)  # past midnight and the settle time
    await job.compute_once()
    assert job.last_closed == dt.date(2025, 10, 10)
    months = await _day_rows(store, "month")
    assert months[dt.date(2025, 10, 1)] == pytest.approx(180.0)


class RefusingIngest(StoreIngest):
    """The outbox full: ``submit`` refuses (``OutboxFull``) until told otherwise."""

    def __init__(self, store: EmbeddedStore) -> None:
        super().__init__(store)
        self.full = True

    async def submit(self, points):
        if self.full:
            raise OutboxFull("outbox full")
        await super().submit(points)


async def test_a_pass_the_full_outbox_refused_is_done_again_closed_day_included(setup):
    job, store, clock = setup
    job.ingest = RefusingIngest(store)
    with pytest.raises(OutboxFull):
        await job.compute_once()
    assert job.last_closed is None  # the closed day was not stored: it is still to close
    job.ingest.full = False
    clock.advance(60)
    await job.compute_once()
    days = await _day_rows(store, "day")
    assert days[dt.date(2025, 10, 9)] == pytest.approx(100.0)
    assert (await _day_rows(store, "month"))[dt.date(2025, 10, 1)] == pytest.approx(100.0)
