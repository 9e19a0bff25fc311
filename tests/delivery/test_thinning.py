"""A full log thins counter readings before it drops them: every Nth reading, each local day's first
and last, both sides of a reset; the energy of every meter and day, computed by analytics' own
counter functions, is the same from the thinned readings as from all of them; whatever is thinned
or dropped is recorded point by point."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from analytics.energy.counters import bin_energy, counter_deltas
from analytics.periods import NS_PER_DAY, LocalCalendar
from edge.errors import OutboxFull
from edge.outbox import OnFull, Outbox
from edge.point import Point, parse_line
from edge.thinning import LocalDays, ThinRule, keep, reading_of

CAL = LocalCalendar()
DAY0 = CAL.midnight_ns(dt.date(2026, 3, 2))  # local midnight, Asia/Shanghai
ORG = "330000/330100/330106/inst-042"
COUNTERS = frozenset({"active_energy_import_kwh"})
RULE = ThinRule(counter_fields=COUNTERS)
RESET_AT = DAY0 + NS_PER_DAY + 12 * 3600 * 10**9  # meter 2 is replaced at noon of the second day


def readings(meter: int, days: int = 3, every_s: int = 900) -> list[Point]:
    """A counter read every 15 minutes (7 s past the quarter), a load that varies through the day;
    meter 2 starts again from 3 kWh at ``RESET_AT``."""
    out, kwh = [], 1000.0 * meter
    n = days * 86400 // every_s
    for k in range(n):
        t = DAY0 - 3600 * 10**9 + k * every_s * 10**9 + 7 * 10**9  # from 23:00 the evening before
        if meter == 2 and t >= RESET_AT and kwh > 500:
            kwh = 3.0
        kw = 5.0 + meter + 4.0 * np.sin(2 * np.pi * ((t - DAY0) % NS_PER_DAY) / NS_PER_DAY) + (k % 5) * 0.3
        kwh += kw * every_s / 3600
        out.append(Point("meter", {"meter": f"m-{meter}", "org": ORG, "carrier": "electricity"},
                         {"active_energy_import_kwh": round(float(kwh), 3), "active_power_total_kw": round(float(kw), 3)}, t))
    return out


def daily_kwh(points: list[Point]) -> dict[str, np.ndarray]:
    """Energy per meter and local day, as the energy indicators compute it (counter deltas, resets
    counted 0, the interval across midnight split by time)."""
    out = {}
    for meter in sorted({p.tags["meter"] for p in points}):
        ps = sorted((p for p in points if p.tags["meter"] == meter), key=lambda p: p.time_ns)
        t = np.array([p.time_ns for p in ps], dtype=np.int64)
        v = np.array([p.fields["active_energy_import_kwh"] for p in ps], dtype=np.float64)
        out[meter] = bin_energy(counter_deltas(t, v), DAY0, 3, NS_PER_DAY).energy
    return out


def test_a_pass_keeps_every_other_reading_each_days_ends_and_both_sides_of_a_reset():
    ps = readings(2)
    series: dict = {}
    for i, p in enumerate(ps):
        key, t, vals = reading_of(p.to_line(), COUNTERS)
        series.setdefault(key, []).append((i, t, vals))
    kept = keep(series, RULE, LocalDays(RULE.tz))
    days = CAL.local_day_index(np.array([p.time_ns for p in ps]))
    for d in set(days.tolist()):
        idx = np.flatnonzero(days == d)
        assert idx[0] in kept and idx[-1] in kept  # each day's first and last
    r = next(i for i, p in enumerate(ps) if p.time_ns >= RESET_AT)
    assert {r - 1, r} <= kept  # the last reading before the reset and the first after
    assert all(i in kept for i in range(0, len(ps), 2))
    assert len(kept) < 0.55 * len(ps)


async def test_thinning_a_full_log_leaves_the_energy_of_every_meter_and_day_unchanged(tmp_path: Path):
    everything = [p for m in range(4) for p in readings(m)]
    polls = sorted(everything, key=lambda p: p.time_ns)  # as the pollers hand them over, oldest first
    size = sum(len(p.to_line()) for p in polls)
    with Outbox(tmp_path / "o.sqlite", max_bytes=size // 3, thin=RULE, dropped_keep_bytes=size) as ob:
        for k in range(0, len(polls), 4):  # no consumer takes anything: a store outage
            assert await ob.put(polls[k:k + 4], on_full=OnFull.thin) == 4
        c = ob.counters()
        assert c["thinned"] > len(polls) / 2 and c.get("dropped", 0) == 0  # thinned, nothing dropped whole
        assert ob.status().bytes <= ob.max_bytes
        kept: list[Point] = []
        while (b := ob.batch(1000, consumer="local")) is not None:
            kept += [parse_line(ln) for ln in b.lines]
            ob.ack(b.last_id)
        record = ob.dropped_points()
    assert len(kept) + len(record) == len(polls)
    assert {(p.tags["meter"], p.time_ns) for p in kept} | {(d.point().tags["meter"], d.point().time_ns)
                                                           for d in record} == {(p.tags["meter"], p.time_ns) for p in polls}
    assert all(d.reason == "thinned" and d.missed == ("local",) for d in record)
    want, got = daily_kwh(polls), daily_kwh(kept)
    assert set(got) == set(want)
    for meter in want:
        assert np.all(np.isfinite(want[meter]))
        np.testing.assert_allclose(got[meter], want[meter], rtol=1e-12)  # same sums of the same readings' differences
    # and it did lose resolution: the thinned readings' quarters are not all there
    assert len(kept) < len(polls) / 2


async def test_with_nothing_left_to_thin_the_oldest_spans_go_then_the_readings_themselves(tmp_path: Path):
    line = readings(1)[0].to_line()
    with Outbox(tmp_path / "o.sqlite", max_bytes=40 * len(line), thin=ThinRule(max_passes=1)) as ob:
        ob.register_consumer("upstream")
        ps = readings(1)[:200]
        for p in ps:
            await ob.put([p], on_full=OnFull.thin)
        c = ob.counters()
        assert c["thinned"] > 0 and c["dropped"] > 0
        kept = [parse_line(ln) for ln in ob.batch(1000).lines]
        assert kept[-1] == ps[-1] and ob.status().bytes <= ob.max_bytes  # the newest stay, the oldest went
        dropped = [d for d in ob.dropped_points() if d.reason == "dropped"]
        assert dropped[0].point().time_ns < kept[0].time_ns and dropped[0].missed == ("local", "upstream")
        # the log now full of positions (their sources hold them): a reading has nowhere to go
        ob.ack(ob.last_id())
        ob.ack(ob.last_id(), consumer="upstream")
        with pytest.raises(OutboxFull):
            for i in range(1000):
                await ob.put([Point("position", {"vehicle": f"v{i}"}, {"lat": 30.0, "lon": 120.0}, i)])
        late = readings(3)[0]
        assert await ob.put([late], on_full=OnFull.thin) == 0
        assert ob.dropped_points(newest=True, limit=1)[0].point() == late


async def test_the_record_of_drops_is_bounded_and_the_counters_stay_exact(tmp_path: Path):
    line_len = len(readings(1)[0].to_line())
    with Outbox(tmp_path / "o.sqlite", max_bytes=20 * line_len, dropped_keep_bytes=50 * line_len,
                thin=ThinRule(max_passes=0)) as ob:
        ps = readings(1)
        for p in ps:
            await ob.put([p], on_full=OnFull.thin)
        assert ob.counters()["dropped"] == len(ps) - ob.depth()
        rec = ob.dropped_points()
        assert 45 <= len(rec) <= 50  # the newest drops only
        assert rec[-1].point().time_ns < parse_line(ob.batch(1).lines[0]).time_ns


@pytest.mark.parametrize("tz", ["Asia/Shanghai", "Europe/Berlin"])
def test_local_days_follow_the_zone(tz: str):
    days = LocalDays(tz)
    import zoneinfo
    z = zoneinfo.ZoneInfo(tz)
    for t in (1_700_000_000, 1_711_846_800, 1_711_850_399, 1_729_987_200):  # around a DST change in Berlin
        want = (dt.datetime.fromtimestamp(t, z).date() - dt.date(1970, 1, 1)).days
        assert days.day(t * 10**9) == want
