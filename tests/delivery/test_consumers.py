"""One durable log, several consumers: each its own cursor, committed with its progress; retention
once every consumer has a row; consumers of some measurements; outbox files of earlier versions."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from edge.errors import OutboxError
from edge.metrics import Metrics
from edge.outbox import OnFull, Outbox
from edge.point import Point, parse_line
from tests.delivery.conftest import meter_point

DATA = Path(__file__).resolve().parent / "data"


def indicator(day: int) -> Point:
    return Point("energy_indicator", {"scope": "org", "id": "x", "period": "day"}, {"consumption_kwh": 1.0 + day},
                 1_700_000_000_000_000_000 + day * 86_400_000_000_000)


def drain(ob: Outbox, consumer: str) -> list[Point]:
    """What ``consumer`` reads, acknowledged batch by batch."""
    out: list[Point] = []
    while (b := ob.batch(7, consumer=consumer)) is not None:
        out += [parse_line(ln) for ln in b.lines]
        ob.ack(b.last_id, consumer=consumer)
    return out


async def test_every_consumer_gets_every_point_it_takes_and_a_row_goes_once_all_have_it(tmp_path: Path):
    m = Metrics()
    with Outbox(tmp_path / "o.sqlite", metrics=m) as ob:
        ob.register_consumer("upstream", ["energy_indicator"])
        meters = [meter_point(i, s) for s in range(3) for i in range(4)]
        for d in range(3):
            await ob.put([indicator(d)])
            await ob.put(meters[4 * d:4 * d + 4], on_full=OnFull.thin)
        assert ob.lag("local") == 15 and ob.lag("upstream") == 3
        assert m.value("edge_outbox_consumer_lag_points", consumer="upstream") == 3
        assert drain(ob, "upstream") == [indicator(d) for d in range(3)]  # only what it takes, in order
        assert ob.depth() == 15  # the local sink has taken nothing: every row stays
        got = drain(ob, "local")
        assert sorted(got, key=lambda p: (p.measurement, p.time_ns, p.tags.get("meter", ""))) == sorted(
            meters + [indicator(d) for d in range(3)], key=lambda p: (p.measurement, p.time_ns, p.tags.get("meter", "")))
        assert ob.depth() == 0 and ob.status().rows == 0 and ob.lag("local") == 0


async def test_a_consumer_of_some_measurements_reads_past_the_rest_and_never_holds_them(tmp_path: Path):
    """The province is down: its indicators wait for it, the meter rows it does not take go as soon
    as the local sink has them (an upstream outage costs the log only what the upstream takes)."""
    with Outbox(tmp_path / "o.sqlite") as ob:
        ob.register_consumer("upstream", ["energy_indicator"])
        for s in range(20):
            await ob.put([meter_point(1, s)], on_full=OnFull.thin)
        await ob.put([indicator(0)])
        for s in range(20, 40):
            await ob.put([meter_point(1, s)], on_full=OnFull.thin)
        drain(ob, "local")
        assert ob.depth() == 1 and ob.status().rows == 1  # the indicator, for the upstream
        b = ob.batch(100, consumer="upstream")
        assert b.lines == (indicator(0).to_line(),) and b.last_id == ob.last_id()  # read past to the head
        ob.ack(b.last_id, consumer="upstream")
        assert ob.depth() == 0
        assert [c.cursor for c in ob.consumers()] == [ob.last_id(), ob.last_id()]


async def test_cursors_survive_a_reopen_and_a_new_consumer_starts_at_the_head(tmp_path: Path):
    path = tmp_path / "o.sqlite"
    with Outbox(path) as ob:
        ob.register_consumer("upstream", ["energy_indicator"])
        await ob.put([indicator(0), indicator(1)])
        b = ob.batch(100, consumer="upstream")
        ob.ack(b.last_id, consumer="upstream")
        await ob.put([indicator(2)])
    with Outbox(path) as ob:
        assert {c.name: c.lag_points for c in ob.consumers()} == {"local": 3, "upstream": 1}
        ob.register_consumer("upstream", ["energy_indicator"])  # again, as every start does: the cursor stays
        assert ob.lag("upstream") == 1
        ob.register_consumer("archive")
        assert ob.lag("archive") == 0 and ob.batch(100, consumer="archive") is None  # from the head on
        await ob.put([indicator(3)])
        assert drain(ob, "archive") == [indicator(3)]
        assert drain(ob, "upstream") == [indicator(2), indicator(3)]


async def test_dropping_a_consumer_releases_what_was_kept_for_it_and_says_so(tmp_path: Path,
                                                                          caplog: pytest.LogCaptureFixture):
    with Outbox(tmp_path / "o.sqlite") as ob:
        ob.register_consumer("upstream")
        await ob.put([indicator(d) for d in range(5)])
        drain(ob, "local")
        assert ob.depth() == 5  # kept for the upstream
        with caplog.at_level(logging.WARNING, logger="edge.outbox"):
            assert ob.drop_consumer("upstream") == 5
        assert ob.depth() == 0 and [c.name for c in ob.consumers()] == ["local"]
        assert any("consumer removed" in r.getMessage() and "points_it_had_not_taken=5" in r.getMessage()
                   for r in caplog.records)
        with pytest.raises(OutboxError):
            ob.drop_consumer("local")
        with pytest.raises(OutboxError):
            ob.batch(10, consumer="upstream")


async def test_a_refused_point_is_replayed_to_the_consumer_that_refused_it(tmp_path: Path):
    with Outbox(tmp_path / "o.sqlite") as ob:
        ob.register_consumer("upstream", ["energy_indicator"])
        await ob.put([indicator(0), indicator(1)])
        b = ob.batch(10, consumer="upstream")
        ob.ack(b.last_id, [(b.lines[1], "400 unknown field")], consumer="upstream")
        drain(ob, "local")
        (dl,) = ob.dead_letters(10)
        assert dl.source == "upstream" and dl.reason == "400 unknown field"
        assert ob.replay_dead_letters() == 1
        assert ob.lag("upstream") == 1 and ob.lag("local") == 0  # the local store has it already
        assert drain(ob, "upstream") == [indicator(1)] and ob.depth() == 0


async def test_purge_empties_the_log_for_every_consumer(tmp_path: Path):
    with Outbox(tmp_path / "o.sqlite") as ob:
        ob.register_consumer("upstream")
        await ob.put([indicator(d) for d in range(3)])
        assert ob.purge_outbox() == 3
        assert ob.depth() == 0 and ob.lag("local") == ob.lag("upstream") == 0 and ob.counters()["dropped"] == 3
        await ob.put([indicator(9)])
        assert drain(ob, "upstream") == [indicator(9)]


# -- outbox files of earlier versions (tests/delivery/data, written by that code) --------------------


def _copy(name: str, tmp_path: Path) -> Path:
    dst = tmp_path / name
    shutil.copy(DATA / name, dst)
    return dst


@pytest.mark.parametrize(("name", "waiting", "counters"), [
    ("outbox-v1.sqlite", 6, {}),
    ("outbox-v2.sqlite", 15, {"committed": 30, "dead_lettered_points": 1}),
])
async def test_an_outbox_of_an_earlier_version_opens_with_every_waiting_point_for_the_local_sink(
        tmp_path: Path, name: str, waiting: int, counters: dict):
    path = _copy(name, tmp_path)
    with Outbox(path) as ob:
        assert ob.depth() == waiting and ob.lag("local") == waiting
        assert {k: ob.counters().get(k) for k in counters} == counters
        got = drain(ob, "local")
        assert len(got) == waiting and all(p.measurement == "meter" for p in got)
        ob.register_consumer("upstream", ["energy_indicator"])  # a new consumer: the old rows were never its
        await ob.put([indicator(0)])
        assert drain(ob, "upstream") == [indicator(0)]
        if counters:
            assert ob.dead_letters(10)[0].reason == "partial write: field type conflict"
    with Outbox(path) as ob:  # and opens again as it is now
        assert ob.depth() == 1


async def test_the_upstream_outbox_of_an_earlier_version_is_imported_for_the_upstream_only(tmp_path: Path):
    old = _copy("upstream_outbox.sqlite", tmp_path)
    with Outbox(tmp_path / "outbox.sqlite") as ob:
        ob.register_consumer("upstream", ["energy_indicator", "fleet_indicator"])
        assert ob.import_outbox(old, "upstream") == 3
        assert not old.exists() and old.with_name("upstream_outbox.sqlite.imported").exists()
        assert ob.lag("upstream") == 3 and ob.lag("local") == 0  # the local store has them already
        got = drain(ob, "upstream")
        assert [p.measurement for p in got] == ["energy_indicator"] * 3
        assert ob.batch(10) is None and ob.depth() == 0
        (dl,) = ob.dead_letters(10)
        assert dl.source == "upstream" and dl.reason == "400 unknown measurement"
