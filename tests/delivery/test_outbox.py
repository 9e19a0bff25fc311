"""The durable outbox on its own: commit, order, bound, dead letters, group commit, kill -9."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.errors import LineProtocolError, OutboxFull
from edge.metrics import Metrics
from edge.outbox import LineEncoder, OnFull, Outbox
from edge.point import Point, UInt, parse_line, to_line
from tests.delivery.conftest import meter_point

ROOT = Path(__file__).resolve().parents[2]


def position(seq: int, measurement: str = "position") -> Point:
    return Point(measurement, {"vehicle": "浙A·12345", "org": "330000/330100"}, {"lat": 30.25, "lon": 120.15 + seq * 1e-4},
                 1_700_000_000_000_000_000 + seq * 1_000_000_000)


async def test_points_come_back_in_commit_order_and_ack_deletes(outbox: Outbox):
    await outbox.put([meter_point(1, s) for s in range(10)])
    await outbox.put([meter_point(2, s) for s in range(5)])
    b = outbox.batch(100)
    assert b is not None
    assert [parse_line(ln) for ln in b.lines] == [meter_point(1, s) for s in range(10)] + [meter_point(2, s) for s in range(5)]
    assert outbox.depth() == 15
    outbox.ack(b.last_id)
    assert outbox.depth() == 0 and outbox.batch(100) is None


async def test_batch_respects_max_points_and_after_id(outbox: Outbox):
    for k in range(5):
        await outbox.put([meter_point(k, s) for s in range(3)])
    b1 = outbox.batch(7)
    assert len(b1.lines) == 6  # whole rows only: two puts of 3
    b2 = outbox.batch(7, after_id=b1.last_id)
    assert b2.first_id > b1.last_id and len(b2.lines) == 6
    assert outbox.batch(1).lines == b1.lines[:3]  # at least one row, even over max_points


async def test_committed_points_survive_reopen(tmp_path: Path):
    ob = Outbox(tmp_path / "o.sqlite")
    await ob.put([meter_point(1, s) for s in range(100)])
    ob.close()
    ob = Outbox(tmp_path / "o.sqlite")
    try:
        assert ob.depth() == 100
        assert len(ob.batch(1000).lines) == 100
        assert ob.committed == 100
    finally:
        ob.close()


async def test_a_bad_point_is_dead_lettered_and_the_rest_committed(outbox: Outbox, metrics: Metrics):
    pts = [meter_point(1, 0), Point("meter", {"meter": "x"}, {"v": float("nan")}, 1), meter_point(1, 1)]
    assert await outbox.put(pts) == 2
    assert outbox.depth() == 2
    (dl,) = outbox.dead_letters(10)
    assert dl.kind == "invalid" and "non-finite" in dl.reason and "nan" in dl.text()
    assert metrics.value("edge_points_rejected_total") == 1
    assert metrics.value("edge_points_received_total") == 3
    assert metrics.value("edge_points_committed_total") == 2


async def test_many_concurrent_puts_share_few_commits(outbox: Outbox, metrics: Metrics):
    """Group commit: 300 callers at once must not cost 300 fsyncs."""
    await asyncio.gather(*(outbox.put([meter_point(i, 0)]) for i in range(300)))
    assert outbox.depth() == 300
    commits = metrics.value("edge_outbox_commit_seconds_count")
    assert commits == 300  # every put's latency is observed...
    # ...but they were coalesced: the writer thread took them in a handful of transactions and rows
    assert outbox.transactions < 100
    assert outbox.status().rows < 100


async def test_a_full_outbox_refuses_a_source_that_can_hold_commits_nothing_and_logs_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture):
    m = Metrics()
    fifty = sum(len(to_line(position(s)).encode()) for s in range(50))
    ob = Outbox(tmp_path / "o.sqlite", max_bytes=fifty, metrics=m)
    try:
        with caplog.at_level(logging.WARNING, logger="edge.outbox"):
            for s in range(50):
                await ob.put([position(s)])
            for s in range(50, 53):
                with pytest.raises(OutboxFull):
                    await ob.put([position(s)])
        assert ob.depth() == 50 and ob.holding
        assert [parse_line(ln) for ln in ob.batch(1000).lines] == [position(s) for s in range(50)]  # nothing dropped
        assert ob.dropped == 0 and ob.counters()["held_back"] == 3
        assert m.value("edge_points_held_back_total") == 3 and m.value("edge_points_dropped_total") == 0
        msgs = [r.getMessage() for r in caplog.records if "outbox full" in r.getMessage()]
        assert len(msgs) == 1 and "holding back" in msgs[0]  # logged once, on the transition
    finally:
        ob.close()


async def test_holding_lasts_until_consumers_make_room_and_admit_goes_beyond_the_bound(
        tmp_path: Path, caplog: pytest.LogCaptureFixture):
    fifty = sum(len(to_line(position(s)).encode()) for s in range(50))
    ob = Outbox(tmp_path / "o.sqlite", max_bytes=fifty, resume_fraction=0.5)
    try:
        for s in range(50):
            await ob.put([position(s)])
        with pytest.raises(OutboxFull):
            await ob.put([position(50)])
        b = ob.batch(5)
        ob.ack(b.last_id)  # 5 of 50 delivered: room for one, but not below half the bound
        with pytest.raises(OutboxFull):
            await ob.put([position(50)])
        assert await ob.put([position(50, "alert")], on_full=OnFull.admit) == 1  # derived, told once: taken
        with caplog.at_level(logging.WARNING, logger="edge.outbox"):
            b = ob.batch(30, after_id=b.last_id)
            ob.ack(b.last_id)  # below half: sources that can hold are taken again
        assert not ob.holding and await ob.put([position(50)]) == 1
        assert any("has room again" in r.getMessage() and "held_back_points=2" in r.getMessage()
                   for r in caplog.records)
    finally:
        ob.close()


async def test_an_empty_outbox_takes_a_put_larger_than_its_bound(tmp_path: Path):
    ob = Outbox(tmp_path / "o.sqlite", max_bytes=10)
    try:
        assert await ob.put([position(s) for s in range(3)]) == 3  # refusing it would wait for ever
        with pytest.raises(OutboxFull):
            await ob.put([position(4)])
    finally:
        ob.close()


async def test_dead_letters_are_listed_replayed_and_purged(outbox: Outbox, metrics: Metrics):
    await outbox.put([meter_point(1, s) for s in range(4)])
    b = outbox.batch(10)
    await outbox.ack_async(b.last_id, [(b.lines[1], "partial write: field type conflict")])
    outbox.dead_letter_payload("gps", b"\x00garbage", "bad json", topic="vehicles/v1/position")
    assert metrics.value("edge_points_dead_lettered_total") == 1
    assert metrics.value("edge_payloads_dead_lettered_total") == 1
    rows = outbox.dead_letters(10)
    assert [r.kind for r in rows] == ["payload", "point"]
    assert rows[0].payload == b"\x00garbage" and rows[0].topic == "vehicles/v1/position"
    assert rows[1].reason == "partial write: field type conflict" and rows[1].text() == b.lines[1]
    assert outbox.depth() == 0
    assert outbox.replay_dead_letters() == 1  # the payload needs a decoder: stays
    assert outbox.batch(10).lines == (b.lines[1],)
    assert [r.kind for r in outbox.dead_letters(10)] == ["payload"]
    decoded = outbox.replay_dead_letters(decode=lambda source, topic, raw: [meter_point(9, 0)])
    assert decoded == 1 and outbox.dead_letters(10) == []
    outbox.dead_letter_payload("gps", b"x", "bad")
    assert outbox.purge_dead_letters(kind="payload") == 1 and outbox.dead_letters(10) == []
    assert outbox.purge_outbox() == 2 and outbox.depth() == 0


async def test_oldest_age_and_depth_are_exposed_as_metrics(tmp_path: Path):
    from edge.clock import FakeClock
    clock = FakeClock()
    m = Metrics()
    ob = Outbox(tmp_path / "o.sqlite", metrics=m, clock=clock)
    try:
        await ob.put([meter_point(1, s) for s in range(7)])
        clock.advance(42)
        text = m.text()
        assert "edge_outbox_depth_points 7.0" in text
        assert "edge_outbox_oldest_age_seconds 42.0" in text
    finally:
        ob.close()


def test_put_sync_from_a_thread(outbox: Outbox):
    assert outbox.put_sync([meter_point(1, 0), meter_point(1, 1)]) == 2
    assert outbox.depth() == 2


def test_a_string_field_with_the_row_separator_round_trips(outbox: Outbox):
    p = Point("meter", {"k": "v"}, {"text": "a\x1eb\nc\"d"}, 5)
    outbox.put_sync([meter_point(1, 0), p, meter_point(1, 1)])
    assert [parse_line(ln) for ln in outbox.batch(10).lines] == [meter_point(1, 0), p, meter_point(1, 1)]


_ident = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\\\n\r"), min_size=1, max_size=8)
_value = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**63), 2**63 - 1),
                   st.booleans(), st.text(max_size=10), st.integers(0, 2**64 - 1).map(UInt))


@given(st.builds(Point, _ident, st.dictionaries(_ident, _ident, max_size=3),
                 st.dictionaries(_ident, _value, min_size=1, max_size=4), st.integers(-(2**63), 2**63 - 1)))
def test_line_encoder_writes_exactly_what_to_line_writes(p: Point):
    def either(f):
        try:
            return f(p)
        except LineProtocolError:
            return "refused"

    enc = LineEncoder()
    assert either(enc.line) == either(to_line)
    assert either(enc.line) == either(to_line)  # and again from the cache


_CHILD = textwrap.dedent("""
    import asyncio, sys
    sys.path.insert(0, {root!r})
    from edge.outbox import Outbox
    from tests.delivery.conftest import meter_point

    async def main():
        ob = Outbox({path!r})
        seq = 0
        while True:
            await asyncio.gather(*(ob.put([meter_point(m, seq + k) for k in range(10)]) for m in range(20)))
            seq += 10
            print(seq, flush=True)   # every point with a seq below this is committed

    asyncio.run(main())
""")


def test_kill_9_mid_stream_loses_no_committed_point(tmp_path: Path):
    path = tmp_path / "o.sqlite"
    child = subprocess.Popen([sys.executable, "-c", _CHILD.format(root=str(ROOT), path=str(path))],
                             stdout=subprocess.PIPE, text=True)
    committed = 0
    try:
        while committed < 3000:
            line = child.stdout.readline()
            assert line, "the writer process ended early"
            committed = int(line)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        child.stdout.close()
    ob = Outbox(path)
    try:
        got = [parse_line(ln) for ln in ob.batch(10**7).lines]
    finally:
        ob.close()
    keys = {(p.tags["meter"], p.time_ns) for p in got}
    assert len(keys) == len(got)  # no point twice
    want = {(meter_point(m, s).tags["meter"], meter_point(m, s).time_ns) for m in range(20) for s in range(committed)}
    assert want <= keys  # everything acknowledged before the kill is there
